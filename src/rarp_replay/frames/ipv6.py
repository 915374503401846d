"""IPv6 fixed header (RFC 8200 3), Internet checksum (RFC 1071) and the
address mappings Neighbor Discovery needs (RFC 4291, RFC 2464).

Extension headers are not processed: NDP messages we send and expect carry
none, and RFC 6980 forbids fragmenting them anyway.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..errors import AddressError, InvalidFrameError, TruncatedFrameError

IPV6_HLEN = 40
IPV6_VERSION = 6
IPV6_ALEN = 16
# Next Header: after version/class/flow (4 octets) and Payload Length (2), RFC 8200 3.
IPV6_NEXT_HEADER_OFFSET = 6
# Without a Jumbo Payload option (RFC 2675, not supported) the length field caps it.
IPV6_MAX_PAYLOAD = 0xFFFF

_HEADER = struct.Struct("!IHBB16s16s")  # ver/tc/flow, payload length, next header, hop limit
_PSEUDO = struct.Struct("!16s16sI3xB")  # RFC 8200 8.1: src, dst, upper-layer length, 0, NH

# ff02::1:ff00:0/104, RFC 4291 2.7.1.
_SOLICITED_NODE_PREFIX = int(IPv6Address("ff02::1:ff00:0"))
_LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")


@dataclass(frozen=True, slots=True)
class IPv6Packet:
    src: IPv6Address
    dst: IPv6Address
    next_header: int
    payload: bytes
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0

    def build(self) -> bytes:
        if not 0 <= self.traffic_class <= 0xFF:
            raise InvalidFrameError(f"traffic class {self.traffic_class} does not fit 8 bits")
        if not 0 <= self.flow_label <= 0xFFFFF:
            raise InvalidFrameError(f"flow label {self.flow_label:#x} does not fit 20 bits")
        if not 0 <= self.next_header <= 0xFF or not 0 <= self.hop_limit <= 0xFF:
            raise InvalidFrameError("next header and hop limit are single octets")
        if len(self.payload) > IPV6_MAX_PAYLOAD:
            raise InvalidFrameError(f"payload of {len(self.payload)} octets needs a jumbogram")
        first = (IPV6_VERSION << 28) | (self.traffic_class << 20) | self.flow_label
        header = _HEADER.pack(
            first,
            len(self.payload),
            self.next_header,
            self.hop_limit,
            self.src.packed,
            self.dst.packed,
        )
        return header + self.payload

    @classmethod
    def parse(cls, data: bytes) -> IPv6Packet:
        """Decode; octets past Payload Length (Ethernet padding) are dropped."""
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) < IPV6_HLEN:
            raise TruncatedFrameError(f"IPv6 packet of {len(data)} octets, need {IPV6_HLEN}")
        first, length, next_header, hop_limit, src, dst = _HEADER.unpack_from(data)
        if first >> 28 != IPV6_VERSION:
            raise InvalidFrameError(f"IP version {first >> 28}, expected 6")
        # A short frame whose length field claims more than it carries was cut
        # somewhere; the padding case (more than claimed) is normal on Ethernet
        # because a 40-octet header + small payload is under the 46-octet minimum.
        if length > len(data) - IPV6_HLEN:
            raise TruncatedFrameError(
                f"IPv6 payload length {length} but only {len(data) - IPV6_HLEN} octets follow"
            )
        return cls(
            IPv6Address(src),
            IPv6Address(dst),
            next_header,
            data[IPV6_HLEN : IPV6_HLEN + length],
            hop_limit,
            (first >> 20) & 0xFF,
            first & 0xFFFFF,
        )


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum: ones' complement of the ones' complement sum of 16-bit words.

    Instead of looping over words we read the whole buffer as one big-endian
    integer N = sum(w_i * 2**(16*i)).  Since 2**16 == 1 (mod 0xFFFF), N mod 0xFFFF
    equals the sum of the words mod 0xFFFF, which is exactly what end-around
    carry folding computes (RFC 1071 2(A)), except that folding yields 0xFFFF,
    not 0, for a non-zero sum divisible by 0xFFFF.  The reduction runs in C in
    linear time, so this stays cheap for any packet size.
    """
    if len(data) % 2:
        data = bytes(data) + b"\x00"  # RFC 1071 4.1: pad an odd final octet with zero
    total = int.from_bytes(data, "big")
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF
    return ~folded & 0xFFFF


def upper_layer_checksum(src: IPv6Address, dst: IPv6Address, next_header: int, data: bytes) -> int:
    """Checksum of `data` with the RFC 8200 8.1 pseudo-header prepended.

    Over a message whose checksum field already holds the right value this
    returns 0, which is how receivers verify it.
    """
    pseudo = _PSEUDO.pack(src.packed, dst.packed, len(data), next_header)
    return internet_checksum(pseudo + data)


def solicited_node(addr: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX from the low 24 bits of `addr`, RFC 4291 2.7.1."""
    return IPv6Address(_SOLICITED_NODE_PREFIX | (int(addr) & 0xFFFFFF))


def is_solicited_node(addr: IPv6Address) -> bool:
    """True for ff02::1:ffXX:XXXX (the /104 of RFC 4291 2.7.1)."""
    return int(addr) >> 24 == _SOLICITED_NODE_PREFIX >> 24


def multicast_mac(addr: IPv6Address) -> bytes:
    """33:33 followed by the low 32 bits of a multicast address, RFC 2464 7."""
    if not addr.is_multicast:
        raise AddressError(f"{addr} is not an IPv6 multicast address")
    return b"\x33\x33" + addr.packed[12:]


def link_local_from_mac(mac: bytes) -> IPv6Address:
    """fe80::/64 + modified EUI-64 of `mac` (RFC 4291 2.5.1 and appendix A,
    RFC 2464 4-5): insert ff:fe in the middle and invert the U/L bit."""
    if len(mac) != 6:
        raise AddressError(f"MAC of {len(mac)} octets, need 6")
    iid = bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return IPv6Address(_LINK_LOCAL_PREFIX + iid)
