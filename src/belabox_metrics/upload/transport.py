"""HTTP transport as a seam: ``Transport.post(url, body, headers) -> Response``.

The real one, ``HttpTransport``, is ``belabox_metrics.httpclient`` (the standard library's
``http.client`` with a deadline per request, 1xx skipped, bounded bodies, proxies and TLS
options): one connection kept alive per (scheme, host, port). A ``Response`` is always the
answer to that same request; anything unreadable is a ``TransportError``, never an answer.
Tests substitute scripted transports; integration tests use the real one against real
servers on loopback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from belabox_metrics.httpclient import Client, HttpError
from belabox_metrics.tlsconfig import TlsSettings


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
    """No HTTP answer at all: refused, reset, timed out, DNS failure, an answer that could
    not be read. ``kind`` as httpclient.HttpError's."""

    def __init__(self, message: str, kind: str = "network") -> None:
        super().__init__(message)
        self.kind = kind


class Transport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...

    def close(self) -> None: ...


class HttpTransport:
    """A persistent connection per (scheme, host, port). ``proxy``: remote.proxy (None: the
    environment's HTTPS_PROXY / HTTP_PROXY / NO_PROXY); ``tls``: remote.tls."""

    def __init__(self, timeout: float = 10.0, max_response_bytes: int = 1 << 20, *,
                 tls: TlsSettings | None = None, proxy: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.client = Client(timeout=timeout, max_body=max_response_bytes, tls=tls, proxy=proxy, environ=environ)

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> Response:
        try:
            answer = self.client.request(method, url, headers, body)
        except HttpError as exc:
            raise TransportError(f"{exc.kind}: {exc}", exc.kind) from exc
        return Response(answer.status, dict(answer.headers), answer.body)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        return self.request("POST", url, headers, body)

    def get(self, url: str, headers: Mapping[str, str]) -> Response:
        return self.request("GET", url, headers)

    def close(self) -> None:
        self.client.close()
