"""Coverage-guided fuzzing of the frame parsers and Engine.on_frame with atheris (libFuzzer).

    python -m tests.reliability.atheris_target [libFuzzer options] [CORPUS_DIR]  # from the root

The same oracle as the seeded loop (fuzzing.py): any exception but FrameError from a
parser, or any exception at all from the engine, is a crash; libFuzzer then writes the
input to crash-<hash> (see -artifact_prefix) and exits non-zero.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["rarp_replay"]):
    from tests.reliability import fuzzing

_check = fuzzing.one_frame(fuzzing.Harness(seed=1))


def test_one_input(data: bytes) -> None:
    _check(data)
    # libFuzzer cannot guess an ICMPv6 checksum: also try the input with it fixed, so the
    # option parser and the RFC 4861 checks behind the checksum are reached.
    fixed = bytearray(data)
    fuzzing.fix_icmpv6_checksum(fixed)
    if fixed != data:
        _check(bytes(fixed))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
