"""A three-leaf EVPN fabric with routing between subnets (IRB), for issue 14's question:
does a client in another subnet get a silent VM back after the VM live-migrated?

Topology (every box a namespace of one `netlab.Lab`)::

                     spine: bridge "ul" (the underlay, 198.51.100.0/24)
          /                        |                          \\
      leaf1 (.1)               leaf2 (.2)                  leaf3 (.3)     VTEPs 203.0.113.N on lo
   VLAN 10 + VLAN 20        VLAN 10 + VLAN 20           VLAN 10 + VLAN 20  iBGP full mesh, EVPN
     |        \\                |                              \\
    hv1     client1            hv2                            client3
     |   198.18.20.11                                       198.18.20.13
    vm (52:54:00:aa:00:10, 192.0.2.10/24, 2001:db8:10::10/64): moves hv1 -> hv2

Subnets: VLAN 10 = VNI 10 (the VM), VLAN 20 = VNI 20 (the clients), one anycast gateway
(address .1 and MAC 00:00:5e:00:01:01) on every leaf. The VM answers ARP, ND and echo and
originates nothing: its gateway's binding is permanent, so it never resolves it.

Layouts (`layout=`):

* "traditional" (any kernel with bridges, VXLAN, macvlan): asymmetric IRB. Per-VNI
  traditional bridges br10 (vxlan10 + "hv") and br20 (vxlan20 + "c20") in the default
  VRF; each bridge has the anycast MAC and gateway address, so the bridge is the SVI.
* "cumulus" (VLAN filtering, 802.1Q, VRF): symmetric IRB as Cumulus Linux lays it out.
  VLAN-aware br_default, the hypervisor on access port swp1 (PVID 10 untagged), the client
  on trunk swp2 (VLAN 20 tagged), SVIs vlan10/vlan20 with per-leaf addresses, the anycast
  gateway as macvlans vlanN-v0 (private, 00:00:5e:00:01:01), VRF vrf1 with L3VNI 4001
  (SVI vlan4001_l3, VLAN 4001), one VXLAN device per VNI.
* "sonic" (also team): symmetric IRB as SONiC lays it out. VLAN-aware "Bridge", SVIs
  Vlan10/Vlan20 carrying the anycast MAC and address, Vlan4001 for L3VNI 4001, VRF Vrf1,
  VXLAN devices vtep-10/-20/-4001; leaf2 reaches hv2 through team PortChannel1 (member
  Ethernet0). The kernel bridge learns nothing on local ports (the ASIC does, and
  fdbsyncd writes `extern_learn` entries: `fdbsyncd_learn`), and RARP never reaches the
  CPU (tc drops EtherType 0x8035 at the local ports).

`measure_migration` moves the VM and returns what each client felt (tests/support/pinger)
plus what the fabric showed: probes the old leaf sent, the VM's routes on leaf3.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rarp_replay.frames.ethernet import ETH_P_8021Q
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.support.fabric import (
    BgpWatch,
    MacIpRoute,
    bgp_evpn_conf,
    build_silent_vm,
    parse_macip_table,
    replug,
    send_rarps,
    start_daemons,
    start_frr,
    vtysh,
)
from tests.support.pinger import Pinger, PingOutcome
from tests.vm.vlanlab import ANYCAST_MAC, team_mode

LAYOUTS = ("traditional", "cumulus", "sonic")
LEAVES = ("leaf1", "leaf2", "leaf3")
VTEP = {leaf: f"203.0.113.{i}" for i, leaf in enumerate(LEAVES, 1)}
UNDERLAY = {leaf: f"198.51.100.{i}" for i, leaf in enumerate(LEAVES, 1)}
HYPERVISOR = {"hv1": "leaf1", "hv2": "leaf2"}

VM_MAC = "52:54:00:aa:00:10"
VM_IP4, VM_IP6 = "192.0.2.10", "2001:db8:10::10"


@dataclass(frozen=True)
class Subnet:
    vlan: int
    vni: int
    net4: str  # address prefix without the host part, e.g. "192.0.2."
    net6: str  # e.g. "2001:db8:10::"

    def v4(self, host: int) -> str:
        return f"{self.net4}{host}"

    def v6(self, host: int) -> str:
        return f"{self.net6}{host:x}"


VM_NET = Subnet(10, 10, "192.0.2.", "2001:db8:10::")
CLIENT_NET = Subnet(20, 20, "198.18.20.", "2001:db8:20::")
SUBNETS = (VM_NET, CLIENT_NET)
GATEWAY_HOST = 1  # the anycast gateway is .1 / ::1 in every subnet
L3VNI, L3VLAN = 4001, 4001
# A client still reaches the VM if one of its last 25 echoes (every 10 ms) was answered.
GRACE = 0.25


@dataclass(frozen=True)
class Client:
    leaf: str
    mac: str
    host: int  # its address in CLIENT_NET

    @property
    def ips(self) -> tuple[str, str]:
        return CLIENT_NET.v4(self.host), CLIENT_NET.v6(self.host)


CLIENTS = {
    "client1": Client("leaf1", "02:00:00:00:14:0b", 11),  # behind the leaf the VM leaves
    "client3": Client("leaf3", "02:00:00:00:14:0d", 13),  # behind a third leaf
}


@dataclass(frozen=True)
class LeafLayout:
    """Device names of one layout (what the tests and measurements look at)."""

    bridge: dict[int, str]  # VLAN -> the bridge carrying it
    svi: dict[int, str]  # VLAN -> the L3 device zebra installs neighbours on
    hv_port: dict[str, str]  # leaf -> its port facing the hypervisor
    client_port: str
    vrf: str | None

    def zebra_conf(self) -> str:
        return f"vrf {self.vrf}\n vni {L3VNI}\nexit-vrf\n" if self.vrf else ""


TRADITIONAL = LeafLayout(
    bridge={10: "br10", 20: "br20"},
    svi={10: "br10", 20: "br20"},
    hv_port={"leaf1": "hv", "leaf2": "hv"},
    client_port="c20",
    vrf=None,
)
CUMULUS = LeafLayout(
    bridge={10: "br_default", 20: "br_default", L3VLAN: "br_default"},
    svi={10: "vlan10", 20: "vlan20"},
    hv_port={"leaf1": "swp1", "leaf2": "swp1"},
    client_port="swp2",
    vrf="vrf1",
)
SONIC = LeafLayout(
    bridge={10: "Bridge", 20: "Bridge", L3VLAN: "Bridge"},
    svi={10: "Vlan10", 20: "Vlan20"},
    hv_port={"leaf1": "Ethernet0", "leaf2": "PortChannel1"},
    client_port="Ethernet8",
    vrf="Vrf1",
)
LAYOUT = {"traditional": TRADITIONAL, "cumulus": CUMULUS, "sonic": SONIC}


def router_mac(leaf: str) -> str:
    """Each leaf's own MAC (its bridge's, so its SVIs' and L3VNI's: the router MAC)."""
    return f"02:00:00:00:0{LEAVES.index(leaf) + 1}:00"


def svi_host(leaf: str) -> int:
    """A leaf's own address in each subnet (Cumulus' per-leaf SVI address): .251 to .253."""
    return 250 + LEAVES.index(leaf) + 1


@dataclass
class Migration:
    """What one migration looked like."""

    old: str
    new: str
    moved: float  # time.time() the cable moved
    t0: float  # first RARP (or, without RARP, the FDB entry)
    clients: dict[str, PingOutcome] = field(default_factory=dict)  # "client3/v4" -> outcome
    old_leaf_probes: int = 0
    # Seen on leaf3's underlay port, seconds after t0: the new leaf's first MAC/IP
    # advertisement for VM_IP4 and the old leaf's withdrawal of its own (None: not seen).
    new_route_at: float | None = None
    withdrawal_at: float | None = None
    routes_leaf3: list[MacIpRoute] = field(default_factory=list)  # the VM's MAC/IP routes
    zebra_mac_leaf3: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "clients": {
                k: {
                    "restored": o.restored,
                    "downtime_ms": _ms(o.downtime),
                    "stable_from_ms": _ms(o.stable_from),
                    "longest_gap_ms": round(o.longest_gap * 1e3, 1),
                    "lost_again": o.lost_again,
                    "last_reply_ms": None if o.last_reply is None else round(o.last_reply * 1e3),
                }
                for k, o in sorted(self.clients.items())
            },
            "old_leaf_probes": self.old_leaf_probes,
            "bgp_at_leaf3_ms": {
                "new_route": _ms(self.new_route_at),
                "withdrawal": _ms(self.withdrawal_at),
            },
            "routes_leaf3": sorted((r.ip or "", r.vtep, r.seq) for r in self.routes_leaf3),
            "zebra_mac_leaf3": {
                k: self.zebra_mac_leaf3.get(k) for k in ("type", "remoteVtep", "remoteSequence")
            },
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 1)


class IrbFabric:
    """Three FRR leaves with routing between VLAN 10 and VLAN 20, a silent VM, two clients.

    Builds and starts everything in the constructor; returns once every leaf knows every
    other as a VTEP of both VNIs. Namespaces and processes belong to `lab`; `close()`
    (also run at interpreter exit) removes the FRR state directory.
    """

    def __init__(
        self,
        lab: netlab.Lab,
        layout: str = "traditional",
        start_timeout: float = 30.0,
        *,
        zebra_debug: bool = False,
    ) -> None:
        if layout not in LAYOUT:
            raise ValueError(f"layout {layout!r}: one of {', '.join(LAYOUTS)}")
        self.lab = lab
        self.layout = layout
        self.names = LAYOUT[layout]
        self.vm_location = "hv1"
        self.daemons: dict[str, DaemonProc] = {}
        self._dir = Path(tempfile.mkdtemp(prefix=f"{lab.prefix}-irb-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self.ns = {
            role: lab.netns(role) for role in ("spine", *LEAVES, "hv1", "hv2", "vm", *CLIENTS)
        }
        self.vm = self.ns["vm"]
        self._underlay()
        for leaf in LEAVES:
            getattr(self, f"_leaf_{layout}")(leaf)
        self._hypervisors()
        self._clients()
        for leaf in LEAVES:
            d = self._dir / leaf
            d.mkdir(parents=True)
            peers = [UNDERLAY[other] for other in LEAVES if other != leaf]
            extra = ""
            if self.names.vrf:
                # Symmetric IRB: type-2 routes carry the L3VNI's RT and router MAC, and
                # bgpd imports them into the VRF as host routes (/32, /128).
                extra = (
                    f"router bgp 65000 vrf {self.names.vrf}\n"
                    f" bgp router-id {VTEP[leaf]}\n"
                    " address-family l2vpn evpn\n"
                    "  advertise ipv4 unicast\n"
                    "  advertise ipv6 unicast\n"
                    " exit-address-family\n"
                )
            conf = bgp_evpn_conf(leaf, d, VTEP[leaf], peers, extra=extra)
            # `debug zebra vxlan` logs what zebra does with remote MACs, neighbours and
            # router MACs (e.g. "L3VNI 4001 RMAC ... delete", issue 14): costly under TCG.
            debug = "debug zebra vxlan\ndebug zebra kernel\n" if zebra_debug else ""
            start_frr(self.ns[leaf], d, leaf, conf, debug + self.names.zebra_conf())
        self._wait_converged(start_timeout)
        # BGP as leaf3 sees it (every leaf's UPDATEs cross leaf3's underlay port): which
        # came first after a move, the new leaf's MAC/IP route or the old leaf's withdrawal.
        # Started after convergence: the initial table exchange is noise.
        self.bgp = BgpWatch(self.ns["leaf3"].capture("ul", BgpWatch.is_bgp))

    # ----------------------------------------------------------------- building

    def _underlay(self) -> None:
        spine = self.ns["spine"]
        for role in ("spine", *LEAVES, *HYPERVISOR):
            # Only the SVIs, the VM and the clients speak IPv6: link-local chatter from
            # switch ports would be learned and advertised as hosts. (Not "all": writing
            # it sets every existing device, addrconf_disable_ipv6.)
            self.ns[role].sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        ports = []
        for leaf in LEAVES:
            ns = self.ns[leaf]
            port = f"p{leaf[-1]}"
            self.lab.veth(ns, "ul", spine, port)
            ports.append(port)
            ns.sysctl("net.ipv4.ip_forward", 1)
            ns.ip("addr", "add", f"{UNDERLAY[leaf]}/24", "dev", "ul")
            ns.ip("addr", "add", f"{VTEP[leaf]}/32", "dev", "lo")
            for other in LEAVES:
                if other != leaf:
                    ns.ip("route", "add", f"{VTEP[other]}/32", "via", UNDERLAY[other])
        spine.bridge("ul", *ports)

    def _vxlan(self, leaf: str, name: str, vni: int) -> None:
        self.ns[leaf].ip(
            "link", "add", name, "type", "vxlan", "id", str(vni), "local", VTEP[leaf],
            "dstport", "4789", "nolearning",
        )  # fmt: skip

    def _ipv6_on(self, leaf: str, *devs: str) -> None:
        ns = self.ns[leaf]
        ns.sysctl("net.ipv6.conf.all.forwarding", 1)
        for dev in devs:
            ns.sysctl(f"net.ipv6.conf.{dev.replace('.', '/')}.disable_ipv6", 0)

    def _addresses(self, ns: netlab.Netns, dev: str, net: Subnet, host: int) -> None:
        ns.ip("addr", "add", f"{net.v4(host)}/24", "dev", dev)
        ns.ip("addr", "add", f"{net.v6(host)}/64", "dev", dev, "nodad")

    def _leaf_traditional(self, leaf: str) -> None:
        ns = self.ns[leaf]
        for net in SUBNETS:
            br, vx = f"br{net.vlan}", f"vxlan{net.vni}"
            self._vxlan(leaf, vx, net.vni)
            # The anycast gateway is the bridge itself: same MAC and address on every leaf.
            ns.bridge(br, vx, mac=ANYCAST_MAC)
            ns.run("bridge", "link", "set", "dev", vx, "neigh_suppress", "on", "learning", "off")
            self._ipv6_on(leaf, br)
            self._addresses(ns, br, net, GATEWAY_HOST)

    def _vlan_bridge(self, leaf: str, bridge: str) -> None:
        ns = self.ns[leaf]
        ns.ip(
            "link", "add", bridge, "address", router_mac(leaf), "type", "bridge",
            "vlan_filtering", "1", "vlan_default_pvid", "0", "stp_state", "0",
            "mcast_snooping", "0",
        )  # fmt: skip
        ns.link_up(bridge)
        vrf = self.names.vrf
        assert vrf is not None
        ns.ip("link", "add", vrf, "type", "vrf", "table", "1001")
        ns.link_up(vrf)
        self._ipv6_on(leaf, vrf)

    def _vlan_port(self, leaf: str, port: str, vid: int, *, tagged: bool = False) -> None:
        ns = self.ns[leaf]
        bridge = self.names.bridge[vid]
        ns.ip("link", "set", port, "master", bridge)
        ns.link_up(port)
        extra = () if tagged else ("pvid", "untagged")
        ns.run("bridge", "vlan", "add", "dev", port, "vid", str(vid), *extra)

    def _vni_ports(self, leaf: str, names: dict[int, str]) -> None:
        """One VXLAN device per VNI, each the access port of its VLAN on the bridge."""
        ns = self.ns[leaf]
        for vid, vni in ((10, 10), (20, 20), (L3VLAN, L3VNI)):
            vx = names[vni]
            self._vxlan(leaf, vx, vni)
            self._vlan_port(leaf, vx, vid)
            ns.run("bridge", "link", "set", "dev", vx, "neigh_suppress", "on", "learning", "off")
            ns.run("bridge", "vlan", "add", "dev", self.names.bridge[10], "vid", str(vid), "self")

    def _svi(self, leaf: str, name: str, vid: int) -> None:
        ns = self.ns[leaf]
        vrf = self.names.vrf
        assert vrf is not None
        ns.ip("link", "add", "link", self.names.bridge[10], "name", name, "type", "vlan",
              "id", str(vid))  # fmt: skip
        ns.ip("link", "set", name, "master", vrf)
        self._ipv6_on(leaf, name)
        ns.link_up(name)

    def _gateway_mac_local(self, leaf: str, vid: int) -> None:
        """The anycast MAC as a local FDB entry of the bridge in VLAN `vid`, as ifupdown2's
        addressvirtual does for a VRR MAC: a MAC of an upper device (macvlan, 802.1Q with its
        own address) only puts the bridge in promiscuous mode (__dev_set_rx_mode), and
        frames to it would be flooded to every port and VTEP of the VLAN as well."""
        self.ns[leaf].run("bridge", "fdb", "replace", ANYCAST_MAC, "dev", self.names.bridge[vid],
                          "self", "local", "vlan", str(vid))  # fmt: skip

    def _leaf_cumulus(self, leaf: str) -> None:
        ns = self.ns[leaf]
        self._vlan_bridge(leaf, "br_default")
        self._vni_ports(leaf, {10: "vxlan10", 20: "vxlan20", L3VNI: f"vxlan{L3VNI}"})
        for net in SUBNETS:
            svi, vrr = f"vlan{net.vlan}", f"vlan{net.vlan}-v0"
            self._svi(leaf, svi, net.vlan)
            ns.ip("link", "add", "link", svi, "name", vrr, "address", ANYCAST_MAC,
                  "type", "macvlan", "mode", "private")  # fmt: skip
            ns.ip("link", "set", vrr, "master", self.names.vrf or "")
            ns.link_up(vrr)
            self._ipv6_on(leaf, svi, vrr)
            self._addresses(ns, svi, net, svi_host(leaf))
            self._addresses(ns, vrr, net, GATEWAY_HOST)
            self._gateway_mac_local(leaf, net.vlan)
        self._svi(leaf, f"vlan{L3VLAN}_l3", L3VLAN)

    def _leaf_sonic(self, leaf: str) -> None:
        ns = self.ns[leaf]
        self._vlan_bridge(leaf, "Bridge")
        self._vni_ports(leaf, {10: "vtep-10", 20: "vtep-20", L3VNI: f"vtep-{L3VNI}"})
        for net in SUBNETS:
            svi = f"Vlan{net.vlan}"
            self._svi(leaf, svi, net.vlan)
            # SONiC's static anycast gateway: the SVI's own MAC and address.
            ns.ip("link", "set", svi, "address", ANYCAST_MAC)
            self._ipv6_on(leaf, svi)
            self._addresses(ns, svi, net, GATEWAY_HOST)
            self._gateway_mac_local(leaf, net.vlan)
        self._svi(leaf, f"Vlan{L3VLAN}", L3VLAN)

    def _local_port(self, leaf: str, port: str, vid: int, *, tagged: bool = False) -> None:
        """Make `port` (already in the leaf's namespace) a local port of VLAN `vid`."""
        ns = self.ns[leaf]
        if self.layout == "traditional":
            ns.ip("link", "set", port, "master", f"br{vid}")
            ns.link_up(port)
            return
        self._vlan_port(leaf, port, vid, tagged=tagged)
        if self.layout == "sonic":
            # The ASIC learns, not the kernel bridge: fdbsyncd writes what it learned.
            ns.run("bridge", "link", "set", "dev", port, "learning", "off")

    def _hypervisors(self) -> None:
        for hv, leaf in HYPERVISOR.items():
            ns = self.ns[leaf]
            port = self.names.hv_port[leaf]
            if self.layout == "sonic" and port == "PortChannel1":
                self.lab.veth(self.ns[hv], "uplink", ns, "Ethernet0")
                ns.ip("link", "add", port, "type", "team")
                team_mode(ns, port, "loadbalance")
                ns.ip("link", "set", "Ethernet0", "down")
                ns.ip("link", "set", "Ethernet0", "master", port)
                ns.link_up("Ethernet0")
            else:
                self.lab.veth(self.ns[hv], "uplink", ns, port)
            self._local_port(leaf, port, VM_NET.vlan)
            self.ns[hv].bridge("hvbr", "uplink")
            if self.layout == "sonic":
                # SONiC's control-plane policy traps ARP and ND to the CPU, not RARP (issue
                # 13): its kernel never sees one. Dropped as the frame leaves the hypervisor,
                # before any packet socket on the leaf (a tap sees a frame before the
                # receiving device's tc ingress, __netif_receive_skb_core).
                hv_ns = self.ns[hv]
                hv_ns.run("tc", "qdisc", "add", "dev", "uplink", "clsact")
                hv_ns.run("tc", "filter", "add", "dev", "uplink", "egress", "protocol",
                          "0x8035", "matchall", "action", "drop")  # fmt: skip
        build_silent_vm(
            self.lab, self.vm, self.ns["hv1"], "hvbr",
            mac=VM_MAC, ip4=f"{VM_IP4}/24", ip6=f"{VM_IP6}/64",
        )  # fmt: skip
        self._gateway(self.vm, "eth0", VM_NET, permanent=True)
        if self.layout == "sonic":
            self.fdbsyncd_learn("leaf1", VM_MAC, VM_NET.vlan)

    def _gateway(self, ns: netlab.Netns, dev: str, net: Subnet, *, permanent: bool) -> None:
        gw4, gw6 = net.v4(GATEWAY_HOST), net.v6(GATEWAY_HOST)
        ns.ip("route", "add", "default", "via", gw4)
        ns.ip("-6", "route", "add", "default", "via", gw6, "dev", dev)
        if permanent:
            # A silent VM never resolves its gateway: it knows it (it answers pings, and
            # an ARP request or NS of its own would announce it).
            for gw in (gw4, gw6):
                ns.ip("neigh", "replace", gw, "lladdr", ANYCAST_MAC, "dev", dev,
                      "nud", "permanent")  # fmt: skip

    def _clients(self) -> None:
        for name, client in CLIENTS.items():
            ns = self.ns[name]
            port = self.names.client_port
            self.lab.veth(ns, "eth0", self.ns[client.leaf], port, up=False)
            ns.ip("link", "set", "eth0", "address", client.mac)
            ns.link_up("eth0")
            dev = "eth0"
            tagged = self.layout == "cumulus"  # a trunk port: the client tags VLAN 20
            if tagged:
                dev = f"eth0.{CLIENT_NET.vlan}"
                ns.ip("link", "add", "link", "eth0", "name", dev, "type", "vlan",
                      "id", str(CLIENT_NET.vlan))  # fmt: skip
                ns.link_up(dev)
            ns.sysctl(f"net.ipv6.conf.{dev.replace('.', '/')}.addr_gen_mode", 1)
            self._addresses(ns, dev, CLIENT_NET, client.host)
            self._gateway(ns, dev, CLIENT_NET, permanent=False)
            self._local_port(client.leaf, port, CLIENT_NET.vlan, tagged=tagged)
            if self.layout == "sonic":
                self.fdbsyncd_learn(client.leaf, client.mac, CLIENT_NET.vlan)

    def fdbsyncd_learn(self, leaf: str, mac: str, vid: int, port: str | None = None) -> float:
        """Write a MAC the ASIC learned as SONiC's fdbsyncd does; time.time() after it."""
        if port is None:
            port = self.names.hv_port[leaf] if vid == VM_NET.vlan else self.names.client_port
        self.ns[leaf].run(
            "bridge", "fdb", "replace", mac, "dev", port, "master", "dynamic", "extern_learn",
            "vlan", str(vid),
        )  # fmt: skip
        return time.time()

    def _wait_converged(self, timeout: float) -> None:
        def ready() -> bool:
            for leaf in LEAVES:
                for net in SUBNETS:
                    vni = self.vtysh(leaf, f"show evpn vni {net.vni} json", check=False)
                    text = json.dumps(vni) if isinstance(vni, dict) else ""
                    if any(VTEP[o] not in text for o in LEAVES if o != leaf):
                        return False
            return True

        netlab.wait_until(ready, timeout=timeout, interval=0.2, what="EVPN up, both VNIs, 3 leaves")

    def close(self) -> None:
        self._finalizer()

    # ----------------------------------------------------------------- FRR and kernel views

    def vtysh(self, leaf: str, command: str, check: bool = True) -> Any:
        return vtysh(self._dir / leaf, command, check)

    def vm_routes(self, leaf: str) -> list[MacIpRoute]:
        """Valid MAC/IP routes for the VM in `leaf`'s BGP EVPN table (every originator)."""
        table = self.vtysh(leaf, "show bgp l2vpn evpn route type macip json")
        routes = parse_macip_table(table, VTEP[leaf], with_ip_only=True)
        return sorted((r for r in routes if r.mac == VM_MAC), key=lambda r: (r.ip or "", r.vtep))

    def zebra_mac(self, leaf: str) -> dict[str, Any]:
        """zebra's view of the VM's MAC in VNI 10 (type local/remote, remoteVtep, seqs)."""
        data = self.vtysh(leaf, f"show evpn mac vni {VM_NET.vni} mac {VM_MAC} json", check=False)
        entry = data.get(VM_MAC) if isinstance(data, dict) else None
        return dict(entry) if isinstance(entry, dict) else {}

    def remote_neighbor(self, leaf: str, ip: str) -> bool:
        """zebra's remote entry for `ip` (VM MAC, NOARP extern_learn) on `leaf`'s SVI?"""
        out = self.ns[leaf].ip("-j", "neigh", "show", ip, "dev", self.names.svi[10]).stdout
        entries = json.loads(out) if out.strip() else []
        return any(
            e.get("lladdr") == VM_MAC and "extern_learn" in e and "NOARP" in e.get("state", [])
            for e in entries
        )

    def debug_state(self, leaf: str) -> str:
        """What the kernel and zebra show on `leaf` (for failure reports)."""
        ns = self.ns[leaf]
        vrf = ("vrf", self.names.vrf) if self.names.vrf else ()
        parts = [
            ns.ip("neigh", "show", *vrf, check=False).stdout,
            ns.ip("-6", "neigh", "show", *vrf, check=False).stdout,
            ns.ip("route", "show", *vrf, check=False).stdout,
            ns.ip("-6", "route", "show", *vrf, check=False).stdout,
            ns.run("bridge", "fdb", "show", check=False).stdout,
        ]
        with contextlib.suppress(OSError):
            log = (self._dir / leaf / "zebra.log").read_text()
            lines = log.splitlines()
            # Router MAC changes (L3VNI) are the suspect: all of them, then the tail.
            rmac = [line for line in lines if "RMAC" in line][-20:]
            parts.append("zebra.log RMAC lines:\n" + "\n".join(rmac))
            parts.append("zebra.log tail:\n" + "\n".join(lines[-30:]))
        return f"--- {leaf}\n" + "\n".join(parts)

    # ----------------------------------------------------------------- scenario steps

    def start_daemons(self, *args: str, timeout: float = 15.0) -> dict[str, DaemonProc]:
        """`rarp-reply` with `args` (e.g. "--no-takeover") on every leaf."""
        self.daemons = start_daemons({leaf: self.ns[leaf] for leaf in LEAVES}, *args,
                                     timeout=timeout)  # fmt: skip
        return self.daemons

    @property
    def vm_leaf(self) -> str:
        return HYPERVISOR[self.vm_location]

    def pingers(self) -> dict[str, Pinger]:
        """One pinger per client and address family, started now."""
        return {
            f"{name}/v{'6' if ':' in dst else '4'}": Pinger(self.ns[name], dst)
            for name in CLIENTS
            for dst in (VM_IP4, VM_IP6)
        }

    def wait_reachable(
        self, pingers: dict[str, Pinger], timeout: float = 10.0, *, routes: bool = True
    ) -> None:
        """Every client reaches the VM, and (`routes`) leaf3 holds zebra's remote entries
        for it: the steady state after a move the fabric recovered from."""
        since = time.time()
        for key, p in pingers.items():
            netlab.wait_until(partial(p.replied_since, since), timeout=timeout, interval=0.02,
                              what=f"{key} reaching the VM")  # fmt: skip
        for ip in (VM_IP4, VM_IP6) if routes else ():
            netlab.wait_until(partial(self.remote_neighbor, "leaf3", ip), timeout=timeout,
                              interval=0.02, what=f"zebra's entry for {ip} on leaf3")  # fmt: skip

    def _old_leaf_probes(self, leaf: str) -> netlab.Capture:
        """Frames the leaf itself sends to the VM's addresses: ARP requests and NSs leave
        through the bridge device (802.1Q SVIs and macvlans transmit through it)."""
        arp_target = socket.inet_aton(VM_IP4)
        ns_target = socket.inet_pton(socket.AF_INET6, VM_IP6)

        def is_probe(d: bytes) -> bool:
            if d[12:14] == ETH_P_8021Q.to_bytes(2, "big"):
                d = d[:12] + d[16:]
            if d[12:14] == b"\x08\x06":
                return d[20:22] == b"\x00\x01" and d[38:42] == arp_target
            return (
                d[12:14] == b"\x86\xdd" and d[20] == 58 and d[54] == 135 and d[62:78] == ns_target
            )

        return self.ns[leaf].capture(self.names.bridge[10], is_probe)

    def migrate(self) -> tuple[float, float]:
        """Move the VM to the other hypervisor and let the fabric know as the layout does:
        QEMU's RARP burst (on SONiC the ASIC learns from its first frame, which the test
        waits to see at the port, and fdbsyncd writes the entry). Returns (moved, t0)."""
        src = self.vm_location
        dst = "hv2" if src == "hv1" else "hv1"
        moved = replug(self.ns[src], self.ns[dst], "hvbr", self.vm)
        self.vm_location = dst
        if self.layout != "sonic":
            return moved, send_rarps(self.vm, VM_MAC, "qemu")
        leaf = self.vm_leaf
        # The VM's first frame after the move (the first RARP) as the switch port gets it:
        # the ASIC learns the MAC from it, though it does not trap it to the CPU.
        seen = self.ns[dst].capture("vmtap", lambda d: d[12:14] == b"\x80\x35")
        burst = threading.Thread(target=send_rarps, args=(self.vm, VM_MAC, "qemu"), daemon=True)
        burst.start()
        seen.wait_for(1, timeout=5.0)
        t0 = self.fdbsyncd_learn(leaf, VM_MAC, VM_NET.vlan)
        burst.join()
        seen.close()
        return moved, t0

    def delay_bgp(self, leaf: str, seconds: float) -> None:
        """Hold `leaf`'s BGP messages (TCP 179, both ports) `seconds` on its underlay port;
        0 removes the delay. Delaying the old leaf's makes its withdrawal reach the others
        after the new leaf's route: make-before-break as seen on leaf3, the order issue 14
        links to leaf3's loss, whatever the machine's speed (under TCG the daemon's
        takeover is slower than the old leaf's withdrawal, and the order reverses)."""
        ns = self.ns[leaf]
        if not seconds:
            ns.run("tc", "qdisc", "del", "dev", "ul", "root", check=False)
            return
        # prio's third band carries only what the filters send there (TOS-bulk traffic
        # aside, which this lab has none of).
        for cmd in (
            "qdisc add dev ul root handle 1: prio",
            f"qdisc add dev ul parent 1:3 handle 30: netem delay {int(seconds * 1000)}ms",
            "filter add dev ul parent 1: protocol ip u32 match ip sport 179 0xffff flowid 1:3",
            "filter add dev ul parent 1: protocol ip u32 match ip dport 179 0xffff flowid 1:3",
        ):
            ns.run("tc", *cmd.split())

    def measure_migration(
        self,
        *,
        timeout: float = 3.0,
        settle: float = 1.0,
        old_bgp_delay: float = 0.0,
        steady: bool = True,
        on_move: Callable[[dict[str, Pinger], float, float], None] | None = None,
    ) -> Migration:
        """Ping from every client, move the VM, and wait until every client has had a reply
        or `timeout` seconds passed since t0 (`old_bgp_delay`: `delay_bgp` on the old leaf
        meanwhile; `steady`: first wait for leaf3's routes to the VM, which without the
        daemon nobody advertises after a first move); then `settle` more seconds of pings,
        which
        must be answered too: a remote leaf's zebra deletes its entry for the VM when the
        old leaf's withdrawal comes (~100 ms after the first RARP on the host), and a
        client that got the VM back until then loses it again. `on_move(pingers, moved, t0)`
        runs right after the move (the demo streams the pings from there)."""
        old = self.vm_leaf
        pingers = self.pingers()
        try:
            self.wait_reachable(pingers, routes=steady)
            probes = self._old_leaf_probes(old)
            if old_bgp_delay:
                self.delay_bgp(old, old_bgp_delay)
            moved, t0 = self.migrate()
            new = self.vm_leaf
            if on_move is not None:
                on_move(pingers, moved, t0)
            end = netlab.deadline(timeout) - time.monotonic() + time.time()
            while time.time() < end and not all(p.replied_since(moved) for p in pingers.values()):
                time.sleep(0.02)
            time.sleep(settle * netlab.TIME_SCALE)
        finally:
            stopped = {k: p.stop() for k, p in pingers.items()}
            if old_bgp_delay:
                self.delay_bgp(old, 0)
        result = Migration(old, new, moved, t0)
        for key, p in pingers.items():
            result.clients[key] = p.outcome(
                moved=moved, t0=t0, end=stopped[key], timeout=timeout * netlab.TIME_SCALE,
                grace=GRACE * netlab.TIME_SCALE,
            )  # fmt: skip
        # From t0: before the fabric is told, the old leaf's kernel may probe its own entry
        # for the VM (NUD, 5 s after client traffic used it: a guest under TCG took 15 s
        # from re-plug to the FDB write once), which is neither the daemon's nor the move's.
        result.old_leaf_probes = len(probes.matching(lambda f: f.outgoing and f.timestamp >= t0))
        probes.close()
        result.routes_leaf3 = self.vm_routes("leaf3")
        updates = [u for u in self.bgp.poll() if u.time >= moved and u.mac == VM_MAC]
        result.new_route_at = next(
            (u.time - t0 for u in updates
             if not u.withdraw and u.ip == VM_IP4 and u.sender == UNDERLAY[new]),
            None,
        )  # fmt: skip
        result.withdrawal_at = next(
            (u.time - t0 for u in updates
             if u.withdraw and u.ip == VM_IP4 and u.sender == UNDERLAY[old]),
            None,
        )  # fmt: skip
        result.zebra_mac_leaf3 = self.zebra_mac("leaf3")
        return result


def explain(fab: IrbFabric, m: Migration) -> str:
    """A failed assertion's context: the migration, leaf3's tables, the daemons' last lines."""
    logs = "".join(
        f"--- rarp-reply on {leaf}\n" + "".join(line for line in d.raw if '"debug"' not in line)
        for leaf, d in fab.daemons.items()
    )
    return f"{m.summary()}\n{fab.debug_state('leaf3')}\n{fab.debug_state(m.new)}\n{logs}"


def assert_restored_by_new_leaf(fab: IrbFabric, m: Migration) -> None:
    """What the daemon must achieve (issue 14's targets): every client (both families) has
    the VM back, the old leaf sent no probe, leaf3 routes to the VM through the new leaf on
    a route with a higher mobility sequence number (the old leaf's is gone), and the old
    leaf's daemon acted on none of the RARPs it heard over VXLAN."""
    assert set(m.clients) == {f"{c}/v{v}" for c in CLIENTS for v in (4, 6)}
    failed = {k: o for k, o in m.clients.items() if not o.restored}
    assert not failed, explain(fab, m)
    assert m.old_leaf_probes == 0, explain(fab, m)
    paths = {(r.ip, r.vtep) for r in m.routes_leaf3}
    assert paths == {(VM_IP4, VTEP[m.new]), (VM_IP6, VTEP[m.new])}, explain(fab, m)
    assert all(r.seq >= 1 for r in m.routes_leaf3), explain(fab, m)
    assert m.zebra_mac_leaf3.get("type") == "remote", explain(fab, m)
    assert m.zebra_mac_leaf3.get("remoteVtep") == VTEP[m.new], explain(fab, m)
    old = fab.daemons[m.old]
    assert not old.of("announcement") and not old.of("probe"), explain(fab, m)
