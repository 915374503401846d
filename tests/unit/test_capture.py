"""`frames.capture`: what a captured frame is. The RARP fast path decides exactly
what the general parsers decide (property tests), answers are parsed from the one
Ethernet parse, and the engine acts on the typed result as it did on the bytes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from rarp_replay.engine import Config, Engine, SendFrame, Takeover
from rarp_replay.errors import FrameError
from rarp_replay.frames.arp import (
    ArpOp,
    ArpPacket,
    arp_reply,
    arp_request_frame,
    rarp_request_frame,
)
from rarp_replay.frames.capture import (
    Announcement,
    Answer,
    Drop,
    classify,
    classify_general,
)
from rarp_replay.frames.ethernet import ETH_P_ARP, ETH_P_RARP, EthernetFrame, VlanTag
from rarp_replay.frames.ndp import na_frame, ns_frame
from rarp_replay.macaddr import is_unicast
from tests.support.topology import PORT, SVI_MAC, VM_MAC, remote, switch

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


# -- classify: the fast path against the general parser --------------------------------

aux_vids = st.none() | st.integers(min_value=0, max_value=4095)


def _mutated_rarp(tha: bytes, length: int, flips: list[tuple[int, int]], tag: int | None) -> bytes:
    frame = bytearray(rarp_request_frame(VM_MAC, vid=tag))
    at = 32 if tag is None else 36  # ar$tha, to put `tha` there
    frame[at : at + 6] = tha
    for where, value in flips:
        frame[where % len(frame)] = value
    return bytes(frame[:length])


@settings(max_examples=600, deadline=None)
@given(
    tha=st.sampled_from([VM_MAC, b"\xff" * 6, bytes(6), b"\x01\x00\x5e\x00\x00\x01"]) | macs,
    length=st.integers(min_value=0, max_value=64),
    flips=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=3),
    tag=st.none() | st.integers(min_value=0, max_value=4095),
    aux_vid=aux_vids,
    answers=st.booleans(),
)
def test_classify_fast_path_equals_the_general_parser(
    *,
    tha: bytes,
    length: int,
    flips: list[tuple[int, int]],
    tag: int | None,
    aux_vid: int | None,
    answers: bool,
) -> None:
    data = _mutated_rarp(tha, length, flips, tag)
    assert classify(data, aux_vid, answers) == classify_general(data, aux_vid, answers)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80), aux_vid=aux_vids, answers=st.booleans())
def test_classify_equals_the_general_parser_on_any_bytes(
    data: bytes, aux_vid: int | None, answers: bool
) -> None:
    got = classify(data, aux_vid, answers)
    assert got == classify_general(data, aux_vid, answers)
    assert got is None or isinstance(got, Announcement | Answer | Drop)


@given(tha=macs, aux_vid=aux_vids)
def test_classify_takes_bytearray_and_memoryview_like_bytes(
    tha: bytes, aux_vid: int | None
) -> None:
    data = _mutated_rarp(tha, 60, [], None)
    want = classify(data, aux_vid)
    for other in (bytearray(data), memoryview(data)):
        got = classify(other, aux_vid)  # type: ignore[arg-type]
        assert got == want
        if isinstance(got, Announcement):
            assert type(got.mac) is bytes


def test_classify_names_what_the_parsers_found() -> None:
    rarp = rarp_request_frame(VM_MAC)
    assert classify(rarp, None) == Announcement(VM_MAC, None)
    assert classify(rarp, 30) == Announcement(VM_MAC, 30)
    # An inline tag is the VLAN when the kernel reported none.
    assert classify(rarp_request_frame(VM_MAC, vid=20), None) == Announcement(VM_MAC, 20)
    assert classify(rarp_request_frame(VM_MAC, vid=20), 5) == Announcement(VM_MAC, 5)
    bcast = rarp_request_frame(VM_MAC)[:32] + b"\xff" * 6 + rarp[38:]
    assert classify(bcast, None) == Drop("target-not-unicast", mac=b"\xff" * 6)
    assert classify(rarp[:13], None) == Drop(
        "malformed", detail="Ethernet frame of 13 octets, need 14"
    )
    ipv4 = EthernetFrame(VM_MAC, SVI_MAC, 0x0800, bytes(46)).build()
    assert classify(ipv4, None) == Drop("not-rarp", detail="ethertype 0x0800")
    reply_op = rarp[:21] + b"\x04" + rarp[22:]
    assert classify(reply_op, None) == Drop("not-rarp-request", detail="op 4")
    other_hw = rarp[:15] + b"\x06" + rarp[16:]
    assert classify(other_hw, None) == Drop("not-ethernet-ipv4")


def test_classify_answers_arp_replies_and_nas() -> None:
    vm4, svi4 = IPv4Address("192.0.2.10"), IPv4Address("192.0.2.1")
    reply = EthernetFrame(
        SVI_MAC, VM_MAC, ETH_P_ARP, arp_reply(VM_MAC, vm4, SVI_MAC, svi4).build()
    ).build()
    assert classify(reply, None) == Answer(VM_MAC, vm4, None)
    assert classify(reply, 7) == Answer(VM_MAC, vm4, 7)
    # Nobody waits for an answer: not even parsed.
    assert classify(reply, None, answers=False) is None
    vm6, svi6 = IPv6Address("2001:db8::10"), IPv6Address("2001:db8::1")
    na = na_frame(VM_MAC, SVI_MAC, vm6, svi6, vm6)
    assert classify(na, None) == Answer(VM_MAC, vm6, None)
    # Not answers: an ARP request, an NS.
    assert classify(arp_request_frame(VM_MAC, vm4, SVI_MAC, svi4), None) is None
    assert classify(ns_frame(VM_MAC, SVI_MAC, vm6, svi6, svi6), None) is None
    # A broken NA (checksum) is counted, not logged.
    bad = na[:-1] + bytes([na[-1] ^ 1])
    assert classify(bad, None) == Drop("malformed-reply", log=False)
    # Tagged answers are not ours (received frames are untagged by then).
    tagged = EthernetFrame(
        SVI_MAC, VM_MAC, ETH_P_ARP, arp_reply(VM_MAC, vm4, SVI_MAC, svi4).build(), (VlanTag(5),)
    ).build()
    assert classify(tagged, None) == Drop("not-rarp", detail=f"ethertype 0x{ETH_P_ARP:04x}")


# -- the engine acts on what classify found --------------------------------------------


def test_engine_on_capture_is_on_frame() -> None:
    """The daemon calls classify then on_capture; tests call on_frame: the same."""
    frames = [
        rarp_request_frame(VM_MAC),
        rarp_request_frame(VM_MAC)[:20],
        EthernetFrame(VM_MAC, SVI_MAC, 0x0800, bytes(46)).build(),
    ]
    a, b = Engine(switch(remote("192.0.2.10"))), Engine(switch(remote("192.0.2.10")))
    for i, f in enumerate(frames):
        want = a.on_frame(f, PORT, None, float(i))
        assert b.on_capture(classify(f, None, b.expects_answers), PORT, float(i)) == want
    assert a.stats == b.stats and b.stats["rounds"] == 1


def test_engine_takes_over_on_a_classified_answer() -> None:
    # `takeover-delay` 0 (make-before-break, not the default): the answer's visible
    # effect is then the takeover itself.
    eng = Engine(switch(remote("192.0.2.10")), Config(takeover_delay=0.0))
    assert not eng.expects_answers
    eng.on_frame(rarp_request_frame(VM_MAC), PORT, None, 0.0)
    assert eng.expects_answers
    acts = eng.on_capture(Answer(VM_MAC, ip_address("192.0.2.10"), None), PORT, 0.001)
    assert [a for a in acts if isinstance(a, Takeover)]
    assert eng.stats["takeovers"] == 1
    eng.on_capture(Drop("malformed-reply", log=False), PORT, 0.002)
    assert eng.stats["dropped.malformed-reply"] == 1
