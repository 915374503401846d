"""`rarp-reply` on the wire: a switch, a VM that answers, a remote VTEP.

Topology (all in namespaces made here):

    vm(eth0) ==veth== (swp1) sw:br100 (SVI 192.0.2.252/24, 198.51.100.252/24,
                                        2001:db8:100::252/64; + macvlan VRR)
                             sw:vxlan100 --underlay veth-- remote:vxlan100

The VM's bindings are pre-installed on the switch as EVPN would
(`ip neigh replace ... nud noarp extern_learn proto zebra`).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from ipaddress import ip_address

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from rarp_replay.frames.arp import arp_request_frame, rarp_request_frame
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc

pytestmark = pytest.mark.netns

VM_MAC = "52:54:00:12:34:56"
SVI_MAC = "02:00:00:00:01:00"
VM_V4 = ["192.0.2.10", "198.51.100.10"]
VM_V6 = "2001:db8:100::10"
# Make-before-break (`takeover-delay` 0, not the default) for the tests about the takeover
# at the VM's first answer; nothing withdraws EVPN's entries here, so the default would
# take over only when its 1 s hold runs out.
MBB = ("--takeover-delay", "0")


@dataclass
class Net:
    lab: netlab.Lab
    sw: netlab.Netns
    vm: netlab.Netns
    remote: netlab.Netns
    vm_tx: socket.socket
    remote_tx: socket.socket

    def rarp_from_vm(self, mac: str = VM_MAC, vid: int | None = None) -> None:
        self.vm_tx.send(rarp_request_frame(bytes.fromhex(mac.replace(":", "")), vid=vid))

    def install_remote(self, ip: str, mac: str = VM_MAC, dev: str = "br100") -> None:
        self.sw.remote_neighbor(ip, mac, dev)


def garp_from(mac: str, ip: str = "192.0.2.10") -> bytes:
    return bytes(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=mac)
        / ARP(op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=ip)
    )


def is_probe(f: netlab.Frame) -> bool:
    p = Ether(f.data)
    if f.outgoing or p.src != SVI_MAC or p.dst != VM_MAC:
        return False
    return ARP in p or ICMPv6ND_NS in p


@pytest.fixture
def net(lab: netlab.Lab) -> Iterator[Net]:
    sw, vm, remote = lab.netns("sw"), lab.netns("vm"), lab.netns("rem")
    lab.veth(vm, "eth0", sw, "swp1")
    vm.ip("link", "set", "eth0", "address", VM_MAC)
    for ip in VM_V4:
        vm.ip("addr", "add", f"{ip}/24", "dev", "eth0")
    vm.ip("-6", "addr", "add", f"{VM_V6}/64", "dev", "eth0", "nodad")
    # Underlay to a remote VTEP, and VXLAN devices on both ends.
    lab.veth(sw, "uplink", remote, "uplink")
    sw.ip("addr", "add", "203.0.113.1/30", "dev", "uplink")
    remote.ip("addr", "add", "203.0.113.2/30", "dev", "uplink")
    for ns, local, peer in (
        (sw, "203.0.113.1", "203.0.113.2"),
        (remote, "203.0.113.2", "203.0.113.1"),
    ):
        ns.ip(
            "link",
            "add",
            "vxlan100",
            "type",
            "vxlan",
            "id",
            "100",
            "local",
            local,
            "remote",
            peer,
            "dstport",
            "4789",
            "nolearning",
        )
    remote.link_up("vxlan100")
    sw.bridge("br100", "swp1", "vxlan100", mac=SVI_MAC)
    sw.run("bridge", "link", "set", "dev", "vxlan100", "neigh_suppress", "on", "learning", "off")
    sw.ip("addr", "add", "192.0.2.252/24", "dev", "br100")
    sw.ip("addr", "add", "198.51.100.252/24", "dev", "br100")
    sw.ip("-6", "addr", "add", "2001:db8:100::252/64", "dev", "br100", "nodad")
    vm_tx = vm.socket(socket.AF_PACKET, socket.SOCK_RAW)
    vm_tx.bind(("eth0", 0))
    remote_tx = remote.socket(socket.AF_PACKET, socket.SOCK_RAW)
    remote_tx.bind(("vxlan100", 0))
    n = Net(lab, sw, vm, remote, vm_tx, remote_tx)
    for ip in (*VM_V4, VM_V6):
        n.install_remote(ip)
    yield n
    vm_tx.close()
    remote_tx.close()


def test_probes_every_address_with_exact_fields_and_vm_answers(net: Net) -> None:
    cap = net.vm.capture("eth0")
    d = DaemonProc(net.sw).ready()
    net.rarp_from_vm()
    probes = cap.wait_for(3, match=is_probe)
    arps = [Ether(f.data) for f in probes if ARP in Ether(f.data)]
    nss = [Ether(f.data) for f in probes if ICMPv6ND_NS in Ether(f.data)]
    assert sorted(p[ARP].pdst for p in arps) == sorted(VM_V4)
    for p in arps:
        a = p[ARP]
        assert (a.op, a.hwtype, a.ptype, a.hwlen, a.plen) == (1, 1, 0x0800, 6, 4)
        assert a.hwsrc == SVI_MAC and a.hwdst == VM_MAC
        # Sender IP: the SVI address in the target's subnet, never 0.0.0.0.
        assert a.psrc == ("192.0.2.252" if a.pdst == "192.0.2.10" else "198.51.100.252")
    [ns] = nss
    # To the solicited-node address (so the NA carries its link-layer address).
    assert ns[IPv6].src == "2001:db8:100::252" and ns[IPv6].dst == "ff02::1:ff00:10"
    assert ns[IPv6].hlim == 255 and ns[ICMPv6ND_NS].tgt == VM_V6
    assert ns[ICMPv6NDOptSrcLLAddr].lladdr == SVI_MAC
    chk = ns[ICMPv6ND_NS].cksum
    del ns[ICMPv6ND_NS].cksum
    assert Ether(bytes(ns))[ICMPv6ND_NS].cksum == chk
    # The VM answers each probe (its kernel sends ARP replies and an NA).
    replies = cap.wait_for(
        3,
        match=lambda f: (
            f.outgoing
            and (
                (ARP in Ether(f.data) and Ether(f.data)[ARP].op == 2)
                or ICMPv6ND_NA in Ether(f.data)
            )
        ),
    )
    assert {Ether(f.data).dst for f in replies} == {SVI_MAC}
    [line] = d.wait_event("announcement")
    assert line["mac"] == VM_MAC and line["port"] == "swp1" and line["domain"] == "br100"
    assert line["probes"] == 3 and len(line["bindings"]) == 3
    assert d.stop() == 0


def test_qemu_burst_gives_one_round(net: Net) -> None:
    cap = net.vm.capture("eth0")
    d = DaemonProc(net.sw).ready()
    net.vm.run(
        sys.executable,
        "-m",
        "rarp_replay.cli.rarp_req",
        "--pattern",
        "qemu",
        "--mac",
        VM_MAC,
        "--interface",
        "eth0",
        "--quiet",
    )
    d.wait_event("duplicate", count=4)
    assert len(d.of("announcement")) == 1
    assert len(cap.matching(is_probe)) == 3


def test_rarp_from_vxlan_port_never_probes_and_next_is_served(net: Net) -> None:
    cap = net.vm.capture("eth0")
    d = DaemonProc(net.sw).ready()
    net.remote_tx.send(rarp_request_frame(bytes.fromhex(VM_MAC.replace(":", ""))))
    d.wait_event("dropped", match=lambda e: e["reason"] == "fabric-port")
    net.rarp_from_vm()
    d.wait_event("announcement")
    # The fabric copy produced nothing: exactly one round's probes.
    cap.wait_for(3, match=is_probe)
    assert len(cap.matching(is_probe)) == 3


def test_unknown_mac_then_known_mac_and_garbage_survived(net: Net) -> None:
    cap = net.vm.capture("eth0")
    d = DaemonProc(net.sw).ready()
    net.rarp_from_vm("52:54:00:ff:ff:01")
    d.wait_event("announcement", match=lambda e: e.get("result") == "unknown-mac")
    src = bytes.fromhex(VM_MAC.replace(":", ""))
    garbage = [
        b"\xff" * 6 + src + b"\x80\x35",  # header only
        b"\xff" * 6 + src + b"\x80\x35" + b"\x00\x01\x08\x00\x06\x04\x00",  # truncated ARP
        b"\xff" * 6 + src + b"\x80\x35" + bytes(46),  # htype 0
        b"\xff" * 6 + src + b"\x80\x35" + b"\x00\x01\x08\x00\x06\x04\x00\x04" + bytes(38),  # op 4
    ]
    for g in garbage:
        net.vm_tx.send(g)
    d.wait_event(
        "dropped",
        count=4,
        match=lambda e: e["reason"] in ("malformed", "not-ethernet-ipv4", "not-rarp-request"),
    )
    net.rarp_from_vm()
    cap.wait_for(3, match=is_probe)
    assert d.proc.poll() is None


def test_binding_deleted_just_before_rarp_is_still_probed(net: Net) -> None:
    cap = net.vm.capture("eth0")
    d = DaemonProc(net.sw).ready()
    net.sw.ip("neigh", "del", "192.0.2.10", "dev", "br100")
    netlab.wait_until(lambda: "192.0.2.10" not in net.sw.ip("neigh", "show", "dev", "br100").stdout)
    net.rarp_from_vm()
    got = cap.wait_for(3, match=is_probe)
    assert "192.0.2.10" in {Ether(f.data)[ARP].pdst for f in got if ARP in Ether(f.data)}
    d.stop()


def test_relearn_makes_kernel_learn_deleted_binding(net: Net) -> None:
    """With the remote entry gone, the kernel takes the VM's reply (arp_accept=0)."""
    d = DaemonProc(net.sw).ready()
    net.sw.ip("neigh", "del", "192.0.2.10", "dev", "br100")
    net.rarp_from_vm()
    d.wait_event("confirmed", match=lambda e: e["address"] == "192.0.2.10")
    out = net.sw.ip("neigh", "show", "192.0.2.10", "dev", "br100").stdout
    assert VM_MAC in out and "REACHABLE" in out and "extern_learn" not in out


def test_macvlan_on_svi_does_not_double_probes(net: Net) -> None:
    net.sw.ip(
        "link",
        "add",
        "br100-v0",
        "link",
        "br100",
        "address",
        "00:00:5e:00:01:01",
        "type",
        "macvlan",
        "mode",
        "private",
    )
    net.sw.ip("addr", "add", "192.0.2.1/24", "dev", "br100-v0")
    net.sw.link_up("br100-v0")
    net.install_remote("192.0.2.10", dev="br100-v0")
    cap = net.vm.capture("eth0")
    d = DaemonProc(net.sw).ready()
    net.rarp_from_vm()
    d.wait_event("announcement")
    cap.wait_for(3, match=is_probe)
    d.wait_event("dropped", match=lambda e: e["reason"] == "stacked-copy")
    assert len(cap.matching(is_probe)) == 3


def test_tagged_rarp_probe_reaches_vm_with_same_vlan(net: Net) -> None:
    cap = net.vm.capture("eth0")
    d = DaemonProc(net.sw).ready()
    net.rarp_from_vm(vid=100)
    [line] = d.wait_event("announcement")
    assert line["domain"] == "br100/vlan100"
    # The VM's capture socket gets the tag in auxdata; read it from there.
    probes = cap.wait_for(3, match=lambda f: not f.outgoing and f.vlan == 100)
    assert all(Ether(f.data).src == SVI_MAC for f in probes)
    assert Dot1Q not in Ether(probes[0].data) or Ether(probes[0].data)[Dot1Q].vlan == 100


def test_interface_created_after_start_is_served(net: Net) -> None:
    d = DaemonProc(net.sw).ready()
    vm2 = net.lab.netns("vm2")
    net.lab.veth(vm2, "eth0", net.sw, "swp2")
    vm2.ip("link", "set", "eth0", "address", "52:54:00:00:00:22")
    vm2.ip("addr", "add", "192.0.2.22/24", "dev", "eth0")
    net.sw.bridge("br200", "swp2", mac="02:00:00:00:02:00")
    net.sw.ip("addr", "add", "192.0.2.253/24", "dev", "br200")
    net.sw.ip(
        "neigh",
        "replace",
        "192.0.2.22",
        "lladdr",
        "52:54:00:00:00:22",
        "dev",
        "br200",
        "nud",
        "noarp",
        "extern_learn",
    )
    cap = vm2.capture("eth0")
    tx = vm2.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("eth0", 0))
    tx.send(rarp_request_frame(bytes.fromhex("525400000022")))
    [line] = d.wait_event("announcement")
    assert line["port"] == "swp2" and line["domain"] == "br200"
    cap.wait_for(
        1,
        match=lambda f: (
            not f.outgoing and ARP in Ether(f.data) and Ether(f.data)[ARP].pdst == "192.0.2.22"
        ),
    )
    tx.close()


def test_sigterm_exits_zero_and_missing_capability_is_one_line(net: Net) -> None:
    d = DaemonProc(net.sw).ready()
    assert d.stop() == 0
    proc = net.sw.run(
        "capsh", "--drop=cap_net_raw", "--", "-c", f"{sys.executable} -m rarp_replay", check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "rarp-reply: error: missing capability CAP_NET_RAW (to capture RARPs and send probes)"
    ]
    proc = net.sw.run(
        "capsh", "--drop=cap_net_admin", "--", "-c", f"{sys.executable} -m rarp_replay", check=False
    )
    assert proc.returncode == 1 and "CAP_NET_ADMIN" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_mac_moving_to_another_local_port_without_rarp_is_probed(net: Net) -> None:
    """Issue 7's trigger: the bridge learns the VM's MAC on another local port
    (its first frame there is a gratuitous ARP, no RARP at all)."""
    # The VM's MAC is known on swp1 first (one frame), then it "migrates" to
    # swp2. The copy left on swp1 must stay silent (no IPv6 chatter), as a
    # migrated-away VM does: a second live host with the same MAC would move
    # it back and forth, which the daemon would rightly report as moves.
    net.vm.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
    net.vm_tx.send(garp_from(VM_MAC))
    netlab.wait_until(lambda: VM_MAC in net.sw.run("bridge", "fdb", "show", "dev", "swp1").stdout)
    d = DaemonProc(net.sw).ready()
    vm_b = net.lab.netns("vmb")
    # Silence first: with IPv6 on, taking the VM's MAC would send an MLD report
    # that moves the MAC before the capture below is open.
    vm_b.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
    vm_b.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
    net.lab.veth(vm_b, "eth0", net.sw, "swp2", up=False)
    vm_b.ip("link", "set", "eth0", "address", VM_MAC)
    cap = vm_b.capture("eth0")
    net.sw.ip("link", "set", "swp2", "master", "br100")
    net.sw.link_up("swp2")
    vm_b.link_up("eth0")
    tx = vm_b.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("eth0", 0))
    tx.send(garp_from(VM_MAC))
    [line] = d.wait_event("announcement")
    assert line["trigger"] == "fdb-move" and line["port"] == "swp2"
    assert line["moved_from"] == "swp1"
    got = cap.wait_for(
        1,
        match=lambda f: (
            not f.outgoing
            and ARP in Ether(f.data)
            and Ether(f.data)[ARP].op == 1
            and Ether(f.data).src == SVI_MAC
        ),
    )
    assert Ether(got[0].data)[ARP].pdst in VM_V4
    tx.close()


def test_vm_reply_replaces_remote_entry_with_local_one(net: Net) -> None:
    """Make-before-break: the VM's answer proves it is local; the kernel would
    ignore it (the entry is NOARP), so the daemon replaces the entry itself."""
    d = DaemonProc(net.sw, *MBB).ready()
    net.rarp_from_vm()
    d.wait_event("takeover", count=3)
    d.wait_event("confirmed", count=3)

    def entries() -> dict[str, dict[str, object]]:
        out = net.sw.run("ip", "-j", "neigh", "show", "dev", "br100").stdout
        return {e["dst"]: e for e in json.loads(out)}

    got = entries()
    for ip in (*VM_V4, VM_V6):
        e = got[ip]
        # `ip -j` shows extern_learn as a key of its own ("extern_learn": null).
        assert e["lladdr"] == VM_MAC and "extern_learn" not in e and "NOARP" not in e["state"]
        assert e["state"] == ["REACHABLE"] and e.get("protocol") == "82", e


def test_default_holds_the_takeover_until_the_old_leafs_withdrawal(net: Net) -> None:
    """The default `takeover-delay` (1 s): the VM's answers are held, not taken over;
    EVPN's withdrawal (the remote entries deleted, as zebra does) ends the hold, and the
    kernel learns the VM from its solicited answer. Why: tests/fabric/NOTES.md g."""
    d = DaemonProc(net.sw).ready()
    net.rarp_from_vm()
    held = d.wait_event("takeover-held", count=3)
    assert {e["address"] for e in held} == {*VM_V4, VM_V6}
    assert all(e["delay_ms"] == 1000.0 for e in held), held
    for ip in (*VM_V4, VM_V6):  # the old leaf withdraws
        net.sw.ip("neigh", "del", ip, "dev", "br100")
    deleted = d.wait_event("remote-deleted", count=3)
    assert all(e["takeover"] == "withheld" for e in deleted), deleted
    d.wait_event("confirmed", count=3)
    assert not d.of("takeover"), d.of("takeover")
    out = net.sw.run("ip", "-j", "neigh", "show", "dev", "br100").stdout
    got = {e["dst"]: e for e in json.loads(out)}
    for ip in (*VM_V4, VM_V6):
        e = got[ip]
        assert e["lladdr"] == VM_MAC and "extern_learn" not in e and "NOARP" not in e["state"], e
    assert d.stop() == 0


def _vm_silent_and_remote_in_fdb(net: Net) -> None:
    """The VM's MAC where EVPN puts it for a host behind another VTEP (zebra: on the
    VXLAN port, extern_learn), and the VM silent (no IPv6 chatter to move it back)."""
    net.vm.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
    net.sw.run("bridge", "fdb", "replace", VM_MAC, "dev", "vxlan100", "master", "extern_learn")
    netlab.wait_until(
        lambda: VM_MAC in net.sw.run("bridge", "fdb", "show", "dev", "vxlan100").stdout
    )


def _reached(t: float) -> bool:
    return time.monotonic() >= t


def _arp_probe_to_vm(f: netlab.Frame) -> bool:
    p = Ether(f.data)
    return ARP in p and p[ARP].op == 1 and p.src == SVI_MAC and p.dst == VM_MAC


def test_probe_reaches_the_vm_because_the_fdb_moved_first(net: Net) -> None:
    """Issue 13: the daemon relies on the FDB pointing at the VM's local port by the
    time it probes. A probe sent while the MAC is still on the VXLAN port (EVPN's
    remote entry) is unicast there by the bridge and never reaches the VM (on kernels
    before 6.16, with neigh_suppress, the bridge also answers it itself: see
    tests/vm/test_sonic_leaf.py). After a RARP the bridge has learned the MAC on the
    port before the daemon's probe arrives: the softirq that queued the port's copy for
    the daemon goes on into the bridge's rx handler, and br_handle_frame_finish() calls
    br_fdb_update() first; the daemon needs a wake-up and a decision before it sends."""
    _vm_silent_and_remote_in_fdb(net)
    at_vm = net.vm.capture("eth0", lambda d: d[12:14] == b"\x08\x06")
    at_fabric = net.remote.capture("vxlan100", lambda d: d[12:14] == b"\x08\x06")
    # What goes wrong otherwise: the same probe, sent before the move, goes to the fabric.
    tx = net.sw.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("br100", 0))
    mac = bytes.fromhex(VM_MAC.replace(":", ""))
    svi = bytes.fromhex(SVI_MAC.replace(":", ""))
    tx.send(arp_request_frame(svi, ip_address("192.0.2.252"), mac, ip_address("192.0.2.10")))
    tx.close()
    at_fabric.wait_for(1, match=_arp_probe_to_vm)
    assert not at_vm.matching(_arp_probe_to_vm)
    # Now the migration: RARP on swp1, and the daemon's probes. An order in time, so
    # measured over several migrations, the MAC put back behind the fabric each time.
    d = DaemonProc(net.sw, "--holddown", "0.1").ready()
    migrations = 10
    last = time.monotonic()
    for n in range(1, migrations + 1):
        # Past the last round's hold-down (0.1 s): a RARP within it is a duplicate.
        netlab.wait_until(partial(_reached, last + 0.15), timeout=1.0)
        net.rarp_from_vm()
        [*_, line] = d.wait_event("announcement", count=n)
        last = time.monotonic()
        assert (line["port"], line["trigger"]) == ("swp1", "rarp")
        got = at_vm.wait_for(2 * n, match=lambda f: _arp_probe_to_vm(f) and not f.outgoing)
        assert sorted(Ether(f.data)[ARP].pdst for f in got[-2:]) == sorted(VM_V4)
        d.wait_event("takeover", lambda e: e["address"] == "192.0.2.10", count=n)
        d.wait_event("confirmed", count=2 * n)  # the IPv4 addresses (IPv6 is off)
        for ip in (*VM_V4, VM_V6):
            net.install_remote(ip)
        _vm_silent_and_remote_in_fdb(net)
    # None of the daemon's probes went to the fabric: only the one sent by hand. And
    # every answer was the VM's, through its port: none counted as not local.
    assert len(at_fabric.matching(_arp_probe_to_vm)) == 1
    assert not [e for e in d.of("dropped") if e["reason"] == "answer-not-local"], d.raw
    assert d.stop() == 0


def test_extern_learn_fdb_move_starts_one_round(net: Net) -> None:
    """SONiC: no RARP reaches the CPU; fdbsyncd writes the MAC its ASIC learned on a
    local port as `dynamic extern_learn`. zebra takes that for a local MAC (by its
    port), and so does the daemon: one round, the VM probed and taken over."""
    _vm_silent_and_remote_in_fdb(net)
    d = DaemonProc(net.sw).ready()
    at_vm = net.vm.capture("eth0", lambda d: d[12:14] == b"\x08\x06")
    # A static entry (an operator's, or zebra's multihoming sync entry) is no host's move.
    # (The bridge keeps an entry static through later extern_learn replaces: start over.)
    net.sw.run("bridge", "fdb", "replace", VM_MAC, "dev", "swp1", "master", "static")
    net.sw.run("bridge", "fdb", "del", VM_MAC, "dev", "swp1", "master")
    net.sw.run("bridge", "fdb", "replace", VM_MAC, "dev", "vxlan100", "master", "extern_learn")
    net.sw.run(
        "bridge", "fdb", "replace", VM_MAC, "dev", "swp1", "master", "dynamic", "extern_learn"
    )
    [line] = d.wait_event("announcement")
    assert (line["port"], line["trigger"], line["moved_from"]) == ("swp1", "fdb-move", "vxlan100")
    at_vm.wait_for(2, match=lambda f: _arp_probe_to_vm(f) and not f.outgoing)
    d.wait_event("takeover", lambda e: e["address"] == "192.0.2.10")
    # One round, and it was the dynamic move's: the static one started none (else this
    # one would have been a duplicate within its hold-down).
    assert len(d.of("announcement")) == 1 and not d.of("duplicate")
    assert d.stop() == 0
