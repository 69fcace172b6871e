"""/health, /health/live, /health/ready and /metrics over the standard library's HTTP
server: the agent's memory budget has no room for a web framework, and this server only
ever listens on loopback for a local probe or scraper."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DocumentSource = Callable[[], dict[str, object]]


class HealthServer:
    def __init__(self, host: str, port: int, *, document: DocumentSource, live: Callable[[], bool],
                 metrics: Callable[[], str], log: logging.Logger) -> None:
        self.document = document
        self.live = live
        self.metrics = metrics
        self.log = log
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "belabox-metrics"
            sys_version = ""

            def log_message(self, format: str, *args: object) -> None:
                server.log.debug("health request: " + format, *args)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, document: object) -> None:
                self._send(status, json.dumps(document, indent=2).encode() + b"\n", "application/json")

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                try:
                    if path == "/health":
                        doc = server.document()
                        self._json(200 if doc["status"] != "error" else 503, doc)
                    elif path == "/health/live":
                        alive = server.live()
                        self._json(200 if alive else 503, {"status": "alive" if alive else "stalled"})
                    elif path == "/health/ready":
                        doc = server.document()
                        self._json(200 if doc["status"] == "ok" else 503, {"status": doc["status"]})
                    elif path == "/metrics":
                        self._send(200, server.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
                    else:
                        self._json(404, {"error": f"no such endpoint {path}; try /health, /health/live, "
                                                  "/health/ready or /metrics"})
                except Exception as exc:  # a health probe must get an answer, never a hang
                    server.log.exception("health endpoint failed")
                    self._json(500, {"status": "error", "error": f"{type(exc).__name__}: {exc}"})

            do_HEAD = do_GET

        return Handler
