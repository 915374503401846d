"""pytest hooks: skipping of root-only (netns) and FRR (fabric) tests, and cleaning up labs on
exit and SIGTERM. The shared fixtures live in tests/support/fixtures.py."""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

import pytest

from tests.support import netlab

# The fixtures several folders use (lab, net).
pytest_plugins = ["tests.support.fixtures"]

atexit.register(netlab.close_all_labs)


def pytest_configure(config: pytest.Config) -> None:
    netlab.install_signal_cleanup()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = netlab.have_root()
    frr = shutil.which("vtysh") is not None and Path("/usr/lib/frr/zebra").exists()
    # tests/vm/runner.py sets it to the image's name in the guest; vm tests need the guest's
    # kernel (VLAN filtering, VRF, bond, team...), which the host kernel may lack.
    in_vm = os.environ.get("RARP_REPLAY_VM")
    for item in items:
        if item.get_closest_marker("vm") is not None and not in_vm:
            item.add_marker(
                pytest.mark.skip(reason="runs only in the VM images: sudo bash scripts/test-vm")
            )
        if "netns" in item.keywords and not root:
            item.add_marker(pytest.mark.skip(reason="needs root for network namespaces"))
        if "fabric" in item.keywords and not (root and frr):
            item.add_marker(pytest.mark.skip(reason="needs root and FRR (apt-get install frr)"))
