"""The VM runner's cache rules (runs on the host): a cache entry is trusted only with its
completion stamp for its own key; anything else is deleted and rebuilt."""

from __future__ import annotations

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
