"""HTTP transport as a seam: ``Transport.post(url, body, headers) -> Response``.

The real one keeps one connection alive per host, on belabox_metrics.http11 (no extra
dependency, and no OpenSSL unless the URL is https: the agent's memory budget is 25 MB). Tests substitute scripted
transports; integration tests use the real one against real servers on loopback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from belabox_metrics.http11 import Connection, Target


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
    """A persistent connection per (scheme, host, port), on the agent's own small HTTP/1.1
    client (http.client would load OpenSSL even for plain http)."""

    def __init__(self, timeout: float = 10.0, max_response_bytes: int = 1 << 20) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._connections: dict[tuple[bool, str, int], Connection] = {}

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        try:
            target = Target.parse(url)
        except ValueError as exc:
            raise TransportError(str(exc)) from exc
        key = (target.tls, target.host, target.port)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._connections[key] = Connection(target.host, target.port, tls=target.tls,
                                                       timeout=self.timeout)
        try:
            answer = conn.request("POST", target.path, headers, body, max_body=self.max_response_bytes)
        except (OSError, ValueError) as exc:
            conn.close()
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise TransportError(f"{kind}: {exc}") from exc
        return Response(answer.status, dict(answer.headers), answer.body)

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
