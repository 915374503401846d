"""A hand-built switch topology as netlink records, for pure-logic tests."""

from __future__ import annotations

from ipaddress import ip_address

from rarp_replay.mirror import REMEMBER, Mirror
from rarp_replay.netlink.records import (
    AF_INET,
    AF_INET6,
    IFA_F_SECONDARY,
    NTF_EXT_LEARNED,
    NUD_NOARP,
    NUD_REACHABLE,
    RT_SCOPE_LINK,
    Address,
    Change,
    Event,
    Link,
    Neighbor,
)

SVI_MAC = bytes.fromhex("020000000001")
VRR_MAC = bytes.fromhex("00005e000101")
VM_MAC = bytes.fromhex("525400123456")
OTHER_MAC = bytes.fromhex("525400abcdef")

# ifindexes
LO, BR, PORT, VX, MACVLAN, ROUTED, PORT2, BR_VLAN, TRUNK, TRUNK_V10 = range(1, 11)


def links() -> list[Link]:
    return [
        Link(LO, "lo", flags=0x9),
        Link(BR, "br100", flags=1, mac=SVI_MAC, kind="bridge"),
        Link(
            PORT,
            "swp1",
            flags=1,
            mac=bytes(5) + b"\x11",
            kind="veth",
            master=BR,
            slave_kind="bridge",
        ),
        Link(
            PORT2,
            "swp2",
            flags=1,
            mac=bytes(5) + b"\x12",
            kind="veth",
            master=BR,
            slave_kind="bridge",
        ),
        Link(
            VX,
            "vxlan100",
            flags=1,
            mac=bytes(5) + b"\x13",
            kind="vxlan",
            master=BR,
            slave_kind="bridge",
        ),
        Link(MACVLAN, "br100-v0", flags=1, mac=VRR_MAC, kind="macvlan", lower=BR),
        Link(ROUTED, "swp9", flags=1, mac=bytes(5) + b"\x19", kind="veth"),
        Link(BR_VLAN, "br100.20", flags=1, mac=SVI_MAC, kind="vlan", lower=BR, vlan_id=20),
        Link(TRUNK, "swp10", flags=1, mac=bytes(5) + b"\x1a", kind="veth"),
        Link(
            TRUNK_V10,
            "swp10.10",
            flags=1,
            mac=bytes(5) + b"\x1a",
            kind="vlan",
            lower=TRUNK,
            vlan_id=10,
            master=BR,
        ),
    ]


def addresses() -> list[Address]:
    return [
        Address(BR, ip_address("192.0.2.252"), 24),
        Address(BR, ip_address("198.51.100.252"), 24, flags=IFA_F_SECONDARY),
        Address(BR, ip_address("198.51.100.129"), 25, flags=IFA_F_SECONDARY),
        Address(BR, ip_address("2001:db8:100::252"), 64),
        Address(BR, ip_address("fe80::1"), 64, scope=RT_SCOPE_LINK),
        Address(MACVLAN, ip_address("192.0.2.1"), 24),
        Address(ROUTED, ip_address("203.0.113.1"), 30),
    ]


def remote(ip: str, mac: bytes = VM_MAC, index: int = BR) -> Neighbor:
    """An entry as FRR's zebra installs it for a remote MAC/IP route."""
    a = ip_address(ip)
    return Neighbor(
        AF_INET if a.version == 4 else AF_INET6,
        index,
        a,
        mac,
        NUD_NOARP,
        NTF_EXT_LEARNED,
        protocol=186,
    )


def local(ip: str, mac: bytes = VM_MAC, index: int = BR, state: int = NUD_REACHABLE) -> Neighbor:
    a = ip_address(ip)
    return Neighbor(AF_INET if a.version == 4 else AF_INET6, index, a, mac, state)


def new(rec: Link | Address | Neighbor) -> Event:
    return Event(Change.NEW, rec)


def gone(rec: Link | Address | Neighbor) -> Event:
    return Event(Change.DEL, rec)


def switch(*neighbors: Neighbor, remember: float = REMEMBER) -> Mirror:
    m = Mirror(remember=remember)
    m.reset(
        [new(x) for x in links()],
        [new(x) for x in addresses()],
        [new(n) for n in neighbors],
        now=0.0,
    )
    return m
