"""Distribution: man pages, systemd units, sysusers entry and the Debian package.

The man pages must render without a groff warning and be current with the code
(scripts/gen_man.py --check); the units must parse (systemd-analyze verify) and
keep the properties the README promises; `scripts/build-deb` must build a .deb
(6-8 s here once its build dependencies are installed) whose files, relations,
conffiles and maintainer scripts are checked, and whose programs run with
Debian's /usr/bin/python3 from the unpacked package. The package is never
installed on this host: tests/vm/test_systemd.py does that inside the VM images.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rarp_replay import __version__, config
from rarp_replay.cli import rarp_reply, rarp_req

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
CONTRIB = ROOT / "contrib"
PAGES = ("rarp-reply.8", "rarp-req.8", "rarp-replyctl.8")
UNITS = ("rarp-reply.service", "rarp-reply@.service")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
# Where the .deb puts the programs: the units' ExecStart= must name it.
BINDIR = "/usr/bin"


def run(*cmd: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=600, check=False, **kw
    )  # type: ignore[call-overload, no-any-return]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


# -- man pages -------------------------------------------------------------------


def test_man_pages_are_current_with_the_code() -> None:
    proc = run(sys.executable, ROOT / "scripts" / "gen_man.py", "--check")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page: str) -> None:
    need("groff")
    proc = run("groff", "-man", "-Tutf8", "-ww", "-z", MAN / page)
    assert proc.returncode == 0 and proc.stderr == ""
    # man(1) itself, as a user reads it: the title and every section there.
    need("man")
    shown = run("man", "-l", MAN / page, env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat"})
    assert shown.returncode == 0, shown.stderr
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^{section}$", shown.stdout, re.MULTILINE), section


def _options_in(page: str) -> set[str]:
    text = (MAN / page).read_text()
    options = text[
        text.index("\n.SH OPTIONS") : text.index("\n.SH", text.index("\n.SH OPTIONS") + 1)
    ]
    return {
        m.replace("\\-", "-") for m in re.findall(r"\\fB(\\-[^\\ ]*(?:\\-[^\\ ]*)*)\\fR", options)
    }


@pytest.mark.parametrize(
    ("page", "parser"),
    [("rarp-reply.8", rarp_reply.build_parser), ("rarp-req.8", rarp_req.build_parser)],
)
def test_man_page_lists_every_option(page: str, parser: object) -> None:
    flags = {o for a in parser()._actions for o in a.option_strings}  # type: ignore[operator]
    assert _options_in(page) == flags


def test_rarp_reply_man_page_names_every_file_key_and_exit_status() -> None:
    text = (MAN / "rarp-reply.8").read_text()
    for f in dataclasses.fields(config.Settings):
        assert f"File key: \\fB{config.key(f).replace('-', chr(92) + '-')}\\fR." in text
    statuses = text[text.index(".SH EXIT STATUS") : text.index(".SH FILES")]
    codes = {v for k, v in vars(rarp_reply).items() if k.startswith("EXIT_")}
    assert codes | {0} == {int(c) for c in re.findall(r"^\.B (\d+)$", statuses, re.MULTILINE)}


def test_versions_agree() -> None:
    changelog = (ROOT / "debian" / "changelog").read_text()
    assert changelog.startswith(f"rarp-replay ({__version__}) ")
    assert PYPROJECT["project"]["version"] == __version__
    for page in PAGES:
        assert f'"rarp-replay {__version__}"' in (MAN / page).read_text()


# -- units -----------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order (systemd allows a key several times)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault(f"{section}.{k}", []).append(v)
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(unit: str) -> None:
    """systemd-analyze verify works without systemd as PID 1 (checked on this host).

    The one complaint allowed is the program itself when the package is not
    installed here (it never is on the test host)."""
    need("systemd-analyze")
    proc = run("systemd-analyze", "verify", "--man=no", CONTRIB / unit)
    allowed = f"Command {BINDIR}/rarp-reply is not executable: No such file or directory"
    complaints = [
        line
        for line in proc.stderr.splitlines()
        if not line.endswith(allowed) or os.path.exists(f"{BINDIR}/rarp-reply")
    ]
    assert complaints == []


@pytest.mark.parametrize("unit", UNITS)
def test_unit_keeps_its_promises(unit: str) -> None:
    u = parse_unit((CONTRIB / unit).read_text())
    (start,) = u["Service.ExecStart"]
    assert start.split()[0] == f"{BINDIR}/rarp-reply" and "rarp-reply" in SCRIPTS
    # A rejected file fails `systemctl reload`: the check comes first, with ExecStart's flags.
    check, hup = u["Service.ExecReload"]
    assert check == f"{start} --check-config" and hup == "/bin/kill -HUP $MAINPID"
    prevent = {int(c) for c in u["Service.RestartPreventExitStatus"][0].split()}
    assert prevent == {rarp_reply.EXIT_USAGE, rarp_reply.EXIT_NO_NETNS}
    # ~@privileged would refuse capset(2), which the capability drop needs (issue 15).
    # sched_setattr is put back after ~@resources: the daemon calls it at start (sched.py),
    # and a filtered call kills it with SIGSYS.
    assert u["Service.SystemCallFilter"] == ["@system-service", "~@resources", "sched_setattr"]
    assert u["Service.IPAddressDeny"] == ["any"] and u["Service.IPAddressAllow"] == ["localhost"]
    assert u["Service.RuntimeDirectory"] == ["rarp-replay"]
    assert u["Service.RuntimeDirectoryMode"] == ["0750"]
    assert u["Service.User"] == u["Service.Group"] == [sysusers_name()]
    assert u["Service.Type"] == ["notify"]


def test_security_scores_are_the_readmes() -> None:
    """The README's `systemd-analyze security` scores are measured, on systemd 252."""
    need("systemd-analyze")
    if not run("systemd-analyze", "--version").stdout.startswith("systemd 252 "):
        pytest.skip("the README's scores were measured with systemd 252")
    readme = (ROOT / "README.md").read_text()
    for unit in UNITS:
        out = run("systemd-analyze", "security", "--offline=true", CONTRIB / unit).stdout
        score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out)
        assert score is not None, out[-500:]
        assert f"`{unit}`: {score.group(1)}" in readme


def sysusers_name() -> str:
    (line,) = [
        ln
        for ln in (CONTRIB / "rarp-replay.sysusers").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    kind, name, *_ = line.split()
    assert kind == "u"
    return name


def test_sysusers_entry_parses() -> None:
    need("systemd-sysusers")
    # --dry-run: nothing is written (this host is never changed).
    proc = run("systemd-sysusers", "--dry-run", CONTRIB / "rarp-replay.sysusers")
    assert proc.returncode == 0, proc.stderr
    assert sysusers_name() == "rarp-replay"


# -- the Debian package ------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0 and shutil.which("dpkg-buildpackage") is None:
        pytest.skip("build-deb needs root (to install its build dependencies) or them installed")
    need("dpkg-deb")
    proc = run("bash", ROOT / "scripts" / "build-deb")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    built = ROOT / "dist" / f"rarp-replay_{__version__}_all.deb"
    assert built.is_file()
    # The work tree is left as it was, but for dist/ and build/ (both gitignored).
    status = run("git", "-C", ROOT, "status", "--porcelain", "--ignored", "dist", "build")
    assert all(line.startswith("!! ") for line in status.stdout.splitlines())
    yield built


def dpkg_deb(*args: str | Path) -> str:
    proc = run("dpkg-deb", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_deb_files(deb: Path, tmp_path: Path) -> None:
    files = {line.split()[-1].removeprefix(".") for line in dpkg_deb("-c", deb).splitlines()}
    for script in SCRIPTS:
        assert f"{BINDIR}/{script}" in files
    for page in PAGES:
        assert f"/usr/share/man/man8/{page}.gz" in files
    assert "/usr/lib/sysusers.d/rarp-replay.conf" in files
    assert "/etc/rarp-replay/config.toml" in files
    unitdir = {"/lib/systemd/system", "/usr/lib/systemd/system"}
    dpkg_deb("-x", deb, tmp_path)
    for unit in UNITS:
        (where,) = [d for d in unitdir if f"{d}/{unit}" in files]
        assert (tmp_path / where.lstrip("/") / unit).read_text() == (CONTRIB / unit).read_text()
    etc = tmp_path / "etc/rarp-replay/config.toml"
    assert etc.read_text() == (CONTRIB / "config.example.toml").read_text()
    for page in PAGES:
        shipped = gzip.decompress((tmp_path / f"usr/share/man/man8/{page}.gz").read_bytes())
        assert shipped.decode() == (MAN / page).read_text()
    assert (tmp_path / "usr/share/doc/rarp-replay/copyright").is_file()


def test_deb_relations_and_scripts(deb: Path, tmp_path: Path) -> None:
    control = dpkg_deb("-f", deb)
    depends = re.search(r"^Depends: (.*)$", control, re.MULTILINE)
    assert depends is not None
    rel = [d.strip() for d in depends.group(1).split(",")]
    assert "python3 (>= 3.11)" in rel and "python3-prometheus-client" in rel
    assert re.search(r"^Architecture: all$", control, re.MULTILINE)
    dpkg_deb("-e", deb, tmp_path)
    assert (tmp_path / "conffiles").read_text().split() == ["/etc/rarp-replay/config.toml"]
    postinst = (tmp_path / "postinst").read_text()
    # The user exists before anything could start the unit.
    assert "systemd-sysusers" in postinst
    assert postinst.index("systemd-sysusers") < postinst.index("rarp-reply.service")
    # Installed disabled: dh_installsystemd --no-enable's snippet enables only a unit the
    # admin had enabled before (debian-installed, was-enabled), never on a first install.
    assert "deb-systemd-helper debian-installed 'rarp-reply.service'" in postinst
    assert "was-enabled defaults to true" not in postinst
    # The template is never enabled, started or stopped by the package.
    for name in ("postinst", "prerm", "postrm"):
        assert "rarp-reply@" not in (tmp_path / name).read_text()


def test_deb_programs_run_with_debians_python(deb: Path, tmp_path: Path) -> None:
    """The packaged code, unpacked (not installed), under /usr/bin/python3."""
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3")
    dpkg_deb("-x", deb, tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path / "usr/lib/python3/dist-packages"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for script in SCRIPTS:
        first = (tmp_path / "usr/bin" / script).read_text().splitlines()[0]
        assert first in {"#! /usr/bin/python3", "#!/usr/bin/python3"}, first
    example = tmp_path / "etc/rarp-replay/config.toml"
    reply = run(
        "/usr/bin/python3",
        tmp_path / "usr/bin/rarp-reply",
        "--config",
        example,
        "--check-config",
        env=env,
    )
    assert reply.returncode == 0, reply.stderr
    assert f"# from: built-in defaults < {example} < command-line flags" in reply.stdout
    req = run(
        "/usr/bin/python3",
        tmp_path / "usr/bin/rarp-req",
        "--dry-run",
        "--mac",
        "52:54:00:12:34:56",
        env=env,
    )
    assert req.returncode == 0, req.stderr
    assert "op=3(" in req.stdout
