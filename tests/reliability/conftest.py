"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def figures(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print one line of measured figures past pytest's capture, so CI logs keep them
    (no test asserts on speed: these are for reading)."""

    def emit(line: str) -> None:
        with capsys.disabled():
            print(f"\n[reliability] {line}", flush=True)

    return emit
