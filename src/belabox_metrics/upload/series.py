"""Grouping by series, shared by the wire formats: each series' labels as the remote stores
them, and a cache of each series' encoded head."""

from __future__ import annotations

from typing import Generic, TypeVar

from belabox_metrics.model import Labels
from belabox_metrics.naming import promql_label, promql_name

Head = TypeVar("Head", str, bytes)


def series_labels(device_id: str, name: str, labels: Labels) -> dict[str, str]:
    """A series' labels as VictoriaMetrics stores them: ``__name__``, ``device_id``, the rest."""
    metric = {"__name__": promql_name(name), "device_id": device_id}
    for label, value in labels:
        metric[promql_label(label)] = value
    return metric


class SeriesHeads(Generic[Head]):
    """Caches each series' encoded head (what a format writes before its samples), built
    once per series from its labels by ``build``."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._heads: dict[tuple[str, Labels], Head] = {}

    def head(self, name: str, labels: Labels) -> Head:
        key = (name, labels)
        found = self._heads.get(key)
        if found is None:
            found = self._heads[key] = self.build(series_labels(self.device_id, name, labels))
        return found

    def build(self, metric: dict[str, str]) -> Head:
        raise NotImplementedError
