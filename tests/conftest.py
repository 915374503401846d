"""pytest hooks: skipping of root-only (netns) and FRR (fabric) tests, and cleaning up labs on
exit and SIGTERM. The shared fixtures live in tests/support/fixtures.py."""

from __future__ import annotations

import atexit
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
    for item in items:
        if "netns" in item.keywords and not root:
            item.add_marker(pytest.mark.skip(reason="needs root for network namespaces"))
        if "fabric" in item.keywords and not (root and frr):
            item.add_marker(pytest.mark.skip(reason="needs root and FRR (apt-get install frr)"))
