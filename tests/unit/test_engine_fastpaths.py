"""The engine's shortcuts decide exactly what the general code decides: the RARP
fast path against the frame parsers, ARP probe templates against the frame builder,
cached domain resolutions against changes of the mirror's links."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from rarp_replay.engine import Engine, SendFrame
from rarp_replay.errors import FrameError
from rarp_replay.frames.arp import ArpOp, ArpPacket, arp_request_frame, rarp_request_frame
from rarp_replay.frames.ethernet import ETH_P_RARP, EthernetFrame
from rarp_replay.macaddr import is_unicast
from rarp_replay.netlink.records import Address, Link
from tests.support.topology import BR, PORT, PORT2, VM_MAC, VX, gone, local, new, remote, switch

macs = st.binary(min_size=6, max_size=6)


def expected(frame: bytes, aux_vid: int | None) -> tuple[str, bytes | None, int | None]:
    """What the general parsers make of a frame: ("announce", mac, vid) or ("drop", reason)."""
    try:
        eth = EthernetFrame.parse(frame)
    except FrameError:
        return ("malformed", None, None)
    if eth.ethertype != ETH_P_RARP:
        return ("other", None, None)
    try:
        pkt = ArpPacket.parse(eth.payload)
    except FrameError:
        return ("malformed", None, None)
    if not pkt.is_ethernet_ipv4:
        return ("not-ethernet-ipv4", None, None)
    if pkt.op != ArpOp.RARP_REQUEST:
        return ("not-rarp-request", None, None)
    if not is_unicast(pkt.tha):
        return ("target-not-unicast", None, None)
    vid = aux_vid if aux_vid is not None else (eth.tags[0].vid if eth.tags else None)
    return ("announce", pkt.tha, vid)


@settings(max_examples=400, deadline=None)
@given(
    tha=st.sampled_from([VM_MAC, b"\xff" * 6, bytes(6), b"\x01\x00\x5e\x00\x00\x01"]) | macs,
    length=st.integers(min_value=14, max_value=64),
    flip=st.none() | st.tuples(st.integers(min_value=12, max_value=41), st.integers(0, 255)),
    aux_vid=st.none() | st.integers(min_value=0, max_value=4095),
)
def test_rarp_fast_path_decides_like_the_parsers(
    tha: bytes, length: int, flip: tuple[int, int] | None, aux_vid: int | None
) -> None:
    frame = bytearray(rarp_request_frame(VM_MAC))
    frame[32:38] = tha
    if flip is not None:
        frame[flip[0]] = flip[1]
    data = bytes(frame[:length])
    kind, mac, vid = expected(data, aux_vid)
    eng = Engine(switch(remote("192.0.2.10")))
    actions = eng.on_frame(data, PORT, aux_vid, now=1.0)
    if kind == "announce":
        assert mac is not None
        # Exactly what announcing the parsed MAC and VLAN does.
        ref = Engine(switch(remote("192.0.2.10")))
        want = ref.announce(mac, PORT, vid, 1.0, trigger="rarp")
        assert actions == want
        ref.stats["frames"] += 1
        assert eng.stats == ref.stats
    elif kind == "other":
        assert eng.stats["announcements"] == 0
        assert not [a for a in actions if isinstance(a, SendFrame)]
    else:
        assert eng.stats[f"dropped.{kind}"] == 1
        assert eng.stats["announcements"] == 0


def test_rarp_fast_path_takes_bytearray_and_memoryview_like_bytes() -> None:
    for data in (bytearray(rarp_request_frame(VM_MAC)), memoryview(rarp_request_frame(VM_MAC))):
        eng = Engine(switch(remote("192.0.2.10")))
        sent = [a for a in eng.on_frame(data, PORT, None, now=1.0) if isinstance(a, SendFrame)]  # type: ignore[arg-type]
        assert len(sent) == 1 and type(sent[0].mac) is bytes


@settings(max_examples=300, deadline=None)
@given(
    src_mac=macs,
    src_ip=st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address),
    dsts=st.lists(
        st.tuples(macs, st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)),
        min_size=1,
        max_size=3,
    ),
    tag=st.none() | st.integers(min_value=0, max_value=4095),
)
def test_arp_probe_templates_are_the_frame_builders_bytes(
    src_mac: bytes, src_ip: IPv4Address, dsts: list[tuple[bytes, IPv4Address]], tag: int | None
) -> None:
    eng = Engine(switch())
    for dst_mac, dst_ip in dsts:  # the first builds the template, the others reuse it
        want = arp_request_frame(src_mac, src_ip, dst_mac, dst_ip, vid=tag)
        assert eng._arp_probe(src_mac, src_ip, dst_mac, dst_ip, tag) == want


def test_cached_domains_follow_link_and_address_changes() -> None:
    m = switch(remote("192.0.2.10"), remote("192.0.2.11", mac=b"\x52\x54\x00\x00\x00\x02"))
    eng = Engine(
        m,
    )
    assert (
        len(
            [
                a
                for a in eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, 0.0)
                if isinstance(a, SendFrame)
            ]
        )
        == 1
    )
    # swp1 turns into a fabric port (same ifindex, now a VXLAN device): no probe.
    gen = m.generation
    m.apply(
        new(Link(PORT, "vx-swp1", flags=1, mac=bytes(5) + b"\x11", kind="vxlan", master=BR)), 1.0
    )
    assert m.generation > gen
    other = b"\x52\x54\x00\x00\x00\x02"
    eng.on_frame(rarp_request_frame(other), PORT, None, 1.0)
    assert eng.stats["dropped.fabric-port"] == 1
    # ...and gone altogether.
    m.apply(gone(Link(PORT, "vx-swp1")), 2.0)
    eng.on_frame(rarp_request_frame(other), PORT, None, 2.0)
    assert eng.stats["dropped.unknown-interface"] == 1
    # An address event also starts over (whatever resolve reads may depend on it).
    gen = m.generation
    m.apply(new(Address(BR, ip_address("192.0.2.99"), 24)), 3.0)
    assert m.generation > gen
    # Neighbor changes do not: they are not what a domain is made of.
    gen = m.generation
    m.apply(new(local("192.0.2.12")), 4.0)
    assert m.generation == gen
    # The other ports, unchanged, still resolve.
    assert eng.on_frame(rarp_request_frame(other), PORT2, None, 5.0)
    assert eng.stats["rounds"] == 2


def test_explicit_invalidation_forgets_cached_domains() -> None:
    m = switch(remote("192.0.2.10"))
    eng = Engine(m)
    eng.on_frame(rarp_request_frame(VM_MAC), VX, None, 0.0)
    assert eng.stats["dropped.fabric-port"] == 1
    # A change made behind the mirror's back (not through apply/reset) ...
    m.links[VX] = Link(VX, "swp7", flags=1, mac=bytes(5) + b"\x13", kind="veth", master=BR)
    eng.invalidate_domains()
    eng.on_frame(rarp_request_frame(VM_MAC), VX, None, 1.0)
    assert eng.stats["rounds"] == 1
