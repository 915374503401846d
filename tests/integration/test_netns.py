"""`--netns`: the daemon, started in the root namespace, serves a named one.

Topology (namespaces made here; netlab.Lab names them rrt<run id>-<role> with
`ip netns add`, so each is bind-mounted at /run/netns/<name>):

    vm(eth0) ==veth== (swp1) sw:br100 (SVI 192.0.2.252/24)

The daemon is started with plain subprocess.Popen in the test's own (root)
namespace, never through `ip netns exec`: entering the namespace is its own
work. Nothing in the root namespace is created, changed or sent to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from rarp_replay.cli.rarp_reply import EXIT_NO_NETNS
from rarp_replay.frames.arp import rarp_request_frame
from tests.support import netlab
from tests.support.daemon_proc import DaemonProc

pytestmark = pytest.mark.netns

VM_MAC = "52:54:00:12:34:56"
SVI_MAC = "02:00:00:00:01:00"
VM_V4 = "192.0.2.10"
KEEP = 1 << 12 | 1 << 13  # CAP_NET_ADMIN, CAP_NET_RAW
NOBODY = "65534"


class RootNamespace:
    """Looks like a netlab.Netns to DaemonProc, but runs the command where the
    test runs (the root namespace), optionally under a prefix (setpriv).
    The lab still owns the process, so it is stopped however the test ends."""

    name = "root"

    def __init__(self, lab: netlab.Lab, *prefix: str) -> None:
        self.lab, self.prefix = lab, prefix

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*self.prefix, *args], text=True, **kw)
        self.lab.processes.append(proc)
        return proc


@dataclass
class Net:
    lab: netlab.Lab
    sw: netlab.Netns
    vm: netlab.Netns

    def rarp_from_vm(self) -> None:
        tx = self.vm.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            tx.bind(("eth0", 0))
            tx.send(rarp_request_frame(bytes.fromhex(VM_MAC.replace(":", ""))))
        finally:
            tx.close()


@pytest.fixture
def net(lab: netlab.Lab) -> Iterator[Net]:
    sw, vm = netlab.access_switch(lab, VM_MAC, SVI_MAC, [f"{VM_V4}/24"], ["192.0.2.252/24"])
    sw.ip("neigh", "replace", VM_V4, "lladdr", VM_MAC, "dev", "br100", "nud", "reachable")
    yield Net(lab, sw, vm)


def ns_inode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def packet_socket_owners(ns: netlab.Netns | None) -> str:
    """`ss --packet -p`: packet sockets (with their processes) of one namespace."""
    cmd = ["ss", "-0", "-n", "-p"]
    return (ns.run(*cmd) if ns is not None else netlab.run(cmd)).stdout


def caps_of(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return {k: int(v, 16) for k, _, v in (ln.partition(":") for ln in f) if k.startswith("Cap")}


def assert_serves_only(net: Net, d: DaemonProc) -> int:
    """The daemon lives in `net.sw`, not in the root namespace, and serves it."""
    [ready] = d.wait_event("ready")
    pid = int(ready["pid"])
    assert ns_inode(f"/proc/{pid}/ns/net") == ns_inode(f"/run/netns/{net.sw.name}")
    assert ns_inode(f"/proc/{pid}/ns/net") != ns_inode("/proc/self/ns/net")  # the root one
    # Its packet sockets are in sw (sock_net), and none is in the root namespace.
    assert f"pid={pid}," in packet_socket_owners(net.sw)
    assert f"pid={pid}," not in packet_socket_owners(None)
    # Its mirror is sw's: the links it loaded are exactly sw's links.
    sw_links = json.loads(net.sw.run("ip", "-j", "link", "show").stdout)
    assert ready["links"] == len(sw_links)
    # End to end in sw: RARP in on swp1, probe out to the VM.
    cap = net.vm.capture("eth0")
    net.rarp_from_vm()
    cap.wait_for(
        1,
        match=lambda f: (
            not f.outgoing
            and ARP in Ether(f.data)
            and Ether(f.data).src == SVI_MAC
            and Ether(f.data)[ARP].pdst == VM_V4
        ),
    )
    [line] = d.wait_event("announcement")
    assert line["port"] == "swp1" and line["domain"] == "br100" and line["probes"] == 1
    return pid


@pytest.mark.parametrize("form", ["name", "path"])
def test_serves_the_named_namespace_from_the_root_namespace(net: Net, form: str) -> None:
    arg = net.sw.name if form == "name" else f"/run/netns/{net.sw.name}"
    d = DaemonProc(RootNamespace(net.lab), "--netns", arg).ready()  # type: ignore[arg-type]
    [entered] = d.of("netns")
    assert entered["netns"] == arg and entered["path"] == f"/run/netns/{net.sw.name}"
    pid = assert_serves_only(net, d)
    # CAP_SYS_ADMIN was needed for setns(2) only: gone, from the bounding set too.
    c = caps_of(pid)
    assert c["CapEff"] == c["CapPrm"] == c["CapBnd"] == KEEP and c["CapInh"] == c["CapAmb"] == 0
    assert d.stop() == 0


def test_as_the_template_unit_runs_it(net: Net) -> None:
    """contrib/rarp-reply@.service: an unprivileged user with CAP_NET_RAW,
    CAP_NET_ADMIN, CAP_SYS_ADMIN (setns) and CAP_SETPCAP (to narrow the
    bounding set) as ambient capabilities and as the bounding set. After the
    drop only the two are left, in every set."""
    four = "+net_raw,+net_admin,+sys_admin,+setpcap"
    setpriv = (
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        f"--inh-caps=-all,{four}", f"--ambient-caps=-all,{four}", f"--bounding-set=-all,{four}",
    )  # fmt: skip
    if netlab.run([*setpriv, sys.executable, "-c", "import rarp_replay"], check=False).returncode:
        pytest.skip("the test's Python is not usable by an unprivileged user")
    d = DaemonProc(RootNamespace(net.lab, *setpriv), "--netns", net.sw.name).ready()  # type: ignore[arg-type]
    pid = assert_serves_only(net, d)
    c = caps_of(pid)
    assert c["CapEff"] == c["CapPrm"] == c["CapBnd"] == KEEP and c["CapInh"] == c["CapAmb"] == 0
    assert d.of("privileges")[0]["level"] == "info"
    assert d.stop() == 0


def run_daemon(*args: str) -> subprocess.CompletedProcess[str]:
    return netlab.run([sys.executable, "-m", "rarp_replay", *args], check=False, timeout=30)


def test_missing_namespace_is_one_line_and_exit_6(lab: netlab.Lab) -> None:
    """Its own exit code, which the units' RestartPreventExitStatus= names."""
    name = f"{lab.prefix}-absent"  # this run's prefix: never anyone else's namespace
    assert not os.path.exists(f"/run/netns/{name}")
    proc = run_daemon("--netns", name)
    assert proc.returncode == EXIT_NO_NETNS == 6
    assert proc.stderr.splitlines() == [f"rarp-reply: error: network namespace '{name}' not found"]


def test_not_a_namespace_and_bad_names(lab: netlab.Lab) -> None:
    proc = run_daemon("--netns", "/proc/self/status")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "rarp-reply: error: '/proc/self/status' is not a network namespace"
    ]
    # ("" is not among them: like `netns = ""` in the file, it means "this namespace".)
    for bad in (".", ".."):
        proc = run_daemon("--netns", bad)
        assert proc.returncode == 2
        assert proc.stderr.splitlines()[-1] == (
            f"rarp-reply: error: argument --netns: invalid network namespace name: {bad!r}"
        )


def test_entering_needs_cap_sys_admin(net: Net) -> None:
    proc = netlab.run(
        [
            "capsh", "--drop=cap_sys_admin", "--", "-c",
            f"{sys.executable} -m rarp_replay --netns {net.sw.name}",
        ],
        check=False,
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "rarp-reply: error: missing capability CAP_SYS_ADMIN to enter network namespace "
        f"'{net.sw.name}'"
    ]
