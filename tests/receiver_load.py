"""Concurrent maximal uploads against a metrics-receiver: the load of the memory test and
of bench/bench_receiver_memory.py.

Each sender posts bodies of the receiver's maximum size (valid data: as many small samples
as fit, gzip-compressed every other upload), one after another, retrying a 503 after its
Retry-After, until the load window closes; every upload has its own device id, so what the
receiver stored can be checked upload by upload.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from belabox_metrics.timefmt import format_ms

DEVICE_PLACEHOLDER = "device-placeholder-0000"


def maximal_body(size: int, now_ms: int) -> tuple[bytes, int]:
    """A valid upload of exactly ``size`` bytes and how many samples it holds.

    Small samples are what costs the receiver most memory per byte received. The device id
    is a fixed-width placeholder each upload replaces with its own.
    """
    head = f'{{"device_id":"{DEVICE_PLACEHOLDER}","timestamp":"{format_ms(now_ms)}","metrics":['
    parts: list[str] = []
    used = len(head) + 2
    start = now_ms - 3_600_000
    while True:
        item = json.dumps(
            {
                "name": "net.rx_bytes",
                "value": len(parts) * 1500,
                "timestamp": format_ms(start + len(parts)),
                "labels": {"iface": f"usb{len(parts) % 4}"},
            },
            separators=(",", ":"),
        )
        if used + len(item) + 1 > size:
            break
        parts.append(item)
        used += len(item) + 1
    body = (head + ",".join(parts) + "]}").encode().ljust(size)  # trailing blanks are JSON
    return body, len(parts)


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of a process: the most resident memory it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@dataclass
class Sender:
    index: int
    host: str
    port: int
    template: bytes
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    stored: dict[str, dict[str, object]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def run(self, start: threading.Barrier, load_until: float, deadline: float) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            start.wait()
            upload = 0
            while time.monotonic() < load_until and not self.problems:
                self.upload(conn, upload, deadline)
                upload += 1
        except Exception as exc:  # reported by the caller, not lost in a thread
            self.problems.append(f"sender {self.index}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def upload(self, conn: http.client.HTTPConnection, upload: int, deadline: float) -> None:
        device = f"s{self.index:02d}-u{upload:04d}".ljust(len(DEVICE_PLACEHOLDER), "x")
        body = self.template.replace(DEVICE_PLACEHOLDER.encode(), device.encode(), 1)
        headers = {"Content-Type": "application/json"}
        if (self.index + upload) % 2:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        while time.monotonic() < deadline:
            conn.request("POST", "/api/metrics", body=body, headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            retry_after = response.getheader("Retry-After")
            self.answers.append((response.status, retry_after))
            if 200 <= response.status < 300:
                self.stored[device] = answer
                return
            if response.status != 503 or retry_after is None:
                self.problems.append(f"{device}: {response.status} {answer}")
                return
            time.sleep(float(retry_after))  # the client's side of the protocol: as told
        self.problems.append(f"{device}: not stored before the deadline")


@dataclass
class LoadResult:
    senders: list[Sender]
    seconds: float

    @property
    def problems(self) -> list[str]:
        return [p for s in self.senders for p in s.problems]

    @property
    def answers(self) -> Counter[tuple[int, str | None]]:
        return Counter(a for s in self.senders for a in s.answers)

    @property
    def stored(self) -> dict[str, dict[str, object]]:
        return {device: answer for s in self.senders for device, answer in s.stored.items()}


def run_load(
    host: str, port: int, template: bytes, *, senders: int, load_s: float, deadline_s: float
) -> LoadResult:
    """``senders`` threads start at once; new uploads begin for ``load_s``, every upload
    begun must be stored within ``deadline_s``."""
    start = threading.Barrier(senders)
    begin = time.monotonic()
    group = [Sender(i, host, port, template) for i in range(senders)]
    threads = [
        threading.Thread(target=s.run, args=(start, begin + load_s, begin + deadline_s))
        for s in group
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline_s + 60)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError("a sender hung past the deadline")
    return LoadResult(group, time.monotonic() - begin)
