"""rarp-req end to end, and RarpCapture against the real kernel.

Namespace "hv" plays the hypervisor and runs the installed console script;
namespace "sw" plays the switch and captures. Frames are checked with scapy,
an independent decoder.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

import netlab
from rarp_replay.errors import InterfaceError
from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.frames.capture import capture_filter
from rarp_replay.macaddr import parse_mac
from rarp_replay.packetsock import (
    PACKET_OUTGOING,
    PacketSender,
    RarpCapture,
    Sighting,
    interface_index,
    interface_is_up,
    interface_mac,
)

pytestmark = pytest.mark.netns

MAC = "52:54:00:12:34:56"
MAC2 = "52:54:00:00:00:02"
MAC3 = "52:54:00:00:00:03"
SENTINEL = "02:5e:00:00:00:ff"

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


def send_sentinel(hv: netlab.Netns, ifname: str = "hv0") -> None:
    """A last frame: once it is seen, everything sent before it has been delivered."""
    with netlab.entered(hv.name), PacketSender(ifname) as sender:
        sender.send(rarp_request_frame(parse_mac(SENTINEL)))


@contextlib.contextmanager
def capture_in(ns: netlab.Netns) -> Iterator[RarpCapture]:
    """A RarpCapture whose socket lives in `ns` (a socket keeps its namespace)."""
    with netlab.entered(ns.name):
        cap = RarpCapture(capture_filter())
    try:
        yield cap
    finally:
        cap.close()


def collect_until(
    cap: RarpCapture, done: Callable[[list[Sighting]], bool], timeout: float = 5.0
) -> list[Sighting]:
    got: list[Sighting] = []

    def poll() -> bool:
        got.extend(cap.recv_batch())
        return done(got)

    netlab.wait_until(poll, timeout=timeout, interval=0.005, what="sightings")
    # Frames sent from different CPUs may be processed out of order: a short grace period.
    time.sleep(0.1)
    got.extend(cap.recv_batch())
    return got


def saw_mac(mac: str) -> Callable[[list[Sighting]], bool]:
    raw = parse_mac(mac)
    return lambda got: any(s.data[6:12] == raw for s in got)


# --- frames on the wire ---


def test_go_spelling_sends_one_exact_frame(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, sw = pair
    cap = sw.capture("sw0")
    proc = run_req(hv, "-mac", MAC, "-intf", "hv0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    (line,) = proc.stdout.splitlines()
    assert "intf=hv0" in line and f"mac={MAC}" in line and "vlan=none" in line
    send_sentinel(hv)
    cap.wait_for(1, match=is_rarp_from(SENTINEL))
    (frame,) = cap.matching(is_rarp_from(MAC))
    assert_rarp(frame.data, MAC)


def test_qemu_pattern_timing(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, sw = pair
    cap = sw.capture("sw0")
    proc = run_req(hv, "--pattern", "qemu", "-mac", MAC, "-intf", "hv0")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5
    send_sentinel(hv)
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
    send_sentinel(hv)
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
    send_sentinel(hv)
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


# --- the socket layer directly ---


def test_interface_helpers(pair: tuple[netlab.Netns, netlab.Netns]) -> None:
    hv, _sw = pair
    ifindex, mac = hv.ifindex("hv0"), hv.mac("hv0")  # (entered() is not reentrant)
    with netlab.entered(hv.name):
        assert interface_index("hv0") == ifindex
        assert interface_is_up("hv0")
        assert interface_mac("hv0") == mac
    with netlab.entered(hv.name):
        sender, unbound = PacketSender("hv0"), PacketSender()
        with pytest.raises(InterfaceError, match=r"^no such interface: nosuch0$"):
            interface_index("nosuch0")
        with pytest.raises(InterfaceError, match=r"^no such interface: nosuch0$"):
            interface_is_up("nosuch0")
        with pytest.raises(InterfaceError, match=r"^no such interface: nosuch0$"):
            PacketSender("nosuch0")
    hv.ip("link", "set", "hv0", "down")
    with netlab.entered(hv.name):
        assert not interface_is_up("hv0")
    frame = rarp_request_frame(parse_mac(MAC))
    with pytest.raises(InterfaceError, match=r"^interface hv0 is down$"):
        sender.send(frame)
    with pytest.raises(InterfaceError, match=r"is down$"):
        unbound.send_on(ifindex, frame)
    with pytest.raises(InterfaceError, match=r"vanished$"):
        unbound.send_on(999_999, frame)
    hv.ip("link", "del", "hv0")
    with pytest.raises(InterfaceError, match=r"^interface hv0 vanished$"):
        sender.send(frame)
    sender.close()
    unbound.close()


def test_rarp_capture_on_a_bridge_sees_port_and_bridge_never_outgoing(
    lab: netlab.Lab,
) -> None:
    hv, sw, other = lab.netns("hv"), lab.netns("sw"), lab.netns("other")
    # The capture exists before any interface: an unbound socket serves later ones too.
    with capture_in(sw) as cap:
        lab.veth(hv, "hv0", sw, "sw0")
        lab.veth(other, "ot0", sw, "sw1")  # a second port: the bridge floods out of it
        sw.bridge("br0", "sw0", "sw1")
        port, bridge = sw.ifindex("sw0"), sw.ifindex("br0")
        mac = parse_mac(MAC)
        rarp = rarp_request_frame(mac)
        arp = b"\xff" * 6 + mac + b"\x08\x06" + rarp[14:]
        ipv6 = b"\x33\x33\x00\x00\x00\x01" + mac + b"\x86\xdd" + bytes(46)
        qinq = rarp[:12] + b"\x88\xa8\x00\x0a\x81\x00\x00\x64" + rarp[12:]
        with netlab.entered(hv.name), PacketSender("hv0") as sender:
            for frame in (arp, ipv6, rarp, qinq):
                sender.send(frame)
        send_sentinel(hv)
        got = collect_until(cap, saw_mac(SENTINEL))
        assert cap.drops() == 0
    ours = [s for s in got if s.data[6:12] == mac]
    # Each RARP twice (port, then bridge), ARP and IPv6 never, outgoing floods never.
    assert [(s.ifindex, s.data[12:14]) for s in ours] == [
        (port, b"\x80\x35"),
        (bridge, b"\x80\x35"),
        # QinQ: the outer S-tag went to auxdata, the inner C-tag stays in the frame.
        (port, b"\x81\x00"),
        (bridge, b"\x81\x00"),
    ]
    assert all(s.pkt_type != PACKET_OUTGOING for s in got)
    assert ours[0].vlan_tci is None and ours[0].vlan_tpid is None
    assert ours[2].vlan_tpid == 0x88A8 and ours[2].vid == 10
    assert ours[0].data == rarp
    assert ours[0].timestamp == pytest.approx(time.time(), abs=5)


def test_rarp_capture_takes_a_burst_without_drops(
    pair: tuple[netlab.Netns, netlab.Netns],
) -> None:
    hv, sw = pair
    burst = 2000  # a host evacuation announcing many VMs at once
    frames = [rarp_request_frame(b"\x52\x54\x00" + i.to_bytes(3, "big")) for i in range(burst)]
    with capture_in(sw) as cap:
        assert cap.receive_buffer >= 8 * 1024 * 1024
        with netlab.entered(hv.name), PacketSender() as sender:
            ifindex = interface_index("hv0")
            for frame in frames:  # unbound sender, interface chosen per frame
                sender.send_on(ifindex, frame)
        send_sentinel(hv)
        # Read only after the whole burst is queued: the receive buffer must hold it.
        time.sleep(0.2)
        got = collect_until(cap, saw_mac(SENTINEL))
        assert cap.drops() == 0
    assert sorted(s.data for s in got if s.data[:1] == b"\xff" and s.data[6:9] == b"RT\x00") == (
        sorted(frames)
    )
