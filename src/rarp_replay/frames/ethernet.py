"""Ethernet II frames with optional stacked VLAN tags (IEEE 802.3, IEEE 802.1Q).

Frames are handled as they appear on an AF_PACKET socket: no preamble and no
FCS (the NIC strips and checks it), so the minimum length is 60 octets, not 64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import InvalidFrameError, TruncatedFrameError

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ETH_P_8021Q = 0x8100  # C-TAG, IEEE 802.1Q-2018 9.5
ETH_P_8021AD = 0x88A8  # S-TAG (QinQ outer tag), IEEE 802.1Q-2018 9.5
ETH_P_IPV6 = 0x86DD

ETH_ALEN = 6
ETH_HLEN = 14
# The type field follows the two addresses; with VLAN tags, each tag's TPID sits
# there and the next type field VLAN_HLEN octets later (802.1Q 9.3).
ETH_TYPE_OFFSET = 2 * ETH_ALEN
# Minimum frame length without the 4-octet FCS: IEEE 802.3 minimum of 64 octets
# minus FCS.  Shorter frames are runts that switches drop, so we pad on build.
ETH_ZLEN = 60
# Values below 0x0600 in the type field are an IEEE 802.3 length, not an
# EtherType (IEEE 802.3-2018 3.2.6); we keep them as-is and do not decode LLC.
ETH_P_802_3_MIN = 0x0600

# TPIDs we peel on parse.  Only these two: 0x9100 and friends are pre-standard.
VLAN_TPIDS = frozenset((ETH_P_8021Q, ETH_P_8021AD))
# More tags than any real fabric uses; bounded so a hostile frame made only of
# tag headers cannot make us build a long tuple.
MAX_VLAN_TAGS = 8
VLAN_HLEN = 4
VLAN_VID_MAX = 4095

_HEADER = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")
_U16 = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class VlanTag:
    """One 802.1Q tag: TPID plus TCI (PCP:3, DEI:1, VID:12), IEEE 802.1Q-2018 9.6.

    VID 0 is a priority tag (802.1Q 9.6: "no VLAN identifier present") and 4095
    is reserved; both are representable because they occur on the wire.
    """

    vid: int
    pcp: int = 0
    dei: int = 0
    tpid: int = ETH_P_8021Q

    @property
    def tci(self) -> int:
        return (self.pcp << 13) | (self.dei << 12) | self.vid

    def build(self) -> bytes:
        if not 0 <= self.vid <= VLAN_VID_MAX:
            raise InvalidFrameError(f"VLAN ID {self.vid} out of range 0..4095")
        if not 0 <= self.pcp <= 7:
            raise InvalidFrameError(f"VLAN PCP {self.pcp} out of range 0..7")
        if not 0 <= self.dei <= 1:
            raise InvalidFrameError(f"VLAN DEI {self.dei} out of range 0..1")
        # Parse only recognizes these TPIDs; building another one would give a
        # frame that does not parse back to the same tags.
        if self.tpid not in VLAN_TPIDS:
            raise InvalidFrameError(f"VLAN TPID {self.tpid:#06x} is neither 0x8100 nor 0x88a8")
        return _TAG.pack(self.tpid, self.tci)


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    """An Ethernet II frame; `tags` lists VLAN tags outermost first (as on the wire)."""

    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes
    tags: tuple[VlanTag, ...] = ()

    @property
    def vid(self) -> int | None:
        """VID of the innermost tag: with QinQ that is the customer VLAN (C-TAG)."""
        return self.tags[-1].vid if self.tags else None

    def build(self, pad: bool = True) -> bytes:
        if len(self.dst) != ETH_ALEN or len(self.src) != ETH_ALEN:
            raise InvalidFrameError("Ethernet addresses must be 6 octets")
        if not 0 <= self.ethertype <= 0xFFFF:
            raise InvalidFrameError(f"EtherType {self.ethertype:#x} does not fit 16 bits")
        if self.ethertype in VLAN_TPIDS:
            # The payload would be re-read as a tag on parse: put tags in `tags`.
            raise InvalidFrameError("use `tags` for VLAN tags, not the EtherType")
        if len(self.tags) > MAX_VLAN_TAGS:
            raise InvalidFrameError(f"more than {MAX_VLAN_TAGS} VLAN tags")
        # Tags sit between the source address and the EtherType (802.1Q 9.3),
        # so the header is dst, src, tag..., type.
        parts = [self.dst, self.src]
        parts.extend(tag.build() for tag in self.tags)
        parts.append(_U16.pack(self.ethertype))
        parts.append(self.payload)
        frame = b"".join(parts)
        if pad and len(frame) < ETH_ZLEN:
            frame += bytes(ETH_ZLEN - len(frame))
        return frame

    @classmethod
    def parse(cls, data: bytes) -> EthernetFrame:
        """Decode a frame; trailing padding stays in `payload` (upper layers know their length)."""
        if type(data) is not bytes:
            data = bytes(data)  # so payload slices are hashable, comparable bytes
        if len(data) < ETH_HLEN:
            raise TruncatedFrameError(f"Ethernet frame of {len(data)} octets, need {ETH_HLEN}")
        dst, src, ethertype = _HEADER.unpack_from(data)
        offset = 12
        tags: list[VlanTag] = []
        while ethertype in VLAN_TPIDS:
            if len(tags) == MAX_VLAN_TAGS:
                raise InvalidFrameError(f"more than {MAX_VLAN_TAGS} stacked VLAN tags")
            # This tag's TCI plus the next type field (2 + 2 octets) must follow.
            if len(data) < offset + VLAN_HLEN + 2:
                raise TruncatedFrameError("frame ends inside a VLAN tag")
            tci, next_type = _TAG.unpack_from(data, offset + 2)
            tags.append(VlanTag(tci & 0x0FFF, tci >> 13, (tci >> 12) & 1, ethertype))
            ethertype = next_type
            offset += VLAN_HLEN
        return cls(dst, src, ethertype, data[offset + 2 :], tuple(tags))
