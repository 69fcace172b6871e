"""A real VictoriaMetrics on 127.0.0.1 for tests and benchmarks (Debian `victoria-metrics`).

The flags are the ones docs/victoriametrics-setup.md and docker/docker-compose.yml use:
``-dedup.minScrapeInterval=1ms`` makes a re-sent sample (same series, same millisecond) a
no-op, which is what turns the agent's at-least-once delivery into exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

VM_BINARY = "/usr/bin/victoria-metrics"
VM_FLAGS = ("-dedup.minScrapeInterval=1ms", "-retentionPeriod=100y", "-search.latencyOffset=0s",
            "-search.disableCache", "-loggerLevel=ERROR")


def vm_available() -> str | None:
    return shutil.which("victoria-metrics") or (VM_BINARY if os.access(VM_BINARY, os.X_OK) else None)


class VictoriaMetrics:
    def __init__(self, binary: str, data_dir: Path, port: int, *, dedup: bool = True) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port
        self.flags = [f for f in VM_FLAGS if dedup or not f.startswith("-dedup")]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def import_url(self) -> str:
        return f"{self.url}/api/v1/import"

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir.parent / f"vm-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.data_dir}",
             *self.flags],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("victoria-metrics did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def flush(self) -> None:
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass

    def export(self, match: str = '{__name__!=""}', start: str = "0") -> list[dict[str, object]]:
        """Every series line VM holds for ``match`` (after a flush)."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": match, "start": start})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=60) as answer:
            return [json.loads(line) for line in answer.read().decode().splitlines() if line.strip()]

    def samples(self, match: str = '{__name__!=""}') -> list[tuple[str, tuple[tuple[str, str], ...], int, float]]:
        """(name, labels without __name__, timestamp_ms, value) for every stored sample."""
        out = []
        for line in self.export(match):
            metric = dict(line["metric"])  # type: ignore[call-overload]
            name = str(metric.pop("__name__"))
            labels = tuple(sorted((str(k), str(v)) for k, v in metric.items()))
            for ts, value in zip(line["timestamps"], line["values"], strict=True):  # type: ignore[call-overload]
                out.append((name, labels, int(ts), float(value)))
        return out

    def query(self, promql: str) -> dict[str, object]:
        query = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=30) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
