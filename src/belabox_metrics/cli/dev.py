"""`metrics-collector dev`: the whole pipeline on a dev box, no root, one command.

Writes an embedded config into a per-user data directory, starts `metrics-receiver` on
127.0.0.1, and runs the agent against it until Ctrl-C (or ``--duration``).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from typing import TYPE_CHECKING

from belabox_metrics.cli import ArgumentParser
from belabox_metrics.config import load_config

if TYPE_CHECKING:
    import subprocess

# Every `metrics-collector` command builds this module's parser (add_parser), the agent's
# `run` too: platform, subprocess and importlib.resources (which brings tempfile, shutil,
# bz2, lzma, pathlib) are imported by `dev` alone (issue 16: ~0.5 MB of the agent's RSS).

DEFAULT_PORT = 8080
# The installed service's health port: dev takes it only when it is free.
DEFAULT_HEALTH_PORT = 9469


def user_data_dir() -> str:
    if sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "belabox-metrics", "dev")


def add_parser(sub: argparse._SubParsersAction[ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev", help="try it locally: start a metrics-receiver on 127.0.0.1 and run the agent "
                    "against it with an embedded config")
    dev.add_argument("--data-dir", default=None,
                     help=f"where the databases and config go (default {user_data_dir()})")
    dev.add_argument("--port", type=int, default=None,
                     help=f"receiver port on 127.0.0.1 (default {DEFAULT_PORT}, or a free one)")
    dev.add_argument("--duration", type=float, default=None, help="stop after this many seconds")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def write_config(data_dir: str, port: int, health_port: int) -> str:
    import platform
    from importlib import resources

    template = resources.files("belabox_metrics").joinpath("defaults/dev.yaml").read_text()
    device_id = re.sub(r"[^A-Za-z0-9._-]", "-", f"dev-{platform.node() or 'box'}")[:64]
    text = template.format(device_id=device_id, db_path=os.path.join(data_dir, "metrics.db"),
                           remote_url=f"http://127.0.0.1:{port}/api/metrics",
                           health_listen=f"127.0.0.1:{health_port}")
    path = os.path.join(data_dir, "config.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def main(args: argparse.Namespace) -> int:
    import subprocess

    from belabox_metrics.runtime.startup import run

    data_dir = os.path.abspath(args.data_dir or user_data_dir())
    os.makedirs(data_dir, exist_ok=True)
    port = args.port if args.port is not None else (
        DEFAULT_PORT if _port_free(DEFAULT_PORT) else _free_port())
    health_port = DEFAULT_HEALTH_PORT if _port_free(DEFAULT_HEALTH_PORT) else _free_port()
    config_path = write_config(data_dir, port, health_port)
    receiver_db = os.path.join(data_dir, "receiver.db")
    receiver = subprocess.Popen([
        sys.executable, "-c",
        "import sys; from belabox_metrics.cli.receiver import main; sys.exit(main())",
        "--listen", f"127.0.0.1:{port}", "--db", receiver_db,
    ])
    try:
        if not _wait_listening(port, receiver):
            print(f"metrics-collector dev: metrics-receiver did not start on 127.0.0.1:{port} "
                  "(is the port taken? try --port N; is aiohttp installed?)", file=sys.stderr)
            return 1
        print(f"metrics-receiver listening on http://127.0.0.1:{port}/api/metrics "
              f"(stores into {receiver_db})", flush=True)
        print(f"config: {config_path}", flush=True)
        print(f"health: http://127.0.0.1:{health_port}/health (and /metrics)", flush=True)
        print(f"look at the data: metrics-collector query --config {config_path}", flush=True)
        print("stop with Ctrl-C", flush=True)
        return run(load_config(config_path), stop_after=args.duration)
    finally:
        receiver.terminate()
        try:
            receiver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            receiver.kill()
