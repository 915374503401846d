"""1,000 interface create/delete cycles on the switch while the daemon runs.

Each cycle creates a port, enslaves it to the bridge, brings it up and deletes it again:
veth pairs (an access port) and macvlans stacked on the bridge (an anycast-gateway
interface), alternately, 50 at a time (one `ip -batch` creates them, one request deletes
them). The daemon follows every
link, address and FDB notification in its mirror. Afterwards it holds no more file
descriptors than before (its capture socket is unbound and its sender picks the egress by
index: no socket per interface), its RSS has not grown beyond a small ceiling, and a port
created after the churn is served at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.macaddr import format_mac
from tests.support import netlab, relab
from tests.support.daemon_proc import DaemonProc

pytestmark = [pytest.mark.netns, pytest.mark.reliability]

CYCLES = 1000
WAVE = 50  # interfaces alive at once
GROUP = 42  # link group of the churned interfaces
# What may legitimately grow: nothing the churn leaves (every link, its addresses and its
# FDB entries are removed from the mirror with it) but interpreter and allocator slack and
# the caches rebuilt on each link change. A leak of one Link record per cycle (~0.5 KiB
# with its name and attributes) would take ~0.5 MiB; of the mirror's per-link dicts or an
# open socket per interface (~4 KiB of buffers each) several MiB. Measured: ~0.1 MiB.
RSS_GROWTH_CEILING_KIB = 4 * 1024


def wave(start: int) -> list[str]:
    """WAVE interfaces, each created, enslaved or stacked, brought up. All in one link
    group, so `link del group` removes the wave in one request (the kernel unregisters
    them together: one RCU grace period instead of one per device)."""
    create: list[str] = []
    for i in range(start, start + WAVE):
        if i % 2:
            create += [
                f"link add ch{i} group {GROUP} type veth peer name chp{i}",
                f"link set ch{i} master {relab.SVI}",
                f"link set ch{i} up",
            ]
        else:
            create += [
                f"link add ch{i} group {GROUP} link {relab.SVI} type macvlan mode private",
                f"link set ch{i} up",
            ]
    return create


def test_interface_churn_leaks_nothing_and_new_port_is_served(
    lab: netlab.Lab, figures: Callable[[str], None]
) -> None:
    s = relab.Switch.build(lab, ports=1)
    vm = netlab.mac_of(0xC4, 1)
    s.batch([relab.Switch.remote_line(relab.v4(40), vm)])
    d = DaemonProc(s.sw).ready()
    pid = d.proc.pid
    fds_before = relab.fd_count(pid)
    rss_before = relab.status_kib(pid)
    sampler = relab.Sampler(pid)
    started = time.monotonic()
    for start in range(0, CYCLES, WAVE):
        s.batch(wave(start))
        s.sw.ip("link", "del", "group", str(GROUP))  # a veth takes its peer with it
    churned = time.monotonic() - started

    # A port made after the churn, with the VM behind it: served at once.
    s.add_host("h9", "swp9")
    vm_side = relab.probe_tap(s.hosts["h9"], "eth0", outgoing=False)
    tx = relab.rarp_sender(s.hosts["h9"])
    served_at = None
    deadline = time.monotonic() + 10
    while served_at is None and time.monotonic() < deadline:
        tx.send(rarp_request_frame(vm))
        try:
            vm_side.wait_for(match=lambda f: f[0:6] == vm, timeout=0.5)
            served_at = time.monotonic()
        except AssertionError:
            continue  # the RARP beat the daemon to the new port's link notification
    tx.close()
    vm_side.close()
    assert served_at is not None, "no probe on the port created after the churn"
    [line] = [e for e in d.of("announcement") if e["mac"] == format_mac(vm)]
    assert line["port"] == "swp9"

    rss = sampler.stop()
    fds_after = relab.fd_count(pid)
    rss_after = relab.status_kib(pid)
    assert fds_after <= fds_before, (fds_before, fds_after)
    assert rss_after - rss_before < RSS_GROWTH_CEILING_KIB, (rss_before, rss_after)
    assert d.stop() == 0
    links = s.sw.ip("-o", "link", "show").stdout.count("\n")
    figures(
        f"interface churn: {CYCLES} create/delete cycles in {churned:.1f} s "
        f"({CYCLES / churned:.0f}/s); fds {fds_before} -> {fds_after}; RSS {rss_before} -> "
        f"{rss_after} KiB (peak {max(rss)}); new port served "
        f"{served_at - started - churned:.2f} s after the churn; {links} links left"
    )
