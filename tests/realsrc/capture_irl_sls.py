"""Capture what the real irlserver/irl-srt-server answers on /stats, for the replay tests.

    .venv/bin/python -m tests.realsrc.capture_irl_sls tests/fixtures/srt/irl-srt-server-real

Builds it (tests/realsrc/build_irl_sls.sh) and runs it twice on loopback: without
`api_keys` ("open") and with `api_keys` set to KEY ("keyed"). srt-live-transmit publishes
`publish/live/feed1` (250 datagrams/s of MPEG-TS null packets through a relay that drops
4 % of the SRT data packets). Each answer is written verbatim as JSON (pretty-printed) to
NAME.json; answers.json lists, for each, the server's config, the request path, the
Authorization header sent (none, the raw key, a wrong key, `Bearer KEY`, Basic) and the
HTTP status, so tests/irl_replay.py can serve them as the server did.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers import free_port
from tests.integration.test_srt_real import LossyRelay, udp_port
from tests.realsrc.harness import Feeder, IrlSls, irl_sls_binary

KEY = "capture-api-key-5b1d"  # a throwaway key of the capture's own server, not a secret
PUBLISHER = "publish/live/feed1"
AUTH = {
    "none": None,
    "key": KEY,
    "wrong": "not-the-key-0000",
    "bearer": f"Bearer {KEY}",
    "basic": "Basic " + base64.b64encode(f"admin:{KEY}".encode()).decode(),
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slt = shutil.which("srt-live-transmit")
    assert slt, "srt-live-transmit (srt-tools) is needed"
    binary = irl_sls_binary()
    index: list[dict[str, Any]] = []

    def capture(server: IrlSls, config: str, name: str, path: str, auth: str) -> Any:
        status, body = server.get(path, AUTH[auth])
        (out / f"{name}.json").write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
        index.append({"file": f"{name}.json", "config": config, "path": path,
                      "authorization": auth, "status": status})
        print(f"{name}: HTTP {status}", file=sys.stderr)
        return body

    for config in ("open", "keyed"):
        with tempfile.TemporaryDirectory(prefix="irl-sls-capture-") as tmp:
            server = IrlSls(binary, Path(tmp), free_port(), udp_port(), udp_port(),
                            api_key=KEY if config == "keyed" else None)
            relay = LossyRelay(server.publisher_port, drop_share=0.04, seed=3)
            relay.thread.start()
            feeder = Feeder(input_port := udp_port())
            proc: subprocess.Popen[bytes] | None = None
            query = f"/stats?publisher={PUBLISHER}"
            try:
                server.start()
                capture(server, config, f"{config}_idle_publisher", query, "none")
                capture(server, config, f"{config}_idle_all", "/stats", "none")
                proc = subprocess.Popen([slt, f"udp://127.0.0.1:{input_port}",
                                         f"srt://127.0.0.1:{relay.port}?streamid={PUBLISHER}&latency=500"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 30
                while not server.get(query)[1].get("publishers"):
                    assert time.monotonic() < deadline, f"no publisher after 30 s: {server.log_tail()}"
                    time.sleep(0.2)
                time.sleep(3)
                capture(server, config, f"{config}_live_publisher_1", query, "none")
                time.sleep(3)
                capture(server, config, f"{config}_live_publisher_2", query, "none")
                capture(server, config, f"{config}_live_app_only", "/stats?publisher=live", "none")
                capture(server, config, f"{config}_live_stream_only", "/stats?publisher=feed1", "none")
                for auth in AUTH:
                    if config == "open" and auth not in ("none", "key"):
                        continue
                    capture(server, config, f"{config}_live_all_{auth}", "/stats", auth)
                if config == "keyed":
                    capture(server, config, "keyed_live_publisher_key", query, "key")
                    capture(server, config, "keyed_live_publisher_wrong", query, "wrong")
                print(f"relay dropped {relay.originals_dropped}/{relay.originals_seen} originals",
                      file=sys.stderr)
            finally:
                feeder.close()
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=10)
                server.stop()
                relay.close()
    (out / "answers.json").write_text(json.dumps({"key": KEY, "answers": index}, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/srt/irl-srt-server-real"))
