"""belaUI source against a websocket server of our own that plays belaUI's protocol with
what the real belaUI sent (tests/fixtures/srt/belaui-real): no data before auth,
`set_password` status when no password is set, persistent tokens, a wrong password answered
only by the `auth` error notification, broadcasts only to clients active within a window (15 s
in belaUI; shortened here, with the agent's keepalive shortened to match), and a restart in the
middle of the test. tests/integration/test_belaui_real.py runs the real belaUI itself."""

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
from tests.unit.test_srt_support import FIXTURES, make_collector, now_ms, one, pick

PASSWORD = "pw-Zq8v1-belaui"  # a test password: must never reach a log


def _capture(name: str) -> list[Any]:
    lines = (FIXTURES / "belaui-real" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["msg"] for line in lines if line and "msg" in json.loads(line)]


# A token login while streaming with a persistent srtla error (relogin.jsonl): the burst
# belaUI sends after its `auth` answer, then one of each of its per-second broadcasts.
_RELOGIN = _capture("relogin.jsonl")
_AUTH_AT = next(i for i, m in enumerate(_RELOGIN) if "auth" in m)
STATE_MESSAGES = [m for m in _RELOGIN[_AUTH_AT + 1:] if "auth" not in m][:8]
BROADCAST = [next(m for m in _RELOGIN[_AUTH_AT + 9:] if kind in m) for kind in ("sensors", "netif", "status")]
WRONG_PASSWORD = [m for m in _capture("wrong_password.jsonl") if m["notification"]["show"]]
UNKNOWN_TOKEN = [m for m in _capture("unknown_token.jsonl") if "auth" in m]


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
    password_refusals: list[float] = field(default_factory=list)
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
        elif "token" in value and value.get("token") in self.tokens:
            self.token_logins += 1
            reply = {"success": True}
        elif "token" in value:
            self.failed_logins += 1
            for message in UNKNOWN_TOKEN:
                await client.ws.send_str(json.dumps(message))
            return
        else:  # belaUI answers a wrong password only with its `auth` error notification
            self.failed_logins += 1
            self.password_refusals.append(time.monotonic())
            for message in WRONG_PASSWORD:
                await client.ws.send_str(json.dumps(message))
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

            # Every message type of the captures, parsed.
            assert one(samples, "belabox.streaming_live") == 1
            assert one(samples, "belabox.modem_throughput_bytes_per_second", interface="wwan0") in {
                m["netif"]["wwan0"]["tp"] for m in [*STATE_MESSAGES, *BROADCAST] if "netif" in m}
            assert one(samples, "belabox.interface_enabled", interface="wwan0") == 1
            assert one(samples, "belabox.modems") == 1
            assert one(samples, "belabox.modem_signal_percent", modem="0") == 71
            assert one(samples, "belabox.modem_roaming", modem="0") == 1
            samples = wait_for(collector, lambda got: [s.value for s in pick(
                got, "belabox.soc_temperature_celsius")] == [52.7], seen=seen)  # a broadcast
            assert one(samples, "belabox.soc_temperature_celsius") == pytest.approx(52.7)
            assert one(samples, "belabox.max_bitrate_bits_per_second") == 4_200_000  # config at login
            assert one(samples, "belabox.error_notifications_total", name="srtla") == 1
            texts = {(s.name, s.text) for s in seen if s.is_text}
            assert ("belabox.modem_network", "RealsrcNet") in texts
            assert ("belabox.modem_technology", "4G") in texts
            assert ("belabox.modem_connection", "connected") in texts
            assert ("belabox.revision", "realsrc-stub-srtla-1") in texts
            assert ("belabox.notification", "Failed to connect to the SRTLA server. Retrying...") in texts
            source_obj = collector.runtimes[0].source
            assert source_obj is not None
            assert source_obj.state.unknown_types <= {"pipelines", "acodecs"}  # type: ignore[attr-defined]

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


def wait_error(collector: SrtCollector, words: str, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            collector.collect(now_ms())
        except CollectorError as exc:
            last = str(exc)
            if words in last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"no error with {words!r} in {seconds}s (last: {last!r})")


def test_wrong_password_is_named_with_the_fix_and_backs_off_until_the_file_changes(
        tmp_path: Path) -> None:
    password_file = secret(tmp_path / "belaui-password", "not-the-password")
    with belaui_server() as (server, _thread):
        collector = make_collector([source(server.port, tmp_path, backoff_max="30s")])
        try:
            error = wait_error(collector, "refused the password")
            assert "did not answer" not in error
            assert f"write the belaUI web UI password into {password_file}" in error
            assert "metrics[0].sources[0].password_file" in error
            assert "not-the-password" not in error
            assert not (tmp_path / "belaui-token").exists()
            # no retry storm of bcrypt checks: one attempt while the file stays the same
            first = server.password_refusals[0]
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                assert len(server.password_refusals) == 1, server.password_refusals
                time.sleep(0.05)
            assert time.monotonic() - first >= 2.5
            # the operator fixes the file: the agent logs in at once, not after 30 s
            secret(password_file, PASSWORD)
            fixed = time.monotonic()
            wait_for(collector, has("belabox.soc_temperature_celsius"), seconds=10)
            assert time.monotonic() - fixed < 5
            assert server.password_logins == 1
        finally:
            collector.close()


def test_no_password_set_and_open_permissions(tmp_path: Path) -> None:
    secret(tmp_path / "belaui-password", PASSWORD)
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
