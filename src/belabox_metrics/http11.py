"""A small HTTP/1.1 client on a plain socket: what the agent needs and nothing more.

Why not http.client or urllib: importing either loads the ssl module and OpenSSL (~6-8 MB of
RSS), and the agent's whole budget is 25 MB. Here ``ssl`` is imported only when an https://
URL is actually used. Supported: keep-alive, Content-Length and chunked bodies, a body read
to connection close, one deadline for the whole exchange (a server trickling a byte a second
cannot hold a request past it), and a cap on the response size.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024


class HttpError(OSError):
    """The server's answer was not valid HTTP (or too large)."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Target:
    tls: bool
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        tls = parts.scheme == "https"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(tls, parts.hostname, parts.port or (443 if tls else 80), path)


class Connection:
    """One persistent connection to one host."""

    def __init__(self, host: str, port: int, *, tls: bool = False, timeout: float = 10.0) -> None:
        self.host, self.port, self.tls, self.timeout = host, port, tls, timeout
        self.sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self._buffer = b""

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=_left(deadline))
        if self.tls:
            import ssl  # only here: ~6 MB of RSS that a plain-http agent never pays

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b"",
                *, timeout: float | None = None, max_body: int = 1 << 20) -> Response:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        reused = self.sock is not None
        try:
            return self._exchange(method, path, headers or {}, body, deadline, max_body)
        except (ConnectionResetError, BrokenPipeError, HttpError) as exc:
            self.close()
            # A kept-alive connection the server closed while idle fails on first use: once
            # more on a fresh one. (Safe for uploads too: destinations deduplicate.)
            stale = not isinstance(exc, HttpError) or "closed by the server" in str(exc)
            if reused and stale:
                return self._exchange(method, path, headers or {}, body, deadline, max_body)
            raise
        except BaseException:
            self.close()
            raise

    def _exchange(self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float,
                  max_body: int) -> Response:
        if self.sock is None:
            self.sock = self._connect(deadline)
            self._buffer = b""
        host = self.host if self.port in (80, 443) else f"{self.host}:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            host = f"[{self.host}]" + ("" if self.port in (80, 443) else f":{self.port}")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.sock.settimeout(_left(deadline))
        self.sock.sendall(payload)
        head = self._read_until(b"\r\n\r\n", deadline, MAX_HEADER_BYTES)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP status line: {status_line[:80]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        response_headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                response_headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif response_headers.get("transfer-encoding", "").lower() == "chunked":
            data = self._read_chunked(deadline, max_body)
        elif "content-length" in response_headers:
            length = int(response_headers["content-length"])
            if length > max_body:
                raise HttpError(f"answer of {length} bytes is larger than {max_body}")
            data = self._read_exactly(length, deadline)
        else:
            data = self._read_to_close(deadline, max_body)
            response_headers["connection"] = "close"
        if response_headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            self.close()
        return Response(status, reason, response_headers, data)

    # -- reading -------------------------------------------------------------------------
    def _recv(self, deadline: float) -> bytes:
        assert self.sock is not None
        self.sock.settimeout(_left(deadline))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed by the server")
        return chunk

    def _read_until(self, marker: bytes, deadline: float, limit: int) -> bytes:
        while marker not in self._buffer:
            if len(self._buffer) > limit:
                raise HttpError("answer headers too large")
            self._buffer += self._recv(deadline)
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._recv(deadline)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_chunked(self, deadline: float, max_body: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self._read_until(b"\r\n", deadline, 1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise HttpError(f"bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                self._read_until(b"\r\n", deadline, MAX_HEADER_BYTES)  # trailers end
                return b"".join(chunks)
            total += size
            if total > max_body:
                raise HttpError(f"answer larger than {max_body} bytes")
            chunks.append(self._read_exactly(size, deadline))
            self._read_exactly(2, deadline)

    def _read_to_close(self, deadline: float, max_body: int) -> bytes:
        data = self._buffer
        self._buffer = b""
        while True:
            try:
                data += self._recv(deadline)
            except HttpError:
                return data
            if len(data) > max_body:
                raise HttpError(f"answer larger than {max_body} bytes")


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def request(url: str, method: str = "GET", headers: Mapping[str, str] | None = None, body: bytes = b"",
            *, timeout: float = 10.0, max_body: int = 1 << 20) -> Response:
    """One request on a fresh connection."""
    target = Target.parse(url)
    conn = Connection(target.host, target.port, tls=target.tls, timeout=timeout)
    try:
        return conn.request(method, target.path, {"Connection": "close", **(headers or {})}, body,
                            max_body=max_body)
    finally:
        conn.close()
