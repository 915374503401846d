"""`rarp-replyctl` against a real daemon in namespaces; SIGUSR1; one daemon per namespace.

Topology: netlab.access_switch (a VM behind swp1 of br100), the VM's bindings
installed as EVPN's remote entries, so a RARP gives a round with a takeover.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import pytest
from scapy.layers.inet6 import ICMPv6ND_NS
from scapy.layers.l2 import ARP, Ether

from rarp_replay import controlsock
from rarp_replay.netlink.socket import RtnlSocket
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.support.fixtures import SVI_MAC, VM_MAC, VM_V4, VM_V6, AccessNet

pytestmark = pytest.mark.netns

GHOST_MAC = "52:54:00:00:00:99"  # has a binding, but no VM ever answers for it
GHOST_V4 = "192.0.2.99"

# The documented --json schema (README, "rarp-replyctl"): the keys of each document.
STATUS_KEYS = {
    "command", "version", "pid", "uptime_s", "netns", "settings", "counters",
    "rounds_in_flight", "capture", "mirror", "dry_run",
}  # fmt: skip
ROUND_KEYS = {"mac", "domain", "trigger", "age_ms", "targets"}
TARGET_KEYS = {
    "address", "interface", "state", "probes", "resolves", "took_over", "confirmed_ms",
}  # fmt: skip
SHOW_MAC_KEYS = {"mac", "bindings", "fdb", "rounds_in_flight", "history"}
BINDING_KEYS = {"address", "interface", "state", "remote", "protocol", "live"}
FDB_KEYS = {"bridge", "vlan", "port", "remote", "domain", "port_role"}
HISTORY_KEYS = {"domain", "trigger", "port", "ago_s", "bindings", "outcome", "timeline"}


@dataclass
class CtlNet(AccessNet):
    """The shared access switch, plus a ghost MAC whose round stays open (nobody answers)."""

    def ctl(self, *args: str, ns: netlab.Netns | None = None) -> subprocess.CompletedProcess[str]:
        """rarp-replyctl, run inside `ns` (default: the switch's namespace)."""
        return (ns or self.sw).run(
            sys.executable, "-m", "rarp_replay.cli.rarp_replyctl", *args, check=False, timeout=20
        )

    def ctl_json(self, *args: str) -> dict[str, Any]:
        r = self.ctl("--json", *args)
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc


@pytest.fixture
def net(net: AccessNet) -> CtlNet:
    net.sw.remote_neighbor(GHOST_V4, GHOST_MAC)
    return CtlNet(net.sw, net.vm, net.vm_tx)


def is_probe(f: netlab.Frame, dst: str = VM_MAC) -> bool:
    p = Ether(f.data)
    return not f.outgoing and p.src == SVI_MAC and p.dst == dst and (ARP in p or ICMPv6ND_NS in p)


def test_every_subcommand_in_text_and_json(net: CtlNet) -> None:
    d = DaemonProc(net.sw).ready()
    [listening] = d.of("control-listening")
    path = listening["path"]
    # Named after the namespace (ip netns exec NAME: the same as --netns NAME), and
    # readable by the daemon's user and group only.
    assert path == f"/run/rarp-replay/{net.sw.name}.sock"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    net.rarp()
    d.wait_event("confirmed", count=2)
    net.rarp(GHOST_MAC)  # a round that stays open: nobody answers for the ghost
    d.wait_event("announcement", lambda e: e["mac"] == GHOST_MAC)

    status = net.ctl_json("status")
    assert set(status) == STATUS_KEYS
    assert status["pid"] == d.proc.pid and status["netns"] == net.sw.name
    assert status["counters"]["takeovers"] == 2 and status["counters"]["confirmed"] == 2
    assert status["rounds_in_flight"] == 1
    assert status["capture"]["sockets"] == 8 and status["capture"]["received"] >= 2
    assert status["capture"]["dropped"] == 0
    assert status["settings"]["holddown"] == 5.0 and status["settings"]["control-socket"] is None
    text = net.ctl("status")
    assert text.returncode == 0 and f"pid {d.proc.pid}" in text.stdout
    assert "takeovers 2" in text.stdout

    rounds = net.ctl_json("rounds")
    [r] = rounds["rounds"]
    assert set(r) == ROUND_KEYS and r["mac"] == GHOST_MAC and r["trigger"] == "rarp"
    [t] = r["targets"]
    assert set(t) == TARGET_KEYS
    assert t["address"] == GHOST_V4 and t["state"] == "remote" and t["probes"] == 1
    assert GHOST_V4 in net.ctl("rounds").stdout

    show = net.ctl_json("show", VM_MAC)
    [m] = show["macs"]
    assert set(m) == SHOW_MAC_KEYS and m["mac"] == VM_MAC
    bindings = {b["address"]: b for b in m["bindings"]}
    assert set(bindings) == {VM_V4, VM_V6}
    for b in bindings.values():
        assert set(b) == BINDING_KEYS
        # The takeover entry: local, REACHABLE (or aged), the daemon's protocol.
        assert b["interface"] == "br100" and not b["remote"] and b["protocol"] == 82
    [fdb] = m["fdb"]
    assert set(fdb) == FDB_KEYS
    assert fdb["port"] == "swp1" and fdb["domain"] == "br100" and fdb["port_role"] == "local"
    [h] = m["history"]
    assert set(h) == HISTORY_KEYS
    assert h["outcome"] == "confirmed" and h["trigger"] == "rarp" and h["port"] == "swp1"
    events = [e["event"] for e in h["timeline"]]
    assert events[0] == "trigger"
    # The default takeover-delay holds each takeover first (nothing withdraws here).
    for step in ("probe", "takeover-held", "takeover", "confirmed"):
        assert events.count(step) == 2, events
    at = [e["at_ms"] for e in h["timeline"]]
    assert at == sorted(at) and at[-1] < 5000
    text = net.ctl("show", VM_MAC).stdout
    assert "confirmed" in text and "takeover address=" in text and "port swp1" in text

    by_ip = net.ctl_json("show", VM_V4)
    assert [x["mac"] for x in by_ip["macs"]] == [VM_MAC]

    # From the host's namespace: --netns NAME and --socket PATH find the same daemon.
    for args in (("--netns", net.sw.name), ("--socket", path)):
        r = subprocess.run(
            [sys.executable, "-m", "rarp_replay.cli.rarp_replyctl", *args, "--json", "status"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert r.returncode == 0 and json.loads(r.stdout)["pid"] == d.proc.pid, r.stderr
    # Nothing on the socket changes anything: a request for more is refused.
    bad = net.ctl("show", "nonsense")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert d.stop() == 0
    assert not os.path.exists(path)  # removed on the way out


def test_no_daemon_is_one_line_and_exit_1(net: CtlNet) -> None:
    r = net.ctl("status")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "no rarp-reply answers on" in r.stderr, r.stderr
    assert f"/run/rarp-replay/{net.sw.name}.sock" in r.stderr


def test_silent_and_greedy_clients_do_not_stall_the_daemon(net: CtlNet) -> None:
    d = DaemonProc(net.sw).ready()
    path = d.of("control-listening")[0]["path"]
    hostile = []
    for _ in range(controlsock.MAX_CLIENTS + 4):  # more than it serves at once
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        hostile.append(s)  # connected, sending nothing
    partial = hostile[0]
    partial.send(b"stat")  # half a request, never finished
    cap = net.vm.capture("eth0")
    started = time.monotonic()
    net.rarp()
    # Served meanwhile, well inside the clients' 2 s deadline.
    cap.wait_for(2, timeout=DEADLINE_MARGIN, match=is_probe)
    assert time.monotonic() - started < controlsock.DEADLINE
    d.wait_event("confirmed", count=2)
    # The idle ones are closed by the daemon at their deadline (EOF on our side).
    partial.settimeout(controlsock.DEADLINE + 3)
    assert partial.recv(100) == b""
    for s in hostile:
        s.close()
    # And the socket still answers afterwards.
    assert net.ctl_json("status")["counters"]["takeovers"] == 2
    assert d.stop() == 0


DEADLINE_MARGIN = 1.5


def test_second_instance_exits_naming_the_first_and_touches_nothing(net: CtlNet) -> None:
    d = DaemonProc(net.sw).ready()
    # A placeholder of the kind the start-up clean-up removes (INCOMPLETE, then FAILED,
    # with the daemon's protocol), made after the first daemon's own start.
    ghost = "192.0.2.77"
    with netlab.entered(net.sw.name):
        rtnl = RtnlSocket()
    try:
        rtnl.neigh_use(net.sw.ifindex("br100"), ip_address(ghost), protocol=82)
    finally:
        rtnl.close()
    before = placeholder(net, ghost)
    assert before and "proto 82" in before
    r = net.sw.run(sys.executable, "-m", "rarp_replay", check=False, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"rarp-reply: error: another rarp-reply (PID {d.proc.pid}) already serves "
        "this network namespace"
    ]
    assert placeholder(net, ghost), "the second instance removed the first's placeholder"
    # The first goes on serving.
    cap = net.vm.capture("eth0")
    net.rarp()
    cap.wait_for(2, match=is_probe)
    assert d.stop() == 0


def placeholder(net: CtlNet, ip: str) -> str:
    out = net.sw.run("ip", "-d", "neigh", "show", ip, "dev", "br100").stdout
    return out.strip()


def test_sigusr1_logs_status_and_the_daemon_goes_on(net: CtlNet) -> None:
    d = DaemonProc(net.sw, "--holddown", "0").ready()
    net.rarp()
    d.wait_event("confirmed", count=2)
    d.proc.send_signal(signal.SIGUSR1)
    [line] = d.wait_event("status")
    assert line["takeovers"] == 2 and line["rounds_in_flight"] == 0
    assert line["netns"] == net.sw.name and line["capture_dropped"] == 0
    [settings] = d.wait_event("settings")
    assert settings["holddown"] == 0.0
    assert d.proc.poll() is None
    cap = net.vm.capture("eth0")
    net.rarp()
    cap.wait_for(2, match=is_probe)
    assert d.stop() == 0


def test_sigterm_mid_round_is_cut_short_not_gave_up(net: CtlNet) -> None:
    d = DaemonProc(net.sw).ready()
    net.rarp(GHOST_MAC)
    d.wait_event("announcement", lambda e: e["mac"] == GHOST_MAC)
    assert d.stop() == 0
    [stopped] = d.of("stopped")
    assert stopped["cut-short"] == 1 and "gave-up" not in stopped, stopped
    assert not d.of("gave-up")
