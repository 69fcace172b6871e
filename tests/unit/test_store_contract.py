"""The store's promises, stated once (in the spirit of Telegraf's buffer suite) and run
against every way the agent opens it: on disk with and without the upload-state cache, and
with two connections (collection and upload threads) on one file.

A reference model keeps, per destination, the set of samples acknowledged; the queue must
agree with it through every public reader after every step of random interleavings:

- every appended sample is claimed, per destination, until acknowledged, and never after;
- each claim's rows are in key order, and a lane's rows come oldest first unless the caller
  asked for the newest chunk first;
- a sample stored below what a destination already acknowledged (a late one) is claimed
  first;
- ``is_sent``, ``recent``, ``pending_count`` and ``pending_by_lane`` say what the model says;
- ``prune_sent`` removes only samples every destination acknowledged, ``coalesce_unsent``
  only samples no destination acknowledged, and the size cap (which drops the oldest,
  whatever they are) counts as unsent exactly the samples the model has not seen
  acknowledged everywhere;
- without ``newest_first``, each lane of each destination goes out in key order across
  claims: a row claimed outside the late path is above everything that lane acknowledged.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from belabox_metrics.model import Sample
from belabox_metrics.store.queue import Claim, Key, SampleQueue, SeriesLanes, UploadProgress

DESTINATIONS = ("https://a.example/api/v1/import", "https://b.example/api/v1/import")
NAMES = ("srt.rtt_ms", "cpu.temperature", "memory.used_bytes", "disk.read_bytes_total")
BASE_MS = 1_790_000_000_000


def lane_of_name(name: str) -> int:
    return {"srt.rtt_ms": 0, "cpu.temperature": 1, "memory.used_bytes": 2}.get(name, 3)


@dataclass
class Store:
    """The writer (collection thread) and the reader/acknowledger (upload thread)."""
    writer: SampleQueue
    uploader: SampleQueue

    def close(self) -> None:
        self.writer.close()
        if self.uploader is not self.writer:
            self.uploader.close()


# "deferred": the agent's layout, acknowledgements committed with the next append (a shared
# UploadProgress, issue 21); the database alone may then be behind, never ahead.
IMPLEMENTATIONS = ("one-connection", "two-connections", "two-connections-cached", "two-connections-deferred")


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    lanes = SeriesLanes(lane_of_name)
    path = str(tmp_path / "contract.db")
    shared = UploadProgress() if request.param.endswith("deferred") else None
    writer = SampleQueue.open(path, lanes=lanes, progress=shared)
    if request.param == "one-connection":
        uploader = writer
    else:
        uploader = SampleQueue.open(path, lanes=lanes, owns_upload_state=not request.param.endswith("connections"),
                                    progress=shared)
    made = Store(writer, uploader)
    yield made
    made.close()


@dataclass
class Model:
    stored: dict[tuple[str, int], float] = field(default_factory=dict)      # (name, ts) -> value
    acked: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: {d: set() for d in DESTINATIONS})

    def pending(self, destination: str) -> set[tuple[str, int]]:
        return set(self.stored) - self.acked[destination]


def identity(queue: SampleQueue, key: Key) -> tuple[str, int]:
    name, _labels, _kind = queue.series(key[1])
    return (name, key[0])


def claimed(queue: SampleQueue, claims: list[Claim]) -> list[tuple[str, int]]:
    return [identity(queue, row.key) for claim in claims for row in claim.rows]


def check_agrees(store: Store, model: Model) -> None:
    queue = store.uploader
    rows = queue.recent(None, 10**9)
    on_disk = {(row.sample.name, row.ts) for row, _ in rows}
    assert on_disk == set(model.stored)
    for destination in DESTINATIONS:
        pending = model.pending(destination)
        assert queue.pending_count(destination) == len(pending), destination
        by_lane = queue.pending_by_lane(destination)
        for lane in range(4):
            assert by_lane.get(lane, 0) == sum(1 for name, _ in pending if lane_of_name(name) == lane), (destination, lane)
        for row, sent in queue.recent(None, 10**9, destination):
            who = (row.sample.name, row.ts)
            assert sent == (who in model.acked[destination]), (destination, who, "recent")
            assert queue.is_sent(destination, row.key) == (who in model.acked[destination]), (destination, who, "is_sent")
    # What the database alone says (another process, or the agent after kill -9): never a
    # sample sent that was not acknowledged (that would be lost); behind is allowed (re-sent).
    fresh = SampleQueue.open(store.writer.path, lanes=SeriesLanes(lane_of_name))
    try:
        for destination in DESTINATIONS:
            for row, sent in fresh.recent(None, 10**9, destination):
                assert not sent or (row.sample.name, row.ts) in model.acked[destination], (destination, row.key)
    finally:
        fresh.close()


def append(store: Store, model: Model, rng: random.Random, clock: list[int]) -> None:
    batch = []
    for _ in range(rng.randint(1, 12)):
        name = rng.choice(NAMES)
        if rng.random() < 0.15 and clock[0] > BASE_MS + 50:
            ts = rng.randint(BASE_MS, clock[0] - 1)   # a late one: below what may be acknowledged
        else:
            clock[0] += rng.randint(1, 5)
            ts = clock[0]
        if (name, ts) in model.stored:
            continue  # the same key again is a no-op in the store, too
        value = float(rng.randint(0, 1000))
        model.stored[(name, ts)] = value
        batch.append(Sample(name, value, ts))
    store.writer.append(batch)


def claim_and_ack(store: Store, model: Model, rng: random.Random) -> None:
    destination = rng.choice(DESTINATIONS)
    queue = store.uploader
    newest_first = rng.random() < 0.3
    claims = queue.next_claims(destination, rng.randint(1, 25), newest_first=newest_first)
    got = claimed(queue, claims)
    assert not set(got) & model.acked[destination], "an acknowledged sample was claimed again"
    assert len(got) == len(set(got))
    for claim in claims:
        keys = [row.key for row in claim.rows]
        assert keys == sorted(keys), "a claim's rows out of key order"
    regions = [claim.region for claim in claims]
    assert "late" not in regions or regions.index("late") == 0, "late rows must come before every lane's rows"
    lanes = [claim.lane for claim in claims if claim.region != "late"]
    assert lanes == sorted(lanes), "lanes out of priority order"
    if not claims:
        assert not model.pending(destination), "samples pending, yet nothing claimed"
        return
    count = rng.randint(0, len(got)) if rng.random() < 0.4 else len(got)
    queue.ack_claims(destination, claims, count)
    model.acked[destination].update(got[:count])


def drain(store: Store, model: Model) -> None:
    for destination in DESTINATIONS:
        for _ in range(10_000):
            claims = store.uploader.next_claims(destination, 50)
            if not claims:
                break
            got = claimed(store.uploader, claims)
            assert not set(got) & model.acked[destination]
            store.uploader.ack_claims(destination, claims)
            model.acked[destination].update(got)
        assert model.pending(destination) == set(), "drained, yet the model has pending samples"


def removed(store: Store, model: Model) -> set[tuple[str, int]]:
    """What left the store since the model last looked; the model forgets it."""
    still = {(row.sample.name, row.ts) for row, _ in store.uploader.recent(None, 10**9)}
    gone = set(model.stored) - still
    for who in gone:
        del model.stored[who]
        for acked in model.acked.values():
            acked.discard(who)  # stored again later, it is a new sample to send
    return gone


def retention(store: Store, model: Model, rng: random.Random, clock: list[int]) -> None:
    sent_everywhere = set.intersection(*(model.acked[d] for d in DESTINATIONS))
    sent_anywhere = set.union(*(model.acked[d] for d in DESTINATIONS))
    action = rng.random()
    if action < 0.6:
        count = store.uploader.prune_sent(list(DESTINATIONS), clock[0] - rng.randint(0, 40))
        gone = removed(store, model)
        assert gone <= sent_everywhere, "pruned a sample some destination had not acknowledged"
        assert len(gone) == count
    elif action < 0.9:
        count = store.uploader.coalesce_unsent(list(DESTINATIONS), clock[0] - rng.randint(0, 40),
                                               bucket_ms=rng.randint(2, 30))
        gone = removed(store, model)
        assert not gone & sent_anywhere, "coalesced a sample a destination had acknowledged"
        assert len(gone) == count
    else:
        unsent = set(model.stored) - sent_everywhere
        cap = store.uploader.used_bytes() - 1
        dropped_unsent = store.uploader.enforce_max_size(cap, list(DESTINATIONS), step=rng.randint(1, 30))
        gone = removed(store, model)
        assert dropped_unsent == len(gone & unsent), "the size cap miscounted what was unsent"


@pytest.mark.parametrize("seed", range(8))
def test_random_interleavings_keep_every_promise(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    model = Model()
    clock = [BASE_MS]
    for step in range(160):
        action = rng.random()
        if action < 0.45:
            append(store, model, rng, clock)
        elif action < 0.9:
            claim_and_ack(store, model, rng)
        else:
            retention(store, model, rng, clock)
        if step % 8 == 0:
            check_agrees(store, model)
    check_agrees(store, model)
    drain(store, model)
    check_agrees(store, model)


def test_a_late_sample_is_claimed_first_and_counted_unsent(store: Store) -> None:
    model = Model()
    destination = DESTINATIONS[0]
    store.writer.append([Sample("memory.used_bytes", float(i), BASE_MS + 10 * i) for i in range(10)])
    for i in range(10):
        model.stored[("memory.used_bytes", BASE_MS + 10 * i)] = float(i)
    claims = store.uploader.next_claims(destination, 100)
    store.uploader.ack_claims(destination, claims)
    model.acked[destination].update(claimed(store.uploader, claims))
    store.writer.append([Sample("memory.used_bytes", 99.0, BASE_MS + 15)])   # between two sent ones
    model.stored[("memory.used_bytes", BASE_MS + 15)] = 99.0
    check_agrees(store, model)
    first = store.uploader.next_claims(destination, 100)
    assert first and first[0].region == "late" and claimed(store.uploader, first)[0] == ("memory.used_bytes", BASE_MS + 15)


def test_the_size_cap_counts_late_samples_as_unsent(store: Store) -> None:
    """enforce_max_size reports how many unsent samples it dropped: a late sample below
    the marks is unsent, whatever the marks say."""
    store.writer.append([Sample("memory.used_bytes", float(i), BASE_MS + 10 * i) for i in range(200)])
    for destination in DESTINATIONS:
        for _ in range(100):
            claims = store.uploader.next_claims(destination, 500)
            if not claims:
                break
            store.uploader.ack_claims(destination, claims)
    store.writer.append([Sample("memory.used_bytes", -1.0, BASE_MS + 5)])    # late for both
    dropped_unsent = store.uploader.enforce_max_size(1, list(DESTINATIONS), step=1000)
    assert dropped_unsent == 1
    assert store.uploader.pending_count(DESTINATIONS[0]) == 0


@pytest.mark.parametrize("seed", range(6))
def test_each_lane_goes_out_in_key_order_across_claims(store: Store, seed: int) -> None:
    """Oldest first per (destination, lane), request after request, partial acknowledgements
    and late samples included: outside the late path a claimed row is always above the
    highest key that lane has acknowledged, so every series reaches the remote in order."""
    rng = random.Random(seed)
    model = Model()
    clock = [BASE_MS]
    highest: dict[tuple[str, int], Key] = {}
    may_be_late: set[tuple[str, str, int]] = set()  # appended at or below what its lane acknowledged
    for _ in range(200):
        if rng.random() < 0.5:
            before = set(model.stored)
            append(store, model, rng, clock)
            for name, ts in set(model.stored) - before:
                may_be_late.update((d, name, ts) for d in DESTINATIONS
                                   if (d, lane_of_name(name)) in highest and ts <= highest[(d, lane_of_name(name))][0])
            continue
        destination = rng.choice(DESTINATIONS)
        claims = store.uploader.next_claims(destination, rng.randint(1, 20))
        got = claimed(store.uploader, claims)
        assert not set(got) & model.acked[destination]
        for claim in claims:
            if claim.region == "late":
                assert all((destination, *identity(store.uploader, row.key)) in may_be_late for row in claim.rows), \
                    "a sample appended in order went out as late"
                continue
            floor = highest.get((destination, claim.lane))
            assert floor is None or claim.rows[0].key > floor, "a lane went out of key order"
        count = rng.randint(0, len(got)) if rng.random() < 0.4 else len(got)
        store.uploader.ack_claims(destination, claims, count)
        model.acked[destination].update(got[:count])
        left = count
        for claim in claims:
            acked = claim.rows[:max(left, 0)]
            left -= len(claim.rows)
            if acked and claim.region != "late":
                lane_key = (destination, claim.lane)
                highest[lane_key] = max(highest.get(lane_key, acked[-1].key), acked[-1].key)
    drain(store, model)
    check_agrees(store, model)
