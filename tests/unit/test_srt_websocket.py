"""The stdlib RFC 6455 client against a raw-socket server that sends what aiohttp would not
make easy: fragmented messages, pings between fragments, a close with a code."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading

import pytest

from belabox_metrics.collectors.srt.websocket import (
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WebSocket,
    WebSocketClosed,
    WebSocketError,
    accept_key,
    encode_frame,
    mask_payload,
    parse_frame,
)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def test_accept_key_matches_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_client_frames_are_masked_and_round_trip() -> None:
    payload = b'{"keepalive":null}' * 20
    frame = bytearray(encode_frame(OP_TEXT, payload, mask=b"\x01\x02\x03\x04"))
    assert frame[1] & 0x80  # mask bit
    assert payload not in bytes(frame)
    assert parse_frame(frame) == (True, OP_TEXT, payload)
    assert frame == bytearray()
    assert mask_payload(mask_payload(b"abcdef", b"wxyz"), b"wxyz") == b"abcdef"
    big = bytearray(encode_frame(OP_TEXT, b"x" * 70000))
    assert parse_frame(big[:5]) is None  # incomplete header waits
    assert parse_frame(big) == (True, OP_TEXT, b"x" * 70000)


def run_server(script: list[bytes], received: list[bytes]) -> tuple[int, threading.Thread]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = int(listener.getsockname()[1])

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        with conn, listener:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = next(line.split(":", 1)[1].strip() for line in head.decode().split("\r\n")
                       if line.lower().startswith("sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            for chunk in script:
                conn.sendall(chunk)
            buf = bytearray()
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while (frame := parse_frame(buf)) is not None:
                    received.append(bytes([frame[1]]) + frame[2])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_fragments_ping_and_close() -> None:
    script = [
        server_frame(OP_TEXT, b'{"sensors":', fin=False),
        server_frame(OP_PING, b"are-you-there"),  # control frames may interleave
        server_frame(OP_CONT, b'{"SoC temperature":', fin=False),
        server_frame(OP_CONT, '"52.7 °C"}}'.encode()),
        server_frame(OP_TEXT, b'{"netif":{}}'),
        server_frame(OP_CLOSE, struct.pack(">H", 1001) + b"restart"),
    ]
    received: list[bytes] = []
    port, thread = run_server(script, received)
    ws = WebSocket.connect(f"ws://127.0.0.1:{port}/", timeout=2)
    assert ws.recv(2) == '{"sensors":{"SoC temperature":"52.7 °C"}}'
    assert ws.recv(2) == '{"netif":{}}'
    with pytest.raises(WebSocketClosed, match="1001"):
        ws.recv(2)
    thread.join(timeout=5)
    assert bytes([OP_PONG]) + b"are-you-there" in received
    assert received[-1][:1] == bytes([OP_CLOSE])  # the close was answered


def test_handshake_refused_and_timeouts() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = int(listener.getsockname()[1])

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(WebSocketError, match="HTTP 404"):
        WebSocket.connect(f"ws://127.0.0.1:{port}/", timeout=2)

    port, thread = run_server([], [])
    ws = WebSocket.connect(f"ws://127.0.0.1:{port}/", timeout=2)
    assert ws.recv(0.1) is None  # nothing yet: None, not an error
    ws.close()
    thread.join(timeout=5)


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000])
def test_pure_python_sha1_matches_hashlib(size: int) -> None:
    import hashlib
    import os

    from belabox_metrics.collectors.srt.websocket import sha1

    data = os.urandom(size)
    assert sha1(data) == hashlib.sha1(data).digest()
