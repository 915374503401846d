"""HOST:PORT parsing and formatting of the listen address (`--metrics`)."""

from __future__ import annotations

import pytest

from rarp_replay.cli.rarp_reply import main
from rarp_replay.listen import format_listen, parse_listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:1", ("::", 1)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
        ("localhost:9464", ("localhost", 9464)),
        ("mgmt.example.net:80", ("mgmt.example.net", 80)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
    assert format_listen(expected) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9464", "expected HOST:PORT"),
        (":9464", "expected HOST:PORT"),
        ("127.0.0.1", "expected HOST:PORT"),
        ("127.0.0.1:", "port must be 1..65535"),
        ("127.0.0.1:0", "port must be 1..65535"),
        ("127.0.0.1:65536", "port must be 1..65535"),
        ("127.0.0.1:http", "port must be 1..65535"),
        ("127.0.0.1:٩٤", "port must be 1..65535"),  # Arabic-Indic digits: isdigit() is True
        ("::1:9464", "in brackets"),
        ("[::1:9464", "not an IPv6 address in brackets"),
        ("[127.0.0.1]:9464", "not an IPv6 address in brackets"),
        ("[nonsense]:9464", "not an IPv6 address in brackets"),
        ("bad_host:9464", "not an IP address or host name"),
        ("-bad:9464", "not an IP address or host name"),
    ],
)
def test_bad_listen_address_is_a_usage_error(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([f"--metrics={text}"])  # "=": "-bad:9464" is a value, not an option
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rarp-reply: error: argument --metrics: ") and message in err, err
