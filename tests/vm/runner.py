"""Run the tests marked `vm` (and the FRR fabric suite) inside QEMU guests, one per image.

Used by `sudo bash scripts/test-vm`; a tool of the test suite, imported by nothing in
`rarp_replay`. For each image it boots a Debian kernel with virtme-ng, runs one pytest
session as root in the guest, and brings pytest's log, its exit status and a JUnit XML file
back through a directory shared read-write with the guest.

Images:
  bookworm  this machine's own root filesystem (9p, read-only, virtme-ng's writable
            overlays), Debian 12's kernel 6.1 (`linux-image-amd64`'s dependency, fetched
            with `apt-get download` and unpacked), FRR and Python from the host.
  trixie    a Debian 13 root filesystem built by tests/vm/build-trixie.sh with mmdebstrap:
            its own kernel 6.12, FRR 10.3, Python 3.13 and a venv with the test
            dependencies; the checked-out project is shared read-only at /rarp-replay.
  systemd   the trixie image booted with systemd (257) as PID 1, for tests/vm/test_systemd.py
            (the Debian package under its units): plain QEMU with the image's own kernel and
            initrd, the root a throwaway ext4 copy of the cached tree (mkfs.ext4 -d), the
            project and the results shared over 9p; the .deb built on the host by
            scripts/build-deb. Opt-in (--image systemd), not in the default run.

`--module MOD ARGS...` runs `python -m MOD ARGS...` in the guest instead of pytest (the
fabric benchmarks, which need the guests' kernels); its output is the session's log and it may
write files to $RARP_REPLAY_RESULTS, the results directory shared with the host.

Caches live under /var/cache/rarp-replay-vm (CACHE). Each entry is a directory named by
its key (what it was built from) holding a STAMP file written last, after everything else
is in place: an entry without the stamp, or whose stamp names another key, is half-built
or stale and is deleted and rebuilt. Entries are built in a temporary sibling and renamed.
Inside the guest /var/cache is an empty tmpfs, so the kernel's module tree is shared into
the guest explicitly (--rodir), and the trixie tree is the guest's root itself.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/rarp-replay-vm")
STAMP = "COMPLETE"
LOCK = ".lock"
VNG_VERSION = "1.42"
IMAGES = ("bookworm", "trixie", "systemd")
# What runs without --image: all three. The systemd session costs ~3 min on an idle machine
# (README "Tests in VMs") and is the only place the units run under a real systemd: it
# caught the SIGSYS kill of ~@resources on sched_setattr, which no other test could see.
DEFAULT_IMAGES = ("bookworm", "trixie", "systemd")
# What each image's session runs unless pytest arguments are given after `--`. Under TCG a
# fabric test takes minutes (README "Tests in VMs"), so to keep `.ci/run` near its budget
# both images run the tests marked vm and the fabric suite's core: one migration per address
# family, one round for RARPs + FDB move, and the RARP-less FDB trigger. The rest of the
# fabric suite runs on the host, and in the images with --full.
FABRIC_CORE = (
    "ipv4_route_restored or ipv6_route_restored or rarps_and_fdb_move_make_one_round"
    " or first_frame_triggers_fdb_move_round"
)
# The heaviest vm tests run in one image each by default (all of them with --full): a
# three-leaf IRB fabric is ~6 min per layout under TCG, a single-VXLAN-device leaf ~3 min per
# variant. FRR 8.4.4 (bookworm) gets the SONiC layout, where the RARP-less FDB trigger made
# make-before-break lose the third leaf's client before takeover-delay (tests/fabric/NOTES.md
# h): the default must restore it there. FRR 10.3 (trixie) gets the Cumulus layout.
PER_IMAGE = {
    "bookworm": "(irb and sonic) or (svd and tunnel-info)",
    "trixie": "(irb and cumulus) or (svd and vnifilter)",
}
FULL_PYTEST = ["tests/vm", "tests/fabric", "-m", "vm or fabric"]


def default_pytest(image: str) -> list[str]:
    """The default selection of `image`'s session (the module comments above say why)."""
    light = f"(not fabric and not irb and not svd) or {FABRIC_CORE}"
    extra = PER_IMAGE.get(image)
    return [*FULL_PYTEST, "-k", f"{light} or {extra}" if extra else light]


# Guest size: the fabric lab runs three FRR instances per leaf pair plus pytest.
MEMORY = "3G"
CPUS = 2
# Under TCG the guest runs code several times slower than the host (measured: see README);
# the tests' bounded waits (tests/support/netlab.py TIME_SCALE) are stretched by this factor there.
TCG_TIME_SCALE = 8.0
# Where the project is seen in the trixie guest (the image's venv has a .pth for its src/).
GUEST_REPO = "/rarp-replay"
GUEST_RESULTS = "/tmp/rarp-replay-vm-results"
TRIXIE_PYTHON = "/opt/rarp-replay-venv/bin/python"
# Test dependencies not installed in the trixie image: the gate tools (ruff, mypy run on
# the host) and atheris (fuzzing, tests/reliability: never run in the VM).
NOT_IN_IMAGE = {"mypy", "ruff", "atheris"}
# The trixie image is rebuilt after this many days even if its recipe did not change, so
# Debian's point releases and security updates (kernel, FRR) reach it.
TRIXIE_MAX_AGE_DAYS = 30


def log(msg: str) -> None:
    print(f"test-vm: {msg}", file=sys.stderr, flush=True)


class VmError(Exception):
    """A failure of the runner itself (cache build, boot, timeout): one line for the user."""


def run(args: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise VmError(f"command failed ({proc.returncode}): {shlex.join(args)}\n" + "\n".join(tail))
    return proc  # type: ignore[no-any-return]


# ---------------------------------------------------------------- caches


@contextlib.contextmanager
def cache_entry(kind: str, key: str) -> Iterator[tuple[Path, Path | None]]:
    """Yield (final dir, build dir or None). With a build dir the caller fills it; on a clean
    exit the stamp is written last and the dir renamed into place. Other keys of the same
    kind are stale and removed, as is anything left by an interrupted build."""
    parent = CACHE / kind
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / key
    # One builder at a time per kind (two runs may start together on one machine).
    lock = os.open(parent / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield from _cache_entry_locked(parent, final, key)
    finally:
        os.close(lock)


def _cache_entry_locked(parent: Path, final: Path, key: str) -> Iterator[tuple[Path, Path | None]]:
    for other in parent.iterdir():
        if other != final and other.name != LOCK:
            log(f"removing stale or half-built cache {other}")
            shutil.rmtree(other, ignore_errors=True)
    stamp = final / STAMP
    if stamp.is_file() and stamp.read_text().strip() == key:
        yield final, None
        return
    if final.exists():
        log(f"cache {final} has no completion stamp: rebuilding it")
        shutil.rmtree(final)
    build = Path(tempfile.mkdtemp(prefix=f".{key}.building-", dir=parent))
    try:
        yield final, build
        (build / STAMP).write_text(key + "\n")
        build.rename(final)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def vng_binary() -> Path:
    """virtme-ng in its own venv (a host tool; the guest never imports it)."""
    with cache_entry("virtme-ng", f"virtme-ng-{VNG_VERSION}") as (final, build):
        if build is not None:
            log(f"installing virtme-ng {VNG_VERSION} into {final}")
            base = getattr(sys, "_base_executable", sys.executable)
            run([base, "-m", "venv", str(build / "venv")])
            run([str(build / "venv/bin/pip"), "install", "-q", f"virtme-ng=={VNG_VERSION}"])
            # The venv's scripts hard-code the build path in their #! line: re-create them
            # by re-running pip with the final path is costly, so fix the shebangs instead.
            for script in (build / "venv/bin").iterdir():
                if script.is_file() and not script.is_symlink():
                    data = script.read_bytes()
                    if data.startswith(b"#!"):
                        script.write_bytes(
                            data.replace(str(build).encode(), str(final).encode(), 1)
                        )
    return final / "venv/bin/vng"


@dataclass
class Kernel:
    image: Path  # the vmlinuz
    version: str  # its uname -r
    moddir_root: Path | None  # a tree holding lib/modules/<version>, shared into the guest


def bookworm_kernel() -> Kernel:
    """Debian 12's stock kernel: the package linux-image-amd64 depends on, unpacked."""

    def resolve() -> tuple[str, str]:
        out = run(["apt-cache", "depends", "linux-image-amd64"]).stdout
        m = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", out)
        if not m:
            raise VmError("apt-cache knows no linux-image-amd64 (run apt-get update)")
        pkg = m.group(1)
        policy = run(["apt-cache", "policy", pkg]).stdout
        v = re.search(r"Candidate: (\S+)", policy)
        if not v or v.group(1) == "(none)":
            raise VmError(f"no candidate version for {pkg} (run apt-get update)")
        return pkg, v.group(1)

    pkg, version = resolve()
    kver = pkg.removeprefix("linux-image-")
    key = f"{pkg}_{version}".replace(":", "%")
    with cache_entry("kernel-bookworm", key) as (final, build):
        if build is not None:
            log(f"fetching {pkg} {version} (apt-get download, dpkg -x)")
            try:
                run(["apt-get", "download", f"{pkg}={version}"], cwd=build)
            except VmError:
                log("apt-get download failed: refreshing the package index once")
                run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"])
                run(["apt-get", "download", f"{pkg}={version}"], cwd=build)
            (deb,) = build.glob("*.deb")
            run(["dpkg", "-x", str(deb), str(build / "tree")])
            deb.unlink()
            # The .deb ships no modules.dep (its postinst runs depmod): make it here so that
            # neither virtme-ng on the host nor modprobe in the guest has to.
            run(["depmod", "-b", str(build / "tree"), kver])
    tree = final / "tree"
    image = tree / "boot" / f"vmlinuz-{kver}"
    if not (image.is_file() and (tree / "lib/modules" / kver / "modules.dep").is_file()):
        shutil.rmtree(final)
        raise VmError(f"kernel cache {final} was incomplete: removed, run again")
    return Kernel(image, kver, tree)


def trixie_requirements() -> list[str]:
    """The project's runtime and test dependencies, as pyproject.toml lists them."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + list(meta["optional-dependencies"]["test"])
    keep = []
    for req in reqs:
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()
        if name not in NOT_IN_IMAGE:
            keep.append(req)
    return keep


def trixie_image() -> Path:
    """The trixie root filesystem, built by build-trixie.sh, keyed by that script, the
    dependency list and the Debian packages' versions it ended up with (recorded)."""
    script = Path(__file__).with_name("build-trixie.sh")
    reqs = trixie_requirements()
    digest = hashlib.sha256(script.read_bytes() + "\n".join(reqs).encode()).hexdigest()[:16]
    key = f"trixie-{digest}"
    parent = CACHE / "image-trixie"
    stamp = parent / key / STAMP
    if stamp.is_file():
        age_days = (time.time() - stamp.stat().st_mtime) / 86400
        if age_days > TRIXIE_MAX_AGE_DAYS:
            log(f"trixie image is {age_days:.0f} days old: rebuilding for Debian's updates")
            stamp.unlink()
    with cache_entry("image-trixie", key) as (final, build):
        if build is not None:
            started = time.monotonic()
            log(f"building the trixie image {final} (mmdebstrap; takes minutes)")
            wheels = build / "wheels"
            wheels.mkdir()
            (wheels / "requirements.txt").write_text("\n".join(reqs) + "\n")
            # The host's pip (and its configuration) fetches wheels for the guest's Python.
            run(
                [
                    sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels),
                    "--only-binary=:all:", "--python-version", "3.13",
                    "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "linux_x86_64",
                    "-r", str(wheels / "requirements.txt"),
                ]
            )  # fmt: skip
            run(["bash", str(script), str(build / "root"), str(wheels)], timeout=3600)
            shutil.rmtree(wheels)
            versions = guest_versions_offline(build / "root")
            (build / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
            log(f"trixie image built in {time.monotonic() - started:.0f} s: {versions}")
    root = final / "root"
    if not (root / "usr/lib/frr/zebra").is_file() or not Path(root, TRIXIE_PYTHON[1:]).exists():
        shutil.rmtree(final)
        raise VmError(f"trixie image {final} was incomplete: removed, run again")
    return root


def guest_versions_offline(root: Path) -> dict[str, str]:
    """Package versions inside an image, read from its dpkg database."""
    out = run(
        ["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
         "linux-image-amd64", "frr", "python3"]
    ).stdout  # fmt: skip
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def trixie_kernel(root: Path) -> Kernel:
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise VmError(f"no kernel in {root}/boot")
    image = images[-1]
    return Kernel(image, image.name.removeprefix("vmlinuz-"), None)


# ---------------------------------------------------------------- KVM


def kvm_works(vng: Path, kernel: Kernel) -> bool:
    """Boot the kernel once with KVM (`true` as the command); remembered per host boot.

    On the machines this was written on /dev/kvm exists but nested KVM does not work:
    `-cpu host` aborts ("failed to set MSR 0x10a") and other CPU models hang in early boot,
    so a probe with a short bound decides, and TCG is used otherwise."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    memo = CACHE / "kvm-probe.json"
    with contextlib.suppress(OSError, ValueError):
        seen = json.loads(memo.read_text())
        if seen.get("boot_id") == boot_id:
            return bool(seen["works"])
    log("probing KVM (one short boot, at most 60 s)")
    cmd = vng_command(vng, kernel, kvm=True, exec_cmd="true", extra=[])
    works = False
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc = spawn(cmd, subprocess.DEVNULL)
        try:
            works = proc.wait(timeout=60) == 0
        finally:
            kill_group(proc)
    memo.write_text(json.dumps({"boot_id": boot_id, "works": works}) + "\n")
    log(f"KVM {'works' if works else 'does not work here: using TCG (slower)'}")
    return works


# ---------------------------------------------------------------- systemd guest

# The systemd session's own selection (the package under systemd; nothing else needs PID 1).
SYSTEMD_PYTEST = ["tests/vm/test_systemd.py"]
# Runtime dependencies of the .deb (debian/control) missing from the trixie image: fetched on
# the host with `apt-get download` (pure Python, arch all) and installed with it by the test.
SYSTEMD_EXTRA_DEBS = ("python3-prometheus-client", "python3-decorator")
# Free space in the guest's root copy beyond the tree itself (dpkg, journal, the test's files).
SYSTEMD_DISK_SLACK_MB = 512
GUEST_REPO_TAG = "rarpreplay"
GUEST_RESULTS_TAG = "results"


def build_deb(dest: Path) -> list[Path]:
    """scripts/build-deb on the host, plus the image's missing dependencies, into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    log("building the .deb (scripts/build-deb)")
    run(["bash", str(REPO / "scripts/build-deb")], cwd=REPO, timeout=900)
    debs = sorted((REPO / "dist").glob("rarp-replay_*_all.deb"))
    if not debs:
        raise VmError("scripts/build-deb left no dist/rarp-replay_*_all.deb")
    shutil.copy2(debs[-1], dest)
    run(["apt-get", "download", *SYSTEMD_EXTRA_DEBS], cwd=dest)
    return sorted(dest.glob("*.deb"))


def systemd_disk(root: Path, disk: Path) -> None:
    """A raw ext4 copy of the cached tree (which stays untouched) for a writable root."""
    used_kb = int(run(["du", "-sxk", str(root)]).stdout.split()[0])
    size_mb = used_kb // 1024 + SYSTEMD_DISK_SLACK_MB
    run(["truncate", "-s", f"{size_mb}M", str(disk)])
    # -d copies the tree into the new filesystem (no mount, no loop device); no journal on a
    # throwaway disk (less I/O under TCG).
    run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-L", "rarp-vm", "-d", str(root),
         str(disk)], timeout=1800)  # fmt: skip


def systemd_qemu_command(kernel: Kernel, initrd: Path, disk: Path, results: Path,
                         kvm: bool) -> list[str]:  # fmt: skip
    mount = "mkdir -p {d} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144{o} {t} {d}"
    guest_cmd = " && ".join(
        [
            mount.format(d=GUEST_RESULTS, o="", t=GUEST_RESULTS_TAG),
            mount.format(d=GUEST_REPO, o=",ro", t=GUEST_REPO_TAG),
            f"exec bash {GUEST_RESULTS}/run.sh",
        ]
    )
    append = [
        "root=/dev/vda", "rw", "console=ttyS0", "panic=-1",
        # The image has systemd but not systemd-sysv (no /sbin/init link): name it.
        "init=/usr/lib/systemd/systemd",
        # No interactive first-boot questions on the console (the image has no locale etc.).
        "systemd.firstboot=off",
        # systemd-run-generator: run the session as a unit once the system is up, then power
        # off whatever it returns (its exit status travels in the results directory).
        f'systemd.run="/bin/sh -c \'{guest_cmd}\'"',
        "systemd.run_success_action=poweroff", "systemd.run_failure_action=poweroff",
    ]  # fmt: skip
    accel = (
        ["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    )
    return [
        "qemu-system-x86_64", *accel,
        "-m", MEMORY, "-smp", str(CPUS), "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(kernel.image), "-initrd", str(initrd), "-append", " ".join(append),
        "-drive", f"file={disk},format=raw,if=virtio",
        "-virtfs", f"local,path={REPO},mount_tag={GUEST_REPO_TAG},security_model=none,readonly=on",
        "-virtfs", f"local,path={results},mount_tag={GUEST_RESULTS_TAG},security_model=none",
    ]  # fmt: skip


# ---------------------------------------------------------------- guests


def spawn(cmd: Sequence[str], stdout: int | object) -> subprocess.Popen[bytes]:
    # Its own process group, so a hung guest (vng and its qemu) can be killed as a whole.
    # vng runs its helpers (virtme-run) from PATH: its venv's bin first.
    env = dict(os.environ, PATH=f"{Path(cmd[0]).parent}:{os.environ.get('PATH', '')}")
    return subprocess.Popen(
        list(cmd), stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
        start_new_session=True, env=env,
    )  # fmt: skip


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def vng_command(
    vng: Path, kernel: Kernel, kvm: bool, exec_cmd: str, extra: Sequence[str]
) -> list[str]:
    cmd = [str(vng), "--run", str(kernel.image), "--force-9p", "--memory", MEMORY]
    # --verbose: the kernel's and virtme-ng-init's lines go to console.log (why a boot hung).
    cmd += ["--cpus", str(CPUS), "--verbose"]
    if not kvm:
        cmd.append("--disable-kvm")
    if kernel.moddir_root is not None:
        # virtme-ng links the guest's /lib/modules/<version> to this path, which is under
        # /var/cache: an empty tmpfs in the guest unless shared explicitly.
        cmd.append(f"--rodir={kernel.moddir_root}={kernel.moddir_root}")
    return [*cmd, *extra, "--exec", exec_cmd]


GUEST_SCRIPT = r"""
set -u
out={results}
{{
  echo "kernel $(uname -r)"
  echo "frr    $(/usr/lib/frr/zebra --version 2>/dev/null | head -1)"
  echo "python $({python} -c 'import sys; print(sys.version.split()[0])')"{versions}
}} > "$out/versions.txt" 2>&1
cd {repo}
export RARP_REPLAY_VM={image} RARP_REPLAY_TIME_SCALE={scale}{env}
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 RARP_REPLAY_RESULTS="$out"
timeout -k 10 {timeout} {python} -m {command} > "$out/pytest.log" 2>&1
rc=$?{post}
echo $rc > "$out/rc"
"""


def guest_command(pytest_args: Sequence[str], module: Sequence[str] | None = None) -> str:
    """What the guest runs after `python -m`: pytest with its JUnit XML, or `module` (a
    benchmark: `--module benchmarks.irb_migrations -n 5`), whose output also goes to
    pytest.log and which may write files to $RARP_REPLAY_RESULTS (the results dir)."""
    if module:
        return shlex.join(module)
    return 'pytest -p no:cacheprovider -ra -v --junitxml="$out/junit.xml" ' + shlex.join(
        pytest_args
    )


@dataclass
class Outcome:
    image: str
    rc: int
    seconds: float
    line: str


def follow(path: Path, prefix: str, stop: threading.Event) -> None:
    """Print pytest's log as the guest writes it (the results dir is shared read-write)."""
    pos = 0
    while True:
        done = stop.is_set()
        with contextlib.suppress(FileNotFoundError):
            with path.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
            if chunk:
                text = chunk.decode(errors="replace")
                last_nl = text.rfind("\n") + 1
                if not done:
                    text = text[:last_nl]
                pos += len(text.encode())
                for line in text.splitlines():
                    print(f"[{prefix}] {line}", flush=True)
        if done:
            return
        stop.wait(2)


def run_image(
    image: str,
    vng: Path,
    *,
    pytest_args: Sequence[str],
    timeout: int,
    results: Path,
    time_scale: float,
    module: Sequence[str] | None = None,
) -> Outcome:
    started = time.monotonic()
    if image == "systemd":
        return run_systemd(pytest_args=pytest_args, timeout=timeout, results=results,
                           time_scale=time_scale, vng=vng, started=started)  # fmt: skip
    if image == "bookworm":
        kernel = bookworm_kernel()
        repo, python, extra = str(REPO), str(REPO / ".venv/bin/python"), []
        if not (REPO / ".venv/bin/python").exists():
            raise VmError("no .venv: run scripts/setup-env first")
    else:
        root = trixie_image()
        kernel = trixie_kernel(root)
        repo, python = GUEST_REPO, TRIXIE_PYTHON
        extra = ["--root", str(root), f"--rodir={GUEST_REPO}={REPO}"]
    kvm = kvm_works(vng, kernel)
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    # The guest's own bound is shorter than the host's, so pytest is stopped (and its
    # summary and XML written) before the guest is killed from outside.
    script = GUEST_SCRIPT.format(
        results=GUEST_RESULTS, python=python, repo=shlex.quote(repo), image=image,
        timeout=max(60, timeout - 120), command=guest_command(pytest_args, module),
        scale=1 if kvm else time_scale, versions="", env="", post="",
    )  # fmt: skip
    script_file = results / "run.sh"
    script_file.write_text(script)
    cmd = vng_command(
        vng, kernel, kvm, f"bash {GUEST_RESULTS}/run.sh",
        [*extra, f"--rwdir={GUEST_RESULTS}={results}"],
    )  # fmt: skip
    log(f"{image}: booting {kernel.version} ({'KVM' if kvm else 'TCG'}), timeout {timeout} s")
    code = wait_guest(image, cmd, results, timeout)
    return collect(image, results, code, time.monotonic() - started)


def collect(image: str, results: Path, exit_code: int, seconds: float) -> Outcome:
    rc_file = results / "rc"
    if not rc_file.is_file():
        console_tail = (results / "console.log").read_text(errors="replace").splitlines()[-20:]
        raise VmError(
            f"{image}: the guest ended (exit {exit_code}) without running pytest"
            " to its end; console:\n" + "\n".join(console_tail)
        )
    rc = int(rc_file.read_text().strip() or 1)
    return Outcome(image, rc, seconds, junit_line(results / "junit.xml"))


def wait_guest(image: str, cmd: Sequence[str], results: Path, timeout: int) -> int:
    """Run the guest (vng or qemu) with its console to console.log, following pytest's log;
    killed with its process group after timeout seconds. Returns its exit status."""
    stop = threading.Event()
    tail = threading.Thread(target=follow, args=(results / "pytest.log", image, stop))
    tail.start()
    with (results / "console.log").open("wb") as console:
        proc = spawn(cmd, console)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VmError(
                f"{image}: the guest did not finish within {timeout} s and was killed"
                f" (console: {results / 'console.log'})"
            ) from None
        finally:
            kill_group(proc)
            stop.set()
            tail.join()


def run_systemd(
    *, pytest_args: Sequence[str], timeout: int, results: Path, time_scale: float, vng: Path,
    started: float,
) -> Outcome:  # fmt: skip
    image = "systemd"
    root = trixie_image()
    kernel = trixie_kernel(root)
    initrd = root / "boot" / f"initrd.img-{kernel.version}"
    if not initrd.is_file():
        raise VmError(f"no {initrd}: systemd boots the image's own kernel with its initrd")
    kvm = kvm_works(vng, kernel)
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    debs = build_deb(results / "debs")
    guest_debs = " ".join(f"{GUEST_RESULTS}/debs/{d.name}" for d in debs)
    script = GUEST_SCRIPT.format(
        results=GUEST_RESULTS, python=TRIXIE_PYTHON, repo=GUEST_REPO, image=image,
        timeout=max(60, timeout - 240), command=guest_command(pytest_args),
        scale=1 if kvm else time_scale,
        versions='\n  echo "init   $(cat /proc/1/comm) $(systemctl --version | head -1)"',
        env=f"\nexport RARP_REPLAY_DEBS={shlex.quote(guest_debs)}",
        # The units' own messages (why one failed) are in the journal, not in pytest's log.
        post='\njournalctl -b --no-pager -o short-monotonic > "$out/journal.txt" 2>&1',
    )  # fmt: skip
    (results / "run.sh").write_text(script)
    with tempfile.TemporaryDirectory(prefix="systemd-disk-", dir=CACHE) as tmp:
        disk = Path(tmp) / "root.img"
        t0 = time.monotonic()
        systemd_disk(root, disk)
        log(f"{image}: root disk copied in {time.monotonic() - t0:.0f} s")
        cmd = systemd_qemu_command(kernel, initrd, disk, results, kvm)
        log(f"{image}: booting {kernel.version} ({'KVM' if kvm else 'TCG'}) with systemd,"
            f" timeout {timeout} s")  # fmt: skip
        code = wait_guest(image, cmd, results, timeout)
    return collect(image, results, code, time.monotonic() - started)


def junit_line(path: Path) -> str:
    try:
        suite = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        return f"no JUnit XML ({exc})"
    if suite.tag == "testsuites":
        suite = suite[0]
    get = suite.attrib.get
    return (
        f"{get('tests')} tests: {get('failures')} failed, {get('errors')} errors,"
        f" {get('skipped')} skipped"
    )


def summary(image: str, results: Path, outcome: Outcome) -> str:
    lines = [f"==== {image} ====="]
    lines += (results / "versions.txt").read_text(errors="replace").splitlines()
    log_lines = (results / "pytest.log").read_text(errors="replace").splitlines()
    start = next(
        (i for i, line in enumerate(log_lines) if "short test summary info" in line),
        max(0, len(log_lines) - 1),
    )
    lines += log_lines[start:]
    lines.append(f"{outcome.line}; pytest exit {outcome.rc}; {outcome.seconds:.0f} s")
    lines.append(f"results: {results}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/test-vm",
        description="Run the tests marked vm and the fabric suite in QEMU guests, once per"
        " image. Arguments after -- go to pytest (default, e.g. for bookworm: "
        + shlex.join(default_pytest("bookworm")) + ").",
    )  # fmt: skip
    parser.add_argument(
        "--image", action="append", choices=IMAGES,
        help=f"default: {', '.join(DEFAULT_IMAGES)}",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=int, default=1800, help="seconds per guest (boot+tests), default 1800"
    )
    parser.add_argument(
        "--results", type=Path, default=CACHE / "results", help="where each image's log, JUnit"
        " XML and console go (a subdirectory per image, replaced each run)",
    )  # fmt: skip
    parser.add_argument(
        "--time-scale", type=float, default=TCG_TIME_SCALE, help="factor on the tests' bounded"
        f" waits under TCG (RARP_REPLAY_TIME_SCALE in the guest), default {TCG_TIME_SCALE}",
    )  # fmt: skip
    parser.add_argument(
        "--full", action="store_true", help="the whole fabric suite, not only its core"
    )
    parser.add_argument("--build-only", action="store_true", help="fill the caches, run nothing")
    parser.add_argument(
        "--module", nargs=argparse.REMAINDER, help="run `python -m MODULE ARGS...` in the guest"
        " instead of pytest (a benchmark; it may write to $RARP_REPLAY_RESULTS); must come last",
    )  # fmt: skip
    parser.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # SIGTERM (CI cancelling, timeout(1)) unwinds like Ctrl-C, so the guest is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("test-vm: needs root (QEMU, namespaces in the guest, the cache)", file=sys.stderr)
        return 2
    images = args.image or list(DEFAULT_IMAGES)
    if args.module is not None and (not args.module or "systemd" in images):
        parser.error("--module needs a module, and --image bookworm or trixie")
    CACHE.mkdir(parents=True, exist_ok=True)
    failed = False
    reports = []
    try:
        vng = vng_binary()
        if args.build_only:
            for image in images:
                started = time.monotonic()
                trixie_image() if image in ("trixie", "systemd") else bookworm_kernel()
                log(f"{image}: cache ready ({time.monotonic() - started:.0f} s)")
            return 0
        for image in images:
            results = args.results / image
            try:
                outcome = run_image(
                    image, vng,
                    pytest_args=SYSTEMD_PYTEST if image == "systemd" and not args.pytest_args
                    else args.pytest_args
                    or (FULL_PYTEST if args.full else default_pytest(image)),
                    timeout=args.timeout,
                    results=results, time_scale=args.time_scale, module=args.module,
                )  # fmt: skip
            except VmError as exc:
                log(f"FAILED: {exc}")
                reports.append(f"==== {image} =====\nFAILED: {str(exc).splitlines()[0]}")
                failed = True
                continue
            failed |= outcome.rc != 0
            reports.append(summary(image, results, outcome))
    except VmError as exc:
        log(f"FAILED: {exc}")
        return 1
    print("\n" + "\n\n".join(reports), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
