"""Shared test helpers: real tools on loopback, skipped on a dev laptop, required in CI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
IN_CI = os.environ.get("CI") == "true"
T = TypeVar("T")


def require_tool(name: str, package: str) -> str:
    """Path of a real tool; skip with the reason on a dev box, fail when CI=true."""
    found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
    if found:
        return found
    message = f"{name} is not installed (Debian package `{package}`)"
    if IN_CI:
        pytest.fail(f"{message}: CI must install it (.ci/run)")
    pytest.skip(f"{message}; install it to run this test")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def cli(name: str) -> list[str]:
    """Command line for one of the project's console scripts, from the current interpreter."""
    module = {"metrics-collector": "collector", "metrics-receiver": "receiver"}[name]
    return [sys.executable, "-c", f"import sys; from belabox_metrics.cli.{module} import main; sys.exit(main())"]


def eventually(check: Callable[[], T | None], timeout: float = 60.0, what: str = "condition",
               interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout``
    seconds with the last value. For a busy 2-core machine: a condition, never a sleep."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last: {last!r})")
        time.sleep(interval)


@contextmanager
def stalled_server(host: str = "127.0.0.1") -> Iterator[int]:
    """A port whose server accepts connections (and lets requests in) but never answers:
    a destination hung behind a dead uplink. Yields the port; closes everything on exit."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(64)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()
