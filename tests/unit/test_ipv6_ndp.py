"""IPv6 header, checksums, ND address mappings and NS/NA codecs, cross-checked with scapy."""

from __future__ import annotations

import socket
from ipaddress import IPv6Address

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.pton_ntop import inet_pton
from scapy.utils import checksum as scapy_checksum
from scapy.utils6 import in6_getnsma, in6_getnsmac, in6_mactoifaceid

from rarp_replay.errors import (
    AddressError,
    ChecksumError,
    InvalidFrameError,
    TruncatedFrameError,
)
from rarp_replay.frames.ethernet import ETH_P_IPV6, EthernetFrame, VlanTag
from rarp_replay.frames.ipv6 import (
    IPv6Packet,
    internet_checksum,
    is_solicited_node,
    link_local_from_mac,
    multicast_mac,
    solicited_node,
    upper_layer_checksum,
)
from rarp_replay.frames.ndp import (
    ICMPV6_NA,
    ICMPV6_NS,
    IPPROTO_ICMPV6,
    OPT_SOURCE_LL,
    OPT_TARGET_LL,
    NdOption,
    NeighborAdvertisement,
    NeighborSolicitation,
    build_icmpv6,
    na_frame,
    ns_frame,
    parse_icmpv6,
    parse_nd_frame,
    source_ll,
    target_ll,
)

VM = bytes.fromhex("525400123456")
SWITCH = bytes.fromhex("02aabbccddee")
VM_S = "52:54:00:12:34:56"
SWITCH_S = "02:aa:bb:cc:dd:ee"
VM_IP = IPv6Address("2001:db8:10::1234:5678")
SWITCH_IP = IPv6Address("fe80::aabb:ccff:fedd:eeff")
ALL_NODES = IPv6Address("ff02::1")
UNSPECIFIED = IPv6Address("::")


def _reference_checksum(data: bytes) -> int:
    """The RFC 1071 loop, literally: the slow oracle for internet_checksum."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _scapy_cksum(pkt: Packet, layer: type[Packet]) -> int:
    """The checksum scapy computes itself for `layer` (its field deleted, then rebuilt)."""
    copy = pkt.copy()
    del copy[layer].cksum
    return int(Ether(bytes(copy))[layer].cksum)


def _fix_checksum(icmp: bytes, src: IPv6Address, dst: IPv6Address) -> bytes:
    zeroed = icmp[:2] + b"\x00\x00" + icmp[4:]
    csum = upper_layer_checksum(src, dst, IPPROTO_ICMPV6, zeroed)
    return icmp[:2] + csum.to_bytes(2, "big") + icmp[4:]


# --- IPv6 header -------------------------------------------------------------


def test_ipv6_build_decoded_by_scapy() -> None:
    packet = IPv6Packet(SWITCH_IP, VM_IP, 17, b"abcdefgh", 7, 0xB8, 0xABCDE)
    pkt = IPv6(packet.build())
    assert pkt.version == 6
    assert (pkt.tc, pkt.fl, pkt.plen, pkt.nh, pkt.hlim) == (0xB8, 0xABCDE, 8, 17, 7)
    assert (pkt.src, pkt.dst) == (str(SWITCH_IP), str(VM_IP))
    assert bytes(pkt.payload) == b"abcdefgh"


def test_ipv6_hand_checked() -> None:
    packet = IPv6Packet(IPv6Address("::1"), IPv6Address("::2"), 59, b"", 255, 0x12, 0x34567)
    assert packet.build() == bytes.fromhex("6123456700003bff" + "00" * 15 + "01" + "00" * 15 + "02")


def test_ipv6_parse_scapy_with_padding() -> None:
    raw = bytes(IPv6(src=str(VM_IP), dst=str(SWITCH_IP), tc=3, fl=5, hlim=1) / Raw(b"xyz"))
    packet = IPv6Packet.parse(raw + bytes(10))  # Ethernet padding after the payload
    assert packet == IPv6Packet(VM_IP, SWITCH_IP, 59, b"xyz", 1, 3, 5)


def test_ipv6_parse_errors() -> None:
    good = IPv6Packet(VM_IP, SWITCH_IP, 58, b"12345678").build()
    with pytest.raises(TruncatedFrameError):
        IPv6Packet.parse(good[:39])
    with pytest.raises(TruncatedFrameError):
        IPv6Packet.parse(good[:-1])  # payload length says 8, 7 present
    with pytest.raises(InvalidFrameError):
        IPv6Packet.parse(b"\x40" + good[1:])  # version 4


@pytest.mark.parametrize(
    "packet",
    [
        IPv6Packet(VM_IP, VM_IP, 256, b""),
        IPv6Packet(VM_IP, VM_IP, 58, b"", hop_limit=256),
        IPv6Packet(VM_IP, VM_IP, 58, b"", traffic_class=256),
        IPv6Packet(VM_IP, VM_IP, 58, b"", flow_label=1 << 20),
        IPv6Packet(VM_IP, VM_IP, 58, bytes(65536)),
    ],
)
def test_ipv6_build_rejects(packet: IPv6Packet) -> None:
    with pytest.raises(InvalidFrameError):
        packet.build()


# --- checksums ----------------------------------------------------------------


def test_rfc1071_example() -> None:
    # RFC 1071 3: the words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x00", b"\xff\xff", b"\xff\xff\xff\xff", b"\x01", b"\xab\xcd\xef"],
)
def test_checksum_edges_match_reference_and_scapy(data: bytes) -> None:
    assert internet_checksum(data) == _reference_checksum(data) == scapy_checksum(data)


def test_checksum_bytearray() -> None:
    data = bytearray(b"\x12\x34\x56")
    assert internet_checksum(data) == _reference_checksum(bytes(data))  # type: ignore[arg-type]


def test_upper_layer_checksum_matches_scapy_udp() -> None:
    pkt = Ether() / IPv6(src=str(SWITCH_IP), dst=str(VM_IP)) / UDP(sport=1, dport=2) / b"hi!"
    built = Ether(bytes(pkt))
    udp = bytes(built[UDP])
    zeroed = udp[:6] + b"\x00\x00" + udp[8:]
    assert upper_layer_checksum(SWITCH_IP, VM_IP, 17, zeroed) == built[UDP].chksum
    assert upper_layer_checksum(SWITCH_IP, VM_IP, 17, udp) == 0


# --- address mappings ---------------------------------------------------------


def test_solicited_node() -> None:
    assert solicited_node(VM_IP) == IPv6Address("ff02::1:ff34:5678")
    expected = in6_getnsma(inet_pton(socket.AF_INET6, str(VM_IP)))
    assert solicited_node(VM_IP).packed == expected
    assert is_solicited_node(solicited_node(VM_IP))
    assert not is_solicited_node(ALL_NODES)
    assert not is_solicited_node(VM_IP)


def test_multicast_mac() -> None:
    group = solicited_node(VM_IP)
    assert multicast_mac(group) == bytes.fromhex("3333ff345678")
    assert multicast_mac(group) == bytes.fromhex(in6_getnsmac(group.packed).replace(":", ""))
    assert multicast_mac(ALL_NODES) == bytes.fromhex("333300000001")
    with pytest.raises(AddressError):
        multicast_mac(VM_IP)


def test_link_local_from_mac() -> None:
    assert link_local_from_mac(VM) == IPv6Address("fe80::5054:ff:fe12:3456")
    iid = IPv6Address("::" + in6_mactoifaceid(VM_S))
    assert int(link_local_from_mac(VM)) & ((1 << 64) - 1) == int(iid)
    with pytest.raises(AddressError):
        link_local_from_mac(VM[:5])


# --- options --------------------------------------------------------------------


def test_option_padding() -> None:
    assert source_ll(VM).build() == bytes.fromhex("0101525400123456")
    assert target_ll(VM).build() == bytes.fromhex("0201525400123456")
    assert NdOption(9, b"").build() == bytes.fromhex("0901000000000000")
    assert NdOption(9, bytes(7)).build() == b"\x09\x02" + bytes(14)
    with pytest.raises(InvalidFrameError):
        NdOption(9, bytes(8 * 255 - 1)).build()
    assert len(NdOption(9, bytes(8 * 255 - 2)).build()) == 8 * 255
    with pytest.raises(InvalidFrameError):
        NdOption(256, b"").build()
    with pytest.raises(InvalidFrameError):
        source_ll(VM[:4])


def test_option_parse_keeps_padding() -> None:
    msg = NeighborSolicitation(VM_IP, (NdOption(9, b"abc"), source_ll(SWITCH)))
    parsed = parse_icmpv6(build_icmpv6(msg, SWITCH_IP, VM_IP), SWITCH_IP, VM_IP)
    assert parsed == NeighborSolicitation(VM_IP, (NdOption(9, b"abc\0\0\0"), source_ll(SWITCH)))
    assert parsed.source_ll_mac == SWITCH
    assert parsed.target_ll_mac is None


def test_ll_mac_properties() -> None:
    na = NeighborAdvertisement(VM_IP, options=(NdOption(OPT_TARGET_LL, VM + b"\0\0"),))
    assert na.target_ll_mac == VM
    assert na.source_ll_mac is None
    assert NeighborSolicitation(VM_IP, (NdOption(OPT_SOURCE_LL, b"abc"),)).source_ll_mac is None


# --- NS / NA against scapy ------------------------------------------------------


def test_ns_frame_decoded_by_scapy() -> None:
    raw = ns_frame(SWITCH, VM, SWITCH_IP, VM_IP, VM_IP, vid=10)
    pkt = Ether(raw)
    assert (pkt.dst, pkt.src) == (VM_S, SWITCH_S)
    assert pkt[Dot1Q].vlan == 10
    assert pkt[Dot1Q].type == ETH_P_IPV6
    ip = pkt[IPv6]
    assert (ip.src, ip.dst, ip.nh, ip.hlim, ip.plen) == (str(SWITCH_IP), str(VM_IP), 58, 255, 32)
    ns = pkt[ICMPv6ND_NS]
    assert (ns.type, ns.code, ns.res, ns.tgt) == (135, 0, 0, str(VM_IP))
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == SWITCH_S
    assert pkt[ICMPv6NDOptSrcLLAddr].len == 1
    assert ns.cksum == _scapy_cksum(pkt, ICMPv6ND_NS)


def test_multicast_ns_decoded_by_scapy() -> None:
    group = solicited_node(VM_IP)
    raw = ns_frame(SWITCH, multicast_mac(group), SWITCH_IP, group, VM_IP)
    pkt = Ether(raw)
    assert pkt.dst == "33:33:ff:34:56:78"
    assert pkt[IPv6].dst == "ff02::1:ff34:5678"
    assert pkt[ICMPv6ND_NS].cksum == _scapy_cksum(pkt, ICMPv6ND_NS)


@pytest.mark.parametrize(("router", "solicited", "override"), [(0, 1, 1), (1, 0, 0), (1, 1, 0)])
def test_na_frame_decoded_by_scapy(router: int, solicited: int, override: int) -> None:
    raw = na_frame(
        VM,
        SWITCH,
        VM_IP,
        SWITCH_IP,
        VM_IP,
        router=bool(router),
        solicited=bool(solicited),
        override=bool(override),
    )
    pkt = Ether(raw)
    assert (pkt.dst, pkt.src, pkt.type) == (SWITCH_S, VM_S, ETH_P_IPV6)
    assert pkt[IPv6].hlim == 255
    na = pkt[ICMPv6ND_NA]
    assert (na.type, na.code, na.tgt) == (136, 0, str(VM_IP))
    assert (na.R, na.S, na.O, na.res) == (router, solicited, override, 0)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == VM_S
    assert na.cksum == _scapy_cksum(pkt, ICMPv6ND_NA)


def test_na_frame_solicited_default() -> None:
    _, _, unicast = parse_nd_frame(na_frame(VM, SWITCH, VM_IP, SWITCH_IP, VM_IP))
    _, _, multicast = parse_nd_frame(
        na_frame(VM, multicast_mac(ALL_NODES), VM_IP, ALL_NODES, VM_IP)
    )
    assert isinstance(unicast, NeighborAdvertisement)
    assert isinstance(multicast, NeighborAdvertisement)
    assert unicast.solicited and unicast.override and not unicast.router
    assert not multicast.solicited and multicast.override
    assert unicast.target_ll_mac == VM


def test_parse_scapy_ns_qinq() -> None:
    raw = bytes(
        Ether(dst=VM_S, src=SWITCH_S)
        / Dot1AD(vlan=30)
        / Dot1Q(vlan=40)
        / IPv6(src=str(SWITCH_IP), dst=str(VM_IP), hlim=255)
        / ICMPv6ND_NS(tgt=str(VM_IP))
        / ICMPv6NDOptSrcLLAddr(lladdr=SWITCH_S)
    )
    frame, packet, msg = parse_nd_frame(raw)
    assert frame.tags == (VlanTag(30, tpid=0x88A8), VlanTag(40))
    assert frame.vid == 40
    assert (packet.src, packet.dst, packet.hop_limit) == (SWITCH_IP, VM_IP, 255)
    assert msg == NeighborSolicitation(VM_IP, (source_ll(SWITCH),))
    assert msg.source_ll_mac == SWITCH


def test_parse_scapy_na() -> None:
    raw = bytes(
        Ether(dst=SWITCH_S, src=VM_S)
        / IPv6(src=str(VM_IP), dst=str(SWITCH_IP), hlim=255)
        / ICMPv6ND_NA(tgt=str(VM_IP), R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=VM_S)
    )
    _, _, msg = parse_nd_frame(raw)
    assert msg == NeighborAdvertisement(VM_IP, False, True, True, (target_ll(VM),))
    assert msg.target_ll_mac == VM


def test_parse_scapy_na_without_options_padded() -> None:
    # 14 + 40 + 24 = 78 octets: no padding needed, but options are optional.
    raw = bytes(
        Ether(dst=SWITCH_S, src=VM_S)
        / IPv6(src=str(VM_IP), dst=str(SWITCH_IP), hlim=255)
        / ICMPv6ND_NA(tgt=str(VM_IP), R=1, S=0, O=0)
    )
    _, packet, msg = parse_nd_frame(raw)
    assert len(packet.payload) == 24
    assert msg == NeighborAdvertisement(VM_IP, router=True)


def test_icmpv6_hand_checked_ns() -> None:
    src, dst = IPv6Address("fe80::1"), IPv6Address("fe80::2")
    icmp = build_icmpv6(NeighborSolicitation(dst, (source_ll(SWITCH),)), src, dst)
    body = bytes.fromhex("8700000000000000") + dst.packed + bytes.fromhex("0101") + SWITCH
    csum = _reference_checksum(
        src.packed + dst.packed + len(body).to_bytes(4, "big") + b"\0\0\0\x3a" + body
    )
    assert icmp == body[:2] + csum.to_bytes(2, "big") + body[4:]


def test_checksum_negative_zero_accepted() -> None:
    """RFC 1071: 0x0000 and 0xffff are both zero in ones' complement, so a
    message whose checksum is 0 verifies whether 0x0000 or 0xffff is sent."""
    msg0 = NeighborSolicitation(VM_IP, (NdOption(200, bytes(6)),))
    c = int.from_bytes(build_icmpv6(msg0, SWITCH_IP, VM_IP)[2:4], "big")
    # Adding c to a word that was 0 makes the sum 0xffff: the checksum becomes 0.
    msg = NeighborSolicitation(VM_IP, (NdOption(200, bytes(4) + c.to_bytes(2, "big")),))
    icmp = build_icmpv6(msg, SWITCH_IP, VM_IP)
    assert icmp[2:4] == b"\x00\x00"
    assert parse_icmpv6(icmp, SWITCH_IP, VM_IP) == msg
    assert parse_icmpv6(icmp[:2] + b"\xff\xff" + icmp[4:], SWITCH_IP, VM_IP) == msg


# --- NS / NA errors --------------------------------------------------------------


def _ns_icmp() -> bytes:
    return build_icmpv6(NeighborSolicitation(VM_IP, (source_ll(SWITCH),)), SWITCH_IP, VM_IP)


def test_parse_icmpv6_checksum_error() -> None:
    icmp = bytearray(_ns_icmp())
    icmp[-1] ^= 0x01
    with pytest.raises(ChecksumError):
        parse_icmpv6(bytes(icmp), SWITCH_IP, VM_IP)
    # The pseudo-header is covered: right bytes, wrong addresses.
    with pytest.raises(ChecksumError):
        parse_icmpv6(_ns_icmp(), SWITCH_IP, ALL_NODES)


def test_parse_icmpv6_code_must_be_zero() -> None:
    icmp = _ns_icmp()
    bad = _fix_checksum(icmp[:1] + b"\x01" + icmp[2:], SWITCH_IP, VM_IP)
    with pytest.raises(InvalidFrameError):
        parse_icmpv6(bad, SWITCH_IP, VM_IP)


def test_parse_icmpv6_other_type() -> None:
    raw = bytes(
        IPv6(src=str(SWITCH_IP), dst=str(VM_IP)) / ICMPv6EchoRequest(data=b"0123456789abcdefghij")
    )
    packet = IPv6Packet.parse(raw)
    with pytest.raises(InvalidFrameError):
        parse_icmpv6(packet.payload, SWITCH_IP, VM_IP)


@pytest.mark.parametrize("cut", [0, 1, 4, 23])
def test_parse_icmpv6_short(cut: int) -> None:
    with pytest.raises(TruncatedFrameError):
        parse_icmpv6(_ns_icmp()[:cut], SWITCH_IP, VM_IP)


def test_parse_icmpv6_option_errors() -> None:
    icmp = _ns_icmp()
    zero_len = _fix_checksum(icmp[:25] + b"\x00" + icmp[26:], SWITCH_IP, VM_IP)
    with pytest.raises(InvalidFrameError):
        parse_icmpv6(zero_len, SWITCH_IP, VM_IP)
    too_long = _fix_checksum(icmp[:25] + b"\x02" + icmp[26:], SWITCH_IP, VM_IP)
    with pytest.raises(TruncatedFrameError):
        parse_icmpv6(too_long, SWITCH_IP, VM_IP)
    dangling = _fix_checksum(icmp + b"\x01", SWITCH_IP, VM_IP)
    with pytest.raises(TruncatedFrameError):
        parse_icmpv6(dangling, SWITCH_IP, VM_IP)


def test_multicast_target_rejected() -> None:
    with pytest.raises(InvalidFrameError):
        build_icmpv6(NeighborSolicitation(ALL_NODES), SWITCH_IP, VM_IP)
    icmp = _ns_icmp()
    bad = _fix_checksum(icmp[:8] + ALL_NODES.packed + icmp[24:], SWITCH_IP, VM_IP)
    with pytest.raises(InvalidFrameError):
        parse_icmpv6(bad, SWITCH_IP, VM_IP)


def test_dad_ns_rules() -> None:
    group = solicited_node(VM_IP)
    # RFC 4861 7.1.1: from :: only to a solicited-node group, and without source LL.
    dad = build_icmpv6(NeighborSolicitation(VM_IP), UNSPECIFIED, group)
    assert parse_icmpv6(dad, UNSPECIFIED, group) == NeighborSolicitation(VM_IP)
    with pytest.raises(InvalidFrameError):
        build_icmpv6(NeighborSolicitation(VM_IP), UNSPECIFIED, VM_IP)
    with pytest.raises(InvalidFrameError):
        build_icmpv6(NeighborSolicitation(VM_IP, (source_ll(SWITCH),)), UNSPECIFIED, group)
    unicast = _fix_checksum(dad, UNSPECIFIED, VM_IP)
    with pytest.raises(InvalidFrameError):
        parse_icmpv6(unicast, UNSPECIFIED, VM_IP)
    with_sll = build_icmpv6(NeighborSolicitation(VM_IP, (source_ll(SWITCH),)), SWITCH_IP, group)
    with pytest.raises(InvalidFrameError):
        parse_icmpv6(_fix_checksum(with_sll, UNSPECIFIED, group), UNSPECIFIED, group)
    # ns_frame drops the option by itself for a :: source.
    _, _, msg = parse_nd_frame(ns_frame(SWITCH, multicast_mac(group), UNSPECIFIED, group, VM_IP))
    assert msg == NeighborSolicitation(VM_IP)


def test_solicited_na_to_multicast_rejected() -> None:
    na = NeighborAdvertisement(VM_IP, solicited=True)
    with pytest.raises(InvalidFrameError):
        build_icmpv6(na, VM_IP, ALL_NODES)
    with pytest.raises(InvalidFrameError):
        na_frame(VM, multicast_mac(ALL_NODES), VM_IP, ALL_NODES, VM_IP, solicited=True)
    icmp = build_icmpv6(na, VM_IP, SWITCH_IP)
    with pytest.raises(InvalidFrameError):
        parse_icmpv6(_fix_checksum(icmp, VM_IP, ALL_NODES), VM_IP, ALL_NODES)


def test_parse_nd_frame_rejects() -> None:
    ns = NeighborSolicitation(VM_IP, (source_ll(SWITCH),))
    icmp = build_icmpv6(ns, SWITCH_IP, VM_IP)
    hop64 = IPv6Packet(SWITCH_IP, VM_IP, IPPROTO_ICMPV6, icmp, hop_limit=64).build()
    with pytest.raises(InvalidFrameError, match="hop limit"):
        parse_nd_frame(EthernetFrame(VM, SWITCH, ETH_P_IPV6, hop64).build())
    udp = IPv6Packet(SWITCH_IP, VM_IP, 17, icmp, hop_limit=255).build()
    with pytest.raises(InvalidFrameError):
        parse_nd_frame(EthernetFrame(VM, SWITCH, ETH_P_IPV6, udp).build())
    hop255 = IPv6Packet(SWITCH_IP, VM_IP, IPPROTO_ICMPV6, icmp, hop_limit=255).build()
    with pytest.raises(InvalidFrameError):
        parse_nd_frame(EthernetFrame(VM, SWITCH, 0x0800, hop255).build())
    assert parse_nd_frame(EthernetFrame(VM, SWITCH, ETH_P_IPV6, hop255).build())[2] == ns


def test_constants() -> None:
    assert (ICMPV6_NS, ICMPV6_NA, IPPROTO_ICMPV6) == (135, 136, 58)
    assert (OPT_SOURCE_LL, OPT_TARGET_LL) == (1, 2)
