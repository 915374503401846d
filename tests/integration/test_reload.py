"""SIGHUP: the daemon re-reads its TOML file and keeps its mirror and rounds.

    vm(eth0) ==veth== swp1 \\
                             sw:br100 (SVI 192.0.2.252/24)
    vm2(eth0) =veth== swp2 /

The VM's address is installed as EVPN would (`nud noarp extern_learn`), and
the daemon runs with takeover off, so a round stays open until that remote
entry is deleted: the round is in flight across the reload.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether

from rarp_replay.frames.arp import rarp_request_frame
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc

pytestmark = pytest.mark.netns

VM_MAC = "52:54:00:12:34:56"
VM_IP = "192.0.2.10"
SVI_MAC = "02:00:00:00:01:00"


def test_sighup_reload_keeps_rounds_applies_changes_and_survives_bad_files(
    lab: netlab.Lab, tmp_path: Path
) -> None:
    sw, vm = netlab.access_switch(lab, VM_MAC, SVI_MAC, [f"{VM_IP}/24"], ["192.0.2.252/24"])
    vm2 = lab.netns("vm2")
    lab.veth(vm2, "eth0", sw, "swp2")
    sw.ip("link", "set", "swp2", "master", "br100")
    sw.remote_neighbor(VM_IP, VM_MAC)
    conf = tmp_path / "rarp-reply.toml"
    conf.write_text("takeover = false\nholddown = 0.2\n")
    cap = vm.capture("eth0")
    tx = {}
    for name, ns in (("swp1", vm), ("swp2", vm2)):
        s = ns.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("eth0", 0))
        tx[name] = s
    rarp = rarp_request_frame(bytes.fromhex(VM_MAC.replace(":", "")))

    def probes() -> int:
        return len(
            cap.matching(
                lambda f: not f.outgoing and ARP in Ether(f.data) and Ether(f.data)[ARP].op == 1
            )
        )

    d = DaemonProc(sw, "--config", str(conf)).ready()
    try:
        tx["swp1"].send(rarp)
        [ann] = d.wait_event("announcement")
        assert ann["bindings"] == [f"{VM_IP}(remote)"]
        netlab.wait_until(lambda: probes() == 1, what="first probe")

        # A good file: new values apply, the round in flight survives.
        conf.write_text('takeover = false\nholddown = 0.2\nexclude = ["swp2"]\ngive-up = 60\n')
        d.proc.send_signal(signal.SIGHUP)
        [rel] = d.wait_event("reloaded")
        assert sorted(rel["changed"]) == ["exclude", "give-up"]
        assert len(d.of("ready")) == 1  # no restart, no re-dump
        # EVPN withdraws the remote entry: the round (opened before the
        # reload) reacts, probes again, and the VM's answer is learned.
        sw.ip("neigh", "del", VM_IP, "dev", "br100")
        [gone] = d.wait_event("remote-deleted")
        assert gone["address"] == VM_IP and gone["mac"] == VM_MAC
        d.wait_event("confirmed", match=lambda e: e["address"] == VM_IP)
        # The VM answered the second probe, but the capture thread may not have read it yet.
        netlab.wait_until(lambda: probes() >= 2, what="the second probe in the VM's capture")

        # The new exclude list is in force.
        tx["swp2"].send(rarp)
        d.wait_event("dropped", match=lambda e: e["reason"] == "excluded-port")

        # A bad file changes nothing: one error line, the daemon keeps serving.
        conf.write_text("holddown = 'soon'\n")
        d.proc.send_signal(signal.SIGHUP)
        [err] = d.wait_event("reload-failed")
        assert "holddown: expected a number" in err["error"]
        tx["swp2"].send(rarp)
        d.wait_event("dropped", match=lambda e: e["reason"] == "excluded-port", count=2)

        # Socket sizes are fixed at start: named, kept, everything else applied.
        conf.write_text("takeover = false\nholddown = 0.2\nnetlink-rcvbuf = 65536\n")
        d.proc.send_signal(signal.SIGHUP)
        [warn] = d.wait_event("reload-needs-restart")
        assert warn["keys"] == ["netlink-rcvbuf"]
        [_, rel] = d.wait_event("reloaded", count=2)
        assert sorted(rel["changed"]) == ["exclude", "give-up"]  # back to the defaults

        def served_on_swp2() -> bool:
            # swp2 is no longer excluded. Resent until served: the last round
            # for this MAC may still be in its 0.2 s hold-down.
            tx["swp2"].send(rarp)
            return any(e["port"] == "swp2" for e in d.of("announcement"))

        netlab.wait_until(served_on_swp2, interval=0.1, what="announcement on swp2")
        assert d.proc.poll() is None
    finally:
        for s in tx.values():
            s.close()
    assert d.stop() == 0


def test_sighup_turning_takeover_on_starts_capturing_answers(
    lab: netlab.Lab, tmp_path: Path
) -> None:
    # Answers (ARP replies) are only let through the capture's socket filter
    # while takeover is on: the reload must swap the filter, not just a flag.
    sw, vm = netlab.access_switch(lab, VM_MAC, SVI_MAC, [f"{VM_IP}/24"], ["192.0.2.252/24"])
    sw.remote_neighbor(VM_IP, VM_MAC)
    conf = tmp_path / "rarp-reply.toml"
    conf.write_text("takeover = false\n")
    d = DaemonProc(sw, "--config", str(conf)).ready()
    conf.write_text("takeover = true\n")
    d.proc.send_signal(signal.SIGHUP)
    [rel] = d.wait_event("reloaded")
    assert rel["changed"] == ["takeover"]
    tx = vm.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        tx.bind(("eth0", 0))
        tx.send(rarp_request_frame(bytes.fromhex(VM_MAC.replace(":", ""))))
        [took] = d.wait_event("takeover")
        assert took["address"] == VM_IP
        netlab.wait_until(
            lambda: "REACHABLE" in sw.run("ip", "neigh", "show", VM_IP, "dev", "br100").stdout,
            what="the takeover entry",
        )
    finally:
        tx.close()
    assert d.stop() == 0
