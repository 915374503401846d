"""The fuzz corpus, mutator and oracle shared by the seeded loop and the atheris target.

Oracle: a frame parser may raise only the typed `FrameError` family (anything else, an
IndexError or struct.error leaking out, is a bug), and `Engine.on_frame`, the daemon's
whole decision path for a captured frame, never raises at all. Every probe the engine
emits in answer to fuzzed input must itself parse back as a well-formed ARP request or
Neighbor Solicitation.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from rarp_replay.engine import Config, Engine, SendFrame
from rarp_replay.errors import FrameError
from rarp_replay.frames.arp import (
    ArpOp,
    ArpPacket,
    arp_reply,
    arp_request_frame,
    parse_arp_frame,
    rarp_request_frame,
)
from rarp_replay.frames.ethernet import (
    ETH_P_8021AD,
    ETH_P_ARP,
    EthernetFrame,
    VlanTag,
)
from rarp_replay.frames.ipv6 import IPv6Packet, upper_layer_checksum
from rarp_replay.frames.ndp import (
    IPPROTO_ICMPV6,
    NdOption,
    NeighborAdvertisement,
    NeighborSolicitation,
    build_icmpv6,
    na_frame,
    ns_frame,
    parse_icmpv6,
    parse_nd_frame,
)
from rarp_replay.macaddr import BROADCAST
from tests.support import topology  # the hand-built switch the engine's unit tests use

VM = topology.VM_MAC
SVI = topology.SVI_MAC
V6_SRC = IPv6Address("2001:db8:100::10")
V6_SVI = IPv6Address("2001:db8:100::252")


def _nd(
    msg: NeighborSolicitation | NeighborAdvertisement,
    src: IPv6Address,
    dst: IPv6Address,
    vid: int | None = None,
    tags: tuple[VlanTag, ...] = (),
) -> bytes:
    icmp = build_icmpv6(msg, src, dst)
    packet = IPv6Packet(src, dst, IPPROTO_ICMPV6, icmp, hop_limit=255).build()
    tags = tags or ((VlanTag(vid),) if vid is not None else ())
    return EthernetFrame(VM, SVI, 0x86DD, packet, tags).build()


def corpus() -> list[bytes]:
    """Valid frames of every kind the capture can deliver, tagged and untagged."""
    v4 = IPv4Address("192.0.2.10")
    svi4 = IPv4Address("192.0.2.252")
    reply = arp_reply(VM, v4, SVI, svi4).build()
    qinq = (VlanTag(100, tpid=ETH_P_8021AD), VlanTag(20))
    frames = [
        rarp_request_frame(VM),
        rarp_request_frame(VM, vid=20),
        rarp_request_frame(VM, vid=10),
        rarp_request_frame(topology.OTHER_MAC),
        EthernetFrame(
            BROADCAST, VM, 0x8035, ArpPacket.parse(rarp_request_frame(VM)[14:]).build(), qinq
        ).build(),
        arp_request_frame(SVI, svi4, VM, v4),
        arp_request_frame(SVI, svi4, VM, v4, vid=20),
        EthernetFrame(SVI, VM, ETH_P_ARP, reply).build(),
        EthernetFrame(SVI, VM, ETH_P_ARP, reply, (VlanTag(20),)).build(),
        EthernetFrame(SVI, VM, ETH_P_ARP, reply, qinq).build(),
        ns_frame(SVI, VM, V6_SVI, IPv6Address("ff02::1:ff00:10"), V6_SRC),
        ns_frame(SVI, VM, V6_SVI, IPv6Address("ff02::1:ff00:10"), V6_SRC, vid=20),
        na_frame(VM, SVI, V6_SRC, V6_SVI, V6_SRC),
        na_frame(VM, SVI, V6_SRC, V6_SVI, V6_SRC, vid=20),
        # NA with no options (the target's MAC is then the frame's source), and with
        # several options, unknown ones included.
        _nd(NeighborAdvertisement(V6_SRC, solicited=True), V6_SRC, V6_SVI),
        _nd(
            NeighborAdvertisement(
                V6_SRC,
                router=True,
                override=True,
                options=(NdOption(2, VM), NdOption(1, SVI), NdOption(200, bytes(14))),
            ),
            V6_SRC,
            V6_SVI,
            tags=qinq,
        ),
        # A DAD probe: NS from ::, to the solicited-node group, no source LL option.
        _nd(NeighborSolicitation(V6_SRC), IPv6Address("::"), IPv6Address("ff02::1:ff00:10")),
    ]
    # Truncated copies: cut inside the header, a tag, the ARP body, the IPv6 header.
    frames += [f[:n] for f in frames[:3] + frames[10:13] for n in (0, 13, 16, 20, 30, 41, 58)]
    return frames


class Mutator:
    """Seeded byte-level mutations: flips, overwrites, inserts, deletes, truncation,
    extension, splicing two corpus frames. A mutant of an ICMPv6 frame gets its checksum
    fixed half of the time, so the option and RFC 4861 checks behind it run too."""

    def __init__(self, seed: int, frames: list[bytes]) -> None:
        self.rng = random.Random(seed)
        self.frames = frames

    def __call__(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.frames))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(8)
            n = len(data)
            if op == 0 and n:  # flip one bit
                data[rng.randrange(n)] ^= 1 << rng.randrange(8)
            elif op == 1 and n:  # overwrite a byte, with an edge value half the time
                data[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            elif op == 2:  # insert bytes
                i = rng.randint(0, n)
                data[i:i] = rng.randbytes(rng.randint(1, 8))
            elif op == 3 and n:  # delete a run
                i = rng.randrange(n)
                del data[i : i + rng.randint(1, 8)]
            elif op == 4:  # truncate
                del data[rng.randint(0, n) :]
            elif op == 5:  # extend (padding, trailing garbage)
                data += rng.randbytes(rng.randint(1, 64))
            elif op == 6:  # splice: this frame's head, another's tail
                other = rng.choice(self.frames)
                data = data[: rng.randint(0, n)] + other[rng.randint(0, len(other)) :]
            elif op == 7 and n >= 14:  # a tag or an EtherType where a field was
                i = rng.randrange(0, n - 1)
                data[i : i + 2] = rng.choice(
                    (b"\x81\x00", b"\x88\xa8", b"\x86\xdd", b"\x08\x06", b"\x80\x35")
                )
        if rng.random() < 0.5:
            fix_icmpv6_checksum(data)
        return bytes(data)


def fix_icmpv6_checksum(data: bytearray) -> None:
    """If `data` parses as Ethernet + IPv6 + ICMPv6, rewrite the ICMPv6 checksum."""
    try:
        eth = EthernetFrame.parse(bytes(data))
        if eth.ethertype != 0x86DD:
            return
        ip = IPv6Packet.parse(eth.payload)
    except FrameError:
        return
    if ip.next_header != IPPROTO_ICMPV6 or len(ip.payload) < 4:
        return
    start = len(data) - len(eth.payload) + 40
    body = bytearray(ip.payload)
    body[2:4] = b"\0\0"
    csum = upper_layer_checksum(ip.src, ip.dst, IPPROTO_ICMPV6, bytes(body))
    data[start + 2 : start + 4] = csum.to_bytes(2, "big")


# How many inputs each parser accepted: the mutants must reach past the first checks.
accepted: Counter[str] = Counter()


def _ipv6_icmpv6(data: bytes) -> object:
    ip = IPv6Packet.parse(data)
    return parse_icmpv6(ip.payload, ip.src, ip.dst)


def frame_parsers(data: bytes) -> None:
    """Run every parser on `data`; only FrameError may come out of any of them."""
    try:
        payload = EthernetFrame.parse(data).payload
        accepted["ethernet"] += 1
    except FrameError:
        payload = data[14:]  # the layer parsers get whatever follows a header anyway
    parsers: tuple[tuple[str, Callable[[bytes], object], bytes], ...] = (
        ("arp-frame", parse_arp_frame, data),
        ("nd-frame", parse_nd_frame, data),
        ("arp", ArpPacket.parse, payload),
        ("ipv6+icmpv6", _ipv6_icmpv6, payload),
    )
    for name, parse, arg in parsers:
        try:
            parse(arg)
        except FrameError:
            continue
        accepted[name] += 1


def _check_probe(a: SendFrame) -> None:
    """A probe the engine built must be a well-formed request to the VM's MAC."""
    if a.family == 4:
        _, arp = parse_arp_frame(a.frame)
        assert arp.op == ArpOp.REQUEST and arp.tha == a.mac, a
    else:
        _, _, msg = parse_nd_frame(a.frame)
        assert isinstance(msg, NeighborSolicitation) and msg.target == a.target, a


# Ports a frame may be seen on: access ports, the bridge, the VXLAN port, a macvlan,
# a routed port, a trunk and its VLAN device, a VLAN device on the bridge, and ifindexes
# the mirror does not know.
IFINDEXES = (
    topology.PORT,
    topology.PORT2,
    topology.BR,
    topology.VX,
    topology.MACVLAN,
    topology.ROUTED,
    topology.TRUNK,
    topology.TRUNK_V10,
    topology.BR_VLAN,
    0,
    99,
)


class Harness:
    """An engine on the topology switch, holding the VM's bindings in every state the
    engine distinguishes (remote, local, static), fed frames on a moving clock."""

    def __init__(self, seed: int) -> None:
        mirror = topology.switch(
            topology.remote("192.0.2.10"),
            topology.remote("2001:db8:100::10"),
            topology.local("198.51.100.10"),
            topology.local("198.51.100.130", state=0x80),  # NUD_PERMANENT
            topology.remote("192.0.2.20", mac=topology.OTHER_MAC),
            topology.remote("192.0.2.30", index=topology.MACVLAN),
        )
        self.engine = Engine(mirror, Config())
        self.rng = random.Random(seed ^ 0x5EED)
        self.now = 1.0
        self.count = 0

    def feed(self, data: bytes) -> None:
        rng = self.rng
        self.now += 0.001
        ifindex = rng.choice(IFINDEXES)
        vid = None
        if rng.random() < 0.2:
            vid = rng.choice((0, 10, 20, 100, 4095, rng.randrange(4096)))
        for a in self.engine.on_frame(data, ifindex, vid, self.now):
            if isinstance(a, SendFrame):
                _check_probe(a)
        self.count += 1
        if self.count % 64 == 0:
            for a in self.engine.tick(self.now):
                if isinstance(a, SendFrame):
                    _check_probe(a)


def one_frame(harness: Harness) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        frame_parsers(data)
        harness.feed(data)

    return check
