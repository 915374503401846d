"""The daemon on a VLAN-aware leaf laid out as Cumulus Linux does, on a real kernel.

Needs VLAN filtering, 802.1Q and bond devices: the kernels of the VM images
(scripts/test-vm), not the development machines'. Skipped where the kernel
lacks them.

    vm1(eth0) == swp1   access, PVID 10 untagged  \\
    vm2(eth0) == swp2   trunk, VLAN 20 tagged       > sw: br0 (vlan_filtering 1)
    vm3(eth0) == swp3 - bond1 (access, PVID 10)   /     vlan10 (802.1Q on br0) 10.0.10.2/24
                         vxlan48 (external, VLAN tunnel   + vlan10-v0 (macvlan, private,
                         info 10->10010, 20->10020)          00:00:5e:00:01:01) 10.0.10.1/24
                                                          vlan20 (802.1Q on br0) 10.0.20.2/24

The VMs' addresses are EVPN remote entries on the SVIs (`nud noarp extern_learn
proto zebra`), as zebra installs them. One leaf and one daemon serve every test of
the module (under TCG a daemon start costs tens of seconds); each test uses its own
VM or VLAN, so its round is its own (a round is per MAC and domain).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from rarp_replay.frames.arp import rarp_request_frame
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.vm.vlanlab import SLOW, LeafLab, cumulus_svis, leaf_lab, neigh, probe_to

pytestmark = [pytest.mark.vm, pytest.mark.netns]

SVI_MAC = "02:00:00:00:0a:00"
VMS = {  # name: (MAC, address, switch port)
    "vm1": ("52:54:00:00:00:0a", "10.0.10.11", "swp1"),
    "vm2": ("52:54:00:00:00:14", "10.0.20.12", "swp2"),
    "vm3": ("52:54:00:00:00:1e", "10.0.10.13", "swp3"),
}


@dataclass
class Leaf:
    sw: netlab.Netns
    vms: dict[str, netlab.Netns]
    tx: dict[str, socket.socket]
    daemon: DaemonProc

    def announcements(self, port: str, domain: str) -> list[dict[str, Any]]:
        return [
            e for e in self.daemon.of("announcement") if (e["port"], e["domain"]) == (port, domain)
        ]

    def rarp(self, vm: str, vid: int | None = None) -> None:
        mac = bytes.fromhex(VMS[vm][0].replace(":", ""))
        self.tx[vm].send(rarp_request_frame(mac, vid=vid))


@pytest.fixture(scope="module")
def leaf() -> Iterator[Leaf]:
    with leaf_lab("bond", ("link", "add", "bond1", "type", "bond")) as lab:
        yield _leaf(lab)


def _leaf(lab: LeafLab) -> Leaf:
    sw = lab.netns("sw")
    vms = {name: lab.netns(name) for name in VMS}
    for name, (mac, _ip, port) in VMS.items():
        lab.veth(vms[name], "eth0", sw, port)
        vms[name].ip("link", "set", "eth0", "address", mac)
    # vm2 sits behind a trunk: its address lives on its own VLAN 20 device.
    vms["vm2"].ip("link", "add", "link", "eth0", "name", "eth0.20", "type", "vlan", "id", "20")
    vms["vm2"].link_up("eth0.20")
    for name, (_mac, ip, _port) in VMS.items():
        vms[name].ip("addr", "add", f"{ip}/24", "dev", "eth0.20" if name == "vm2" else "eth0")
    sw.ip(
        "link", "add", "br0", "address", SVI_MAC, "type", "bridge", "vlan_filtering", "1",
        "stp_state", "0", "mcast_snooping", "0",
    )  # fmt: skip
    sw.ip("link", "add", "bond1", "type", "bond", "mode", "active-backup")
    sw.ip("link", "set", "swp3", "down")
    sw.ip("link", "set", "swp3", "master", "bond1")
    sw.ip("link", "add", "vxlan48", "type", "vxlan", "external", "dstport", "4789")
    for dev in ("swp1", "swp2", "bond1", "vxlan48"):
        sw.ip("link", "set", dev, "master", "br0")
    cumulus_svis(sw)
    for cmd in (
        "vlan del dev swp1 vid 1",
        "vlan add dev swp1 vid 10 pvid untagged",
        "vlan del dev swp2 vid 1",
        "vlan add dev swp2 vid 20",
        "vlan del dev bond1 vid 1",
        "vlan add dev bond1 vid 10 pvid untagged",
        "vlan add dev br0 vid 10 self",
        "vlan add dev br0 vid 20 self",
        "vlan del dev vxlan48 vid 1",
        "vlan add dev vxlan48 vid 10",
        "vlan add dev vxlan48 vid 20",
        "link set dev vxlan48 vlan_tunnel on",
        "vlan add dev vxlan48 vid 10 tunnel_info id 10010",
        "vlan add dev vxlan48 vid 20 tunnel_info id 10020",
    ):
        sw.run("bridge", *cmd.split())
    sw.link_up("swp1", "swp2", "swp3", "bond1", "vxlan48", "br0", "vlan10", "vlan20", "vlan10-v0")
    for dev, addr in (("vlan10", "10.0.10.2/24"), ("vlan10-v0", "10.0.10.1/24")):
        sw.ip("addr", "add", addr, "dev", dev)
    sw.ip("addr", "add", "10.0.20.2/24", "dev", "vlan20")
    for name, (mac, ip, _port) in VMS.items():
        sw.remote_neighbor(ip, mac, "vlan20" if name == "vm2" else "vlan10")
    tx = {name: lab.tx(vms[name], "eth0") for name in VMS}
    return Leaf(sw, vms, tx, lab.serve(sw))


def test_access_port_untagged_is_one_round_on_the_svi(leaf: Leaf) -> None:
    mac, ip, _ = VMS["vm1"]
    d = leaf.daemon
    cap = leaf.vms["vm1"].capture("eth0")
    leaf.rarp("vm1")
    [line] = d.wait_event("announcement", lambda e: e["mac"] == mac, SLOW)
    assert (line["port"], line["domain"]) == ("swp1", "vlan10")
    assert line["probes"] == 1 and "result" not in line
    # The copy after the bridge was seen and ignored, not taken for a new port.
    d.wait_event("dropped", lambda e: e["reason"] == "bridge-copy" and e["port"] == "vlan10", SLOW)
    [probe] = cap.wait_for(1, SLOW, probe_to(mac))
    p = Ether(probe.data)
    # Through the SVI: its MAC and its own address (not the anycast one), untagged on
    # the access port.
    assert (p.src, p[ARP].psrc, p[ARP].pdst) == (SVI_MAC, "10.0.10.2", ip)
    assert Dot1Q not in p and probe.vlan is None
    # vm1 answers: the takeover is written on the SVI, the device zebra watches.
    d.wait_event("takeover", lambda e: e["mac"] == mac, SLOW)
    netlab.wait_until(lambda: "extern_learn" not in neigh(leaf.sw, ip, "vlan10"), SLOW, 0.05)
    assert neigh(leaf.sw, ip, "vlan10").get("lladdr") == mac
    assert neigh(leaf.sw, ip, "vlan10-v0") == {}  # nothing written on the anycast macvlan
    assert len([e for e in d.of("announcement") if e["mac"] == mac]) == 1


def test_trunk_port_tagged_is_one_round_and_probe_is_tagged(leaf: Leaf) -> None:
    mac = VMS["vm2"][0]
    d = leaf.daemon
    cap = leaf.vms["vm2"].capture("eth0")
    leaf.rarp("vm2", vid=20)
    [line] = d.wait_event("announcement", lambda e: e["domain"] == "vlan20", SLOW)
    assert (line["mac"], line["port"], line["probes"]) == (mac, "swp2", 1)
    d.wait_event("dropped", lambda e: e["reason"] == "bridge-copy" and e["port"] == "vlan20", SLOW)
    [probe] = cap.wait_for(1, SLOW, probe_to(mac))
    p = Ether(probe.data)
    vid = probe.vlan if probe.vlan is not None else (p[Dot1Q].vlan if Dot1Q in p else None)
    assert vid == 20 and p[ARP].psrc == "10.0.20.2"
    assert len(leaf.announcements("swp2", "vlan20")) == 1


def test_bond_member_is_the_bond_port(leaf: Leaf) -> None:
    mac = VMS["vm3"][0]
    d = leaf.daemon
    leaf.rarp("vm3")
    [line] = d.wait_event("announcement", lambda e: e["mac"] == mac, SLOW)
    assert (line["port"], line["domain"]) == ("bond1", "vlan10")
    d.wait_event(
        "dropped", lambda e: e["reason"] == "aggregate-member-copy" and e["port"] == "swp3", SLOW
    )
    assert len([e for e in d.of("announcement") if e["mac"] == mac]) == 1


def test_follows_a_vlan_added_to_a_port(leaf: Leaf) -> None:
    d = leaf.daemon
    # VLAN 10 tagged on the trunk: the bridge drops it (not a member), so does the daemon.
    leaf.rarp("vm2", vid=10)
    d.wait_event(
        "dropped", lambda e: e["reason"] == "vlan-not-member" and e["port"] == "swp2", SLOW
    )
    assert not leaf.announcements("swp2", "vlan10")
    # Now the trunk carries VLAN 10 too: the daemon learns it from br_ifinfo_notify's
    # RTNLGRP_LINK message, without a restart. The notification and the next RARP
    # race inside the daemon's loop, so RARP again until it is served (bounded).
    leaf.sw.run("bridge", "vlan", "add", "dev", "swp2", "vid", "10")
    served: list[dict[str, Any]] = []
    for _ in range(10):
        leaf.rarp("vm2", vid=10)
        try:
            served = d.wait_event(
                "announcement", lambda e: e["domain"] == "vlan10" and e["port"] == "swp2", SLOW / 10
            )
            break
        except AssertionError:
            continue
    assert served, "never served after the VLAN was added"
