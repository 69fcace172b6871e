"""A minimal RFC 6455 websocket client on the standard library.

Just what talking to belaUI needs: the opening handshake (with the Sec-WebSocket-Accept
check), masked text frames out, text/binary messages in (fragmented or not), ping → pong,
and the close handshake. No extensions, no subprotocols. The agent's memory budget rules
out a dependency for this.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from urllib.parse import urlsplit

from belabox_metrics.tlsconfig import TlsSettings, client_context, host_name
from belabox_metrics.validation import ConfigError

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 4 * 1024 * 1024
MAX_HEADER = 16 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketError(Exception):
    """Protocol or handshake failure (message safe to log: no payloads)."""


class WebSocketClosed(WebSocketError):
    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed by peer (code {code})" + (f": {reason}" if reason else ""))
        self.code = code


def accept_key(key: str) -> str:
    return base64.b64encode(sha1((key + GUID).encode("ascii"))).decode("ascii")


def mask_payload(data: bytes, mask: bytes) -> bytes:
    """XOR with the repeating 4-byte mask, as one big-integer operation (fast in CPython)."""
    n = len(data)
    if n == 0:
        return data
    repeated = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients)."""
    mask = os.urandom(4) if mask is None else mask
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + mask_payload(payload, mask)


def parse_frame(buf: bytearray) -> tuple[bool, int, bytes] | None:
    """Take one complete frame off the front of ``buf``: (fin, opcode, payload) or None."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70:
        raise WebSocketError("reserved bits set (no extension was negotiated)")
    fin, opcode = bool(b0 & 0x80), b0 & 0x0F
    masked, length = bool(b1 & 0x80), b1 & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length = struct.unpack(">H", bytes(buf[2:4]))[0]
        pos = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length = struct.unpack(">Q", bytes(buf[2:10]))[0]
        pos = 10
    if length > MAX_MESSAGE:
        raise WebSocketError(f"frame of {length} bytes is over the {MAX_MESSAGE}-byte limit")
    mask = b""
    if masked:
        if len(buf) < pos + 4:
            return None
        mask = bytes(buf[pos:pos + 4])
        pos += 4
    if len(buf) < pos + length:
        return None
    payload = bytes(buf[pos:pos + length])
    del buf[:pos + length]
    if masked:
        payload = mask_payload(payload, mask)
    return fin, opcode, payload


class WebSocket:
    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        self.buf = bytearray(leftover)
        self.fragments: list[bytes] | None = None
        self.fragment_size = 0
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float, tls: TlsSettings | None = None) -> WebSocket:
        """Open ``url``; for wss://, verified with ``tls`` (a private CA, a client certificate,
        the name to check) or the system CAs."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise WebSocketError("URL must be ws:// or wss://")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        try:
            context = client_context(tls) if secure else None
        except ConfigError as exc:  # check-config names it too; here the source reports it
            raise WebSocketError(str(exc)) from None
        sock = socket.create_connection((host_name(parts.hostname), port), timeout=timeout)  # type: ignore[arg-type]
        try:
            if context is not None:
                server_name = (tls.server_name if tls is not None else None) or parts.hostname
                sock = context.wrap_socket(sock, server_hostname=host_name(server_name))
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            if parts.port:
                host += f":{parts.port}"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nUser-Agent: belabox-metrics\r\n\r\n"
            )
            sock.sendall(request.encode("ascii"))
            head, leftover = _read_head(sock)
            _check_handshake(head, key)
            return cls(sock, leftover)
        except BaseException:
            sock.close()
            raise

    # -- sending -----------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        self.sock.sendall(encode_frame(OP_TEXT, text.encode("utf-8")))

    def _send_control(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(encode_frame(opcode, payload[:125]))

    def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.settimeout(1.0)
                self._send_control(OP_CLOSE, struct.pack(">H", code))
            except OSError:
                pass
        self.sock.close()

    # -- receiving ---------------------------------------------------------------------
    def recv(self, timeout: float) -> str | None:
        """The next complete text message, or None if none arrived within ``timeout``.

        Pings are answered and pongs skipped on the way. A close from the peer is answered
        and raised as WebSocketClosed; EOF without a close is a WebSocketError.
        """
        deadline = time.monotonic() + timeout
        while True:
            message = self._next_message()
            if message is not None:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise WebSocketError("connection closed without a close frame")
            self.buf += data

    def _next_message(self) -> str | None:
        while True:
            frame = parse_frame(self.buf)
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode >= 0x8:
                if not fin or len(payload) > 125:
                    raise WebSocketError("fragmented or oversized control frame")
                if opcode == OP_PING:
                    self._send_control(OP_PONG, payload)
                elif opcode == OP_CLOSE:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                    reason = payload[2:].decode("utf-8", "replace")[:60]
                    self.close(code if code and code not in (1005, 1006, 1015) else 1000)
                    raise WebSocketClosed(code, reason)
                continue  # pong or an unknown control frame
            if opcode in (OP_TEXT, OP_BINARY):
                if self.fragments is not None:
                    raise WebSocketError("new message inside a fragmented one")
                if fin:
                    return payload.decode("utf-8", "replace")
                self.fragments, self.fragment_size = [payload], len(payload)
            elif opcode == OP_CONT:
                if self.fragments is None:
                    raise WebSocketError("continuation frame without a message")
                self.fragments.append(payload)
                self.fragment_size += len(payload)
                if self.fragment_size > MAX_MESSAGE:
                    raise WebSocketError("fragmented message over the size limit")
                if fin:
                    whole = b"".join(self.fragments)
                    self.fragments = None
                    return whole.decode("utf-8", "replace")
            else:
                raise WebSocketError(f"unknown opcode {opcode}")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise WebSocketError("connection closed during the handshake")
        data += chunk
        if len(data) > MAX_HEADER:
            raise WebSocketError("handshake answer too large")
    head, _, leftover = data.partition(b"\r\n\r\n")
    return head, leftover


def _check_handshake(head: bytes, key: str) -> None:
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        code = status[1] if len(status) > 1 else "?"
        raise WebSocketError(f"handshake refused: HTTP {code} (is this a websocket URL?)")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise WebSocketError("handshake answer lacks `Upgrade: websocket`")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise WebSocketError("handshake answer has a wrong Sec-WebSocket-Accept")


def sha1(data: bytes) -> bytes:
    """SHA-1 (FIPS 180-4), for the one handshake hash per connection. hashlib would load
    OpenSSL's libcrypto: 3.5 MB of RSS in an agent whose budget is 25 MB. Not for security:
    the accept key only proves the server speaks WebSocket."""
    h0, h1, h2, h3, h4 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
    length = len(data) * 8
    data += b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack(">Q", length)
    mask = 0xFFFFFFFF
    for offset in range(0, len(data), 64):
        w = list(struct.unpack(">16I", data[offset:offset + 64]))
        for i in range(16, 80):
            x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w.append(((x << 1) | (x >> 31)) & mask)
        a, b, c, d, e = h0, h1, h2, h3, h4
        for i in range(80):
            if i < 20:
                f, k = (b & c) | (~b & d), 0x5A827999
            elif i < 40:
                f, k = b ^ c ^ d, 0x6ED9EBA1
            elif i < 60:
                f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
            else:
                f, k = b ^ c ^ d, 0xCA62C1D6
            a, b, c, d, e = (((a << 5) | (a >> 27)) + f + e + k + w[i]) & mask, a, ((b << 30) | (b >> 2)) & mask, c, d
        h0, h1, h2, h3, h4 = ((h + v) & mask for h, v in zip((h0, h1, h2, h3, h4), (a, b, c, d, e), strict=True))
    return struct.pack(">5I", h0, h1, h2, h3, h4)
