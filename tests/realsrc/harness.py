"""Run the real upstream servers on loopback: the unmodified belaUI.js (Node, hardware
stubbed) and OpenIRL srt-live-server built from source, from ../shared/realsrc beside the
repository (upstream code is not copied into this one).

Its setup/build scripts are idempotent and cache under $REALSRC_CACHE (default: a
realsrc-cache directory in the temp dir); `scripts/install-test-tools.sh` runs them in CI.
``overlay/`` holds our additions to its stubs: a run-ns.sh that can also fake a Jetson's
power monitor, and an srtla_send stub that can fail the way the real one reports errors.
Tests call `belaui_app()` / `sls_binary()`, which skip with the reason on a dev box that
cannot run them and fail when CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from belabox_metrics.collectors.srt.websocket import WebSocket

HERE = Path(__file__).resolve().parent
REALSRC = HERE.parents[1].parent / "shared" / "realsrc"
OVERLAY = HERE / "overlay"
IN_CI = os.environ.get("CI") == "true"
# build_irl_sls.sh exits with this when it has no source tree and cannot clone one.
SOURCE_UNREACHABLE = 3


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message}: CI must provide it (scripts/install-test-tools.sh)")
    pytest.skip(message)


def _script_output(script: Path, what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        _unavailable(f"{what}: {script.name} took over {timeout:g}s")
        raise AssertionError("unreachable") from None
    if proc.returncode == SOURCE_UNREACHABLE:
        # No source to build from (a machine that reaches only package registries cannot
        # clone it): not a broken install, so this skips in CI too, saying why.
        pytest.skip(f"{what}: {script.name}: {proc.stderr.strip()[-300:]}")
    if proc.returncode != 0:
        _unavailable(f"{what}: {script.name} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout.strip().splitlines()[-1]


def _shared_script(*parts: str) -> Path:
    script = REALSRC.joinpath(*parts)
    if not script.is_file():
        _unavailable(f"{'/'.join(parts)} of ../shared/realsrc is not beside the repository")
    return script


def belaui_app() -> Path:
    """The prepared belaUI directory (setup.sh; needs root for its mount namespace)."""
    if os.geteuid() != 0:
        _unavailable("the real belaUI needs root (it runs in a private mount namespace)")
    for tool in ("node", "npm", "unshare"):
        if shutil.which(tool) is None:
            _unavailable(f"the real belaUI needs `{tool}` (Debian packages nodejs npm util-linux)")
    return Path(_script_output(_shared_script("belaui", "setup.sh"), "belaUI setup", 900))


def sls_binary() -> Path:
    """The built OpenIRL srt-live-server binary (build.sh)."""
    if not (Path("/usr/include/srt/srt.h").exists() and shutil.which("g++")):
        _unavailable("building OpenIRL srt-live-server needs libsrt-openssl-dev and g++")
    return Path(_script_output(_shared_script("sls", "build.sh"), "srt-live-server build", 1500))


class Daemon:
    """A server process this harness started: its log's tail, and a stop that always ends
    it and removes the fixed path the upstream program leaves behind."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path
    leftover: str

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.leftover)


@dataclass
class BelaUi(Daemon):
    """One real belaUI on 127.0.0.1:port, with its hardware state files under run/state."""

    app: Path
    run: Path
    port: int
    temp_millic: int = 52700
    hw: str = "rk3588"
    ina3221: tuple[int, int] | None = None  # (mV, mA) of a Jetson's power monitor
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state = self.run / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run / "belaui.log"
        self.set_modem(True)
        (self.state / "signal").write_text("71\n")
        (self.state / "tx_rate").write_text("250000\n")
        (self.state / "tx_t0_ms").write_text(f"{int(time.time() * 1000)}\n")
        (self.run / "setup.json").write_text(json.dumps({
            "hw": self.hw, "belacoder_path": f"{self.app}/hw/belacoder/",
            "srtla_path": f"{OVERLAY}/belaui/hw/srtla/",
            "bitrate_file": str(self.state / "belacoder_br"),
            "ips_file": str(self.state / "srtla_ips")}))
        if not (self.run / "config.json").exists():
            (self.run / "config.json").write_text(json.dumps({"asrc": "USB audio"}))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def set_modem(self, present: bool) -> None:
        path = self.state / "modem_present"
        if present:
            path.touch()
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def set_srtla_error(self, text: str | None) -> None:
        path = self.state / "srtla_error"
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            path.write_text(text)

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ)
        if self.ina3221 is not None:
            env["REALSRC_INA3221"] = f"{self.ina3221[0]} {self.ina3221[1]}"
        with self.log_path.open("ab") as log:
            # unshare, sh and launch.py all exec: the pid is node's
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", str(OVERLAY / "belaui" / "run-ns.sh"),
                 str(self.app), str(self.run), str(self.port), str(self.temp_millic)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.run, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"belaUI exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                WebSocket.connect(self.url, 1.0).close()
                return
            time.sleep(0.1)
        raise TimeoutError(f"belaUI did not accept a websocket in {timeout:g}s: {self.log_tail()}")

    # belaUI's hard-coded pipeline path, removed after a test
    leftover = "/tmp/belacoder_pipeline"


class Client:
    """A websocket client speaking belaUI's protocol, recording what it receives."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.ws = WebSocket.connect(url, timeout)
        self.t0 = time.monotonic()
        self.received: list[tuple[float, Any]] = []

    def send(self, message: Any) -> None:
        self.ws.send_text(json.dumps(message, separators=(",", ":")))

    def pump(self, seconds: float, *, keepalive: float = 5.0) -> list[Any]:
        """Receive for `seconds`, sending keepalives; returns the messages of this call."""
        got: list[Any] = []
        end = time.monotonic() + seconds
        next_keepalive = time.monotonic() + keepalive
        while (left := end - time.monotonic()) > 0:
            if time.monotonic() >= next_keepalive:
                self.send({"keepalive": None})
                next_keepalive = time.monotonic() + keepalive
            raw = self.ws.recv(min(left, 0.25))
            if raw is not None:
                message = json.loads(raw)
                self.received.append((time.monotonic() - self.t0, message))
                got.append(message)
        return got

    def until(self, check: Any, timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for message in self.pump(0.25):
                if check(message):
                    return message
        raise TimeoutError(f"belaUI sent no {what} in {timeout:g}s")

    def close(self) -> None:
        self.ws.close()


def set_password(url: str, password: str) -> None:
    """What the web page does on a fresh box: set the password, then log in with it."""
    client = Client(url)
    try:
        client.until(lambda m: isinstance(m.get("status"), dict) and m["status"].get("set_password"),
                     15, "status.set_password")
        client.send({"config": {"password": password}})
        client.send({"auth": {"password": password, "persistent_token": False}})
        client.until(lambda m: isinstance(m.get("auth"), dict) and m["auth"].get("success"), 15,
                     "auth success")
    finally:
        client.close()


@contextlib.contextmanager
def running_belaui(run: Path, port: int, *, password: str | None = None,
                   temp_millic: int = 52700) -> Iterator[BelaUi]:
    server = BelaUi(belaui_app(), run, port, temp_millic=temp_millic)
    server.start()
    try:
        if password is not None:
            set_password(server.url, password)
        yield server
    finally:
        server.stop()


@dataclass
class Sls(Daemon):
    """OpenIRL srt-live-server on loopback: HTTP API, a publisher and a player port, its
    SQLite database and the admin API key it generates on the first start."""

    binary: Path
    run: Path
    http_port: int
    publisher_port: int
    player_port: int
    proc: subprocess.Popen[bytes] | None = None
    admin_key: str | None = None

    def __post_init__(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run / "sls.log"
        (self.run / "sls.conf").write_text(f"""srt {{
    worker_threads 1;
    worker_connections 300;
    http_port {self.http_port};
    log_level info;
    database_path {self.run / 'sls.db'};
    server {{
        listen_player {self.player_port};
        listen_publisher {self.publisher_port};
        latency_min 100;
        latency_max 5000;
        idle_streams_timeout 10;
        backlog 100;
    }}
}}
""")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            # sls logs with printf: line-buffered so the generated key is readable at once
            self.proc = subprocess.Popen(["stdbuf", "-oL", str(self.binary), "-c", str(self.run / "sls.conf")],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.run)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sls exited with {self.proc.returncode}: {self.log_tail()}")
            text = self.log_path.read_text(errors="replace")
            marker = "Generated default admin API key: "
            if marker in text and self.admin_key is None:
                self.admin_key = text.split(marker, 1)[1].split()[0]
            if self.admin_key is not None:
                import socket

                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.http_port), 1):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"sls did not come up in {timeout:g}s: {self.log_tail()}")

    def map_stream(self, publisher: str, player: str) -> None:
        body = json.dumps({"publisher": publisher, "player": player}).encode()
        request = urllib.request.Request(f"{self.url}/api/stream-ids", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {self.admin_key}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status in (200, 201), answer.status

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    leftover = "/tmp/sls/pid.txt"  # sls's hard-coded pid file


NULL_TS = (bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * 184) * 7  # 7 MPEG-TS null packets


class Feeder:
    """An "encoder": `rate` datagrams/s of MPEG-TS null packets to a UDP port, paced."""

    def __init__(self, port: int, rate: int = 250) -> None:
        import socket
        import threading

        self.port, self.rate, self.sent = port, rate, 0
        self.stop_event = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        while not self.stop_event.is_set():
            delay = start + self.sent / self.rate - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            with contextlib.suppress(OSError):  # nobody listening yet: the encoder keeps going
                self.sock.sendto(NULL_TS, ("127.0.0.1", self.port))
            self.sent += 1

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)
        self.sock.close()


def irl_sls_binary() -> Path:
    """The built irlserver/irl-srt-server `srt_server` (tests/realsrc/build_irl_sls.sh)."""
    if not (Path("/usr/include/srt/srt.h").exists() and shutil.which("g++") and shutil.which("cmake")):
        _unavailable("building irl-srt-server needs libsrt-openssl-dev, g++ and cmake")
    return Path(_script_output(HERE / "build_irl_sls.sh", "irl-srt-server build", 1500))


@dataclass
class IrlSls(Daemon):
    """irlserver/irl-srt-server on loopback: the /stats API, one publisher and one player
    port; `api_keys` configured when ``api_key`` is given."""

    binary: Path
    run: Path
    http_port: int
    publisher_port: int
    player_port: int
    api_key: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run / "srt_server.log"
        self.leftover = str(self.run / "sls.pid")
        keys = f"    api_keys {self.api_key};\n" if self.api_key else ""
        (self.run / "sls.conf").write_text(f"""srt {{
    worker_threads 1;
    worker_connections 300;
    http_port {self.http_port};
    http_bind_addr 127.0.0.1;
    cors_header *;
    log_file {self.run / 'server.log'};
    log_level info;
    pidfile {self.run / 'sls.pid'};
{keys}    server {{
        listen_player {self.player_port};
        listen_publisher {self.publisher_port};
        latency_min 100;
        latency_max 5000;
        domain_player play;
        domain_publisher publish;
        backlog 100;
        idle_streams_timeout 10;
        app {{
            app_player live;
            app_publisher live;
            allow publish all;
            allow play all;
        }}
    }}
}}
""")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(self.binary), "-c", str(self.run / "sls.conf")],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.run)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"srt_server exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                return
            time.sleep(0.1)
        raise TimeoutError(f"srt_server did not come up in {timeout:g}s: {self.log_tail()}")

    def get(self, path: str, authorization: str | None = None) -> tuple[int, Any]:
        """(HTTP status, JSON body) of a GET, the Authorization header sent as given."""
        headers = {"Authorization": authorization} if authorization is not None else {}
        request = urllib.request.Request(f"{self.url}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
