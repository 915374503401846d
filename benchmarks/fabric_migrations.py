#!/usr/bin/env python3
"""Migrate a silent VM back and forth in the two-leaf FRR EVPN lab and time the recovery.

    sudo .venv/bin/python -m benchmarks.fabric_migrations               # 20 per scenario
    sudo .venv/bin/python -m benchmarks.fabric_migrations -n 5 -s ipv4-direct
    sudo .venv/bin/python -m benchmarks.fabric_migrations --no-daemon -n 3

Each scenario builds its own `EvpnFabric` (tests/support/fabric.py: FRR zebra+bgpd
on two leaves, all in namespaces named rrt<run-id>-*, removed at exit), starts
`rarp-reply` on both leaves (not with --no-daemon), and migrates the VM N
times, alternating leaf1->leaf2 and leaf2->leaf1, announcing each move with
QEMU's 5 RARPs.

Clock: every time is a wall-clock time taken by the kernel or right at the
socket, in ms after the first RARP, whose kernel timestamp comes from a
capture on the VM's eth0 (PACKET_OUTGOING):

  adv        the new leaf's MAC/IP UPDATE for the VM crosses the underlay veth
             (BGP capture on leaf1's end of it: when leaf1 is the new leaf this
             is the moment it leaves, when leaf2 is, the moment it arrives; a
             veth adds microseconds);
  installed  the old leaf's zebra installs it in the kernel (a NOARP
             extern_learn neighbour entry pointing at the VM's MAC), seen by an
             rtnetlink listener in the old leaf;
  withdrawn  the old leaf's withdrawal of its own MAC/IP route (BGP capture).
             Negative in ipv4-direct, where unplugging the VM withdraws it
             before the RARP, by construction of that scenario.

"restored" means `installed` happened within --timeout seconds. "MBB"
(make-before-break) counts the restored moves whose `adv` came before
`withdrawn`: the fabric never lacked a MAC/IP route for the VM.

The daemons run with --takeover-delay 0 (make-before-break, what the "MBB" column and
the README's "Measured" table are about) unless told otherwise: the daemon's default
holds the takeover up to 1 s for the old leaf's withdrawal (FRR 8.4.0-8.4.4 can lose a
third leaf's client to make-before-break: tests/fabric/NOTES.md g), so `--takeover-delay
1` measures the default, and its cost.

The daemons run with --holddown 2: at the default 5 s, a move back to a leaf
within 5 s of its last round would be taken for a repeat of the same
announcement. 2 s still covers QEMU's burst (0.8 s). Moves to one leaf are
spaced at least 2.5 s apart to respect it.

Before each move the VM must be in the steady state the fabric reaches after a
successful one (known locally on its leaf, as remote on the other). Without
the daemon a move never gets there, so the VM then talks once (`learn_vm`,
one ARP request) before the next move; with the daemon that is not needed and
is counted in the results ("relearned") if it happens.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.support.fabric import (
    OTHER,
    UNDERLAY,
    VM_IP4,
    VM_IP6,
    VM_MAC,
    VTEP,
    EvpnFabric,
    NeighEvent,
)

ROOT = Path(__file__).resolve().parent.parent

HOLDDOWN = 2.0
TAKEOVER_DELAY = 0.0  # make-before-break, not the daemon's default (see the docstring)
SAME_LEAF_GAP = 2.5  # > HOLDDOWN: seconds between two moves to the same leaf
ETH_P_RARP = b"\x80\x35"


@dataclass(frozen=True)
class Scenario:
    name: str
    measure: str  # the address the table reports
    fabric: dict[str, Any] = field(default_factory=dict)
    arp_accept: int | None = None


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("ipv4-hypervisor", VM_IP4),
        Scenario("ipv6-hypervisor", VM_IP6, {"vm_ipv6": True}),
        Scenario("ipv4-direct", VM_IP4, {"vm_behind_hypervisor": False}),
        Scenario("arp_accept=1", VM_IP4, arp_accept=1),
    )
}


@dataclass
class Address:
    ip: str
    restored: bool
    adv_ms: float | None
    installed_ms: float | None
    withdrawn_ms: float | None
    mbb: bool | None  # None when not restored or no withdrawal was seen
    mac_only_ms: float | None  # the new leaf's MAC-only route (the RARP's own effect)


@dataclass
class Move:
    index: int
    old: str
    new: str
    relearned: bool  # the VM had to talk before this move (see module docstring)
    rarp_gap_ms: float | None  # direct only: withdrawal seen on the new leaf -> first RARP
    addresses: list[Address]
    daemon: dict[str, Any]  # what the new leaf's rarp-reply logged for this move


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else round((t - t0) * 1000, 1)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Bench:
    def __init__(
        self,
        lab: netlab.Lab,
        scenario: Scenario,
        daemon: bool,
        timeout: float,
        log: bool,
        *,
        takeover_delay: float = TAKEOVER_DELAY,
    ) -> None:
        self.scenario = scenario
        self.timeout = timeout
        self.verbose = log
        self.fabric = EvpnFabric(lab, **scenario.fabric)
        fab = self.fabric
        if scenario.arp_accept is not None:
            for leaf in ("leaf1", "leaf2"):
                fab.ns[leaf].sysctl("net.ipv4.conf.all.arp_accept", scenario.arp_accept)
                fab.ns[leaf].sysctl("net.ipv4.conf.br100.arp_accept", scenario.arp_accept)
        self.daemons: dict[str, DaemonProc] = (
            fab.start_daemons("--holddown", str(HOLDDOWN), "--takeover-delay", str(takeover_delay))
            if daemon
            else {}
        )
        self.monitors = {leaf: fab.monitor(leaf) for leaf in ("leaf1", "leaf2")}
        # RARPs leave the VM's eth0 through a packet socket: a capture there
        # stamps each one in the kernel as it is transmitted.
        self.rarps = fab.vm.capture("eth0", lambda d: d[12:14] == ETH_P_RARP)
        self.last_move_to: dict[str, float] = {}
        fab.learn_vm()

    def steady(self) -> bool:
        """Is the VM known locally on its leaf and as remote on the other, for every address?"""
        fab = self.fabric
        here, there = fab.vm_leaf, OTHER[fab.vm_leaf]
        for ip in fab.vm_ips():
            mine = fab.neighbor(here, ip)
            if mine is None or mine.remote or mine.lladdr != VM_MAC:
                return False
            if not fab.has_remote_neighbor(there, ip):
                return False
        return True

    def move(self, index: int) -> Move:
        fab = self.fabric
        relearned = False
        if not self.steady():
            fab.learn_vm()
            relearned = True
        old, new = fab.vm_leaf, OTHER[fab.vm_leaf]
        wait = self.last_move_to.get(new, 0.0) + SAME_LEAF_GAP - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # pacing for the daemon's hold-down, not a measurement
        self.last_move_to[new] = time.monotonic()
        d_new = self.daemons.get(new)
        log_start = len(d_new.events) if d_new else 0
        replugged = time.time()
        fab.migrate()
        gone: NeighEvent | None = None
        if not fab.vm_behind_hypervisor:
            # The scenario: the old leaf's withdrawal has reached the new leaf
            # (its zebra deleted the remote entry) before the hypervisor announces.
            gone = self.monitors[new].first(
                lambda e: e.kind == "del" and e.dst == VM_IP4, timeout=5.0, since=replugged
            )
        fab.send_rarps("qemu")
        first = self.rarps.wait_for(
            match=lambda f: f.outgoing and f.timestamp >= replugged, timeout=2.0
        )[0]
        t0 = first.timestamp
        rarp_gap_ms = None if gone is None else _ms(t0, gone.time)
        addresses = [self._address(ip, old, new, t0, replugged) for ip in fab.vm_ips()]
        daemon: dict[str, Any] = {}
        if d_new is not None:
            events = d_new.events[log_start:]
            daemon = {
                "rounds": [e.get("trigger") for e in events if e.get("event") == "announcement"],
                "takeover": [e.get("address") for e in events if e.get("event") == "takeover"],
                "remote_deleted": [
                    e.get("address") for e in events if e.get("event") == "remote-deleted"
                ],
                "confirmed_ms": {
                    str(e.get("address")): e.get("after_ms")
                    for e in events
                    if e.get("event") == "confirmed"
                },
            }
        move = Move(index, old, new, relearned, rarp_gap_ms, addresses, daemon)
        if self.verbose:
            a = next(x for x in addresses if x.ip == self.scenario.measure)
            print(
                f"  {index:3d} {old}->{new} adv {a.adv_ms} installed {a.installed_ms} "
                f"withdrawn {a.withdrawn_ms} mbb {a.mbb}",
                file=sys.stderr,
            )
        return move

    def _address(self, ip: str, old: str, new: str, t0: float, since: float) -> Address:
        fab = self.fabric

        def is_install(e: NeighEvent) -> bool:
            return e.kind == "new" and e.dst == ip and e.remote and e.lladdr == VM_MAC

        installed: float | None
        try:
            installed = self.monitors[old].first(is_install, self.timeout, since=t0).time
        except AssertionError:
            installed = None
        # Restored at ~60 ms, the old leaf's withdrawal (~100 ms) may still be on
        # its way: allow 1 s more. Not restored, --timeout has passed already.
        deadline = time.monotonic() + (1.0 if installed else 0.0)
        while True:
            updates = [u for u in fab.bgp.poll() if u.time >= since and u.mac == VM_MAC]
            withdrawn = _first(u.time for u in updates if u.withdraw and u.ip == ip
                               and u.sender == UNDERLAY[old])  # fmt: skip
            if withdrawn is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        adv = _first(u.time for u in updates if not u.withdraw and u.ip == ip
                     and u.sender == UNDERLAY[new])  # fmt: skip
        mac_only = _first(u.time for u in updates if not u.withdraw and u.ip is None
                          and u.sender == UNDERLAY[new])  # fmt: skip
        restored = installed is not None
        if restored:
            # Cross-check with FRR itself: the old leaf's BGP table has the route.
            restored = any(
                r.mac == VM_MAC and r.ip == ip and r.vtep == VTEP[new]
                for r in fab.macip_routes(old)
            )
        mbb = None
        # Only a withdrawal after the announcement can be preceded by the new
        # route: in ipv4-direct the unplug itself withdraws it, before any RARP.
        if restored and adv is not None and withdrawn is not None and withdrawn > t0:
            mbb = adv < withdrawn
        return Address(
            ip,
            restored,
            _ms(adv, t0),
            _ms(installed, t0),
            _ms(withdrawn, t0),
            mbb,
            _ms(mac_only, t0),
        )


def _first(times: Iterable[float]) -> float | None:
    return min(times, default=None)


def summarise(name: str, measure: str, moves: list[Move]) -> dict[str, Any]:
    rows = [a for m in moves for a in m.addresses if a.ip == measure]
    ok = [a for a in rows if a.restored]

    def stats(
        get: Callable[[Address], float | None], of: list[Address] = ok
    ) -> dict[str, float] | None:
        values = [v for a in of if (v := get(a)) is not None]
        if not values:
            return None
        return {
            "median": round(statistics.median(values), 1),
            "p90": percentile(values, 90),
            "max": max(values),
        }

    return {
        "scenario": name,
        "address": measure,
        "moves": len(rows),
        "restored": len(ok),
        "failed": len(rows) - len(ok),
        "mbb": sum(1 for a in ok if a.mbb),
        "mbb_known": sum(1 for a in ok if a.mbb is not None),
        "relearned": sum(1 for m in moves if m.relearned),
        # The MAC/IP left in a later UPDATE than the MAC-only route: bgpd sent
        # the MAC move before the takeover reached it (no MBB guarantee then).
        "split": sum(1 for a in ok if a.mac_only_ms is not None and a.adv_ms != a.mac_only_ms),
        # How the new leaf's daemon got the address: make-before-break, or the
        # withdrawal path (remote entry deleted, then resolved and probed).
        "takeover": sum(1 for m in moves if measure in m.daemon.get("takeover", [])),
        "remote_deleted": sum(1 for m in moves if measure in m.daemon.get("remote_deleted", [])),
        "adv_ms": stats(lambda a: a.adv_ms),
        "installed_ms": stats(lambda a: a.installed_ms),
        # The old leaf withdraws whether or not the route comes back: every move.
        "withdrawn_ms": stats(lambda a: a.withdrawn_ms, rows),
    }


def table(summaries: list[dict[str, Any]], daemon: bool) -> str:
    def cell(s: dict[str, float] | None) -> str:
        return "-" if s is None else f"{s['median']:.1f} / {s['p90']:.1f} / {s['max']:.1f}"

    def mbb(s: dict[str, Any]) -> str:
        return f"{s['mbb']}/{s['mbb_known']}" if s["mbb_known"] else "n/a"

    head = (
        f"{'scenario':<16} {'address':<17} {'restored':>9} {'failed':>6} "
        f"{'MBB':>7} {'takeover':>8}  {'adv ms (med/p90/max)':<22} "
        f"{'installed ms':<22} {'withdrawn ms':<22}"
    )
    lines = [
        "rarp-reply on both leaves" if daemon else "no daemon",
        head,
        "-" * len(head),
    ]
    for s in summaries:
        lines.append(
            f"{s['scenario']:<16} {s['address']:<17} {s['restored']:>4}/{s['moves']:<4} "
            f"{s['failed']:>6} {mbb(s):>7} {s['takeover'] if daemon else '-':>8}  "
            f"{cell(s['adv_ms']):<22} "
            f"{cell(s['installed_ms']):<22} {cell(s['withdrawn_ms']):<22}"
        )
    return "\n".join(line.rstrip() for line in lines)


def meta(args: argparse.Namespace) -> dict[str, Any]:
    def out(*cmd: str) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
        return proc.stdout.strip()

    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(["fabric_migrations.py", *sys.argv[1:]]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "frr": out("dpkg-query", "-W", "-f", "${Version}", "frr"),
        "commit": out("git", "rev-parse", "--short", "HEAD"),
        # Others edit src/ concurrently: say whether the code measured was committed.
        "src_dirty": bool(out("git", "status", "--porcelain", "--", "src")),
        "options": vars(args),
        "holddown": HOLDDOWN,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--migrations", type=int, default=20, help="per scenario (default 20)")
    p.add_argument(
        "-s", "--scenario", action="append", choices=list(SCENARIOS), help="default: all"
    )
    p.add_argument("--no-daemon", action="store_true", help="FRR alone: the problem")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait per move")
    p.add_argument(
        "--takeover-delay",
        type=float,
        default=TAKEOVER_DELAY,
        help=f"the daemons' takeover-delay (default {TAKEOVER_DELAY:g}: make-before-break)",
    )
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/...)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per move on stderr")
    args = p.parse_args(argv)
    if not netlab.have_root():
        print("fabric_migrations: needs root (network namespaces, FRR)", file=sys.stderr)
        return 1
    netlab.install_signal_cleanup()
    names = args.scenario or list(SCENARIOS)
    started = time.monotonic()
    result: dict[str, Any] = {"meta": meta(args), "scenarios": []}
    summaries = []
    for name in names:
        sc = SCENARIOS[name]
        lab = netlab.Lab("f")
        try:
            t = time.monotonic()
            bench = Bench(
                lab,
                sc,
                not args.no_daemon,
                args.timeout,
                args.verbose,
                takeover_delay=args.takeover_delay,
            )
            print(f"{name}: lab up in {time.monotonic() - t:.1f} s", file=sys.stderr)
            moves = [bench.move(i) for i in range(args.migrations)]
            bench.fabric.close()
        finally:
            lab.close()
        summary = summarise(name, sc.measure, moves)
        summaries.append(summary)
        result["scenarios"].append({"summary": summary, "moves": [asdict(m) for m in moves]})
    result["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    print(table(summaries, not args.no_daemon))
    out = args.out
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        kind = "nodaemon" if args.no_daemon else "daemon"
        out = ROOT / "benchmarks" / "results" / f"fabric-migrations-{kind}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
