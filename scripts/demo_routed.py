"""`scripts/demo --routed`: clients in another subnet ping a silent VM across its live
migration, in a three-leaf EVPN fabric with an anycast gateway, without and with rarp-reply.

The lab is tests/support/irbfabric.py, layout "traditional" (asymmetric IRB: per-VNI bridges
carrying the anycast gateway's MAC and address on every leaf), and the measurement is its
`measure_migration` (downtime as tests/support/pinger.py defines it: from the first RARP to
the first echo reply). Each part builds the lab afresh, so both show the same move, hv1 ->
hv2 (leaf1 -> leaf2), from the same state: the fabric knows the VM behind leaf1.

  1. Without rarp-reply. leaf1 withdraws the VM's MAC/IP route, leaf3's zebra deletes its
     entry for the VM, and leaf3's own ARP request is answered to the anycast MAC, which
     leaf2 consumes: client3 (behind leaf3) never gets the VM back. client1 (behind the old
     leaf) does, through leaf1's leftover entry.
  2. With rarp-reply on every leaf: leaf2's daemon hears the RARP, probes the VM and makes
     leaf2 learn it locally; leaf2 advertises the MAC/IP route and both clients get the VM
     back within ~100 ms.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from tests.support import netlab
from tests.support.irbfabric import (
    ANYCAST_MAC,
    CLIENTS,
    VM_IP4,
    VM_IP6,
    VM_MAC,
    VM_NET,
    VTEP,
    IrbFabric,
    Migration,
)
from tests.support.pinger import Pinger

# Seconds from the first RARP for the clients to get the VM back (measure_migration's
# timeout), then seconds of pings that must still be answered (its `settle`): longer
# without the daemon, to watch the gap grow.
TIMEOUT = 3.0
SETTLE = {False: 3.0, True: 1.0}  # by "with the daemon"
MARK = 0.1  # seconds of pings per mark in the strips
PER_LINE = 5  # marks per printed line (one line every 0.5 s)
# Seconds an echo's reply is waited for before its mark is printed: the lab's round trip
# is under 1 ms when the path is there.
REPLY = 0.05
FAMILY = {"v4": "IPv4", "v6": "IPv6"}
LEAF_OF_VTEP = {v: k for k, v in VTEP.items()}
# The daemon's events shown for a migration (the debug-level rest is per-frame detail).
SHOWN = ("announcement", "probe", "takeover-held", "takeover", "remote-deleted", "confirmed",
         "gave-up")  # fmt: skip
# Fields left out of those lines: the VM's MAC (every line has it) and per-frame detail.
HIDDEN_FIELDS = ("ts", "level", "event", "at_ms", "netns", "mac", "source", "egress")
SPAN, CELL = 22, 14  # column widths of the strips


def say(text: str = "") -> None:
    print(text, flush=True)


def ms(seconds: float, sign: str = "") -> str:
    return f"{seconds * 1e3:{sign}.0f} ms"


class PingStrips:
    """Every 0.5 s, a line of marks per client and family, one per 100 ms after the first
    RARP, by the echoes sent in it: "#" all answered, "+" some, "." none (the gap growing)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pingers: dict[str, Pinger] = {}
        self._t0 = 0.0
        self._next = 0  # the next line's index (line k covers t0 + k*0.5 s .. +0.5 s)
        self._end = float("inf")  # the last echo's time, once the pingers stopped

    def start(self, pingers: dict[str, Pinger], moved: float, t0: float) -> None:
        """measure_migration's `on_move`: print from the line where the cable moved."""
        self._pingers = dict(sorted(pingers.items()))
        self._t0 = t0
        self._next = int((moved - t0) // (MARK * PER_LINE))
        heads = "".join(f"{k.split('/')[0]} {FAMILY[k.split('/')[1]]:<{CELL - 8}}"
                        for k in self._pingers)  # fmt: skip
        say(f"   the VM's cable moved at {ms(moved - t0, '+')}, its first RARP is 0")
        say(f"   {'ms after the 1st RARP':<{SPAN}}{heads}".rstrip())
        self._thread = threading.Thread(target=self._run, daemon=True, name="ping strips")
        self._thread.start()

    def _line_end(self, k: int) -> float:
        return self._t0 + (k + 1) * MARK * PER_LINE

    def _run(self) -> None:
        while not self._stop.wait(max(0.0, self._line_end(self._next) + REPLY - time.time())):
            self._print(self._next)
            self._next += 1

    def finish(self) -> float:
        """The pingers stopped: print the lines still due, up to the last echo sent; return
        that echo's time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        last = max((t for p in self._pingers.values() for _s, t in p.sent), default=0.0)
        self._end = last - REPLY  # later echoes' replies may have come after the socket closed
        while self._line_end(self._next - 1) < last:
            self._print(self._next)
            self._next += 1
        return last

    def _print(self, k: int) -> None:
        start = self._t0 + k * MARK * PER_LINE
        cells = []
        for p in self._pingers.values():
            answered = {seq for seq, _t in p.matching()}
            sent = [(seq, t) for seq, t in list(p.sent) if t < self._end]
            marks = ""
            for i in range(PER_LINE):
                a, b = start + i * MARK, start + (i + 1) * MARK
                got = [seq in answered for seq, t in sent if a <= t < b]
                marks += "#" if got and all(got) else "+" if any(got) else "." if got else " "
            cells.append(f"{marks:<{CELL}}")
        lo, hi = 1e3 * (start - self._t0), 1e3 * (start + MARK * PER_LINE - self._t0)
        say(f"   {f'{lo:6.0f} .. {hi:5.0f}':<{SPAN}}" + "".join(cells).rstrip())


def client_lines(m: Migration, end: float) -> list[str]:
    """Per client and family: restored or not, the downtime and the longest gap."""
    out = []
    for key, o in sorted(m.clients.items()):
        name, fam = key.split("/")
        where = f"{name} ({CLIENTS[name].leaf}) {FAMILY[fam]}:"
        if o.restored:
            assert o.downtime is not None
            what = f"restored, downtime {ms(o.downtime)}, longest gap {ms(o.longest_gap)}"
        else:
            last = "none" if o.last_reply is None else ms(o.last_reply, "+")
            what = f"NOT restored after {end - m.t0:.1f} s (last echo reply {last})"
        out.append(f"   {where:<22}{what}")
    return out


def bgp_line(m: Migration) -> str:
    """What leaf3 heard, and what it holds now."""
    new = ("never advertises the VM's MAC/IP" if m.new_route_at is None
           else f"advertises the VM's MAC/IP at {ms(m.new_route_at, '+')}")  # fmt: skip
    gone = "never" if m.withdrawal_at is None else f"at {ms(m.withdrawal_at, '+')}"
    return f"   BGP seen at leaf3: {m.new} {new}, {m.old} withdraws its own {gone}"


def leaf3_view(m: Migration) -> str:
    routes = [r for r in m.routes_leaf3 if r.ip == VM_IP4]
    if not routes:
        return f"   leaf3 now holds no MAC/IP route for {VM_IP4} (the MAC alone moved)"
    return "   leaf3 now routes " + ", ".join(
        f"{VM_IP4} via {LEAF_OF_VTEP.get(r.vtep, r.vtep)} (MAC mobility seq {r.seq})"
        for r in routes
    )


def event_time(e: dict[str, Any]) -> float:
    return datetime.strptime(str(e["ts"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def daemon_lines(fab: IrbFabric, m: Migration) -> list[str]:
    """The new leaf's daemon log for this migration, ms after the first RARP."""
    new, old = fab.daemons[m.new], fab.daemons[m.old]
    out = [f"   rarp-reply on {m.new} (the new leaf), its log:"]
    for e in new.events:
        if e.get("event") in SHOWN and event_time(e) >= m.moved:
            fields = " ".join(
                f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in e.items()
                if k not in HIDDEN_FIELDS
            )
            out.append(f"   {ms(event_time(e) - m.t0, '+'):>8}  {e['event']} {fields}")
    dropped = [e for e in old.of("dropped") if e.get("reason") == "fabric-port"]
    out.append(f"   rarp-reply on {m.old} (the old leaf): {len(dropped)} RARPs heard over VXLAN, "
               f"ignored; {m.old_leaf_probes} probes sent")  # fmt: skip
    return out


def part(title: str, daemon: bool) -> tuple[Migration, list[str]]:
    """Build the lab, move the VM once (with rarp-reply on every leaf if `daemon`), and
    print what the clients got; return the migration and the daemons' lines."""
    started = time.monotonic()
    lab = netlab.Lab("demo")
    fab: IrbFabric | None = None
    try:
        fab = IrbFabric(lab, "traditional")
        if daemon:
            fab.start_daemons()
        say(f"{title}  (lab up in {time.monotonic() - started:.1f} s)")
        strips = PingStrips()
        try:
            # steady: every client reaches the VM before the move, and leaf3 has its routes.
            m = fab.measure_migration(timeout=TIMEOUT, settle=SETTLE[daemon], on_move=strips.start)
        finally:
            end = strips.finish()  # stops its thread, whatever happened
        lines = [*client_lines(m, end), bgp_line(m), leaf3_view(m)]
        if daemon:
            lines += daemon_lines(fab, m)
        return m, lines
    finally:
        if fab is not None:
            fab.close()
        lab.close()


def main() -> int:
    started = time.monotonic()
    c1, c3 = CLIENTS["client1"], CLIENTS["client3"]
    say("rarp-replay demo, routed: clients in another subnet ping a silent VM across its")
    say("live migration (three FRR leaves, asymmetric IRB, namespaces rrt*demo-*)")
    say(f"  leaf1..3 (VTEPs {VTEP['leaf1']}..3), each the anycast gateway {VM_NET.v4(1)} "
        f"/ {ANYCAST_MAC}")  # fmt: skip
    say(f"  VM {VM_MAC} {VM_IP4} {VM_IP6} (VLAN 10) on hv1 -> leaf1: answers, never speaks")
    say(f"  client1 {c1.ips[0]} behind {c1.leaf}, client3 {c3.ips[0]} behind {c3.leaf} "
        "(VLAN 20): echo every 10 ms")  # fmt: skip
    say("  one mark per 100 ms of echoes: # all answered, + some, . none (blank: not pinging);")
    say("  downtime: from the first RARP to the first echo reply")
    say()
    lost, lines = part("1. WITHOUT rarp-reply: the VM moves hv1 -> hv2 (leaf1 -> leaf2), QEMU "
                       "sends 5 RARPs", daemon=False)  # fmt: skip
    for line in lines:
        say(line)
    say()
    fixed, lines = part("2. Same lab rebuilt, rarp-reply on every leaf, the same move",
                        daemon=True)  # fmt: skip
    for line in lines:
        say(line)
    say()
    reproduced = not lost.clients["client3/v4"].restored
    restored = all(o.restored for o in fixed.clients.values())
    say(f"done in {time.monotonic() - started:.1f} s: without rarp-reply client3 "
        f"{'lost the VM' if reproduced else 'got the VM back (unexpected)'}; with it every "
        f"client {'got it back' if restored else 'did NOT get it back'}")  # fmt: skip
    return 0 if reproduced and restored else 1
