"""A forced netlink overrun: the mirror is rebuilt, with nothing stale and nothing lost.

The daemon runs with a 64 KiB notification buffer (--netlink-rcvbuf; the kernel doubles
it) and is stopped (SIGSTOP) while the switch makes thousands of neighbor changes:
bindings added, known bindings deleted, some of the new ones deleted again. The first
notifications fill the buffer, the kernel drops the rest and flags the socket (ENOBUFS).
After SIGCONT the daemon must log `netlink-overrun` and re-dump; more changes land right
as it resumes. Then every MAC is asked about with a RARP: a deleted binding must not be
probed (run with --remember 0: remembered deletions would be probed by design, mirror.py),
and every binding that exists must be.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest

from rarp_replay.macaddr import format_mac
from tests.support import netlab, relab
from tests.support.daemon_proc import DaemonProc

pytestmark = [pytest.mark.netns, pytest.mark.reliability]

KNOWN = 1500  # bindings when the daemon starts; all deleted while it is stopped
ADDED = 2500  # added while it is stopped; the first DOOMED of them deleted again
DOOMED = 500
LATE = 1000  # added as it resumes


def macs(kind: int, n: int, start: int = 0) -> list[bytes]:
    return [netlab.mac_of(kind, i) for i in range(start, start + n)]


def send_rarps(tx: socket.socket, all_macs: list[bytes]) -> None:
    """One RARP per MAC, paced so the daemon's capture buffer never overflows, all from
    the host's own MAC: the bridge learns nothing new, no FDB notification follows (and
    no further overrun re-dumps the tables and hides what the first one left)."""
    src = tx.getsockname()[4]
    for i, mac in enumerate(all_macs):
        tx.send(relab.rarp_from(src, mac))
        if i % 200 == 199:
            time.sleep(0.02)


def announced(d: DaemonProc, mac: bytes, timeout: float = 0.5) -> bool:
    try:
        d.wait_event("announcement", lambda e: e["mac"] == format_mac(mac), timeout=timeout)
    except AssertionError:
        if d.proc.poll() is not None:
            raise
        return False
    return True


def test_overrun_redumps_without_stale_or_lost_bindings(
    lab: netlab.Lab, figures: Callable[[str], None]
) -> None:
    s = relab.Switch.build(lab, ports=1)
    known = macs(0xA0, KNOWN)
    added = macs(0xA1, ADDED)
    late = macs(0xA2, LATE)
    s.batch(relab.Switch.remote_line(relab.v4(i), m) for i, m in enumerate(known))
    d = DaemonProc(s.sw, "--netlink-rcvbuf", "64K", "--remember", "0", "--holddown", "0").ready()
    pid = d.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # New bindings first, so the notifications that fit in the buffer (and are read
        # after the re-dump) announce entries that are deleted again further on.
        changes = [relab.Switch.remote_line(relab.v6(i), m, op="add") for i, m in enumerate(added)]
        changes += [f"neigh del {relab.v4(i)} dev {relab.SVI}" for i in range(KNOWN)]
        changes += [f"neigh del {relab.v6(i)} dev {relab.SVI}" for i in range(DOOMED)]
        s.batch(changes)
        late_lines = [
            relab.Switch.remote_line(relab.v6(ADDED + i), m, op="add") for i, m in enumerate(late)
        ]
        # More changes while the daemon catches up: they must not fall into a gap.
        worker = threading.Thread(target=s.batch, args=(late_lines,))
        worker.start()
    finally:
        os.kill(pid, signal.SIGCONT)
    worker.join()
    overruns = d.wait_event("netlink-overrun", timeout=10)
    assert all(o["action"] == "re-dump" for o in overruns)

    gone = known + added[:DOOMED]
    live = added[DOOMED:] + late
    tx = relab.rarp_sender(s.hosts["h1"])
    send_rarps(tx, gone + live)
    # The marker: a binding made last, asked about last; once it is announced, every
    # RARP before it was handled (all come from one port, so they share one capture
    # socket of the fanout group, which is read in order).
    marker = netlab.mac_of(0xA3, 0)
    s.batch([relab.Switch.remote_line(relab.v4(KNOWN + 1), marker)])
    netlab.wait_until(lambda: marker.hex(":") in s.sw.ip("neigh", "show", "dev", relab.SVI).stdout)
    attempts = 0
    deadline = time.monotonic() + 20
    while not announced(d, marker) and time.monotonic() < deadline:
        tx.send(
            relab.rarp_from(tx.getsockname()[4], marker)
        )  # again: the first may beat the binding
        attempts += 1
    tx.close()
    assert announced(d, marker)
    assert d.stop() == 0
    [stopped] = d.of("stopped")

    with_bindings = {
        e["mac"] for e in d.of("announcement") if e.get("bindings") and e.get("probes")
    }
    stale = sorted(m for m in map(format_mac, gone) if m in with_bindings)
    lost = sorted(m for m in map(format_mac, live) if m not in with_bindings)
    assert not stale, f"{len(stale)} deleted bindings still probed, e.g. {stale[:3]}"
    assert not lost, f"{len(lost)} bindings never probed, e.g. {lost[:3]}"
    # Every RARP for a deleted MAC was heard (none lost in a buffer: the check above is
    # not vacuous) and found no binding; the marker's first RARPs may have beaten its own.
    assert len(gone) <= stopped["dropped_unknown-mac"] <= len(gone) + attempts
    assert stopped["netlink_redumps"] >= 1
    figures(
        f"netlink overrun: {len(changes):,} changes while stopped + {LATE:,} on resume, "
        f"{stopped['netlink_redumps']} re-dump(s), the first after discarding "
        f"{overruns[0]['discarded']:,} queued bytes; {len(gone):,} deleted MACs not probed, "
        f"{len(live):,} live MACs probed"
    )
