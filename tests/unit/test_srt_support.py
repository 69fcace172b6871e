"""Shared support for the test_srt_* files (no tests here): fixture paths, a local HTTP
server with scripted answers, and the `srt` collector built from a plain options mapping."""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, MetricSettings
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.collectors.srt import SrtCollector, parse_options
from belabox_metrics.model import Sample
from belabox_metrics.validation import Reader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "srt"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0  # before the headers
    trickle: float = 0.0  # seconds between body bytes (a server that dribbles)
    content_type: str = "application/json"


@dataclass
class ScriptedServer:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    def set(self, path: str, body: str | bytes = b"", status: int = 200, **kw: Any) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[path] = Route(status=status, body=data, **kw)


@contextmanager
def http_server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scripted.requests.append((self.path, self.headers.get("Authorization")))
            route = scripted.routes.get(self.path.split("?")[0], Route(status=404, body=b"{}"))
            if route.delay and stop.wait(route.delay):
                return
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if route.trickle:
                for byte in route.body:
                    if stop.wait(route.trickle):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            else:
                self.wfile.write(route.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scripted.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


def make_collector(sources: list[dict[str, Any]], *, clock: FakeClock | None = None,
                   log: logging.Logger | None = None) -> SrtCollector:
    reader = Reader({"sources": sources}, "metrics[0]")
    options = parse_options(reader)
    ctx = CollectorContext(fs=FsRoot(), clock=clock or FakeClock(), device_id="test",
                           log=log or logging.getLogger("test.srt"))
    return SrtCollector(MetricSettings(name="srt", interval=1.0, options=options), ctx)


def now_ms() -> int:
    return int(time.time() * 1000)


def pick(samples: list[Sample], name: str, /, **labels: str) -> list[Sample]:
    return [s for s in samples
            if s.name == name and all(s.label(k) == v for k, v in labels.items())]


def one(samples: list[Sample], name: str, /, **labels: str) -> float:
    found = pick(samples, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {found}"
    value = found[0].value
    assert value is not None
    return value
