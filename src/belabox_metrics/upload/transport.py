"""HTTP transport as a seam: ``Transport.post(url, body, headers) -> Response``.

The real one is the standard library's http.client with one kept-alive connection per
host (no extra dependency: the agent's memory budget is 25 MB). Tests substitute scripted
transports; integration tests use the real one against real servers on loopback.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


class TransportError(Exception):
    """No HTTP answer at all: refused, reset, timed out, DNS failure."""


class Transport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...

    def close(self) -> None: ...


class HttpTransport:
    """http.client with a persistent connection per (scheme, host, port)."""

    def __init__(self, timeout: float = 10.0, max_response_bytes: int = 1 << 20) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def _connection(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        conn = self._connections.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            self._connections[key] = conn
        return conn

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        all_headers = {"Content-Length": str(len(body)), **headers}
        # A kept-alive connection may have been closed by the server while idle; that shows
        # up as a reset on first use. Retrying once on a fresh connection is safe even if
        # the server did process the request: every destination deduplicates by sample key.
        for attempt in (1, 2):
            conn = self._connection(scheme, host, port)
            try:
                conn.request("POST", path, body=body, headers=all_headers)
                raw = conn.getresponse()
                data = raw.read(self.max_response_bytes + 1)
                response = Response(raw.status, dict(raw.getheaders()), data[: self.max_response_bytes])
                if raw.will_close or len(data) > self.max_response_bytes:
                    self._drop(scheme, host, port)
                return response
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(scheme, host, port)
                if attempt == 2:
                    raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(scheme, host, port)
                kind = "timeout" if isinstance(exc, socket.timeout | TimeoutError) else type(exc).__name__
                raise TransportError(f"{kind}: {exc}") from exc
        raise TransportError("unreachable")  # pragma: no cover

    def _drop(self, scheme: str, host: str, port: int) -> None:
        conn = self._connections.pop((scheme, host, port), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
