"""The receiver's HTTP side: aiohttp app, request handling, and the server lifecycle.

Every answer is JSON, client mistakes are 4xx with a message naming the field, and a 5xx
only ever means the receiver itself is in trouble (its database, a bug) - a sender may
retry a 5xx but must never retry a 4xx unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from belabox_metrics.clock import Clock, SystemClock
from belabox_metrics.receiver.storage import SampleStore
from belabox_metrics.receiver.validate import (
    Batch,
    BodyTooLarge,
    PayloadError,
    gunzip_limited,
    parse_upload,
)

log = logging.getLogger("belabox_metrics.receiver")

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# What uploads may hold at once (see UploadLimits): raw body bytes being received or
# waiting, by default room for four maximal bodies, and bodies being decoded and stored.
BUFFERED_BODIES_DEFAULT = 4
DEFAULT_MAX_CONCURRENT_DECODES = 2
BUSY_RETRY_AFTER_S = 1
# How long an upload waits for room before its 503: answering at once would make every
# sender send its whole body only to have it discarded (HTTP/1.1 has no way to refuse a
# body before it is sent), and a short wait takes most of them in turn instead.
BUSY_WAIT_S = 5.0
# A sender that trickles its body this slowly is gone or hostile; free the connection.
BODY_READ_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
READ_CHUNK_BYTES = 64 * 1024

STORE_KEY: web.AppKey[SampleStore] = web.AppKey("store", SampleStore)
MAX_BODY_KEY: web.AppKey[int] = web.AppKey("max_body_bytes", int)
CLOCK_KEY: web.AppKey[Clock] = web.AppKey("clock")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InFlight:
    """Counts requests being handled, so shutdown can wait for them.

    aiohttp's own shutdown stops reading from every connection at once, which would cut
    off a request whose body is still arriving; the receiver first stops listening, then
    waits here for handlers to finish, and only then lets aiohttp close connections.
    """

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


IN_FLIGHT_KEY: web.AppKey[InFlight] = web.AppKey("in_flight", InFlight)


class UploadLimits:
    """What uploads may hold in memory at once, so many large ones cannot exhaust it.

    Two bounds. Raw body bytes being received or waiting to be decoded: a request reserves
    its Content-Length (the maximum body size when chunked) before a byte is read; one that
    finds no room within BUSY_WAIT_S is answered 503 with Retry-After, unread (aiohttp then
    discards its body as it arrives, so it costs nothing). Bodies being decoded and stored: decoding
    costs ~10 bytes of Python objects per body byte until the batch is stored, so only
    ``max_concurrent_decodes`` run at a time and the others wait their turn, holding only
    their raw bytes. Small uploads reserve little: a fleet's uploads over slow uplinks are
    not refused because a few large ones are arriving. One event loop: plain counters.
    """

    def __init__(self, max_buffered_bytes: int, max_concurrent_decodes: int) -> None:
        if max_buffered_bytes < 1:
            raise ValueError("max_buffered_bytes must be positive")
        if max_concurrent_decodes < 1:
            raise ValueError("max_concurrent_decodes must be positive")
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered_bytes = 0
        self._room = asyncio.Event()
        self.decode_turns = asyncio.Semaphore(max_concurrent_decodes)
        # One decoding thread per turn: few threads, few malloc arenas, so memory freed by
        # one decode is reused by the next rather than kept per thread.
        self.decoders = ThreadPoolExecutor(
            max_workers=max_concurrent_decodes, thread_name_prefix="receiver-decode"
        )

    async def reserve(self, size: int, wait_s: float) -> bool:
        """Count ``size`` bytes in, waiting up to ``wait_s`` for room; False if none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self.buffered_bytes + size > self.max_buffered_bytes:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        self.buffered_bytes += size
        return True

    def release(self, size: int) -> None:
        self.buffered_bytes -= size
        self._room.set()


LIMITS_KEY: web.AppKey[UploadLimits] = web.AppKey("upload_limits", UploadLimits)


@web.middleware
async def track_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    in_flight = request.app[IN_FLIGHT_KEY]
    in_flight.enter()
    try:
        return await handler(request)
    finally:
        in_flight.leave()


class ListenAddressError(ValueError):
    pass


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080' -> ('127.0.0.1', 8080); '[::1]:8080' -> ('::1', 8080)."""
    value = text.strip()
    where = f"listen address {text!r}"
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep or not host:
            raise ListenAddressError(f"{where}: expected [IPv6]:PORT like [::1]:8080")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ListenAddressError(f"{where}: expected HOST:PORT like 127.0.0.1:8080")
        if ":" in host:
            raise ListenAddressError(f"{where}: put IPv6 hosts in brackets, like [::1]:8080")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(f"{where}: port must be a number 0-65535")
    return host, int(port_text)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"success": False, "error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain-text errors (404, 405, ...) and stray exceptions into JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        if exc.status == 404:
            message = f"no such endpoint: {request.path[:200]}"
        elif exc.status == 405:
            message = f"method {request.method[:20]} not allowed on {request.path[:200]}"
        else:
            message = exc.reason
        return error_response(exc.status, message, headers)
    except asyncio.CancelledError:
        raise
    except sqlite3.Error as exc:
        log.error("database error on %s %r: %s", request.method, request.path, exc)
        return error_response(
            503, "receiver storage unavailable, retry later", {"Retry-After": "5"}
        )
    except Exception:
        log.exception("internal error on %s %r", request.method, request.path)
        return error_response(500, "internal receiver error")


def _declared_too_large(request: web.Request, limit: int) -> str | None:
    declared = request.content_length
    if declared is not None and declared > limit:
        return f"body: {declared} bytes, at most {limit} allowed"
    return None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing past ``limit`` before buffering more than limit + one chunk."""
    body = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body: more than {limit} bytes, at most {limit} allowed")
    return bytes(body)


def _decode_and_validate(raw: bytes, gzipped: bool, limit: int, now_ms: int) -> Batch:
    body = gunzip_limited(raw, limit) if gzipped else raw
    return parse_upload(body, now_ms)


def _content_problem(request: web.Request) -> str | None:
    if request.content_type != "application/json":
        shown = request.headers.get("Content-Type", "none")[:100]
        return f"Content-Type must be application/json, got {shown}"
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        return f"Content-Type charset must be utf-8, got {charset[:40]}"
    return None


def _content_encoding(request: web.Request) -> str:
    return request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"


async def post_metrics(request: web.Request) -> web.Response:
    peer = request.remote or "-"
    problem = _content_problem(request)
    encoding = _content_encoding(request)
    if problem is None and encoding not in ("identity", "gzip", "x-gzip"):
        problem = f"Content-Encoding {encoding[:40]} not supported (use gzip or none)"
    if problem is not None:
        log.info("rejected upload from %s: 415 %s", peer, problem)
        return error_response(415, problem)

    limit = request.app[MAX_BODY_KEY]
    too_large = _declared_too_large(request, limit)
    if too_large is not None:
        log.info("rejected upload from %s: 413 %s", peer, too_large)
        return error_response(413, too_large)
    limits = request.app[LIMITS_KEY]
    reserved = request.content_length if request.content_length is not None else limit
    if not await limits.reserve(reserved, BUSY_WAIT_S):
        log.info(
            "refused upload from %s: 503 busy, %d body bytes already buffered",
            peer, limits.buffered_bytes,
        )
        return error_response(
            503,
            f"receiver busy: {limits.buffered_bytes} bytes of uploads being processed, "
            "retry later",
            {"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )
    try:
        return await _receive(request, peer, encoding, limit, limits)
    finally:
        limits.release(reserved)


async def _receive(
    request: web.Request, peer: str, encoding: str, limit: int, limits: UploadLimits
) -> web.Response:
    now_ms = int(request.app[CLOCK_KEY].wall() * 1000)
    try:
        raw = await asyncio.wait_for(_read_body(request, limit), BODY_READ_TIMEOUT_S)
        async with limits.decode_turns:
            # Decompressing and parsing up to `limit` bytes is CPU work: keep it off the loop.
            batch = await asyncio.get_running_loop().run_in_executor(
                limits.decoders, _decode_and_validate, raw, encoding != "identity", limit, now_ms
            )
            del raw
            stored = await request.app[STORE_KEY].insert(batch.device_id, batch.samples)
    except BodyTooLarge as exc:
        log.info("rejected upload from %s: 413 %s", peer, exc)
        return error_response(413, str(exc))
    except PayloadError as exc:
        log.info("rejected upload from %s: 400 %s", peer, exc)
        return error_response(400, str(exc))
    except asyncio.TimeoutError:
        log.info("rejected upload from %s: 408 body not received in time", peer)
        return error_response(408, f"body not received within {BODY_READ_TIMEOUT_S:.0f}s")
    except (ConnectionError, HttpProcessingError) as exc:
        # The sender vanished or broke the body's framing mid-way: its problem, no traceback.
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        log.info("rejected upload from %s: 400 body incomplete (%s)", peer, reason)
        return error_response(400, f"body: incomplete or malformed HTTP body ({reason})")

    received = len(batch.samples)
    duplicates = received - stored
    log.info(
        "upload from %s device=%s received=%d stored=%d duplicates=%d",
        peer, batch.device_id, received, stored, duplicates,
    )
    if log.isEnabledFor(logging.DEBUG):
        for sample in batch.samples:
            log.debug(
                "  device=%s %s%s = %r @ %d",
                batch.device_id, sample.name, dict(sample.labels) if sample.labels else "",
                sample.value, sample.timestamp_ms,
            )
    return web.json_response(
        {"success": True, "received": received, "stored": stored, "duplicates": duplicates}
    )


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "samples": await request.app[STORE_KEY].count()})


def build_app(
    db_path: str,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_buffered_bytes: int | None = None,
    max_concurrent_decodes: int = DEFAULT_MAX_CONCURRENT_DECODES,
    clock: Clock | None = None,
) -> web.Application:
    """The receiver app; its database opens on startup and closes on cleanup.

    Serve it with an AppRunner created with ``auto_decompress=False`` (as ``serve`` does):
    the app inflates gzip bodies itself, with a hard output cap.
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    app = web.Application(
        middlewares=[track_in_flight, json_errors], client_max_size=max_body_bytes
    )
    store = SampleStore(db_path)
    app[STORE_KEY] = store
    app[MAX_BODY_KEY] = max_body_bytes
    buffered = max_buffered_bytes or BUFFERED_BODIES_DEFAULT * max_body_bytes
    if buffered < max_body_bytes:
        raise ValueError("max_buffered_bytes must be at least max_body_bytes")
    limits = app[LIMITS_KEY] = UploadLimits(buffered, max_concurrent_decodes)
    app[CLOCK_KEY] = clock or SystemClock()
    app[IN_FLIGHT_KEY] = InFlight()

    async def store_lifecycle(_: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        try:
            await store.close()
        finally:
            limits.decoders.shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(store_lifecycle)
    app.router.add_post("/api/metrics", post_metrics)
    app.router.add_get("/health", get_health)
    return app


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    # auto_decompress=False: aiohttp would otherwise inflate gzip bodies before the
    # app's size cap sees them.
    return web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        auto_decompress=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        **kwargs,
    )


async def serve(
    host: str,
    port: int,
    db_path: str,
    stop: asyncio.Event,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_buffered_bytes: int | None = None,
    max_concurrent_decodes: int = DEFAULT_MAX_CONCURRENT_DECODES,
    on_listening: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until ``stop`` is set, then finish in-flight requests and close the database."""
    quiet_bad_request_logs()
    app = build_app(
        db_path,
        max_body_bytes=max_body_bytes,
        max_buffered_bytes=max_buffered_bytes,
        max_concurrent_decodes=max_concurrent_decodes,
    )
    runner = make_runner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = _bound_port(runner, port)
        log.info("metrics-receiver listening on %s port %d, db %s", host, bound_port, db_path)
        if on_listening is not None:
            on_listening(host, bound_port)
        await stop.wait()
        await site.stop()  # no new connections; open ones keep being served
        in_flight = app[IN_FLIGHT_KEY]
        log.info("metrics-receiver stopping: finishing %d in-flight requests", in_flight.count)
        if not await in_flight.wait_idle(SHUTDOWN_TIMEOUT_S):
            log.warning(
                "%d requests still running after %.0fs, cancelling them",
                in_flight.count,
                SHUTDOWN_TIMEOUT_S,
            )
    finally:
        await runner.cleanup()
    log.info("metrics-receiver stopped")


class _OneLineBadRequests(logging.Filter):
    """aiohttp logs each malformed HTTP request with a traceback at ERROR; anyone probing
    the port would flood the log. Keep one INFO line naming the peer and the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = " ".join(str(exc.message).split())[:200]
            original = record.getMessage()
            record.msg = "%s; bad HTTP request: %s"
            record.args = (original, reason)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return log.isEnabledFor(logging.INFO)
        return True


_BAD_REQUEST_FILTER = _OneLineBadRequests()


def quiet_bad_request_logs() -> None:
    # Idempotent: Logger.addFilter ignores a filter it already has.
    logging.getLogger("aiohttp.server").addFilter(_BAD_REQUEST_FILTER)


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


class _StopOnSignal:
    """A signal handler that asks the server loop to stop, and is harmless once it has.

    Installed with signal.signal rather than loop.add_signal_handler: asyncio resets the
    signal to its default action when the loop closes, so a second SIGTERM during the
    last moments of a graceful exit would kill the process with status -15.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.requested = False  # a signal that came before the loop was running

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True
        loop, stop = self.loop, self.stop
        if loop is None or stop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(stop.set)


def run(
    listen: str,
    db_path: str,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_buffered_bytes: int | None = None,
    max_concurrent_decodes: int = DEFAULT_MAX_CONCURRENT_DECODES,
    restore_signals: bool = True,
) -> None:
    """Run the receiver in the foreground until SIGTERM or SIGINT, then return.

    Shutdown is graceful: stop listening, let in-flight requests finish, close the
    database. ``restore_signals=False`` (the CLI) leaves later signals ignored while the
    process exits.
    """
    host, port = parse_listen(listen)
    on_signal = _StopOnSignal()
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_signal) for sig in stop_signals} if in_main_thread else {}

    async def main() -> None:
        on_signal.stop = asyncio.Event()
        on_signal.loop = asyncio.get_running_loop()
        if on_signal.requested:
            on_signal.stop.set()
        await serve(
            host,
            port,
            db_path,
            on_signal.stop,
            max_body_bytes=max_body_bytes,
            max_buffered_bytes=max_buffered_bytes,
            max_concurrent_decodes=max_concurrent_decodes,
        )

    try:
        asyncio.run(main())
    finally:
        if restore_signals:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
