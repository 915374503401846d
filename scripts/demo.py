#!/usr/bin/env python3
"""The README's demo: a silent VM live-migrates in an EVPN fabric, without and with rarp-reply.

`--routed` shows what a client in another subnet feels instead (scripts/demo_routed.py:
three leaves, an anycast gateway, the clients' pings); what follows is the default.

Run as root (`sudo bash scripts/demo` installs what is needed first). Everything
happens in network namespaces named rrt<run-id>-*: two FRR leaves (zebra +
bgpd, iBGP EVPN, VNI 100, ARP suppression), a hypervisor bridge under each, and
a VM that says nothing by itself. The lab is tests/support/fabric.py; it is removed
when the demo ends, however it ends.

  1. The VM moves from hv1 to hv2 and the hypervisor sends QEMU's 5 RARPs.
     Without help the fabric learns where the MAC is, but the MAC/IP route is
     withdrawn and nobody advertises it again.
  2. The VM talks once, so the fabric knows it again; rarp-reply starts on both
     leaves; the VM moves back. The timeline shows what happened, in ms after
     the first RARP, from kernel timestamps (captures, rtnetlink listeners).
     The daemons run with --takeover-delay 0 (make-before-break: the new route
     before the old leaf's withdrawal), which this two-leaf lab shows best; the
     default holds the takeover for that withdrawal (README, "Make-before-break
     and FRR versions").
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from scripts import demo_routed
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.support.fabric import (
    OTHER,
    SVI,
    VM_IP4,
    VM_MAC,
    VTEP,
    BgpWatch,
    EvpnFabric,
    NeighEvent,
)

WATCH = 2.0  # seconds to let the fabric settle after a move before looking
ARP, RARP = b"\x08\x06", b"\x80\x35"
VM_MAC_RAW = bytes.fromhex(VM_MAC.replace(":", ""))
LEAF_OF_VTEP = {v: k for k, v in VTEP.items()}
MBB = ("--takeover-delay", "0")  # make-before-break, not the default (see the docstring)


class Line(NamedTuple):
    time: float
    where: str
    what: str


def say(text: str = "") -> None:
    print(text, flush=True)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def bgp_view(fab: EvpnFabric, leaf: str) -> list[str]:
    """What `leaf`'s BGP EVPN table holds for the VM, one line per route."""
    routes = sorted(
        (r for r in fab.macip_routes(leaf) if r.mac == VM_MAC),
        key=lambda r: (r.ip is not None, r.vtep),
    )
    lines = []
    for r in routes:
        what = f"MAC/IP {r.ip}" if r.ip else "MAC only"
        origin = "local" if r.local else f"from {LEAF_OF_VTEP.get(r.vtep, r.vtep)}"
        lines.append(f"{what:<20} {origin:<11} (MAC mobility seq {r.seq})")
    if not any(r.ip == VM_IP4 for r in routes):
        lines.append(f"{'MAC/IP ' + VM_IP4:<20} -- no route --")
    return lines


def show_tables(fab: EvpnFabric, old: str, new: str) -> None:
    for leaf, role in ((old, "old"), (new, "new")):
        for i, line in enumerate(bgp_view(fab, leaf)):
            head = f"{leaf} ({role})" if i == 0 else ""
            say(f"    {head:<13} {line}")


def arp_frames(fab: EvpnFabric) -> netlab.Capture:
    """The VM's side of the wire: RARPs it announces, ARP requests it gets, its answers."""
    return fab.vm.capture("eth0", lambda d: d[12:14] in (ARP, RARP))


def timeline(
    fab: EvpnFabric,
    *,
    at_vm: netlab.Capture,
    daemons: dict[str, DaemonProc] | None,
    old: str,
    new: str,
    since: float,
) -> tuple[float, list[Line]]:
    """Events of one move, from kernel timestamps; (time of the first RARP, lines)."""
    rarps = [f for f in at_vm.matching() if f.outgoing and f.data[12:14] == RARP]
    rarps = [f for f in rarps if f.timestamp >= since]
    t0 = rarps[0].timestamp
    hv = fab.vm_location
    out = [Line(f.timestamp, hv, f"RARP {i}/{len(rarps)} for the VM's MAC (broadcast)")
           for i, f in enumerate(rarps, 1)]  # fmt: skip
    svi_macs = {bytes.fromhex(mac.replace(":", "")): leaf for leaf, (_, _, mac) in SVI.items()}
    for f in at_vm.matching():
        d = f.data
        if f.timestamp < t0 or d[12:14] != ARP:
            continue
        if not f.outgoing and d[20:22] == b"\x00\x01" and d[0:6] == VM_MAC_RAW:
            sender = svi_macs.get(d[6:12], "?")
            out.append(Line(f.timestamp, "vm", f"ARP request from {sender}'s SVI, unicast"))
        elif f.outgoing and d[20:22] == b"\x00\x02":
            to = svi_macs.get(d[0:6], "?")
            out.append(Line(f.timestamp, "vm", f"ARP reply to {to}: {VM_IP4} is-at {VM_MAC}"))
    took_over = daemons is not None and any(
        e.get("address") == VM_IP4 for e in daemons[new].of("takeover")
    )

    def first(leaf: str, match: Callable[[NeighEvent], bool]) -> NeighEvent | None:
        found = fab.monitor(leaf).matching(lambda e: e.time >= t0 and match(e))
        return found[0] if found else None

    local = first(new, lambda e: e.kind == "new" and e.dst == VM_IP4 and not e.remote
                  and e.lladdr == VM_MAC and e.states in ("REACHABLE", "STALE"))  # fmt: skip
    if local is not None:
        how = "rarp-reply replaced zebra's remote entry" if took_over else "learned from the VM"
        out.append(Line(local.time, new, f"kernel: {VM_IP4} local, {local.states} ({how})"))
    deleted = first(new, lambda e: e.kind == "del" and e.dst == VM_IP4)
    if deleted is not None:
        out.append(Line(deleted.time, new, f"kernel: zebra deletes its remote entry for {VM_IP4}"))
    installed = first(old, lambda e: e.kind == "new" and e.dst == VM_IP4 and e.remote)
    if installed is not None:
        out.append(Line(installed.time, old, f"kernel: {VM_IP4} installed by zebra, "
                                             f"remote via {VTEP[new]} ({new})"))  # fmt: skip
    # One line per UPDATE message (the NLRIs of one message share its timestamp):
    # whether the MAC/IP rode with the MAC-only route is the interesting part.
    messages: dict[tuple[float, str, bool], list[str]] = {}
    seq: dict[tuple[float, str, bool], int | None] = {}
    for u in fab.bgp.poll():
        if u.time < t0 or u.mac != VM_MAC:
            continue
        key = (u.time, BgpWatch.leaf_of(u.sender), u.withdraw)
        messages.setdefault(key, []).append(f"MAC/IP {u.ip}" if u.ip else "MAC")
        seq[key] = u.seq
    for key, nlri in messages.items():
        when, leaf, withdraw = key
        what = " + ".join(sorted(nlri, key=len))
        if withdraw:
            out.append(Line(when, leaf, f"BGP: withdraws {what}"))
        else:
            out.append(Line(when, leaf, f"BGP: advertises {what} (MAC mobility seq {seq[key]})"))
    return t0, sorted(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--routed",
        action="store_true",
        help="three leaves, anycast gateway, clients in another subnet pinging the VM "
        "(scripts/demo_routed.py)",
    )
    args = p.parse_args(argv)
    if not netlab.have_root():
        say("demo: needs root (it builds network namespaces): sudo bash scripts/demo")
        return 1
    if shutil.which("vtysh") is None or not Path("/usr/lib/frr/zebra").exists():
        say("demo: needs FRR (apt-get install frr); scripts/setup-env installs it")
        return 1
    netlab.install_signal_cleanup()  # SIGTERM unwinds through the labs' finally blocks
    return demo_routed.main() if args.routed else two_leaves()


def two_leaves() -> int:
    started = time.monotonic()
    lab = netlab.Lab("demo")
    fab: EvpnFabric | None = None
    try:
        say("rarp-replay demo: a silent VM live-migrates between two EVPN-VXLAN leaves (FRR)")
        say(f"  namespaces {lab.prefix}-*, removed at the end")
        fab = EvpnFabric(lab)
        say(f"  leaf1 VTEP {VTEP['leaf1']}, leaf2 VTEP {VTEP['leaf2']}; BGP EVPN up "
            f"in {time.monotonic() - started:.1f} s")  # fmt: skip
        say(f"  VM {VM_MAC} {VM_IP4} behind hv1 -> leaf1; it answers ARP, never speaks first")
        fab.learn_vm()
        say("  The VM talks once: leaf1 learns it, leaf2 installs the MAC/IP route from leaf1.")
        for leaf in ("leaf1", "leaf2"):
            fab.monitor(leaf)
        at_vm = arp_frames(fab)

        say()
        say("1. Migration hv1 -> hv2 WITHOUT rarp-reply (the hypervisor sends 5 RARPs)")
        since = time.time()
        fab.migrate()
        t0 = fab.send_rarps("qemu")
        # Let the withdrawal and anything that might follow it happen.
        time.sleep(max(0.0, t0 + WATCH - time.time()))
        _, lines = timeline(fab, at_vm=at_vm, daemons=None, old="leaf1", new="leaf2", since=since)
        say("   timeline, ms after the first RARP (RARPs 2-5 not shown):")
        for line in lines:
            if not line.what.startswith("RARP") or line.what.startswith("RARP 1/"):
                say(f"   {1000 * (line.time - lines[0].time):8.1f}  {line.where:<6} {line.what}")
        say(f"   BGP tables {WATCH:.0f} s after the first RARP:")
        show_tables(fab, "leaf1", "leaf2")
        lost = not any(r.ip == VM_IP4 for leaf in ("leaf1", "leaf2")
                       for r in fab.macip_routes(leaf))  # fmt: skip
        if lost:
            say(f"   => {VM_IP4} has no MAC/IP route anywhere: routed traffic to the VM is lost")
            say("      until the VM happens to speak on its own.")
        else:
            say("   => unexpected: a MAC/IP route for the VM exists (see the tables above)")

        say()
        say("2. The VM talks once (the fabric relearns it on leaf2), rarp-reply starts on both")
        say("   leaves (--takeover-delay 0: make-before-break), and the VM migrates back,")
        say("   hv2 -> hv1, WITH rarp-reply")
        fab.learn_vm()
        daemons = fab.start_daemons(*MBB)
        old, new = fab.vm_leaf, OTHER[fab.vm_leaf]
        since = time.time()
        fab.migrate()
        fab.send_rarps("qemu")
        try:
            fab.wait_macip(old, VM_IP4, vtep=VTEP[new], timeout=5.0)
            restored = True
        except AssertionError:
            restored = False
        # The old leaf's withdrawal follows ~50 ms after it hears the new route;
        # wait for it (bounded) so that the timeline is complete.
        netlab.wait_until(
            lambda: [u for u in fab.bgp.poll() if u.time >= since and u.withdraw],
            timeout=2.0,
            what="the old leaf's withdrawal",
        )
        t0, lines = timeline(fab, at_vm=at_vm, daemons=daemons, old=old, new=new, since=since)
        say("   timeline, ms after the first RARP:")
        for line in lines:
            say(f"   {1000 * (line.time - t0):8.1f}  {line.where:<6} {line.what}")
        dropped = [e for e in daemons[old].of("dropped") if e.get("reason") == "fabric-port"]
        rounds = daemons[new].of("announcement")
        say(f"   rarp-reply on {new}: {len(rounds)} round (trigger {rounds[0].get('trigger')}), "
            f"{plural(len(daemons[new].of('probe')), 'probe')}, "
            f"{plural(len(daemons[new].of('takeover')), 'takeover')}" if rounds
            else f"   rarp-reply on {new}: no round")  # fmt: skip
        say(f"   rarp-reply on {old}: {plural(len(dropped), 'RARP')} arrived over VXLAN, ignored; "
            f"{plural(len(daemons[old].of('probe')), 'probe')} sent")  # fmt: skip
        time.sleep(max(0.0, t0 + 0.5 - time.time()))  # let late updates land before showing
        say("   BGP tables now:")
        show_tables(fab, old, new)
        if restored:
            installed = fab.monitor(old).matching(
                lambda e: e.time >= t0 and e.dst == VM_IP4 and e.remote
            )
            withdrawn = [u.time for u in fab.bgp.poll()
                         if u.time >= t0 and u.withdraw and u.ip == VM_IP4]  # fmt: skip
            msg = f"   => restored: {old} reaches {VM_IP4} via {new}"
            if installed:
                msg += f" {1000 * (installed[0].time - t0):.0f} ms after the first RARP"
                if withdrawn and installed[0].time < withdrawn[0]:
                    msg += f",\n      before {old} withdrew its own route (make-before-break)"
            say(msg + ".")
        else:
            say(f"   => NOT restored within 5 s: see `rarp-reply` on {new}:")
            for raw in daemons[new].raw[-15:]:
                say(f"      {raw.rstrip()}")
        say()
        say(f"done in {time.monotonic() - started:.1f} s")
        return 0 if restored and lost else 1
    finally:
        if fab is not None:
            fab.close()
        lab.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the lab is gone already (finally in main)
        print("\ndemo: interrupted, namespaces removed", file=sys.stderr)
        sys.exit(130)
