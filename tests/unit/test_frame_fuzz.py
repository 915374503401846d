"""Property tests: every codec round-trips, and no input makes a parser raise
anything but FrameError (random bytes, truncations and bit flips of valid frames)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rarp_replay.errors import FrameError
from rarp_replay.frames.arp import (
    ArpPacket,
    arp_request_frame,
    parse_arp_frame,
    rarp_request_frame,
)
from rarp_replay.frames.ethernet import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_ZLEN,
    MAX_VLAN_TAGS,
    EthernetFrame,
    VlanTag,
)
from rarp_replay.frames.ipv6 import (
    IPv6Packet,
    internet_checksum,
    solicited_node,
    upper_layer_checksum,
)
from rarp_replay.frames.ndp import (
    IPPROTO_ICMPV6,
    NdMessage,
    NdOption,
    NeighborAdvertisement,
    NeighborSolicitation,
    build_icmpv6,
    na_frame,
    ns_frame,
    parse_icmpv6,
    parse_nd_frame,
)

FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------------

macs = st.binary(min_size=6, max_size=6)
# ip_addresses() favours special ranges (::, multicast, link-local...): what we want here.
ipv4s = cast("st.SearchStrategy[IPv4Address]", st.ip_addresses(v=4))
ipv6s = cast("st.SearchStrategy[IPv6Address]", st.ip_addresses(v=6))
unicast_ipv6s = ipv6s.filter(lambda a: not a.is_multicast)
vids = st.integers(0, 4095)
tags = st.builds(
    VlanTag,
    vid=vids,
    pcp=st.integers(0, 7),
    dei=st.integers(0, 1),
    tpid=st.sampled_from([ETH_P_8021Q, ETH_P_8021AD]),
)
tag_stacks = st.lists(tags, max_size=MAX_VLAN_TAGS).map(tuple)
ethertypes = st.integers(0, 0xFFFF).filter(lambda t: t not in (ETH_P_8021Q, ETH_P_8021AD))
ethernet_frames = st.builds(
    EthernetFrame,
    dst=macs,
    src=macs,
    ethertype=ethertypes,
    payload=st.binary(max_size=200),
    tags=tag_stacks,
)


@st.composite
def arp_packets(draw: st.DrawFn) -> ArpPacket:
    hlen = draw(st.integers(1, 20))
    plen = draw(st.integers(1, 20))
    return ArpPacket(
        op=draw(st.integers(0, 0xFFFF)),
        sha=draw(st.binary(min_size=hlen, max_size=hlen)),
        spa=draw(st.binary(min_size=plen, max_size=plen)),
        tha=draw(st.binary(min_size=hlen, max_size=hlen)),
        tpa=draw(st.binary(min_size=plen, max_size=plen)),
        htype=draw(st.integers(0, 0xFFFF)),
        ptype=draw(st.integers(0, 0xFFFF)),
    )


ipv6_packets = st.builds(
    IPv6Packet,
    src=ipv6s,
    dst=ipv6s,
    next_header=st.integers(0, 255),
    payload=st.binary(max_size=300),
    hop_limit=st.integers(0, 255),
    traffic_class=st.integers(0, 255),
    flow_label=st.integers(0, 0xFFFFF),
)

# Options whose data already fills whole 8-octet units, so parse(build(x)) == x.
nd_options = st.builds(
    NdOption,
    type=st.integers(0, 255),
    data=st.integers(1, 4).flatmap(lambda n: st.binary(min_size=8 * n - 2, max_size=8 * n - 2)),
)
option_lists = st.lists(nd_options, max_size=4).map(tuple)


@st.composite
def nd_messages(draw: st.DrawFn) -> tuple[NdMessage, IPv6Address, IPv6Address]:
    """A message plus addresses that satisfy RFC 4861 7.1.1/7.1.2."""
    target = draw(unicast_ipv6s)
    src = draw(ipv6s)
    dst = draw(ipv6s)
    options = draw(option_lists)
    msg: NdMessage
    if draw(st.booleans()):
        if src.is_unspecified:
            dst = solicited_node(target)
            options = tuple(o for o in options if o.type != 1)
        msg = NeighborSolicitation(target, options)
    else:
        msg = NeighborAdvertisement(
            target,
            router=draw(st.booleans()),
            solicited=draw(st.booleans()) and not dst.is_multicast,
            override=draw(st.booleans()),
            options=options,
        )
    return msg, src, dst


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    """A valid wire frame of each kind the daemon sends or receives."""
    vid = draw(st.none() | vids)
    kind = draw(st.sampled_from(["rarp", "arp", "ns", "na"]))
    mac_a, mac_b = draw(macs), draw(macs)
    if kind == "rarp":
        return rarp_request_frame(mac_a, vid)
    if kind == "arp":
        return arp_request_frame(mac_a, draw(ipv4s), mac_b, draw(ipv4s), vid)
    src = draw(unicast_ipv6s.filter(lambda a: not a.is_unspecified))
    dst, target = draw(unicast_ipv6s), draw(unicast_ipv6s)
    if kind == "ns":
        return ns_frame(mac_a, mac_b, src, dst, target, vid=vid)
    return na_frame(mac_a, mac_b, src, dst, target, vid=vid)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame cut short, bit-flipped and/or extended."""
    data = bytearray(draw(valid_frames()))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    return bytes(data) + draw(st.binary(max_size=8))


def _only_frame_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    # Anything but a FrameError propagates and fails the test.
    with contextlib.suppress(FrameError):
        parse(data)


def _nd_parse(data: bytes) -> object:
    return parse_icmpv6(data, IPv6Address("fe80::1"), IPv6Address("fe80::2"))


PARSERS: list[Callable[[bytes], object]] = [
    EthernetFrame.parse,
    ArpPacket.parse,
    IPv6Packet.parse,
    _nd_parse,
    parse_nd_frame,
    parse_arp_frame,
]

# --- round trips ----------------------------------------------------------------------


@FAST
@given(ethernet_frames)
def test_ethernet_roundtrip_unpadded(frame: EthernetFrame) -> None:
    assert EthernetFrame.parse(frame.build(pad=False)) == frame


@FAST
@given(
    st.builds(
        EthernetFrame,
        dst=macs,
        src=macs,
        ethertype=ethertypes,
        payload=st.binary(min_size=46, max_size=200),
        tags=tag_stacks,
    )
)
def test_ethernet_roundtrip_padded(frame: EthernetFrame) -> None:
    raw = frame.build()
    assert raw == frame.build(pad=False)
    assert EthernetFrame.parse(raw) == frame


@FAST
@given(ethernet_frames)
def test_ethernet_padding_only_appends_zeros(frame: EthernetFrame) -> None:
    raw, unpadded = frame.build(), frame.build(pad=False)
    assert len(raw) == max(ETH_ZLEN, len(unpadded))
    assert raw[: len(unpadded)] == unpadded
    assert not any(raw[len(unpadded) :])


@FAST
@given(tags)
def test_vlan_tag_roundtrip(tag: VlanTag) -> None:
    frame = EthernetFrame(b"\x01" * 6, b"\x02" * 6, 0x0800, b"", (tag,))
    assert EthernetFrame.parse(frame.build(pad=False)).tags == (tag,)


@FAST
@given(arp_packets(), st.binary(max_size=20))
def test_arp_roundtrip(packet: ArpPacket, trailing: bytes) -> None:
    assert ArpPacket.parse(packet.build() + trailing) == packet


@FAST
@given(ipv6_packets, st.binary(max_size=20))
def test_ipv6_roundtrip(packet: IPv6Packet, trailing: bytes) -> None:
    assert IPv6Packet.parse(packet.build() + trailing) == packet


@FAST
@given(nd_messages())
def test_icmpv6_roundtrip(case: tuple[NdMessage, IPv6Address, IPv6Address]) -> None:
    msg, src, dst = case
    icmp = build_icmpv6(msg, src, dst)
    assert upper_layer_checksum(src, dst, IPPROTO_ICMPV6, icmp) == 0
    assert parse_icmpv6(icmp, src, dst) == msg


@FAST
@given(valid_frames())
def test_valid_frames_parse(raw: bytes) -> None:
    assert len(raw) >= ETH_ZLEN
    if EthernetFrame.parse(raw).ethertype == 0x86DD:
        parse_nd_frame(raw)
    else:
        parse_arp_frame(raw)


@MANY
@given(st.binary(max_size=200))
def test_internet_checksum_matches_rfc1071_loop(data: bytes) -> None:
    padded = data + b"\x00" * (len(data) % 2)
    total = 0
    for i in range(0, len(padded), 2):
        total += int.from_bytes(padded[i : i + 2], "big")
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert internet_checksum(data) == ~total & 0xFFFF


# --- robustness: only FrameError, whatever comes in -------------------------------------


@MANY
@given(st.binary(max_size=128))
def test_random_bytes_only_frame_errors(data: bytes) -> None:
    for parse in PARSERS:
        _only_frame_errors(parse, data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_mutated_frames_only_frame_errors(data: bytes) -> None:
    for parse in PARSERS:
        _only_frame_errors(parse, data)


@MANY
@given(st.binary(max_size=8), st.binary(max_size=96), st.booleans())
def test_random_nd_bodies_with_valid_checksum(head: bytes, rest: bytes, advert: bool) -> None:
    """Random bytes rarely pass the checksum; fix it so the option and flag
    parsing behind it is exercised too."""
    src, dst = IPv6Address("fe80::1"), IPv6Address("ff02::1")
    body = bytes((136 if advert else 135, 0, 0, 0)) + head[4:8].ljust(4, b"\0") + rest
    csum = upper_layer_checksum(src, dst, IPPROTO_ICMPV6, body)
    body = body[:2] + csum.to_bytes(2, "big") + body[4:]
    _only_frame_errors(lambda d: parse_icmpv6(d, src, dst), body)


@FAST
@given(nd_messages(), st.data())
def test_mutated_nd_with_valid_checksum(
    case: tuple[NdMessage, IPv6Address, IPv6Address], data: st.DataObject
) -> None:
    msg, src, dst = case
    icmp = bytearray(build_icmpv6(msg, src, dst))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(icmp) - 1))
        icmp[i] = data.draw(st.integers(0, 255))
    icmp = icmp[: data.draw(st.integers(0, len(icmp)))]
    if len(icmp) >= 4:
        icmp[2:4] = b"\0\0"
        icmp[2:4] = upper_layer_checksum(src, dst, IPPROTO_ICMPV6, bytes(icmp)).to_bytes(2, "big")
    _only_frame_errors(lambda d: parse_icmpv6(d, src, dst), bytes(icmp))
