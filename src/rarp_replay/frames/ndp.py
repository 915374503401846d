"""Neighbor Solicitation / Advertisement (RFC 4861 4.3, 4.4) in ICMPv6 (RFC 4443).

The daemon probes a migrated VM's IPv6 addresses with a unicast NS, the IPv6
counterpart of its unicast ARP request: the VM's NA, sent from its new port,
is what makes the switch learn MAC+IP there.

Parsing applies the receive-side validity checks of RFC 4861 7.1.1/7.1.2 that
can be made from the message and its IPv6 addresses (the hop limit check needs
the IPv6 header and is in `parse_nd_frame`); building refuses the same
messages, so anything built here parses back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TypeAlias

from ..errors import ChecksumError, InvalidFrameError, TruncatedFrameError
from .ethernet import ETH_ALEN, ETH_P_IPV6, EthernetFrame, VlanTag
from .ipv6 import IPv6Packet, is_solicited_node, upper_layer_checksum

IPPROTO_ICMPV6 = 58
ICMPV6_NS = 135
ICMPV6_NA = 136

OPT_SOURCE_LL = 1  # RFC 4861 4.6.1
OPT_TARGET_LL = 2  # RFC 4861 4.6.1

# RFC 4861 7.1.1/7.1.2: ND messages must arrive with hop limit 255, proving
# they were not forwarded by a router (so they come from the link itself).
ND_HOP_LIMIT = 255

# Type, code, checksum, 32 bits of flags/reserved, target address.
_ND_HEADER = struct.Struct("!BBHI16s")
ND_MIN_LEN = _ND_HEADER.size  # 24, RFC 4861 7.1.1/7.1.2 "ICMP length ... is 24 or more octets"

# NA flags in the first octet after the checksum, RFC 4861 4.4.
_NA_ROUTER = 1 << 31
_NA_SOLICITED = 1 << 30
_NA_OVERRIDE = 1 << 29

_OPT_UNIT = 8  # option lengths count 8-octet units, RFC 4861 4.6


@dataclass(frozen=True, slots=True)
class NdOption:
    """A TLV option; `data` excludes the type and length octets.

    On build `data` is zero-padded so the option fills whole 8-octet units; on
    parse `data` is everything the length field covers, padding included (a
    6-octet MAC in a link-layer address option comes back as 6 octets because
    2 + 6 is already 8).
    """

    type: int
    data: bytes

    def build(self) -> bytes:
        if not 0 <= self.type <= 0xFF:
            raise InvalidFrameError(f"ND option type {self.type} does not fit 8 bits")
        units = -(-(len(self.data) + 2) // _OPT_UNIT)
        if units > 0xFF:
            raise InvalidFrameError(f"ND option of {len(self.data)} octets is too long")
        padding = units * _OPT_UNIT - 2 - len(self.data)
        return bytes((self.type, units)) + self.data + bytes(padding)


def source_ll(mac: bytes) -> NdOption:
    """Source Link-Layer Address option (RFC 4861 4.6.1)."""
    _check_mac(mac)
    return NdOption(OPT_SOURCE_LL, mac)


def target_ll(mac: bytes) -> NdOption:
    """Target Link-Layer Address option (RFC 4861 4.6.1)."""
    _check_mac(mac)
    return NdOption(OPT_TARGET_LL, mac)


def _check_mac(mac: bytes) -> None:
    if len(mac) != ETH_ALEN:
        raise InvalidFrameError(f"link-layer address of {len(mac)} octets, need 6 on Ethernet")


def _ll_mac(options: tuple[NdOption, ...], kind: int) -> bytes | None:
    # RFC 4861 4.6.1: on Ethernet the address is the first 6 octets (RFC 2464 8).
    for option in options:
        if option.type == kind:
            return option.data[:ETH_ALEN] if len(option.data) >= ETH_ALEN else None
    return None


class _LinkLayerOptions:
    """The link-layer address options of an NS or NA, by kind (RFC 4861 4.6.1)."""

    __slots__ = ()
    options: tuple[NdOption, ...]

    @property
    def source_ll_mac(self) -> bytes | None:
        return _ll_mac(self.options, OPT_SOURCE_LL)

    @property
    def target_ll_mac(self) -> bytes | None:
        return _ll_mac(self.options, OPT_TARGET_LL)


@dataclass(frozen=True, slots=True)
class NeighborSolicitation(_LinkLayerOptions):
    """RFC 4861 4.3.  The reserved field is ignored on receipt, as required."""

    target: IPv6Address
    options: tuple[NdOption, ...] = ()


@dataclass(frozen=True, slots=True)
class NeighborAdvertisement(_LinkLayerOptions):
    """RFC 4861 4.4."""

    target: IPv6Address
    router: bool = False
    solicited: bool = False
    override: bool = False
    options: tuple[NdOption, ...] = ()


NdMessage: TypeAlias = NeighborSolicitation | NeighborAdvertisement


def _validate(msg: NdMessage, src: IPv6Address, dst: IPv6Address) -> None:
    """The RFC 4861 7.1.1/7.1.2 "MUST silently discard" rules that depend on
    the message and its addresses."""
    if msg.target.is_multicast:
        raise InvalidFrameError(f"ND target {msg.target} is multicast")
    if isinstance(msg, NeighborSolicitation):
        if src.is_unspecified:
            # A DAD probe (RFC 4862 5.4.2): it cannot be answered by unicast,
            # so it goes to the solicited-node group and carries no source LL.
            if not is_solicited_node(dst):
                raise InvalidFrameError("NS from :: must go to a solicited-node address")
            if any(option.type == OPT_SOURCE_LL for option in msg.options):
                raise InvalidFrameError("NS from :: must not carry a source link-layer option")
    elif msg.solicited and dst.is_multicast:
        raise InvalidFrameError("NA to a multicast address must not have the Solicited flag")


def build_icmpv6(msg: NdMessage, src: IPv6Address, dst: IPv6Address) -> bytes:
    """Encode `msg` as an ICMPv6 message with its checksum (RFC 4443 2.3, which
    covers the RFC 8200 8.1 pseudo-header, hence src and dst)."""
    _validate(msg, src, dst)
    if isinstance(msg, NeighborSolicitation):
        icmp_type, word = ICMPV6_NS, 0
    else:
        icmp_type = ICMPV6_NA
        word = (
            (_NA_ROUTER if msg.router else 0)
            | (_NA_SOLICITED if msg.solicited else 0)
            | (_NA_OVERRIDE if msg.override else 0)
        )
    parts = [_ND_HEADER.pack(icmp_type, 0, 0, word, msg.target.packed)]
    parts.extend(option.build() for option in msg.options)
    body = b"".join(parts)
    checksum = upper_layer_checksum(src, dst, IPPROTO_ICMPV6, body)
    return body[:2] + checksum.to_bytes(2, "big") + body[4:]


def _parse_options(data: bytes, offset: int) -> tuple[NdOption, ...]:
    options: list[NdOption] = []
    end = len(data)
    while offset < end:
        if end - offset < 2:
            raise TruncatedFrameError("ND options end inside an option header")
        units = data[offset + 1]
        if units == 0:
            # RFC 4861 4.6: length 0 is invalid and would otherwise loop forever.
            raise InvalidFrameError("ND option with length 0")
        after = offset + units * _OPT_UNIT
        if after > end:
            raise TruncatedFrameError("ND option runs past the end of the message")
        options.append(NdOption(data[offset], data[offset + 2 : after]))
        offset = after
    return tuple(options)


def parse_icmpv6(data: bytes, src: IPv6Address, dst: IPv6Address) -> NdMessage:
    """Decode an NS or NA (the IPv6 payload), verifying checksum and RFC 4861 7.1 rules."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < ND_MIN_LEN:
        raise TruncatedFrameError(f"ND message of {len(data)} octets, need {ND_MIN_LEN}")
    icmp_type, code, _, word, target_raw = _ND_HEADER.unpack_from(data)
    if icmp_type not in (ICMPV6_NS, ICMPV6_NA):
        raise InvalidFrameError(f"ICMPv6 type {icmp_type} is neither NS nor NA")
    if code != 0:
        raise InvalidFrameError(f"ND message with ICMP code {code}, must be 0")
    # Summing over the message including its checksum field gives 0 when intact.
    if upper_layer_checksum(src, dst, IPPROTO_ICMPV6, data) != 0:
        raise ChecksumError("ICMPv6 checksum does not verify")
    target = IPv6Address(target_raw)
    options = _parse_options(data, ND_MIN_LEN)
    msg: NdMessage
    if icmp_type == ICMPV6_NS:
        msg = NeighborSolicitation(target, options)
    else:
        msg = NeighborAdvertisement(
            target,
            bool(word & _NA_ROUTER),
            bool(word & _NA_SOLICITED),
            bool(word & _NA_OVERRIDE),
            options,
        )
    _validate(msg, src, dst)
    return msg


def _tags(vid: int | None) -> tuple[VlanTag, ...]:
    return () if vid is None else (VlanTag(vid),)


def _frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: IPv6Address,
    dst_ip: IPv6Address,
    *,
    msg: NdMessage,
    vid: int | None,
) -> bytes:
    icmp = build_icmpv6(msg, src_ip, dst_ip)
    packet = IPv6Packet(src_ip, dst_ip, IPPROTO_ICMPV6, icmp, hop_limit=ND_HOP_LIMIT)
    return EthernetFrame(dst_mac, src_mac, ETH_P_IPV6, packet.build(), _tags(vid)).build()


def ns_frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: IPv6Address,
    dst_ip: IPv6Address,
    target: IPv6Address,
    *,
    vid: int | None = None,
) -> bytes:
    """An NS for `target` in an Ethernet frame, hop limit 255.

    Carries a source link-layer option of `src_mac` so the VM can answer
    without resolving us first (RFC 4861 4.3), except when `src_ip` is ::,
    where RFC 4861 7.1.1 forbids it.  For a unicast probe pass the VM's MAC
    and address as dst_mac/dst_ip; for multicast use
    `multicast_mac(solicited_node(target))` and `solicited_node(target)`.
    """
    options = () if src_ip.is_unspecified else (source_ll(src_mac),)
    msg = NeighborSolicitation(target, options)
    return _frame(src_mac, dst_mac, src_ip, dst_ip, msg=msg, vid=vid)


def na_frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: IPv6Address,
    dst_ip: IPv6Address,
    target: IPv6Address,
    *,
    vid: int | None = None,
    router: bool = False,
    solicited: bool | None = None,
    override: bool = True,
) -> bytes:
    """An NA for `target` with a target link-layer option of `src_mac`, hop limit 255.

    `solicited` defaults to "dst_ip is unicast": a reply to an NS goes back
    unicast with S set, an unsolicited NA goes to a multicast group and must
    have S clear (RFC 4861 7.2.4, 7.2.6).  `override` defaults to set, as a
    host answering for its own address does (RFC 4861 7.2.4).
    """
    if solicited is None:
        solicited = not dst_ip.is_multicast
    msg = NeighborAdvertisement(target, router, solicited, override, (target_ll(src_mac),))
    return _frame(src_mac, dst_mac, src_ip, dst_ip, msg=msg, vid=vid)


def parse_nd_frame(data: bytes) -> tuple[EthernetFrame, IPv6Packet, NdMessage]:
    """Decode an Ethernet frame carrying an NS or NA; anything else is InvalidFrameError."""
    frame = EthernetFrame.parse(data)
    if frame.ethertype != ETH_P_IPV6:
        raise InvalidFrameError(f"EtherType {frame.ethertype:#06x} is not IPv6")
    return (frame, *parse_nd_packet(frame.payload))


def parse_nd_packet(data: bytes) -> tuple[IPv6Packet, NdMessage]:
    """Decode an IPv6 packet (an Ethernet payload) carrying an NS or NA."""
    packet = IPv6Packet.parse(data)
    if packet.next_header != IPPROTO_ICMPV6:
        # Extension headers are not walked: ND messages never carry them in practice.
        raise InvalidFrameError(f"IPv6 next header {packet.next_header} is not ICMPv6")
    if packet.hop_limit != ND_HOP_LIMIT:
        raise InvalidFrameError(f"ND message with hop limit {packet.hop_limit}, must be 255")
    return packet, parse_icmpv6(packet.payload, packet.src, packet.dst)
