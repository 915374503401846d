"""The Debian package under a real systemd (PID 1), inside a VM image.

Installs the .deb that `scripts/build-deb` made and runs its units as systemd
runs them on a switch: Type=notify reaches `running`, the daemon keeps only
CAP_NET_RAW and CAP_NET_ADMIN (0000000000003000), a RARP is served, a reload
with a good file applies it and one with a bad file fails `systemctl reload`
and changes nothing, stop is clean; the template serves its namespace, and
fails at once without restarting (exit 6) when the namespace does not exist.

Runs only where systemd is PID 1 in a guest of scripts/test-vm
(RARP_REPLAY_VM set): never on the host, whose system it would change. What
the runner must provide:
  - a guest booted with systemd as PID 1 (/run/systemd/system exists, journald
    running), as root, with the repository and the test venv as for the other
    vm tests; a root without /.dockerenv (systemd 252 otherwise believes it runs
    in Docker and ignores the kernel command line);
  - the package: RARP_REPLAY_DEBS, whitespace-separated paths of .deb files to
    install together (the rarp-replay package and any dependency the image
    lacks, e.g. python3-prometheus-client fetched on the host with
    `apt-get download`); default dist/rarp-replay_VERSION_all.deb. They are
    installed with `dpkg --install`: the guest needs no network.
  - a writable root (overlay or image copy): the package, its user and drop-ins
    are removed again at the end, but the guest is not the host.

Topology (netlab, as in tests/integration/test_netns.py):

    vm(eth0) ==veth== (swp1) sw:br100 (SVI 192.0.2.252/24)

rarp-reply.service serves sw through a runtime drop-in
(NetworkNamespacePath=/run/netns/SW, so its own unit file is unchanged and it
needs no CAP_SYS_ADMIN); rarp-reply@SW.service enters sw itself.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from rarp_replay import __version__
from rarp_replay.cli.rarp_reply import EXIT_NO_NETNS
from rarp_replay.frames.arp import rarp_request_frame
from tests.support import netlab

ROOT = Path(__file__).resolve().parents[2]
VM_MAC = "52:54:00:12:34:56"
SVI_MAC = "02:00:00:00:01:00"
VM_V4 = "192.0.2.10"
KEEP = 1 << 12 | 1 << 13  # CAP_NET_ADMIN, CAP_NET_RAW: "0000000000003000"
CONFIG = Path("/etc/rarp-replay/config.toml")
DROPIN = Path("/run/systemd/system/rarp-reply.service.d/test-netns.conf")


def _systemd_is_pid1() -> bool:
    try:
        comm = Path("/proc/1/comm").read_text().strip()
    except OSError:
        return False
    return comm == "systemd" and Path("/run/systemd/system").is_dir()


pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        not (os.environ.get("RARP_REPLAY_VM") and _systemd_is_pid1()),
        reason="needs a scripts/test-vm guest booted with systemd as PID 1 "
        "(see this module's docstring for what the runner must provide)",
    ),
]


def sh(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return proc


def show(unit: str, *props: str) -> dict[str, str]:
    out = sh("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def invocation(unit: str) -> str:
    """A journal match for the unit's current invocation, its Exec*= commands included."""
    inv = show(unit, "InvocationID")["InvocationID"]
    assert inv, f"{unit} has no invocation"
    return f"_SYSTEMD_INVOCATION_ID={inv}"


def journal_text(match: str) -> str:
    """What the journal holds for one match (FIELD=VALUE)."""
    return sh("journalctl", match, "-o", "cat", "--no-pager").stdout


def journal_events(match: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines for one match."""
    events = []
    for line in journal_text(match).splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def wait_event(match: str, event: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    """Bounded wait for journald to hold `count` lines of `event` (it writes asynchronously)."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal found
        found = [e for e in journal_events(match) if e.get("event") == event]
        return len(found) >= count

    netlab.wait_until(enough, timeout=timeout, interval=0.2, what=f"{event} in the journal")
    return found


_SPAN = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def seconds(span: str) -> float:
    """A systemd time span as `systemctl show` prints it ("2s", "100ms", "1min 30s")."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|min|h)\b", span)
    assert parts or span in ("0", ""), span
    return sum(float(n) * _SPAN[u] for n, u in parts)


def caps_of(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return {k: int(v, 16) for k, _, v in (ln.partition(":") for ln in f) if k.startswith("Cap")}


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    debs = os.environ.get("RARP_REPLAY_DEBS", str(ROOT / f"dist/rarp-replay_{__version__}_all.deb"))
    paths = [str(Path(p).resolve()) for p in debs.split()]
    missing = [p for p in paths if not Path(p).is_file()]
    assert not missing, f"no {missing}: run bash scripts/build-deb on the host first"
    saved = None
    try:
        # dpkg, not apt-get: offline, and apt-get --no-download refuses local files
        # ("Pathname to install is not absolute", apt 2.6).
        sh("dpkg", "--install", *paths, timeout=600)
        saved = CONFIG.read_text()
        yield
    finally:
        if saved is not None:
            CONFIG.write_text(saved)
        DROPIN.unlink(missing_ok=True)
        sh("dpkg", "--purge", "rarp-replay", check=False, timeout=600)
        sh("systemctl", "daemon-reload", check=False)


@pytest.fixture
def net(installed: None, lab: netlab.Lab) -> Iterator[tuple[netlab.Netns, netlab.Netns]]:
    sw, vm = netlab.access_switch(lab, VM_MAC, SVI_MAC, [f"{VM_V4}/24"], ["192.0.2.252/24"])
    sw.ip("neigh", "replace", VM_V4, "lladdr", VM_MAC, "dev", "br100", "nud", "reachable")
    # JSON lines in the journal, and every probe logged.
    CONFIG.write_text('log-format = "json"\nlog-level = "debug"\n')
    yield sw, vm


def assert_serves(unit: str, sw: netlab.Netns, vm: netlab.Netns) -> tuple[int, str]:
    """Active and running after READY=1, capabilities dropped, a RARP probed.

    Returns the MainPID and the invocation ID."""
    inv = invocation(unit)
    state = show(unit, "ActiveState", "SubState", "MainPID", "Type")
    assert (state["Type"], state["ActiveState"], state["SubState"]) == (
        "notify",
        "active",
        "running",
    )
    pid = int(state["MainPID"])
    c = caps_of(pid)
    assert c["CapEff"] == c["CapPrm"] == c["CapBnd"] == KEEP and c["CapInh"] == c["CapAmb"] == 0
    assert wait_event(inv, "ready")
    cap = vm.capture("eth0")
    tx = vm.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        tx.bind(("eth0", 0))
        tx.send(rarp_request_frame(bytes.fromhex(VM_MAC.replace(":", ""))))
    finally:
        tx.close()
    cap.wait_for(
        1,
        match=lambda f: (
            not f.outgoing
            and ARP in Ether(f.data)
            and Ether(f.data).src == SVI_MAC
            and Ether(f.data)[ARP].pdst == VM_V4
        ),
    )
    [line] = wait_event(inv, "announcement")
    assert line["port"] == "swp1" and line["probes"] == 1
    return pid, inv


def test_package_installs_disabled_and_stopped(installed: None) -> None:
    for unit in ("rarp-reply.service", "rarp-reply@.service"):
        assert sh("systemctl", "is-enabled", unit, check=False).stdout.strip() == "disabled"
    assert sh("systemctl", "is-active", "rarp-reply.service", check=False).stdout.strip() == (
        "inactive"
    )
    user = sh("getent", "passwd", "rarp-replay").stdout.split(":")
    assert user[6].strip() == "/usr/sbin/nologin"
    for prog in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]:
        assert Path(f"/usr/bin/{prog}").is_file()
    assert sh("man", "-w", "rarp-reply").stdout.strip().startswith("/usr/share/man/man8/")


def test_service_start_reload_stop(net: tuple[netlab.Netns, netlab.Netns]) -> None:
    sw, vm = net
    unit = "rarp-reply.service"
    DROPIN.parent.mkdir(parents=True, exist_ok=True)
    DROPIN.write_text(f"[Service]\nNetworkNamespacePath=/run/netns/{sw.name}\n")
    sh("systemctl", "daemon-reload")
    try:
        sh("systemctl", "start", unit)  # returns once READY=1 came (Type=notify)
        pid, inv = assert_serves(unit, sw, vm)
        run_dir = os.stat("/run/rarp-replay")
        assert oct(run_dir.st_mode & 0o777) == "0o750"
        assert run_dir.st_gid == int(sh("getent", "group", "rarp-replay").stdout.split(":")[2])

        # A good file: reload succeeds, the daemon applies it in place.
        CONFIG.write_text('log-format = "json"\nlog-level = "debug"\nholddown = 7.0\n')
        sh("systemctl", "reload", unit)
        [reloaded] = wait_event(inv, "reloaded")
        assert "holddown" in json.dumps(reloaded)
        assert int(show(unit, "MainPID")["MainPID"]) == pid

        # A bad file: `systemctl reload` fails (ExecReload's --check-config), no SIGHUP is
        # sent, the daemon runs on with its settings.
        CONFIG.write_text('log-format = "json"\nholdown = 7.0\n')
        bad = sh("systemctl", "reload", unit, check=False)
        assert bad.returncode != 0
        netlab.wait_until(
            lambda: "holdown: unknown key" in journal_text(inv), timeout=10, interval=0.2
        )
        assert [e for e in journal_events(inv) if e.get("event") == "reload-failed"] == []
        assert len([e for e in journal_events(inv) if e.get("event") == "reloaded"]) == 1
        state = show(unit, "ActiveState", "MainPID")
        assert state == {"ActiveState": "active", "MainPID": str(pid)}

        sh("systemctl", "stop", unit)
        after = show(unit, "ActiveState", "Result", "ExecMainStatus")
        assert after == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
        # By PID: journald may no longer tie the last lines of a process whose cgroup is
        # gone to the invocation (measured: the `stopped` line had no invocation match).
        [stopped] = wait_event(f"_PID={pid}", "stopped")
        assert stopped["signal"] == "SIGTERM"
    finally:
        sh("systemctl", "stop", unit, check=False)
        DROPIN.unlink(missing_ok=True)
        sh("systemctl", "daemon-reload", check=False)


def test_template_serves_its_namespace(net: tuple[netlab.Netns, netlab.Netns]) -> None:
    sw, vm = net
    unit = f"rarp-reply@{sw.name}.service"
    try:
        sh("systemctl", "start", unit)
        pid, inv = assert_serves(unit, sw, vm)  # CAP_SYS_ADMIN (setns) gone: 0000000000003000
        [entered] = wait_event(inv, "netns")
        assert entered["path"] == f"/run/netns/{sw.name}"
        sh("systemctl", "stop", unit)
        assert show(unit, "Result")["Result"] == "success"
        assert wait_event(f"_PID={pid}", "stopped")
    finally:
        sh("systemctl", "stop", unit, check=False)


def test_template_without_its_namespace_fails_once(installed: None, lab: netlab.Lab) -> None:
    name = f"{lab.prefix}-absent"  # this run's prefix: never anyone else's namespace
    assert not Path(f"/run/netns/{name}").exists()
    unit = f"rarp-reply@{name}.service"
    try:
        assert sh("systemctl", "start", unit, check=False).returncode != 0
        inv = invocation(unit)  # a failed unit keeps it
        netlab.wait_until(
            lambda: show(unit, "ActiveState")["ActiveState"] == "failed", timeout=10, interval=0.2
        )
        # No restart can come before RestartSec= has passed: wait that long (plus a
        # margin), then the unit must still be failed, never restarted.
        time.sleep(seconds(show(unit, "RestartUSec")["RestartUSec"]) + 1)
        state = show(unit, "ActiveState", "NRestarts", "ExecMainStatus")
        assert state == {
            "ActiveState": "failed",
            "NRestarts": "0",
            "ExecMainStatus": str(EXIT_NO_NETNS),
        }
        assert f"network namespace '{name}' not found" in journal_text(inv)
    finally:
        sh("systemctl", "reset-failed", unit, check=False)
