"""rarp-req's command line: parsing, --dry-run output (decoded by scapy), one-line errors."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from rarp_replay.cli import rarp_req
from rarp_replay.errors import CapabilityError, InterfaceError

MAC = "52:54:00:12:34:56"
MAC2 = "44:38:39:22:01:23"
HEX_RE = re.compile(r"\bhex=([0-9a-f]+)\b")
OFFSET_RE = re.compile(r"^\+(\d+\.\d)ms ")


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert rarp_req.main([*args, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


def frame_of(line: str) -> bytes:
    match = HEX_RE.search(line)
    assert match, line
    return bytes.fromhex(match.group(1))


def offset_ms(line: str) -> float:
    match = OFFSET_RE.match(line)
    assert match, line
    return float(match.group(1))


def assert_rarp(frame: bytes, mac: str, vlan: int | None = None) -> None:
    """Check every field with scapy, an independent decoder."""
    eth = Ether(frame)
    assert eth.dst == "ff:ff:ff:ff:ff:ff"
    assert eth.src == mac
    if vlan is None:
        assert eth.type == 0x8035
        arp_bytes = bytes(eth.payload)
        assert len(frame) == 60
    else:
        assert eth.type == 0x8100
        tag = eth[Dot1Q]
        assert tag.vlan == vlan and tag.prio == 0 and tag.dei == 0
        assert tag.type == 0x8035
        arp_bytes = bytes(tag.payload)
    # scapy binds ARP to EtherType 0x0806 only: decode the RARP body explicitly.
    arp = ARP(arp_bytes)
    assert arp.hwtype == 1 and arp.ptype == 0x0800 and arp.hwlen == 6 and arp.plen == 4
    assert arp.op == 3
    assert arp.hwsrc == mac and arp.hwdst == mac
    assert arp.psrc == "0.0.0.0" and arp.pdst == "0.0.0.0"
    assert set(bytes(arp.payload)) <= {0}  # only zero padding after the packet


# --- parsing and --dry-run ---


def test_go_tool_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    lines = dry_run(capsys, "-mac", MAC2, "-intf", "lo")
    assert len(lines) == 1
    assert "intf=lo" in lines[0] and f"mac={MAC2}" in lines[0]
    assert_rarp(frame_of(lines[0]), MAC2)


@pytest.mark.parametrize(
    "args",
    [
        ["--mac", MAC, "--interface", "lo"],
        ["--mac", MAC, "-i", "lo"],
        [f"-mac={MAC}", "-intf=lo"],
        [f"--mac={MAC}", "--interface=lo"],
        ["-i", "lo", "--mac", MAC.upper()],
        ["-i", "lo", "--mac", "5254.0012.3456"],
        ["-i", "lo", "--mac", MAC.replace(":", "-")],
    ],
)
def test_option_spellings(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    lines = dry_run(capsys, *args)
    assert len(lines) == 1 and "intf=lo" in lines[0]
    assert_rarp(frame_of(lines[0]), MAC)


def test_dry_run_needs_no_interface(capsys: pytest.CaptureFixture[str]) -> None:
    lines = dry_run(capsys, "--mac", MAC)
    assert "intf=-" in lines[0]


def test_dry_run_with_a_missing_interface_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A preview for an interface that does not exist would say nothing useful:
    # the name is checked (no privileges needed), the state and capabilities are not.
    assert rarp_req.main(["--mac", MAC, "-i", "nosuch0", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch0" in err, err


def test_dry_run_line_is_decoded(capsys: pytest.CaptureFixture[str]) -> None:
    (line,) = dry_run(capsys, "--mac", MAC, "-i", "lo")
    for field in (
        "dst=ff:ff:ff:ff:ff:ff",
        f"src={MAC}",
        "type=0x8035",
        "op=3(RARP_REQUEST)",
        f"sha={MAC}",
        "spa=0.0.0.0",
        f"tha={MAC}",
        "tpa=0.0.0.0",
        "vlan=none",
        "len=60",
    ):
        assert field in line.split(), field


def test_vlan_tag(capsys: pytest.CaptureFixture[str]) -> None:
    (line,) = dry_run(capsys, "--mac", MAC, "-i", "lo", "--vlan", "100")
    assert "vlan=100" in line
    assert_rarp(frame_of(line), MAC, vlan=100)


def test_several_macs_each_round_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    third = "02:00:00:00:00:03"
    lines = dry_run(capsys, "--mac", MAC, "--mac", f"{MAC2},{third}", "-i", "lo", "--count", "2")
    assert len(lines) == 6
    for line, mac in zip(lines, [MAC, MAC2, third] * 2, strict=True):
        assert f"mac={mac}" in line
        assert_rarp(frame_of(line), mac)
    assert [offset_ms(line) for line in lines] == [0.0] * 3 + [1000.0] * 3


def test_count_and_interval(capsys: pytest.CaptureFixture[str]) -> None:
    lines = dry_run(capsys, "--mac", MAC, "--count", "4", "--interval", "0.25")
    assert [offset_ms(line) for line in lines] == [0.0, 250.0, 500.0, 750.0]


def test_qemu_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    lines = dry_run(capsys, "--pattern", "qemu", "-mac", MAC, "-intf", "lo")
    assert [offset_ms(line) for line in lines] == [0.0, 50.0, 200.0, 450.0, 800.0]
    for line in lines:
        assert_rarp(frame_of(line), MAC)


def test_qemu_pattern_longer_runs_cap_the_gap(capsys: pytest.CaptureFixture[str]) -> None:
    lines = dry_run(capsys, "--pattern", "qemu", "--count", "8", "-mac", MAC)
    times = [offset_ms(line) for line in lines]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == [50.0, 150.0, 250.0, 350.0, 450.0, 550.0, 550.0]


def test_qemu_offsets() -> None:
    assert rarp_req.qemu_offsets() == [0.0, 0.05, 0.2, 0.45, 0.8]
    assert rarp_req.qemu_offsets(1) == [0.0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert rarp_req.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "rarp-req 0.1.0"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert rarp_req.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "-mac" in out and "-intf" in out and "--pattern" in out


# --- errors: one stderr line, exit status ---


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-mac", "zz:zz", "-intf", "eth0"], "invalid MAC address 'zz:zz'"),
        (["-mac", "52:54:00:12:34", "-intf", "eth0"], "invalid MAC address"),
        (["-mac", "01:00:5e:00:00:01", "-intf", "eth0"], "is a multicast address"),
        (["-mac", "33:33:00:00:00:01", "-intf", "eth0"], "is a multicast address"),
        (["-mac", "ff:ff:ff:ff:ff:ff", "-intf", "eth0"], "is the broadcast address"),
        (["-mac", "00:00:00:00:00:00", "-intf", "eth0"], "is the all-zero address"),
        (["-mac", f"{MAC},", "-intf", "eth0"], "empty MAC address"),
        (["-mac", f"{MAC},zz", "-intf", "eth0"], "invalid MAC address 'zz'"),
        (["-intf", "eth0"], "at least one --mac is required"),
        (["-mac", MAC, "-i", "eth0", "--vlan", "0"], "--vlan must be 1..4094, got 0"),
        (["-mac", MAC, "-i", "eth0", "--vlan", "4095"], "--vlan must be 1..4094, got 4095"),
        (["-mac", MAC, "-i", "eth0", "--vlan", "ten"], "invalid int value: 'ten'"),
        (["-mac", MAC, "-i", "eth0", "--count", "0"], "--count must be at least 1"),
        (["-mac", MAC, "-i", "eth0", "--interval", "-1"], "--interval must be a non-negative"),
        (["-mac", MAC, "-i", "eth0", "--interval", "nan"], "--interval must be a non-negative"),
        (
            ["-mac", MAC, "-i", "eth0", "--pattern", "qemu", "--interval", "1"],
            "--interval cannot be combined with --pattern",
        ),
        (["-mac", MAC, "-i", "eth0", "--pattern", "vmware"], "invalid choice: 'vmware'"),
        (["-mac", MAC, "-i", "eth0", "--bogus"], "unrecognized arguments: --bogus"),
        (["-mac"], "expected one argument"),
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    for extra in ([], ["--dry-run"]):
        assert rarp_req.main([*args, *extra]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.count("\n") == 1 and err.endswith("\n"), err
        assert err.startswith("rarp-req: error: ")
        assert message in err


def test_interface_required_unless_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert rarp_req.main(["-mac", MAC]) == 2
    assert capsys.readouterr() == ("", "rarp-req: error: --interface (-intf, -i) is required\n")


def test_unknown_interface(capsys: pytest.CaptureFixture[str]) -> None:
    assert rarp_req.main(["-mac", MAC, "-intf", "nosuchif0"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "rarp-req: error: no such interface: nosuchif0\n"


def test_bad_interface_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert rarp_req.main(["-mac", MAC, "-intf", "x" * 40]) == 1
    _out, err = capsys.readouterr()
    assert err == f"rarp-req: error: no such interface: {'x' * 40}\n"


# --- sending, with the socket layer replaced (no privileges needed) ---


class FakeSender:
    """Stands in for PacketSender: records (monotonic time, frame); can vanish mid-run."""

    sent: list[tuple[float, bytes]]
    vanish_after: int | None = None

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname

    def __enter__(self) -> FakeSender:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def send(self, frame: bytes) -> None:
        if self.vanish_after is not None and len(self.sent) >= self.vanish_after:
            raise InterfaceError(f"interface {self.ifname} vanished", self.ifname)
        self.sent.append((time.monotonic(), frame))


@pytest.fixture
def fake_sender(monkeypatch: pytest.MonkeyPatch) -> type[FakeSender]:
    FakeSender.sent = []
    FakeSender.vanish_after = None
    monkeypatch.setattr(rarp_req, "PacketSender", FakeSender)
    monkeypatch.setattr(rarp_req, "interface_index", lambda name: 7)
    monkeypatch.setattr(rarp_req, "interface_is_up", lambda name: True)
    return FakeSender


def test_absolute_schedule(
    capsys: pytest.CaptureFixture[str], fake_sender: type[FakeSender]
) -> None:
    start = time.monotonic()
    assert rarp_req.main(["-mac", MAC, "-mac", MAC2, "-i", "eth0", "--pattern", "qemu"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 10 and len(fake_sender.sent) == 10
    assert all("intf=eth0" in line and "vlan=none" in line for line in lines)
    first = fake_sender.sent[0][0]
    assert first - start < 0.5
    for (at, frame), planned in zip(
        fake_sender.sent[::2], [0.0, 0.05, 0.2, 0.45, 0.8], strict=True
    ):
        # Never early; late by at most scheduler noise (generous: CI machines).
        assert planned - 0.001 <= at - first <= planned + 0.04
        assert_rarp(frame, MAC)
    for _at, frame in fake_sender.sent[1::2]:
        assert_rarp(frame, MAC2)


def test_quiet(capsys: pytest.CaptureFixture[str], fake_sender: type[FakeSender]) -> None:
    assert (
        rarp_req.main(["-mac", MAC, "-i", "eth0", "--quiet", "--count", "2", "--interval", "0"])
        == 0
    )
    assert capsys.readouterr() == ("", "")
    assert len(fake_sender.sent) == 2


def test_interface_down(
    capsys: pytest.CaptureFixture[str],
    fake_sender: type[FakeSender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rarp_req, "interface_is_up", lambda name: False)
    assert rarp_req.main(["-mac", MAC, "-i", "eth0"]) == 1
    assert capsys.readouterr() == ("", "rarp-req: error: interface eth0 is down\n")
    assert fake_sender.sent == []


def test_vanished_mid_run(
    capsys: pytest.CaptureFixture[str], fake_sender: type[FakeSender]
) -> None:
    fake_sender.vanish_after = 3
    assert rarp_req.main(["-mac", MAC, "-i", "eth0", "--count", "5", "--interval", "0"]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3
    assert err == "rarp-req: error: interface eth0 vanished\n"


def test_missing_capability_message(
    capsys: pytest.CaptureFixture[str],
    fake_sender: type[FakeSender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_cap(ifname: str) -> None:
        raise CapabilityError("CAP_NET_RAW")

    monkeypatch.setattr(rarp_req, "PacketSender", no_cap)
    assert rarp_req.main(["-mac", MAC, "-i", "eth0"]) == 1
    assert capsys.readouterr().err == (
        "rarp-req: error: missing capability CAP_NET_RAW to open a packet socket "
        "(run as root or grant it: setcap cap_net_raw+ep)\n"
    )


# --- the installed console script ---


def console_script() -> str:
    beside = Path(sys.executable).with_name("rarp-req")
    found = str(beside) if beside.exists() else shutil.which("rarp-req")
    if found is None:
        pytest.skip("console script rarp-req not installed")
    return found


def test_console_script_dry_run() -> None:
    proc = subprocess.run(
        [console_script(), "-mac", MAC, "-intf", "eth0", "--vlan", "7", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    (line,) = proc.stdout.splitlines()
    assert_rarp(frame_of(line), MAC, vlan=7)


def test_console_script_error_is_one_line() -> None:
    proc = subprocess.run(
        [console_script(), "-mac", "ff:ff:ff:ff:ff:ff", "-intf", "eth0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "rarp-req: error: ff:ff:ff:ff:ff:ff is the broadcast address, not a station MAC\n"
    )


def test_console_script_broken_pipe_is_quiet() -> None:
    proc = subprocess.run(
        f"{console_script()} -mac {MAC} --count 5000 --interval 0 --dry-run | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.count("\n") == 1
    assert proc.stderr == ""
