"""Clock trust, skew against a real loopback server, and re-stamping after a 1970 boot."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.model import Sample
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timesync import ClockTrust, KernelClock, measure_skew, plausible, skew_from

SYNCED_2026 = 1_795_000_000.0  # 2026-11-18


def test_plausible_years() -> None:
    assert not plausible(0) and not plausible(86_400_000)
    assert plausible(int(SYNCED_2026 * 1000))
    assert not plausible(5_000_000_000_000)


def test_clock_at_1970_is_not_trusted_then_is_after_sync(tmp_path: Path) -> None:
    clock = FakeClock(wall=120.0, monotonic=120.0)  # booted without an RTC battery
    trust = ClockTrust(clock, timesync_dir=str(tmp_path / "none"), recheck=1.0)
    assert not trust.trusted() and "not a plausible date" in trust.reason
    clock.jump_wall(SYNCED_2026)  # NTP steps the clock
    clock.advance(1.0)
    assert trust.trusted()


def test_clock_behind_the_newest_stored_sample_is_not_trusted(tmp_path: Path) -> None:
    clock = FakeClock(wall=SYNCED_2026)
    newest = int((SYNCED_2026 + 3600) * 1000)  # we stored data an hour "later" before the reboot
    trust = ClockTrust(clock, newest_stored_ms=newest, timesync_dir=str(tmp_path / "none"))
    assert not trust.trusted() and "behind the newest stored sample" in trust.reason


def test_time_sync_daemon_present_but_unsynced(tmp_path: Path) -> None:
    timesync = tmp_path / "timesync"
    timesync.mkdir()
    clock = FakeClock(wall=SYNCED_2026)
    state = {"synced": False}
    trust = ClockTrust(clock, timesync_dir=str(timesync), recheck=0.0,
                       kernel=lambda: KernelClock(state["synced"], 16_000_000))
    assert not trust.trusted()
    state["synced"] = True
    assert trust.trusted()
    (timesync / "synchronized").touch()
    state["synced"] = False  # timesyncd's flag wins over a stale kernel status
    assert trust.trusted()


def test_without_sync_daemon_a_plausible_clock_is_trusted(tmp_path: Path) -> None:
    # Containers and boxes without NTP report STA_UNSYNC forever: not enough to hold data.
    trust = ClockTrust(FakeClock(wall=SYNCED_2026), timesync_dir=str(tmp_path / "none"),
                       kernel=lambda: KernelClock(False, 16_000_000))
    assert trust.trusted()


def test_held_samples_are_restamped_from_monotonic_time(tmp_path: Path) -> None:
    """Boot at 1970, collect 3 samples 10 s apart, NTP syncs: the samples get the real time
    at which they were taken, computed from the monotonic clock."""
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    clock = FakeClock(wall=30.0, monotonic=30.0)
    for i in range(3):
        offset = int((clock.wall() - clock.monotonic()) * 1000)
        queue.hold([Sample("cpu.temperature", 40.0 + i, int(clock.wall() * 1000))], "boot-1", offset)
        clock.advance(10)
    assert queue.held_count() == 3 and queue.count() == 0 and queue.pending_count("d") == 0
    clock.jump_wall(SYNCED_2026)  # at monotonic 60 s the true time is SYNCED_2026 + 30 s
    released = queue.release_held("boot-1", int((clock.wall() - clock.monotonic()) * 1000))
    assert released == 3 and queue.held_count() == 0
    # After the jump, true time = SYNCED_2026 + monotonic; the first sample was at monotonic 30 s.
    true_start_ms = int((SYNCED_2026 + 30.0) * 1000)
    assert [(r.ts, r.sample.value) for r in queue.all()] == [
        (true_start_ms, 40.0), (true_start_ms + 10_000, 41.0), (true_start_ms + 20_000, 42.0)]
    assert queue.pending_count("d") == 3


def test_other_boots_are_not_restamped_with_this_boots_clock(tmp_path: Path) -> None:
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    queue.hold([Sample("x", 1.0, 5_000)], "old-boot", 0)
    assert queue.release_held("new-boot", 1_795_000_000_000) == 0
    assert queue.held_count() == 1


def test_agent_holds_then_restamps(tmp_path: Path) -> None:
    from belabox_metrics.agent import Agent

    settings = parse_config(f"""
device: {{id: t}}
storage: {{path: {tmp_path / 'a.db'}}}
remote: {{url: "http://127.0.0.1:9/", enabled: false}}
health: {{listen: "off"}}
metrics: [{{name: srt.packet_loss, mock: true, interval: 1s}}]
""")
    clock = FakeClock(wall=100.0, monotonic=100.0)
    agent = Agent(settings, clock=clock)
    agent.clock_gate.trust = ClockTrust(clock, timesync_dir=str(tmp_path / "none"), recheck=0.0)
    queue = SampleQueue.open(settings.storage.path)
    agent.clock_gate.store(queue, [Sample("x", 1.0, int(clock.wall() * 1000))])
    assert queue.held_count() == 1 and agent.snapshot().clock_trusted is False
    assert agent.health()["status"] == "degraded"
    clock.advance(5)
    clock.jump_wall(SYNCED_2026)
    agent.clock_gate.store(queue, [Sample("x", 2.0, int(clock.wall() * 1000))])
    assert queue.held_count() == 0 and agent.clock_gate.restamped_total == 1
    assert [(r.ts, r.sample.value) for r in queue.all()] == [
        (int((SYNCED_2026 + 100.0) * 1000), 1.0), (int((SYNCED_2026 + 105.0) * 1000), 2.0)]


# -- skew over real HTTP on loopback --------------------------------------------------------
class DateServer(http.server.ThreadingHTTPServer):
    offset = 0.0


class DateHandler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response_only(204)  # send_response would add the real Date first
        self.send_header("Date", formatdate(time.time() + self.server.offset, usegmt=True))  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def date_server() -> Iterator[DateServer]:
    server = DateServer(("127.0.0.1", 0), DateHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("offset", [0.0, 10.0, -30.0])
def test_skew_against_a_server_with_a_known_offset(date_server: DateServer, offset: float) -> None:
    date_server.offset = offset
    measured = measure_skew(f"http://127.0.0.1:{date_server.server_address[1]}/", 2.0)
    assert measured is not None
    # The Date header has one-second resolution: ±0.6 s around the true offset.
    assert abs(measured.skew_ms - offset * 1000) <= 600


def test_skew_through_a_proxy_uses_the_date_the_client_sees(date_server: DateServer) -> None:
    """A proxy in front of the reference answers with its own Date (here 5 s ahead): the
    measurement is of whichever server answered, which is why the skew URL must be one
    whose Date is trustworthy, and why it is logged with the ingest URL."""
    date_server.offset = -20.0
    upstream = date_server.server_address[1]

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=2)
            conn.request("HEAD", self.path)
            conn.getresponse().read()
            conn.close()
            self.send_response_only(204)
            self.send_header("Date", formatdate(time.time() + 5.0, usegmt=True))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        measured = measure_skew(f"http://127.0.0.1:{proxy.server_address[1]}/", 2.0)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert measured is not None and abs(measured.skew_ms - 5000) <= 600 and measured.rtt_ms > 0


def test_skew_from_header() -> None:
    assert skew_from(None, 0, 0) is None
    assert skew_from("garbage", 0, 0) is None
    assert skew_from("Thu, 01 Jan 1970 00:01:40 GMT", 90.0, 90.0) == pytest.approx(10_500)


def test_where_adjtimex_is_not_allowed_timesyncds_flag_decides(tmp_path: Path) -> None:
    """The unit's ProtectClock=true forbids even reading adjtimex: without the flag, a
    running timesyncd that has not synced means untrusted (samples held, not lost)."""
    timesync = tmp_path / "timesync"
    timesync.mkdir()
    trust = ClockTrust(FakeClock(wall=SYNCED_2026), timesync_dir=str(timesync), recheck=0.0, kernel=lambda: None)
    assert not trust.trusted() and "not synchronised" in trust.reason
    (timesync / "synchronized").touch()
    assert trust.trusted()


@pytest.mark.parametrize(("text", "expected"), [
    ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),   # IMF-fixdate
    ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),  # RFC 850
    ("Sun Nov  6 08:49:37 1994", 784111777.0),        # asctime
    ("Sun, 06 Nov 1994 08:49:37", None), ("yesterday", None), ("", None), (None, None),
    ("Sun, 31 Feb 1994 08:49:37 GMT", None)])
def test_http_dates(text: str | None, expected: float | None) -> None:
    from belabox_metrics.timefmt import parse_http_date
    assert parse_http_date(text) == expected
