"""belaUI source against a websocket server of our own that enforces belaUI's protocol:
no data before auth, `set_password` status when no password is set, persistent tokens,
broadcasts only to clients active within a window (15 s in belaUI; shortened here, with the
agent's keepalive shortened to match), and a restart in the middle of the test."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from belabox_metrics.collectors.base import CollectorError
from belabox_metrics.collectors.srt import SrtCollector
from belabox_metrics.model import Sample
from tests.helpers import free_port
from tests.unit.test_srt_support import fixture_text, make_collector, now_ms, one, pick

PASSWORD = "pw-Zq8v1-belaui"  # a test password: must never reach a log
MESSAGES = [json.loads(line) for line in fixture_text("belaui_messages.jsonl").splitlines() if line]
STATE_MESSAGES = [m for m in MESSAGES if "auth" not in m]
# belaUI sends `sensors` and `netif` every second; the broadcast carries every sensor of the
# fixtures at once (temperature as in the first two lines).
SENSORS = {k: v for m in MESSAGES if "sensors" in m for k, v in m["sensors"].items()}
SENSORS["SoC temperature"] = "52.7 °C"
BROADCAST = [{"sensors": SENSORS}] + [m for m in STATE_MESSAGES if "netif" in m]


@dataclass
class Client:
    ws: web.WebSocketResponse
    authed: bool = False
    last_active: float = field(default_factory=time.monotonic)


@dataclass
class FakeBelaUi:
    port: int
    active_window: float = 0.6
    password: str | None = PASSWORD
    tokens: set[str] = field(default_factory=set)
    clients: list[Client] = field(default_factory=list)
    password_logins: int = 0
    token_logins: int = 0
    failed_logins: int = 0
    refused_unauthed: int = 0
    keepalives: int = 0
    connections: int = 0
    broadcasts: int = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = Client(ws)
        self.clients.append(client)
        self.connections += 1
        if self.password is None:
            await ws.send_str(json.dumps({"status": {"set_password": True}}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                client.last_active = time.monotonic()
                data = json.loads(msg.data)
                for kind, value in data.items():
                    if kind == "auth":
                        await self._auth(client, value)
                    elif not client.authed:
                        self.refused_unauthed += 1  # belaUI ignores everything else
                    elif kind == "keepalive":
                        self.keepalives += 1
        finally:
            self.clients.remove(client)
        return ws

    async def _auth(self, client: Client, value: dict[str, Any]) -> None:
        if self.password is not None and value.get("password") == self.password:
            self.password_logins += 1
            reply: dict[str, Any] = {"success": True}
            if value.get("persistent_token"):
                token = secrets.token_urlsafe(32)
                self.tokens.add(token)
                reply["auth_token"] = token
        elif value.get("token") in self.tokens:
            self.token_logins += 1
            reply = {"success": True}
        else:
            self.failed_logins += 1
            await client.ws.send_str(json.dumps({"auth": {"success": False}}))
            return
        client.authed = True
        await client.ws.send_str(json.dumps({"auth": reply}))
        for message in STATE_MESSAGES:  # like belaUI's initial status after login
            await client.ws.send_str(json.dumps(message))

    async def broadcast_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for client in list(self.clients):
                if client.authed and now - client.last_active <= self.active_window:
                    for message in BROADCAST:
                        await client.ws.send_str(json.dumps(message))
                    self.broadcasts += 1


class ServerThread:
    """Runs FakeBelaUi in its own event loop; start/stop can be repeated on one port."""

    def __init__(self, server: FakeBelaUi) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.broadcaster: asyncio.Task[None] | None = None

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def start(self) -> None:
        async def go() -> None:
            app = web.Application()
            app.router.add_get("/", self.server.handler)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.server.port).start()
            self.broadcaster = asyncio.ensure_future(self.server.broadcast_forever())
        self._call(go())

    def stop(self) -> None:
        async def go() -> None:
            if self.broadcaster is not None:
                self.broadcaster.cancel()
            for client in list(self.server.clients):
                await client.ws.close()
            if self.runner is not None:
                await self.runner.cleanup()
        self._call(go())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextmanager
def belaui_server(**kw: Any) -> Iterator[tuple[FakeBelaUi, ServerThread]]:
    server = FakeBelaUi(port=free_port(), **kw)
    thread = ServerThread(server)
    thread.start()
    try:
        yield server, thread
    finally:
        thread.close()


def secret(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n")
    os.chmod(path, mode)
    return path


def source(port: int, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "belaui", "url": f"ws://127.0.0.1:{port}/",
            "password_file": str(tmp / "belaui-password"), "keepalive": "200ms",
            "stale_after": "500ms", "backoff_initial": "50ms", "backoff_max": "300ms",
            "timeout": "1s", **extra}


def wait_for(collector: SrtCollector, ok: Callable[[list[Sample]], bool],
             seconds: float = 6.0, seen: list[Sample] | None = None) -> list[Sample]:
    deadline = time.monotonic() + seconds
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            samples = collector.collect(now_ms())
            if seen is not None:
                seen.extend(samples)
            if ok(samples):
                return samples
        except CollectorError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {seconds}s (last error: {last})")


def has(name: str) -> Callable[[list[Sample]], bool]:
    return lambda samples: any(s.name == name for s in samples)


def test_login_keepalive_restart_and_every_message(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    secret(tmp_path / "belaui-password", PASSWORD)
    caplog.set_level(logging.DEBUG)
    with belaui_server() as (server, thread):
        collector = make_collector([source(server.port, tmp_path)],
                                   log=logging.getLogger("belabox_metrics.test"))
        seen: list[Sample] = []
        try:
            samples = wait_for(collector, has("belabox.modem_throughput_bytes_per_second"), seen=seen)
            assert server.password_logins == 1
            token_file = tmp_path / "belaui-token"
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            token = token_file.read_text().strip()
            assert token in server.tokens

            # Every message type of the fixtures, parsed.
            assert one(samples, "belabox.streaming_live") == 1
            assert one(samples, "belabox.modem_throughput_bytes_per_second",
                       interface="usb0") == 98211
            assert one(samples, "belabox.modem_throughput_bytes_per_second",
                       interface="wwan0") == 0
            assert one(samples, "belabox.interface_enabled", interface="wlan0") == 0
            assert one(samples, "belabox.modem_signal_percent", modem="0") == 72
            assert one(samples, "belabox.modem_roaming", modem="0") == 0
            samples = wait_for(collector, lambda got: [s.value for s in pick(
                got, "belabox.soc_temperature_celsius")] == [52.7], seen=seen)  # a broadcast
            assert one(samples, "belabox.soc_temperature_celsius") == pytest.approx(52.7)
            assert one(samples, "belabox.soc_voltage_volts") == pytest.approx(5.012)
            assert one(samples, "belabox.soc_current_amperes") == pytest.approx(1.236)
            assert one(samples, "belabox.srt_ingest_bits_per_second") == 2_950_000
            assert one(samples, "belabox.srt_ingest_rtt_seconds") == pytest.approx(0.023)
            assert one(samples, "belabox.max_bitrate_bits_per_second") == 6_000_000
            assert one(samples, "belabox.error_notifications_total", name="srtla") >= 1
            texts = {(s.name, s.text) for s in seen if s.is_text}
            assert ("belabox.modem_network", "T-Mobile") in texts
            assert ("belabox.modem_technology", "4G") in texts
            assert ("belabox.modem_connection", "connected") in texts
            assert ("belabox.revision", "79fe2a8") in texts
            assert ("belabox.notification",
                    "All SRTLA connections failed. Trying to reconnect...") in texts
            # The voltage/current variant of `sensors` arrived in the initial status.
            source_obj = collector.runtimes[0].source
            assert source_obj is not None
            assert source_obj.state.unknown_types == set()  # type: ignore[attr-defined]

            # Keepalive: data keeps flowing well past the server's activity window.
            broadcasts = server.broadcasts
            time.sleep(3 * server.active_window)
            samples = collector.collect(now_ms())
            assert one(samples, "belabox.soc_temperature_celsius") == pytest.approx(52.7)
            assert server.broadcasts > broadcasts + 5
            assert server.keepalives >= 5
            # Text samples are not repeated every poll.
            assert pick(samples, "belabox.modem_network") == []

            # belaUI restarts: no data -> an error, never a stale or fake value.
            thread.stop()
            time.sleep(0.7)
            with pytest.raises(CollectorError, match="belaUI"):
                collector.collect(now_ms())
            assert collector.degraded
            thread.start()
            wait_for(collector, has("belabox.soc_temperature_celsius"))
            assert server.password_logins == 1  # reconnected with the cached token
            assert server.token_logins >= 1
            assert server.refused_unauthed == 0  # never talked before logging in
            assert not collector.degraded
        finally:
            collector.close()
        assert source_obj.thread is None  # type: ignore[attr-defined]

    # Neither the password nor the token is in any log record, at DEBUG.
    text = "\n".join(r.getMessage() + repr(r.args) + str(r.exc_text) for r in caplog.records)
    assert "logged in" in text
    assert PASSWORD not in text
    assert token not in text


def test_without_keepalive_broadcasts_stop_and_the_source_goes_stale(tmp_path: Path) -> None:
    secret(tmp_path / "belaui-password", PASSWORD)
    with belaui_server() as (server, _thread):
        collector = make_collector([source(server.port, tmp_path, keepalive="14s")])
        try:
            wait_for(collector, has("belabox.soc_temperature_celsius"))
            time.sleep(server.active_window + 0.8)
            with pytest.raises(CollectorError, match="no message from belaUI"):
                collector.collect(now_ms())
        finally:
            collector.close()


def test_wrong_password_no_password_set_and_open_permissions(tmp_path: Path) -> None:
    secret(tmp_path / "belaui-password", "not-the-password")
    with belaui_server() as (server, _thread):
        collector = make_collector([source(server.port, tmp_path)])
        try:
            time.sleep(0.7)
            with pytest.raises(CollectorError, match="refused the password"):
                collector.collect(now_ms())
            assert server.failed_logins >= 1
            assert not (tmp_path / "belaui-token").exists()
        finally:
            collector.close()

    with belaui_server(password=None) as (server, _thread):
        collector = make_collector([source(server.port, tmp_path)])
        try:
            time.sleep(0.7)
            with pytest.raises(CollectorError, match="no password set"):
                collector.collect(now_ms())
        finally:
            collector.close()

    secret(tmp_path / "belaui-password", PASSWORD, mode=0o640)
    with belaui_server() as (server, _thread):
        collector = make_collector([source(server.port, tmp_path)])
        try:
            with pytest.raises(CollectorError, match="chmod 600"):
                collector.collect(now_ms())
            time.sleep(0.2)
            assert server.connections == 0  # refused before connecting
        finally:
            collector.close()
