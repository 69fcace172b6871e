"""Audit: is what the agent recorded as delivered really in VictoriaMetrics, once?

VictoriaMetrics answers 204 to an import even when it skipped lines, so a 2xx proves
little. ``verify`` exports the time range back (``/api/v1/export``) and compares it,
sample by sample, with the samples the local database marks as sent.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from belabox_metrics.logs import foreign_text
from belabox_metrics.model import Labels
from belabox_metrics.naming import promql_label, promql_name
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.transport import Response

SampleKey = tuple[str, Labels, int]  # (PromQL name, labels incl. device_id, timestamp ms)


@dataclass
class VerifyReport:
    checked: int = 0
    in_remote: int = 0
    missing: list[SampleKey] = field(default_factory=list)
    duplicated: list[tuple[SampleKey, int]] = field(default_factory=list)
    value_mismatch: list[SampleKey] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.value_mismatch)


_CLUSTER_INSERT = re.compile(r"^(?P<base>.*)/insert/(?P<tenant>[0-9]+(?::[0-9]+)?)/prometheus(?:/.*)?$")


def export_url(url: str) -> str:
    """Where to export from, given the import URL (or ``--query-url``), on the same server:

    - ``.../api/v1/import`` or ``.../api/v1/write`` -> ``.../api/v1/export``;
    - a VictoriaMetrics cluster's vminsert path ``/insert/<accountID>/prometheus/...`` ->
      vmselect's ``/select/<accountID>/prometheus/api/v1/export`` (same host: right through a
      vmauth that routes both; a vminsert reached directly needs ``--query-url``);
    - ``.../api/v1/export`` as it is; anything else (``http://vmselect:8481/select/1/prometheus``)
      gets ``/api/v1/export`` appended.
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    cluster = _CLUSTER_INSERT.match(path)
    if cluster:
        path = f"{cluster['base']}/select/{cluster['tenant']}/prometheus/api/v1/export"
    elif path.endswith("/api/v1/export"):
        pass
    elif path.endswith(("/api/v1/import", "/api/v1/write")):
        path = path[: path.rindex("/")] + "/export"
    else:
        path = path.rstrip("/") + "/api/v1/export"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def sent_samples(queue: SampleQueue, destination: str, device_id: str, since_ms: int,
                 until_ms: int | None = None) -> dict[SampleKey, float]:
    """What the agent recorded as delivered to ``destination`` since ``since_ms``, keyed
    as VictoriaMetrics stores it. Text samples and dead letters were never sent."""
    dead = {(r.ts, r.series_id) for r, _ in queue.dead_letters(destination)}
    out: dict[SampleKey, float] = {}
    for row, sent in queue.recent(None, 10**12, destination):
        sample = row.sample
        if not sent or sample.value is None or row.ts < since_ms or row.key in dead:
            continue
        if until_ms is not None and row.ts > until_ms:
            continue
        labels = tuple(sorted([("device_id", device_id),
                               *((promql_label(k), v) for k, v in sample.labels)]))
        out[(promql_name(sample.name), labels, row.ts)] = sample.value
    return out


class Getter(Protocol):
    def get(self, url: str, headers: Mapping[str, str]) -> Response: ...


class ExportError(Exception):
    """VictoriaMetrics did not give the export (an HTTP status other than 200)."""


def fetch_export(transport: Getter, url: str, device_id: str, since_ms: int,
                 headers: Mapping[str, str]) -> list[Mapping[str, object]]:
    """The export, over the agent's own transport (same proxy, TLS options and token as the
    uploads: verify and the agent agree on where VictoriaMetrics is and how to reach it)."""
    query = urllib.parse.urlencode({"match[]": f'{{device_id="{device_id}"}}', "start": str(since_ms // 1000)})
    answer = transport.get(f"{url}?{query}", headers)
    if answer.status != 200:
        raise ExportError(f"HTTP {answer.status}: {foreign_text(answer.body)}")
    return [json.loads(line) for line in answer.body.decode().splitlines() if line.strip()]


def remote_counts(lines: Iterable[Mapping[str, object]]) -> tuple[Counter[SampleKey], dict[SampleKey, float]]:
    counts: Counter[SampleKey] = Counter()
    values: dict[SampleKey, float] = {}
    for line in lines:
        metric = dict(line["metric"])  # type: ignore[call-overload]
        name = str(metric.pop("__name__"))
        labels = tuple(sorted((str(k), str(v)) for k, v in metric.items()))
        for ts, value in zip(line["timestamps"], line["values"], strict=True):  # type: ignore[call-overload]
            key = (name, labels, int(ts))
            counts[key] += 1
            values[key] = float(value)
    return counts, values


def compare(local: Mapping[SampleKey, float], counts: Counter[SampleKey],
            values: Mapping[SampleKey, float]) -> VerifyReport:
    report = VerifyReport(checked=len(local), in_remote=sum(counts.values()))
    for key, value in local.items():
        found = counts.get(key, 0)
        if found == 0:
            report.missing.append(key)
        elif found > 1:
            report.duplicated.append((key, found))
        elif not math.isclose(values[key], value, rel_tol=1e-11, abs_tol=1e-12):
            # VictoriaMetrics stores a decimal mantissa of 12 digits: the 17th digit may differ,
            # and a remote-write double may land one unit off in the 12th.
            report.value_mismatch.append(key)
    return report
