"""systemd notify protocol and watchdog, in the standard library.

``notify`` sends ``KEY=VALUE`` datagrams to ``$NOTIFY_SOCKET`` (a leading ``@`` is an
abstract socket). The watchdog is fed only while every loop it vouches for is making
progress: each loop promises, with ``Heartbeat.beat(within)``, to beat again within that
many seconds; a loop that hangs breaks its promise, the pings stop, and systemd restarts
the service.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping

from belabox_metrics.clock import Clock


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_period(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when the watchdog
    is off or meant for another process."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2


class Heartbeat:
    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self._lock = threading.Lock()
        self._due: float | None = None

    def beat(self, within: float) -> None:
        """This loop will beat again within ``within`` seconds (plus the caller's slack)."""
        with self._lock:
            self._due = self.clock.monotonic() + within

    def alive(self) -> bool:
        with self._lock:
            return self._due is not None and self.clock.monotonic() <= self._due

    def overdue_by(self) -> float:
        with self._lock:
            return 0.0 if self._due is None else max(0.0, self.clock.monotonic() - self._due)
