"""A million mutated frames through every frame parser and through Engine.on_frame.

tests/unit/test_frame_fuzz.py proves the same properties with hypothesis, on a few
thousand examples; hypothesis costs ~1 ms an example, too slow for a million. Here a
seeded mutation loop (fuzzing.py: bit flips, byte overwrites with edge values, inserts,
deletes, truncations, extensions, splices, EtherTypes and tags dropped in, ICMPv6
checksums fixed up so the option parser is reached) runs over a corpus of valid frames:
RARP, ARP request/reply, NS/NA with options, untagged, 802.1Q, QinQ, truncated. Every
mutant goes through every parser and, on a random port and VLAN, through the engine (the
daemon's whole decision path, sans-I/O, on the unit tests' switch topology), whose clock
moves 1 ms per frame so hold-downs expire, rounds retry, take over and give up.

Then, when atheris is installed (a manylinux wheel on PyPI, no compiler needed), the same
oracle under coverage-guided fuzzing for a bounded time.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability import fuzzing
from tests.support import netlab

pytestmark = pytest.mark.reliability

FRAMES = 1_000_000
SEED = int(os.environ.get("RARP_FUZZ_SEED", "20250601"))  # fixed: CI is reproducible
ATHERIS_SECONDS = 10


def test_a_million_mutated_frames_only_typed_errors_and_engine_never_raises(
    figures: Callable[[str], None],
) -> None:
    mutate = fuzzing.Mutator(SEED, fuzzing.corpus())
    harness = fuzzing.Harness(SEED)
    check = fuzzing.one_frame(harness)
    fuzzing.accepted.clear()
    started = time.perf_counter()
    for i in range(FRAMES):
        data = mutate()
        try:
            check(data)
        except Exception as exc:
            raise AssertionError(
                f"frame {i} of seed {SEED} ({type(exc).__name__}: {exc}): {data.hex()}"
            ) from exc
    elapsed = time.perf_counter() - started
    stats = harness.engine.stats
    # The mutants reach the deep paths, not only the first length check.
    assert fuzzing.accepted["arp-frame"] > 10_000 and fuzzing.accepted["nd-frame"] > 1_000
    assert stats["rounds"] > 0 and stats["takeovers"] > 0 and stats["gave-up"] > 0
    figures(
        f"fuzz: {FRAMES:,} mutants (seed {SEED}) in {elapsed:.1f} s, "
        f"{FRAMES / elapsed:,.0f} frames/s through 6 parsers + Engine.on_frame; parsed as "
        f"ARP/RARP {fuzzing.accepted['arp-frame']:,}, as NS/NA "
        f"{fuzzing.accepted['nd-frame']:,}; engine: {stats['rounds']} rounds, "
        f"{stats['probes.ipv4'] + stats['probes.ipv6']} probes, {stats['takeovers']} "
        f"takeovers, {stats['dropped.malformed']:,} malformed"
    )


def test_atheris_coverage_guided(tmp_path: Path, figures: Callable[[str], None]) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, frame in enumerate(fuzzing.corpus()):
        (corpus / f"{i:03d}").write_bytes(frame)
    proc = netlab.run_module(
        "tests.reliability.atheris_target",
        f"-max_total_time={ATHERIS_SECONDS}",
        f"-seed={SEED}",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
        timeout=ATHERIS_SECONDS + 60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not list(tmp_path.glob("crash-*"))
    done = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    assert done, proc.stderr[-2000:]
    cov = re.findall(r"cov: (\d+)", proc.stderr)
    figures(
        f"atheris: {int(done[1]):,} runs in {done[2]} s, coverage {cov[-1] if cov else '?'} "
        f"edges, corpus {len(list(corpus.iterdir()))} inputs (from {len(fuzzing.corpus())})"
    )
