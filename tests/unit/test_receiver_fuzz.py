"""Property: whatever a client sends, the receiver answers 2xx/4xx, never 5xx, and a refused
request stores nothing. Runs the real app in-process on a loopback port (bounded examples)."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from belabox_metrics.receiver.app import serve
from belabox_metrics.receiver.validate import DEVICE_ID_RE, LABEL_KEY_RE, METRIC_NAME_RE
from belabox_metrics.timefmt import format_ms
from tests.helpers import free_port, wait_for_port

MAX_BODY_BYTES = 64 * 1024


class ReceiverClient:
    """What the fuzz property needs of a receiver on ``self.port``: requests and a count."""

    port: int

    def request(self, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), response.getheader("Content-Type", "")
        finally:
            conn.close()

    def sample_count(self) -> int:
        status, body, _ = self.request("GET", "/health", None, {})
        assert status == 200, body
        return int(json.loads(body)["samples"])


class InProcessReceiver(ReceiverClient):
    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="receiver-under-test", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.stop_event = asyncio.Event()
            await serve("127.0.0.1", self.port, str(self.db), self.stop_event,
                        max_body_bytes=MAX_BODY_BYTES)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by the fixture's teardown
            self.error = exc
        finally:
            self.loop.close()

    def start(self) -> None:
        self.thread.start()
        wait_for_port("127.0.0.1", self.port, timeout=10)

    def close(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "receiver did not stop"
        if self.error is not None:
            raise self.error



@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessReceiver]:
    server = InProcessReceiver(tmp_path_factory.mktemp("fuzz") / "receiver.db")
    server.start()
    yield server
    server.close()


NOW_MS = int(time.time() * 1000)

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=20) | st.sampled_from(["", "2025-10-11T14:30:00.123Z", "NaN", "\ud800"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
timestamps = st.integers(NOW_MS - 30 * 86_400_000, NOW_MS + 3_600_000).map(format_ms) | st.sampled_from(
    ["1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "2025-13-01T00:00:00Z", "garbage"]
)
metrics = st.fixed_dictionaries(
    {
        "name": st.from_regex(METRIC_NAME_RE, fullmatch=True),
        "value": st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False),
        "timestamp": timestamps,
    },
    optional={
        "labels": st.dictionaries(st.from_regex(LABEL_KEY_RE, fullmatch=True),
                                  st.text(max_size=30), max_size=4),
    },
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """Mostly-valid payloads with a few fields swapped for arbitrary JSON values."""
    document: dict[str, Any] = {
        "device_id": draw(st.from_regex(DEVICE_ID_RE, fullmatch=True)),
        "timestamp": draw(timestamps),
        "metrics": draw(st.lists(metrics, max_size=8)),
    }
    for _ in range(draw(st.integers(0, 2))):
        items = document.get("metrics")
        nested = [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []
        targets: list[dict[str, Any]] = [document, *nested]
        target = draw(st.sampled_from(targets))
        key = draw(st.sampled_from([*target.keys(), "extra"]))
        if draw(st.booleans()):
            target[key] = draw(json_values)
        else:
            target.pop(key, None)
    return document


def to_body(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(to_body),
    mutated_payloads().map(to_body),
    mutated_payloads().map(to_body),
    mutated_payloads().map(to_body).map(lambda b: b[: len(b) // 2]),
    # Around the size limit, which also applies after gzip decompression.
    st.integers(MAX_BODY_BYTES - 2, MAX_BODY_BYTES + 2).map(lambda n: b"[" + b" " * (n - 2) + b"]"),
)
JSON_HEADERS = {"Content-Type": "application/json"}
header_sets = st.sampled_from([
    *[JSON_HEADERS] * 6,
    {"Content-Type": "application/json; charset=utf-8"},
    {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    {"Content-Type": "text/plain"},
    {"Content-Type": "application/json; charset=ebcdic"},
    {},
])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    headers=header_sets,
    method=st.sampled_from(["POST"] * 12 + ["PUT", "GET", "DELETE"]),
    path=st.sampled_from(["/api/metrics"] * 12 + ["/", "/api/metrics/", "/health"]),
    gzip_it=st.booleans(),
)
def test_never_5xx_and_refusals_store_nothing(
    receiver: InProcessReceiver, body: bytes, headers: dict[str, str], method: str, path: str,
    gzip_it: bool,
) -> None:
    if headers.get("Content-Encoding") == "gzip" and gzip_it:
        body = gzip.compress(body)
    before = receiver.sample_count()
    status, answer, content_type = receiver.request(method, path, body, headers)
    after = receiver.sample_count()
    event(f"status {status}")
    assert status < 500, (status, answer)
    assert content_type.startswith("application/json"), (status, content_type)
    document = json.loads(answer)
    if status == 200 and method == "POST":
        assert document["success"] is True
        assert document["stored"] + document["duplicates"] == document["received"]
        assert after == before + document["stored"]
    else:
        assert after == before, (status, document)
        if status != 200:
            assert document["success"] is False and document["error"]
