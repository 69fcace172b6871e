"""Capture what the real OpenIRL srt-live-server answers, for the unit tests' fixtures.

    .venv/bin/python -m tests.realsrc.capture_sls tests/fixtures/srt/openirl-real

Builds/starts ../shared/realsrc/sls on loopback, maps publisher `studio_1` to player `play_1`,
and writes the JSON answers (pretty-printed, otherwise verbatim):

- stats_modern_idle.json / stats_legacy_idle.json: /stats/play_1 and ?legacy=1, nobody
  publishing;
- stats_unknown_player.json: /stats/nobody (an unmapped player key);
- stats_modern_live_1.json, _2.json / stats_legacy_live_1.json, _2.json: while
  srt-live-transmit publishes 250 datagrams/s of MPEG-TS null packets through a relay that
  drops 4 % of the SRT data packets, ~3 s and ~6 s into the stream;
- stats_legacy_reconnected.json: ~2 s after the publisher reconnected (new SRT connection).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port
from tests.integration.test_srt_real import LossyRelay, udp_port
from tests.realsrc.harness import Feeder, Sls, sls_binary


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slt = shutil.which("srt-live-transmit")
    assert slt, "srt-live-transmit (srt-tools) is needed"

    def save(name: str, payload: object) -> None:
        (out / name).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        print(name, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="sls-capture-") as tmp:
        server = Sls(sls_binary(), Path(tmp), free_port(), udp_port(), udp_port())
        relay = LossyRelay(server.publisher_port, drop_share=0.04, seed=3)
        relay.thread.start()
        feeder = Feeder(input_port := udp_port())
        procs: list[subprocess.Popen[bytes]] = []

        def publish() -> None:
            procs.append(subprocess.Popen([slt, f"udp://127.0.0.1:{input_port}",
                                           f"srt://127.0.0.1:{relay.port}?streamid=studio_1&latency=500"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        try:
            server.start()
            server.map_stream("studio_1", "play_1")
            save("stats_modern_idle.json", server.get("/stats/play_1"))
            save("stats_legacy_idle.json", server.get("/stats/play_1?legacy=1"))
            save("stats_unknown_player.json", server.get("/stats/nobody"))
            publish()
            for n in (1, 2):
                time.sleep(3)
                save(f"stats_modern_live_{n}.json", server.get("/stats/play_1"))
                save(f"stats_legacy_live_{n}.json", server.get("/stats/play_1?legacy=1"))
            procs[-1].terminate()
            procs[-1].wait(timeout=10)
            publish()
            time.sleep(2)
            save("stats_legacy_reconnected.json", server.get("/stats/play_1?legacy=1"))
            print(f"relay dropped {relay.originals_dropped}/{relay.originals_seen} originals", file=sys.stderr)
        finally:
            feeder.close()
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
            server.stop()
            relay.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/srt/openirl-real"))
