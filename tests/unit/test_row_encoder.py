"""The vm-jsonl row encoder formats values without naming.number's round trip when the
shortest repr already has at most 12 digits, and each timestamp's text once per body (issue
21): byte for byte what vm_jsonl makes of the Samples, over floats of every magnitude and
digit count, and rounds sharing timestamps."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from belabox_metrics.model import Labels, Sample, make_labels
from belabox_metrics.upload.encode import VmRowEncoder, VmSeriesHeads, number, vm_jsonl

BASE_MS = 1_790_000_000_000
NAMES = ("network.receive_bytes_total", "network.receive_bytes_per_second", "cpu.usage_percent")


def decimal_floats() -> st.SearchStrategy[float]:
    """Decimals of 1 to 17 significant digits at exponents -30 .. 30: every length of repr
    around the 12-digit and 13-character edges."""
    return st.builds(lambda digits, exponent, sign: float(Decimal(sign * digits).scaleb(exponent)),
                     st.integers(1, 10**17), st.integers(-30, 30), st.sampled_from([1, -1]))


VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    decimal_floats(),
    st.integers(-10**17, 10**17).map(float),
    st.sampled_from([0.0, -0.0, 0.1 + 0.2, 1e15, -1e15, 1e15 - 1, 999999999999.5, 123456789012.5,
                     1234567890123.5, 5e-324, 1.7976931348623157e308, 1e23, 12.34, -1.5e-07]),
)


class Catalogue:
    def __init__(self) -> None:
        self.by_id: dict[int, tuple[str, Labels, int]] = {}

    def series(self, series_id: int) -> tuple[str, Labels, int]:
        return self.by_id[series_id]


@settings(max_examples=300, deadline=None)
@given(value=VALUES)
def test_a_value_is_written_as_naming_number_writes_it(value: float) -> None:
    # the rule itself, without the shortcut that number() and the encoder take
    reference = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(float(f"{value:.12g}"))
    assert number(value) == reference
    catalogue = Catalogue()
    catalogue.by_id[1] = (NAMES[0], make_labels(interface="usb0"), 0)
    body = VmRowEncoder(VmSeriesHeads("box")).encode([(BASE_MS, 1, value)], catalogue)
    assert f'"values":[{number(value)}],'.encode() in body
    heads = VmSeriesHeads("box")
    assert body == vm_jsonl(heads, [Sample(NAMES[0], value, BASE_MS, make_labels(interface="usb0"))])


@settings(max_examples=80, deadline=None)
@given(rounds=st.lists(st.lists(st.tuples(st.integers(1, 12), VALUES), max_size=30), min_size=1, max_size=4),
       shuffle=st.randoms(use_true_random=False))
def test_rounds_sharing_timestamps_encode_as_their_samples(rounds: list[list[tuple[int, float]]],
                                                          shuffle: st.SearchStrategy[object]) -> None:
    catalogue = Catalogue()
    for sid in range(1, 13):
        catalogue.by_id[sid] = (NAMES[sid % 3], make_labels(interface=f"usb{sid // 3}"), 0)
    rows = []
    for index, found in enumerate(rounds):
        ts = BASE_MS + index * 5000
        rows.extend({sid: (ts, sid, value) for sid, value in found}.values())  # one per key
    if rows:
        shuffle.shuffle(rows)  # type: ignore[attr-defined]  # series out of time order too
    samples = [Sample(*catalogue.series(sid)[:1], value, ts, catalogue.series(sid)[1]) for ts, sid, value in rows]
    encoder = VmRowEncoder(VmSeriesHeads("box"))
    assert encoder.encode(rows, catalogue) == vm_jsonl(VmSeriesHeads("box"), samples)
    assert encoder.encode(rows, catalogue) == vm_jsonl(VmSeriesHeads("box"), samples)  # heads cached
