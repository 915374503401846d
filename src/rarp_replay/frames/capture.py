"""What the daemon's capture delivers: the kernel filter that selects frames, and
`classify`, which turns one captured frame into a typed result for the engine.

Both sides of the capture are here, next to each other and built from the codecs'
constants, so they cannot disagree about a frame's layout:

* `capture_filter` is the classic BPF program the capture sockets run in the
  kernel: RARP (untagged, one or two inline tags) and, with `answers`, the ARP
  replies and Neighbor Advertisements that answer our probes;
* `classify(data, vid)` parses Ethernet once and returns an `Announcement`
  (a RARP request: the announced MAC and its VLAN), an `Answer` (an ARP reply
  or NA: who answers for which address), a `Drop` with its reason, or None (a
  frame that is neither, counted by nobody).

The common frame of a burst, an untagged Ethernet/IPv4 RARP request, is decided
from fixed offsets without building the parsers' objects; `classify_general`
is the same decision through the parsers, and the property tests in
tests/unit/test_capture.py prove the two equal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ..counters import (
    MALFORMED,
    MALFORMED_REPLY,
    NOT_ETHERNET_IPV4,
    NOT_RARP,
    NOT_RARP_REQUEST,
    TARGET_NOT_UNICAST,
)
from ..errors import FrameError
from ..macaddr import is_unicast
from .arp import (
    ARP_ETHER_IPV4_LEN,
    ARP_OP_OFFSET,
    ARP_THA_OFFSET,
    ArpOp,
    ArpPacket,
    ether_ipv4_header,
)
from .bpf import (
    JEQ_K,
    LD_B_ABS,
    LD_H_ABS,
    LD_W_ABS,
    PACKET_OUTGOING,
    RET_K,
    SKF_AD_OFF,
    SKF_AD_PKTTYPE,
    Line,
    Program,
    assemble,
)
from .ethernet import (
    ETH_ALEN,
    ETH_HLEN,
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IPV6,
    ETH_P_RARP,
    ETH_TYPE_OFFSET,
    VLAN_HLEN,
    EthernetFrame,
)
from .ipv6 import IPV6_HLEN, IPV6_NEXT_HEADER_OFFSET
from .ndp import ICMPV6_NA, IPPROTO_ICMPV6, NeighborAdvertisement, parse_nd_packet

__all__ = [
    "Announcement",
    "Answer",
    "Captured",
    "Drop",
    "capture_filter",
    "classify",
    "classify_general",
]


# Not frozen: a frozen dataclass pays object.__setattr__ per field on creation, and
# one of these is made per captured frame. Treat them as read-only.
@dataclass(slots=True)
class Announcement:
    """A RARP request (RFC 903): `mac` (its target hardware address) announced in VLAN `vid`."""

    mac: bytes
    vid: int | None


@dataclass(slots=True)
class Answer:
    """An ARP reply or Neighbor Advertisement: `mac` answers for `address` (VLAN `vid`)."""

    mac: bytes
    address: IPv4Address | IPv6Address
    vid: int | None


@dataclass(slots=True)
class Drop:
    """A frame the engine counts as dropped for `reason` (one of `counters.FRAME_DROPS`),
    and logs, when `log`."""

    reason: str
    detail: str | None = None
    mac: bytes | None = None
    log: bool = True


Captured = Announcement | Answer | Drop | None

# --- the kernel filter --------------------------------------------------------------

# "Whole frame": the receive buffer and the socket's snaplen bound the copy.
_ACCEPT_ALL = 0x40000


def capture_filter(answers: bool = False) -> Program:
    """The classic BPF program of the capture sockets: RARP (untagged, one or two
    tags), never outgoing; with `answers`, also untagged ARP replies and NAs.

    The program sees the frame from the destination MAC (packet_rcv() pushes the
    link-layer header back before run_filter()). A receive-side 802.1Q tag has
    usually already been moved out of the frame into skb->vlan_tci by
    skb_vlan_untag() in __netif_receive_skb_core() (net/core/dev.c), so RARP
    shows at ETH_TYPE_OFFSET; the tagged forms cover devices and paths where the
    tag stays inline (and the inner tag of QinQ, which stays inline). A load past
    the end of the frame makes the kernel return 0, which drops short frames.

    `answers` are the VM's answers to our probes, which prove it is local
    (make-before-break): ARP replies and ICMPv6 Neighbor Advertisements with no
    IPv6 extension headers (RFC 4861 messages carry none). Received frames are
    untagged by then (see above), so their offsets are fixed.
    """
    other = "answers" if answers else "drop"
    after = [ETH_TYPE_OFFSET + n * VLAN_HLEN for n in range(3)]  # type field after n tags
    listing: list[Line] = [
        # ld #pkttype: dev_queue_xmit_nit() copies (ours, the bridge's floods) are outgoing
        (None, (LD_W_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE, None, None)),
        (None, (JEQ_K, PACKET_OUTGOING, "drop", "ether")),
        ("ether", (LD_H_ABS, after[0], None, None)),  # outer EtherType / TPID
        (None, (JEQ_K, ETH_P_RARP, "accept", "q1")),  # untagged RARP
        ("q1", (JEQ_K, ETH_P_8021Q, "tag1", "ad1")),  # 802.1Q tag inline
        ("ad1", (JEQ_K, ETH_P_8021AD, "tag1", other)),  # 802.1ad tag inline
        ("tag1", (LD_H_ABS, after[1], None, None)),  # EtherType after one tag
        (None, (JEQ_K, ETH_P_RARP, "accept", "q2")),
        ("q2", (JEQ_K, ETH_P_8021Q, "tag2", "ad2")),  # a second (inner) tag
        ("ad2", (JEQ_K, ETH_P_8021AD, "tag2", "drop")),
        ("tag2", (LD_H_ABS, after[2], None, None)),  # EtherType after two tags
        (None, (JEQ_K, ETH_P_RARP, "accept", "drop")),
    ]
    if answers:
        listing += [
            ("answers", (JEQ_K, ETH_P_ARP, "arp", "ipv6")),
            ("arp", (LD_H_ABS, ETH_HLEN + ARP_OP_OFFSET, None, None)),  # ar$op (RFC 826)
            (None, (JEQ_K, ArpOp.REPLY, "accept", "drop")),
            ("ipv6", (JEQ_K, ETH_P_IPV6, "nh", "drop")),
            ("nh", (LD_B_ABS, ETH_HLEN + IPV6_NEXT_HEADER_OFFSET, None, None)),
            (None, (JEQ_K, IPPROTO_ICMPV6, "icmp", "drop")),
            ("icmp", (LD_B_ABS, ETH_HLEN + IPV6_HLEN, None, None)),  # ICMPv6 type
            (None, (JEQ_K, ICMPV6_NA, "accept", "drop")),
        ]
    listing += [
        ("accept", (RET_K, _ACCEPT_ALL, None, None)),
        ("drop", (RET_K, 0, None, None)),
    ]
    return assemble(listing)


# --- classification -----------------------------------------------------------------

# An untagged Ethernet/IPv4 RARP request from its EtherType on (RFC 903 / RFC 826):
# EtherType 0x8035, ar$hrd 1, ar$pro 0x0800, ar$hln 6, ar$pln 4, ar$op 3.
_RARP_PREFIX = struct.pack("!H", ETH_P_RARP) + ether_ipv4_header(ArpOp.RARP_REQUEST)
_RARP_PREFIX_END = ETH_TYPE_OFFSET + len(_RARP_PREFIX)
_RARP_THA = ETH_HLEN + ARP_THA_OFFSET
_RARP_MIN_LEN = ETH_HLEN + ARP_ETHER_IPV4_LEN  # the whole Ethernet/IPv4 packet is there


def classify(data: bytes, vid: int | None, answers: bool = True) -> Captured:
    """What a captured frame is; `vid` is the tag the kernel moved to PACKET_AUXDATA.

    `answers=False` skips parsing ARP replies and NAs (None instead): the engine
    has no round waiting for one, the common case on a busy switch.
    """
    if (
        type(data) is bytes
        and data[ETH_TYPE_OFFSET:_RARP_PREFIX_END] == _RARP_PREFIX
        and len(data) >= _RARP_MIN_LEN
    ):
        # Frames are seen twice or more (port, bridge), so this is most of a burst's
        # frame handling: exactly what classify_general decides, from fixed offsets.
        tha = data[_RARP_THA : _RARP_THA + ETH_ALEN]
        if not is_unicast(tha):
            return Drop(TARGET_NOT_UNICAST, mac=tha)
        return Announcement(tha, vid)
    return classify_general(data, vid, answers)


def classify_general(data: bytes, vid: int | None, answers: bool = True) -> Captured:
    """`classify` through the parsers, for every frame (no fast path)."""
    try:
        eth = EthernetFrame.parse(data)
    except FrameError as exc:
        return Drop(MALFORMED, detail=str(exc))
    if eth.ethertype in (ETH_P_ARP, ETH_P_IPV6) and not eth.tags:
        return _answer(eth, vid) if answers else None
    if eth.ethertype != ETH_P_RARP:
        return Drop(NOT_RARP, detail=f"ethertype 0x{eth.ethertype:04x}")
    try:
        pkt = ArpPacket.parse(eth.payload)
    except FrameError as exc:
        return Drop(MALFORMED, detail=str(exc))
    if not pkt.is_ethernet_ipv4:
        return Drop(NOT_ETHERNET_IPV4)
    if pkt.op != ArpOp.RARP_REQUEST:
        return Drop(NOT_RARP_REQUEST, detail=f"op {pkt.op}")
    if not is_unicast(pkt.tha):
        return Drop(TARGET_NOT_UNICAST, mac=pkt.tha)
    # The tag the kernel moved to PACKET_AUXDATA is the outermost one; a tag still
    # in the frame is either the only one (no offload) or an inner one.
    if vid is None and eth.tags:
        vid = eth.tags[0].vid
    return Announcement(pkt.tha, vid)


def _answer(eth: EthernetFrame, vid: int | None) -> Answer | Drop | None:
    """An ARP reply (RFC 826: sha/spa answer) or an NA (RFC 4861 4.4: the target
    link-layer option, else the frame's source, answers for the target)."""
    address: IPv4Address | IPv6Address
    try:
        if eth.ethertype == ETH_P_ARP:
            arp = ArpPacket.parse(eth.payload)
            if arp.op != ArpOp.REPLY or not arp.is_ethernet_ipv4:
                return None
            mac, address = arp.sha, arp.sender_ip
        else:
            _, msg = parse_nd_packet(eth.payload)
            if not isinstance(msg, NeighborAdvertisement):
                return None
            mac, address = msg.target_ll_mac or eth.src, msg.target
    except FrameError:
        # Anyone may send these: counted, not logged.
        return Drop(MALFORMED_REPLY, log=False)
    return Answer(mac, address, vid)
