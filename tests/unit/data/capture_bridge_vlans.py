"""Capture what a real kernel sends about VLAN-aware bridges, as hex fixtures.

Run as root on a kernel with VLAN filtering, 802.1Q, bond and VXLAN (not the
development machines': see the VM issue), e.g. Debian 12's kernel under QEMU:

    vng --disable-kvm --run <dir>/boot/vmlinuz-6.1.0-57-amd64 --rwdir /tmp/out \\
        --exec '.venv/bin/python tests/unit/data/capture_bridge_vlans.py /tmp/out'

It builds the Cumulus-style layout in a namespace of its own (deleted at the
end), then writes, one netlink message per line in hex:
  links.hex          RTM_GETLINK dump (AF_UNSPEC): kinds, VLAN ids, masters,
                     vlan_filtering
  bridge_vlans.hex   RTM_GETLINK dump, AF_BRIDGE, IFLA_EXT_MASK =
                     RTEXT_FILTER_BRVLAN_COMPRESSED: ports' VLANs and tunnels
  notify_vlan_add.hex  what RTNLGRP_LINK receives for `bridge vlan add dev swp2 vid 30`
and `uname.txt` (the kernel that produced them). tests/unit/test_bridge_vlans.py decodes
them.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

from rarp_replay import netns
from rarp_replay.netlink import codec
from rarp_replay.netlink.records import AF_BRIDGE

NS = f"rrvlan{os.getpid()}"

LAYOUT = [
    "link add br0 type bridge vlan_filtering 1",
    "link add swp1 type veth peer name h1",
    "link add swp2 type veth peer name h2",
    "link add swp3 type veth peer name h3",
    "link add bond1 type bond mode active-backup",
    "link set swp3 master bond1",
    "link add vxlan48 type vxlan external dstport 4789 local 192.0.2.1",
    "link set swp1 master br0",
    "link set swp2 master br0",
    "link set bond1 master br0",
    "link set vxlan48 master br0",
    "link add link br0 name vlan10 type vlan id 10",
    "link add link br0 name vlan20 type vlan id 20",
    "link add link vlan10 name vlan10-v0 address 00:00:5e:00:01:01 type macvlan mode private",
]
BRIDGE = [
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
    "vlan add dev vxlan48 vid 20-21",
    "link set dev vxlan48 vlan_tunnel on",
    "vlan add dev vxlan48 vid 10 tunnel_info id 10010",
    "vlan add dev vxlan48 vid 20-21 tunnel_info id 10020-10021",
]


def sh(*args: str) -> None:
    subprocess.run(["ip", "netns", "exec", NS, *args], check=True)


def messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, whole message with its header) for each message of one datagram."""
    return [
        (mtype, data[start - codec.NLMSG_HDRLEN : end])
        for mtype, _flags, _seq, start, end in codec.iter_spans(data)
    ]


def dump(sock: socket.socket, request: bytes) -> list[bytes]:
    sock.send(request)
    out: list[bytes] = []
    while True:
        for mtype, raw in messages(sock.recv(1 << 16)):
            if mtype == codec.NLMSG_DONE:
                return out
            if mtype == codec.NLMSG_ERROR:
                raise RuntimeError(f"dump failed: {raw.hex()}")
            out.append(raw)


def write(out: Path, name: str, msgs: list[bytes]) -> None:
    (out / name).write_text("".join(m.hex() + "\n" for m in msgs))


def main() -> int:
    out = Path(sys.argv[1])
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for cmd in LAYOUT:
            sh("ip", *cmd.split())
        for cmd in BRIDGE:
            sh("bridge", *cmd.split())
        for dev in ("br0", "swp1", "swp2", "swp3", "bond1", "vxlan48", "vlan10", "vlan20"):
            sh("ip", "link", "set", dev, "up")
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            netns.enter(NS)
            req = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            mon = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            mon.bind((0, codec.RTMGRP_LINK))
        finally:
            netns.enter(f"/proc/self/fd/{own}")
            os.close(own)
        write(out, "links.hex", dump(req, codec.dump_request(codec.RTM_GETLINK, seq=1)))
        ext = codec.RTEXT_FILTER_BRVLAN_COMPRESSED
        bridge_req = codec.dump_request(codec.RTM_GETLINK, AF_BRIDGE, seq=2, ext_mask=ext)
        write(out, "bridge_vlans.hex", dump(req, bridge_req))
        while select.select([mon], [], [], 0.2)[0]:  # what the set-up left queued
            mon.recv(1 << 16)
        sh("bridge", "vlan", "add", "dev", "swp2", "vid", "30")
        notes: list[bytes] = []
        while select.select([mon], [], [], 1.0)[0]:
            data = mon.recv(1 << 16)
            notes.extend(raw for _t, raw in messages(data))
        write(out, "notify_vlan_add.hex", notes)
        (out / "uname.txt").write_text(os.uname().release + "\n")
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
