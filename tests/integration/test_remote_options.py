"""Every documented `remote.*` option changes what the agent does.

An option can be validated and documented and still never reach the code that should obey
it (`remote.compression_level` did: every body went out at gzip level 6). Each test here
runs the agent from a config file, once with the option changed, and shows the difference
where it can be seen: on the requests the agent makes (a recording transport, the edge),
in /health, or on the wire to a real server. `test_every_remote_option_has_a_probe` keeps
the list complete."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from belabox_metrics.agent import Agent
from belabox_metrics.clock import SystemClock
from belabox_metrics.config import load_config
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.priority import classifier
from belabox_metrics.store.queue import SampleQueue, SeriesLanes
from belabox_metrics.upload.transport import Response
from tests.helpers import REPO_ROOT, stalled_server
from tests.vm import VictoriaMetrics

DOC = REPO_ROOT / "docs" / "configuration.md"
URL = "http://127.0.0.1:9/api/v1/import"


@dataclass
class Post:
    at: float
    url: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def raw(self) -> bytes:
        return gzip.decompress(self.body) if self.headers.get("Content-Encoding") == "gzip" else self.body

    @property
    def samples(self) -> list[tuple[str, int, float]]:
        """(name, timestamp ms, value) of each sample in the request."""
        if self.headers.get("Content-Type") == "application/json":
            return [(m["name"], _seed_ms(m["timestamp"]), m["value"]) for m in json.loads(self.raw)["metrics"]]
        out = []
        for line in self.raw.decode().splitlines():
            series = json.loads(line)
            out += [(series["metric"]["__name__"], ts, v) for ts, v in zip(series["timestamps"], series["values"],
                                                                           strict=True)]
        return out


def _seed_ms(stamp: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class Recorder:
    """The transport edge: records every request and answers `status`."""

    status: int = 204
    posts: list[Post] = field(default_factory=list)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self.posts.append(Post(time.monotonic(), url, dict(headers), body))
        return Response(self.status)

    def close(self) -> None:
        pass

    def sent(self) -> list[tuple[str, int, float]]:
        return [s for p in self.posts for s in p.samples]


@dataclass
class Run:
    agent: Agent
    recorder: Recorder | None
    started: float

    @property
    def posts(self) -> list[Post]:
        assert self.recorder is not None
        return self.recorder.posts


def backlog(count: int, *, start_ms: int | None = None, step_ms: int = 100, name: str = "disk.reads_per_second",
            seed: int = 1) -> list[Sample]:
    """Pending samples as an offline box leaves them: varied values (they compress like real
    ones, not like zeros), oldest first."""
    rng = random.Random(seed)
    first = start_ms if start_ms is not None else int(time.time() * 1000) - count * step_ms - 60_000
    return [Sample(name, round(rng.uniform(0, 5000), 3), first + i * step_ms, make_labels(device=f"sd{i % 4}"))
            for i in range(count)]


def write_config(tmp: Path, remote: dict[str, Any], *, metrics: list[dict[str, Any]] | None = None,
                 device: str = "opt-box") -> Path:
    cfg = tmp / f"config-{len(list(tmp.glob('config-*')))}.yaml"
    config = {
        "device": {"id": device},
        "storage": {"path": str(cfg.with_suffix(".db"))},
        "remote": {"url": URL, "format": "vm-jsonl", "interval": "200ms", **remote},
        "health": {"listen": "off"},
        "monitoring": {"self_metrics": False, "hold_untrusted_clock": False},
        "metrics": metrics or [{"name": "memory", "interval": "1d"}],
    }
    cfg.write_text(json.dumps(config))  # JSON is YAML
    return cfg


@contextmanager
def agent_running(tmp: Path, remote: dict[str, Any], *, samples: list[Sample] = (),  # type: ignore[assignment]
                  metrics: list[dict[str, Any]] | None = None, recorder: Recorder | None = None,
                  real_transport: bool = False, device: str = "opt-box",
                  clock: SystemClock | None = None) -> Iterator[Run]:
    settings = load_config(str(write_config(tmp, remote, metrics=metrics, device=device)))
    if samples:
        queue = SampleQueue.open(settings.storage.path, lanes=SeriesLanes(classifier(settings.remote.priority)))
        queue.append(samples)
        queue.close()
    if not real_transport:
        recorder = recorder or Recorder()
    stop = threading.Event()
    agent = Agent(settings, transport=recorder, stop=stop, clock=clock)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(agent.run()), daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        yield Run(agent, recorder, started)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and codes == [0]


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def drained(run: Run, count: int) -> Callable[[], bool]:
    return lambda: len(run.recorder.sent()) >= count if run.recorder else False


def elapsed(run: Run) -> float:
    return time.monotonic() - run.started


def uploader(run: Run) -> dict[str, Any]:
    component = run.agent.health()["components"]["uploader"]  # type: ignore[index]
    assert isinstance(component, dict)
    return component


# -- one probe per option ----------------------------------------------------------------------

def test_url(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/insert/7/prometheus/api/v1/import"
    with agent_running(tmp_path, {"url": url}, samples=backlog(10)) as run:
        wait_until(drained(run, 10))
    assert {p.url for p in run.posts} == {url}


def test_enabled(tmp_path: Path) -> None:
    with agent_running(tmp_path, {"enabled": False}, samples=backlog(10)) as off:
        time.sleep(1.5)  # absence: the time of 7 upload intervals
    assert off.posts == []
    with agent_running(tmp_path, {}, samples=backlog(10)) as on:
        wait_until(drained(on, 10))


def test_interval(tmp_path: Path) -> None:
    every_ms = [{"name": "memory", "interval": "100ms"}]
    with agent_running(tmp_path, {"interval": "3s"}, metrics=every_ms) as slow:
        time.sleep(2.0)
        assert slow.posts == []  # the first cycle is one interval after the start
    with agent_running(tmp_path, {"interval": "200ms"}, metrics=every_ms) as fast:
        wait_until(lambda: len(fast.posts) >= 3)
    assert all(b.at - a.at >= 0.19 for a, b in itertools.pairwise(fast.posts))


def test_timeout(tmp_path: Path) -> None:
    with stalled_server() as port:
        url = f"http://127.0.0.1:{port}/api/v1/import"
        with agent_running(tmp_path, {"url": url, "timeout": "300ms", "retry": {"max_attempts": 1}},
                           samples=backlog(5), real_transport=True) as short:
            wait_until(lambda: uploader(short)["last_error"] is not None)
            assert "timed out" in str(uploader(short)["last_error"])
            # The error came from the 300 ms timeout, not a stall: generous on a loaded machine
            # (without a timeout the request to this server would never end at all).
            assert elapsed(short) < 30
        with agent_running(tmp_path, {"url": url, "timeout": "5s", "retry": {"max_attempts": 1}},
                           samples=backlog(5), real_transport=True) as long:
            time.sleep(2.0)
            assert uploader(long)["last_error"] is None  # still waiting for the answer


def test_batch_size(tmp_path: Path) -> None:
    with agent_running(tmp_path, {"batch_size": 7}, samples=backlog(200)) as small:
        wait_until(drained(small, 200))
    assert max(len(p.samples) for p in small.posts) == 7 and len(small.posts) >= 29
    with agent_running(tmp_path, {}, samples=backlog(200)) as default:
        wait_until(drained(default, 200))
    assert len(default.posts[0].samples) >= 200


def test_max_request_bytes(tmp_path: Path) -> None:
    with agent_running(tmp_path, {"max_request_bytes": "1KiB"}, samples=backlog(3000)) as small:
        wait_until(drained(small, 3000))
    assert max(len(p.body) for p in small.posts) <= 1024 and len(small.posts) > 10
    with agent_running(tmp_path, {}, samples=backlog(3000)) as default:
        wait_until(drained(default, 3000))
    assert max(len(p.body) for p in default.posts) > 4096


def test_format(tmp_path: Path) -> None:
    with agent_running(tmp_path, {"format": "json", "url": "http://127.0.0.1:9/api/metrics"},
                       samples=backlog(10)) as seed:
        wait_until(drained(seed, 10))
    assert seed.posts[0].headers["Content-Type"] == "application/json"
    assert json.loads(seed.posts[0].raw)["device_id"] == "opt-box"
    with agent_running(tmp_path, {"format": "vm-jsonl"}, samples=backlog(10)) as jsonl:
        wait_until(drained(jsonl, 10))
    assert jsonl.posts[0].headers["Content-Type"] == "application/x-ndjson"


@pytest.mark.parametrize("fmt", ["vm-jsonl", "json"])
def test_compression_level(tmp_path: Path, fmt: str) -> None:
    """The bodies differ on the wire and decode to the same samples."""
    bodies: dict[int, list[Post]] = {}
    samples = backlog(3000)
    for level in (1, 9):
        with agent_running(tmp_path, {"compression_level": level, "format": fmt, "batch_size": 1000,
                                      "url": "http://127.0.0.1:9/api/metrics" if fmt == "json" else URL},
                           samples=samples) as run:
            wait_until(drained(run, 3000))
        bodies[level] = run.posts
    one, nine = (sum(len(p.body) for p in bodies[level]) for level in (1, 9))
    assert nine < one * 0.97, (one, nine)
    decoded = [sorted(s for p in bodies[level] for s in p.samples if s[0].startswith("disk")) for level in (1, 9)]
    assert len(decoded[0]) == 3000 and decoded[0] == decoded[1]


def test_compression_level_into_victoria_metrics(tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    """Over a real connection into VictoriaMetrics: fewer bytes at 9 than at 1, every sample
    stored either way."""
    samples = backlog(3000)
    sent: dict[int, int] = {}
    for level in (1, 9):
        with agent_running(tmp_path, {"url": victoria_metrics.import_url, "compression_level": level,
                                      "batch_size": 1000}, samples=samples, real_transport=True,
                           device=f"level-{level}") as run:
            wait_until(lambda: run.agent.uploader is not None and run.agent.uploader.uploaded_total >= 3000)
            sent[level] = run.agent.uploader.bytes_sent_total  # type: ignore[union-attr]
    assert sent[9] < sent[1] * 0.97, sent
    stored = {level: sorted((ts, v) for name, labels, ts, v in victoria_metrics.samples('{__name__="disk_reads_per_second"}')
                            if ("device_id", f"level-{level}") in labels) for level in (1, 9)}
    assert stored[1] == stored[9] == sorted((s.timestamp_ms, s.value) for s in samples)


def test_shutdown_grace(tmp_path: Path) -> None:
    # No cycle before the stop (interval 1d): only the final upload can send.
    with agent_running(tmp_path, {"interval": "1d", "shutdown_grace": "0s"}, samples=backlog(10)) as none:
        pass
    assert none.posts == []
    with agent_running(tmp_path, {"interval": "1d", "shutdown_grace": "5s"}, samples=backlog(10)) as grace:
        pass
    assert len(grace.recorder.sent()) >= 10  # type: ignore[union-attr]


def test_newest_first(tmp_path: Path) -> None:
    samples = backlog(1000)
    newest = samples[-1].timestamp_ms
    with agent_running(tmp_path, {"newest_first": True, "batch_size": 100}, samples=samples) as run:
        wait_until(drained(run, 1000))
    assert max(ts for n, ts, _ in run.posts[0].samples if n.startswith("disk")) == newest
    with agent_running(tmp_path, {"batch_size": 100}, samples=samples) as default:
        wait_until(drained(default, 1000))
    first = [ts for n, ts, _ in default.posts[0].samples if n.startswith("disk")]
    assert min(first) == samples[0].timestamp_ms and max(first) < newest


def test_max_sample_age(tmp_path: Path) -> None:
    old = backlog(5, start_ms=int(time.time() * 1000) - 7200_000)
    recent = backlog(5, name="disk.writes_per_second")
    with agent_running(tmp_path, {"max_sample_age": "1h"}, samples=old + recent) as run:
        wait_until(drained(run, 5))
        wait_until(lambda: uploader(run)["dead_letters"] == 5)
    assert {name for name, _, _ in run.recorder.sent() if name.startswith("disk")} == {  # type: ignore[union-attr]
        "disk_writes_per_second"}
    with agent_running(tmp_path, {}, samples=old + recent) as default:
        wait_until(drained(default, 10))


def test_max_future(tmp_path: Path) -> None:
    ahead = backlog(5, start_ms=int(time.time() * 1000) + 7200_000)
    recent = backlog(5, name="disk.writes_per_second")
    with agent_running(tmp_path, {"max_future": "1h"}, samples=ahead + recent) as run:
        wait_until(drained(run, 5))
        wait_until(lambda: uploader(run)["dead_letters"] == 5)
    assert {name for name, _, _ in run.recorder.sent() if name.startswith("disk")} == {  # type: ignore[union-attr]
        "disk_writes_per_second"}
    with agent_running(tmp_path, {}, samples=ahead + recent) as default:
        wait_until(drained(default, 10))


def test_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-3f9a\n")
    token.chmod(0o600)
    with agent_running(tmp_path, {"token_file": str(token)}, samples=backlog(5)) as run:
        wait_until(drained(run, 5))
    assert {p.headers.get("Authorization") for p in run.posts} == {"Bearer tok-3f9a"}
    with agent_running(tmp_path, {}, samples=backlog(5)) as default:
        wait_until(drained(default, 5))
    assert {p.headers.get("Authorization") for p in default.posts} == {None}


def test_retry_max_attempts(tmp_path: Path) -> None:
    for attempts in (2, 4):
        remote = {"interval": "1s", "retry": {"max_attempts": attempts, "backoff_base": "10ms", "backoff_max": "10ms",
                                              "jitter": 0}}
        recorder = Recorder(status=503)
        clock = WaitsClock(recorder)
        with agent_running(tmp_path, remote, samples=backlog(5), recorder=recorder, clock=clock) as run:
            wait_until(lambda: len(run.posts) > attempts)  # noqa: B023 - the second cycle began
        # One cycle's attempts 10 ms apart, then no backoff after the last one: the cycle gives
        # up and waits for the next (measured on the waits asked for, not on wall time).
        waits = [(sent, round(seconds, 6)) for sent, seconds in clock.waits if 1 <= sent <= attempts]
        assert [seconds for sent, seconds in waits if sent < attempts] == [0.01] * (attempts - 1)
        assert [seconds for sent, seconds in waits if sent == attempts and seconds == 0.01] == []


def test_retry_backoff_base(tmp_path: Path) -> None:
    assert retry_waits(tmp_path, {"max_attempts": 2, "backoff_base": "800ms", "jitter": 0}, 2) == [0.8]
    assert retry_waits(tmp_path, {"max_attempts": 2, "backoff_base": "50ms", "jitter": 0}, 2) == [0.05]


def test_retry_backoff_max(tmp_path: Path) -> None:
    uncapped = retry_waits(tmp_path, {"max_attempts": 4, "backoff_base": "200ms", "backoff_max": "10s", "jitter": 0}, 4)
    assert uncapped == [0.2, 0.4, 0.8]
    capped = retry_waits(tmp_path, {"max_attempts": 4, "backoff_base": "200ms", "backoff_max": "250ms", "jitter": 0}, 4)
    assert capped == [0.2, 0.25, 0.25]


def test_retry_jitter(tmp_path: Path) -> None:
    retry = {"max_attempts": 12, "backoff_base": "50ms", "backoff_max": "50ms"}
    assert retry_waits(tmp_path, {**retry, "jitter": 0}, 12) == [0.05] * 11
    spread = retry_waits(tmp_path, {**retry, "jitter": 1}, 12)
    # 11 delays drawn uniformly from 0-100 ms: all distinct (two equal floats: p ~ 0), each
    # within the bound, and not all of them the unjittered 50 ms.
    assert len(set(spread)) == 11 and all(0.0 <= d <= 0.1 for d in spread)


class WaitsClock(SystemClock):
    """The real clock, recording each wait the upload thread asks for with the number of
    requests sent before it: the backoff between two attempts, free of scheduling delays."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.waits: list[tuple[int, float]] = []

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        if threading.current_thread().name == "upload":
            self.waits.append((len(self.recorder.posts), seconds))
        return super().wait(seconds, stop)


def retry_waits(tmp: Path, retry: dict[str, Any], attempts: int) -> list[float]:
    """The backoffs of the first cycle's ``attempts`` attempts (all refused with 503), rounded
    to the microsecond: the waits asked for between request 1 and 2, 2 and 3, ..."""
    recorder = Recorder(status=503)
    clock = WaitsClock(recorder)
    with agent_running(tmp, {"interval": "200ms", "retry": retry}, samples=backlog(5), recorder=recorder,
                       clock=clock) as run:
        wait_until(lambda: len(run.posts) >= attempts)
    between = [seconds for sent, seconds in clock.waits if 1 <= sent < attempts]
    return [round(seconds, 6) for seconds in between]


# -- bandwidth ---------------------------------------------------------------------------------
# A stream is live while srt-live-transmit writes stats: one fresh record is a live signal.

def live_metrics(tmp: Path) -> list[dict[str, Any]]:
    stats = tmp / "slt.json"
    stats.write_text((REPO_ROOT / "tests" / "fixtures" / "srt" / "slt_sender_lossy_interval.json").read_text())
    return [{"name": "memory", "interval": "1d"},
            {"name": "srt", "interval": "200ms", "sources": [{"type": "srt-live-transmit", "stats_file": str(stats)}]}]


def drain_time(tmp: Path, bandwidth: dict[str, Any], count: int = 4000, **kw: Any) -> tuple[float, int]:
    with agent_running(tmp, {"bandwidth": bandwidth}, samples=backlog(count), **kw) as run:
        wait_until(lambda: sum(1 for n, _, _ in run.recorder.sent() if n == "disk_reads_per_second") >= count,  # type: ignore[union-attr]
                   120)
    return run.posts[-1].at - run.started, sum(len(p.body) for p in run.posts)


def test_bandwidth_max_bytes_per_second(tmp_path: Path) -> None:
    budget = {"burst_bytes": "4KiB", "live_bytes_per_second": "1KiB", "live_settle": "0s"}
    slow, sent = drain_time(tmp_path, {**budget, "max_bytes_per_second": "8KiB"})
    assert sent > 20_000 and slow >= (sent - 4096) / 8192 * 0.95
    fast, sent = drain_time(tmp_path, {**budget, "max_bytes_per_second": "1MiB"})
    assert fast < slow / 2


def test_bandwidth_live_bytes_per_second(tmp_path: Path) -> None:
    live = {"burst_bytes": "256KiB", "max_bytes_per_second": "1MiB"}
    slow, sent = drain_time(tmp_path, {**live, "live_bytes_per_second": "8KiB"}, metrics=live_metrics(tmp_path))
    assert sent > 20_000 and slow >= (sent - 16384) / 8192 * 0.95
    fast, _ = drain_time(tmp_path, {**live, "live_bytes_per_second": "512KiB"}, metrics=live_metrics(tmp_path))
    assert fast < slow / 2


def test_bandwidth_burst_bytes(tmp_path: Path) -> None:
    # The bucket caps a request's bytes: a request never exceeds one burst.
    with agent_running(tmp_path, {"bandwidth": {"burst_bytes": "2KiB", "max_bytes_per_second": "1MiB"}},
                       samples=backlog(3000)) as small:
        wait_until(drained(small, 3000))
    assert max(len(p.body) for p in small.posts) <= 2048
    with agent_running(tmp_path, {"bandwidth": {"max_bytes_per_second": "1MiB"}}, samples=backlog(3000)) as big:
        wait_until(drained(big, 3000))
    assert max(len(p.body) for p in big.posts) > 8192


def stream_live(run: Run) -> bool:
    return bool(run.agent.health()["bandwidth"]["stream_live"])  # type: ignore[index]


def stream_state(run: Run) -> str:
    return str(run.agent.health()["bandwidth"]["stream"])  # type: ignore[index]


def srt_runs(run: Run) -> int:
    return int(run.agent.health()["components"]["collectors"]["collectors"]["srt"]["runs"])  # type: ignore[index]


def test_bandwidth_live_hold(tmp_path: Path) -> None:
    metrics = live_metrics(tmp_path)
    with agent_running(tmp_path, {"bandwidth": {"live_hold": "500ms"}}, metrics=metrics) as short:
        wait_until(lambda: stream_state(short) != "unknown")
        wait_until(lambda: not stream_live(short))  # the one record is 500 ms old: idle
    with agent_running(tmp_path, {"bandwidth": {"live_hold": "30s"}}, metrics=metrics) as long:
        wait_until(lambda: stream_state(long) != "unknown")
        time.sleep(1.5)
        assert stream_live(long)


def test_bandwidth_live_settle(tmp_path: Path) -> None:
    # srt-live-transmit has written nothing yet: the stream state is not known.
    stats = tmp_path / "empty-stats.json"
    stats.write_text("")
    metrics = [{"name": "memory", "interval": "1d"},
               {"name": "srt", "interval": "1d", "sources": [{"type": "srt-live-transmit", "stats_file": str(stats)}]}]
    with agent_running(tmp_path, {"bandwidth": {"live_settle": "0s"}}, metrics=metrics) as settled:
        wait_until(lambda: srt_runs(settled) == 1)
        assert stream_state(settled) == "idle" and not stream_live(settled)
    with agent_running(tmp_path, {}, metrics=metrics) as default:
        wait_until(lambda: srt_runs(default) == 1)
        time.sleep(1.0)
        assert stream_state(default) == "unknown" and stream_live(default)  # for up to 30 s: the live budget


# -- priority ----------------------------------------------------------------------------------

def first_names(run: Run) -> list[str]:
    return [name for name, _, _ in run.posts[0].samples]


def test_priority_classes(tmp_path: Path) -> None:
    # disk (P2 by default) is older than memory (P1): by default memory goes first.
    samples = backlog(50, name="disk.reads_per_second") + backlog(50, name="memory.used_bytes", seed=2)
    with agent_running(tmp_path, {"batch_size": 50}, samples=samples) as default:
        wait_until(drained(default, 100))
    assert set(first_names(default)) == {"memory_used_bytes"}
    with agent_running(tmp_path, {"batch_size": 50, "priority": {"classes": {"P0": ["disk.*"]}}},
                       samples=samples) as run:
        wait_until(drained(run, 100))
    assert set(first_names(run)) == {"disk_reads_per_second"}


def test_priority_default_class(tmp_path: Path) -> None:
    # An unmatched name goes in the default class (P2), behind memory (P1) ...
    samples = backlog(50, name="custom.thing") + backlog(50, name="memory.used_bytes", seed=2)
    with agent_running(tmp_path, {"batch_size": 50}, samples=samples) as default:
        wait_until(drained(default, 100))
    assert set(first_names(default)) == {"memory_used_bytes"}
    with agent_running(tmp_path, {"batch_size": 50, "priority": {"default_class": "P0"}}, samples=samples) as run:
        wait_until(drained(run, 100))
    assert set(first_names(run)) == {"custom_thing"}


def test_priority_while_live(tmp_path: Path) -> None:
    metrics = live_metrics(tmp_path)
    samples = backlog(20, name="disk.reads_per_second")  # P2
    with agent_running(tmp_path, {"priority": {"while_live": ["P0"]}}, samples=samples, metrics=metrics) as held:
        wait_until(lambda: any(n.startswith("srt_") for n, _, _ in held.recorder.sent()))  # type: ignore[union-attr]
        time.sleep(1.0)
        assert stream_live(held)
        assert not [n for n, _, _ in held.recorder.sent() if n == "disk_reads_per_second"]  # type: ignore[union-attr]
    with agent_running(tmp_path, {}, samples=samples, metrics=metrics) as default:
        wait_until(drained(default, 20))


# -- the list is complete ----------------------------------------------------------------------

def test_every_remote_option_has_a_probe() -> None:
    documented = set(re.findall(r"^\| `remote\.([a-z_.]+)`", DOC.read_text(encoding="utf-8"), re.M))
    probes = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    expected = {"url", "enabled", "interval", "timeout", "batch_size", "max_request_bytes", "format",
                "compression_level", "shutdown_grace", "newest_first", "max_sample_age", "max_future",
                "token_file"}
    assert {"url", "compression_level", "retry.max_attempts", "bandwidth.live_settle"} <= documented
    assert expected <= documented
    # Options of the transport are probed where its servers live: a named test there must exist.
    elsewhere = {
        "proxy": ("tests/unit/test_http_proxy.py", "test_configured_proxy_wins_and_none_goes_direct"),
        "tls.ca_file": ("tests/unit/test_tls.py", "test_a_private_ca_is_trusted_and_the_connection_kept_alive"),
        "tls.cert_file": ("tests/unit/test_tls.py", "test_mutual_tls_needs_the_client_certificate"),
        "tls.key_file": ("tests/unit/test_tls.py", "test_mutual_tls_needs_the_client_certificate"),
        "tls.server_name": ("tests/unit/test_tls.py", "test_server_name_is_sent_and_verified"),
    }
    for option, (path, test) in elsewhere.items():
        assert f"def {test}(" in (REPO_ROOT / path).read_text(encoding="utf-8"), (option, path, test)
        probes.add(option.replace(".", "_"))
    missing = sorted(o for o in documented if o.replace(".", "_") not in probes)
    assert not missing, f"documented remote options without a behaviour test here: {missing}"
