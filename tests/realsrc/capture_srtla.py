"""Capture what a real irlserver srtla_rec serves on its Prometheus endpoint, for fixtures.

    SRTLA_BUILD=DIR .venv/bin/python -m tests.realsrc.capture_srtla tests/fixtures/srt/srtla-real

DIR holds `srtla_rec` and `srtla_send` built from irlserver/srtla (see the PROVENANCE file
beside the fixtures for the exact sources and build; no upstream code is in this
repository). Everything runs on loopback with free ports:

    Feeder (250 datagrams/s of MPEG-TS null packets) -> srt-live-transmit (SRT caller)
      -> srtla_send, two links from 127.0.0.1 and 127.0.0.2 -> srtla_rec --metrics_detail
      -> srt-live-transmit (SRT listener) -> /dev/null

and writes the /metrics bodies verbatim:

- metrics_summary_idle.txt: a second srtla_rec without --metrics_detail, nobody connected;
- metrics_idle.txt: --metrics_detail, nobody connected;
- metrics_streaming_1.txt, _2.txt: both links up and streaming, about 3 s apart;
- metrics_link_rejoined_overlap.txt: link 127.0.0.2 was dropped from srtla_send's IP list
  and put back (SIGHUP each time), so srtla_send opened a new socket for it: the old
  connection (no more packets, idle time growing) and the new one are both listed;
- metrics_link_rejoined.txt: after srtla_rec dropped the old connection (CONN_TIMEOUT).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.helpers import free_port
from tests.integration.test_srt_real import udp_port
from tests.realsrc.harness import Feeder


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def values(body: str, name: str) -> dict[str, float]:
    """Label set (as written) -> value, for one metric name."""
    out: dict[str, float] = {}
    for line in body.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if match:
            out[match.group(1) or ""] = float(match.group(2))
    return out


def wait_for(what: str, check: Callable[[], bool], timeout: float, port: int) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    try:
        last = "\n".join(line for line in scrape(port).splitlines() if not line.startswith("#"))
    except OSError as exc:
        last = str(exc)
    raise SystemExit(f"timed out waiting for {what}; last answer:\n{last}")


def main(out: Path) -> None:
    build = Path(os.environ.get("SRTLA_BUILD", ""))
    rec, send = build / "srtla_rec", build / "srtla_send"
    slt = shutil.which("srt-live-transmit")
    if not (rec.is_file() and send.is_file()):
        raise SystemExit("set SRTLA_BUILD to a directory with srtla_rec and srtla_send")
    if not slt:
        raise SystemExit("srt-live-transmit (Debian srt-tools) is needed")
    out.mkdir(parents=True, exist_ok=True)

    groups: set[str] = set()

    def save(name: str, body: str) -> None:
        (out / name).write_text(body)
        groups.update(re.findall(r'group="(\d+)"', body))
        print(name, file=sys.stderr)

    procs: list[subprocess.Popen[bytes]] = []

    def start(*argv: str, log: Path) -> subprocess.Popen[bytes]:
        handle = log.open("wb")
        # srt-live-transmit's listener writes the media to stdout; the others log there.
        stdout = subprocess.DEVNULL if argv[0] == slt else handle
        proc = subprocess.Popen(list(argv), stdout=stdout, stderr=handle)
        procs.append(proc)
        return proc

    with tempfile.TemporaryDirectory(prefix="srtla-capture-") as tmp_name:
        tmp = Path(tmp_name)
        srt_port, srtla_port, send_port, input_port = udp_port(), udp_port(), udp_port(), udp_port()
        metrics_port, summary_port = free_port(), free_port()
        summary_srtla_port = udp_port()
        ips = tmp / "ips"
        ips.write_text("127.0.0.1\n127.0.0.2\n")
        feeder: Feeder | None = None
        try:
            start(slt, f"srt://127.0.0.1:{srt_port}?mode=listener&latency=200", "file://con",
                  log=tmp / "listener.log")
            start(str(rec), "--srtla_port", str(srtla_port), "--srt_hostname", "127.0.0.1",
                  "--srt_port", str(srt_port), "--metrics_bind", "127.0.0.1",
                  "--metrics_port", str(metrics_port), "--metrics_detail", log=tmp / "rec.log")
            start(str(rec), "--srtla_port", str(summary_srtla_port), "--srt_hostname", "127.0.0.1",
                  "--srt_port", str(udp_port()), "--metrics_bind", "127.0.0.1",
                  "--metrics_port", str(summary_port), log=tmp / "rec-summary.log")
            wait_for("srtla_rec metrics", lambda: bool(scrape(metrics_port)), 15, metrics_port)
            wait_for("srtla_rec summary metrics", lambda: bool(scrape(summary_port)), 15, summary_port)
            save("metrics_summary_idle.txt", scrape(summary_port))
            save("metrics_idle.txt", scrape(metrics_port))

            sender = start(str(send), str(send_port), "127.0.0.1", str(srtla_port), str(ips),
                           log=tmp / "send.log")
            start(slt, f"udp://127.0.0.1:{input_port}", f"srt://127.0.0.1:{send_port}?latency=200",
                  log=tmp / "caller.log")
            feeder = Feeder(input_port)

            def streaming() -> bool:
                body = scrape(metrics_port)
                received = values(body, "srtla_conn_packets_received_total")
                return (values(body, "srtla_connections").get("") == 2
                        and values(body, "srtla_groups_established").get("") == 1
                        and len(received) == 2 and all(v > 0 for v in received.values()))

            wait_for("both links streaming", streaming, 30, metrics_port)
            time.sleep(3)
            save("metrics_streaming_1.txt", scrape(metrics_port))
            time.sleep(3)
            save("metrics_streaming_2.txt", scrape(metrics_port))

            before = set(values(scrape(metrics_port), "srtla_conn_idle_seconds"))
            ips.write_text("127.0.0.1\n")
            sender.send_signal(signal.SIGHUP)
            time.sleep(2)
            ips.write_text("127.0.0.1\n127.0.0.2\n")
            sender.send_signal(signal.SIGHUP)

            def remotes() -> set[str]:
                return set(values(scrape(metrics_port), "srtla_conn_idle_seconds"))

            wait_for("the new connection of link 127.0.0.2", lambda: bool(remotes() - before), 30, metrics_port)
            time.sleep(2)
            save("metrics_link_rejoined_overlap.txt", scrape(metrics_port))
            wait_for("srtla_rec to drop the old connection",
                     lambda: len(now := remotes()) == 2 and len(now & before) == 1, 45, metrics_port)
            save("metrics_link_rejoined.txt", scrape(metrics_port))
        finally:
            if feeder is not None:
                feeder.close()
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            for group in groups - {"0"}:  # srtla_rec's socket info file, left when it is stopped
                Path("/tmp", f"srtla-group-{group}").unlink(missing_ok=True)
            for log in sorted(tmp.glob("*.log")):
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/srt/srtla-real"))
