"""In-memory mirror of the kernel's link, address and neighbor tables.

Pure state: fed with `Event`s (from a netlink dump or notifications) and
queried by the decision logic; it never opens a socket, so it is tested
without one. Neighbors are indexed by MAC so that the reaction to a RARP
costs O(bindings of that MAC), independent of the table size (the original
program dumped the whole table for every RARP).

Deleted bindings are remembered for `remember` seconds ("tombstones"): on the
new leaf, the EVPN control plane's entry for the VM (NOARP, extern_learn) is
deleted when the old leaf's withdrawal arrives, which can be just before the
RARP is heard. The tombstone keeps the VM's addresses known for that round.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .netlink.records import (
    AF_BRIDGE,
    IFA_F_SECONDARY,
    IFA_F_TENTATIVE,
    NUD_VALID,
    Address,
    Change,
    Event,
    IPAddress,
    Link,
    Neighbor,
)

NeighKey = tuple[int, IPAddress]
IPNetwork = (
    ipaddress.IPv4Network | ipaddress.IPv6Network
)  # (ifindex, IP): the kernel's own key for a neighbor entry


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
        self._by_mac: dict[bytes, dict[NeighKey, Neighbor]] = {}
        self._tombstones: dict[bytes, dict[NeighKey, tuple[Neighbor, float]]] = {}
        # Every burial in time order, so that expiry pops the front instead of
        # walking every tombstone (50,000 of them after a mass withdrawal).
        self._burials: deque[tuple[float, bytes, NeighKey]] = deque()
        self._uppers_cache: dict[int, tuple[int, ...]] | None = None
        self._networks_cache: dict[int, list[tuple[IPNetwork, Address]]] = {}
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
                # The kernel flushes a vanished device's neighbors without
                # always notifying each one: drop them here (as tombstones).
                for key in [k for k in self.neighbors if k[0] == rec.index]:
                    self._neigh_del(key, now)
        elif isinstance(rec, Address):
            self.generation += 1
            self._networks_cache.pop(rec.index, None)
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

        Bindings that vanished while notifications were lost become tombstones,
        exactly as if their deletion had been seen. Returns how many did.
        """
        self.generation += 1
        self.links = {}
        self.addresses = {}
        self._uppers_cache = None
        self._networks_cache = {}
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
            self._by_mac.setdefault(n.lladdr, {})[key] = n
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
        per = self._by_mac.get(mac)
        if per is not None:
            per.pop(key, None)
            if not per:
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
            for key, n in live.items():
                if key[0] in wanted:
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

    def networks_of(self, ifindex: int) -> list[tuple[IPNetwork, Address]]:
        """`addresses_of` with each address's network, computed once per change
        (building an ip_network per probe was a measurable part of a burst)."""
        nets = self._networks_cache.get(ifindex)
        if nets is None:
            nets = [
                (ipaddress.ip_network((a.address, a.prefixlen), strict=False), a)
                for a in self.addresses_of(ifindex)
            ]
            self._networks_cache[ifindex] = nets
        return nets

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
