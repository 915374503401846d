"""Least privilege: the real daemon keeps CAP_NET_RAW + CAP_NET_ADMIN and nothing else.

Topology (namespaces made here):

    vm(eth0) ==veth== (swp1) sw:br100 (SVI 192.0.2.252/24, 2001:db8:100::252/64)

The VM's bindings are pre-installed on the switch as EVPN would (NOARP,
extern_learn), so the VM's answer to a probe makes the daemon take the entry
over: a neighbor write that needs CAP_NET_ADMIN *after* the drop.

The capability sets are read from /proc/PID/status of the daemon itself
(`ip netns exec` execs it: the pid in its `ready` line is the daemon's).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet6 import ICMPv6ND_NS
from scapy.layers.l2 import ARP, Ether

from tests.support import netlab
from tests.support.daemon_proc import DaemonProc
from tests.support.fixtures import SVI_MAC, VM_V4, VM_V6, AccessNet

pytestmark = pytest.mark.netns

CAP_NET_ADMIN, CAP_NET_RAW, CAP_SETPCAP, CAP_SYS_ADMIN = 12, 13, 8, 21
KEEP = 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW
NOBODY = "65534"


def proc_caps(pid: int | str) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb as masks, NoNewPrivs and Threads as ints."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        lines = [line.split(":", 1) for line in f if ":" in line]
    out = {}
    for key, value in lines:
        if key.startswith("Cap"):
            out[key] = int(value, 16)
        elif key in ("NoNewPrivs", "Threads"):
            out[key] = int(value)
    return out


def status_text_caps(text: str) -> dict[str, int]:
    return {
        k: int(v, 16) for k, _, v in (ln.partition(":") for ln in text.splitlines()) if "Cap" in k
    }


class Wrapped:
    """Looks like a netlab.Netns to DaemonProc: runs the daemon under a command
    prefix (setpriv, a seccomp shim) inside `ns`."""

    def __init__(self, ns: netlab.Netns, *prefix: str) -> None:
        self.ns, self.prefix, self.name = ns, prefix, ns.name

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return self.ns.popen(*self.prefix, *args, **kw)


def is_probe(f: netlab.Frame) -> bool:
    p = Ether(f.data)
    return not f.outgoing and p.src == SVI_MAC and (ARP in p or ICMPv6ND_NS in p)


def serves_and_takes_over(net: AccessNet, d: DaemonProc) -> None:
    """End to end after the drop: a RARP gets probes, the answers a takeover
    (RTM_NEWNEIGH replace: CAP_NET_ADMIN), the kernel holds the local entries."""
    cap = net.vm.capture("eth0")
    net.rarp()
    cap.wait_for(2, match=is_probe)
    d.wait_event("takeover", count=2)
    d.wait_event("confirmed", count=2)
    got = net.entries()
    for ip in (VM_V4, VM_V6):
        # `ip -j neigh` gives extern_learn as a key of its own (not in "flags").
        assert "extern_learn" not in got[ip] and got[ip]["state"] == ["REACHABLE"], got[ip]
        assert got[ip].get("protocol") == "82", got[ip]
    assert not d.of("netlink-error"), d.of("netlink-error")


def daemon_pid(d: DaemonProc) -> int:
    pid = int(d.wait_event("ready")[0]["pid"])
    assert pid == d.proc.pid  # ip netns exec (and setpriv) exec: no wrapper left
    return pid


def test_root_start_keeps_exactly_net_raw_and_net_admin_and_still_works(net: AccessNet) -> None:
    mine = proc_caps("self")
    d = DaemonProc(net.sw).ready()
    c = proc_caps(daemon_pid(d))
    assert c["Threads"] == 1  # capability sets are per thread: one thread, one set
    assert c["CapEff"] == c["CapPrm"] == c["CapBnd"] == KEEP, c
    assert c["CapInh"] == 0 and c["CapAmb"] == 0, c
    assert c["NoNewPrivs"] == 1
    [line] = d.of("privileges")
    assert line["level"] == "info"
    assert line["kept"] == line["bounding"] == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert line["dropped"] == bin(mine["CapPrm"] & ~KEEP).count("1")
    assert line["no_new_privs"] is True
    serves_and_takes_over(net, d)
    assert d.stop() == 0


def test_dry_run_keeps_net_admin_so_that_sighup_can_turn_it_off(
    net: AccessNet, tmp_path: Path
) -> None:
    """dry-run is not a restart key: after a SIGHUP that turns it off, the
    daemon writes neighbor entries, which needs the CAP_NET_ADMIN it kept."""
    conf = tmp_path / "rarp-reply.toml"
    conf.write_text("dry-run = true\n")
    d = DaemonProc(net.sw, "--config", str(conf)).ready()
    c = proc_caps(daemon_pid(d))
    assert c["CapEff"] == c["CapPrm"] == c["CapBnd"] == KEEP and c["CapInh"] == c["CapAmb"] == 0
    net.rarp()
    d.wait_event("dry-run", match=lambda e: e["would"] == "send", count=2)
    got = net.entries()
    for ip in (VM_V4, VM_V6):  # nothing changed: EVPN's entries are as they were
        assert "extern_learn" in got[ip] and got[ip]["state"] == ["NOARP"], got[ip]
    conf.write_text("dry-run = false\nholddown = 0\n")
    d.proc.send_signal(signal.SIGHUP)
    assert "dry-run" in d.wait_event("reloaded")[0]["changed"]
    serves_and_takes_over(net, d)
    assert d.stop() == 0


def test_dry_run_started_without_net_admin_keeps_net_raw_only(net: AccessNet) -> None:
    # capsh runs `bash -c 'exec "$0" "$@"' python -m rarp_replay ...`: the daemon
    # replaces the shell, as root, with CAP_NET_ADMIN gone from the bounding set.
    shell = ("capsh", "--drop=cap_net_admin", "--", "-c", 'exec "$0" "$@"')
    d = DaemonProc(Wrapped(net.sw, *shell), "--dry-run").ready()  # type: ignore[arg-type]
    c = proc_caps(daemon_pid(d))
    # Everything else dropped; CAP_NET_ADMIN, which it did not have, not gained.
    assert c["CapEff"] == c["CapPrm"] == c["CapBnd"] == 1 << CAP_NET_RAW, c
    assert d.of("privileges")[0]["kept"] == ["CAP_NET_RAW"]
    assert d.stop() == 0


def test_started_with_only_net_raw_and_net_admin_the_drop_succeeds(net: AccessNet) -> None:
    """Root, but the bounding set already holds only the two (no CAP_SETPCAP):
    nothing to drop, and the drop must not fail for want of CAP_SETPCAP."""
    setpriv = ("setpriv", "--inh-caps=-all", "--bounding-set=-all,+net_raw,+net_admin")
    # The premise: what a program started this way holds before any drop.
    start = status_text_caps(net.sw.run(*setpriv, "cat", "/proc/self/status").stdout)
    assert start["CapEff"] == start["CapPrm"] == start["CapBnd"] == KEEP, start
    d = DaemonProc(Wrapped(net.sw, *setpriv)).ready()  # type: ignore[arg-type]
    c = proc_caps(daemon_pid(d))
    assert c["CapEff"] == c["CapPrm"] == c["CapBnd"] == KEEP and c["CapInh"] == c["CapAmb"] == 0
    [line] = d.of("privileges")
    assert line["level"] == "info" and line["dropped"] == 0
    serves_and_takes_over(net, d)
    assert d.stop() == 0


def test_unprivileged_user_with_ambient_caps_and_a_full_bounding_set(net: AccessNet) -> None:
    """An unprivileged user given the two as ambient capabilities, the bounding
    set left full (a hand-written unit without CapabilityBoundingSet=): without
    CAP_SETPCAP the bounding set cannot be narrowed. The daemon says so and
    runs; no_new_privs keeps any execve from using it (see the exec test)."""
    setpriv = (
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--inh-caps=-all,+net_raw,+net_admin", "--ambient-caps=-all,+net_raw,+net_admin",
    )  # fmt: skip
    if net.sw.run(*setpriv, sys.executable, "-c", "import rarp_replay", check=False).returncode:
        pytest.skip("the test's Python is not usable by an unprivileged user")
    full = proc_caps("self")["CapBnd"]
    d = DaemonProc(Wrapped(net.sw, *setpriv)).ready()  # type: ignore[arg-type]
    pid = daemon_pid(d)
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        assert f"Uid:\t{NOBODY}" in f.read()
    c = proc_caps(pid)
    assert c["CapEff"] == c["CapPrm"] == KEEP and c["CapInh"] == c["CapAmb"] == 0, c
    assert c["CapBnd"] == full and c["NoNewPrivs"] == 1
    [line] = d.of("privileges")
    assert line["level"] == "warning" and "CAP_SETPCAP" in line["note"]
    # The full bounding set is counted, not ~40 names on one line.
    assert line["bounding"] == f"{bin(full).count('1')} caps", line["bounding"]
    assert line["kept"] == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    serves_and_takes_over(net, d)
    assert d.stop() == 0


# A seccomp filter that makes capset(2) fail with EPERM, then exec the daemon:
# a real kernel refusal of the drop (seccomp filters survive execve).
_CAPSET_NR = {"x86_64": (0xC000003E, 126), "aarch64": (0xC00000B7, 91)}
_DENY_CAPSET = """
import ctypes, os, struct, sys
arch, nr = {arch}, {nr}
prog = [  # (code, jt, jf, k)
    (0x20, 0, 0, 4), (0x15, 0, 3, arch),    # ld arch; jne -> allow
    (0x20, 0, 0, 0), (0x15, 0, 1, nr),      # ld nr; jne -> allow
    (0x06, 0, 0, 0x00050000 | 1),           # ret ERRNO(EPERM)
    (0x06, 0, 0, 0x7FFF0000),               # ret ALLOW
]
buf = ctypes.create_string_buffer(b"".join(struct.pack("@HBBI", *i) for i in prog))
fprog = ctypes.create_string_buffer(struct.pack("@HP", len(prog), ctypes.addressof(buf)))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                       ctypes.c_ulong]
if libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    raise OSError(ctypes.get_errno(), "seccomp")
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_a_failed_drop_is_one_line_and_exit_1(net: AccessNet) -> None:
    machine = platform.machine()
    if machine not in _CAPSET_NR:
        pytest.skip(f"no capset syscall number for {machine}")
    arch, nr = _CAPSET_NR[machine]
    shim = _DENY_CAPSET.format(arch=arch, nr=nr)
    proc = net.sw.run(sys.executable, "-c", shim, sys.executable, "-m", "rarp_replay", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "rarp-reply: error: cannot drop capabilities: capset: Operation not permitted"
    ]


def test_more_than_one_thread_refuses_to_drop() -> None:
    code = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "from rarp_replay import capabilities, errors\n"
        "try:\n"
        "    capabilities.drop_to([12, 13])\n"
        "except errors.PrivilegeDropError as exc:\n"
        "    print(exc)\n"
    )
    proc = netlab.run([sys.executable, "-c", code])
    assert proc.stdout.strip() == (
        "cannot drop capabilities: 2 threads are running, and capset(2) changes only "
        "the calling thread"
    )


# After the drop, exec a program that would gain capabilities, and print what it holds.
_DROP_THEN_EXEC = """
import os, sys
from rarp_replay import capabilities
if sys.argv[1] == "drop":
    capabilities.drop_to([12, 13])
os.execv(sys.argv[2], [sys.argv[2], "/proc/self/status"])
"""


@pytest.fixture
def filecap_cat() -> Iterator[str]:
    """A copy of cat(1) with file capability CAP_SYS_ADMIN (permitted), usable by anyone."""
    if shutil.which("setcap") is None:
        pytest.skip("setcap (libcap2-bin) is not installed")
    d = tempfile.mkdtemp(prefix="rrt-filecap-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "cat")
        shutil.copy(shutil.which("cat") or "/bin/cat", path)
        os.chmod(path, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        # Permitted only, not effective: a binary with the effective bit that
        # cannot get all its file capabilities fails execve with EPERM instead.
        netlab.run(["setcap", "cap_sys_admin+p", path])
        yield path
    finally:
        shutil.rmtree(d)


def test_nothing_execed_after_the_drop_regains_a_capability(filecap_cat: str) -> None:
    # As root: an execve as uid 0 gets the whole bounding set, so the bounding
    # set (and no_new_privs) is what holds it to the kept two.
    def run_as_root(mode: str) -> dict[str, int]:
        cat = shutil.which("cat") or "/bin/cat"
        out = netlab.run([sys.executable, "-c", _DROP_THEN_EXEC, mode, cat]).stdout
        return status_text_caps(out)

    assert run_as_root("keep")["CapPrm"] & ~KEEP  # the control: it would gain
    after = run_as_root("drop")
    assert after["CapPrm"] == after["CapEff"] == after["CapBnd"] == KEEP, after
    assert after["CapInh"] == after["CapAmb"] == 0
    # As an unprivileged user holding the two as ambient capabilities and a full
    # bounding set (no CAP_SETPCAP to narrow it): a file-capability binary
    # would get CAP_SYS_ADMIN; after the drop, no_new_privs makes it get nothing.
    setpriv = [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--inh-caps=-all,+net_raw,+net_admin", "--ambient-caps=-all,+net_raw,+net_admin",
    ]  # fmt: skip
    if netlab.run([*setpriv, sys.executable, "-c", "import rarp_replay"], check=False).returncode:
        pytest.skip("the test's Python is not usable by an unprivileged user")

    def run_as_nobody(mode: str) -> dict[str, int]:
        cmd = [*setpriv, sys.executable, "-c", _DROP_THEN_EXEC, mode, filecap_cat]
        return status_text_caps(netlab.run(cmd).stdout)

    control = run_as_nobody("keep")
    assert control["CapPrm"] >> CAP_SYS_ADMIN & 1, control
    after = run_as_nobody("drop")
    assert after["CapPrm"] == after["CapEff"] == after["CapAmb"] == 0, after
    assert after["CapBnd"] >> CAP_SYS_ADMIN & 1  # still there, and unusable


def test_setpcap_permitted_but_not_effective_is_raised_to_narrow_the_bounding_set() -> None:
    code = (
        "from rarp_replay import capabilities as c\n"
        "cur = c.current()\n"
        "c._capset(cur.effective & ~(1 << c.CAP_SETPCAP), cur.permitted, cur.inheritable)\n"
        "assert not c.current().effective >> c.CAP_SETPCAP & 1\n"
        "r = c.drop_to([12, 13])\n"
        "print(r.plan.raise_setpcap, r.after.bounding, r.after.permitted)\n"
    )
    out = netlab.run([sys.executable, "-c", code]).stdout.split()
    assert out == ["True", str(KEEP), str(KEEP)]
