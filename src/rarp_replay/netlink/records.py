"""Typed records decoded from rtnetlink: what the mirror stores.

Shared vocabulary between the netlink codec (which produces them), the
mirror (which indexes them) and the decision logic (which reads them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

# Address families (linux/socket.h).
AF_UNSPEC = 0
AF_INET = 2
AF_BRIDGE = 7
AF_INET6 = 10

# Neighbor states, linux/neighbour.h.
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_NONE = 0x00
# NUD_VALID as the kernel defines it (include/net/neighbour.h).
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY

# Neighbor flags (ndm_flags), linux/neighbour.h.
NTF_USE = 0x01
NTF_SELF = 0x02
NTF_MASTER = 0x04
NTF_PROXY = 0x08
NTF_EXT_LEARNED = 0x10
NTF_OFFLOADED = 0x20
NTF_STICKY = 0x40
NTF_ROUTER = 0x80

# Interface flags (linux/if.h).
IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000

# Address flags (linux/if_addr.h).
IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

# Route scopes (linux/rtnetlink.h).
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254


class Change(enum.Enum):
    NEW = "new"
    DEL = "del"


@dataclass(frozen=True, slots=True)
class Link:
    """One interface (RTM_NEWLINK)."""

    index: int
    name: str
    flags: int = 0
    mac: bytes | None = None  # IFLA_ADDRESS
    kind: str | None = None  # IFLA_INFO_KIND: "bridge", "vxlan", "macvlan", "vlan", "veth"...
    slave_kind: str | None = None  # IFLA_INFO_SLAVE_KIND: "bridge" for a bridge port
    master: int | None = None  # IFLA_MASTER: the bridge (or bond/VRF) this port is enslaved to
    lower: int | None = None  # IFLA_LINK: the lower device of a vlan/macvlan/vxlan
    vlan_id: int | None = None  # IFLA_VLAN_ID of a vlan device
    link_netnsid: int | None = None  # IFLA_LINK_NETNSID: `lower` lives in another namespace
    # IFLA_BR_VLAN_FILTERING of a bridge (None: not a bridge, or not reported).
    vlan_filtering: bool | None = None

    @property
    def is_up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True, slots=True)
class Address:
    """One interface address (RTM_NEWADDR)."""

    index: int
    address: IPAddress
    prefixlen: int
    scope: int = RT_SCOPE_UNIVERSE
    flags: int = 0

    @property
    def family(self) -> int:
        return AF_INET if self.address.version == 4 else AF_INET6


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One neighbor entry (RTM_NEWNEIGH) of the ARP or ND table (AF_INET/AF_INET6),
    or one bridge FDB entry (AF_BRIDGE: `address` is None, `lladdr` is the MAC)."""

    family: int
    index: int
    address: IPAddress | None
    lladdr: bytes | None
    state: int = 0
    flags: int = 0
    protocol: int = 0  # NDA_PROTOCOL (e.g. 186 = zebra), 0 when absent
    master: int | None = None  # NDA_MASTER (bridge FDB)
    vlan: int | None = None  # NDA_VLAN (bridge FDB)

    @property
    def ext_learned(self) -> bool:
        return bool(self.flags & NTF_EXT_LEARNED)


# Bridge VLAN flags (linux/if_bridge.h, struct bridge_vlan_info.flags).
BRIDGE_VLAN_INFO_MASTER = 0x01
BRIDGE_VLAN_INFO_PVID = 0x02  # untagged and priority-tagged ingress frames get this VID
BRIDGE_VLAN_INFO_UNTAGGED = 0x04  # egress untagged
BRIDGE_VLAN_INFO_RANGE_BEGIN = 0x08
BRIDGE_VLAN_INFO_RANGE_END = 0x10
BRIDGE_VLAN_INFO_BRENTRY = 0x20  # the bridge device itself is a member (it gets the frames)


@dataclass(frozen=True, slots=True)
class BridgeVlan:
    """VLANs `vid`..`last` of one bridge port (or of the bridge itself), with their flags
    (PVID, UNTAGGED, BRENTRY; the RANGE_* bits of the wire are resolved into `last`)."""

    vid: int
    last: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class VlanTunnel:
    """VLANs `vid`..`last` of a VXLAN bridge port carried as VNIs `vni`..`vni + last - vid`
    (IFLA_BRIDGE_VLAN_TUNNEL_INFO: one VXLAN device for all VNIs, `external` mode)."""

    vid: int
    last: int
    vni: int


@dataclass(frozen=True, slots=True)
class BridgePort:
    """A bridge's view of one device (AF_BRIDGE RTM_NEWLINK): a port, or the bridge itself
    (`master == index`). Each message carries the device's whole VLAN list: it replaces the
    last. An AF_BRIDGE RTM_DELLINK means the port left the bridge, not that the device is
    gone. The bridge's own list has its VLANs with PVID/UNTAGGED but not the BRENTRY flag
    (seen on 6.1: br_fill_ifvlaninfo_compressed reports PVID and UNTAGGED only)."""

    index: int
    name: str
    # IFLA_MASTER: the bridge. br_fill_ifinfo() sends it for the bridge itself too (its own
    # index, seen on 6.1); None only when absent.
    master: int | None = None
    vlans: tuple[BridgeVlan, ...] = ()
    tunnels: tuple[VlanTunnel, ...] = ()

    @property
    def pvid(self) -> int | None:
        for v in self.vlans:
            if v.flags & BRIDGE_VLAN_INFO_PVID:
                return v.vid  # the kernel marks a single VID as the PVID, never a range
        return None

    def vlan_flags(self, vid: int) -> int | None:
        """The flags of `vid` on this device, None if it is not a member."""
        for v in self.vlans:
            if v.vid <= vid <= v.last:
                return v.flags
        return None

    def vni(self, vid: int) -> int | None:
        for t in self.tunnels:
            if t.vid <= vid <= t.last:
                return t.vni + vid - t.vid
        return None


Record = Link | Address | Neighbor | BridgePort


@dataclass(frozen=True, slots=True)
class Event:
    """A netlink notification or dump entry: NEW (add or change) or DEL of a record."""

    change: Change
    record: Record
