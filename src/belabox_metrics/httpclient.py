"""HTTP/1.1 on the standard library's ``http.client``, with what the agent needs around it.

``http.client`` is the well-kept part: status lines, headers, chunked bodies with trailers,
``Connection: close``, HTTP/1.0 answers, CONNECT tunnels. Around it, this module adds:

- one deadline for a whole exchange (``http.client`` times each socket operation only, so a
  server trickling a byte a second could hold a request for ever);
- every interim 1xx answer skipped (``http.client`` skips only ``100 Continue``: a ``103
  Early Hints`` from a proxy would be taken for the final answer and leave the real one in
  the buffer for the next request to read), a 101 refused;
- a body bounded by ``max_body``, and a short one (the peer closed before Content-Length)
  an error, not a truncated success;
- a kept-alive connection checked before reuse: if the server closed it, or sent anything
  unasked (a stray answer the next request would take for its own), it is replaced;
- proxies from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` as ``urllib.request`` reads
  them (``getproxies_environment`` / ``proxy_bypass_environment``), or configured, with
  CONNECT for https and the credentials sent as ``Proxy-Authorization`` (masked in logs);
- TLS from ``tlsconfig`` (a private CA, a client certificate, the name to verify).

Any failure is ``HttpError`` (an ``OSError``) with a ``kind`` and a message without secrets,
and the connection is closed: an answer that could not be read is never an answer.

Memory: ``import http.client`` imports ``ssl`` (~5 MB of RSS with OpenSSL). Where nothing
needs TLS yet, it is imported with ``ssl`` masked, so a plain-http agent never loads OpenSSL
(``http.client.HTTPSConnection`` is then absent; this module wraps TLS itself).
"""

from __future__ import annotations

import base64
import io
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from belabox_metrics.logs import register_secret
from belabox_metrics.tlsconfig import TlsSettings, client_context, host_name
from belabox_metrics.validation import ConfigError

if TYPE_CHECKING:
    import ssl

DEFAULT_MAX_BODY = 1 << 20
NO_PROXY_VALUES = ("none", "direct")


@dataclass(frozen=True)
class Response:
    status: int
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class HttpError(OSError):
    """No usable HTTP answer. ``kind``: timeout, refused, reset, bad-answer, too-large, tls,
    proxy, network, url."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return str(self.args[0])


# -- http.client, without OpenSSL when nothing needs it ---------------------------------------

def _http_client(tls: bool) -> Any:
    if "http.client" in sys.modules:
        return sys.modules["http.client"]
    if tls or "ssl" in sys.modules:
        import http.client
        return http.client
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` fails inside http.client
    try:
        import http.client
    finally:
        del sys.modules["ssl"]
    return http.client


_classes: dict[str, Any] = {}


def _connection_class() -> Any:
    """http.client's HTTPConnection and HTTPResponse, adapted (built on first use, so that
    importing this module costs nothing)."""
    if "connection" in _classes:
        return _classes["connection"]
    client = _http_client(False)

    class DeadlineIO(io.RawIOBase):
        """The socket, read with whatever time is left until the exchange's deadline."""

        def __init__(self, sock: socket.socket, deadline: Callable[[], float], keep: Any) -> None:
            super().__init__()
            self._sock = sock
            self._deadline = deadline
            # http.client's own reader on the socket, held open and closed with this one: it
            # keeps the socket alive after HTTPConnection.close() until the body is read.
            self._keep = keep
            self.eof = False

        def close(self) -> None:
            if not self.closed:
                self._keep.close()
            super().close()

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            left = self._deadline() - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            self._sock.settimeout(left)
            count = self._sock.recv_into(buffer)
            self.eof = self.eof or count == 0
            return count

    class Answer(client.HTTPResponse):  # type: ignore[misc,name-defined]
        fp: Any
        def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                     url: str | None = None, *, deadline: Callable[[], float]) -> None:
            super().__init__(sock, debuglevel, method, url)
            # http.client's reader replaced by one that keeps the deadline.
            self.fp = io.BufferedReader(DeadlineIO(sock, deadline, self.fp), 65536)

        def begin(self) -> None:
            super().begin()
            if self.fp.raw.eof:
                # http.client takes the end of the stream for the end of the header section.
                raise HttpError("bad-answer", "answer cut short in its header section")

        def _read_status(self) -> tuple[str, int, str]:
            version, status, reason = super()._read_status()
            if 100 < status < 200 and status != 101:
                # RFC 9110 15.2: interim answers come before the final one. begin() skips a
                # 100 and its header block: present any other 1xx to it as a 100.
                return version, 100, reason
            return version, status, reason

    class Connection(client.HTTPConnection):  # type: ignore[misc,name-defined]
        sock: Any
        def __init__(self, host: str, port: int, *, tls: Callable[[], ssl.SSLContext] | None,
                     server_name: str | None) -> None:
            super().__init__(host, port)
            self.tls = tls
            self.server_name = server_name
            self.deadline = 0.0
            self.response_class = self._answer
            self._create_connection = self._open

        @staticmethod
        def _open(address: tuple[str, int], timeout: float | None, source: tuple[str, int] | None) -> socket.socket:
            return socket.create_connection((host_name(address[0]), address[1]), timeout, source)  # type: ignore[arg-type]

        def _answer(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                    url: str | None = None) -> Any:
            return Answer(sock, debuglevel, method, url, deadline=lambda: self.deadline)

        def connect(self) -> None:
            super().connect()  # TCP, and the CONNECT tunnel through a proxy
            if self.tls is not None:
                name = None if self.server_name is None else host_name(self.server_name)
                self.sock = self.tls().wrap_socket(self.sock, server_hostname=name)

        def idle_and_open(self) -> bool:
            """The kept-alive connection is still open and nothing unasked arrived on it."""
            sock = self.sock
            if sock is None:
                return False
            try:
                sock.setblocking(False)
                try:
                    _ = sock.recv(1) if self.tls is not None else sock.recv(1, socket.MSG_PEEK)
                finally:
                    sock.setblocking(True)
            except BlockingIOError:
                return True
            except OSError as exc:
                # TLS: records that carry no data (a TLS 1.3 session ticket) read as "want read".
                return type(exc).__name__ == "SSLWantReadError"
            return False  # closed by the server (b""), or bytes nobody asked for

    _classes["connection"] = Connection
    _classes["exception"] = client.HTTPException
    return Connection


# -- proxies ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None  # "Basic ..." from user:password in the URL

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """``http://[user:password@]host[:port]`` (no scheme: http, as urllib reads it). Raises
    ValueError with a message that carries no credentials."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"proxy scheme {parts.scheme}:// is not supported (only http://, which "
                         "tunnels https with CONNECT)")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError("proxy URL has an invalid port") from None
    if not host:
        raise ValueError("proxy URL has no host")
    authorization = None
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        register_secret(password)
        register_secret(token)
        authorization = f"Basic {token}"
    return Proxy(host, port or 80, authorization)


def environment_proxies(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``urllib.request.getproxies_environment``, over ``environ``: ``*_proxy`` variables,
    lower case winning over upper case, an empty lower-case one removing the scheme, and
    HTTP_PROXY ignored in a CGI environment (REQUEST_METHOD set)."""
    environ = os.environ if environ is None else environ
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        name = name.lower()
        if value and name[-6:] == "_proxy":
            proxies[name[:-6]] = value
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
    for name, value in environ.items():
        if name[-6:] == "_proxy":
            name = name.lower()
            if value:
                proxies[name[:-6]] = value
            else:
                proxies.pop(name[:-6], None)
    return proxies


def bypass_proxy(host: str, no_proxy: str | None) -> bool:
    """``urllib.request.proxy_bypass_environment``: ``host`` (``name[:port]``) matches an
    entry of NO_PROXY exactly or as a domain suffix (leading dots ignored), or it is ``*``."""
    if no_proxy is None:
        return False
    if no_proxy == "*":
        return True
    host = host.lower()
    hostonly = host
    if ":" in host and not host.startswith("["):
        name, _, port = host.rpartition(":")
        if port.isdigit():
            hostonly = name
    for entry in no_proxy.split(","):
        entry = entry.strip().lstrip(".").lower()
        if not entry:
            continue
        if hostonly == entry or host == entry:
            return True
        if hostonly.endswith("." + entry) or host.endswith("." + entry):
            return True
    return False


def choose_proxy(scheme: str, netloc_host: str, configured: str | None,
                 environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy for a request to ``scheme://netloc_host`` (``host[:port]``): ``configured``
    (remote.proxy; ``none`` for no proxy) or the environment's, unless NO_PROXY names the host."""
    proxies = environment_proxies(environ)
    if configured is not None and configured.strip().lower() in NO_PROXY_VALUES:
        return None
    url = configured if configured is not None else proxies.get(scheme)
    if not url or bypass_proxy(netloc_host, proxies.get("no")):
        return None
    return parse_proxy(url)


# -- the client -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    netloc: str  # host[:port] as written (NO_PROXY matching, absolute-form through a proxy)

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError("url", f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        try:
            port = parts.port
        except ValueError:
            raise HttpError("url", f"invalid port in {parts.scheme}://{parts.hostname}") from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rpartition("@")[2]
        return cls(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path, netloc)


@dataclass
class _Slot:
    conn: Any
    proxy: Proxy | None


class Client:
    """Keeps one connection alive per (scheme, host, port); not thread-safe (one per thread).

    ``proxy``: a proxy URL for every request (remote.proxy), ``none`` for none, or None to
    follow the environment. ``tls``: the CA, client certificate and server name for https.
    """

    def __init__(self, *, timeout: float = 10.0, max_body: int = DEFAULT_MAX_BODY,
                 tls: TlsSettings | None = None, proxy: str | None = None,
                 environ: Mapping[str, str] | None = None, use_environment_proxies: bool = True) -> None:
        self.timeout = timeout
        self.max_body = max_body
        self.tls = tls
        self.proxy = proxy
        self.environ = environ
        self.use_environment_proxies = use_environment_proxies
        self._slots: dict[tuple[str, str, int], _Slot] = {}
        self._context: ssl.SSLContext | None = None
        self.connections_opened = 0

    def ssl_context(self) -> ssl.SSLContext:
        """The client's TLS context (built once; ConfigError naming the key on a bad file)."""
        if self._context is None:
            self._context = client_context(self.tls)
        return self._context

    def _slot(self, target: Target) -> _Slot:
        key = (target.scheme, target.host, target.port)
        slot = self._slots.get(key)
        if slot is None:
            tls = target.scheme == "https"
            _http_client(tls)
            if self.proxy is None and not self.use_environment_proxies:
                proxy = None
            else:
                try:
                    proxy = choose_proxy(target.scheme, target.netloc, self.proxy, self.environ)
                except ValueError as exc:
                    raise HttpError("proxy", f"proxy for {target.scheme}:// unusable: {exc}") from None
            server_name = (self.tls.server_name if self.tls is not None else None) or target.host
            connection = _connection_class()
            if proxy is None:
                conn = connection(target.host, target.port, tls=self.ssl_context if tls else None,
                                  server_name=server_name)
            else:
                conn = connection(proxy.host, proxy.port, tls=self.ssl_context if tls else None,
                                  server_name=server_name)
                if tls:
                    headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
                    conn.set_tunnel(target.host, target.port, headers)
            slot = self._slots[key] = _Slot(conn, proxy)
        return slot

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None, body: bytes = b"",
                *, timeout: float | None = None, max_body: int | None = None) -> Response:
        target = Target.parse(url)
        slot = self._slot(target)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        limit = self.max_body if max_body is None else max_body
        all_headers = dict(headers or {})
        path = target.path
        if slot.proxy is not None and target.scheme == "http":
            path = f"http://{target.netloc}{target.path}"  # absolute form, to the proxy
            if slot.proxy.authorization:
                all_headers["Proxy-Authorization"] = slot.proxy.authorization
        conn = slot.conn
        if conn.sock is not None and not conn.idle_and_open():
            conn.close()
        reused = conn.sock is not None
        try:
            try:
                return self._exchange(conn, method, path, all_headers, body, deadline, limit)
            except _Stale:
                conn.close()
                if not reused:
                    raise HttpError("reset", "connection closed by the server without an answer") from None
                # A kept-alive connection the server closed as we reused it: once more on a
                # fresh one (safe for uploads: the destinations deduplicate).
                try:
                    return self._exchange(conn, method, path, all_headers, body, deadline, limit)
                except _Stale:
                    raise HttpError("reset", "connection closed by the server without an answer") from None
        except HttpError:
            conn.close()
            raise
        except BaseException as exc:
            conn.close()
            error = _describe(exc, slot.proxy, self.tls.key if self.tls is not None else None)
            if error is None:
                raise
            raise error from None

    def _exchange(self, conn: Any, method: str, path: str, headers: Mapping[str, str], body: bytes,
                  deadline: float, limit: int) -> Response:
        conn.deadline = deadline
        if conn.sock is None:
            conn.timeout = _left(deadline)
            conn.connect()
            self.connections_opened += 1
            fresh = True
        else:
            conn.sock.settimeout(_left(deadline))
            fresh = False
        try:
            conn.request(method, path, body=body if body or method in ("POST", "PUT") else None,
                         headers=dict(headers))  # Host, Content-Length and Accept-Encoding added
            answer = conn.getresponse()
        except (ConnectionResetError, BrokenPipeError) as exc:
            # RemoteDisconnected (no status line at all) is a ConnectionResetError.
            if fresh:
                raise
            raise _Stale() from exc
        if answer.status == 101:
            raise HttpError("bad-answer", "unexpected 101 Switching Protocols (no upgrade was asked for)")
        expected = answer.length  # None: chunked, or to the connection's close
        if expected is not None and expected > limit:
            raise HttpError("too-large", f"answer of {expected} bytes is larger than {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            piece = answer.read(min(65536, limit + 1 - total))
            if not piece:
                break
            total += len(piece)
            if total > limit:
                raise HttpError("too-large", f"answer larger than {limit} bytes")
            chunks.append(piece)
        if expected is not None and total != expected:
            raise HttpError("bad-answer", f"answer cut short: {total} of {expected} bytes, then the "
                                          "connection closed")
        if answer.will_close:
            conn.close()
        headers_out = {name.lower(): value for name, value in answer.getheaders()}
        return Response(answer.status, answer.reason, headers_out, b"".join(chunks))

    def close(self) -> None:
        for slot in self._slots.values():
            slot.conn.close()
        self._slots.clear()


class _Stale(Exception):
    """A reused connection was found closed before any answer."""


def _describe(exc: BaseException, proxy: Proxy | None, tls_key: str | None = None) -> HttpError | None:
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, ConfigError):
        return HttpError("tls", text)
    if isinstance(exc, TimeoutError):
        return HttpError("timeout", f"timed out: {text or 'no answer in time'}")
    if isinstance(exc, ConnectionRefusedError):
        where = f" by the proxy {proxy.display}" if proxy is not None else ""
        return HttpError("refused", f"{exc.strerror or 'Connection refused'}{where}")
    if name == "SSLCertVerificationError":
        why = getattr(exc, "verify_message", None) or text
        hint = (f" (set {tls_key}.ca_file to the CA that signed the server's certificate, or "
                f"{tls_key}.server_name to the name it carries)") if tls_key else ""
        return HttpError("tls", f"certificate verify failed: {why}{hint}")
    if name.startswith("SSL") or name == "CertificateError":
        return HttpError("tls", f"TLS handshake failed: {getattr(exc, 'reason', None) or text}")
    if text.startswith("Tunnel connection failed"):
        return HttpError("proxy", f"proxy {proxy.display if proxy else ''}: {text}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return HttpError("reset", f"connection reset or closed before a complete answer ({name})")
    exception = _classes.get("exception")
    if exception is not None and isinstance(exc, exception):
        return HttpError("bad-answer", f"not a valid HTTP answer ({name}: {text[:80]!r})")
    if isinstance(exc, socket.gaierror):
        return HttpError("network", f"name resolution failed: {exc.strerror or text}")
    if isinstance(exc, OSError):
        return HttpError("network", f"network error: {exc.strerror or text}")
    if isinstance(exc, (ValueError, UnicodeError)):
        return HttpError("bad-answer", f"not a valid HTTP answer ({name})")
    return None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def request(url: str, method: str = "GET", headers: Mapping[str, str] | None = None, body: bytes = b"",
            *, timeout: float = 10.0, max_body: int = DEFAULT_MAX_BODY, tls: TlsSettings | None = None,
            use_environment_proxies: bool = False) -> Response:
    """One request on a fresh connection, closed after."""
    client = Client(timeout=timeout, max_body=max_body, tls=tls, use_environment_proxies=use_environment_proxies)
    try:
        return client.request(method, url, {"Connection": "close", **(headers or {})}, body)
    finally:
        client.close()
