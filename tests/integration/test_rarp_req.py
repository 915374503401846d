"""rarp-req end to end against the real kernel (the capture itself: test_packetsock.py).

Namespace "hv" plays the hypervisor and runs the installed console script;
namespace "sw" plays the switch and captures. Frames are checked with scapy,
an independent decoder.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from rarp_replay.macaddr import parse_mac
from rarp_replay.packetsock import (
    PACKET_OUTGOING,
)
from tests.support import netlab
from tests.support.wire import SENTINEL, capture_in, collect_until, send_sentinel

pytestmark = pytest.mark.netns

MAC = "52:54:00:12:34:56"
MAC2 = "52:54:00:00:00:02"
MAC3 = "52:54:00:00:00:03"

# Kernel receive timestamps of the qemu pattern must be within this of the
# nominal gaps (50/150/250/350 ms): timer slack plus scheduling of one process.
GAP_TOLERANCE_S = 0.015


def rarp_req() -> str:
    beside = Path(sys.executable).with_name("rarp-req")
    found = str(beside) if beside.exists() else shutil.which("rarp-req")
    assert found, "console script rarp-req is not installed (pip install -e .)"
    return found


@pytest.fixture
def pair(lab: netlab.Lab) -> tuple[netlab.Netns, netlab.Netns]:
    hv, sw = lab.netns("hv"), lab.netns("sw")
    lab.veth(hv, "hv0", sw, "sw0")
    return hv, sw


def is_rarp_from(mac: str) -> Callable[[netlab.Frame], bool]:
    raw = parse_mac(mac)
    return lambda f: not f.outgoing and f.data[6:12] == raw and f.data[12:14] == b"\x80\x35"


def assert_rarp(frame: bytes, mac: str) -> None:
    """Every field of an untagged RARP request as hypervisors send it."""
    assert len(frame) == 60
    eth = Ether(frame)
    assert eth.dst == "ff:ff:ff:ff:ff:ff"
    assert eth.src == mac
    assert eth.type == 0x8035
    arp = ARP(bytes(eth.payload))  # scapy binds ARP to 0x0806 only
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4)
    assert arp.op == 3
    assert arp.hwsrc == mac and arp.hwdst == mac
    assert arp.psrc == "0.0.0.0" and arp.pdst == "0.0.0.0"
    assert set(bytes(arp.payload)) <= {0}


def run_req(ns: netlab.Netns, *args: str) -> subprocess.CompletedProcess[str]:
    return ns.run(rarp_req(), *args, check=False, timeout=30)


# --- frames on the wire ---


def test_go_spelling_sends_one_exact_frame(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, sw = pair
    cap = sw.capture("sw0")
    proc = run_req(hv, "-mac", MAC, "-intf", "hv0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    (line,) = proc.stdout.splitlines()
    assert "intf=hv0" in line and f"mac={MAC}" in line and "vlan=none" in line
    send_sentinel(hv, "hv0")
    cap.wait_for(1, match=is_rarp_from(SENTINEL))
    (frame,) = cap.matching(is_rarp_from(MAC))
    assert_rarp(frame.data, MAC)


def test_qemu_pattern_timing(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, sw = pair
    cap = sw.capture("sw0")
    proc = run_req(hv, "--pattern", "qemu", "-mac", MAC, "-intf", "hv0")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5
    send_sentinel(hv, "hv0")
    cap.wait_for(1, match=is_rarp_from(SENTINEL))
    frames = cap.matching(is_rarp_from(MAC))
    assert len(frames) == 5
    for frame in frames:
        assert_rarp(frame.data, MAC)
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(frames)]
    print("qemu pattern gaps (ms):", [round(g * 1000, 3) for g in gaps])
    for gap, nominal in zip(gaps, [0.050, 0.150, 0.250, 0.350], strict=True):
        assert abs(gap - nominal) <= GAP_TOLERANCE_S, (gaps, nominal)


def test_several_macs_per_round(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, sw = pair
    cap = sw.capture("sw0")
    proc = run_req(
        hv, "-mac", MAC, "--mac", f"{MAC2},{MAC3}", "-i", "hv0", "--count", "2", "--interval", "0.1"
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 6
    send_sentinel(hv, "hv0")
    cap.wait_for(1, match=is_rarp_from(SENTINEL))
    macs = {parse_mac(m): m for m in (MAC, MAC2, MAC3)}
    frames = cap.matching(lambda f: not f.outgoing and f.data[6:12] in macs)
    assert [macs[f.data[6:12]] for f in frames] == [MAC, MAC2, MAC3] * 2
    for frame in frames:
        assert_rarp(frame.data, macs[frame.data[6:12]])
    # A round is back to back; rounds are --interval apart.
    assert frames[2].timestamp - frames[0].timestamp < 0.02
    assert abs((frames[3].timestamp - frames[0].timestamp) - 0.1) <= GAP_TOLERANCE_S


def test_vlan_tag_arrives_in_auxdata_on_a_bridge_port(
    lab: netlab.Lab, pair: tuple[netlab.Netns, netlab.Netns]
) -> None:
    hv, sw = pair
    sw.bridge("br0", "sw0")
    port, bridge = sw.ifindex("sw0"), sw.ifindex("br0")
    with capture_in(sw) as cap:
        proc = run_req(hv, "-mac", MAC, "-intf", "hv0", "--vlan", "100")
        assert proc.returncode == 0, proc.stderr
        expected = run_req(hv, "-mac", MAC, "--vlan", "100", "--dry-run").stdout
        got = collect_until(cap, lambda g: len(g) >= 2)
    assert sorted(s.ifindex for s in got) == sorted([port, bridge])
    for s in got:
        assert s.pkt_type != PACKET_OUTGOING
        # skb_vlan_untag() (net/core/dev.c) moved the tag out of the frame before the taps.
        assert s.vlan_tci is not None and s.vlan_tci & 0x0FFF == 100
        assert s.vid == 100
        assert s.vlan_tpid == 0x8100
        assert s.data[12:14] == b"\x80\x35"
        # Put the tag back: the frame on the wire is exactly what --dry-run printed.
        tagged = s.data[:12] + b"\x81\x00" + s.vlan_tci.to_bytes(2, "big") + s.data[12:]
        assert f"hex={tagged.hex()}" in expected
        eth = Ether(tagged)
        assert eth.dst == "ff:ff:ff:ff:ff:ff" and eth.src == MAC and eth.type == 0x8100
        assert eth[Dot1Q].vlan == 100 and eth[Dot1Q].type == 0x8035
        arp = ARP(bytes(eth[Dot1Q].payload))
        assert arp.op == 3 and arp.hwsrc == arp.hwdst == MAC
        assert arp.psrc == arp.pdst == "0.0.0.0"


# --- errors ---


def assert_one_line_error(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == f"rarp-req: error: {expected}\n"


def test_unknown_interface(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, _sw = pair
    assert_one_line_error(
        run_req(hv, "-mac", MAC, "-intf", "nosuch0"), "no such interface: nosuch0"
    )


def test_interface_down(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, sw = pair
    cap = sw.capture("sw0")
    hv.ip("link", "set", "hv0", "down")
    assert_one_line_error(run_req(hv, "-mac", MAC, "-intf", "hv0"), "interface hv0 is down")
    hv.ip("link", "set", "hv0", "up")
    send_sentinel(hv, "hv0")
    cap.wait_for(1, match=is_rarp_from(SENTINEL))
    assert cap.matching(is_rarp_from(MAC)) == []


CAP_DROPPERS = {
    "setpriv": ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"],
    "capsh": ["capsh", "--drop=cap_net_raw", "--"],
}


@pytest.mark.parametrize("tool", sorted(CAP_DROPPERS))
def test_missing_cap_net_raw(pair: tuple[netlab.Netns, netlab.Netns], tool: str) -> None:
    hv, _sw = pair
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    args = [rarp_req(), "-mac", MAC, "-intf", "hv0"]
    if tool == "capsh":  # capsh runs a shell command after "--"
        args = ["-c", " ".join(args)]
    proc = hv.run(*CAP_DROPPERS[tool], *args, check=False, timeout=30)
    assert_one_line_error(
        proc,
        "missing capability CAP_NET_RAW to open a packet socket "
        "(run as root or grant it: setcap cap_net_raw+ep)",
    )


def test_interface_vanishes_mid_run(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, sw = pair
    cap = sw.capture("sw0")
    proc = hv.popen(
        rarp_req(),
        "-mac",
        MAC,
        "-intf",
        "hv0",
        "--count",
        "200",
        "--interval",
        "0.02",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    cap.wait_for(2, match=is_rarp_from(MAC))
    hv.ip("link", "del", "hv0")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err == "rarp-req: error: interface hv0 vanished\n"
    assert 2 <= len(out.splitlines()) < 200
