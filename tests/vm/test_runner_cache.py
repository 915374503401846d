"""The VM runner's cache rules (runs on the host): a cache entry is trusted only with its
completion stamp for its own key; anything else is deleted and rebuilt. Also the systemd
image's root disk and boot command, which need no guest to check."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.vm import runner


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(runner, "CACHE", tmp_path)
    return tmp_path


def build(key: str, content: str = "data") -> tuple[Path, bool]:
    """Open the entry; fill it if it must be built. Return (dir, whether it was built)."""
    with runner.cache_entry("thing", key) as (final, building):
        if building is not None:
            (building / "payload").write_text(content)
    return final, building is not None


def test_built_once_then_reused(cache: Path) -> None:
    final, built = build("k1")
    assert built
    assert (final / "payload").read_text() == "data"
    assert (final / runner.STAMP).read_text().strip() == "k1"
    assert build("k1") == (final, False)


def test_entry_without_stamp_is_rebuilt(cache: Path) -> None:
    final, _ = build("k1", "old")
    (final / runner.STAMP).unlink()  # as if the build had been killed before the stamp
    _, built = build("k1", "new")
    assert built
    assert (final / "payload").read_text() == "new"


def test_stamp_of_another_key_is_not_trusted(cache: Path) -> None:
    final, _ = build("k1", "old")
    (final / runner.STAMP).write_text("k0\n")
    assert build("k1", "new")[1]


def test_other_keys_and_leftover_build_dirs_are_removed(cache: Path) -> None:
    old, _ = build("k1")
    leftover = cache / "thing" / ".k2.building-x"
    leftover.mkdir()
    new, built = build("k2")
    assert built
    assert not old.exists()
    assert not leftover.exists()
    assert sorted(p.name for p in (cache / "thing").iterdir()) == [runner.LOCK, "k2"]
    assert new.is_dir()


def test_failed_build_leaves_nothing(cache: Path) -> None:
    with pytest.raises(RuntimeError), runner.cache_entry("thing", "k1") as (_, building):
        assert building is not None
        (building / "half").write_text("x")
        raise RuntimeError("download failed")
    assert [p.name for p in (cache / "thing").iterdir()] == [runner.LOCK]


def test_systemd_disk_is_a_copy_of_the_tree(tmp_path: Path) -> None:
    """The systemd image's writable root: an ext4 copy made without mounting anything; the
    cached tree it comes from is left as it was."""
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("guest\n")
    disk = tmp_path / "root.img"
    runner.systemd_disk(tree, disk)
    assert disk.stat().st_size >= runner.SYSTEMD_DISK_SLACK_MB << 20
    out = runner.run(["debugfs", "-R", "cat /etc/hostname", str(disk)]).stdout
    assert out == "guest\n"
    assert sorted(p.name for p in tree.rglob("*")) == ["etc", "hostname"]


def test_systemd_guest_runs_the_session_then_powers_off(tmp_path: Path) -> None:
    """The kernel command line, split as systemd splits it (quotes), starts the session from
    the 9p results share once both shares are mounted, and powers off either way."""
    kernel = runner.Kernel(tmp_path / "vmlinuz", "6.12", None)
    cmd = runner.systemd_qemu_command(
        kernel, tmp_path / "initrd", tmp_path / "root.img", tmp_path / "results", kvm=False
    )
    words = dict(
        w.split("=", 1) if "=" in w else (w, "") for w in shlex.split(cmd[cmd.index("-append") + 1])
    )
    assert words["root"] == "/dev/vda"
    assert words["init"] == "/usr/lib/systemd/systemd"
    assert words["systemd.run_success_action"] == words["systemd.run_failure_action"] == "poweroff"
    shell = shlex.split(words["systemd.run"])
    assert shell[:2] == ["/bin/sh", "-c"]
    steps = shell[2].split(" && ")
    assert steps[-1] == f"exec bash {runner.GUEST_RESULTS}/run.sh"
    assert any(s.endswith(f"{runner.GUEST_RESULTS_TAG} {runner.GUEST_RESULTS}") for s in steps)
    assert any(s.endswith(f"{runner.GUEST_REPO_TAG} {runner.GUEST_REPO}") for s in steps)
    shares = [a for a in cmd if a.startswith("local,path=")]
    assert any(f"mount_tag={runner.GUEST_REPO_TAG}," in a and "readonly=on" in a for a in shares)
    assert runner.DEFAULT_IMAGES == ("bookworm", "trixie", "systemd")
