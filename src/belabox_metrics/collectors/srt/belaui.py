"""`type: belaui`: the BELABOX web UI's websocket, read like the web page reads it.

belaUI (BELABOX/belaUI `belaUI.js`) sends every message as ``{"<type>": data}``. A client
must log in (``{"auth":{"password":…,"persistent_token":true}}`` or a cached
``{"auth":{"token":…}}``) and stay active (broadcasts go only to clients heard from in the
last 15 s, hence ``{"keepalive":null}`` every 10 s). A background thread per source keeps the
connection and the latest state; ``poll`` turns that state into samples, or into an error
when it is stale.

What belaUI really sends (captured from the real belaUI.js, tests/fixtures/srt/belaui-real):
``status.modems`` every second is the whole modem list (a modem's full description when it
appears, then only its ``status``; an unplugged modem is simply absent); ``config`` at every
login carries ``max_br`` (kbps), ``bitrate`` only follows another client's change; a wrong
password gets no ``auth`` answer, only ``notification {name: "auth", type: "error"}``; a
persistent notification is re-sent up to once a second and at every login.

Secrets: the password and the token are read from 0600 files, sent only inside the auth
message, and never logged (no message content is ever logged).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from belabox_metrics.collectors.srt.common import (
    SourceBuildContext,
    SourceError,
    SourceType,
    check_secret_file,
    read_secret_file,
    register_source,
    write_secret_file,
)
from belabox_metrics.collectors.srt.websocket import WebSocket, WebSocketError
from belabox_metrics.model import Sample, make_labels, text
from belabox_metrics.tlsconfig import TlsSettings, parse_tls

TYPE = "belaui"

STREAMING_LIVE = "belabox.streaming_live"
MODEM_THROUGHPUT = "belabox.modem_throughput_bytes_per_second"
INTERFACE_ENABLED = "belabox.interface_enabled"
MODEM_SIGNAL = "belabox.modem_signal_percent"
MODEM_ROAMING = "belabox.modem_roaming"
MODEM_NETWORK = "belabox.modem_network"
MODEM_TECHNOLOGY = "belabox.modem_technology"
MODEM_CONNECTION = "belabox.modem_connection"
SOC_TEMPERATURE = "belabox.soc_temperature_celsius"
SOC_VOLTAGE = "belabox.soc_voltage_volts"
SOC_CURRENT = "belabox.soc_current_amperes"
INGEST_RATE = "belabox.srt_ingest_bits_per_second"
INGEST_RTT = "belabox.srt_ingest_rtt_seconds"
MAX_BITRATE = "belabox.max_bitrate_bits_per_second"
MODEMS = "belabox.modems"
ERROR_NOTIFICATIONS = "belabox.error_notifications_total"
NOTIFICATION = "belabox.notification"
REVISION = "belabox.revision"

# Text samples are kept locally: emit them when they change and then once a minute, not
# every second.
TEXT_REPEAT_S = 60.0

_VALUE_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(\S*)\s*$")
_INGEST = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?bps)\s*,\s*(\d+(?:\.\d+)?)\s*ms\s+RTT\s*$",
                     re.IGNORECASE)
_SCALE = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}


class AuthFailed(Exception):
    """belaUI refused us; retrying quickly will not help (message safe to log)."""


class PasswordRefused(AuthFailed):
    """belaUI answered the password with its `auth` error notification."""


@dataclass
class Incident:
    """One notification as belaUI shows it: from its first `show` until it is removed or its
    `duration` (seconds; 0 = until removed) has run out since it was last shown."""

    last_seen: float
    duration: float
    msg: str


# -- pure parsing ---------------------------------------------------------------------------

def parse_value_unit(value: str, unit: str) -> float | None:
    """'52.7 °C' with unit '°C' -> 52.7; '512 mV' with unit 'V' -> 0.512; else None."""
    match = _VALUE_UNIT.match(value)
    if not match:
        return None
    number, found = float(match.group(1)), match.group(2)
    if found == unit or (unit == "°C" and found in ("C", "ºC")):
        return number
    if found.endswith(unit) and found[:-len(unit)] in _SCALE:
        return number * _SCALE[found[:-len(unit)]]
    return None


def parse_ingest(value: str) -> tuple[float, float] | None:
    """'2950 Kbps, 23 ms RTT' -> (bits/s, RTT seconds)."""
    match = _INGEST.match(value)
    if not match:
        return None
    scale = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}[match.group(2).lower()]
    return float(match.group(1)) * scale, float(match.group(3)) / 1000.0


def parse_signal(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _VALUE_UNIT.match(value)
        if match and match.group(2) in ("", "%"):
            return float(match.group(1))
    return None


@dataclass
class BelaUiState:
    """The latest of everything belaUI told us, with when (monotonic seconds)."""

    status: dict[str, Any] = field(default_factory=dict)
    modems: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensors: dict[str, str] = field(default_factory=dict)
    sensors_at: float | None = None
    netif: dict[str, Any] = field(default_factory=dict)
    netif_at: float | None = None
    max_bitrate_kbps: float | None = None
    revisions: dict[str, str] = field(default_factory=dict)
    error_notifications: dict[str, int] = field(default_factory=dict)
    new_notifications: list[tuple[str, str, str]] = field(default_factory=list)
    incidents: dict[tuple[str, str], Incident] = field(default_factory=dict)
    password_refused: bool = False
    last_message_at: float | None = None
    set_password_required: bool = False
    modems_known: bool = False
    unknown_types: set[str] = field(default_factory=set)

    def apply(self, message: Any, now: float) -> dict[str, Any] | None:
        """Fold one decoded message in. Returns the `auth` payload if the message had one."""
        if not isinstance(message, Mapping):
            return None
        self.last_message_at = now
        auth: dict[str, Any] | None = None
        for kind, data in message.items():
            if kind == "auth" and isinstance(data, Mapping):
                auth = dict(data)
            elif kind == "status" and isinstance(data, Mapping):
                self._apply_status(data)
            elif kind == "sensors" and isinstance(data, Mapping):
                self.sensors = {str(k): str(v) for k, v in data.items()}
                self.sensors_at = now
            elif kind == "netif" and isinstance(data, Mapping):
                self.netif = {str(k): v for k, v in data.items() if isinstance(v, Mapping)}
                self.netif_at = now
            elif kind in ("bitrate", "config") and isinstance(data, Mapping):
                # `config` at every login (the whole config: only max_br is read, nothing
                # else of it is kept); `bitrate` when another client changes it mid-stream
                max_br = data.get("max_br")
                if isinstance(max_br, (int, float)) and not isinstance(max_br, bool) and max_br > 0:
                    self.max_bitrate_kbps = float(max_br)
            elif kind == "revisions" and isinstance(data, Mapping):
                self.revisions = {str(k): str(v) for k, v in data.items()}
            elif kind == "notification" and isinstance(data, Mapping):
                self._apply_notification(data, now)
            else:
                self.unknown_types.add(str(kind)[:40])
        return auth

    def _apply_status(self, data: Mapping[str, Any]) -> None:
        if data.get("set_password") is True:
            self.set_password_required = True
        modems = data.get("modems")
        if isinstance(modems, Mapping):
            # belaUI sends the whole current list every second (a modem's full description
            # when it appears, then only its `status`): a modem absent from it is gone.
            listed = {str(k): v for k, v in modems.items() if isinstance(v, Mapping)}
            for gone in set(self.modems) - set(listed):
                del self.modems[gone]
            for modem_id, info in listed.items():
                merged = self.modems.setdefault(modem_id, {})
                inner = info.get("status")
                merged.update({k: v for k, v in info.items() if k != "status"})
                if isinstance(inner, Mapping):
                    merged.update(inner)
            self.modems_known = True
        self.status.update({k: v for k, v in data.items() if k != "modems"})

    def _apply_notification(self, data: Mapping[str, Any], now: float) -> None:
        removed = data.get("remove")
        if isinstance(removed, list):
            for name in removed:
                for key in [k for k in self.incidents if k[0] == str(name)[:40]]:
                    del self.incidents[key]
        shown = data.get("show")
        if not isinstance(shown, list):
            return
        for note in shown:
            if not isinstance(note, Mapping):
                continue
            name = str(note.get("name", ""))[:40]
            kind = str(note.get("type", ""))[:20]
            msg = str(note.get("msg", ""))[:300]
            if name == "auth" and kind == "error":
                self.password_refused = True  # belaUI's only answer to a wrong password
            duration = note.get("duration")
            seconds = float(duration) if isinstance(duration, (int, float)) and not isinstance(
                duration, bool) and duration > 0 else 0.0
            key = (name, kind)
            current = self.incidents.get(key)
            live = current is not None and (current.duration == 0
                                            or now - current.last_seen <= current.duration + 1.0)
            # belaUI re-sends a persistent notification up to once a second while its cause
            # lasts, and again at every login: those repeats are one incident. A one-off
            # (not persistent) notification is an incident of its own each time.
            if note.get("is_persistent") is True and live and current is not None:
                current.last_seen = now
                current.duration = seconds
                if current.msg != msg:
                    current.msg = msg
                    self.new_notifications.append((name, kind, msg))
                continue
            if note.get("is_persistent") is True:
                self.incidents[key] = Incident(now, seconds, msg)
            if kind == "error":
                self.error_notifications[name] = self.error_notifications.get(name, 0) + 1
            self.new_notifications.append((name, kind, msg))
        del self.new_notifications[:-20]

    def reset_session(self) -> None:
        """A new connection re-sends the full state: forget per-session parts (not the
        incidents: a login re-sends the notifications that are still shown)."""
        self.modems.clear()
        self.modems_known = False
        self.password_refused = False
        self.netif = {}
        self.netif_at = None
        self.sensors_at = None
        self.set_password_required = False


def state_samples(state: BelaUiState, now_ms: int, now: float, fresh_s: float) -> list[Sample]:
    """Numeric and text samples from the state (text: all of them; the caller thins them)."""
    base = make_labels(source=TYPE)
    out: list[Sample] = []
    streaming = state.status.get("is_streaming")
    if isinstance(streaming, bool):
        out.append(Sample(STREAMING_LIVE, 1.0 if streaming else 0.0, now_ms, base))
    if state.netif_at is not None and now - state.netif_at <= fresh_s:
        for name, info in sorted(state.netif.items()):
            labels = make_labels(source=TYPE, interface=name)
            tp = info.get("tp")
            if isinstance(tp, (int, float)) and not isinstance(tp, bool):
                out.append(Sample(MODEM_THROUGHPUT, float(tp), now_ms, labels))
            enabled = info.get("enabled")
            if isinstance(enabled, bool):
                out.append(Sample(INTERFACE_ENABLED, 1.0 if enabled else 0.0, now_ms, labels))
    if state.modems_known:
        out.append(Sample(MODEMS, float(len(state.modems)), now_ms, base))
    for modem_id, info in sorted(state.modems.items()):
        labels = make_labels(source=TYPE, modem=modem_id)
        signal = parse_signal(info.get("signal"))
        if signal is not None:
            out.append(Sample(MODEM_SIGNAL, signal, now_ms, labels))
        roaming = info.get("roaming")
        if isinstance(roaming, bool):
            out.append(Sample(MODEM_ROAMING, 1.0 if roaming else 0.0, now_ms, labels))
        for metric, key in ((MODEM_NETWORK, "network"), (MODEM_TECHNOLOGY, "network_type"),
                            (MODEM_CONNECTION, "connection")):
            value = info.get(key)
            if isinstance(value, str) and value:
                out.append(text(metric, value, now_ms, labels))
    if state.sensors_at is not None and now - state.sensors_at <= fresh_s:
        out += _sensor_samples(state.sensors, now_ms, base)
    if state.max_bitrate_kbps is not None:
        out.append(Sample(MAX_BITRATE, state.max_bitrate_kbps * 1000.0, now_ms, base))
    for name, count in sorted(state.error_notifications.items()):
        out.append(Sample(ERROR_NOTIFICATIONS, float(count), now_ms,
                          make_labels(source=TYPE, name=name)))
    for component, revision in sorted(state.revisions.items()):
        out.append(text(REVISION, revision, now_ms, make_labels(source=TYPE, component=component)))
    return out


def _sensor_samples(sensors: Mapping[str, str], now_ms: int,
                    labels: tuple[tuple[str, str], ...]) -> list[Sample]:
    out: list[Sample] = []
    for sensor, metric, unit in (("SoC temperature", SOC_TEMPERATURE, "°C"),
                                 ("SoC voltage", SOC_VOLTAGE, "V"),
                                 ("SoC current", SOC_CURRENT, "A")):
        raw = sensors.get(sensor)
        value = parse_value_unit(raw, unit) if raw is not None else None
        if value is not None:
            out.append(Sample(metric, value, now_ms, labels))
    ingest = sensors.get("SRT ingest")
    parsed = parse_ingest(ingest) if ingest is not None else None
    if parsed is not None:
        out.append(Sample(INGEST_RATE, parsed[0], now_ms, labels))
        out.append(Sample(INGEST_RTT, parsed[1], now_ms, labels))
    return out


# -- options --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    url: str
    password_file: str
    token_file: str
    keepalive: float = 10.0
    stale_after: float = 5.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    tls: TlsSettings = field(default_factory=TlsSettings)  # for wss://: private CA, client certificate, server name


def parse(reader: Any) -> Options:
    url = reader.string("url", "ws://127.0.0.1/", example="ws://127.0.0.1/")
    if not url.startswith(("ws://", "wss://")):
        reader.fail("url", f"{url!r} is not a ws:// or wss:// URL", "write e.g. `url: ws://127.0.0.1/`")
    password_file = reader.string("password_file", example="/etc/belabox-metrics/belaui-password")
    # Under the hardened unit /etc/belabox-metrics is read-only: the token the agent writes
    # goes to its state directory then; elsewhere (a dev box, tests) beside the password file.
    if password_file.startswith("/etc/"):
        default_token = "/var/lib/belabox-metrics/belaui-token"
    else:
        default_token = os.path.join(os.path.dirname(password_file) or ".", "belaui-token")
    return Options(
        url=url,
        password_file=password_file,
        token_file=reader.string("token_file", default_token,
                                 example="/var/lib/belabox-metrics/belaui-token"),
        keepalive=reader.duration("keepalive", 10.0, minimum=0.05, maximum=14),
        stale_after=reader.duration("stale_after", 5.0, minimum=0.1, maximum=600),
        backoff_initial=reader.duration("backoff_initial", 1.0, minimum=0.01, maximum=60),
        backoff_max=reader.duration("backoff_max", 60.0, minimum=0.01, maximum=3600),
        tls=parse_tls(reader.section("tls")),
    )


# -- the connection thread ------------------------------------------------------------------

class BelaUiSource:
    type = TYPE

    def __init__(self, options: Options, *, timeout: float = 2.0,
                 log: logging.Logger | None = None, start: bool = True, key: str = "") -> None:
        self.options = options
        self.key = key
        self.timeout = timeout
        self.log = log or logging.getLogger("belabox_metrics.srt.belaui")
        self.state = BelaUiState()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.connected = False
        self.authed = False
        self.problem: str | None = None
        self.logins = 0
        self.password_logins = 0
        self.token_logins = 0
        self.connections = 0
        self.keepalives_sent = 0
        self.started_at = time.monotonic()
        self.text_sent: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, float]] = {}
        self.refused = self._check_files()
        if self.refused:
            self.log.error("belaui source refused: %s", self.refused)
        elif start:
            self.start()

    @property
    def display(self) -> str:
        from belabox_metrics.collectors.srt.common import redact_url

        return f"{TYPE} {redact_url(self.options.url)}"

    def _check_files(self) -> str | None:
        try:
            check_secret_file(self.options.password_file)
            if os.path.exists(self.options.token_file):
                check_secret_file(self.options.token_file)
        except SourceError as exc:
            return str(exc)
        return None

    def start(self) -> None:
        if self.thread is None and not self.refused:
            self.thread = threading.Thread(target=self._run, name="belaui-ws", daemon=True)
            self.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=self.timeout + 2.0)
            self.thread = None

    # -- poll (collector thread) --------------------------------------------------------
    def poll(self, now_ms: int) -> list[Sample]:
        if self.refused:
            raise SourceError(self.refused)
        now = time.monotonic()
        with self.lock:
            last = self.state.last_message_at
            authed, problem = self.authed, self.problem
            if last is None or not authed:
                if now - self.started_at <= self.options.stale_after and problem is None:
                    return []  # still connecting after start: nothing to say yet
                raise SourceError(f"not logged in to belaUI: {problem or 'connecting'}")
            age = now - last
            if age > self.options.stale_after:
                raise SourceError(f"no message from belaUI for {age:.1f}s "
                                  f"({problem or 'connection silent'})")
            samples = state_samples(self.state, now_ms, now, self.options.stale_after)
        return self._thin_text(samples, now, now_ms)

    def _thin_text(self, samples: list[Sample], now: float, now_ms: int) -> list[Sample]:
        out: list[Sample] = []
        # a series that is gone (an unplugged modem) is said again at once when it returns
        present = {(s.name, s.labels) for s in samples if s.is_text}
        for key in [k for k in self.text_sent if k not in present]:
            del self.text_sent[key]
        for sample in samples:
            if sample.is_text:
                key = (sample.name, sample.labels)
                previous = self.text_sent.get(key)
                value = sample.text or ""
                if previous is not None and previous[0] == value and now - previous[1] < TEXT_REPEAT_S:
                    continue
                self.text_sent[key] = (value, now)
            out.append(sample)
        with self.lock:
            notes, self.state.new_notifications = self.state.new_notifications, []
        for name, kind, msg in notes:
            out.append(text(NOTIFICATION, msg, now_ms,
                            make_labels(source=TYPE, name=name, type=kind)))
        return out

    # -- connection thread --------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        rng = random.Random()
        while not self.stop_event.is_set():
            was_authed = False
            refused = False
            try:
                was_authed = self._session()
            except PasswordRefused as exc:
                refused = True
                self._set_problem(str(exc), warn=True)
            except AuthFailed as exc:
                self._set_problem(str(exc), warn=True)
            except (OSError, WebSocketError, ValueError) as exc:
                self._set_problem(f"connection: {_describe(exc)}", warn=False)
            finally:
                with self.lock:
                    self.connected = False
                    self.authed = False
            if self.stop_event.is_set():
                break
            attempt = 0 if was_authed else attempt + 1
            delay = min(self.options.backoff_max,
                        self.options.backoff_initial * (2 ** min(attempt, 16)))
            delay *= 0.5 + rng.random() * 0.5  # jitter: many boxes must not retry in step
            if refused:
                # The same password will be refused again: wait for the operator to fix the
                # file (or the longest backoff), not a fast retry loop of bcrypt checks.
                self._wait_for_password_change(self.options.backoff_max)
                continue
            self.log.debug("belaui reconnecting in %.2fs", delay)
            self.stop_event.wait(delay)

    def _password_file_stamp(self) -> tuple[float, int, int] | None:
        try:
            st = os.stat(self.options.password_file)
        except OSError:
            return None
        return (st.st_mtime, st.st_size, st.st_ino)

    def _wait_for_password_change(self, limit: float) -> None:
        stamp = self._password_file_stamp()
        deadline = time.monotonic() + limit
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._password_file_stamp() != stamp:
                return
            self.stop_event.wait(min(left, 0.5))

    def _set_problem(self, problem: str, *, warn: bool) -> None:
        with self.lock:
            changed = problem != self.problem
            self.problem = problem
        if changed:
            (self.log.warning if warn else self.log.info)("belaui: %s", problem)

    def _session(self) -> bool:
        ws = WebSocket.connect(self.options.url, self.timeout, self.options.tls)
        with self.lock:
            self.connected = True
            self.connections += 1
            self.state.reset_session()
        self.log.debug("belaui websocket connected")
        try:
            self._login(ws)
            with self.lock:
                self.authed = True
                self.problem = None
                self.logins += 1
            self.log.info("belaui: logged in")
            self._read_loop(ws)
            return True
        finally:
            ws.close()

    def _send(self, ws: WebSocket, message: Mapping[str, Any]) -> None:
        ws.send_text(json.dumps(message, separators=(",", ":")))

    def _login(self, ws: WebSocket) -> None:
        token = self._cached_token()
        if token is not None:
            self.log.debug("belaui: logging in with the cached token")
            self._send(ws, {"auth": {"token": token}})
            reply = self._await_auth(ws)
            if reply.get("success") is True:
                with self.lock:
                    self.token_logins += 1
                return
            self.log.info("belaui: cached token refused; logging in with the password")
            with contextlib.suppress(OSError):
                os.unlink(self.options.token_file)
        try:
            password = read_secret_file(self.options.password_file)
        except SourceError as exc:
            raise AuthFailed(str(exc)) from None
        self.log.debug("belaui: logging in with the password")
        self._send(ws, {"auth": {"password": password, "persistent_token": True}})
        del password
        reply = self._await_auth(ws, password_login=True)
        if reply.get("success") is not True:
            raise PasswordRefused(self._refused_message())
        with self.lock:
            self.password_logins += 1
        new_token = reply.get("auth_token")
        if isinstance(new_token, str) and new_token:
            try:
                write_secret_file(self.options.token_file, new_token)
                self.log.debug("belaui: persistent token cached (mode 0600)")
            except OSError as exc:
                self.log.warning("belaui: cannot cache the login token in %s (%s); "
                                 "the password will be sent on every reconnect",
                                 self.options.token_file, exc.strerror)

    def _cached_token(self) -> str | None:
        if not os.path.exists(self.options.token_file):
            return None
        try:
            return read_secret_file(self.options.token_file)
        except SourceError as exc:
            raise AuthFailed(str(exc)) from None

    def _refused_message(self) -> str:
        where = f"{self.key}.password_file" if self.key else "password_file"
        return (f"belaUI refused the password: write the belaUI web UI password into "
                f"{self.options.password_file} ({where}; one line, mode 0600); "
                f"retrying when that file changes, or in {self.options.backoff_max:g}s")

    def _await_auth(self, ws: WebSocket, *, password_login: bool = False) -> dict[str, Any]:
        # bcrypt on a loaded box takes a while: give the password check a few seconds
        deadline = time.monotonic() + max(self.timeout, 5.0 if password_login else 1.0)
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AuthFailed("belaUI did not answer the login in time")
            raw = ws.recv(min(left, 0.5))
            if raw is None:
                continue
            auth = self._apply(raw)
            with self.lock:
                needs_password = self.state.set_password_required
                refused = self.state.password_refused
            if needs_password:
                raise AuthFailed("belaUI has no password set yet: set one in the web UI first")
            if refused and password_login:
                # belaUI answers a wrong password only with notification {name: "auth"}
                raise PasswordRefused(self._refused_message())
            if auth is not None:
                return auth
        raise AuthFailed("stopping")

    def _apply(self, raw: str) -> dict[str, Any] | None:
        try:
            message = json.loads(raw)
        except ValueError:
            self.log.debug("belaui: ignored a message that is not JSON")
            return None
        with self.lock:
            return self.state.apply(message, time.monotonic())

    def _read_loop(self, ws: WebSocket) -> None:
        keepalive = self.options.keepalive
        next_keepalive = time.monotonic()
        silent_limit = max(3 * self.options.stale_after, 2 * keepalive, 5.0)
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_keepalive:
                self._send(ws, {"keepalive": None})
                with self.lock:
                    self.keepalives_sent += 1
                next_keepalive = now + keepalive
            raw = ws.recv(max(0.0, min(next_keepalive - now, 0.5)))
            if raw is not None:
                self._apply(raw)
            with self.lock:
                last = self.state.last_message_at
            if last is not None and time.monotonic() - last > silent_limit:
                raise WebSocketError(f"belaUI silent for {silent_limit:g}s")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def build(options: Options, ctx: SourceBuildContext) -> BelaUiSource:
    return BelaUiSource(options, timeout=ctx.timeout, log=ctx.log, key=ctx.key)


SOURCE = register_source(SourceType(
    name=TYPE, parse=parse, build=build,
    description="belaUI websocket on the device (streaming state, modems, sensors)",
))
