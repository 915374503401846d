"""bench_engine.py runs and accounts for every RARP (no timing is asserted)."""

from __future__ import annotations

import json
import os

import pytest

from tests.support import netlab


def run(*args: str) -> dict[str, dict[str, float]]:
    proc = netlab.run_module(
        "benchmarks.bench_engine", "--n", "300", "--r", "100", *args, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths: dict[str, dict[str, float]] = json.loads(proc.stdout.splitlines()[-1])["paths"]
    return paths


def test_socket_free_paths_account_for_every_rarp() -> None:
    paths = run("--reps", "2", "--json")
    assert set(paths) == {"engine", "fdb", "daemon"}
    assert paths["engine"]["probes"] == 100
    assert paths["fdb"]["fdb_actions"] == 0  # new MACs on a port: no move, no round
    assert paths["daemon"]["probes"] == 100
    assert paths["daemon"]["sightings"] == 200  # the port's and the bridge's
    assert paths["daemon"]["log_lines"] == 100  # one announcement each, nothing else
    for p in paths.values():
        assert len(p["cpu_runs"]) == 2 and all(x > 0 for x in p["cpu_runs"])


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_sockets_path_probes_every_rarp_through_the_kernel() -> None:
    paths = run("--reps", "1", "--paths", "daemon", "--sockets", "--json")
    s = paths["sockets"]
    assert s["probes"] == 100 and s["sightings"] == 200 and s["log_lines"] == 100
