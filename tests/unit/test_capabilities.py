"""The pure parts of the privilege drop (parse, plan, verify) and of `--netns`."""

from __future__ import annotations

import pytest

from rarp_replay import capabilities as caps
from rarp_replay import config, netns
from rarp_replay.capabilities import CAP_NET_ADMIN, CAP_NET_RAW, CAP_SETPCAP, CAP_SYS_ADMIN, Caps
from rarp_replay.cli.rarp_reply import build_parser

KEEP = 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW  # 0x3000
ALL = (1 << 41) - 1  # CAP_CHOWN .. CAP_CHECKPOINT_RESTORE (40)

# /proc/PID/status of a root shell (lines the parser must skip included).
STATUS = """\
Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
Uid:\t0\t0\t0\t0
Threads:\t3
SigQ:\t0/63704
CapInh:\t0000000000000000
CapPrm:\t000001ffffffffff
CapEff:\t000001ffffffffff
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
Seccomp:\t0
"""


def test_parse_status() -> None:
    c = Caps.parse(STATUS)
    assert c == Caps(
        inheritable=0,
        permitted=ALL,
        effective=ALL,
        bounding=ALL,
        ambient=0,
        no_new_privs=False,
        threads=3,
    )
    after = Caps.parse("CapPrm:\t0000000000003000\nNoNewPrivs:\t1\n")
    assert after.permitted == KEEP and after.no_new_privs and after.effective == 0


def test_names_and_masks() -> None:
    assert caps.mask([CAP_NET_RAW, CAP_NET_ADMIN]) == 0x3000
    assert caps.bits(0x3000) == [12, 13]
    assert caps.names(0x3000) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert caps.name(CAP_SYS_ADMIN) == "CAP_SYS_ADMIN"
    assert caps.name(40) == "CAP_CHECKPOINT_RESTORE"
    assert caps.name(45) == "cap_45"  # a kernel newer than this table
    assert caps.names(0) == []


def test_plan_for_root_drops_everything_else_everywhere() -> None:
    p = caps.plan(Caps(permitted=ALL, effective=ALL, bounding=ALL), KEEP)
    assert (p.effective, p.permitted, p.bounding) == (KEEP, KEEP, KEEP)
    assert p.bounding_drop == ALL & ~KEEP and p.bounding_kept == 0
    assert not p.raise_setpcap


def test_plan_raises_setpcap_first_when_only_permitted() -> None:
    # e.g. capsh --caps=...+p: CAP_SETPCAP permitted but not effective.
    p = caps.plan(Caps(permitted=ALL, effective=KEEP, bounding=ALL), KEEP)
    assert p.raise_setpcap and p.bounding_drop == ALL & ~KEEP


def test_plan_with_only_the_kept_ones_has_nothing_to_drop() -> None:
    # setpriv --bounding-set=-all,+net_raw,+net_admin: no CAP_SETPCAP, none needed.
    p = caps.plan(Caps(permitted=KEEP, effective=KEEP, bounding=KEEP), KEEP)
    assert (p.effective, p.permitted, p.bounding) == (KEEP, KEEP, KEEP)
    assert p.bounding_drop == 0 and p.bounding_kept == 0 and not p.raise_setpcap


def test_plan_without_setpcap_leaves_the_bounding_set() -> None:
    # An unprivileged user with ambient capabilities and a full bounding set.
    c = Caps(inheritable=KEEP, permitted=KEEP, effective=KEEP, bounding=ALL, ambient=KEEP)
    p = caps.plan(c, KEEP)
    assert p.bounding == ALL and p.bounding_drop == 0 and p.bounding_kept == ALL & ~KEEP
    assert (p.effective, p.permitted) == (KEEP, KEEP)


def test_plan_never_gains_and_keeps_only_what_is_asked() -> None:
    c = Caps(permitted=1 << CAP_NET_RAW, effective=1 << CAP_NET_RAW, bounding=ALL)
    assert caps.plan(c, KEEP).permitted == 1 << CAP_NET_RAW  # CAP_NET_ADMIN was not there
    root = Caps(permitted=ALL, effective=ALL, bounding=ALL)
    p = caps.plan(root, 1 << CAP_NET_RAW)
    assert p.permitted == p.bounding == 1 << CAP_NET_RAW
    # Template unit: CAP_SYS_ADMIN (setns) and CAP_SETPCAP are given up too.
    four = KEEP | 1 << CAP_SYS_ADMIN | 1 << CAP_SETPCAP
    p = caps.plan(Caps(permitted=four, effective=four, bounding=four, ambient=four), KEEP)
    assert (p.permitted, p.bounding, p.bounding_drop) == (KEEP, KEEP, four & ~KEEP)


def test_verify_accepts_exactly_the_plan_and_names_what_differs() -> None:
    p = caps.plan(Caps(permitted=ALL, effective=ALL, bounding=ALL), KEEP)
    good = Caps(permitted=KEEP, effective=KEEP, bounding=KEEP, no_new_privs=True)
    assert caps.verify(good, p) == []
    bad = Caps(
        inheritable=1 << CAP_SYS_ADMIN,
        permitted=KEEP,
        effective=1 << CAP_NET_RAW,
        bounding=KEEP | 1 << CAP_SETPCAP,
        no_new_privs=False,
    )
    problems = caps.verify(bad, p)
    assert problems == [
        "effective set has none extra, ['CAP_NET_ADMIN'] missing",
        "inheritable set has ['CAP_SYS_ADMIN'] extra, none missing",
        "bounding set has ['CAP_SETPCAP'] extra, none missing",
        "no_new_privs is not set",
    ]


def test_result_reports_kept_dropped_and_what_the_bounding_set_still_holds() -> None:
    before = Caps(inheritable=KEEP, permitted=KEEP | 1, effective=KEEP, bounding=ALL)
    p = caps.plan(before, KEEP)
    after = Caps(permitted=KEEP, effective=KEEP, bounding=ALL, no_new_privs=True)
    r = caps.Result(before, after, p)
    assert r.kept == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert r.dropped == ["CAP_CHOWN"]
    assert len(r.bounding_left) == 39 and "CAP_SYS_ADMIN" in r.bounding_left


def test_netns_path_of() -> None:
    assert netns.path_of("blue") == "/run/netns/blue"
    assert netns.path_of("/proc/1/ns/net") == "/proc/1/ns/net"
    assert netns.path_of("./blue") == "./blue"  # has a '/': a path
    for bad in ("", ".", "..", "a\0b"):
        with pytest.raises(ValueError, match="invalid network namespace name"):
            netns.path_of(bad)


def test_cli_netns_option() -> None:
    def settings(*argv: str) -> config.Settings:
        return config.load(None, config.from_flags(build_parser().parse_args(list(argv))))[0]

    assert settings().netns is None
    assert settings("--netns", "blue").netns == "blue"
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--netns", ".."])
    assert exc.value.code == 2
