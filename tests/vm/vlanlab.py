"""What the VM tests of VLAN-aware leaves share: time bounds, kernel checks, the lab of a
module's leaf with its daemon, matchers, and a way to give a team device a mode without
teamd."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from scapy.layers.l2 import ARP, Ether

from tests.support import netlab
from tests.support.daemon_proc import DaemonProc

# The anycast gateway's MAC on every leaf: VRRP's first virtual router MAC (RFC 5798, VRID 1),
# Cumulus's default for `vlanN-v0`; SONiC sets it on the SVI itself.
ANYCAST_MAC = "00:00:5e:00:01:01"
SLOW = 120.0  # seconds: TCG runs code several times slower than the host
START = 300.0  # the daemon's start-up under TCG: leaf set-up and start took 107 s at load 10


def kernel_lacks(lab: netlab.Lab, *extra: tuple[str, ...]) -> str | None:
    """None if this kernel can build a VLAN-aware leaf (and the `extra` links), else why not."""
    probe = lab.netns("probe")
    for args in (
        ("link", "add", "br0", "type", "bridge", "vlan_filtering", "1"),
        ("link", "add", "link", "br0", "name", "vlan10", "type", "vlan", "id", "10"),
        *extra,
    ):
        r = probe.ip(*args, check=False)
        if r.returncode != 0:
            return f"`ip {' '.join(args)}`: {r.stderr.strip()}"
    return None


class LeafLab(netlab.Lab):
    """The namespaces of one test module's leaf, the sending sockets of its hosts and the
    daemon serving it. One leaf and one daemon serve a whole module: under TCG a daemon
    start costs tens of seconds (START)."""

    def __init__(self) -> None:
        super().__init__()
        self.daemon: DaemonProc | None = None
        self._sockets: list[socket.socket] = []

    def keep(self, sock: socket.socket) -> socket.socket:
        """`sock`, closed with the lab."""
        self._sockets.append(sock)
        return sock

    def tx(self, ns: netlab.Netns, dev: str) -> socket.socket:
        """A raw socket on `dev` of `ns`: frames leave it as they are (tags by hand)."""
        sock = self.keep(ns.socket(socket.AF_PACKET, socket.SOCK_RAW))
        sock.bind((dev, 0))
        return sock

    def serve(self, sw: netlab.Netns, *args: str) -> DaemonProc:
        """Start the daemon in `sw` (extra command-line `args`) and wait until it is ready."""
        self.daemon = DaemonProc(sw, *args).ready(timeout=START)
        return self.daemon

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        super().close()  # stops the daemon too if it is still running


@contextlib.contextmanager
def leaf_lab(needs: str, *extra: tuple[str, ...]) -> Iterator[LeafLab]:
    """A `LeafLab`, skipping the module where the kernel cannot build a VLAN-aware leaf
    and the `extra` links (`needs` names them in the reason). When the module is done,
    the daemon must have run until told to stop, and exit 0."""
    lab = LeafLab()
    try:
        missing = kernel_lacks(lab, *extra)
        if missing is not None:
            pytest.skip(f"needs a kernel with VLAN filtering, 802.1Q and {needs} ({missing})")
        yield lab
        if lab.daemon is not None:
            assert lab.daemon.stop() == 0
    finally:
        lab.close()


def cumulus_svis(sw: netlab.Netns, bridge: str = "br0") -> None:
    """Cumulus's SVIs on a VLAN-aware `bridge`: 802.1Q `vlan10` and `vlan20`, and the anycast
    gateway `vlan10-v0`, a private-mode macvlan on vlan10 (ifupdown2's layout)."""
    for vid in (10, 20):
        sw.ip("link", "add", "link", bridge, "name", f"vlan{vid}", "type", "vlan", "id", str(vid))
    sw.ip(
        "link", "add", "link", "vlan10", "name", "vlan10-v0", "address", ANYCAST_MAC,
        "type", "macvlan", "mode", "private",
    )  # fmt: skip


def probe_to(mac: str) -> Callable[[netlab.Frame], bool]:
    """An ARP request to `mac`, as the port's far end receives it."""

    def match(f: netlab.Frame) -> bool:
        p = Ether(f.data)
        return not f.outgoing and ARP in p and p[ARP].op == 1 and p[ARP].hwdst == mac

    return match


def neigh(sw: netlab.Netns, ip: str, dev: str) -> dict[str, object]:
    out = sw.run("ip", "-j", "neigh", "show", ip, "dev", dev).stdout
    entries = json.loads(out) if out.strip() else []
    return entries[0] if entries else {}


# --- team: the mode, without teamd -------------------------------------------------------
# A team device without a mode forwards what its ports receive (team_dummy_receive hands
# the frame on as the team's) but drops all it sends (team_adjust_ops installs
# team_dummy_transmit): teamd sets the mode over generic netlink before adding ports
# (team_change_mode refuses while ports are present). So does `team_mode` here, with the
# messages of include/uapi/linux/if_team.h and linux/genetlink.h.
_NETLINK_GENERIC = 16
_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY = 3
_CTRL_ATTR_FAMILY_ID = 1
_CTRL_ATTR_FAMILY_NAME = 2
_TEAM_CMD_OPTIONS_SET = 1
_TEAM_ATTR_TEAM_IFINDEX = 1
_TEAM_ATTR_LIST_OPTION = 2
_TEAM_ATTR_ITEM_OPTION = 1
_TEAM_ATTR_OPTION_NAME = 1
_TEAM_ATTR_OPTION_TYPE = 3
_TEAM_ATTR_OPTION_DATA = 4
_NLA_STRING = 5
_NLA_F_NESTED = 0x8000
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLMSG_ERROR = 2


def _attr(atype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), atype) + payload
    return raw + bytes(-len(raw) % 4)


def _genl(sock: socket.socket, family: int, cmd: int, attrs: bytes, seq: int) -> bytes:
    """Send one request; return its reply message (b"" if none) once its ACK came."""
    body = struct.pack("=BBH", cmd, 1, 0) + attrs
    flags = _NLM_F_REQUEST | _NLM_F_ACK
    sock.send(struct.pack("=IHHII", 16 + len(body), family, flags, seq, 0) + body)
    reply = b""
    while True:
        data = sock.recv(65536)
        pos = 0
        while pos + 16 <= len(data):
            length, mtype, _flags, mseq, _pid = struct.unpack_from("=IHHII", data, pos)
            if mseq == seq:
                if mtype == _NLMSG_ERROR:
                    err = struct.unpack_from("=i", data, pos + 16)[0]
                    if err:
                        raise OSError(-err, f"genetlink command {cmd} on family {family}")
                    return reply
                reply = data[pos : pos + length]
            pos += (length + 3) & ~3


def team_mode(ns: netlab.Netns, team: str, mode: str) -> None:
    """Give team device `team` (no ports yet) the mode `mode` (e.g. "loadbalance")."""
    ifindex = ns.ifindex(team)
    with ns.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC) as sock:
        sock.bind((0, 0))
        reply = _genl(
            sock, _GENL_ID_CTRL, _CTRL_CMD_GETFAMILY, _attr(_CTRL_ATTR_FAMILY_NAME, b"team\0"), 1
        )
        pos, family = 20, None
        while pos + 4 <= len(reply):
            alen, atype = struct.unpack_from("=HH", reply, pos)
            if atype == _CTRL_ATTR_FAMILY_ID:
                family = struct.unpack_from("=H", reply, pos + 4)[0]
            pos += (alen + 3) & ~3
        if family is None:
            raise OSError("no generic netlink family 'team'")
        option = (
            _attr(_TEAM_ATTR_OPTION_NAME, b"mode\0")
            + _attr(_TEAM_ATTR_OPTION_TYPE, bytes([_NLA_STRING]))
            + _attr(_TEAM_ATTR_OPTION_DATA, mode.encode() + b"\0")
        )
        attrs = _attr(_TEAM_ATTR_TEAM_IFINDEX, struct.pack("=I", ifindex)) + _attr(
            _TEAM_ATTR_LIST_OPTION | _NLA_F_NESTED,
            _attr(_TEAM_ATTR_ITEM_OPTION | _NLA_F_NESTED, option),
        )
        # ESRCH: the mode is set; the kernel then announces the change to the team's
        # multicast group and hands back that send's -ESRCH when nobody listens
        # (team_nl_cmd_options_set -> team_nl_send_event_options_get, seen on 6.1).
        with contextlib.suppress(ProcessLookupError):
            _genl(sock, family, _TEAM_CMD_OPTIONS_SET, attrs, 2)
