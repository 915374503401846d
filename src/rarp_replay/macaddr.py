"""MAC addresses: kept as 6-byte `bytes` everywhere (cheap dict keys on the hot path)."""

from __future__ import annotations

import re

from .errors import AddressError

BROADCAST = b"\xff" * 6
ZERO = b"\x00" * 6

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")
_DOTTED_RE = re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$")


def parse_mac(text: str) -> bytes:
    """Parse `aa:bb:cc:dd:ee:ff`, `aa-bb-...` or Cisco's `aabb.ccdd.eeff`."""
    text = text.strip()
    if _MAC_RE.match(text):
        return bytes(int(part, 16) for part in re.split(r"[:-]", text))
    if _DOTTED_RE.match(text):
        return bytes.fromhex(text.replace(".", ""))
    raise AddressError(f"invalid MAC address {text!r} (expected aa:bb:cc:dd:ee:ff)")


def format_mac(mac: bytes) -> str:
    return mac.hex(":")  # in C; the join over a generator showed up in burst profiles


def is_multicast(mac: bytes) -> bool:
    """I/G bit (least significant bit of the first octet), IEEE 802-2014 8.2."""
    return bool(mac[0] & 0x01)


def is_unicast(mac: bytes) -> bool:
    """A usable station address: not group (multicast/broadcast), not all-zero."""
    return len(mac) == 6 and not is_multicast(mac) and mac != ZERO


def parse_unicast_mac(text: str) -> bytes:
    """Parse a MAC that must name one station (what a VM announces)."""
    mac = parse_mac(text)
    if mac == BROADCAST:
        raise AddressError(f"{text} is the broadcast address, not a station MAC")
    if is_multicast(mac):
        raise AddressError(f"{text} is a multicast address, not a station MAC")
    if mac == ZERO:
        raise AddressError(f"{text} is the all-zero address, not a station MAC")
    return mac
