"""`type: sls` with the irl-srt-server settings, against the answers captured from the real
irlserver/irl-srt-server (tests/fixtures/srt/irl-srt-server-real, see its PROVENANCE),
replayed by tests/irl_replay.py: the stream reads as live with `publisher:` (with and
without a key), the raw API key lists every publisher, a wrong key gets the 401 hint that
names api_key_file, and no publisher query without a key gets the clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from belabox_metrics.collectors.base import CollectorError
from belabox_metrics.logs import mask_secrets
from belabox_metrics.validation import ConfigError
from tests.irl_replay import IrlReplay
from tests.unit.test_srt_support import make_collector, now_ms, one, pick

STREAM = "publish/live/feed1"
LABELS = {"source": "sls", "stream": STREAM}
RECV = {**LABELS, "direction": "receive"}


def key_file(tmp_path: Path, value: str) -> str:
    path = tmp_path / "sls-api-key"
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.mark.parametrize("config", ["open", "keyed"])
def test_publisher_query_reads_the_stream_as_live(config: str) -> None:
    replay = IrlReplay(config, state="idle")
    try:
        collector = make_collector([{"type": "sls", "url": replay.url, "publisher": STREAM}])
        got = collector.collect(now_ms())
        assert [(s.name, s.value) for s in got] == [("srt.stream_connected", 0.0)]  # nobody publishes
        replay.state = "live"
        got = collector.collect(now_ms())  # ~3 s into the stream: the baseline of a new connection
        assert replay.requests[-1] == (f"/stats?publisher={STREAM}", None)
        assert one(got, "srt.stream_connected", **LABELS) == 1
        assert one(got, "srt.stream_bitrate_bits_per_second", **LABELS) in (2_639_000, 2_634_000)
        assert one(got, "srt.uptime_seconds", **LABELS) == 3
        assert one(got, "srt.buffer_seconds", **RECV) == pytest.approx(0.488, abs=0.002)
        assert one(got, "srt.packets_lost_total", **RECV) == 30
        got = collector.collect(now_ms())  # ~6 s: the real server's cumulative counters as deltas
        assert one(got, "srt.packets_lost_total", **RECV) == 57
        assert one(got, "srt.packets_retransmitted_total", **RECV) == 57
        assert one(got, "srt.reconnects_total", **LABELS) == 0
        assert one(got, "srt.rtt_seconds", **LABELS) == pytest.approx(0.00014, abs=0.00001)
        assert one(got, "srt.receive_rate_bits_per_second", **LABELS) == pytest.approx(2.716e6, rel=0.01)
    finally:
        replay.close()


def test_raw_api_key_lists_every_publisher_and_is_masked(tmp_path: Path) -> None:
    replay = IrlReplay("keyed")
    try:
        collector = make_collector([{"type": "sls", "url": replay.url, "stream": STREAM,
                                     "api_key_file": key_file(tmp_path, replay.key)}])
        got = collector.collect(now_ms())
        assert replay.requests[-1] == ("/stats", replay.key)  # byte for byte: no Bearer, no Basic
        assert one(got, "srt.stream_connected", **LABELS) == 1
        # connected before the agent's first poll: its counts so far are a baseline, not this poll's
        assert one(got, "srt.packets_retransmitted_total", **RECV) == 0
        assert replay.key not in mask_secrets(f"the server said {replay.key}")
        # `feed1` is how the server's own stream id ends: it matches in the full listing
        got = make_collector([{"type": "sls", "url": replay.url, "stream": "feed1",
                               "api_key_file": key_file(tmp_path, replay.key)}]).collect(now_ms())
        assert one(got, "srt.stream_connected", source="sls", stream="feed1") == 1
        # and the key goes along with a publisher query too
        got = make_collector([{"type": "sls", "url": replay.url, "publisher": STREAM,
                               "api_key_file": key_file(tmp_path, replay.key)}]).collect(now_ms())
        assert replay.requests[-1] == (f"/stats?publisher={STREAM}", replay.key)
        assert one(got, "srt.stream_connected", **LABELS) == 1
    finally:
        replay.close()


@pytest.mark.parametrize("wrong", ["not-the-key-0000", "Bearer {key}"])
def test_a_wrong_key_gets_the_401_hint_naming_api_key_file(tmp_path: Path, wrong: str) -> None:
    replay = IrlReplay("keyed")
    try:
        collector = make_collector([{"type": "sls", "url": replay.url,
                                     "api_key_file": key_file(tmp_path, wrong.format(key=replay.key))}])
        with pytest.raises(CollectorError, match=r"HTTP 401 .*`api_key_file:` \(sent as the raw "
                                                 r"Authorization header"):
            collector.collect(now_ms())
    finally:
        replay.close()


@pytest.mark.parametrize("config", ["open", "keyed"])
def test_no_publisher_query_and_no_key_gets_the_clear_error(config: str) -> None:
    replay = IrlReplay(config)
    try:
        collector = make_collector([{"type": "sls", "url": replay.url, "stream": STREAM}])
        with pytest.raises(CollectorError) as caught:
            collector.collect(now_ms())
        text = str(caught.value)
        assert "HTTP 401" in text and "api_key_file" in text
        assert "`publisher: <full stream id>`, which irl-srt-server answers without a key" in text
        assert replay.requests[-1] == ("/stats", None)
    finally:
        replay.close()


@pytest.mark.parametrize("part", ["live", "feed1", "live/feed1"])
def test_a_part_of_the_stream_id_as_publisher_is_refused(part: str) -> None:
    """The real server answers ?publisher=live and ?publisher=feed1 with an empty map while
    the stream is live (captured): the agent would store a false offline."""
    url = "http://127.0.0.1:9/stats"
    with pytest.raises(ConfigError, match=r"publisher: .* is not a full stream id\. Fix: write the whole id"):
        make_collector([{"type": "sls", "url": url, "publisher": part}])
    with pytest.raises(ConfigError, match=r"url: .* is not a full stream id"):
        make_collector([{"type": "sls", "url": f"{url}?publisher={part}"}])


def test_the_captured_partial_ids_are_empty_while_live() -> None:
    """What the refusal above rests on: the captures themselves."""
    replay = IrlReplay("open")
    try:
        for part in ("live", "feed1"):
            status, body = replay.answer(f"/stats?publisher={part}", None)
            assert (status, body.strip()) == (200, b'{\n "publishers": {},\n "status": "ok"\n}')
        status, body = replay.answer(f"/stats?publisher={STREAM}", None)
        assert status == 200 and STREAM.encode() in body
    finally:
        replay.close()


def test_publisher_in_the_url_names_the_stream() -> None:
    replay = IrlReplay("open")
    try:
        got = make_collector([{"type": "sls", "url": f"{replay.url}?publisher={STREAM}"}]).collect(now_ms())
        assert one(got, "srt.stream_connected", **LABELS) == 1
        assert pick(got, "srt.packets_lost_total", **RECV)
    finally:
        replay.close()
