"""Where did a RARP enter, and which L3 interfaces serve that L2 domain?

Pure functions over the link/address mirror. One broadcast RARP is seen by an
ETH_P_ALL tap several times on one switch (net/core/dev.c runs the taps of
every device the frame passes through): on the ingress port, again on a VLAN
upper device after it is untagged, on the bridge device when the bridge
passes the broadcast up (br_pass_frame_up), on each macvlan stacked on the
bridge. Only the sighting on the *ingress port* counts; the others are
expected copies. A RARP whose ingress port is a VXLAN (or other tunnel)
device was announced behind another switch of the fabric and never triggers
a probe here: only the switch where the VM now lives must act.

On a VLAN-filtering bridge (Cumulus Linux, SONiC) the VLAN is the port's
business, as in br_allowed_ingress(): an untagged or priority-tagged frame
belongs to the ingress port's PVID, a tagged one to its VID if the port is a
member, and is dropped by the bridge otherwise (so here: `vlan-not-member`).
The domain is (bridge, VLAN) whichever copy is looked at; its L3 interfaces
are the 802.1Q device of that VLAN on the bridge (the SVI, `vlan10`) and the
macvlans on it (the anycast gateway, `vlan10-v0`). Copies seen on the SVI,
the bridge or a macvlan above them are ignored.

Which SVIs hold host bindings: only the SVI of a VLAN that the ingress port
carries is ever consulted. An L3VNI's SVI (`vlan4001`, in the VRF, neighbors
are remote routers) has no local member port, only the VXLAN device, and a
VXLAN device's sightings are fabric ones: so no sighting resolves to it, and
no VLAN-to-VNI inference (the kernel cannot tell an L2VNI from an L3VNI; only
FRR's configuration can) is needed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass

from .counters import (
    AGGREGATE_MEMBER_COPY,
    BRIDGE_COPY,
    FABRIC_PORT,
    NO_L3_INTERFACE,
    STACKED_COPY,
    UNKNOWN_INTERFACE,
    VLAN_NOT_MEMBER,
    VLAN_PARENT_COPY,
)
from .mirror import Mirror
from .netlink.records import BRIDGE_VLAN_INFO_UNTAGGED, IPAddress, Link

# Devices whose frames come from the fabric, not from a host behind this switch.
DEFAULT_FABRIC_KINDS = frozenset(
    {"vxlan", "geneve", "gretap", "ip6gretap", "erspan", "ip6erspan", "bareudp", "gtp"}
)
# Ports facing an MLAG peer (Cumulus: the `peerlink` bond and its `peerlink.4094`):
# the peer floods what its own hosts send over it. The default of `fabric-ports`.
DEFAULT_FABRIC_PORTS: tuple[str, ...] = ("peerlink*",)
# Aggregates: the frame is seen on the member first and again on the aggregate.
_AGGREGATE_KINDS = frozenset({"bond", "team"})


class GlobSet(Container[str]):
    """Interface names matching any of some shell-style globs (`name in globs`).

    Matching is case-sensitive, as interface names are. Results are cached per
    name (an announcement costs one dict lookup), and the cache is bounded:
    names come and go with interfaces.
    """

    def __init__(self, globs: Iterable[str] = ()) -> None:
        self.globs = tuple(globs)
        self._re = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in self.globs))
            if self.globs
            else None
        )
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return self._re is not None

    def __contains__(self, name: object) -> bool:
        if self._re is None or not isinstance(name, str):
            return False
        hit = self._cache.get(name)
        if hit is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            hit = self._cache[name] = self._re.match(name) is not None
        return hit

    def __repr__(self) -> str:
        return f"GlobSet({list(self.globs)!r})"


@dataclass(frozen=True, slots=True)
class Domain:
    """The L2 domain a RARP entered, resolved to the interfaces that serve it."""

    key: tuple[int, int]  # (L2 device ifindex: bridge or routed port, VLAN id or 0)
    name: str  # for logs: "br100", "br0/vlan100", "vlan10"
    port: int  # the ingress port (ifindex)
    # L3 interfaces whose neighbor tables hold the VM's bindings. l3[0] is the SVI (or
    # routed port): bindings are written there only, the device zebra watches; the
    # others are macvlans stacked on it (an anycast gateway's entries zebra ignores).
    l3: tuple[int, ...]
    egress: int  # where probes are sent: the SVI / routed port / VLAN device
    egress_mac: bytes
    tag: int | None  # VLAN id to put on probes by hand (no VLAN device for it here)
    # The VNI the domain's VLAN is carried in over the fabric, where a single VXLAN device
    # of the bridge maps it (VLAN tunnel info); None elsewhere. For logs and
    # rarp-replyctl only: resolution never needs it.
    vni: int | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """This sighting must not trigger anything; `reason` is one of `counters.IGNORED`."""

    reason: str
    detail: str = ""


def resolve(
    mirror: Mirror,
    ifindex: int,
    vid: int | None,
    fabric_kinds: frozenset[str] = DEFAULT_FABRIC_KINDS,
    fabric_ports: Container[str] = frozenset(),
) -> Domain | Ignored:
    """Classify one sighting of a RARP on `ifindex` carrying VLAN `vid` (None/0: untagged)."""
    links = mirror.links
    link = links.get(ifindex)
    if link is None:
        return Ignored(UNKNOWN_INTERFACE, f"ifindex {ifindex}")
    if link.kind in fabric_kinds or link.name in fabric_ports:
        return Ignored(FABRIC_PORT, link.name)
    if link.kind == "bridge":
        return Ignored(BRIDGE_COPY, link.name)
    if link.kind == "macvlan" and link.lower in links:
        return Ignored(STACKED_COPY, link.name)
    if link.kind == "vlan" and link.lower is not None and _is_bridge(links.get(link.lower)):
        # An 802.1Q device on a bridge (an SVI) only gets frames from the bridge
        # (br_pass_frame_up, then vlan_do_receive): the port saw them first.
        return Ignored(BRIDGE_COPY, link.name)
    vid = vid or None  # VID 0 is a priority tag (IEEE 802.1Q 9.6): untagged
    if vid is not None:
        upper = _vlan_upper(mirror, ifindex, vid)
        if upper is not None:
            # The VLAN device untags it and the taps see it again there.
            return Ignored(VLAN_PARENT_COPY, f"{link.name} -> {links[upper].name}")
    master = links.get(link.master) if link.master is not None else None
    if master is not None and master.kind in _AGGREGATE_KINDS:
        # bond/team: the member and the aggregate are one port. The aggregate's own
        # sighting (bond_handle_frame/team_handle_frame hand the frame on as the
        # aggregate's) is the one that counts: a frame a member drops (an inactive
        # backup) never reaches the bridge.
        if master.kind in fabric_kinds or master.name in fabric_ports:
            return Ignored(FABRIC_PORT, f"{link.name} -> {master.name}")
        return Ignored(AGGREGATE_MEMBER_COPY, f"{link.name} -> {master.name}")
    if master is not None and mirror.vlan_filtering(master.index):
        return _resolve_filtering(mirror, link, master, vid)
    l2 = master if _is_bridge(master) else link
    assert l2 is not None
    l3_dev: Link = l2
    tag: int | None = None
    name = l2.name
    if vid is not None:
        upper = _vlan_upper(mirror, l2.index, vid)
        if upper is not None:
            l3_dev = links[upper]
            name = l3_dev.name
        else:
            # No VLAN device for this VLAN (a non-VLAN-aware bridge carrying
            # the tag through): probe via the L2 device, tagged by hand, so
            # the probe reaches the VM in the VLAN it announced from.
            tag = vid
            name = f"{l2.name}/vlan{vid}"
    return _domain(mirror, (l2.index, vid or 0), name, link.index, l3_dev, tag=tag)


def _resolve_filtering(
    mirror: Mirror, port: Link, bridge: Link, vid: int | None
) -> Domain | Ignored:
    """A port of a VLAN-filtering bridge: the bridge's own ingress rule picks the VLAN."""
    state = mirror.bridge_ports.get(port.index)
    if vid is None:
        pvid = state.pvid if state is not None else None
        if pvid is None:
            # br_allowed_ingress: no PVID, untagged frames are dropped.
            return Ignored(VLAN_NOT_MEMBER, f"{port.name}: untagged, no PVID")
        vid = pvid
    elif state is None or state.vlan_flags(vid) is None:
        return Ignored(VLAN_NOT_MEMBER, f"{port.name}: VLAN {vid}")
    vni = mirror.vni(bridge.index, vid)
    svi = _vlan_upper(mirror, bridge.index, vid)
    if svi is not None:
        l3_dev = mirror.links[svi]
        return _domain(
            mirror, (bridge.index, vid), l3_dev.name, port.index, l3_dev, tag=None, vni=vni
        )
    # No SVI for the VLAN: the bridge device is the L3 interface if it is itself an
    # untagged member with that PVID (frames go up untagged, and an untagged probe
    # from it gets that VLAN: br_handle_vlan, br_allowed_ingress); otherwise probe
    # from the bridge tagged by hand, as on a traditional bridge.
    own = mirror.bridge_ports.get(bridge.index)
    untagged = (
        own is not None
        and own.pvid == vid
        and bool((own.vlan_flags(vid) or 0) & BRIDGE_VLAN_INFO_UNTAGGED)
    )
    name = bridge.name if untagged else f"{bridge.name}/vlan{vid}"
    return _domain(
        mirror,
        (bridge.index, vid),
        name,
        port.index,
        bridge,
        tag=None if untagged else vid,
        vni=vni,
    )


def _domain(
    mirror: Mirror,
    key: tuple[int, int],
    name: str,
    port: int,
    l3_dev: Link,
    *,
    tag: int | None,
    vni: int | None = None,
) -> Domain | Ignored:
    if l3_dev.mac is None:
        return Ignored(NO_L3_INTERFACE, f"{name} has no MAC")
    links = mirror.links
    stacked = tuple(i for i in mirror.uppers(l3_dev.index) if links[i].kind == "macvlan")
    return Domain(
        key=key,
        name=name,
        port=port,
        l3=(l3_dev.index, *stacked),
        egress=l3_dev.index,
        egress_mac=l3_dev.mac,
        tag=tag,
        vni=vni,
    )


def _is_bridge(link: Link | None) -> bool:
    return link is not None and link.kind == "bridge"


def _vlan_upper(mirror: Mirror, ifindex: int, vid: int) -> int | None:
    for i in mirror.uppers(ifindex):
        up = mirror.links[i]
        if up.kind == "vlan" and up.vlan_id == vid:
            return i
    return None


def source_address(mirror: Mirror, domain: Domain, target: IPAddress) -> IPAddress | None:
    """The address to probe `target` from.

    IPv4: the SVI's address in the target's subnet (longest prefix match),
    else the SVI's primary address; addresses of macvlans stacked on the SVI
    (anycast gateway) only when the SVI itself has none that fits. Never
    0.0.0.0: an ARP request from 0.0.0.0 is an RFC 5227 probe, which Windows
    reports as an address conflict.
    IPv6: the address with the longest matching prefix, else the link-local
    (RFC 4861 7.2.2: the source is an address assigned to the interface).
    """
    version = target.version
    t = int(target)
    for ifindex in domain.l3:
        # Longest prefix first: the first network that holds the target is the best.
        for net, mask, address in mirror.prefixes_of(ifindex, version):
            if t & mask == net:
                return address
    if version == 4:
        for ifindex in domain.l3:
            primary = mirror.primary_ipv4(ifindex)
            if primary is not None:
                return primary.address
        return None
    for ifindex in domain.l3:
        for a in mirror.addresses_of(ifindex):
            if a.address.version == 6 and a.address.is_link_local:
                return a.address
    return None
