"""sd_notify(3) by hand: tell systemd we are ready, reloading, stopping, and still alive.

The protocol is one datagram per message, `KEY=value` lines, sent to the AF_UNIX socket
named by $NOTIFY_SOCKET (a path, or "@name" for an abstract socket). Without that variable
every call does nothing. Sends never block and never raise into the daemon: systemd being
slow or gone must not stop monitoring, so a failed send is logged (once) and dropped.

The watchdog pings from a task on the event loop itself: if the loop hangs, the pings
stop and systemd restarts us (WatchdogSec=). The daemon also stops them itself when one of
its core tasks died (daemon/supervisor.py): a daemon that no longer works is not alive.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger("runbookd.sdnotify")

# How often the STATUS= line is recomputed; it is sent only when its text changed.
STATUS_EVERY = 1.0


def socket_address(value: str) -> str | None:
    """$NOTIFY_SOCKET as a socket address: "@name" -> "\\0name"; None if unsupported."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd >= 254): not for a daemon on the host


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None if not asked."""
    owner = environ.get("WATCHDOG_PID")
    if owner is not None and owner != str(pid):
        return None  # the watchdog is meant for another process (we were forked off)
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1e6 if usec > 0 else None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: systemd compares it with its own clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _field(key: str, value: str) -> str:
    # A newline would start a new KEY=value field: a status text cannot smuggle one in.
    return f"{key}={' '.join(value.splitlines())}"


class Notifier:
    """The daemon's end of the notify socket; inert when $NOTIFY_SOCKET is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(raw) if raw else None
        self.watchdog_interval = watchdog_interval(env, os.getpid()) if self.address else None
        self._sock: socket.socket | None = None
        self._failing = False
        self._status: str | None = None
        # READY=1 was sent: from then on a reload is announced (RELOADING=1 ... READY=1).
        self.announced = False
        self._announcer: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET not supported: not notifying systemd", socket=raw)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # -- messages ----------------------------------------------------------------------------

    def send(self, *fields: str) -> bool:
        """Send one message of `KEY=value` fields; True if it was handed to the socket."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)  # a full queue drops the message, never waits
            self._sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd", error=str(exc), message=fields[0])
            self._failing = True
            return False
        if self._failing:
            log.info("notifying systemd works again")
            self._failing = False
        return True

    def ready(self, status: str) -> bool:
        """READY=1 with the status; whether it was handed to the socket."""
        self.announced, self._status = True, status
        return self.send("READY=1", _field("STATUS", status))

    def reloading(self) -> None:
        # systemd >= 253 (Type=notify-reload) wants the time, to match the reload it asked for.
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str) -> None:
        if self._announcer is not None:
            self._announcer.cancel()  # no READY=1 or status change after this; pings go on
        self._status = status
        self.send("STOPPING=1", _field("STATUS", status))

    def status(self, status: str) -> None:
        """Send STATUS= when the text differs from the last one sent."""
        if status != self._status:
            self._status = status
            self.send(_field("STATUS", status))

    # -- background --------------------------------------------------------------------------

    def start(
        self,
        status: Callable[[], str],
        ready: asyncio.Event,
        watch: Callable[[asyncio.Task[Any]], object] | None = None,
    ) -> None:
        """From the running loop: READY=1 once `ready` is set, then keep STATUS= current;
        ping the watchdog if systemd asked for it. `watch` is given each task started."""
        if not self.enabled or self._announcer is not None:
            return
        self._announcer = asyncio.create_task(self._announce(ready, status), name="sd-ready")
        if self.watchdog_interval is not None:
            interval = self.watchdog_interval
            self._pinger = asyncio.create_task(self._watchdog(interval), name="sd-watchdog")
        if watch is not None:
            for task in (self._announcer, self._pinger):
                if task is not None:
                    watch(task)

    def stop_watchdog(self) -> None:
        """No more WATCHDOG=1: systemd restarts us if we do not exit in time by ourselves."""
        if self._pinger is not None:
            self._pinger.cancel()

    async def close(self) -> None:
        """Stop the pings (the last thing on shutdown: a drain is still alive) and close."""
        tasks = [t for t in (self._announcer, self._pinger) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._announcer = self._pinger = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _announce(self, ready: asyncio.Event, status: Callable[[], str]) -> None:
        await ready.wait()
        sent = self.ready(_text(status))
        while True:
            await asyncio.sleep(STATUS_EVERY)
            if not sent:  # dropped (the socket's queue was full): systemd still waits for it
                sent = self.ready(_text(status))
            else:
                self.status(_text(status))


def _text(status: Callable[[], str]) -> str:
    try:
        return status()
    except Exception:  # a bug in a status line must not cost READY=1 or the pings
        log.exception("status line failed")
        return "running"
