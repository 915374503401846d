"""The benchmark's smoke mode runs end to end and writes a well-formed result file.

No timing is asserted: the numbers depend on the machine and on what else runs on
it. What must hold on any machine: every sample got its probe, every RARP of the
burst was answered, the churn lost nothing, and the namespaces are gone afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import netlab

pytestmark = [
    pytest.mark.netns,
    # tests/conftest.py skips netns tests without root only below tests/: say it here too.
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


def test_smoke_run_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = netlab.run_module("benchmarks.bench_reply", "--smoke", "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())

    [size] = res["sizes"]
    lat = size["latency"]
    assert lat["samples"] == lat["requested"] == 20 and lat["lost"] == []
    assert len(lat["values_us"]) == 20 and all(v > 0 for v in lat["values_us"])
    assert set(lat["us"]) == {"p50", "p90", "p99", "max", "mean"}
    assert size["startup"]["rss_kb"] > 0 and size["startup"]["load_ms"] is not None

    echo = res["echo"]["latency"]
    assert echo["samples"] == 20 and echo["lost"] == []

    [burst] = res["bursts"]
    assert burst["r"] == burst["sent"] == burst["probed"] == 50 and burst["all_probed"]
    assert burst["tap_drops"] == 0 and len(burst["probe_times_ms"]) == 50

    churn = res["churn"]
    assert churn["events"] == 200 and churn["lost_updates"] == 0
    assert churn["netlink_overruns"] == 0
    chk = churn["check"]
    assert chk["added"]["probed"] == chk["added"]["sent"] > 0
    assert chk["deleted"]["probed"] == 0
    assert chk["deleted"]["unknown"] == chk["deleted"]["sent"] > 0
    assert chk["untouched"]["probed"] == chk["untouched"]["sent"] > 0
    assert churn["kernel_after"]["deleted_v6"] == 0

    tomb = res["tombstones"]["latency"]
    assert tomb["samples"] == tomb["requested"] and tomb["lost"] == []

    assert {t["target"] for t in res["targets"]} and all("met" in t for t in res["targets"])
    # Every namespace of the run was removed.
    prefix = res["meta"]["namespace_prefix"]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert prefix not in listed.stdout
