"""/health, /health/live, /health/ready and /metrics on a plain socket.

http.server would load http.client, the email package and OpenSSL (~10 MB of RSS) into an
agent whose budget is 25 MB. This serves loopback probes and scrapers: one request per
connection (``Connection: close``), handled in turn with a short timeout each, so a client
that connects and says nothing holds the server for at most ``client_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import threading
from collections.abc import Callable

from belabox_metrics.logs import mask_secrets

DocumentSource = Callable[[], dict[str, object]]
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
           503: "Service Unavailable"}


def listen_problem(listen: str, exc: OSError) -> str:
    """Why ``listen`` cannot be bound, in an operator's words."""
    if exc.errno == errno.EADDRINUSE:
        return f"{listen} is in use by another process (another agent, or `metrics-collector dev`?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{listen} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"{listen}: binding this port needs privileges (use a port above 1024)"
    return f"{listen}: {exc.strerror or exc}"


def probe_listen(host: str, port: int) -> OSError | None:
    """Whether ``host:port`` can be bound now (for check-config): the error, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return exc
    return None


class HealthServer:
    def __init__(self, host: str, port: int, *, document: DocumentSource, live: Callable[[], bool],
                 metrics: Callable[[], str], log: logging.Logger, client_timeout: float = 2.0) -> None:
        self.document = document
        self.live = live
        self.metrics = metrics
        self.log = log
        self.client_timeout = client_timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(16)
        except OSError:
            self.sock.close()
            raise
        # Blocking accept: no periodic wake-ups on an idle box; stop() shuts the socket down.
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                try:
                    self._handle(client)
                except Exception:  # never let one bad client end the health endpoint
                    self.log.debug("health request failed", exc_info=True)

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(self.client_timeout)
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = client.recv(4096)
            if not chunk:
                return
            data += chunk
            if len(data) > 16384:
                self._send(client, 400, {"error": "request headers too large"}, head_only=False)
                return
        request_line = data.split(b"\n", 1)[0].decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._send(client, 400, {"error": "not an HTTP request"}, head_only=False)
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            self._send(client, 405, {"error": "only GET and HEAD"}, head_only=False, extra="Allow: GET, HEAD\r\n")
            return
        path = target.split("?", 1)[0].rstrip("/") or "/"
        head_only = method == "HEAD"
        try:
            if path == "/health":
                doc = self.document()
                self._send(client, 200 if doc["status"] != "error" else 503, doc, head_only)
            elif path == "/health/live":
                alive = self.live()
                self._send(client, 200 if alive else 503, {"status": "alive" if alive else "stalled"}, head_only)
            elif path == "/health/ready":
                doc = self.document()
                self._send(client, 200 if doc["status"] == "ok" else 503, {"status": doc["status"]}, head_only)
            elif path == "/metrics":
                self._write(client, 200, self.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8",
                            head_only)
            else:
                self._send(client, 404, {"error": f"no such endpoint {path}; try /health, /health/live, "
                                                  "/health/ready or /metrics"}, head_only)
        except Exception as exc:  # a probe must get an answer, never a hang
            self.log.exception("health endpoint failed")
            self._send(client, 500, {"status": "error", "error": f"{type(exc).__name__}: {exc}"}, head_only)

    def _send(self, client: socket.socket, status: int, document: object, head_only: bool, extra: str = "") -> None:
        self._write(client, status, json.dumps(document, indent=2).encode() + b"\n", "application/json",
                    head_only, extra)

    # Everything served is masked as a whole, the last net under text from elsewhere (an
    # error body echoing the token, a label) that an owner forgot to mask.

    @staticmethod
    def _write(client: socket.socket, status: int, body: bytes, content_type: str, head_only: bool,
               extra: str = "") -> None:
        body = mask_secrets(body.decode("utf-8", "replace")).encode()
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n{extra}\r\n")
        client.sendall(head.encode("latin-1") + (b"" if head_only else body))
