"""The benchmark script runs (a few cycles on the RK3588 fixture tree) and reports µs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "tests" / "fixtures" / "proc-sys" / "rk3588-under-load" / "after"


def test_bench_runs_on_a_fixture_tree(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_collect", REPO / "bench" / "bench_collect.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--cycles", "20", "--proc", str(TREE / "proc"),
                        "--sys", str(TREE / "sys")]) == 0
    out = capsys.readouterr().out
    match = re.search(r"6 collectors, (\d+) samples built:\s+([\d.]+) µs/cycle", out)
    assert match, out
    # A static tree: no CPU time passes, so no usage. cpu 3 policies x 2 + 1, memory 5,
    # disk 2 x 9 + 1, network 4 x 11 + 1, thermal 7 x 2, system 5.
    assert int(match.group(1)) == 95
    assert float(match.group(2)) > 0
