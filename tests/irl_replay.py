"""Replays the answers captured from the real irlserver/irl-srt-server
(tests/fixtures/srt/irl-srt-server-real/, see its PROVENANCE) on a loopback HTTP server.

A request is answered with the capture of the same config (``open``: no `api_keys`;
``keyed``), state (``idle``/``live``), path and query, and Authorization header kind
(none, the capture's raw key, ``Bearer``, ``Basic``, anything else = a wrong key), with the
status code the server gave. Several captures of one request (two polls of a live stream)
are served in turn, the last one repeated. A request never captured gets a 599, so a test
cannot pass on an answer the real server never gave."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.helpers import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "srt" / "irl-srt-server-real"


def _request_key(path: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(path)
    return parts.path, tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))


class IrlReplay:
    def __init__(self, config: str, state: str = "live", fixtures: Path = FIXTURES) -> None:
        index = json.loads((fixtures / "answers.json").read_text())
        self.key: str = index["key"]
        self.config = config
        self.state = state
        self.answers: list[dict[str, Any]] = [a for a in index["answers"] if a["config"] == config]
        self.bodies = {a["file"]: (fixtures / a["file"]).read_bytes() for a in self.answers}
        self.served: dict[tuple[Any, ...], int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, body = replay.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stats"

    def auth_kind(self, header: str | None) -> str:
        if header is None:
            return "none"
        if header == self.key:
            return "key"
        if header.startswith("Bearer "):
            return "bearer"
        if header.startswith("Basic "):
            return "basic"
        return "wrong"

    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        auth = self.auth_kind(authorization)
        wanted = _request_key(path)
        with self.lock:
            self.requests.append((path, authorization))
            matches = [a for a in self.answers
                       if _request_key(a["path"]) == wanted and a["authorization"] == auth
                       and f"_{self.state}_" in a["file"]]
            if not matches:
                return 599, json.dumps({"replay": f"not captured: {self.config}/{self.state} "
                                                  f"{path} auth={auth}"}).encode()
            slot = (self.state, wanted, auth)
            n = self.served.get(slot, 0)
            self.served[slot] = n + 1
        chosen = matches[min(n, len(matches) - 1)]
        return int(chosen["status"]), self.bodies[chosen["file"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
