"""The README's reference tables cover every setting and every metric."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from rarp_replay import config
from rarp_replay.engine import Engine
from rarp_replay.metrics import EngineCollector
from rarp_replay.mirror import Mirror

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = set(re.findall(r"^\| `([a-z-]+)` \| `--", README, re.MULTILINE))
    assert rows == {config.key(f) for f in dataclasses.fields(config.Settings)}


def test_every_metric_family_is_documented() -> None:
    documented = set(re.findall(r"`(rarp_replay_[a-z_]+)`", README))
    for m in EngineCollector(Engine(Mirror())).collect():
        assert {m.name, f"{m.name}_total", f"{m.name}_info"} & documented, m.name
