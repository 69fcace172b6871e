"""The one collector interface and the registry that names collectors.

A collector module defines a factory and registers it under the name operators write in
the `metrics:` list of the config. The factory receives the metric's validated settings and
a context (filesystem roots, clock, logger); the collector it returns is called on the
metric's interval with the wall-clock time in milliseconds and returns samples. It keeps
whatever state it needs between calls (previous counters for rates).

A collector raises ``CollectorError`` (or any exception) when it cannot produce data; the
scheduler logs and counts the failure and carries on. It never returns fake zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from belabox_metrics.clock import Clock
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.model import Sample
from belabox_metrics.validation import ConfigError, Reader


class CollectorError(Exception):
    """A collector could not produce samples this time (source missing, unreadable...)."""


class Collector(Protocol):
    def collect(self, now_ms: int) -> list[Sample]: ...


@dataclass(frozen=True)
class MetricSettings:
    """One validated entry of the config's `metrics:` list."""

    name: str
    interval: float
    enabled: bool = True
    mock: bool = False
    # Collector-specific options, parsed by the collector's own ``parse_options``.
    options: Any = None


@dataclass(frozen=True)
class CollectorContext:
    fs: FsRoot
    clock: Clock
    device_id: str
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("belabox_metrics"))


def no_options(reader: Reader) -> None:
    return None


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    factory: Callable[[MetricSettings, CollectorContext], Collector]
    description: str
    default_interval: float
    # Reads this collector's own keys from its `metrics:` entry; unknown keys are then
    # rejected by the config loader.
    parse_options: Callable[[Reader], Any] = no_options
    # Whether `mock: true` is meaningful for this collector.
    supports_mock: bool = False


_REGISTRY: dict[str, CollectorSpec] = {}


def register(spec: CollectorSpec) -> CollectorSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"collector {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def registry() -> Mapping[str, CollectorSpec]:
    # Importing the package registers every collector module in it.
    import belabox_metrics.collectors  # noqa: F401

    return _REGISTRY


def lookup(name: str, key: str) -> CollectorSpec:
    specs = registry()
    if name not in specs:
        import difflib

        close = difflib.get_close_matches(name, list(specs), n=1)
        fix = f"did you mean {close[0]!r}?" if close else "use one of: " + ", ".join(sorted(specs))
        raise ConfigError(key, f"{name!r} is not a known metric", fix)
    return specs[name]
