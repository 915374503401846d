"""pytest fixtures shared by the test folders (loaded by tests/conftest.py as a plugin)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rarp_replay.frames.arp import rarp_request_frame
from rarp_replay.macaddr import parse_mac
from tests.support import netlab

# The access switch of `net`: a VM with one address of each family, both known to the
# switch only as EVPN's remote entries (noarp extern_learn), as after a migration.
VM_MAC = "52:54:00:12:34:56"
SVI_MAC = "02:00:00:00:01:00"
VM_V4 = "192.0.2.10"
VM_V6 = "2001:db8:100::10"


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[netlab.Lab]:
    """A fresh Lab whose namespaces are removed when the test ends, however it ends."""
    the_lab = netlab.Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()


@dataclass
class AccessNet:
    """`netlab.access_switch` (sw:br100 192.0.2.252/24 2001:db8:100::252/64, port swp1 to
    vm:eth0) with VM_V4 and VM_V6 as remote entries on br100, and a packet socket on the
    VM's eth0 to send from."""

    sw: netlab.Netns
    vm: netlab.Netns
    vm_tx: socket.socket

    def rarp(self, mac: str = VM_MAC) -> None:
        """The VM's hypervisor announces `mac` (QEMU's RARP), from the VM's port."""
        self.vm_tx.send(rarp_request_frame(parse_mac(mac)))

    def entries(self) -> dict[str, dict[str, Any]]:
        """The switch's neighbor entries on br100, by address (`ip -j neigh`)."""
        out = self.sw.run("ip", "-j", "neigh", "show", "dev", "br100").stdout
        return {e["dst"]: e for e in json.loads(out)}


@pytest.fixture
def net(lab: netlab.Lab) -> Iterator[AccessNet]:
    """An `AccessNet` (test modules with a topology of their own define their own `net`)."""
    sw, vm = netlab.access_switch(
        lab,
        VM_MAC,
        SVI_MAC,
        [f"{VM_V4}/24", f"{VM_V6}/64"],
        ["192.0.2.252/24", "2001:db8:100::252/64"],
    )
    for ip in (VM_V4, VM_V6):
        sw.remote_neighbor(ip, VM_MAC)
    vm_tx = vm.socket(socket.AF_PACKET, socket.SOCK_RAW)
    vm_tx.bind(("eth0", 0))
    yield AccessNet(sw, vm, vm_tx)
    vm_tx.close()
