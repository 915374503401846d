"""`rarp-reply`'s settings: one table, read from a TOML file and from flags.

Every setting is a field of `Settings`; its metadata says how to spell it
(the TOML key, the flag), how to parse it and what it means. The file keys
are the long flags without the leading dashes (`--give-up 10` is
`give-up = 10`), booleans are `--takeover` / `--no-takeover` on the command
line and `takeover = false` in the file, and repeatable flags (`--include`,
`--exclude`, `--fabric-port`) are lists in the file. Precedence: built-in
defaults, then the file, then flags; a flag given for a list replaces the
file's list rather than adding to it, so the command line always shows the
whole value.

Nothing here does I/O beyond reading the file: `load()` returns a validated
`Settings` or raises `ConfigError` naming the offending key, which the CLI
prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import logs, mirror, netns, packetsock
from .engine import Config
from .errors import ConfigError
from .listen import parse_listen
from .ratelimit import Rate

DEFAULT_PATH = "/etc/rarp-replay/config.toml"

_D = Config()

# -- value kinds ---------------------------------------------------------------
# Each kind turns a flag's text or a TOML value into the setting's value and
# back into TOML (for --check-config), raising ValueError with a message that
# reads well after "key: ".


@dataclass(frozen=True)
class Kind:
    metavar: str | None
    from_text: Callable[[str], Any]
    from_toml: Callable[[Any], Any]
    to_toml: Callable[[Any], str]


def _number(value: Any) -> float:
    # TOML booleans are not numbers here, even though bool is an int in Python.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _seconds(value: Any) -> float:
    v = _number(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"expected seconds >= 0, got {value!r}")
    return v


def _seconds_text(text: str) -> float:
    try:
        return _seconds(float(text))
    except ValueError:
        raise ValueError(f"expected seconds >= 0, got {text!r}") from None


def _fmt_float(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else ("inf" if v > 0 else "-inf")


SECONDS = Kind("SECONDS", _seconds_text, _seconds, _fmt_float)


def _backoff(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty list of seconds, got {value!r}")
    steps = tuple(_seconds(v) for v in value)
    if any(s <= 0 for s in steps):
        raise ValueError("every retry step must be > 0 seconds")
    return steps


def _backoff_text(text: str) -> tuple[float, ...]:
    steps = []
    for part in text.split(","):
        try:
            steps.append(float(part))
        except ValueError:
            # Not float()'s own message ("could not convert string to float"):
            # say which step and what a step is.
            raise ValueError(
                f"expected SECONDS[,SECONDS...] (e.g. 0.2,0.5,1), got {text!r}: "
                f"step {part.strip()!r} is not a number of seconds"
            ) from None
    try:
        return _backoff(steps)
    except ValueError as exc:
        raise ValueError(f"expected SECONDS[,SECONDS...], got {text!r}: {exc}") from None


BACKOFF = Kind(
    "S1,S2,...",
    _backoff_text,
    _backoff,
    lambda v: "[" + ", ".join(_fmt_float(s) for s in v) + "]",
)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


BOOL = Kind(None, lambda t: t, _bool, lambda v: "true" if v else "false")


def _rate_pair(rate: Any, burst: Any) -> Rate:
    r, b = _number(rate), _number(burst)
    if not (math.isfinite(r) and math.isfinite(b)) or r <= 0 or b < 1:
        raise ValueError(f"rate must be > 0 and burst >= 1, got {r:g}/{b:g}")
    return Rate(r, b)


def _rate_text(text: str) -> Rate:
    rate_s, _, burst_s = text.partition("/")
    try:
        rate = float(rate_s)
        burst = float(burst_s) if burst_s else rate
    except ValueError:
        raise ValueError(f"expected RATE[/BURST], got {text!r}") from None
    try:
        return _rate_pair(rate, burst)
    except ValueError:
        # The text as given: "got 0/0" for "0" (the burst defaults to the rate) misled.
        raise ValueError(
            f"rate must be > 0 (per second) and burst >= 1 (default: the rate): "
            f"expected RATE[/BURST], got {text!r}"
        ) from None


def _rate_toml(value: Any) -> Rate:
    # "2000/20000", 2000 (burst = rate) or { rate = 2000, burst = 20000 }.
    if isinstance(value, str):
        return _rate_text(value)
    if isinstance(value, dict):
        extra = set(value) - {"rate", "burst"}
        if extra or "rate" not in value:
            raise ValueError(f"expected {{ rate = R, burst = B }}, got {value!r}")
        return _rate_pair(value["rate"], value.get("burst", value["rate"]))
    return _rate_pair(value, value)


RATE = Kind("RATE[/BURST]", _rate_text, _rate_toml, lambda v: f'"{v[0]:g}/{v[1]:g}"')


def _glob(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError(f"expected an interface name or glob, got {value!r}")
    return value


def _globs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of interface names or globs, got {value!r}")
    return tuple(_glob(v) for v in value)


GLOBS = Kind("GLOB", _glob, _globs, lambda v: "[" + ", ".join(f'"{g}"' for g in v) + "]")


def _choice(*choices: str) -> Kind:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return Kind("{" + ",".join(choices) + "}", check, check, lambda v: f'"{v}"')


def _bytes(value: Any) -> int:
    # 4 KiB .. 1 GiB: SO_RCVBUF(FORCE) values outside this are mistakes.
    if isinstance(value, bool) or not isinstance(value, int) or not 4096 <= value <= 1 << 30:
        raise ValueError(f"expected a byte count from 4096 to {1 << 30}, got {value!r}")
    return value


_SIZE = re.compile(r"(\d+)([KMG]i?B?)?", re.IGNORECASE)


def _bytes_text(text: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"expected BYTES (e.g. 33554432 or 32M), got {text!r}")
    unit = (m.group(2) or " ")[0].upper()
    return _bytes(int(m.group(1)) << {"K": 10, "M": 20, "G": 30}.get(unit, 0))


def _bytes_toml(value: Any) -> int:
    return _bytes_text(value) if isinstance(value, str) else _bytes(value)


BYTES = Kind("BYTES", _bytes_text, _bytes_toml, str)


def _optional_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\0" in value:
        raise ValueError(f"expected a name, got {value!r}")
    return value


def _netns(value: Any) -> str | None:
    name = _optional_text(value)
    if name is not None:
        netns.path_of(name)  # ValueError for '.', '..'
    return name


NETNS = Kind("NAME|PATH", _netns, _netns, lambda v: f'"{v or ""}"')


def _endpoint(value: Any) -> tuple[str, int] | None:
    """HOST:PORT or [V6]:PORT (see listen.parse_listen); "" turns the endpoint off."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return parse_listen(value)


def _endpoint_toml(v: tuple[str, int] | None) -> str:
    if v is None:
        return '""'
    host = f"[{v[0]}]" if ":" in v[0] else v[0]
    return f'"{host}:{v[1]}"'


ENDPOINT = Kind("HOST:PORT", _endpoint, _endpoint, _endpoint_toml)


def _socket_path(value: Any) -> str | None:
    """An absolute path for a Unix socket ("": the default for the namespace)."""
    path = _optional_text(value)
    if path is not None and (not path.startswith("/") or len(path.encode()) > 107):
        # sun_path holds 108 octets with the terminating NUL (unix(7)).
        raise ValueError(f"expected an absolute path of at most 107 octets, got {value!r}")
    return path


SOCKET_PATH = Kind("PATH", _socket_path, _socket_path, lambda v: f'"{v or ""}"')


def _opt(kind: Kind, help: str, *, flag: str | None = None, restart: bool = False) -> Any:
    return {"kind": kind, "help": help, "flag": flag, "restart": restart}


# -- the settings ----------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Every setting of `rarp-reply`. Field names are TOML keys with `_` for `-`."""

    include: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            GLOBS,
            "serve only announcements heard on a port (or whose SVI) matches one of these "
            "globs; repeatable; default: every port",
        ),
    )
    exclude: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            GLOBS,
            "ignore announcements heard on a port (or whose SVI) matches one of these globs; "
            "wins over include; repeatable",
        ),
    )
    fabric_ports: tuple[str, ...] = field(
        default=_D.fabric_ports,
        metadata=_opt(
            GLOBS,
            "ports that face the fabric (never trigger), in addition to VXLAN and other "
            "tunnel devices; repeatable",
            flag="--fabric-port",
        ),
    )
    holddown: float = field(
        default=_D.holddown,
        metadata=_opt(SECONDS, "one probe round per (MAC, L2 domain) within this window"),
    )
    give_up: float = field(
        default=_D.give_up,
        metadata=_opt(SECONDS, "follow each address this long for the kernel to learn it locally"),
    )
    retry_backoff: tuple[float, ...] = field(
        default=_D.retry_backoff,
        metadata=_opt(BACKOFF, "re-probe an unanswered address after these delays (seconds)"),
    )
    remember: float = field(
        default=mirror.REMEMBER,
        metadata=_opt(SECONDS, "remember deleted neighbor bindings this long"),
    )
    relearn: bool = field(
        default=_D.relearn,
        metadata=_opt(
            BOOL,
            "ask the kernel to resolve an address whose EVPN remote entry was withdrawn",
        ),
    )
    takeover: bool = field(
        default=_D.takeover,
        metadata=_opt(
            BOOL,
            "when the VM answers, replace EVPN's remote entry by a local one (after "
            "takeover-delay) instead of waiting for the old leaf's withdrawal without a bound",
        ),
    )
    takeover_delay: float = field(
        default=_D.takeover_delay,
        metadata=_opt(
            SECONDS,
            "when the VM answers while EVPN's remote entry is there, wait this long for the "
            "old leaf's withdrawal before taking over; the route then leaves after the "
            "withdrawal, never overlapping it (0: at once, make-before-break, which FRR "
            "8.4.0-8.4.4, 8.5.0-8.5.2 and 9.0.0 can answer by losing the VM on other leaves)",
        ),
    )
    fdb_trigger: bool = field(
        default=_D.fdb_trigger,
        metadata=_opt(
            BOOL, "also start a round when the bridge learns a MAC that moved to a local port"
        ),
    )
    port_rate: Rate = field(
        default=_D.port_rate,
        metadata=_opt(RATE, "announcements handled per second per ingress port"),
    )
    global_rate: Rate = field(
        default=_D.global_rate,
        metadata=_opt(RATE, "announcements handled per second in all"),
    )
    probe_rate: Rate = field(
        default=_D.probe_rate,
        metadata=_opt(RATE, "probes (ARP requests and NS) sent per second in all"),
    )
    dry_run: bool = field(
        default=False,
        metadata=_opt(BOOL, "decide and log, but send nothing and change nothing"),
    )
    metrics: tuple[str, int] | None = field(
        default=None,
        metadata=_opt(
            ENDPOINT,
            "serve Prometheus metrics over HTTP on this address, e.g. 127.0.0.1:9464 or "
            '[::1]:9464 (default: off; "" in the file turns it off)',
            restart=True,
        ),
    )
    netns: str | None = field(
        default=None,
        metadata=_opt(
            NETNS,
            "serve this network namespace: a name as made by 'ip netns add' "
            "(/run/netns/NAME) or a path such as /proc/PID/ns/net; entered before any "
            "socket is opened (needs CAP_SYS_ADMIN, dropped once the sockets are open)",
            restart=True,
        ),
    )
    control_socket: str | None = field(
        default=None,
        metadata=_opt(
            SOCKET_PATH,
            "the control socket rarp-replyctl talks to (default: "
            "/run/rarp-replay/rarp-reply.sock, or /run/rarp-replay/NAME.sock in the "
            "network namespace NAME)",
            restart=True,
        ),
    )
    log_level: str = field(default="info", metadata=_opt(_choice(*logs.LEVELS), "log level"))
    log_format: str = field(default="text", metadata=_opt(_choice("text", "json"), "log format"))
    netlink_rcvbuf: int = field(
        default=32 << 20,
        metadata=_opt(
            BYTES,
            "netlink receive buffer; 100,000 neighbor notifications are ~10 MB "
            "(an overrun costs a full re-dump)",
            restart=True,
        ),
    )
    capture_rcvbuf: int = field(
        default=packetsock.DEFAULT_RCVBUF,
        metadata=_opt(
            BYTES, "receive buffer of each RARP capture socket (8, by ingress port)", restart=True
        ),
    )

    def changed(self, other: Settings) -> list[str]:
        """Keys whose value differs between `self` and `other`."""
        return [
            key(f)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def as_dict(self) -> dict[str, object]:
        """Key -> value, in JSON's types (tuples as lists), for status reports."""
        return {
            key(f): list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }


_ENGINE_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Config)
    if f.name in {s.name for s in dataclasses.fields(Settings)}
)


def engine_config(settings: Settings) -> Config:
    """The engine's configuration: every setting that is also a field of `engine.Config`
    (same name, same type), the engine's own defaults for the rest."""
    return Config(**{name: getattr(settings, name) for name in _ENGINE_FIELDS})


def key(f: dataclasses.Field[Any]) -> str:
    return f.name.replace("_", "-")


def _kind(f: dataclasses.Field[Any]) -> Kind:
    kind: Kind = f.metadata["kind"]
    return kind


def restart_keys() -> frozenset[str]:
    """Settings a SIGHUP cannot change (they shape sockets opened at start)."""
    return frozenset(key(f) for f in dataclasses.fields(Settings) if f.metadata["restart"])


# -- flags -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting. Defaults are SUPPRESSed: only flags given show up."""
    for f in dataclasses.fields(Settings):
        kind = _kind(f)
        flag = f.metadata["flag"] or f"--{key(f)}"
        help_text = f.metadata["help"]
        if f.default not in ((), None):
            help_text += f" (default: {kind.to_toml(f.default).strip(chr(34))})"

        def typed(text: str, _kind: Kind = kind) -> Any:
            try:
                return _kind.from_text(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        if kind is BOOL:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif kind is GLOBS:
            parser.add_argument(
                flag,
                dest=f.name,
                action="append",
                type=typed,
                default=argparse.SUPPRESS,
                metavar=kind.metavar,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                type=typed,
                default=argparse.SUPPRESS,
                metavar=kind.metavar,
                help=help_text,
            )


def from_flags(namespace: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (field name -> value)."""
    given = vars(namespace)
    values = {}
    for f in dataclasses.fields(Settings):
        if f.name in given:
            v = given[f.name]
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return values


# -- the file --------------------------------------------------------------------


def read_file(path: str) -> dict[str, Any]:
    """Parse and validate a TOML file; field name -> value. Raises ConfigError."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    fields = {key(f): f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for k, raw in doc.items():
        f = fields.get(k)
        if f is None:
            hint = _closest(k, fields)
            raise ConfigError(
                f"{path}: {k}: unknown key" + (f" (did you mean {hint}?)" if hint else "")
            )
        try:
            values[f.name] = _kind(f).from_toml(raw)
        except ValueError as exc:
            raise ConfigError(f"{path}: {k}: {exc}") from None
    return values


def _closest(name: str, known: dict[str, Any]) -> str | None:
    match = difflib.get_close_matches(name, list(known), n=1)
    return match[0] if match else None


def load(path: str | None, flags: dict[str, Any]) -> tuple[Settings, str | None]:
    """Defaults < file < flags. `path` None: the default file, if present.

    Returns the settings and the file actually read (None: none).
    """
    used: str | None = path
    if path is None and os.path.exists(DEFAULT_PATH):
        used = DEFAULT_PATH
    values = read_file(used) if used is not None else {}
    values.update(flags)
    return Settings(**values), used


def render(settings: Settings, source: str | None) -> str:
    """The effective settings as a TOML document that `read_file` accepts."""
    lines = [
        "# rarp-reply effective configuration",
        f"# from: built-in defaults < {source or '(no file)'} < command-line flags",
    ]
    for f in dataclasses.fields(settings):
        lines.append(f"{key(f)} = {_kind(f).to_toml(getattr(settings, f.name))}")
    return "\n".join(lines) + "\n"
