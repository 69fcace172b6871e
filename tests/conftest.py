"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, require_tool
from tests.vm import VictoriaMetrics, vm_available


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A real VictoriaMetrics with dedup on, on 127.0.0.1:<free port>, temp data dir."""
    binary = vm_available() or require_tool("victoria-metrics", "victoria-metrics")
    vm = VictoriaMetrics(binary, tmp_path / "vm-data", free_port())
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()
