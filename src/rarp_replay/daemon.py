"""The daemon's I/O shell: sockets in, engine in the middle, actions out.

Everything that decides lives in `engine` (and `domain`, `mirror`); this
module only reads the capture and netlink sockets, keeps the clock, and
carries out what the engine returns. Every I/O failure is logged and
counted, and the loop goes on: a vanished interface, a send error, a
netlink error never stop the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from . import __version__, capabilities, config, control, controlsock, logs, netns, sched
from .config import Settings, engine_config
from .counters import (
    FAMILIES,
    NETLINK_ERRORS,
    NETLINK_REDUMPS,
    RELOAD_ERRORS,
    RELOADS,
    SEND_ERRORS,
)
from .engine import (
    Action,
    Engine,
    Log,
    RemovePlaceholder,
    Resolve,
    SendFrame,
    Takeover,
)
from .errors import (
    CapabilityError,
    ConfigError,
    InterfaceError,
    NetlinkError,
    NetlinkOverrunError,
    RarpReplayError,
)
from .frames.capture import capture_filter, classify
from .logs import emit, emit_fields
from .macaddr import format_mac
from .mirror import Mirror
from .netlink.codec import (
    RTEXT_FILTER_BRVLAN_COMPRESSED,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)
from .netlink.records import AF_BRIDGE, NUD_REACHABLE
from .netlink.socket import RtnlSocket
from .packetsock import CaptureGroup, PacketSender, RarpCapture

if TYPE_CHECKING:
    from .metrics import MetricsServer

_GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
# Housekeeping (tombstone expiry, hold-down table) at least this often.
_TICK = 1.0
# Frames read from one ready capture socket per pass of the loop: each member of the
# fanout group gets its turn, so a flooded member cannot keep the others' frames (or
# netlink, or timers) waiting for more than one batch.
_CAPTURE_BATCH = 256
# The `privileges` line names at most this many bounding-set capabilities.
_BOUNDING_NAMES = 4


class Daemon:
    def __init__(
        self,
        config: Settings,
        logger: logging.Logger,
        reload: Callable[[], Settings] | None = None,
    ) -> None:
        self.config = config
        self.log = logger
        self.mirror = Mirror(remember=config.remember)
        # Probes and the Resolves before them go out from inside the engine, the
        # moment they are built (Engine's `send`); everything else is returned.
        self.engine = Engine(self.mirror, engine_config(config), send=self._sent_now)
        self._slice_us: int | None = None
        self._reload_settings = reload
        self._stop_signal: int | None = None
        self._hup = False
        self._usr1 = False
        self._control_note: tuple[str, str, dict[str, object]] = ("control-error", "info", {})
        self._started = time.monotonic()
        self.history = control.History()  # the last rounds per MAC, for `show`
        self.control: controlsock.ControlServer | None = None
        self._lock: socket.socket | None = None
        self.metrics: MetricsServer | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- start-up --------------------------------------------------------------

    def open(self) -> None:
        """Enter the namespace, check privileges, load the mirror, open the sockets,
        then drop every capability no longer needed. Raises on failure."""
        # SIGUSR1's default action kills the process: from here on it only sets a flag
        # (logged by the loop), even while the tables load.
        self._old_usr1 = signal.signal(signal.SIGUSR1, self._on_signal)
        if self.config.netns is not None:
            # Before any socket: a socket serves the namespace it was created in.
            path = netns.enter(self.config.netns)
            emit(self.log, "netns", "info", netns=self.config.netns, path=path)
        # Before anything touches the namespace (the clean-up of leftover placeholders
        # below would delete those of a daemon already serving it).
        self._lock = controlsock.claim_namespace()
        self._netns_name = self.config.netns or controlsock.current_netns_name()
        needed = [capabilities.CAP_NET_RAW]
        if not self.config.dry_run:
            needed.append(capabilities.CAP_NET_ADMIN)
        for name in capabilities.missing(*needed):
            why = (
                "to capture RARPs and send probes"
                if name == "CAP_NET_RAW"
                else ("to manage neighbor entries")
            )
            raise CapabilityError(name, f"missing capability {name} ({why})")
        if self.config.metrics is not None:
            # Lazily: prometheus_client is not imported without --metrics. Bound
            # first, so that a port in use fails before the table dump.
            from .metrics import MetricsServer  # noqa: PLC0415

            self.metrics = MetricsServer(self.engine, self.config.metrics, self.log)
        started = time.monotonic()
        # Subscribe before dumping, so nothing that changes during the dump is missed.
        self.events = RtnlSocket(groups=_GROUPS, rcvbuf=self.config.netlink_rcvbuf)
        self.requests = RtnlSocket()
        self._load()
        self._remove_leftovers()
        # N sockets in one fanout group, fed by ingress ifindex: a flooding port fills
        # only its own socket's queue (see CaptureGroup).
        self.capture = CaptureGroup(
            capture_filter(answers=self.engine.config.takeover),
            rcvbuf=self.config.capture_rcvbuf,
        )
        self.sender = PacketSender()
        self._load_ms = _ms(time.monotonic() - started)
        self._open_control()
        # Best effort (Linux 6.12+; older kernels ignore it): a short slice lets the
        # woken daemon preempt a busy CPU's task sooner (see sched). The loop runs
        # in this thread, the one the request applies to.
        self._slice_us = sched.request_slice()
        # Last in open(): whatever needs more than the kept capabilities (setns,
        # SO_RCVBUFFORCE, a privileged port) must happen above this line.
        self.drop_privileges()
        # Logged once the start can no longer fail, as metrics-listening is.
        emit_fields(self.log, *self._control_note)
        if self.metrics is not None:
            self.metrics.start(self.capture.statistics)  # after the drop: see MetricsServer

    def _open_control(self) -> None:
        """The control socket: a diagnostic aid, so a failure is a warning, not an exit."""
        path = self.config.control_socket
        try:
            if path is None:
                path = controlsock.socket_path(self.config.netns)
            self.control = controlsock.ControlServer(path, self._control_answer)
        except (OSError, RarpReplayError) as exc:
            self._control_note = ("control-error", "warning", {"path": path, "error": str(exc)})
        else:
            self._control_note = ("control-listening", "info", {"path": path})

    def _control_state(self) -> control.State:
        capture = getattr(self, "capture", None)
        return control.State(
            engine=self.engine,
            mirror=self.mirror,
            history=self.history,
            version=__version__,
            pid=os.getpid(),
            started=self._started,
            netns=getattr(self, "_netns_name", self.config.netns),
            settings=self.config.as_dict(),
            capture=capture.statistics() if capture is not None else None,
            capture_sockets=len(capture.members) if capture is not None else 0,
            extra={"dry_run": self.config.dry_run},
        )

    def _control_answer(self, line: bytes, now: float) -> dict[str, object]:
        self.history.sweep(self.engine)
        return control.handle(line, self._control_state(), now)

    def log_status(self) -> None:
        """SIGUSR1: what `rarp-replyctl status` shows, as two log lines."""
        doc = control.status(self._control_state(), time.monotonic())
        cap = doc["capture"]
        emit(
            self.log,
            "status",
            "info",
            version=doc["version"],
            uptime_s=doc["uptime_s"],
            netns=doc["netns"] or "",
            rounds_in_flight=doc["rounds_in_flight"],
            capture_received=cap["received"],
            capture_dropped=cap["dropped"],
            **{f"mirror_{k}": v for k, v in doc["mirror"].items()},
            **{k.replace(".", "_"): v for k, v in doc["counters"].items()},
        )
        emit(self.log, "settings", "info", **doc["settings"])

    def drop_privileges(self) -> None:
        """Keep CAP_NET_RAW and CAP_NET_ADMIN (those held: never gained); drop the rest.

        CAP_NET_ADMIN is needed from here on: rtnetlink checks it on every
        RTM_NEWNEIGH and RTM_DELNEIGH (netlink_net_capable()). Dry-run keeps it
        too, when it has it: dry_run is not a restart key, so a SIGHUP can turn
        it off, and a dropped capability cannot come back. CAP_NET_RAW is checked
        only when a packet socket is created (packet_create()); it is kept as
        part of the daemon's documented privilege set, not for a later call.
        """
        result = capabilities.drop_to([capabilities.CAP_NET_RAW, capabilities.CAP_NET_ADMIN])
        bounding = capabilities.names(result.after.bounding)
        fields: dict[str, object] = {
            "kept": result.kept,
            "dropped": len(result.dropped),
            # Named when it is short (what a correct start leaves: the kept two);
            # a bounding set that could not be narrowed is ~40 names on one line,
            # so it is counted instead.
            "bounding": bounding if len(bounding) <= _BOUNDING_NAMES else f"{len(bounding)} caps",
            "no_new_privs": result.after.no_new_privs,
        }
        if result.bounding_left:
            fields["note"] = (
                "without CAP_SETPCAP the bounding set cannot be narrowed; "
                "no_new_privs keeps execve from granting any of it"
            )
        emit(self.log, "privileges", "warning" if result.bounding_left else "info", **fields)

    def _load(self) -> None:
        # The mirror is hundreds of thousands of long-lived objects: full GC
        # passes over them took ~100 ms each (measured, docs/benchmarks.md).
        # Build it with the collector off, then freeze what was built, so
        # later passes only look at new objects.
        gc.disable()
        try:
            self._dump_and_reset()
        finally:
            gc.collect()
            gc.freeze()
            gc.enable()

    def _remove_leftovers(self) -> None:
        """Delete the placeholders a previous run left behind (`Engine.leftovers`)."""
        # A snapshot: the deletions come back as notifications that change the mirror.
        removed = sum(self._kernel(a) for a in self.engine.leftovers())
        if removed:
            emit(self.log, "placeholders-removed", "info", count=removed)

    def _dump_and_reset(self) -> None:
        now = time.monotonic()
        links = self.requests.dump(RTM_GETLINK)
        # The bridges' VLANs (ports and bridges themselves), after the links they describe.
        links += self.requests.dump(RTM_GETLINK, AF_BRIDGE, ext_mask=RTEXT_FILTER_BRVLAN_COMPRESSED)
        addrs = self.requests.dump(RTM_GETADDR)
        neighs = self.requests.dump(RTM_GETNEIGH)
        if self.engine.config.fdb_trigger:
            # Where each MAC is, so that a move to a local port can be seen.
            neighs += self.requests.dump(RTM_GETNEIGH, AF_BRIDGE)
        vanished = self.mirror.reset(links, addrs, neighs, now)
        if vanished:
            emit(self.log, "resync", "info", vanished=vanished)

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code (0)."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        old_hup = signal.signal(signal.SIGHUP, self._on_signal)
        old_usr1 = signal.signal(signal.SIGUSR1, self._on_signal)
        old_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        # Serving from here on: signal handlers are in place, sockets are open.
        emit(
            self.log,
            "ready",
            "info",
            pid=os.getpid(),
            load_ms=self._load_ms,
            dry_run=self.config.dry_run,
            **(
                {"sched_slice_us": self._slice_us}
                if self._slice_us
                else {"sched_slice": "unsupported"}
            ),
            **self.mirror.counts(),
        )
        _sd_notify(b"READY=1")
        poller = select.poll()
        captures = {m.fileno(): m for m in self.capture.members}
        for fd in (*captures, self.events.fileno(), self._wake_r):
            poller.register(fd, select.POLLIN)
        ev_fd = self.events.fileno()
        lock_fd = -1
        if self._lock is not None:
            lock_fd = self._lock.fileno()
            poller.register(lock_fd, select.POLLIN)
        ctl = self.control
        if ctl is not None:
            ctl.attach(poller)
        logs.batch(True)
        try:
            while self._stop_signal is None:
                now = time.monotonic()
                deadline = self.engine.next_deadline()
                wait = _TICK if deadline is None else max(0.0, min(_TICK, deadline - now))
                ctl_due = ctl.next_deadline() if ctl is not None else None
                if ctl_due is not None:
                    wait = max(0.0, min(wait, ctl_due - now))
                polled = poller.poll(wait * 1000)
                ready = {fd for fd, _ in polled}
                # Frames first: when a RARP and the FDB notification it caused
                # arrive together, the round is the RARP's (the earlier, more
                # specific signal); the FDB move then finds it in hold-down.
                for fd, member in captures.items():
                    if fd in ready:
                        self._on_capture(member)
                if ev_fd in ready:
                    self._on_netlink()
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 64)
                if lock_fd in ready and self._lock is not None:
                    controlsock.drain_lock(self._lock)
                if ctl is not None:
                    # After the capture and netlink: a request waits for them, not
                    # the other way round; each step is non-blocking.
                    now = time.monotonic()
                    for fd, ev in polled:
                        if ctl.owns(fd):
                            ctl.on_ready(fd, ev, now)
                    ctl.expire(now)
                if self._hup:
                    self._hup = False
                    self.reload()
                if self._usr1:
                    self._usr1 = False
                    self.log_status()
                self._do(self.engine.tick(time.monotonic()))
                if self.metrics is not None:
                    self.metrics.drain()
                logs.flush()
        finally:
            logs.batch(False)
            self._do(self.engine.shutdown())
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)
            signal.signal(signal.SIGHUP, old_hup)
            signal.signal(signal.SIGUSR1, old_usr1)
        emit(
            self.log,
            "stopped",
            "info",
            signal=signal.Signals(self._stop_signal).name,
            **{k.replace(".", "_"): v for k, v in sorted(self.engine.stats.items())},
        )
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: the loop acts on them (the wake-up fd ends its poll).
        if signum == signal.SIGHUP:
            self._hup = True
        elif signum == signal.SIGUSR1:
            self._usr1 = True
        else:
            self._stop_signal = signum

    # -- SIGHUP ----------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the configuration and apply it in place.

        The mirror, rounds in flight, hold-downs and unchanged rate-limit
        buckets are kept: a reload is not a restart. A file that does not
        validate changes nothing (one error line). Settings that shape the
        sockets opened at start (`config.restart_keys()`) keep their old value
        and are named in a warning.
        """
        if self._reload_settings is None:
            emit(self.log, "reload-skipped", "info", reason="no configuration source")
            return
        try:
            new = self._reload_settings()
        except ConfigError as exc:
            self.engine.stats[RELOAD_ERRORS] += 1
            emit(self.log, "reload-failed", "error", error=str(exc), kept="previous settings")
            return
        old = self.config
        pinned = sorted(set(old.changed(new)) & config.restart_keys())
        if pinned:
            new = replace(
                new, **{k.replace("-", "_"): getattr(old, k.replace("-", "_")) for k in pinned}
            )
            emit(self.log, "reload-needs-restart", "warning", keys=pinned)
        changed = old.changed(new)
        if new.log_level != old.log_level or new.log_format != old.log_format:
            self.log = logs.setup(new.log_level, new.log_format)
            logs.batch(True)
        self.engine.reconfigure(engine_config(new))
        self.mirror.remember = new.remember
        if new.takeover != old.takeover and hasattr(self, "capture"):
            # Answers (ARP replies, NAs) are only captured while takeover is on.
            # Every member of the fanout group gets the new filter.
            self.capture.set_filter(capture_filter(answers=new.takeover))
        self.config = new
        if new.fdb_trigger and not old.fdb_trigger:
            # The bridge FDB was not loaded without the FDB trigger: load it.
            self._load()
        self.engine.stats[RELOADS] += 1
        emit(self.log, "reloaded", "info", changed=changed)

    def _on_capture(self, member: RarpCapture | None = None) -> None:
        """Serve one ready member of the capture group (None: a batch from every member)."""
        source = self.capture if member is None else member
        engine = self.engine
        for s in source.recv_batch(_CAPTURE_BATCH):
            seen = classify(s.data, s.vid, engine.expects_answers)
            self._do(engine.on_capture(seen, s.ifindex, time.monotonic()))

    def _on_netlink(self) -> None:
        try:
            # A bounded read (~2,500 notifications), so that a netlink storm
            # cannot keep RARPs waiting for long: the capture is served between.
            events = self.events.recv_events(max_bytes=256 << 10)
        except NetlinkOverrunError:
            # The kernel dropped notifications: the mirror has a gap. Empty the
            # queue first (what it holds predates the re-dump, and the kernel
            # drops every new notification until it is empty), then re-dump
            # (entries that vanished meanwhile become tombstones, as if seen).
            self.engine.stats[NETLINK_REDUMPS] += 1
            discarded = self.events.drain(max_bytes=4 * self.config.netlink_rcvbuf)
            emit(self.log, "netlink-overrun", "warning", action="re-dump", discarded=discarded)
            try:
                self._load()
            except NetlinkError as exc:
                self.engine.stats[NETLINK_ERRORS] += 1
                emit(self.log, "netlink-error", "error", error=str(exc))
            return
        except NetlinkError as exc:
            self.engine.stats[NETLINK_ERRORS] += 1
            emit(self.log, "netlink-error", "error", error=str(exc))
            return
        for ev in events:
            self._do(self.engine.on_event(ev, time.monotonic()))

    # -- actions ---------------------------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        if actions or self.history.pending:
            self.history.feed(actions, time.monotonic())
        for a in actions:
            if isinstance(a, Log):
                emit_fields(self.log, a.event, a.level, a.fields)
            else:
                self._do_now(a)

    def _sent_now(self, a: Action) -> None:
        """The engine's `send`: an action carried out at once, noted for `show`'s history."""
        self.history.note(a, time.monotonic())
        self._do_now(a)

    def _do_now(self, a: Action) -> None:
        """Carry out one action; the engine calls this directly for probes (`send`)."""
        if isinstance(a, SendFrame):
            self._send(a)
        elif isinstance(a, Resolve | Takeover | RemovePlaceholder):
            # A RemovePlaceholder only comes for an entry the engine found not
            # binding (Engine._placeholder_left).
            self._kernel(a)
        elif isinstance(a, Log):
            emit_fields(self.log, a.event, a.level, a.fields)

    def _send(self, a: SendFrame) -> None:
        if self.config.dry_run:
            emit(
                self.log,
                "dry-run",
                "info",
                would="send",
                family=FAMILIES[a.family],
                target=str(a.target),
                source=str(a.source),
                mac=format_mac(a.mac),
                egress=self._ifname(a.egress),
            )
            return
        try:
            self.sender.send_on(a.egress, a.frame)
        except (InterfaceError, OSError) as exc:
            self.engine.stats[SEND_ERRORS] += 1
            emit(
                self.log,
                "send-error",
                "warning",
                egress=self._ifname(a.egress),
                target=str(a.target),
                error=str(exc),
            )
        else:
            if not self.log.isEnabledFor(logging.DEBUG):
                return  # the fields below cost more than the send itself
            emit(
                self.log,
                "probe",
                "debug",
                family=FAMILIES[a.family],
                target=str(a.target),
                source=str(a.source),
                mac=format_mac(a.mac),
                egress=self._ifname(a.egress),
            )

    def _kernel(self, a: Resolve | Takeover | RemovePlaceholder) -> bool:
        """Carry out a neighbor-table action; True if the kernel did it (not in dry-run,
        not failed, not an entry already gone)."""
        what = {Resolve: "resolve", Takeover: "takeover"}.get(type(a), "remove-placeholder")
        dev = self._ifname(a.ifindex)
        if self.config.dry_run:
            emit(self.log, "dry-run", "info", would=what, address=str(a.address), dev=dev)
            return False
        try:
            if isinstance(a, Resolve):
                # Stamped with our protocol when the kernel creates the entry, so a
                # restart can tell our leftover placeholders from anyone's entries.
                self.requests.neigh_use(
                    a.ifindex, a.address, protocol=self.engine.config.neigh_protocol
                )
            elif isinstance(a, Takeover):
                # Not extern_learn: this entry is ours, and the kernel's own
                # NUD machine keeps it fresh (REACHABLE -> STALE -> probes).
                self.requests.neigh_replace(
                    a.ifindex, a.address, a.mac, NUD_REACHABLE, protocol=a.protocol
                )
            else:
                self.requests.neigh_delete(a.ifindex, a.address)
        except NetlinkError as exc:
            if isinstance(a, RemovePlaceholder) and exc.errno == errno.ENOENT:
                return False  # already gone: the kernel or someone else removed it
            self.engine.stats[NETLINK_ERRORS] += 1
            emit(
                self.log,
                "netlink-error",
                "warning",
                action=what,
                address=str(a.address),
                dev=dev,
                error=str(exc),
            )
            return False
        return True

    def _ifname(self, ifindex: int) -> str:
        link = self.mirror.links.get(ifindex)
        return link.name if link is not None else f"if{ifindex}"

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.control is not None:
            self.control.close()
        if self._lock is not None:
            self._lock.close()
        old_usr1 = getattr(self, "_old_usr1", None)
        if old_usr1 is not None:
            signal.signal(signal.SIGUSR1, old_usr1)
        for name in ("capture", "sender", "events", "requests"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _sd_notify(message: bytes) -> None:
    """Tell systemd (Type=notify) we are serving; a no-op outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.send(message)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
