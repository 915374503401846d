"""The classic BPF assembler, the capture filter and the capture group's fanout
program, run by a tiny classic-BPF interpreter over hand-built frames.

The interpreter implements only what `capture_filter()` and `fanout_program()` use and
fails loudly on anything else, following the kernel's semantics (net/core/filter.c):
an absolute load past the end of the packet ends the program with return 0, and
ancillary loads at SKF_AD_OFF + n read skb metadata instead of packet bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rarp_replay.frames.bpf import (
    BPF_A,
    BPF_ABS,
    BPF_ALU,
    BPF_B,
    BPF_H,
    BPF_JEQ,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_MAXINSNS,
    BPF_MOD,
    BPF_RET,
    BPF_W,
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    SKF_AD_IFINDEX,
    SKF_AD_OFF,
    SKF_AD_PKTTYPE,
    Program,
    assemble,
)
from rarp_replay.frames.capture import capture_filter
from rarp_replay.packetsock import fanout_program

MAC = bytes.fromhex("525400123456")
BCAST = b"\xff" * 6
ARP_BODY = bytes.fromhex("0001080006040003") + MAC + bytes(4) + MAC + bytes(4)


class UnsupportedInstructionError(Exception):
    pass


def run_bpf(
    program: Program, packet: bytes, pkt_type: int = PACKET_BROADCAST, ifindex: int = 2
) -> int:
    """Return the program's verdict (bytes to accept; 0 drops)."""
    assert 0 < len(program) <= BPF_MAXINSNS
    acc = 0
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps <= len(program), "classic BPF only jumps forward: a loop is impossible"
        code, jt, jf, k = program[pc]
        assert 0 <= k <= 0xFFFFFFFF and 0 <= jt <= 255 and 0 <= jf <= 255
        pc += 1
        if code & 0x07 == BPF_LD and code & 0xE0 == BPF_ABS:
            size = {BPF_W: 4, BPF_H: 2, BPF_B: 1}[code & 0x18]
            offset = k - (1 << 32) if k & 0x80000000 else k  # k is a signed offset
            if offset >= SKF_AD_OFF and offset < 0:
                if offset - SKF_AD_OFF == SKF_AD_PKTTYPE:
                    acc = pkt_type
                elif offset - SKF_AD_OFF == SKF_AD_IFINDEX:
                    acc = ifindex  # skb->dev->ifindex
                else:
                    raise UnsupportedInstructionError(f"ancillary load {offset - SKF_AD_OFF}")
            elif offset < 0 or offset + size > len(packet):
                return 0  # out of bounds: the kernel ends the program and drops
            else:
                acc = int.from_bytes(packet[offset : offset + size], "big")
        elif code == BPF_JMP | BPF_JEQ | BPF_K:
            pc += jt if acc == k else jf
        elif code == BPF_ALU | BPF_MOD | BPF_K:
            assert k != 0, "the kernel rejects a division by a constant 0"
            acc %= k
        elif code == BPF_RET | BPF_K:
            return k
        elif code == BPF_RET | BPF_A:
            return acc
        else:
            raise UnsupportedInstructionError(f"opcode {code:#x}")
        assert pc < len(program), "fell off the end of the program (the kernel rejects that)"


def eth(ethertype: int, body: bytes, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    frame = BCAST + MAC + b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags)
    frame += struct.pack("!H", ethertype) + body
    return frame + bytes(max(0, 60 - len(frame)))


RARP = eth(0x8035, ARP_BODY)
RARP_TAGGED = eth(0x8035, ARP_BODY, [(0x8100, 100)])
RARP_AD_TAGGED = eth(0x8035, ARP_BODY, [(0x88A8, 100)])
RARP_QINQ = eth(0x8035, ARP_BODY, [(0x88A8, 10), (0x8100, 100)])
RARP_QINQ_8100 = eth(0x8035, ARP_BODY, [(0x8100, 10), (0x8100, 100)])
ARP = eth(0x0806, ARP_BODY)
ARP_TAGGED = eth(0x0806, ARP_BODY, [(0x8100, 100)])
IPV6 = eth(0x86DD, bytes(40))
IPV4 = eth(0x0800, bytes(20))


@pytest.fixture(scope="module")
def prog() -> Program:
    return capture_filter()


def test_program_is_pure_and_well_formed(prog: Program) -> None:
    assert capture_filter() == prog
    assert prog[-1] == (BPF_RET | BPF_K, 0, 0, 0)
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code & 0x07 == BPF_JMP:
            assert i + 1 + jt < len(prog) and i + 1 + jf < len(prog)
        else:
            assert jt == jf == 0


@pytest.mark.parametrize(
    "frame",
    [RARP, RARP_TAGGED, RARP_AD_TAGGED, RARP_QINQ, RARP_QINQ_8100],
    ids=["untagged", "8021q", "8021ad", "qinq", "double-8100"],
)
@pytest.mark.parametrize(
    "pkt_type", [PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST]
)
def test_rarp_accepted(prog: Program, frame: bytes, pkt_type: int) -> None:
    assert run_bpf(prog, frame, pkt_type) >= len(frame)


@pytest.mark.parametrize(
    "frame",
    [
        ARP,
        ARP_TAGGED,
        IPV6,
        IPV4,
        eth(0x8035, ARP_BODY, [(0x9100, 100)]),  # pre-standard TPID: not peeled
        eth(0x8035, ARP_BODY, [(0x8100, 1), (0x8100, 2), (0x8100, 3)]),  # three tags
        eth(0x0806, ARP_BODY, [(0x88A8, 10), (0x8100, 100)]),
        # 0x8035 in the wrong place: the TCI field of a tag, not the EtherType.
        eth(0x0800, bytes(40), [(0x8100, 0x8035 & 0x0FFF)]),
    ],
    ids=["arp", "arp-tagged", "ipv6", "ipv4", "tpid-9100", "three-tags", "arp-qinq", "tci"],
)
def test_non_rarp_rejected(prog: Program, frame: bytes) -> None:
    assert run_bpf(prog, frame) == 0


@pytest.mark.parametrize("frame", [RARP, RARP_TAGGED, RARP_QINQ])
def test_outgoing_rarp_rejected(prog: Program, frame: bytes) -> None:
    assert run_bpf(prog, frame, PACKET_OUTGOING) == 0


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        BCAST,
        RARP[:13],  # EtherType cut in half
        RARP_TAGGED[:17],  # inner EtherType cut in half
        RARP_QINQ[:21],  # innermost EtherType cut in half
    ],
    ids=["empty", "6-bytes", "13-bytes", "tagged-17", "qinq-21"],
)
def test_short_frames_rejected(prog: Program, frame: bytes) -> None:
    assert run_bpf(prog, frame) == 0


def test_headers_alone_are_enough(prog: Program) -> None:
    # The filter only classifies; the parser judges the payload (and counts the drop).
    assert run_bpf(prog, RARP[:14]) > 0
    assert run_bpf(prog, RARP_QINQ[:22]) > 0


_INTERESTING = st.sampled_from([0x8035, 0x8100, 0x88A8, 0x0806, 0x86DD, 0x9100])
_U16 = st.one_of(_INTERESTING, st.integers(0, 0xFFFF)).map(lambda v: struct.pack("!H", v))
# Frames made of 16-bit words where EtherTypes and TPIDs are likely, cut at any length.
_FRAMES = st.builds(
    lambda words, cut: b"".join(words)[:cut],
    st.lists(_U16, max_size=32),
    st.integers(0, 64),
)


@given(st.one_of(_FRAMES, st.binary(max_size=80)), st.integers(min_value=0, max_value=7))
def test_verdict_matches_a_plain_reading(frame: bytes, pkt_type: int) -> None:
    """Any bytes: accepted exactly when a straightforward decoder calls it RARP."""

    def u16(at: int) -> int | None:
        return int.from_bytes(frame[at : at + 2], "big") if len(frame) >= at + 2 else None

    tpids = (0x8100, 0x88A8)
    expected = pkt_type != PACKET_OUTGOING and (
        u16(12) == 0x8035
        or (u16(12) in tpids and u16(16) == 0x8035)
        or (u16(12) in tpids and u16(16) in tpids and u16(20) == 0x8035)
    )
    assert (run_bpf(capture_filter(), frame, pkt_type) > 0) == expected


def test_ancillary_offset_is_encoded_as_unsigned(prog: Program) -> None:
    # struct sock_filter.k is __u32: SKF_AD_OFF + SKF_AD_PKTTYPE = -4092 -> 0xfffff004.
    assert prog[0] == (BPF_LD | BPF_W | BPF_ABS, 0, 0, 0xFFFFF004)


def _arp_op(op: int) -> bytes:
    return eth(0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + bytes(20))


def _icmp6(icmp_type: int, next_header: int = 58) -> bytes:
    ip6 = struct.pack("!IHBB", 6 << 28, 24, next_header, 255) + bytes(32)
    return eth(0x86DD, ip6 + bytes([icmp_type]) + bytes(23))


@pytest.mark.parametrize(
    ("frame", "accepted"),
    [
        (RARP, True),
        (RARP_QINQ, True),
        (_arp_op(2), True),  # ARP reply: the VM answering a probe
        (_arp_op(1), False),  # ARP request
        (_icmp6(136), True),  # Neighbor Advertisement
        (_icmp6(135), False),  # Neighbor Solicitation
        (_icmp6(136, next_header=0), False),  # hop-by-hop header first: not an ND message
        (IPV4, False),
        (ARP_TAGGED, False),
    ],
)
def test_reply_mode(frame: bytes, accepted: bool) -> None:
    prog = capture_filter(answers=True)
    assert (run_bpf(prog, frame) > 0) is accepted
    assert run_bpf(prog, frame, PACKET_OUTGOING) == 0
    # Without reply mode only RARP passes.
    assert (run_bpf(capture_filter(), frame) > 0) is (frame in (RARP, RARP_QINQ))


@given(
    st.integers(1, 64), st.integers(1, 0x7FFFFFFF), st.sampled_from([PACKET_HOST, PACKET_OUTGOING])
)
def test_fanout_program_picks_member_ifindex_mod_n(members: int, ifindex: int, kind: int) -> None:
    # The member depends on the device only: not on the frame, not on its direction.
    prog = fanout_program(members)
    assert run_bpf(prog, RARP, kind, ifindex) == ifindex % members
    assert run_bpf(prog, b"", kind, ifindex) == ifindex % members  # no packet load at all


def test_fanout_program_needs_a_member() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        fanout_program(0)


def test_assembler_resolves_labels_into_forward_jumps() -> None:
    jeq, ret = BPF_JMP | BPF_JEQ | BPF_K, BPF_RET | BPF_K
    prog = assemble(
        [
            (None, (jeq, 7, "yes", "no")),
            ("no", (ret, 0, None, None)),
            ("yes", (ret, 1, None, None)),
        ]
    )
    assert prog == [(jeq, 1, 0, 7), (ret, 0, 0, 0), (ret, 0, 0, 1)]
    assert run_bpf(prog, b"") == 0


def test_assembler_refuses_backward_and_long_jumps() -> None:
    jeq, ret = BPF_JMP | BPF_JEQ | BPF_K, BPF_RET | BPF_K
    with pytest.raises(ValueError, match="forward"):
        assemble([("top", (ret, 0, None, None)), (None, (jeq, 1, "top", "top"))])
    far = [(None, (jeq, 1, "end", None))] + [(None, (ret, 0, None, None))] * 256
    with pytest.raises(ValueError, match="forward"):
        assemble([*far, ("end", (ret, 1, None, None))])
    with pytest.raises(ValueError, match="instructions"):
        assemble([])
