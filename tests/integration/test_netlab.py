"""The harness itself: namespaces come and go, captures see real frames."""

from __future__ import annotations

import socket

import pytest

from tests.support import netlab

pytestmark = pytest.mark.netns


def test_lab_builds_and_removes_namespaces() -> None:
    lab = netlab.Lab("h")
    a, b = lab.netns("a"), lab.netns("b")
    lab.veth(a, "va", b, "vb")
    b.bridge("br0", "vb")
    names = netlab.run(["ip", "netns", "list"]).stdout
    assert a.name in names and b.name in names
    assert b.ip("-br", "link", "show", "vb").stdout.split()[0].startswith("vb")
    lab.close()
    names = netlab.run(["ip", "netns", "list"]).stdout
    assert a.name not in names and b.name not in names


def test_capture_sees_frame_sent_from_peer(lab: netlab.Lab) -> None:
    a, b = lab.netns("a"), lab.netns("b")
    lab.veth(a, "va", b, "vb")
    cap = b.capture("vb")
    tx = a.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("va", 0))
    frame = b"\xff" * 6 + a.mac("va") + b"\x88\xb5" + b"harness" + bytes(40)
    tx.send(frame)
    got = cap.wait_for(1, match=lambda f: f.data == frame and not f.outgoing)
    assert got[0].timestamp > 0
    tx.close()
