"""The settings table: TOML file, flags, precedence, validation, rendering."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rarp_replay import config
from rarp_replay.cli.rarp_reply import build_parser
from rarp_replay.config import Settings, engine_config
from rarp_replay.domain import GlobSet
from rarp_replay.engine import Config
from rarp_replay.errors import ConfigError
from rarp_replay.mirror import Mirror
from rarp_replay.ratelimit import Rate


def parse(*argv: str) -> dict[str, object]:
    return config.from_flags(build_parser().parse_args(list(argv)))


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return str(p)


def test_defaults_match_engine_defaults() -> None:
    s = Settings()
    e = engine_config(s)
    assert e.holddown == 5.0 and e.give_up == 30.0
    assert e.port_rate == s.port_rate == Rate(2000.0, 20000.0)
    assert s.remember == 300.0 and not s.dry_run
    # One set of defaults: the settings' are the engine's and the mirror's.
    assert e == Config()
    assert s.remember == Mirror().remember


def test_settings_map_onto_the_engine_by_name() -> None:
    # Every setting the engine does not take is the daemon's own (sockets,
    # logs, the mirror): a setting meant for the engine under another name
    # would land here and fail.
    engine = {f.name for f in dataclasses.fields(Config)}
    settings = {f.name for f in dataclasses.fields(Settings)}
    assert settings - engine == {
        "remember",
        "dry_run",
        "metrics",
        "netns",
        "control_socket",
        "log_level",
        "log_format",
        "netlink_rcvbuf",
        "capture_rcvbuf",
    }
    s = Settings(
        holddown=1.0,
        give_up=2.0,
        retry_backoff=(0.5,),
        relearn=False,
        takeover=False,
        takeover_delay=0.25,
        fdb_trigger=False,
        port_rate=Rate(1.0, 2.0),
        global_rate=Rate(3.0, 4.0),
        probe_rate=Rate(5.0, 6.0),
        fabric_ports=("up*",),
        include=("swp*",),
        exclude=("swp9",),
    )
    e = engine_config(s)
    for name in settings & engine:
        assert getattr(e, name) == getattr(s, name) != getattr(Config(), name), name


def test_file_then_flags_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        holddown = 2
        give-up = 12.5
        include = ["swp*", "bond*"]
        fabric-ports = ["uplink*"]
        takeover = false
        takeover-delay = 0.25
        port-rate = "100/200"
        global-rate = { rate = 300, burst = 600 }
        probe-rate = 50
        log-format = "json"
        netlink-rcvbuf = "4M"
        """,
    )
    s, used = config.load(
        path,
        parse("--holddown", "1", "--include", "swp9", "--takeover", "--takeover-delay", "0.5"),
    )
    assert used == path
    assert s.holddown == 1.0  # flag wins
    assert s.give_up == 12.5  # file
    assert s.include == ("swp9",)  # a list flag replaces the file's list
    assert s.fabric_ports == ("uplink*",)
    assert s.takeover is True
    assert s.takeover_delay == 0.5  # flag wins
    assert s.port_rate == (100.0, 200.0)
    assert s.global_rate == (300.0, 600.0)
    assert s.probe_rate == (50.0, 50.0)
    assert s.log_format == "json"
    assert s.netlink_rcvbuf == 4 << 20
    e = engine_config(s)
    assert e.include == ("swp9",) and e.fabric_ports == ("uplink*",)
    assert (e.global_rate.rate, e.global_rate.burst) == (300.0, 600.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("holdown = 3", "holdown: unknown key (did you mean holddown?)"),
        ("holddown = 'x'", "holddown: expected a number, got 'x'"),
        ("holddown = -1", "holddown: expected seconds >= 0"),
        ("holddown = true", "holddown: expected a number"),
        ("takeover = 1", "takeover: expected true or false"),
        ("takeover-delay = -0.5", "takeover-delay: expected seconds >= 0"),
        ("port-rate = '0/5'", "port-rate: rate must be > 0"),
        ("port-rate = { rate = 5, bust = 1 }", "port-rate: expected { rate = R, burst = B }"),
        ("include = 'swp*'", "include: expected a list"),
        ("include = ['']", "include: expected an interface name"),
        ("log-level = 'verbose'", "log-level: expected one of debug, info, warning, error"),
        ("retry-backoff = []", "retry-backoff: expected a non-empty list"),
        ("netlink-rcvbuf = 10", "netlink-rcvbuf: expected a byte count"),
        ("holddown = [", "not valid TOML"),
        ("[timers]\nholddown = 1", "timers: unknown key"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path, {})
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "nope.toml"), {})


def test_render_round_trips(tmp_path: Path) -> None:
    s = Settings(
        include=("swp*",),
        exclude=("swp48",),
        holddown=1.5,
        takeover=False,
        port_rate=(10.0, 20.0),
        retry_backoff=(0.1, 0.3),
        log_level="debug",
    )
    text = config.render(s, "x.toml")
    path = write(tmp_path, text)
    again, _ = config.load(path, {})
    assert again == s
    # Every setting is in the rendering: nothing is hidden from the operator.
    assert len([ln for ln in text.splitlines() if " = " in ln]) == len(dataclasses.fields(s))


def test_every_setting_has_a_flag_and_help() -> None:
    help_text = build_parser().format_help()
    for f in dataclasses.fields(Settings):
        flag = f.metadata["flag"] or f"--{config.key(f)}"
        assert flag in help_text, flag
        assert f.metadata["help"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port-rate", "x"], "expected RATE[/BURST]"),
        (["--holddown", "-3"], "expected seconds >= 0"),
        (["--takeover-delay", "soon"], "expected seconds >= 0"),
        (["--retry-backoff", "1,0"], "every retry step must be > 0"),
        (["--netlink-rcvbuf", "12X"], "expected BYTES"),
        (["--log-level", "loud"], "expected one of"),
    ],
)
def test_bad_flag_is_usage_error(argv: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "rarp_replay", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_check_config_cli(tmp_path: Path) -> None:
    good = write(tmp_path, "holddown = 2\nexclude = ['eth0']\n")
    r = subprocess.run(
        [sys.executable, "-m", "rarp_replay", "--config", good, "--check-config", "--no-relearn"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "holddown = 2.0" in r.stdout and 'exclude = ["eth0"]' in r.stdout
    assert "relearn = false" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("give_up = 3\n")
    r = subprocess.run(
        [sys.executable, "-m", "rarp_replay", "--config", str(bad), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"rarp-reply: error: {bad}: give_up: unknown key (did you mean give-up?)"
    ]


def test_globset() -> None:
    g = GlobSet(["swp*", "bond[0-9]", "eth0"])
    assert "swp12" in g and "bond3" in g and "eth0" in g
    assert "eth01" not in g and "bond10" not in g and "Swp1" not in g
    assert not GlobSet() and "anything" not in GlobSet()
    for i in range(5000):  # the cache stays bounded as names come and go
        assert f"tap{i}" not in g
    assert len(g._cache) <= 4096


def test_example_file_lists_every_setting_at_its_default(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "contrib" / "config.example.toml"
    # Uncomment every `#key = value` line and drop trailing comments.
    lines = []
    for line in example.read_text().splitlines():
        if line[:1] == "#" and line[1:2].isalpha():
            lines.append(line[1:].split("  #")[0])
    settings, _ = config.load(write(tmp_path, "\n".join(lines)), {})
    assert settings == Settings()
    documented = {ln.split("=")[0].strip() for ln in lines}
    assert documented == {config.key(f) for f in dataclasses.fields(Settings)}


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rarp_replay", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # "got 0/0" said nothing about what is valid; the text as given, and the rule.
        (
            ["--port-rate", "0"],
            "argument --port-rate: rate must be > 0 (per second) and burst >= 1 "
            "(default: the rate): expected RATE[/BURST], got '0'",
        ),
        # Not Python's "could not convert string to float".
        (
            ["--retry-backoff", "1,,2"],
            "argument --retry-backoff: expected SECONDS[,SECONDS...] (e.g. 0.2,0.5,1), "
            "got '1,,2': step '' is not a number of seconds",
        ),
        (["--holddown", "soon"], "argument --holddown: expected seconds >= 0, got 'soon'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_flag_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    r = run_cli(*argv)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"rarp-reply: error: {message}"]


def test_help_is_still_complete() -> None:
    r = run_cli("--help")
    assert r.returncode == 0 and "usage: rarp-reply" in r.stdout and "--give-up" in r.stdout


def test_check_config_rejects_a_missing_namespace() -> None:
    r = run_cli("--check-config", "--netns", "rarp-replay-no-such-ns")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "rarp-reply: error: network namespace 'rarp-replay-no-such-ns' not found"
    ]


def test_check_config_rejects_a_metrics_address_not_on_this_host() -> None:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface here: bind() says EADDRNOTAVAIL.
    r = run_cli("--check-config", "--metrics", "192.0.2.1:9464")
    assert r.returncode == 1 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith("rarp-reply: error: cannot serve metrics on 192.0.2.1:")
    # An address of this host passes, even when its port is taken (a running daemon's).
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("--check-config", "--metrics", f"127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr


def test_control_socket_setting() -> None:
    r = run_cli("--check-config", "--control-socket", "/run/x/ctl.sock")
    assert r.returncode == 0 and 'control-socket = "/run/x/ctl.sock"' in r.stdout
    bad = run_cli("--check-config", "--control-socket", "relative.sock")
    assert bad.returncode == 2 and "expected an absolute path" in bad.stderr
    assert "control-socket" in config.restart_keys()
