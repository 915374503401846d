"""ARP (RFC 826) and RARP (RFC 903) packets, and the two frames the daemon sends.

RARP reuses the ARP packet layout unchanged (RFC 903, "the packet format is
the same as ARP") with opcodes 3 and 4 and its own EtherType 0x8035, so one
codec serves both.  Hypervisors (QEMU's announce_self, VMware, Hyper-V) send
a RARP request after a live migration so switches re-learn the VM's MAC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from ..errors import InvalidFrameError, TruncatedFrameError
from ..macaddr import BROADCAST
from .ethernet import ETH_ALEN, ETH_HLEN, ETH_P_ARP, ETH_P_RARP, VLAN_HLEN, EthernetFrame, VlanTag

HTYPE_ETHERNET = 1  # ar$hrd for 10Mb Ethernet, RFC 826 / IANA "Hardware Types"
PTYPE_IPV4 = 0x0800  # ar$pro is an EtherType, RFC 826
IPV4_ALEN = 4

_FIXED = struct.Struct("!HHBBH")  # ar$hrd, ar$pro, ar$hln, ar$pln, ar$op
ARP_FIXED_LEN = _FIXED.size  # 8
# Length of an Ethernet/IPv4 ARP packet: 8 + 2 * (6 + 4).
ARP_ETHER_IPV4_LEN = ARP_FIXED_LEN + 2 * (ETH_ALEN + IPV4_ALEN)
# Offsets into an Ethernet/IPv4 packet: ar$op ends the fixed part; ar$tha follows
# ar$sha and ar$spa (RFC 826 "Packet format").
ARP_OP_OFFSET = ARP_FIXED_LEN - 2
ARP_THA_OFFSET = ARP_FIXED_LEN + ETH_ALEN + IPV4_ALEN

_ZERO_IP = bytes(IPV4_ALEN)


class ArpOp(IntEnum):
    REQUEST = 1  # RFC 826
    REPLY = 2  # RFC 826
    RARP_REQUEST = 3  # RFC 903 "request reverse"
    RARP_REPLY = 4  # RFC 903 "reply reverse"


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """The generic RFC 826 packet; hlen/plen are implied by len(sha)/len(spa).

    `op` stays a plain int on parse (RFC 5494 registers more opcodes than
    ArpOp names, e.g. InARP 8/9); ArpOp members compare and hash equal to it.
    """

    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes
    htype: int = HTYPE_ETHERNET
    ptype: int = PTYPE_IPV4

    @property
    def hlen(self) -> int:
        return len(self.sha)

    @property
    def plen(self) -> int:
        return len(self.spa)

    @property
    def is_ethernet_ipv4(self) -> bool:
        """The only combination the daemon acts on (and Linux's arp_rcv accepts on Ethernet)."""
        return (
            self.htype == HTYPE_ETHERNET
            and self.ptype == PTYPE_IPV4
            and len(self.sha) == ETH_ALEN
            and len(self.spa) == IPV4_ALEN
        )

    @property
    def sender_ip(self) -> IPv4Address:
        return _ipv4(self.spa)

    @property
    def target_ip(self) -> IPv4Address:
        return _ipv4(self.tpa)

    def build(self) -> bytes:
        """Encode without Ethernet padding (EthernetFrame.build adds it)."""
        hlen, plen = len(self.sha), len(self.spa)
        if len(self.tha) != hlen or len(self.tpa) != plen:
            raise InvalidFrameError("sender and target addresses differ in length")
        # ar$hln/ar$pln are single octets (RFC 826); a zero length cannot name anything.
        if not 0 < hlen <= 255 or not 0 < plen <= 255:
            raise InvalidFrameError(f"ARP address lengths {hlen}/{plen} out of range 1..255")
        if not 0 <= self.htype <= 0xFFFF or not 0 <= self.ptype <= 0xFFFF:
            raise InvalidFrameError("ARP hardware/protocol type does not fit 16 bits")
        if not 0 <= self.op <= 0xFFFF:
            raise InvalidFrameError(f"ARP opcode {self.op} does not fit 16 bits")
        return b"".join(
            (
                _FIXED.pack(self.htype, self.ptype, hlen, plen, self.op),
                self.sha,
                self.spa,
                self.tha,
                self.tpa,
            )
        )

    @classmethod
    def parse(cls, data: bytes) -> ArpPacket:
        """Decode; bytes after the packet (Ethernet padding to 60 octets) are ignored."""
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) < ARP_FIXED_LEN:
            raise TruncatedFrameError(f"ARP packet of {len(data)} octets, need {ARP_FIXED_LEN}")
        htype, ptype, hlen, plen, op = _FIXED.unpack_from(data)
        if hlen == 0 or plen == 0:
            raise InvalidFrameError(f"ARP address lengths {hlen}/{plen}: zero is meaningless")
        end = ARP_FIXED_LEN + 2 * (hlen + plen)
        if len(data) < end:
            raise TruncatedFrameError(f"ARP packet of {len(data)} octets, header says {end}")
        # Fixed offsets computed once; slicing is cheaper than a struct format built per call.
        spa_at = ARP_FIXED_LEN + hlen
        tha_at = spa_at + plen
        tpa_at = tha_at + hlen
        return cls(
            op,
            data[ARP_FIXED_LEN:spa_at],
            data[spa_at:tha_at],
            data[tha_at:tpa_at],
            data[tpa_at:end],
            htype,
            ptype,
        )


def ether_ipv4_header(op: int) -> bytes:
    """The fixed part (ar$hrd .. ar$op) of an Ethernet/IPv4 packet with opcode `op`."""
    return _FIXED.pack(HTYPE_ETHERNET, PTYPE_IPV4, ETH_ALEN, IPV4_ALEN, op)


def _ipv4(raw: bytes) -> IPv4Address:
    if len(raw) != IPV4_ALEN:
        raise InvalidFrameError(f"protocol address of {len(raw)} octets is not IPv4")
    return IPv4Address(raw)


def _check_mac(mac: bytes, what: str) -> None:
    if len(mac) != ETH_ALEN:
        raise InvalidFrameError(f"{what} must be a 6-octet MAC, got {len(mac)} octets")


def rarp_request(mac: bytes) -> ArpPacket:
    """RARP "request reverse" for `mac` as hypervisors send it after a migration.

    RFC 903 has the requester put its own address in both sha and tha and
    leave the protocol addresses undefined; QEMU (net/announce.c) zeroes them.
    """
    _check_mac(mac, "RARP MAC")
    return ArpPacket(ArpOp.RARP_REQUEST, mac, _ZERO_IP, mac, _ZERO_IP)


def arp_request(sha: bytes, spa: IPv4Address, tha: bytes, tpa: IPv4Address) -> ArpPacket:
    """Ethernet/IPv4 ARP request (RFC 826).  tha is ignored by responders; a
    unicast probe sets it to the expected MAC, as Linux does for NUD_PROBE."""
    _check_mac(sha, "ARP sender MAC")
    _check_mac(tha, "ARP target MAC")
    return ArpPacket(ArpOp.REQUEST, sha, spa.packed, tha, tpa.packed)


def arp_reply(sha: bytes, spa: IPv4Address, tha: bytes, tpa: IPv4Address) -> ArpPacket:
    """Ethernet/IPv4 ARP reply (RFC 826): sha/spa answer, tha/tpa are the asker."""
    _check_mac(sha, "ARP sender MAC")
    _check_mac(tha, "ARP target MAC")
    return ArpPacket(ArpOp.REPLY, sha, spa.packed, tha, tpa.packed)


def _tags(vid: int | None) -> tuple[VlanTag, ...]:
    return () if vid is None else (VlanTag(vid),)


def rarp_request_frame(mac: bytes, vid: int | None = None) -> bytes:
    """The 60-octet broadcast RARP frame QEMU's qemu_announce_self sends for `mac`.

    With `vid` an 802.1Q tag is inserted and the frame is still padded to 60
    octets in total (the tag eats 4 octets of padding), as Linux does; a bridge
    that strips the tag re-pads the untagged frame to the minimum.
    """
    packet = rarp_request(mac).build()
    return EthernetFrame(BROADCAST, mac, ETH_P_RARP, packet, _tags(vid)).build()


def arp_request_frame(
    src_mac: bytes,
    src_ip: IPv4Address,
    dst_mac: bytes,
    dst_ip: IPv4Address,
    vid: int | None = None,
) -> bytes:
    """A unicast ARP request to `dst_mac` asking for `dst_ip`, padded to 60 octets.

    Unicast (not broadcast) so only the VM sees it and its reply, sent from
    the VM's port, is what makes the switch learn MAC+IP locally.
    """
    packet = arp_request(src_mac, src_ip, dst_mac, dst_ip).build()
    return EthernetFrame(dst_mac, src_mac, ETH_P_ARP, packet, _tags(vid)).build()


def parse_arp_frame(data: bytes) -> tuple[EthernetFrame, ArpPacket]:
    """Decode an ARP or RARP frame (by EtherType); anything else is InvalidFrameError."""
    frame = EthernetFrame.parse(data)
    if frame.ethertype not in (ETH_P_ARP, ETH_P_RARP):
        raise InvalidFrameError(f"EtherType {frame.ethertype:#06x} is neither ARP nor RARP")
    return frame, ArpPacket.parse(frame.payload)


class ArpRequestTemplate:
    """`arp_request_frame(src_mac, src_ip, dst_mac, dst_ip, vid)` for any destination,
    byte for byte, from one frame built per (sender, tag).

    Only the VM's MAC (the Ethernet destination and ar$tha) and the target address
    differ between the probes one SVI sends, so the rest is cut out of a reference
    frame once: dst(6) | middle | tha(6) | tpa(4) | padding. Building every probe
    through the codec cost more than the rest of a round's handling (measured,
    docs/benchmarks.md).
    """

    __slots__ = ("_middle", "_pad")

    def __init__(self, src_mac: bytes, src_ip: IPv4Address, vid: int | None = None) -> None:
        ref = arp_request_frame(src_mac, src_ip, bytes(ETH_ALEN), IPv4Address(0), vid=vid)
        arp_at = ETH_HLEN + (0 if vid is None else VLAN_HLEN)
        tha_at = arp_at + ARP_THA_OFFSET
        self._middle = ref[ETH_ALEN:tha_at]
        self._pad = ref[tha_at + ETH_ALEN + IPV4_ALEN :]

    def frame(self, dst_mac: bytes, dst_ip: IPv4Address) -> bytes:
        _check_mac(dst_mac, "ARP target MAC")
        return b"".join((dst_mac, self._middle, dst_mac, dst_ip.packed, self._pad))
