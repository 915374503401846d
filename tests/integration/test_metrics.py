"""`rarp-reply --metrics`: the real daemon in a namespace, scraped over HTTP from inside it.

Topology (namespaces made here):

    vm(eth0) ==veth== (swp1) sw:br100 (SVI 192.0.2.252/24, 2001:db8:100::252/64)

The VM's two addresses are on the switch as EVPN's remote entries (noarp
extern_learn): a RARP starts a round, the VM answers the probes, the daemon
takes the entries over and the kernel holds them as local: two confirmations.
"""

from __future__ import annotations

import signal
import socket
import sys
import urllib.request

import pytest

import rarp_replay
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.support.fixtures import VM_MAC, AccessNet
from tests.support.prometheus import samples

pytestmark = pytest.mark.netns

OTHER_MAC = "52:54:00:ff:ff:01"
P = "rarp_replay_"


def scrape(ns: netlab.Netns, address: str = "127.0.0.1:9464") -> dict[str, float]:
    """GET /metrics from inside `ns`: {'name{label="value",...}': value}."""
    # No proxy from the environment: the request must reach the daemon itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with netlab.entered(ns.name), opener.open(f"http://{address}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return samples(text)


def scrape_until(ns: netlab.Netns, series: str, value: float) -> dict[str, float]:
    """Scrape until `series` has `value` (the daemon counts asynchronously); return that scrape."""
    last: dict[str, float] = {}

    def reached() -> bool:
        last.update(scrape(ns))
        return last[series] == value

    netlab.wait_until(reached, what=f"{series} == {value}")
    return last


def test_a_migration_moves_the_counters_and_the_confirmation_histogram(net: AccessNet) -> None:
    d = DaemonProc(net.sw, "--metrics", "127.0.0.1:9464").ready()
    # Listening before "ready" (the log says so in that order), and every
    # series is there from the start.
    events = [e["event"] for e in d.events]
    assert events.index("metrics-listening") < events.index("ready")
    got = scrape(net.sw)
    assert got[f'{P}announcements_total{{trigger="rarp"}}'] == 0
    assert got[f'{P}probes_total{{family="ipv4"}}'] == 0
    assert got[f"{P}confirmation_seconds_count"] == 0
    version = f'python="{sys.version.split()[0]}",version="{rarp_replay.__version__}"'
    assert got[f"{P}build_info{{{version}}}"] == 1
    assert got["process_start_time_seconds"] > 0
    # The mirror: lo, swp1, br100. Its neighbor table also holds multicast
    # entries the kernel creates without notifying anyone, so the gauges are
    # checked by how they move: a binding added, then deleted (a tombstone).
    assert got[f"{P}mirror_links"] == 3
    assert got[f"{P}mirror_neighbors"] >= 2 and got[f"{P}mirror_macs"] >= 1
    base = {k: got[f"{P}mirror_{k}"] for k in ("neighbors", "macs", "tombstones")}

    def mirror_moved(**delta: int) -> bool:
        m = scrape(net.sw)
        return all(m[f"{P}mirror_{k}"] == base[k] + delta.get(k, 0) for k in base)

    extra = ("192.0.2.77", "lladdr", "52:54:00:00:00:77", "dev", "br100", "nud", "permanent")
    net.sw.ip("neigh", "replace", *extra)
    netlab.wait_until(lambda: mirror_moved(neighbors=1, macs=1), what="binding counted")
    net.sw.ip("neigh", "del", "192.0.2.77", "dev", "br100")
    netlab.wait_until(lambda: mirror_moved(tombstones=1), what="tombstone counted")

    # A RARP for a MAC the switch knows nothing about: heard, dropped.
    net.rarp(OTHER_MAC)
    scrape_until(net.sw, f'{P}announcements_dropped_total{{reason="unknown-mac"}}', 1)
    # The VM's RARP: one round, one ARP and one NS, the VM answers both, the
    # daemon takes the remote entries over, the kernel confirms both.
    net.rarp(VM_MAC)
    d.wait_event("confirmed", count=2)
    got = scrape_until(net.sw, f"{P}confirmation_seconds_count", 2)
    expected = {
        f'{P}announcements_total{{trigger="rarp"}}': 2,
        f'{P}announcements_total{{trigger="fdb-move"}}': 0,
        f'{P}announcements_dropped_total{{reason="unknown-mac"}}': 1,
        f'{P}announcements_dropped_total{{reason="duplicate"}}': 0,
        f'{P}rounds_total{{trigger="rarp"}}': 1,
        f'{P}probes_total{{family="ipv4"}}': 1,
        f'{P}probes_total{{family="ipv6"}}': 1,
        f"{P}send_errors_total": 0,
        f"{P}takeovers_total": 2,
        f'{P}confirmations_total{{family="ipv4"}}': 1,
        f'{P}confirmations_total{{family="ipv6"}}': 1,
        f"{P}gave_up_total": 0,
        f"{P}rounds_active": 0,
        f"{P}netlink_errors_total": 0,
        f'{P}confirmation_seconds_bucket{{le="30.0"}}': 2,
        f'{P}confirmation_seconds_bucket{{le="+Inf"}}': 2,
    }
    assert {k: got[k] for k in expected} == expected
    # Each RARP also reached the bridge device itself: a copy, not an announcement.
    assert got[f'{P}announcements_ignored_total{{reason="bridge-copy"}}'] == 2
    # The histogram's sum is the log's confirmation times (ms, rounded to 0.1).
    logged = sum(e["after_ms"] for e in d.of("confirmed")) / 1000
    assert got[f"{P}confirmation_seconds_sum"] == pytest.approx(logged, abs=0.001)

    # The same RARP again, within the hold-down: a duplicate, no new round.
    net.rarp(VM_MAC)
    got = scrape_until(net.sw, f'{P}announcements_dropped_total{{reason="duplicate"}}', 1)
    assert got[f'{P}announcements_total{{trigger="rarp"}}'] == 3
    assert got[f'{P}rounds_total{{trigger="rarp"}}'] == 1
    assert got[f'{P}probes_total{{family="ipv4"}}'] == 1
    assert d.stop() == 0


def test_capture_kernel_drops_are_counted_across_scrapes(net: AccessNet) -> None:
    # The smallest receive buffer (the kernel doubles it: 8 KiB, a handful of
    # frames per capture socket), and the daemon stopped while a burst arrives:
    # the kernel must drop most of it (packet_rcv(): sk_rmem_alloc >= sk_rcvbuf).
    d = DaemonProc(net.sw, "--metrics", "127.0.0.1:9464", "--capture-rcvbuf", "4096").ready()
    received, drops = f"{P}capture_kernel_received_total", f"{P}capture_kernel_drops_total"
    assert scrape(net.sw)[drops] == 0
    burst = 300
    d.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(burst):
            net.rarp(OTHER_MAC)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    first: dict[str, float] = {}

    def settled() -> bool:
        # What the kernel queued (received - dropped) is what the daemon read,
        # once it has read it all: the two sides of one count.
        first.update(scrape(net.sw))
        return first[received] - first[drops] == first[f"{P}captured_frames_total"]

    netlab.wait_until(settled, what="the capture queue drained")
    # Each RARP passes the filter twice (swp1, and br100 when the bridge passes
    # it up): the kernel saw all of them, and dropped most (measured: 580 of 600).
    assert first[received] >= 2 * burst
    assert burst <= first[drops] < first[received]
    # PACKET_STATISTICS resets the kernel's counters on every read: a later scrape
    # must still show the totals (a counter never goes down), plus what came since.
    net.rarp(OTHER_MAC)
    netlab.wait_until(
        lambda: scrape(net.sw)[received] >= first[received] + 2, what="one more RARP counted"
    )
    again = scrape(net.sw)
    assert again[drops] == first[drops]
    assert again[received] - again[drops] == again[f"{P}captured_frames_total"]
    assert d.stop() == 0


def test_ipv6_listen_address_and_bind_failures_are_one_line(lab: netlab.Lab) -> None:
    ns = lab.netns("m")
    d = DaemonProc(ns, "--metrics", "[::1]:9464").ready()
    assert scrape(ns, "[::1]:9464")[f"{P}rounds_active"] == 0

    # A port taken by another program (a second daemon in this namespace would be
    # refused before it opens anything: one daemon per namespace, checked below).
    other = lab.netns("m2")
    holder = other.socket(socket.AF_INET6, socket.SOCK_STREAM)
    holder.bind(("::1", 9464))
    holder.listen()

    def second(address: str, where: netlab.Netns = other) -> tuple[int, list[str]]:
        proc = where.run(sys.executable, "-m", "rarp_replay", "--metrics", address, check=False)
        return proc.returncode, proc.stderr.strip().splitlines()

    assert second("[::1]:9464") == (
        1,
        ["rarp-reply: error: cannot serve metrics on [::1]:9464: Address already in use"],
    )
    holder.close()
    assert second("192.0.2.99:9464") == (
        1,
        ["rarp-reply: error: cannot serve metrics on 192.0.2.99:9464: "
         "Cannot assign requested address"],
    )  # fmt: skip
    # A usage error is exit 2, before anything is opened.
    rc, err = second("[::1]9464")
    assert rc == 2 and err[-1].startswith("rarp-reply: error: argument --metrics: ")
    assert second("[::1]:9464", ns) == (
        1,
        [f"rarp-reply: error: another rarp-reply (PID {d.proc.pid}) already serves this "
         "network namespace"],
    )  # fmt: skip
    # The first daemon was not disturbed.
    assert scrape(ns, "[::1]:9464")[f"{P}rounds_active"] == 0
    assert d.stop() == 0
