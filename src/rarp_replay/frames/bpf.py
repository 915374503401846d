"""A small classic BPF (cBPF) assembler: labels in, `struct sock_filter` tuples out.

Only what the capture's programs use: absolute loads, ancillary loads (skb
metadata at SKF_AD_OFF + n), `jeq #k`, `mod #k`, `ret`. The programs themselves
are built where the facts they test live: the capture filter in
`frames.capture` (from the codecs' constants), the fanout program in
`packetsock`. No protocol knowledge here.
"""

from __future__ import annotations

from typing import TypeAlias

# Classic BPF opcodes (include/uapi/linux/bpf_common.h, linux/filter.h).
BPF_LD = 0x00
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_ABS = 0x20
BPF_JEQ = 0x10
BPF_MOD = 0x90
BPF_K = 0x00
BPF_A = 0x10
# Ancillary loads: an absolute load at SKF_AD_OFF + n reads skb metadata instead of
# packet bytes (net/core/filter.c, convert_skb_access / bpf_convert_filter).
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
BPF_MAXINSNS = 4096

# skb->pkt_type, as `ld #pkttype` loads it and sockaddr_ll.sll_pkttype reports it
# (include/uapi/linux/if_packet.h).
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4

LD_W_ABS = BPF_LD | BPF_W | BPF_ABS
LD_H_ABS = BPF_LD | BPF_H | BPF_ABS
LD_B_ABS = BPF_LD | BPF_B | BPF_ABS
JEQ_K = BPF_JMP | BPF_JEQ | BPF_K
MOD_K = BPF_ALU | BPF_MOD | BPF_K
RET_K = BPF_RET | BPF_K
RET_A = BPF_RET | BPF_A

# One `struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }`.
Insn: TypeAlias = tuple[int, int, int, int]
Program: TypeAlias = list[Insn]
# A listing line: (label or None, (code, k, label if true, label if false)).
Line: TypeAlias = tuple[str | None, tuple[int, int, str | None, str | None]]


def stmt(code: int, k: int) -> Insn:
    """A non-jump instruction; k is encoded as the kernel's __u32 (negative offsets wrap)."""
    return (code, 0, 0, k & 0xFFFFFFFF)


def assemble(listing: list[Line]) -> Program:
    """Resolve labels into classic BPF's relative forward jumps (8 bits each)."""
    where = {label: i for i, (label, _) in enumerate(listing) if label}
    prog: Program = []
    for i, (_, (code, k, jt, jf)) in enumerate(listing):
        if not (jt or jf):
            prog.append(stmt(code, k))
            continue
        t = where[jt] - i - 1 if jt else 0
        f = where[jf] - i - 1 if jf else 0
        if not (0 <= t <= 255 and 0 <= f <= 255):
            raise ValueError("classic BPF jumps only forward, at most 255 instructions")
        prog.append((code, t, f, k & 0xFFFFFFFF))
    if not 0 < len(prog) <= BPF_MAXINSNS:
        raise ValueError(f"a BPF program has 1..{BPF_MAXINSNS} instructions, got {len(prog)}")
    return prog
