"""Data-driven tests of the host collectors against captured and built /proc + /sys trees.

Each folder under tests/fixtures/proc-sys/ is one case: ``case.json`` (which collectors,
their options, how far the fake clock advances between snapshots), the tree itself (one
snapshot at the folder's top, or ``before/`` and ``after/``), and ``expected.json``: every
sample each collector must return for each snapshot, or the error it must raise.

The collectors read a temporary copy of the tree through the same FsRoot/KernelFile code as
on a device. For the second snapshot the copy's files are rewritten in place, so the
collectors' open descriptors see the new contents, as with the kernel's files. A file
``X.errno`` (holding e.g. ``EINVAL``) makes reading ``X`` fail with that errno, as a sensor
driver does; that is the only thing the tests' FsRoot adds.

To regenerate expected.json after a deliberate change: REGENERATE_EXPECTED=1 pytest
tests/unit/test_collectors_fixtures.py, then review the diff by hand.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from belabox_metrics.clock import FakeClock, wall_ms
from belabox_metrics.collectors.base import (
    Collector,
    CollectorContext,
    CollectorError,
    MetricSettings,
    registry,
)
from belabox_metrics.collectors.procfs import FsRoot, KernelFile
from belabox_metrics.model import Sample
from belabox_metrics.validation import Reader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc-sys"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "case.json").is_file())
REGENERATE = os.environ.get("REGENERATE_EXPECTED") == "1"


class ErrnoFile(KernelFile):
    """A KernelFile whose read fails with the errno named in ``<path>.errno`` when that
    marker exists (checked on every read: a sensor can fail in one cycle and not the next)."""

    def read_bytes(self) -> bytes:
        fail_with(self.path)
        return super().read_bytes()


def fail_with(path: str) -> None:
    marker = path + ".errno"
    if os.path.exists(marker):
        with open(marker, encoding="ascii") as handle:
            name = handle.read().strip()
        code = getattr(errno, name)
        raise OSError(code, os.strerror(code), path)


class FixtureFs(FsRoot):
    def open_file(self, path: str, *, sequential: bool = False) -> KernelFile:
        return ErrnoFile(path, sequential=sequential)

    def read_sys(self, *parts: str) -> str:
        fail_with(self.sys_path(*parts))
        return super().read_sys(*parts)

    def read_proc(self, *parts: str) -> str:
        fail_with(self.proc_path(*parts))
        return super().read_proc(*parts)


def sync_tree(source: Path, target: Path) -> None:
    """Make ``target`` hold exactly ``source``'s files, rewriting existing files in place."""
    wanted = {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
    if target.exists():
        for path in sorted(target.rglob("*"), reverse=True):
            relative = path.relative_to(target)
            if path.is_file() and relative not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    for relative in sorted(wanted):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(destination, "wb") as handle:  # same inode: open descriptors see it
            handle.write((source / relative).read_bytes())


def build(name: str, options: dict[str, Any], ctx: CollectorContext, mock: bool = False) -> Collector:
    spec = registry()[name]
    reader = Reader(options, f"metrics.{name}")
    parsed = spec.parse_options(reader)
    reader.finish()
    return spec.factory(MetricSettings(name, 5.0, mock=mock, options=parsed), ctx)


def sample_rows(samples: list[Sample]) -> list[list[Any]]:
    return [[s.name, dict(s.labels), s.value]
            for s in sorted(samples, key=lambda s: (s.name, s.labels))]


def run_collector(collector: Collector, now_ms: int, root: Path) -> dict[str, Any]:
    try:
        samples = collector.collect(now_ms)
    except CollectorError as exc:
        return {"error": str(exc).replace(str(root), "<root>")}
    for sample in samples:
        assert sample.timestamp_ms == now_ms
        assert sample.value is not None and math.isfinite(sample.value), sample
        assert sample.value >= 0 or sample.name == "thermal.zone_celsius", sample
    keys = [(s.name, s.labels) for s in samples]
    assert len(keys) == len(set(keys)), f"duplicate series in {keys}"
    return {"samples": sample_rows(samples)}


def run_case(case_dir: Path, tmp: Path) -> dict[str, dict[str, Any]]:
    case = json.loads((case_dir / "case.json").read_text(encoding="utf-8"))
    steps = ["before", "after"] if (case_dir / "before").is_dir() else ["."]
    root = tmp / "root"
    fs = FixtureFs(proc=str(root / "proc"), sys=str(root / "sys"))
    clock = FakeClock(wall=1_700_000_000.0, monotonic=1000.0)
    ctx = CollectorContext(fs=fs, clock=clock, device_id="fixture")
    collectors: dict[str, Collector] = {}
    results: dict[str, dict[str, Any]] = {}
    for index, step in enumerate(steps):
        if index:
            clock.advance(case["advance_seconds"])
        sync_tree(case_dir / step, root)
        if not collectors:
            collectors = {name: build(name, options, ctx)
                          for name, options in case["collectors"].items()}
        now_ms = wall_ms(clock)
        results["snapshot" if step == "." else step] = {
            name: run_collector(collector, now_ms, root) for name, collector in collectors.items()
        }
    return results


def assert_same(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    if "error" in expected:
        assert "error" in actual, f"{where}: expected an error, got {actual}"
        assert expected["error"] in actual["error"]
        return
    assert "samples" in actual, f"{where}: {actual}"
    got = {(row[0], json.dumps(row[1], sort_keys=True)): row[2] for row in actual["samples"]}
    want = {(row[0], json.dumps(row[1], sort_keys=True)): row[2] for row in expected["samples"]}
    assert sorted(got) == sorted(want), (
        f"{where}: missing {sorted(set(want) - set(got))}, unexpected {sorted(set(got) - set(want))}")
    for key, value in want.items():
        if key[0].endswith(("_percent", "_per_second")):
            value = round(value, 2)  # the collectors round rates and usage to 2 decimals
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), f"{where}: {key}"


@pytest.mark.parametrize("case", CASES)
def test_fixture_case(case: str, tmp_path: Path) -> None:
    case_dir = FIXTURES / case
    actual = run_case(case_dir, tmp_path)
    expected_path = case_dir / "expected.json"
    if REGENERATE:
        expected_path.write_text(json.dumps(actual, indent=1) + "\n", encoding="utf-8")
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    assert sorted(actual) == sorted(expected)
    for step, by_collector in expected.items():
        assert sorted(actual[step]) == sorted(by_collector)
        for name, want in by_collector.items():
            assert_same(actual[step][name], want, f"{case}/{step}/{name}")


def test_every_case_has_expected_samples() -> None:
    assert len(CASES) >= 8
    for case in CASES:
        assert (FIXTURES / case / "expected.json").is_file(), case


def test_sync_tree_rewrites_in_place(tmp_path: Path) -> None:
    # The two-snapshot mechanism itself: an open KernelFile sees the second snapshot.
    first, second, target = tmp_path / "a", tmp_path / "b", tmp_path / "t"
    (first / "proc").mkdir(parents=True)
    (second / "proc").mkdir(parents=True)
    (first / "proc" / "x").write_text("1\n")
    (first / "proc" / "gone").write_text("old\n")
    (second / "proc" / "x").write_text("22\n")
    sync_tree(first, target)
    handle = KernelFile(str(target / "proc" / "x"))
    assert handle.read() == "1\n"
    sync_tree(second, target)
    assert handle.read() == "22\n"
    assert not (target / "proc" / "gone").exists()
    handle.close()
    shutil.rmtree(target)
