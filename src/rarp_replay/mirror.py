"""In-memory mirror of the kernel's link, address and neighbor tables, and of
the bridges' VLANs.

Pure state: fed with `Event`s (from a netlink dump or notifications) and
queried by the decision logic; it never opens a socket, so it is tested
without one. Neighbors are indexed by MAC so that the reaction to a RARP
costs O(bindings of that MAC), independent of the table size (the original
program dumped the whole table for every RARP).

Deleted bindings are remembered for `remember` seconds ("tombstones"): on the
new leaf, the EVPN control plane's entry for the VM (NOARP, extern_learn) is
deleted when the old leaf's withdrawal arrives, which can be just before the
RARP is heard. The tombstone keeps the VM's addresses known for that round.

Bridge VLANs come as `BridgePort` records (AF_BRIDGE link messages): one per
port and one for each bridge itself, each with the device's whole VLAN list.
The start-up dump asks for them (RTM_GETLINK, AF_BRIDGE, IFLA_EXT_MASK =
RTEXT_FILTER_BRVLAN_COMPRESSED), and the kernel sends the same message to
RTNLGRP_LINK on every change of a port's VLANs: br_setlink() calls
br_ifinfo_notify(), whose filter is RTEXT_FILTER_BRVLAN_COMPRESSED (net/bridge/
br_netlink.c, unchanged from 4.x to 6.12; the notification captured from
6.1 carries the port's whole list: tests/unit/data/notify_vlan_add.hex).
Membership changes made with RTM_NEWVLAN/RTM_DELVLAN notify the same way
(br_vlan_rtm_process_one calls br_ifinfo_notify when anything changed). So
the link group the daemon already follows is enough, on 6.1 and 6.12 alike.
Not seen there: a VLAN-to-VNI change made as a per-VLAN *option*
(`bridge vlan set ... tunnel_info`, RTM_NEWVLAN with ONLY_OPTS: notified on
RTNLGRP_BRVLAN only) until the next re-dump, and `vnifilter` VXLAN devices;
resolution does not use the VNI map.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .netlink.records import (
    AF_BRIDGE,
    IFA_F_SECONDARY,
    IFA_F_TENTATIVE,
    NUD_VALID,
    Address,
    BridgePort,
    Change,
    Event,
    IPAddress,
    Link,
    Neighbor,
)

NeighKey = tuple[int, IPAddress]  # (ifindex, IP): the kernel's own key for a neighbor entry


@dataclass(frozen=True, slots=True)
class Binding:
    """One IP address of a MAC on one L3 interface, live or remembered."""

    neighbor: Neighbor
    live: bool
    deleted_at: float | None = None

    @property
    def address(self) -> IPAddress:
        assert self.neighbor.address is not None
        return self.neighbor.address


def _without(entries: tuple[Neighbor, ...], key: NeighKey) -> tuple[Neighbor, ...]:
    """`entries` less the one whose (ifindex, address) is `key`."""
    index, address = key
    if len(entries) == 1:  # most MACs: no tuple to build
        n = entries[0]
        return () if n.index == index and n.address == address else entries
    return tuple(n for n in entries if n.index != index or n.address != address)


def _put(entries: tuple[Neighbor, ...], n: Neighbor) -> tuple[Neighbor, ...]:
    """`entries` with `n` in place of the entry of its key, or added at the end (the
    order a dict keyed by (ifindex, address) would keep)."""
    for i, old in enumerate(entries):
        if old.index == n.index and old.address == n.address:
            return (*entries[:i], n, *entries[i + 1 :])
    return (*entries, n)


def _binds(n: Neighbor) -> bool:
    """Does this entry bind its IP to a MAC? INCOMPLETE/FAILED/NONE entries do not."""
    return n.lladdr is not None and bool(n.state & NUD_VALID) and n.address is not None


# Seconds a deleted binding is remembered (the `remember` setting's default).
REMEMBER = 300.0


class Mirror:
    def __init__(self, remember: float = REMEMBER) -> None:
        self.remember = remember
        self.links: dict[int, Link] = {}
        self.addresses: dict[int, dict[IPAddress, Address]] = {}
        self.neighbors: dict[NeighKey, Neighbor] = {}
        # Bridge FDB: (bridge ifindex, VLAN or 0, MAC) -> entry (its port is `index`).
        self.fdb: dict[tuple[int, int, bytes], Neighbor] = {}
        # Bridge ports and bridges (by ifindex) with their VLANs and VLAN tunnels.
        self.bridge_ports: dict[int, BridgePort] = {}
        # MAC -> its binding entries. A tuple, not a dict per MAC: a MAC has one to a
        # few addresses, and 100,000 one-entry dicts were 22 MB of the daemon's RSS
        # (224 octets each against 48 for a 1-tuple; measured with tracemalloc).
        self._by_mac: dict[bytes, tuple[Neighbor, ...]] = {}
        self._tombstones: dict[bytes, dict[NeighKey, tuple[Neighbor, float]]] = {}
        # Every burial in time order, so that expiry pops the front instead of
        # walking every tombstone (50,000 of them after a mass withdrawal).
        self._burials: deque[tuple[float, bytes, NeighKey]] = deque()
        self._uppers_cache: dict[int, tuple[int, ...]] | None = None
        # (ifindex, IP version) -> prefixes_of(); valid for one `generation`.
        self._prefixes: dict[tuple[int, int], tuple[tuple[int, int, IPAddress], ...]] = {}
        self._prefixes_generation = -1
        # Bumped by every link or address change (and by `reset`): what is derived
        # from links and addresses alone (an L2 domain, `domain.resolve`) may be
        # cached by a reader until this changes. Neighbor changes leave it alone.
        self.generation = 0

    # -- feeding -------------------------------------------------------

    def apply(self, event: Event, now: float) -> Neighbor | None:
        """Apply one change. For a bridge FDB change, returns the entry it replaces
        (where the MAC was before), so a move from one port to another is seen."""
        rec = event.record
        if isinstance(rec, Neighbor):
            if rec.family == AF_BRIDGE:
                return self._fdb_apply(event.change, rec)
            if rec.address is not None:
                if event.change is Change.NEW:
                    self._neigh_new(rec, now)
                else:
                    self._neigh_del((rec.index, rec.address), now)
        elif isinstance(rec, Link):
            self.generation += 1
            self._uppers_cache = None
            if event.change is Change.NEW:
                self.links[rec.index] = rec
            else:
                self.links.pop(rec.index, None)
                self.addresses.pop(rec.index, None)
                self.bridge_ports.pop(rec.index, None)
                # The kernel flushes a vanished device's neighbors without
                # always notifying each one: drop them here (as tombstones).
                for key in [k for k in self.neighbors if k[0] == rec.index]:
                    self._neigh_del(key, now)
        elif isinstance(rec, BridgePort):
            # VLAN membership decides domains (`domain.resolve`): cached ones are stale.
            self.generation += 1
            if event.change is Change.NEW:
                self.bridge_ports[rec.index] = rec
            else:  # left the bridge
                self.bridge_ports.pop(rec.index, None)
        elif isinstance(rec, Address):
            self.generation += 1
            per = self.addresses.setdefault(rec.index, {})
            if event.change is Change.NEW:
                per[rec.address] = rec
            else:
                per.pop(rec.address, None)
        return None

    def _fdb_apply(self, change: Change, rec: Neighbor) -> Neighbor | None:
        # Only the bridge's own table (entries with a master); a VXLAN device's
        # "self" entries (remote VTEPs) are not MAC locations.
        if rec.master is None or rec.lladdr is None:
            return None
        key = (rec.master, rec.vlan or 0, rec.lladdr)
        old = self.fdb.get(key)
        if change is Change.NEW:
            self.fdb[key] = rec
        else:
            self.fdb.pop(key, None)
        return old

    def reset(
        self,
        links: Iterable[Event],
        addresses: Iterable[Event],
        neighbors: Iterable[Event],
        now: float,
    ) -> int:
        """Replace the state with a fresh dump (at start, and after a netlink overrun).

        `links` holds the `Link` events and, after them, the `BridgePort` ones.

        Bindings that vanished while notifications were lost become tombstones,
        exactly as if their deletion had been seen. Returns how many did.
        """
        self.generation += 1
        self.links = {}
        self.addresses = {}
        self.bridge_ports = {}
        self._uppers_cache = None
        for ev in links:
            self.apply(ev, now)
        for ev in addresses:
            self.apply(ev, now)
        old = self.neighbors
        self.neighbors = {}
        self._by_mac = {}
        self.fdb = {}
        for ev in neighbors:
            rec = ev.record
            if not isinstance(rec, Neighbor):
                continue
            if rec.family == AF_BRIDGE:
                self._fdb_apply(Change.NEW, rec)
            elif rec.address is not None:
                self._neigh_new(rec, now)
        vanished = 0
        for key, n in old.items():
            cur = self.neighbors.get(key)
            if _binds(n) and (cur is None or cur.lladdr != n.lladdr) and n.lladdr is not None:
                self._bury(n.lladdr, key, n, now)
                vanished += 1
        return vanished

    def _neigh_new(self, n: Neighbor, now: float) -> None:
        assert n.address is not None
        key = (n.index, n.address)
        old = self.neighbors.get(key)
        moved = old is not None and (old.lladdr != n.lladdr or not _binds(n))
        if old is not None and old.lladdr is not None and _binds(old) and moved:
            # The IP moved to another MAC, or the entry stopped binding
            # (FAILED/INCOMPLETE): remember the old binding like a delete.
            self._unindex(old.lladdr, key)
            self._bury(old.lladdr, key, old, now)
        self.neighbors[key] = n
        if _binds(n):
            assert n.lladdr is not None
            mine = self._by_mac.get(n.lladdr)
            if mine is None:
                self._by_mac[n.lladdr] = (n,)
            else:
                self._by_mac[n.lladdr] = _put(mine, n)
            graves = self._tombstones.get(n.lladdr)
            if graves is not None and key in graves:
                del graves[key]
                if not graves:
                    del self._tombstones[n.lladdr]

    def _neigh_del(self, key: NeighKey, now: float) -> None:
        old = self.neighbors.pop(key, None)
        if old is not None and old.lladdr is not None and _binds(old):
            self._unindex(old.lladdr, key)
            self._bury(old.lladdr, key, old, now)

    def _unindex(self, mac: bytes, key: NeighKey) -> None:
        mine = self._by_mac.get(mac)
        if mine is not None:
            rest = _without(mine, key)
            if rest:
                self._by_mac[mac] = rest
            else:
                del self._by_mac[mac]

    def _bury(self, mac: bytes, key: NeighKey, n: Neighbor, now: float) -> None:
        if self.remember > 0:
            self._tombstones.setdefault(mac, {})[key] = (n, now)
            self._burials.append((now, mac, key))

    def expire(self, now: float) -> int:
        """Forget tombstones older than `remember`. Returns how many were dropped."""
        dropped = 0
        burials = self._burials
        while burials and now - burials[0][0] > self.remember:
            t, mac, key = burials.popleft()
            graves = self._tombstones.get(mac)
            if graves is None or key not in graves or graves[key][1] != t:
                continue  # revived, or buried again later (a newer burial is queued)
            del graves[key]
            dropped += 1
            if not graves:
                del self._tombstones[mac]
        return dropped

    # -- queries ---------------------------------------------------------

    def bindings(self, mac: bytes, ifindexes: Iterable[int], now: float) -> list[Binding]:
        """Every IP of `mac` on the given L3 interfaces: live entries first, then
        remembered ones that nothing newer has replaced (an IP now bound to a
        different MAC is that MAC's, not ours)."""
        # A domain's few L3 interfaces come as a tuple: membership in it is cheaper
        # than building a set per call.
        wanted = ifindexes if isinstance(ifindexes, tuple | set | frozenset) else set(ifindexes)
        out: list[Binding] = []
        live = self._by_mac.get(mac)
        if live is not None:
            for n in live:
                if n.index in wanted:
                    # Live bindings are the current entries: `neighbors[key] is n`.
                    out.append(Binding(n, True))
        graves = self._tombstones.get(mac)
        if graves is None:
            return out
        for key, (n, t) in graves.items():
            if key[0] not in wanted or now - t > self.remember:
                continue
            cur = self.neighbors.get(key)
            if cur is not None and _binds(cur) and cur.lladdr != mac:
                continue
            out.append(Binding(n, live=False, deleted_at=t))
        return out

    def neighbor(self, ifindex: int, address: IPAddress) -> Neighbor | None:
        return self.neighbors.get((ifindex, address))

    def addresses_of(self, ifindex: int) -> list[Address]:
        """Usable addresses (not tentative), in the kernel's order (primary first)."""
        return [
            a for a in self.addresses.get(ifindex, {}).values() if not a.flags & IFA_F_TENTATIVE
        ]

    def prefixes_of(self, ifindex: int, version: int) -> tuple[tuple[int, int, IPAddress], ...]:
        """The usable addresses of `ifindex` of one IP version (no IPv6 link-local) as
        (network, mask, address), the network and mask as integers, longest prefix
        first and in the kernel's order among equals. A longest-prefix match is then
        a scan with one AND per address: `ip_network.__contains__` and the loop
        around it were the largest part of an announcement's Python before the probe
        (12.6 of ~35 us, timeit on a loaded machine; 2.0 us this way)."""
        if self._prefixes_generation != self.generation:
            self._prefixes = {}
            self._prefixes_generation = self.generation
        key = (ifindex, version)
        got = self._prefixes.get(key)
        if got is None:
            bits = 32 if version == 4 else 128
            ones = (1 << bits) - 1
            rows = [
                (a.prefixlen, a.address)
                for a in self.addresses_of(ifindex)
                if a.address.version == version and not (version == 6 and a.address.is_link_local)
            ]
            rows.sort(key=lambda r: -r[0])  # stable: kernel order among equal prefixes
            got = tuple(
                (int(addr) & (ones ^ (ones >> plen)), ones ^ (ones >> plen), addr)
                for plen, addr in rows
            )
            self._prefixes[key] = got
        return got

    def primary_ipv4(self, ifindex: int) -> Address | None:
        for a in self.addresses_of(ifindex):
            if a.address.version == 4 and not a.flags & IFA_F_SECONDARY:
                return a
        return None

    def uppers(self, ifindex: int) -> tuple[int, ...]:
        """Devices stacked on `ifindex` (vlan, macvlan: IFLA_LINK == ifindex)."""
        if self._uppers_cache is None:
            cache: dict[int, list[int]] = {}
            for link in self.links.values():
                if link.lower is not None and link.link_netnsid is None:
                    cache.setdefault(link.lower, []).append(link.index)
            self._uppers_cache = {k: tuple(v) for k, v in cache.items()}
        return self._uppers_cache.get(ifindex, ())

    def vlan_filtering(self, ifindex: int) -> bool:
        """Is `ifindex` a bridge that filters VLANs (vlan_filtering 1)?"""
        link = self.links.get(ifindex)
        return link is not None and link.kind == "bridge" and bool(link.vlan_filtering)

    def vni(self, bridge: int, vid: int) -> int | None:
        """The VNI that VLAN `vid` of `bridge` is carried in over a VXLAN port with VLAN
        tunnel info (a single VXLAN device for all VNIs), None if no port maps it."""
        for port in self.bridge_ports.values():
            if port.master == bridge and port.tunnels:
                vni = port.vni(vid)
                if vni is not None:
                    return vni
        return None

    def counts(self) -> dict[str, int]:
        # Also called from the metrics server's thread while the main loop
        # changes the tables: list(d.values()) copies in one C call (no
        # bytecode runs, so the GIL is not handed over and the dict cannot
        # change meanwhile); a generator over d.values() would raise
        # "dictionary changed size during iteration" (measured: most
        # attempts fail under a concurrent writer).
        return {
            "links": len(self.links),
            "addresses": sum(map(len, list(self.addresses.values()))),
            "neighbors": len(self.neighbors),
            "fdb": len(self.fdb),
            "macs": len(self._by_mac),
            "remembered": sum(map(len, list(self._tombstones.values()))),
        }
