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
    VLAN_PARENT_COPY,
)
from .mirror import Mirror
from .netlink.records import Address, IPAddress, Link

# Devices whose frames come from the fabric, not from a host behind this switch.
DEFAULT_FABRIC_KINDS = frozenset(
    {"vxlan", "geneve", "gretap", "ip6gretap", "erspan", "ip6erspan", "bareudp", "gtp"}
)
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
    name: str  # for logs: "br100", "br0/vlan100"
    port: int  # the ingress port (ifindex)
    l3: tuple[int, ...]  # L3 interfaces whose neighbor tables hold the VM's bindings
    egress: int  # where probes are sent: the SVI / routed port / VLAN device
    egress_mac: bytes
    tag: int | None  # VLAN id to put on probes by hand (no VLAN device for it here)


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
    vid = vid or None  # VID 0 is a priority tag (IEEE 802.1Q 9.6): untagged
    if vid is not None:
        upper = _vlan_upper(mirror, ifindex, vid)
        if upper is not None:
            # The VLAN device untags it and the taps see it again there.
            return Ignored(VLAN_PARENT_COPY, f"{link.name} -> {links[upper].name}")
    master = links.get(link.master) if link.master is not None else None
    if master is not None and master.kind in _AGGREGATE_KINDS:
        return Ignored(AGGREGATE_MEMBER_COPY, f"{link.name} -> {master.name}")
    l2 = master if master is not None and master.kind == "bridge" else link
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
    if l3_dev.mac is None:
        return Ignored(NO_L3_INTERFACE, f"{name} has no MAC")
    stacked = tuple(i for i in mirror.uppers(l3_dev.index) if links[i].kind == "macvlan")
    return Domain(
        key=(l2.index, vid or 0),
        name=name,
        port=ifindex,
        l3=(l3_dev.index, *stacked),
        egress=l3_dev.index,
        egress_mac=l3_dev.mac,
        tag=tag,
    )


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
    best: Address | None = None
    best_len = -1
    for ifindex in domain.l3:
        for net, a in mirror.networks_of(ifindex):
            if a.address.version != version:
                continue
            if version == 6 and a.address.is_link_local:
                continue
            if target in net and a.prefixlen > best_len:
                best, best_len = a, a.prefixlen
        if best is not None:
            return best.address
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
