"""The daemon on a leaf with a single VXLAN device for all VNIs (Cumulus Linux's `vxlan48`),
on a real kernel (issue 13).

    vm1(eth0) == swp1   access, PVID 10 untagged  \\
    vm2(eth0) == swp2   trunk, VLAN 20 tagged       \\  sw: br0 (vlan_filtering 1)
    vm3(eth0) == swp3   access, PVID 10              >   vlan10 (802.1Q on br0) 10.0.10.2/24
    vm4(eth0) == swp4   access, PVID 10            /      + vlan10-v0 (macvlan, private,
                         vxlan48 (external, local       00:00:5e:00:01:01) 10.0.10.1/24
    vtep2(uplink) == uplink  10.0.0.1; the only         vlan20 (802.1Q on br0) 10.0.20.2/24
      10.0.0.2, a remote     fabric port: VLAN 10 -> VNI 10010, 20 -> 10020
      VTEP (UDP to 4789)     by the bridge's VLAN tunnel info)

Two variants of vxlan48, one leaf and one daemon each: VLAN to VNI by tunnel info alone
(`bridge vlan add dev vxlan48 vid 10 tunnel_info id 10010`), and the same with
`vnifilter` (the device accepts only the VNIs of `bridge vni add`; Linux 5.18+), as
ifupdown2/NVUE and FRR 9+ lay it out. No FRR: the remote hosts' entries are written as
zebra writes them, the binding on the SVI (`nud noarp extern_learn proto zebra`) and
the MAC on vxlan48 twice, the bridge's entry (`master extern_learn vlan V`) and the
VXLAN device's own (`self extern_learn dst VTEP src_vni VNI`). vxlan48 has learning off
and neigh_suppress on, as Cumulus configures it.

vm1, vm2 and vm3 are remote VMs that migrate here; vm4 is a local VM that migrated to
the leaf behind 10.0.0.2, which floods its RARP over VXLAN: this leaf is the old one and
must send nothing. Each test uses its own VM, so its round is its own.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Callable, Iterator
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
LOCAL_VTEP, REMOTE_VTEP = "10.0.0.1", "10.0.0.2"
VXLAN_PORT = 4789  # IANA's (RFC 7348 5)
VNI = {10: 10010, 20: 10020}  # VLAN -> VNI
VMS = {  # name: (MAC, address, switch port, VLAN, tagged on the port)
    "vm1": ("52:54:00:00:01:0a", "10.0.10.11", "swp1", 10, False),
    "vm2": ("52:54:00:00:01:14", "10.0.20.12", "swp2", 20, True),
    "vm3": ("52:54:00:00:01:1e", "10.0.10.13", "swp3", 10, False),
    "vm4": ("52:54:00:00:01:28", "10.0.10.14", "swp4", 10, False),
}
REMOTE = ("vm1", "vm2", "vm3")  # behind 10.0.0.2 until they migrate here
STAYS_REMOTE = ("52:54:00:00:01:32", "10.0.20.15", 20)  # behind 10.0.0.2 throughout
MARKER_MAC = "52:54:00:00:01:ff"  # an unknown host's RARP, flooded after vm4's


@dataclass
class Leaf:
    variant: str
    sw: netlab.Netns
    vms: dict[str, netlab.Netns]
    tx: dict[str, Any]  # name -> raw socket on the VM's eth0
    vtep2: netlab.Netns
    udp: socket.socket  # the remote VTEP's: sends VXLAN to LOCAL_VTEP
    daemon: DaemonProc

    def rarp(self, vm: str) -> None:
        mac, _ip, _port, vid, tagged = VMS[vm]
        self.tx[vm].send(rarp_request_frame(_mac(mac), vid=vid if tagged else None))

    def flood(self, mac: str, vni: int) -> None:
        """A RARP for `mac` as a remote leaf floods it: untagged in VXLAN, the VNI in the
        header (RFC 7348 5: flags 0x08, the VNI in the 24 bits before the last octet)."""
        header = struct.pack("!II", 0x08 << 24, vni << 8)
        self.udp.sendto(header + rarp_request_frame(_mac(mac)), (LOCAL_VTEP, VXLAN_PORT))

    def ctl(self, *args: str) -> dict[str, Any]:
        r = self.sw.run(
            sys.executable, "-m", "rarp_replay.cli.rarp_replyctl", "--json", *args, timeout=60
        )
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def announcements(self, mac: str) -> list[dict[str, Any]]:
        return [e for e in self.daemon.of("announcement") if e["mac"] == mac]


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


VXLAN48 = {
    "tunnel-info": ("link", "add", "vx0", "type", "vxlan", "dstport", "4789", "external"),
    "vnifilter": (
        "link", "add", "vx0", "type", "vxlan", "dstport", "4789", "external", "vnifilter",
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=list(VXLAN48))
def leaf(request: pytest.FixtureRequest) -> Iterator[Leaf]:
    variant: str = request.param
    with leaf_lab(f"a single VXLAN device ({variant})", VXLAN48[variant]) as lab:
        yield _leaf(lab, variant)


def _leaf(lab: LeafLab, variant: str) -> Leaf:
    sw, vtep2 = lab.netns("sw"), lab.netns("vtep2")
    vms = {name: lab.netns(name) for name in VMS}
    for name, (mac, ip, port, vid, tagged) in VMS.items():
        lab.veth(vms[name], "eth0", sw, port)
        vms[name].ip("link", "set", "eth0", "address", mac)
        dev = "eth0"
        if tagged:
            dev = f"eth0.{vid}"
            vms[name].ip("link", "add", "link", "eth0", "name", dev, "type", "vlan", "id", str(vid))
            vms[name].link_up(dev)
        vms[name].ip("addr", "add", f"{ip}/24", "dev", dev)
    lab.veth(vtep2, "uplink", sw, "uplink")
    sw.ip("addr", "add", f"{LOCAL_VTEP}/24", "dev", "uplink")
    vtep2.ip("addr", "add", f"{REMOTE_VTEP}/24", "dev", "uplink")
    sw.ip(
        "link", "add", "br0", "address", SVI_MAC, "type", "bridge", "vlan_filtering", "1",
        "stp_state", "0", "mcast_snooping", "0",
    )  # fmt: skip
    extra = ("vnifilter",) if variant == "vnifilter" else ()
    sw.ip(
        "link", "add", "vxlan48", "type", "vxlan", "dstport", str(VXLAN_PORT),
        "local", LOCAL_VTEP, "nolearning", "external", *extra,
    )  # fmt: skip
    for dev in ("swp1", "swp2", "swp3", "swp4", "vxlan48"):
        sw.ip("link", "set", dev, "master", "br0")
    cumulus_svis(sw)
    cmds = []
    for _name, (_mac, _ip, port, vid, tagged) in VMS.items():
        cmds += [f"vlan del dev {port} vid 1", f"vlan add dev {port} vid {vid}"]
        if not tagged:
            cmds[-1] += " pvid untagged"
    cmds += [
        "vlan add dev br0 vid 10 self",
        "vlan add dev br0 vid 20 self",
        "vlan del dev vxlan48 vid 1",
        "vlan add dev vxlan48 vid 10",
        "vlan add dev vxlan48 vid 20",
        "link set dev vxlan48 vlan_tunnel on learning off neigh_suppress on",
        *(f"vlan add dev vxlan48 vid {vid} tunnel_info id {vni}" for vid, vni in VNI.items()),
    ]
    if variant == "vnifilter":
        cmds += [f"vni add dev vxlan48 vni {vni}" for vni in VNI.values()]
    for cmd in cmds:
        sw.run("bridge", *cmd.split())
    sw.link_up("br0", "vxlan48", "vlan10", "vlan20", "vlan10-v0")
    for dev, addr in (
        ("vlan10", "10.0.10.2/24"),
        ("vlan10-v0", "10.0.10.1/24"),
        ("vlan20", "10.0.20.2/24"),
    ):
        sw.ip("addr", "add", addr, "dev", dev)
    for mac, ip, vid in (*((VMS[n][0], VMS[n][1], VMS[n][3]) for n in REMOTE), STAYS_REMOTE):
        sw.remote_neighbor(ip, mac, f"vlan{vid}")
        sw.run(
            "bridge", "fdb", "replace", mac, "dev", "vxlan48", "master", "extern_learn",
            "vlan", str(vid),
        )  # fmt: skip
        sw.run(
            "bridge", "fdb", "replace", mac, "dev", "vxlan48", "self", "extern_learn",
            "dst", REMOTE_VTEP, "src_vni", str(VNI[vid]),
        )  # fmt: skip
    tx = {name: lab.tx(vms[name], "eth0") for name in VMS}
    udp = lab.keep(vtep2.socket(socket.AF_INET, socket.SOCK_DGRAM))
    return Leaf(variant, sw, vms, tx, vtep2, udp, lab.serve(sw))


def _fdb_port(sw: netlab.Netns, mac: str) -> str | None:
    """The port of the bridge's own (master) entry for `mac`, None without one."""
    out = sw.run("bridge", "-j", "fdb", "show", "br", "br0").stdout
    for e in json.loads(out) if out.strip() else []:
        if e.get("mac") == mac and "self" not in e.get("flags", []):
            return str(e["ifname"])
    return None


def _dropped(reason: str, port: str, mac: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (e.get("reason"), e.get("port"), e.get("mac")) == (reason, port, mac)


def _egress_vid(f: netlab.Frame) -> int | None:
    p = Ether(f.data)
    return f.vlan if f.vlan is not None else (p[Dot1Q].vlan if Dot1Q in p else None)


def _served_on_its_port(
    leaf: Leaf, vm: str, trigger: Callable[[], object] | None = None
) -> dict[str, Any]:
    """The round of `vm` migrating here: one announcement on its port, in its VLAN's domain
    with its VNI; one probe, from the SVI, with the port's tag; the takeover on the SVI."""
    mac, ip, port, vid, tagged = VMS[vm]
    d = leaf.daemon
    cap = leaf.vms[vm].capture("eth0")
    if trigger is None:
        leaf.rarp(vm)
    else:
        trigger()
    [line] = d.wait_event("announcement", lambda e: e["mac"] == mac, SLOW)
    assert (line["port"], line["domain"], line["probes"]) == (port, f"vlan{vid}", 1)
    assert line["vni"] == VNI[vid] and "result" not in line
    [probe] = cap.wait_for(1, SLOW, probe_to(mac))
    p = Ether(probe.data)
    assert (p.src, p[ARP].psrc, p[ARP].pdst) == (SVI_MAC, f"10.0.{vid}.2", ip)
    assert _egress_vid(probe) == (vid if tagged else None)
    d.wait_event("takeover", lambda e: e["mac"] == mac, SLOW)
    netlab.wait_until(lambda: "extern_learn" not in neigh(leaf.sw, ip, f"vlan{vid}"), SLOW, 0.05)
    assert neigh(leaf.sw, ip, f"vlan{vid}").get("lladdr") == mac
    # One round for the RARP and the FDB move it caused (vxlan48 -> the port), one probe.
    assert _fdb_port(leaf.sw, mac) == port
    assert len(leaf.announcements(mac)) == 1
    assert len(cap.matching(probe_to(mac))) == 1
    return line


def test_rarp_on_an_access_port_is_one_round_probed_untagged(leaf: Leaf) -> None:
    _served_on_its_port(leaf, "vm1")
    leaf.daemon.wait_event("dropped", _dropped("bridge-copy", "vlan10", VMS["vm1"][0]), SLOW)


def test_rarp_on_a_trunk_is_one_round_probed_tagged(leaf: Leaf) -> None:
    _served_on_its_port(leaf, "vm2")


def test_fdb_move_from_vxlan48_to_a_local_port_is_one_round(leaf: Leaf) -> None:
    # vm3 announces nothing: its first frame after the migration (an ARP request for its
    # gateway) moves its MAC from vxlan48 to swp3, and that starts the round.
    mac, ip, _port, _vid, _tagged = VMS["vm3"]
    first = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(hwsrc=mac, psrc=ip, pdst="10.0.10.1")
    line = _served_on_its_port(leaf, "vm3", lambda: leaf.tx["vm3"].send(bytes(first)))
    assert (line["trigger"], line["moved_from"]) == ("fdb-move", "vxlan48")


def test_old_leaf_sends_nothing_for_a_rarp_from_the_fabric(leaf: Leaf) -> None:
    mac, ip, port, vid, _tagged = VMS["vm4"]
    d = leaf.daemon
    # Before it migrates, vm4 is local here: its binding learned on the SVI, its MAC on
    # swp4, learned by the bridge from its last frame (an ARP request for its gateway).
    leaf.sw.ip("neigh", "replace", ip, "lladdr", mac, "dev", "vlan10", "nud", "stale")
    last = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(hwsrc=mac, psrc=ip, pdst="10.0.10.1")
    leaf.tx["vm4"].send(bytes(last))
    netlab.wait_until(lambda: _fdb_port(leaf.sw, mac) == port, SLOW, 0.05)
    at_vm4 = leaf.vms["vm4"].capture("eth0")  # where a wrongly sent probe would go
    at_vtep2 = leaf.vtep2.capture("uplink")  # or, encapsulated, to the fabric
    leaf.flood(mac, VNI[vid])
    # A second flood, of a host this leaf does not know, as a marker: the capture hands
    # each device's sightings to one socket in order (fanout by ingress ifindex), so once
    # the marker's sightings on vxlan48 and on the SVI are logged, so are vm4's.
    leaf.flood(MARKER_MAC, VNI[vid])
    for who in (mac, MARKER_MAC):
        d.wait_event("dropped", _dropped("fabric-port", "vxlan48", who), SLOW)
        d.wait_event("dropped", _dropped("bridge-copy", "vlan10", who), SLOW)
    # The bridge delivered it (the VNI mapped to VLAN 10 by the tunnel info): vm4's old
    # port got the flood, untagged.
    [flooded] = at_vm4.wait_for(
        1, SLOW, lambda f: (Ether(f.data).type, Ether(f.data).src) == (0x8035, mac)
    )
    assert _egress_vid(flooded) is None
    assert leaf.announcements(mac) == []
    assert not at_vm4.matching(probe_to(mac))
    assert not at_vtep2.matching(
        lambda f: not f.outgoing and _mac(mac) in f.data and b"\x08\x06" in f.data
    )
    # Nothing changed: the binding and the FDB entry are the ones vm4 left behind.
    assert neigh(leaf.sw, ip, "vlan10").get("lladdr") == mac
    assert _fdb_port(leaf.sw, mac) == port
    [shown] = leaf.ctl("show", mac)["macs"]
    assert shown["history"] == [] and shown["rounds_in_flight"] == []


def test_vlan_to_vni_map_is_read_from_the_bridge(leaf: Leaf) -> None:
    # What the mirror made of vxlan48's tunnel info, as rarp-replyctl shows it: the VNI
    # of a round's domain, and of each FDB entry's VLAN, local or behind the fabric.
    mac1 = VMS["vm1"][0]
    if not leaf.announcements(mac1):  # run alone (-k): migrate vm1 first
        _served_on_its_port(leaf, "vm1")
    [m1] = leaf.ctl("show", mac1)["macs"]
    [fdb] = m1["fdb"]
    assert (fdb["port"], fdb["vlan"], fdb["domain"], fdb["vni"]) == ("swp1", 10, "vlan10", 10010)
    [h] = m1["history"]
    assert (h["domain"], h["vni"]) == ("vlan10", 10010)
    [m5] = leaf.ctl("show", STAYS_REMOTE[0])["macs"]
    [fdb] = m5["fdb"]
    assert (fdb["port"], fdb["vlan"], fdb["port_role"]) == ("vxlan48", 20, "fabric-port")
    assert fdb["domain"] is None and fdb["vni"] == 10020
    assert [b["address"] for b in m5["bindings"]] == [STAYS_REMOTE[1]]
