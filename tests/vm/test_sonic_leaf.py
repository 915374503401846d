"""The daemon on a leaf laid out as SONiC does, on a real kernel (issue 13).

    hv(eth0) == Ethernet0 - PortChannel01 (team)  \\
      eth0.10: vm1 52:54:00:00:00:0b 10.0.10.11    > sw: Bridge (vlan_filtering 1)
      (vm2 52:54:00:00:00:0c only sends a RARP)   /     VLAN 10 tagged on PortChannel01
                       vtep-10 (VXLAN, VNI 10010,        Vlan10 (802.1Q on Bridge), the anycast
                       neigh_suppress on, learning off)  gateway: its MAC and 10.0.10.1/24

No RARP reaches SONiC's CPU and its kernel bridge does not learn (the ASIC does):
PortChannel01 has learning off, and the MAC moves only when the test writes it as
fdbsyncd does (`bridge fdb replace MAC dev PortChannel01 master dynamic extern_learn
vlan 10`). The VMs are EVPN remote entries, as zebra installs them: the binding on
the SVI (`nud noarp extern_learn proto zebra`) and the MAC on the VXLAN port.

The team device gets its mode over generic netlink (vlanlab.team_mode): without
teamd, a team with no mode forwards what it receives but drops all it sends.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from rarp_replay.frames.arp import rarp_request_frame
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.vm.vlanlab import ANYCAST_MAC, SLOW, LeafLab, leaf_lab, neigh, probe_to, team_mode

pytestmark = [pytest.mark.vm, pytest.mark.netns]

VM1 = ("52:54:00:00:00:0b", "10.0.10.11")
VM2 = ("52:54:00:00:00:0c", "10.0.10.12")


@dataclass
class Leaf:
    sw: netlab.Netns
    hv: netlab.Netns
    tx: socket.socket  # on hv's eth0: frames leave it as they are (tags by hand)
    daemon: DaemonProc


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


@pytest.fixture(scope="module")
def leaf() -> Iterator[Leaf]:
    with leaf_lab("team", ("link", "add", "pc", "type", "team")) as lab:
        yield _leaf(lab)


def _leaf(lab: LeafLab) -> Leaf:
    sw, hv = lab.netns("sw"), lab.netns("hv")
    lab.veth(hv, "eth0", sw, "Ethernet0", up=False)
    hv.sysctl("net.ipv6.conf.all.disable_ipv6", 1)  # no chatter but what the test sends
    hv.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
    hv.link_up("eth0")
    hv.ip("link", "add", "link", "eth0", "name", "eth0.10", "type", "vlan", "id", "10")
    hv.ip("link", "set", "eth0.10", "address", VM1[0])
    hv.ip("addr", "add", f"{VM1[1]}/24", "dev", "eth0.10")
    hv.link_up("eth0.10")
    sw.ip("link", "add", "PortChannel01", "type", "team")
    team_mode(sw, "PortChannel01", "loadbalance")
    sw.ip("link", "set", "Ethernet0", "master", "PortChannel01")
    sw.ip(
        "link", "add", "Bridge", "type", "bridge", "vlan_filtering", "1",
        "stp_state", "0", "mcast_snooping", "0",
    )  # fmt: skip
    sw.ip(
        "link", "add", "vtep-10", "type", "vxlan", "id", "10010", "local", "192.0.2.1",
        "dstport", "4789", "nolearning",
    )  # fmt: skip
    for dev in ("PortChannel01", "vtep-10"):
        sw.ip("link", "set", dev, "master", "Bridge")
    sw.ip("link", "add", "link", "Bridge", "name", "Vlan10", "type", "vlan", "id", "10")
    sw.ip("link", "set", "Vlan10", "address", ANYCAST_MAC)
    for cmd in (
        "vlan del dev PortChannel01 vid 1",
        "vlan add dev PortChannel01 vid 10",
        "vlan del dev vtep-10 vid 1",
        "vlan add dev vtep-10 vid 10 pvid untagged",
        "vlan add dev Bridge vid 10 self",
        "link set dev PortChannel01 learning off",
        "link set dev vtep-10 learning off neigh_suppress on",
    ):
        sw.run("bridge", *cmd.split())
    sw.link_up("Ethernet0", "PortChannel01", "vtep-10", "Bridge", "Vlan10")
    sw.ip("addr", "add", "10.0.10.1/24", "dev", "Vlan10")
    for mac, ip in (VM1, VM2):
        sw.remote_neighbor(ip, mac, "Vlan10")
        sw.run(
            "bridge", "fdb", "replace", mac, "dev", "vtep-10", "master", "extern_learn",
            "vlan", "10",
        )  # fmt: skip
    return Leaf(sw, hv, lab.tx(hv, "eth0"), lab.serve(sw))


def _arp_reply_from(f: netlab.Frame, mac: str) -> bool:
    p = Ether(f.data)
    return ARP in p and p[ARP].op == 2 and p[ARP].hwsrc == mac


def _ts(line: dict[str, object]) -> float:
    return datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00")).timestamp()


def test_fdbsyncd_move_is_one_round_and_takeover_follows_the_vm_answer(leaf: Leaf) -> None:
    mac, ip = VM1
    d = leaf.daemon
    cap = leaf.hv.capture("eth0", lambda data: b"\x08\x06" in (data[12:14], data[16:18]))
    # The VM's first frame after the migration (to its gateway, tagged by the hypervisor);
    # the ASIC learns its MAC there, and fdbsyncd writes what it learned.
    first = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / Dot1Q(vlan=10)
    leaf.tx.send(bytes(first / ARP(op=1, hwsrc=mac, psrc=ip, pdst="10.0.10.1")))
    leaf.sw.run(
        "bridge", "fdb", "replace", mac, "dev", "PortChannel01", "master", "dynamic",
        "extern_learn", "vlan", "10",
    )  # fmt: skip
    [line] = d.wait_event("announcement", lambda e: e["mac"] == mac, SLOW)
    assert (line["port"], line["domain"]) == ("PortChannel01", "Vlan10")
    assert (line["trigger"], line["moved_from"], line["probes"]) == ("fdb-move", "vtep-10", 1)
    # One probe per address, tagged for the trunk, from the SVI (the anycast gateway).
    [probe] = cap.wait_for(1, SLOW, probe_to(mac))
    p = Ether(probe.data)
    vid = probe.vlan if probe.vlan is not None else (p[Dot1Q].vlan if Dot1Q in p else None)
    assert vid == 10
    assert (p.src, p[ARP].psrc, p[ARP].pdst) == (ANYCAST_MAC, "10.0.10.1", ip)
    # The takeover comes after the VM's own answer left the hypervisor, not before.
    [took] = d.wait_event("takeover", lambda e: e["mac"] == mac, SLOW)
    [answer] = cap.matching(lambda f: f.outgoing and _arp_reply_from(f, mac))
    assert _ts(took) >= answer.timestamp - 0.01  # log times are milliseconds
    netlab.wait_until(lambda: "extern_learn" not in neigh(leaf.sw, ip, "Vlan10"), SLOW, 0.05)
    assert len([e for e in d.of("announcement") if e["mac"] == mac]) == 1
    assert len(cap.matching(probe_to(mac))) == 1
    assert not [e for e in d.of("dropped") if e.get("mac") == mac]


def test_bridge_own_suppression_answer_is_no_takeover(leaf: Leaf) -> None:
    # vm2's MAC stays on the VXLAN port (the kernel does not learn here): the daemon's
    # probe after its RARP is answered by the bridge itself from the neighbor table
    # (ARP suppression, br_do_proxy_suppress_arp: unicast requests too, before 6.16).
    mac, ip = VM2
    d = leaf.daemon
    at_svi = leaf.sw.capture("Vlan10", lambda data: data[12:14] == b"\x08\x06")
    leaf.tx.send(rarp_request_frame(_mac(mac), vid=10))
    [line] = d.wait_event("announcement", lambda e: e["mac"] == mac, SLOW)
    assert (line["port"], line["domain"], line["probes"]) == ("PortChannel01", "Vlan10", 1)
    [dropped] = d.wait_event(
        "dropped", lambda e: e["reason"] == "answer-not-local" and e.get("mac") == mac, SLOW
    )
    assert dropped["address"] == ip
    # It was the bridge's answer: seen on the SVI, from the VM's MAC, and no takeover.
    assert at_svi.matching(lambda f: _arp_reply_from(f, mac))
    assert not [e for e in d.of("takeover") if e["mac"] == mac]
    assert "extern_learn" in neigh(leaf.sw, ip, "Vlan10")
