"""The guest kernels have what the leaf layouts need (VLAN-aware bridges, VRF, aggregates).

Runs only in the VM images (`sudo bash scripts/test-vm`): the host kernel of the development
machines lacks most of it. Each test builds the device in a namespace and reads back what the
kernel made of it (iproute2's JSON), so a missing feature fails here, with the kernel's own
error, before the tests that rely on it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
from typing import Any

import pytest

from tests.support import netlab
from tests.vm.vlanlab import ANYCAST_MAC

pytestmark = [pytest.mark.vm, pytest.mark.netns]

SVI_MAC = "02:00:00:00:10:01"


def kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    assert m, platform.release()
    return int(m.group(1)), int(m.group(2))


def ip_json(ns: netlab.Netns, *args: str) -> Any:
    return json.loads(ns.run("ip", "-j", "-d", *args).stdout)


def link(ns: netlab.Netns, name: str) -> dict[str, Any]:
    (info,) = ip_json(ns, "link", "show", "dev", name)
    return info  # type: ignore[no-any-return]


def vlans(ns: netlab.Netns) -> dict[str, dict[int, set[str]]]:
    """`bridge -j vlan show` as {port: {vid: flags}} (flags: 'PVID', 'Egress Untagged')."""
    out: dict[str, dict[int, set[str]]] = {}
    for entry in json.loads(ns.run("bridge", "-j", "vlan", "show").stdout):
        port = out.setdefault(entry["ifname"], {})
        for vlan in entry["vlans"]:
            port[vlan["vlan"]] = set(vlan.get("flags", []))
    return out


def vlan_aware_bridge(lab: netlab.Lab) -> tuple[netlab.Netns, netlab.Netns, netlab.Netns]:
    """`sw`: br0 filtering VLANs; swp1 an access port (VLAN 10, PVID, untagged) to host
    `h1`; swp2 a trunk (VLAN 20 tagged) to host `h2`; SVIs vlan10/vlan20 on br0."""
    sw, h1, h2 = lab.netns("sw"), lab.netns("h1"), lab.netns("h2")
    lab.veth(h1, "eth0", sw, "swp1")
    lab.veth(h2, "eth0", sw, "swp2")
    sw.ip(
        "link", "add", "br0", "address", SVI_MAC, "type", "bridge",
        "vlan_filtering", "1", "vlan_default_pvid", "0", "stp_state", "0",
    )  # fmt: skip
    for port in ("swp1", "swp2"):
        sw.ip("link", "set", port, "master", "br0")
    sw.run("bridge", "vlan", "add", "dev", "swp1", "vid", "10", "pvid", "untagged")
    sw.run("bridge", "vlan", "add", "dev", "swp2", "vid", "20")
    for vid in ("10", "20"):
        sw.run("bridge", "vlan", "add", "dev", "br0", "vid", vid, "self")
        sw.ip("link", "add", "link", "br0", "name", f"vlan{vid}", "type", "vlan", "id", vid)
    sw.link_up("br0", "vlan10", "vlan20")
    return sw, h1, h2


def resolves(ns: netlab.Netns, dev: str, addr: str, mac: str) -> bool:
    """Send one UDP datagram to `addr` (which makes the kernel ARP for it) and report whether
    the neighbour entry now holds `mac`: an ARP request and reply crossed the bridge."""
    with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", (addr, 9))
    for entry in ip_json(ns, "neigh", "show", "dev", dev):
        if entry.get("dst") == addr and entry.get("lladdr") == mac:
            return True
    return False


def test_vlan_filtering_bridge_with_pvid_and_untagged_ports(lab: netlab.Lab) -> None:
    sw, _, _ = vlan_aware_bridge(lab)
    assert link(sw, "br0")["linkinfo"]["info_data"]["vlan_filtering"] == 1
    table = vlans(sw)
    assert table["swp1"] == {10: {"PVID", "Egress Untagged"}}
    assert table["swp2"] == {20: set()}


def test_8021q_svis_carry_the_access_and_the_trunk_vlan(lab: netlab.Lab) -> None:
    sw, h1, h2 = vlan_aware_bridge(lab)
    for vid in (10, 20):
        info = link(sw, f"vlan{vid}")
        assert info["linkinfo"]["info_kind"] == "vlan"
        assert info["linkinfo"]["info_data"]["id"] == vid
        assert info["link"] == "br0"
    sw.ip("addr", "add", "192.0.2.1/24", "dev", "vlan10")
    sw.ip("addr", "add", "198.51.100.1/24", "dev", "vlan20")
    # Untagged on the access port: VLAN 10 by its PVID, reaching vlan10.
    h1.ip("addr", "add", "192.0.2.10/24", "dev", "eth0")
    netlab.wait_until(
        lambda: resolves(h1, "eth0", "192.0.2.1", SVI_MAC), what="h1 to resolve vlan10"
    )
    # Tagged 20 on the trunk, reaching vlan20.
    h2.ip("link", "add", "link", "eth0", "name", "eth0.20", "type", "vlan", "id", "20")
    h2.ip("addr", "add", "198.51.100.10/24", "dev", "eth0.20")
    h2.link_up("eth0.20")
    netlab.wait_until(
        lambda: resolves(h2, "eth0.20", "198.51.100.1", SVI_MAC), what="h2 to resolve vlan20"
    )


def test_vrf_holds_the_svi_and_its_routes(lab: netlab.Lab) -> None:
    sw, _, _ = vlan_aware_bridge(lab)
    sw.ip("link", "add", "vrf-blue", "type", "vrf", "table", "1001")
    sw.link_up("vrf-blue")
    sw.ip("link", "set", "vlan10", "master", "vrf-blue")
    sw.ip("addr", "add", "192.0.2.1/24", "dev", "vlan10")
    assert link(sw, "vrf-blue")["linkinfo"]["info_data"]["table"] == 1001
    assert link(sw, "vlan10")["master"] == "vrf-blue"
    routes = ip_json(sw, "route", "show", "table", "1001")
    assert any(r.get("dst") == "192.0.2.0/24" and r.get("dev") == "vlan10" for r in routes)
    main = ip_json(sw, "route", "show", "table", "main")
    assert not any(r.get("dst") == "192.0.2.0/24" for r in main)


@pytest.mark.parametrize("kind", ["bond", "team"])
def test_aggregate_with_two_members_on_the_bridge(lab: netlab.Lab, kind: str) -> None:
    """Cumulus bonds and SONiC PortChannels (team devices). A team port is enslaved by
    rtnetlink alone (team_add_slave); teamd only decides which ports carry traffic."""
    sw, h = lab.netns("sw"), lab.netns("h")
    for i in (1, 2):
        lab.veth(h, f"eth{i}", sw, f"swp{i}", up=False)
    args = ["mode", "802.3ad"] if kind == "bond" else []
    sw.ip("link", "add", "agg0", "type", kind, *args)
    for i in (1, 2):
        sw.ip("link", "set", f"swp{i}", "master", "agg0")
    sw.ip("link", "add", "br0", "type", "bridge", "vlan_filtering", "1")
    sw.ip("link", "set", "agg0", "master", "br0")
    sw.link_up("swp1", "swp2", "agg0", "br0")
    assert link(sw, "agg0")["linkinfo"]["info_kind"] == kind
    assert link(sw, "agg0")["master"] == "br0"
    for i in (1, 2):
        member = link(sw, f"swp{i}")
        assert member["master"] == "agg0"
        assert member["linkinfo"]["info_slave_kind"] == kind


def test_dummy_device(lab: netlab.Lab) -> None:
    sw = lab.netns("sw")
    sw.ip("link", "add", "lo-vtep", "type", "dummy")
    sw.ip("addr", "add", "10.0.0.1/32", "dev", "lo-vtep")
    sw.link_up("lo-vtep")
    assert link(sw, "lo-vtep")["linkinfo"]["info_kind"] == "dummy"


def test_anycast_macvlan_on_the_svi(lab: netlab.Lab) -> None:
    """Cumulus's anycast gateway: `vlan10-v0`, a private-mode macvlan on the SVI."""
    sw, _, _ = vlan_aware_bridge(lab)
    sw.ip(
        "link", "add", "link", "vlan10", "name", "vlan10-v0", "address", ANYCAST_MAC,
        "type", "macvlan", "mode", "private",
    )  # fmt: skip
    sw.link_up("vlan10-v0")
    info = link(sw, "vlan10-v0")
    assert info["linkinfo"]["info_kind"] == "macvlan"
    assert info["linkinfo"]["info_data"]["mode"] == "private"
    assert info["link"] == "vlan10"
    assert info["address"] == ANYCAST_MAC


def single_vxlan_device(sw: netlab.Netns, *extra: str) -> None:
    """Cumulus's `vxlan48`: one `external` VXLAN device for every VNI, a port of br0."""
    sw.ip(
        "link", "add", "vxlan48", "type", "vxlan", "dstport", "4789", "local", "10.0.0.1",
        "external", *extra,
    )  # fmt: skip
    sw.ip("link", "set", "vxlan48", "master", "br0")
    sw.link_up("vxlan48")


def test_single_vxlan_device_with_vlan_tunnel_info(lab: netlab.Lab) -> None:
    """VLAN to VNI through the bridge's tunnel info (IFLA_BRIDGE_VLAN_TUNNEL_INFO)."""
    sw, _, _ = vlan_aware_bridge(lab)
    single_vxlan_device(sw)
    sw.run("bridge", "link", "set", "dev", "vxlan48", "vlan_tunnel", "on")
    sw.run("bridge", "vlan", "add", "dev", "vxlan48", "vid", "10")
    sw.run("bridge", "vlan", "add", "dev", "vxlan48", "vid", "10", "tunnel_info", "id", "10010")
    info = link(sw, "vxlan48")
    assert info["linkinfo"]["info_data"]["external"] is True
    assert info["linkinfo"]["info_slave_data"]["vlan_tunnel"] is True
    tunnels = json.loads(sw.run("bridge", "-j", "vlan", "tunnelshow").stdout)
    (entry,) = [t for t in tunnels if t["ifname"] == "vxlan48"]
    assert [(t["vlan"], t["tunid"]) for t in entry["tunnels"]] == [(10, 10010)]


def test_single_vxlan_device_with_vnifilter(lab: netlab.Lab) -> None:
    """VNI filtering on an external VXLAN device (`bridge vni`), which FRR 9+ uses for
    single-VXLAN-device setups. Added in Linux 5.18 ("vxlan: add support for vni
    filtering"): both guest kernels (6.1, 6.12) must have it."""
    if kernel_version() < (5, 18):
        pytest.skip(f"kernel {platform.release()} predates VXLAN vnifilter (5.18)")
    sw, _, _ = vlan_aware_bridge(lab)
    single_vxlan_device(sw, "vnifilter")
    sw.run("bridge", "vni", "add", "dev", "vxlan48", "vni", "10010")
    sw.run("bridge", "vni", "add", "dev", "vxlan48", "vni", "10020")
    assert link(sw, "vxlan48")["linkinfo"]["info_data"]["vnifilter"] is True
    out = json.loads(sw.run("bridge", "-j", "vni", "show", "dev", "vxlan48").stdout)
    vnis = sorted(v["vni"] for dev in out for v in dev["vnis"])
    assert vnis == [10010, 10020]


def test_running_in_the_image_the_runner_named() -> None:
    """The session runs where scripts/test-vm said (a guard against testing the host)."""
    image = os.environ["RARP_REPLAY_VM"]
    expected = {"bookworm": (6, 1), "trixie": (6, 12)}
    assert image in expected
    assert kernel_version() == expected[image]
