"""Decision logic: what to do about a RARP, a neighbor change, the passing of time.

Sans-I/O in the manner of h11/wsproto: the daemon feeds the engine what it
read (a captured frame, a netlink event, the clock) and carries out the
actions it returns (send a frame, ask the kernel to resolve an address,
remove a placeholder, write a log line). Nothing here opens a socket, so the
whole policy is unit-tested with plain objects.

A *round* is the engine's answer to one migration: for one (MAC, L2 domain)
it probes every known address of the MAC and then follows each address until
the switch's kernel holds it as a local neighbor ("confirmed"), or gives up
after `give_up` seconds. While EVPN's remote entry for the address exists
(NUD_NOARP, extern_learn), the kernel ignores the VM's answer (a NOARP entry
only changes administratively, net/core/neighbour.c __neigh_update); the
moment that entry is deleted (the old leaf's withdrawal), the engine asks the
kernel to resolve the address itself (`Resolve`: an INCOMPLETE entry the
kernel owns and times out) and probes again, so the VM's reply is a solicited
one that the kernel accepts even with arp_accept=0.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from socket import inet_ntoa

from .counters import (
    ANNOUNCED,
    ANNOUNCEMENTS,
    ANSWER_NOT_LOCAL,
    CONFIRMED,
    CONFIRMED_BY,
    COPIES,
    CUT_SHORT,
    DROPPED,
    DUPLICATE,
    EXCLUDED_PORT,
    FABRIC_PORT,
    FDB_MOVE,
    FDB_MOVES,
    FRAMES,
    GAVE_UP,
    NO_SOURCE_ADDRESS,
    PROBES,
    RARP,
    RATE_LIMIT_GLOBAL,
    RATE_LIMIT_PORT,
    RATE_LIMIT_PROBE,
    REMOTE_DELETED,
    REPLIES,
    RESOLVES,
    ROUNDS,
    ROUNDS_BY,
    SKIPPED,
    TAKEOVERS,
    TAKEOVERS_WITHHELD,
    UNKNOWN_MAC,
    dropped,
)
from .domain import (
    DEFAULT_FABRIC_KINDS,
    DEFAULT_FABRIC_PORTS,
    Domain,
    GlobSet,
    Ignored,
    resolve,
    source_address,
)
from .frames.arp import ArpRequestTemplate
from .frames.capture import Announcement, Answer, Captured, classify
from .frames.ipv6 import solicited_node
from .frames.ndp import ns_frame
from .macaddr import format_mac, is_unicast
from .mirror import Binding, Mirror
from .netlink.records import (
    AF_BRIDGE,
    NUD_DELAY,
    NUD_INCOMPLETE,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    NUD_STALE,
    NUD_VALID,
    Change,
    Event,
    IPAddress,
    Neighbor,
)
from .ratelimit import KeyedBuckets, Rate, TokenBucket

# States in which the kernel holds an entry it learned (or can learn) from the
# host itself: zebra treats these as local neighbors and advertises them.
_LOCAL_STATES = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT

# How long an answer seen on the SVI waits for its port copy before it is counted as not
# local. The kernel queues the port copy first (the port's taps run before the bridge's rx
# handler), but the capture's sockets are read one after the other: a frame that arrives
# while they are read can have its SVI copy read in this pass and its port copy in the
# next (seen in tests/integration/test_daemon.py, one pass apart). A loop pass takes
# well under a millisecond; 0.1 s leaves room for a loaded switch.
ANSWER_GRACE = 0.1

_DOMAIN_CACHE_MAX = 65536
_TEMPLATE_CACHE_MAX = 4096


@dataclass(frozen=True)
class Config:
    """The engine's settings and their defaults. A field named like a field of
    `config.Settings` is that setting (`config.engine_config` copies them by
    name); the others are fixed here."""

    # One round per (MAC, L2 domain) within this window. 5 s covers QEMU's
    # burst (5 frames in 0.8 s), OpenStack's announce workaround (that burst
    # three times, a second apart: last frame at ~2.8 s) and ESXi's up to ~8
    # frames on failover, with margin for hypervisor jitter; a genuine second
    # migration of one VM within 5 s is not something live migration does.
    holddown: float = 5.0
    # Follow each address this long waiting for the kernel to learn it locally
    # (the old leaf's withdrawal takes ~0.1 s in a two-leaf lab, seconds with
    # route reflectors and MRAI timers), then give up and say so.
    give_up: float = 30.0
    # Re-probe addresses that are neither confirmed nor held by a remote entry.
    retry_backoff: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
    # Ask the kernel to resolve addresses whose remote entry is gone.
    relearn: bool = True
    max_resolves: int = 3
    # Also start a round when the bridge learns a MAC on a local port that it
    # had on another port (a VXLAN port, i.e. remote in EVPN, or another
    # access port): guests that announce with GARP/NA, hypervisors that
    # announce nothing, a lost RARP. Deduplicated with the RARP trigger.
    fdb_trigger: bool = True
    # Takeover: when the VM answers a probe while EVPN's remote entry for the
    # address still exists (the kernel ignores that answer: the entry is
    # NOARP), replace the entry administratively with a local REACHABLE one.
    # FRR's zebra takes that as the neighbor moving from remote to local and
    # advertises the MAC/IP from this leaf with a higher mobility sequence
    # number. With `takeover_delay` 0 that is make-before-break: before the
    # old leaf has even withdrawn (measured in tests/fabric/NOTES.md: ~61 ms
    # instead of ~162 ms after the RARP); by default it is held (below). Done
    # once per address and round: if the control plane installs its remote
    # entry again, it wins and the engine waits for its deletion instead.
    takeover: bool = True
    # Hold the takeover this many seconds (0: take over at once), waiting for
    # EVPN to delete its remote entry (the old leaf's withdrawal): then the
    # engine resolves as on any withdrawal, the kernel learns the VM from its
    # solicited answer, and this leaf's MAC/IP route leaves only after the old
    # one is gone, never overlapping it. The takeover happens only if the delay
    # runs out first (old leaf dead or slow, or a withdrawal that never comes:
    # FRR #21473). Why 1 s by default and not 0: FRR 8.4.0-8.4.4 (Debian 12's),
    # 8.5.0-8.5.2 and 9.0.0 lose a third leaf's route to the VM for good when
    # both routes overlap (tests/fabric/NOTES.md g). In a three-leaf symmetric-
    # IRB lab on FRR 8.4.4, a delay of 0 lost the third leaf's client whenever
    # the new route reached it before the withdrawal, while a held takeover and
    # `--no-takeover` restored every client (3 of 3, median downtime 59-89 ms
    # under TCG). A lost client is far worse than the withdrawal's ~50-100 ms
    # the hold costs; 1 s covers a two-leaf lab's withdrawal (~0.1 s) tenfold
    # and bounds the wait when it never comes. 0 (make-before-break) is safe on
    # FRR 8.4.5+, 8.5.3+, 9.0.1+ and 9.1 and later.
    # The daemon's default: changed here only, `config.Settings` reads it.
    takeover_delay: float = 1.0
    # NDA_PROTOCOL of entries this daemon writes, so that nobody (FRR 10.6+
    # included, which recognises its own entries by protocol) mistakes them
    # for the control plane's. 82 is unassigned in iproute2's rt_protos.
    neigh_protocol: int = 82
    # Rate limits (token buckets: per second, burst). Generous by default: a
    # mass evacuation announces thousands of VMs within a second, often from
    # one hypervisor port, and every one of them must be served. They exist so
    # that a host flooding RARPs (multicast or PXE storms) can neither starve
    # other ports nor turn the switch into an ARP cannon.
    port_rate: Rate = Rate(2000.0, 20000.0)
    global_rate: Rate = Rate(5000.0, 40000.0)
    probe_rate: Rate = Rate(10000.0, 60000.0)
    # Drop log lines: at most this many per reason in a burst, refilled at 1/s;
    # the next line that gets through says how many were suppressed.
    drop_log_burst: float = 20.0
    fabric_kinds: frozenset[str] = DEFAULT_FABRIC_KINDS
    # Interface-name globs (fnmatch). fabric_ports: more ports facing the
    # fabric, besides the tunnel kinds above. include/exclude: serve only
    # announcements whose ingress port or SVI matches include (empty: all)
    # and neither matches exclude.
    fabric_ports: tuple[str, ...] = DEFAULT_FABRIC_PORTS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


# -- actions -------------------------------------------------------------------


# Not frozen: a frozen dataclass pays object.__setattr__ per field on creation, and
# one is made on the way to every probe's sendto(). Treat it as read-only.
@dataclass(slots=True)
class SendFrame:
    egress: int
    frame: bytes
    family: int  # 4 or 6
    target: IPAddress
    source: IPAddress
    mac: bytes


@dataclass(frozen=True, slots=True)
class Resolve:
    """Make the kernel resolve `address` on `ifindex` itself (NTF_USE)."""

    ifindex: int
    address: IPAddress


@dataclass(frozen=True, slots=True)
class Takeover:
    """Replace the remote entry for `address` by a local REACHABLE one (lladdr `mac`)."""

    ifindex: int
    address: IPAddress
    mac: bytes
    protocol: int


@dataclass(frozen=True, slots=True)
class RemovePlaceholder:
    """Delete the INCOMPLETE entry a `Resolve` left, if it is still INCOMPLETE."""

    ifindex: int
    address: IPAddress


@dataclass(frozen=True, slots=True)
class Log:
    event: str
    level: str
    fields: dict[str, object]


Action = SendFrame | Resolve | Takeover | RemovePlaceholder | Log


# -- rounds --------------------------------------------------------------------


class TargetState(enum.Enum):
    PROBING = "probing"  # no remote entry: the VM's answer can be learned now
    REMOTE = "remote"  # EVPN's remote entry still exists: wait for its deletion
    CONFIRMED = "confirmed"  # the kernel holds it as a local neighbor
    STATIC = "static"  # an administrative entry: probe once, nothing to learn
    GAVE_UP = "gave-up"


@dataclass(slots=True)
class Target:
    ifindex: int
    address: IPAddress
    source: IPAddress
    state: TargetState
    probes: int = 0
    resolves: int = 0
    next_probe: float | None = None
    retry: int = 0
    confirmed_at: float | None = None
    took_over: bool = False
    # The VM answered while the remote entry was in the way and `takeover_delay`
    # holds the takeover: when the hold began and until when (None: no hold).
    held_at: float | None = None
    hold_until: float | None = None
    proven: bool = False  # an answer entered through a local port of the domain


@dataclass(slots=True)
class Round:
    mac: bytes
    domain: Domain
    started: float
    trigger: str
    targets: dict[IPAddress, Target] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return any(
            t.state in (TargetState.PROBING, TargetState.REMOTE) for t in self.targets.values()
        )


class Engine:
    """The policy. Every input method returns the actions to carry out, in order.

    `send`, when given, takes the latency-critical actions out of that list: each
    probe (`SendFrame`) and the `Resolve` that must reach the kernel before it are
    handed to `send` the moment they are built, before the round's bookkeeping,
    statistics and log fields are done. Measured with ftrace on the switch
    namespace, that bookkeeping was ~35 us of Python between poll() returning and
    the probe's sendto(); sending first cut the reaction median by 17 us (issue 11).
    Without `send` (unit tests, benchmarks) they stay in the returned list, in the
    same order.
    """

    def __init__(
        self,
        mirror: Mirror,
        config: Config | None = None,
        send: Callable[[Action], None] | None = None,
    ) -> None:
        self.mirror = mirror
        self.config = config or Config()
        self._send = send
        self.stats: Counter[str] = Counter()
        # Seconds from round start to confirmation, drained by the metrics
        # endpoint once per loop iteration. Bounded, so that it cannot grow
        # without end when nobody drains it (metrics off); one iteration
        # confirms at most one address per netlink notification read
        # (a 256 KiB read: ~3,000), far below the bound.
        self.confirm_times: deque[float] = deque(maxlen=16384)
        self._last_round: dict[tuple[bytes, tuple[int, int]], float] = {}
        self._rounds: dict[tuple[bytes, tuple[int, int]], Round] = {}
        # (ifindex, address) -> round key: neighbor events find their round in O(1).
        self._watch: dict[tuple[int, IPAddress], tuple[bytes, tuple[int, int]]] = {}
        # Timers: a heap of (due, seq, round key). Entries go stale when a round
        # changes; `tick` re-checks each against the round, so it only costs
        # work for rounds that are due, not for every open round (a 10,000-VM
        # evacuation opens 10,000 rounds at once).
        self._timers: list[tuple[float, int, tuple[bytes, tuple[int, int]]]] = []
        self._seq = itertools.count()
        # (time, key) of every hold-down set, oldest first: expiry pops the front.
        self._holddown_queue: deque[tuple[float, tuple[bytes, tuple[int, int]]]] = deque()
        self._next_housekeeping = 0.0
        c = self.config
        self._port_buckets = KeyedBuckets(*c.port_rate)
        self._global_bucket = TokenBucket(*c.global_rate)
        self._probe_bucket = TokenBucket(*c.probe_rate)
        self._drop_logs = KeyedBuckets(1.0, c.drop_log_burst)
        self._drop_reasons: dict[str, int] = {}
        self._suppressed: Counter[str] = Counter()
        self._domains: dict[tuple[int, int | None], Domain | Ignored] = {}
        # Answers seen on the SVI of an open round but not (yet) on a port: judged at the
        # next `tick`, once the frames read with them are handled (see `_on_answer`).
        self._unproven: list[tuple[tuple[bytes, tuple[int, int]], Round, Target, int, float]] = []
        self._domains_generation = -1
        # (egress MAC, source, VLAN tag) -> the ARP probe of that sender, less the VM.
        self._arp_templates: dict[tuple[bytes, IPv4Address, int | None], ArpRequestTemplate] = {}
        self._set_ports(c)

    def _set_ports(self, c: Config) -> None:
        self._domains.clear()  # resolutions depend on the fabric ports and kinds
        self._fabric = GlobSet(c.fabric_ports)
        self._include = GlobSet(c.include)
        self._exclude = GlobSet(c.exclude)

    def reconfigure(self, config: Config) -> None:
        """Apply new settings (SIGHUP) without losing rounds, hold-downs or the mirror.

        Rounds in flight keep their schedule; new timers follow the new
        settings. A rate limit whose rate or burst changed starts over with a
        full bucket; unchanged ones keep their state, so a reload in the middle
        of a flood does not hand the flooder a fresh burst.
        """
        old, self.config = self.config, config
        if old.port_rate != config.port_rate:
            self._port_buckets = KeyedBuckets(*config.port_rate)
        if old.global_rate != config.global_rate:
            self._global_bucket = TokenBucket(*config.global_rate)
        if old.probe_rate != config.probe_rate:
            self._probe_bucket = TokenBucket(*config.probe_rate)
        if old.drop_log_burst != config.drop_log_burst:
            self._drop_logs = KeyedBuckets(1.0, config.drop_log_burst)
        self._set_ports(config)

    # -- inputs ----------------------------------------------------------------

    def on_frame(self, data: bytes, ifindex: int, aux_vid: int | None, now: float) -> list[Action]:
        """A frame the capture socket delivered: `classify` it, then `on_capture`."""
        return self.on_capture(classify(data, aux_vid, bool(self._rounds)), ifindex, now)

    @property
    def expects_answers(self) -> bool:
        """Whether an ARP reply or NA can matter now (a round is open): `classify`'s
        `answers`. Parsing answers nobody waits for is the common case's waste."""
        return bool(self._rounds)

    def on_capture(self, seen: Captured, ifindex: int, now: float) -> list[Action]:
        """What `frames.capture.classify` made of a frame captured on port `ifindex`."""
        self.stats[FRAMES] += 1
        if isinstance(seen, Announcement):
            return self.announce(seen.mac, ifindex, seen.vid, now, trigger=RARP)
        if isinstance(seen, Answer):
            return self._on_answer(seen, ifindex, now)
        if seen is None:
            return []  # an ARP request or NS, or an answer while no round waits
        if not seen.log:
            self.stats[dropped(seen.reason)] += 1
            return []
        mac = format_mac(seen.mac) if seen.mac is not None else None
        return self._drop(seen.reason, ifindex, now, mac=mac, detail=seen.detail)

    def announce(
        self,
        mac: bytes,
        ifindex: int,
        vid: int | None,
        now: float,
        *,
        trigger: str,
        moved_from: str | None = None,
    ) -> list[Action]:
        """`mac` showed up on port `ifindex` (VLAN `vid`): start a round unless one is recent."""
        where = self._domain(ifindex, vid)
        if isinstance(where, Ignored):
            return self._drop(where.reason, ifindex, now, mac=format_mac(mac), detail=where.detail)
        if (self._include or self._exclude) and not self._serves(ifindex, where):
            return self._drop(EXCLUDED_PORT, ifindex, now, mac=format_mac(mac))
        # Heard on a port this switch serves: copies, fabric and excluded ports
        # are not announcements.
        self.stats[ANNOUNCED[trigger]] += 1
        if not self._port_buckets.take(ifindex, now):
            return self._drop(RATE_LIMIT_PORT, ifindex, now, mac=format_mac(mac))
        if not self._global_bucket.take(now):
            return self._drop(RATE_LIMIT_GLOBAL, ifindex, now, mac=format_mac(mac))
        self.stats[ANNOUNCEMENTS] += 1
        key = (mac, where.key)
        last = self._last_round.get(key)
        if last is not None and now - last < self.config.holddown:
            self.stats[DROPPED[DUPLICATE]] += 1
            return [self._log("duplicate", "debug", mac, where, since_ms=_ms(now - last))]
        bindings = self.mirror.bindings(mac, where.l3, now)
        if not bindings:
            self.stats[DROPPED[UNKNOWN_MAC]] += 1
            fields: dict[str, object] = _vni_field(where) | {
                "port": self._ifname(ifindex),
                "trigger": trigger,
                "bindings": [],
                "probes": 0,
                "result": UNKNOWN_MAC,
            }
            if not self._log_allowed(UNKNOWN_MAC, now, fields):
                return []
            return [self._log("announcement", "info", mac, where, **fields)]
        targets: dict[IPAddress, Target] = {}
        actions: list[Action] = []
        skipped: list[IPAddress] = []
        probes = 0
        relearn = self.config.relearn
        # Send first: each target's Resolve and probe leave as soon as they are
        # built (see `send`); the round's bookkeeping and its log line follow.
        for b in bindings if len(bindings) == 1 else _dedupe(bindings):
            address = b.address
            src = source_address(self.mirror, where, address)
            if src is None:
                skipped.append(address)
                continue
            state = self._initial_state(mac, b)
            # Written (resolve, takeover) on the SVI, wherever the binding was read:
            # zebra watches the SVI, not the anycast macvlan stacked on it.
            t = Target(where.l3[0], address, src, state)
            if relearn and state is TargetState.PROBING:
                self._resolve(t, actions)
            probes += self._probe(where, mac, t, now, actions)
            targets[address] = t
        rnd = Round(mac, where, now, trigger, targets)
        self._last_round[key] = now
        self._holddown_queue.append((now, key))
        old = self._rounds.pop(key, None)
        if old is not None:
            self._unwatch(old)
        watch = self._watch
        shown: list[str] = []  # the log's "bindings": address(state)
        still_open = False
        for address, t in targets.items():
            watch[(t.ifindex, address)] = key
            shown.append(f"{_ip_text(address)}({_STATE_TEXT[t.state]})")
            if t.state is TargetState.PROBING or t.state is TargetState.REMOTE:
                still_open = True
        self._rounds[key] = rnd
        self._arm(key, rnd)
        if skipped:
            self.stats[SKIPPED[NO_SOURCE_ADDRESS]] += len(skipped)
        self.stats[ROUNDS] += 1
        self.stats[ROUNDS_BY[trigger]] += 1
        fields = (
            {"mac": format_mac(mac), "domain": where.name}
            | _vni_field(where)
            | {
                "port": self._ifname(ifindex),
                "trigger": trigger,
                "bindings": shown,
                "probes": probes,
            }
        )
        if moved_from:
            fields["moved_from"] = moved_from
        if skipped:
            fields["no_source_address"] = [str(a) for a in skipped]
        actions.append(Log("announcement", "info", fields))
        if not still_open:
            self._finish(key, rnd, now)
        return actions

    def _on_answer(self, answer: Answer, ifindex: int, now: float) -> list[Action]:
        """An ARP reply or Neighbor Advertisement: is it a VM answering our probe
        while the control plane's remote entry is in the way? Then take over.

        Only an answer that entered through a local port of the round's domain from
        the VM's MAC proves the VM is here. The VM's own answer is seen on the port
        first (its taps run before the bridge's rx handler, __netif_receive_skb_core)
        and again on the bridge and the SVI after br_pass_frame_up. The bridge's own
        answer (ARP/ND suppression answering the switch's probe from the neighbor
        table while the VM's FDB entry points at the VXLAN port: br_dev_xmit ->
        br_do_proxy_suppress_arp -> br_arp_send, delivered with netif_rx to the bridge
        device) and an answer that came in from the fabric are seen on the bridge/SVI
        but never on a local port. So a sighting on a port is the proof, and one on
        the SVI is held for a moment (judged by `tick`): unless the
        port copy of the same answer proved the address meanwhile (the capture's
        sockets may hand the two copies over in either order, `ANSWER_GRACE`), it is
        counted as `answer-not-local` and starts nothing."""
        if not self._rounds:
            return []  # the common case on a busy switch: nothing to wait for
        where = self._domain(ifindex, answer.vid)
        mac, address = answer.mac, answer.address
        if isinstance(where, Ignored):
            # A copy on the bridge or an upper device, or a fabric port. The copy on the
            # SVI that a round probes from (its targets' interface) is the one to judge.
            key = self._watch.get((ifindex, address))
            rnd = self._rounds.get(key) if key is not None and key[0] == mac else None
            t = rnd.targets.get(address) if rnd is not None else None
            if key is not None and rnd is not None and t is not None:
                self._unproven.append((key, rnd, t, ifindex, now))
            return []
        rnd = self._rounds.get((mac, where.key))
        t = rnd.targets.get(address) if rnd is not None else None
        if rnd is None or t is None:
            return []
        t.proven = True
        self.stats[REPLIES] += 1
        if t.state is not TargetState.REMOTE or t.took_over or not self.config.takeover:
            return []
        delay = self.config.takeover_delay
        if delay <= 0:
            return self._take_over(rnd, t, now)
        if t.hold_until is not None:
            return []  # already held: the first answer set the clock
        t.held_at, t.hold_until = now, now + delay
        self._arm((mac, where.key), rnd)
        return [
            self._log(
                "takeover-held",
                "info",
                mac,
                where,
                address=str(address),
                after_ms=_ms(now - rnd.started),
                delay_ms=_ms(delay),
            )
        ]

    def _take_over(self, rnd: Round, t: Target, now: float) -> list[Action]:
        """Replace EVPN's remote entry for `t` by a local one: the VM answered from here."""
        t.took_over = True
        self.stats[TAKEOVERS] += 1
        fields: dict[str, object] = {
            "address": str(t.address),
            "after_ms": _ms(now - rnd.started),
        }
        if t.held_at is not None:
            fields["held_ms"] = _ms(now - t.held_at)
            t.held_at = t.hold_until = None
        return [
            Takeover(t.ifindex, t.address, rnd.mac, self.config.neigh_protocol),
            self._log("takeover", "info", rnd.mac, rnd.domain, **fields),
        ]

    def on_event(self, event: Event, now: float) -> list[Action]:
        """A netlink notification as read: apply it to the mirror, then let it move
        rounds on. Bridge FDB entries (AF_BRIDGE) go to `on_fdb`, with the entry
        they replaced; IP neighbors to `on_netlink`. Links and addresses only
        change the mirror (and with it the cached domain resolutions)."""
        previous = self.mirror.apply(event, now)
        rec = event.record
        if not isinstance(rec, Neighbor):
            return []
        if rec.family == AF_BRIDGE:
            return self.on_fdb(event, previous, now)
        return self.on_netlink(event, now)

    def leftovers(self) -> list[RemovePlaceholder]:
        """At start: the placeholders a previous run left behind (SIGKILL, a crash, power
        loss in the middle of a round), to delete. Those are entries that carry our
        NDA_PROTOCOL and bind nothing (INCOMPLETE, FAILED, NONE). Only ours carry that
        protocol: `Resolve` stamps the entries it creates (neigh_use), nothing else
        writes it but takeovers.

        Takeover entries (REACHABLE, then STALE/DELAY/PROBE as the kernel's NUD machine
        keeps them fresh; our protocol too) are left alone: each is the VM's binding
        proven by its own answer, which EVPN advertises from this leaf. Deleting one
        would withdraw a correct MAC/IP route until the VM happens to speak again.
        """
        proto = self.config.neigh_protocol
        return [
            RemovePlaceholder(n.index, n.address)
            for n in self.mirror.neighbors.values()
            if n.protocol == proto and not n.state & NUD_VALID and n.address is not None
        ]

    def _placeholder_left(self, ifindex: int, address: IPAddress) -> bool:
        """Whether a `Resolve`'s entry may still be there to delete. NTF_USE creates
        its INCOMPLETE entry without a notification (neigh_event_send: no
        neigh_update_notify), so an entry the mirror does not know may be ours:
        delete it too (ENOENT is fine). Once nobody answered, the kernel turns it
        FAILED (with a notification) and keeps it: that one goes too. An entry that
        binds (NUD_VALID: learned, confirmed, administrative) is never touched."""
        n = self.mirror.neighbor(ifindex, address)
        return n is None or not n.state & NUD_VALID

    def on_fdb(self, event: Event, previous: Neighbor | None, now: float) -> list[Action]:
        """A bridge FDB change (AF_BRIDGE RTM_NEWNEIGH) that the mirror has applied;
        `previous` is the entry it replaced. A MAC that moved to a local port
        gets the same round as a RARP would give it.

        Local or remote is decided by the port, as FRR's zebra decides it
        (zebra/zebra_neigh.c zebra_neigh_macfdb_update: a PERMANENT entry is
        dropped, one on a VXLAN device is a network MAC, any other entry is a
        local MAC, whatever its flags). So `extern_learn` does not stop the
        trigger: SONiC's fdbsyncd writes the MACs its ASIC learned as `bridge fdb
        replace MAC dev EthernetN master dynamic extern_learn vlan V`, and that
        move is the only trigger SONiC gives (it does not trap RARP). A move onto
        a VXLAN or other fabric port is refused by `domain.resolve` (fabric-port).
        Not a host's move, and so no trigger: PERMANENT entries (the bridge's own
        addresses), static ones (NUD_NOARP: written by an operator, or by zebra as
        an EVPN multihoming sync entry), and entries carrying an activity-notify
        attribute, which only zebra writes, on the local MACs it installs for an
        Ethernet segment peer (zebra_evpn_sync_mac_dp_install; the bridge does not
        report NDA_PROTOCOL for FDB entries, br_fdb.c fdb_fill_info, so this is how
        zebra's own entries are told apart). The entry's VLAN (NDA_VLAN) picks the
        domain on a VLAN-filtering bridge."""
        rec = event.record
        if (
            not self.config.fdb_trigger
            or event.change is not Change.NEW
            or not isinstance(rec, Neighbor)
            or previous is None
            or rec.lladdr is None
            or previous.index == rec.index
            or rec.state & (NUD_PERMANENT | NUD_NOARP)
            or rec.notify
            or not is_unicast(rec.lladdr)
        ):
            return []
        where = self._domain(rec.index, rec.vlan)
        if isinstance(where, Ignored) and where.reason == FABRIC_PORT:
            return []  # moved away, to the fabric: the new leaf's business
        self.stats[FDB_MOVES] += 1
        return self.announce(
            rec.lladdr,
            rec.index,
            rec.vlan,
            now,
            trigger=FDB_MOVE,
            moved_from=self._ifname(previous.index),
        )

    def on_netlink(self, event: Event, now: float) -> list[Action]:
        """A neighbor change the mirror has already applied: does it move a round on?"""
        rec = event.record
        if not isinstance(rec, Neighbor) or rec.address is None:
            return []
        key = self._watch.get((rec.index, rec.address))
        if key is None:
            return []
        rnd = self._rounds.get(key)
        if rnd is None:
            return []
        t = rnd.targets[rec.address]
        if t.state not in (TargetState.PROBING, TargetState.REMOTE):
            return []
        actions: list[Action] = []
        if event.change is Change.DEL or not rec.lladdr:
            if t.state is TargetState.REMOTE and event.change is Change.DEL:
                # EVPN withdrew its remote entry: now the VM's answer can be
                # learned, provided the kernel is expecting it.
                t.state = TargetState.PROBING
                t.retry = 0
                if self.config.relearn:
                    self._resolve(t, actions)
                self._probe(rnd.domain, rnd.mac, t, now, actions)
                self.stats[REMOTE_DELETED] += 1
                fields: dict[str, object] = {
                    "address": str(t.address),
                    "after_ms": _ms(now - rnd.started),
                }
                if t.held_at is not None:
                    # The wait paid off: no takeover, the kernel learns the VM now.
                    self.stats[TAKEOVERS_WITHHELD] += 1
                    fields["takeover"] = "withheld"
                    fields["held_ms"] = _ms(now - t.held_at)
                    t.held_at = t.hold_until = None
                actions.append(self._log("remote-deleted", "info", rnd.mac, rnd.domain, **fields))
            return actions
        if rec.lladdr != rnd.mac:
            return actions  # the address now belongs to someone else: leave it be
        if rec.ext_learned:
            # The control plane (re)installed its remote entry: do not fight
            # it; wait for it to go away again.
            t.state = TargetState.REMOTE
            t.next_probe = None
            return actions
        if rec.state & _LOCAL_STATES and not rec.state & NUD_NOARP:
            t.state = TargetState.CONFIRMED
            t.confirmed_at = now
            elapsed = now - rnd.started
            self.confirm_times.append(elapsed)
            self.stats[CONFIRMED] += 1
            self.stats[CONFIRMED_BY[t.address.version]] += 1
            actions.append(
                self._log(
                    "confirmed",
                    "info",
                    rnd.mac,
                    rnd.domain,
                    address=str(t.address),
                    after_ms=_ms(elapsed),
                    probes=t.probes,
                )
            )
            if not rnd.open:
                self._finish(key, rnd, now)
        return actions

    def tick(self, now: float) -> list[Action]:
        """Retries, give-ups and expiry; cheap to call on every wake-up."""
        actions: list[Action] = []
        if self._unproven:
            self._judge_unproven(now, actions)
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, key = heapq.heappop(timers)
            rnd = self._rounds.get(key)
            if rnd is None or self._due(rnd) > now:
                continue  # finished, or a stale entry (a newer one is queued)
            actions.extend(self._run_round(key, rnd, now))
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + 1.0
            if self.mirror.remember > 0:
                self.mirror.expire(now)
            queue, horizon = self._holddown_queue, self.config.holddown
            while queue and now - queue[0][0] >= horizon:
                t, key = queue.popleft()
                if self._last_round.get(key) == t and key not in self._rounds:
                    del self._last_round[key]
        return actions

    def _judge_unproven(self, now: float, actions: list[Action]) -> None:
        """Answers seen on the SVI `ANSWER_GRACE` ago or more whose port copy proved
        nothing since: they were not the VM's."""
        pending = self._unproven
        due = 0
        while due < len(pending) and now - pending[due][4] >= ANSWER_GRACE:
            due += 1
        if not due:
            return
        self._unproven = pending[due:]
        for key, rnd, t, ifindex, seen in pending[:due]:
            now_rnd = self._rounds.get(key)
            now_t = now_rnd.targets.get(t.address) if now_rnd is not None else None
            if t.proven or (now_t is not None and now_t.proven):
                # The SVI copy of an answer its port copy proved (for the round it was
                # seen in, or for the one that replaced it meanwhile).
                continue
            address = t.address
            actions += self._drop(
                ANSWER_NOT_LOCAL,
                ifindex,
                now,
                mac=format_mac(rnd.mac),
                address=str(address),
                after_ms=_ms(seen - rnd.started),
            )

    def _run_round(
        self, key: tuple[bytes, tuple[int, int]], rnd: Round, now: float
    ) -> list[Action]:
        actions: list[Action] = []
        expired = now - rnd.started >= self.config.give_up
        for t in rnd.targets.values():
            if t.state not in (TargetState.PROBING, TargetState.REMOTE):
                continue
            if expired:
                t.state = TargetState.GAVE_UP
                continue
            if t.hold_until is not None and now >= t.hold_until:
                if t.state is TargetState.REMOTE and self.config.takeover:
                    # The withdrawal did not come in time (old leaf dead or slow).
                    actions.extend(self._take_over(rnd, t, now))
                else:  # takeover turned off meanwhile (SIGHUP): wait for the withdrawal
                    t.held_at = t.hold_until = None
            due = t.next_probe
            if _refused_remote(t) and due is not None and now >= due:
                # Its first probe was held back by the probe rate limit: without
                # one, the VM cannot answer and make-before-break cannot happen.
                self._probe(rnd.domain, rnd.mac, t, now, actions)
            elif (
                t.state is TargetState.PROBING and t.next_probe is not None and now >= t.next_probe
            ):
                n = self.mirror.neighbor(t.ifindex, t.address)
                # The kernel's own resolution failed or never started: again.
                unresolved = n is None or not n.state & NUD_INCOMPLETE
                if self.config.relearn and unresolved and t.resolves < self.config.max_resolves:
                    self._resolve(t, actions)
                self._probe(rnd.domain, rnd.mac, t, now, actions)
        if expired:
            actions.extend(self._finish(key, rnd, now))
        else:
            self._arm(key, rnd)
        return actions

    def _due(self, rnd: Round) -> float:
        """When this round next needs `tick`: a retry, or giving up."""
        due = rnd.started + self.config.give_up
        for t in rnd.targets.values():
            if t.hold_until is not None and t.hold_until < due:
                due = t.hold_until
            if (
                (t.state is TargetState.PROBING or _refused_remote(t))
                and t.next_probe is not None
                and t.next_probe < due
            ):
                due = t.next_probe
        return due

    def _arm(self, key: tuple[bytes, tuple[int, int]], rnd: Round) -> None:
        heapq.heappush(self._timers, (self._due(rnd), next(self._seq), key))

    def next_deadline(self) -> float | None:
        """The earliest time `tick` has work to do (None: nothing pending).
        May be early (a stale timer): `tick` then simply finds nothing due."""
        due = self._timers[0][0] if self._timers else None
        if self._unproven:
            judge = self._unproven[0][4] + ANSWER_GRACE
            due = judge if due is None else min(due, judge)
        return due

    def rounds(self) -> list[Round]:
        return list(self._rounds.values())

    def shutdown(self) -> list[Action]:
        """Undo what is still ours (placeholders of open rounds) before exiting."""
        actions: list[Action] = []
        for key, rnd in list(self._rounds.items()):
            for t in rnd.targets.values():
                if t.state in (TargetState.PROBING, TargetState.REMOTE):
                    t.state = TargetState.GAVE_UP
            actions.extend(self._finish(key, rnd, rnd.started, log=False))
        return actions

    # -- helpers -----------------------------------------------------------------

    def _domain(self, ifindex: int, vid: int | None) -> Domain | Ignored:
        """`domain.resolve`, cached per (ifindex, VID) until the mirror's links or
        addresses change (`Mirror.generation`): every frame of a burst is seen on
        its port and again on the bridge, and both resolve to the same answer."""
        mirror = self.mirror
        if self._domains_generation != mirror.generation:
            self._domains.clear()
            self._domains_generation = mirror.generation
        key = (ifindex, vid)
        where = self._domains.get(key)
        if where is None:
            c = self.config
            where = resolve(mirror, ifindex, vid, c.fabric_kinds, self._fabric)
            if len(self._domains) >= _DOMAIN_CACHE_MAX:
                self._domains.clear()  # a host cycling through VLAN ids: start over
            self._domains[key] = where
        return where

    def invalidate_domains(self) -> None:
        """Forget cached domain resolutions. Not needed after changes made through
        `Mirror.apply`/`Mirror.reset` (they bump `Mirror.generation`); for callers
        that change what `resolve` depends on by other means."""
        self._domains.clear()

    def _initial_state(self, mac: bytes, b: Binding) -> TargetState:
        if not b.live:
            return TargetState.PROBING  # deleted (remembered) binding: nothing in the way
        # A live binding from Mirror.bindings is the mirror's current entry for its
        # key (the MAC index and the table change together): no second lookup.
        n = b.neighbor
        if n.lladdr != mac:  # pragma: no cover - the index is by MAC
            return TargetState.PROBING
        if n.ext_learned:
            return TargetState.REMOTE
        if n.state & (NUD_PERMANENT | NUD_NOARP):
            return TargetState.STATIC
        # A local dynamic entry: the kernel takes the VM's reply as confirmation.
        return TargetState.PROBING

    def _now(self, actions: list[Action], a: Action) -> None:
        """Hand `a` to the I/O shell at once when it takes it (`send`), else queue it."""
        if self._send is not None:
            self._send(a)
        else:
            actions.append(a)

    def _resolve(self, t: Target, actions: list[Action]) -> None:
        self._now(actions, Resolve(t.ifindex, t.address))
        t.resolves += 1
        self.stats[RESOLVES] += 1

    def _probe(self, d: Domain, mac: bytes, t: Target, now: float, actions: list[Action]) -> int:
        """Probe `t` (sent at once, see `send`) unless the probe rate limit refuses:
        then a drop, and the retry schedule moves on. 1 if a probe was sent."""
        if not self._probe_bucket.take(now):
            # Keep the schedule moving: the next retry tries again.
            self._schedule_retry(t, now)
            actions += self._drop(RATE_LIMIT_PROBE, t.ifindex, now, address=str(t.address))
            return 0
        address, source = t.address, t.source
        if isinstance(address, IPv4Address) and isinstance(source, IPv4Address):
            frame = self._arp_probe(d.egress_mac, source, mac, address, d.tag)
        elif isinstance(address, IPv6Address) and isinstance(source, IPv6Address):
            # Unicast to the VM's MAC, but addressed to its solicited-node
            # multicast address: Linux answers an NS sent to its unicast address
            # with an NA *without* the target link-layer option (ndisc_recv_ns:
            # inc_opt only for a multicast destination), and such an NA cannot
            # complete an INCOMPLETE entry on this side (measured, NOTES.md c2).
            frame = ns_frame(d.egress_mac, mac, source, solicited_node(address), address, vid=d.tag)
        else:  # pragma: no cover - source_address() returns the target's family
            raise AssertionError("source and target of different families")
        self._now(actions, SendFrame(d.egress, frame, address.version, address, source, mac))
        t.probes += 1
        self._schedule_retry(t, now)
        self.stats[PROBES[address.version]] += 1
        return 1

    def _schedule_retry(self, t: Target, now: float) -> None:
        backoff = self.config.retry_backoff
        if t.retry < len(backoff):
            t.next_probe = now + backoff[t.retry]
            t.retry += 1
        else:
            t.next_probe = None

    def _arp_probe(
        self,
        src_mac: bytes,
        src_ip: IPv4Address,
        dst_mac: bytes,
        dst_ip: IPv4Address,
        tag: int | None,
    ) -> bytes:
        """`arp_request_frame(src_mac, src_ip, dst_mac, dst_ip, vid=tag)`, from a
        template per (egress, source, tag), cached: one SVI sends most probes."""
        key = (src_mac, src_ip, tag)
        tpl = self._arp_templates.get(key)
        if tpl is None:
            tpl = ArpRequestTemplate(src_mac, src_ip, tag)
            if len(self._arp_templates) >= _TEMPLATE_CACHE_MAX:
                self._arp_templates.clear()
            self._arp_templates[key] = tpl
        return tpl.frame(dst_mac, dst_ip)

    def _finish(
        self, key: tuple[bytes, tuple[int, int]], rnd: Round, now: float, log: bool = True
    ) -> list[Action]:
        self._rounds.pop(key, None)
        self._unwatch(rnd)
        actions: list[Action] = []
        gave_up = [t for t in rnd.targets.values() if t.state is TargetState.GAVE_UP]
        for t in gave_up:
            if t.resolves and self._placeholder_left(t.ifindex, t.address):
                actions.append(RemovePlaceholder(t.ifindex, t.address))
        if gave_up:
            # A round the daemon's shutdown ends (log=False) did not run out of time:
            # counted apart, so that gave-up keeps meaning "the VM never showed up".
            if log:
                self.stats[GAVE_UP] += len(gave_up)
            else:
                self.stats[CUT_SHORT] += len(gave_up)
            if log:
                actions.append(
                    self._log(
                        "gave-up",
                        "warning",
                        rnd.mac,
                        rnd.domain,
                        addresses=[str(t.address) for t in gave_up],
                        after_ms=_ms(now - rnd.started),
                    )
                )
        return actions

    def _unwatch(self, rnd: Round) -> None:
        for t in rnd.targets.values():
            self._watch.pop((t.ifindex, t.address), None)

    def _log_allowed(self, reason: str, now: float, fields: dict[str, object]) -> bool:
        """One line per drop would turn a flood into a log storm: a bucket per
        reason, and the next line that gets through counts what was left out."""
        rid = self._drop_reasons.setdefault(reason, len(self._drop_reasons))
        if not self._drop_logs.take(rid, now):
            self._suppressed[reason] += 1
            return False
        if self._suppressed[reason]:
            fields["suppressed"] = self._suppressed.pop(reason)
        return True

    def _drop(self, reason: str, ifindex: int, now: float, **fields: object) -> list[Action]:
        self.stats[dropped(reason)] += 1
        if not self._log_allowed(reason, now, fields):
            return []
        # Copies of a frame already handled on its ingress port are expected:
        # debug level. Everything else is worth an info line.
        level = "debug" if reason in COPIES else "info"
        fields = {k: v for k, v in fields.items() if v}
        return [Log("dropped", level, {"reason": reason, "port": self._ifname(ifindex), **fields})]

    def _log(self, event: str, level: str, mac: bytes, domain: Domain, **fields: object) -> Log:
        return Log(event, level, {"mac": format_mac(mac), "domain": domain.name, **fields})

    def _serves(self, ifindex: int, where: Domain) -> bool:
        """The operator's include/exclude globs, matched on the ingress port and the SVI."""
        names = (self._ifname(ifindex), self._ifname(where.egress))
        if self._include and not any(n in self._include for n in names):
            return False
        return not any(n in self._exclude for n in names)

    def _ifname(self, ifindex: int) -> str:
        link = self.mirror.links.get(ifindex)
        return link.name if link is not None else f"if{ifindex}"


_STATE_TEXT = {s: s.value for s in TargetState}


def _vni_field(where: Domain) -> dict[str, object]:
    """The `announcement` line's `vni`, where a single VXLAN device maps the domain's VLAN to
    one (domain.Domain.vni); nothing elsewhere, so other layouts' lines stay as they were."""
    return {} if where.vni is None else {"vni": where.vni}


def _ip_text(address: IPAddress) -> str:
    """str(address), in C for IPv4 (str() of an IPv4Address is Python code)."""
    return inet_ntoa(address.packed) if type(address) is IPv4Address else str(address)


def _refused_remote(t: Target) -> bool:
    """A target behind EVPN's remote entry that was never probed (rate limit).

    Other REMOTE targets are not re-probed: they wait for the entry's deletion
    (or the VM's answer to the probe they had)."""
    return t.state is TargetState.REMOTE and t.probes == 0 and t.next_probe is not None


def _dedupe(bindings: list[Binding]) -> list[Binding]:
    """One target per IP: the same address on the SVI and on a macvlan stacked on
    it (or live and remembered) is one address of the VM, probed once."""
    seen: dict[IPAddress, Binding] = {}
    for b in bindings:
        if b.address not in seen or (b.live and not seen[b.address].live):
            seen[b.address] = b
    return list(seen.values())


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
