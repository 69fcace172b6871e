"""A running agent shows which SRT source fails (issue 18): /health lists
collectors.srt.sources, `metrics-collector status` prints the failing source with its
reason, and both clear once the source answers again."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fault.support import ENV, start_agent, stop_agent
from tests.helpers import REPO_ROOT, cli, free_port, wait_for_port

LIVE = (REPO_ROOT / "tests" / "fixtures" / "srt" / "openirl-real" / "stats_legacy_live_1.json").read_bytes()


def serve_stats(port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(LIVE)))
            self.end_headers()
            self.wfile.write(LIVE)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def srt_sources(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
        doc = json.loads(answer.read())
    srt = doc["components"]["collectors"]["collectors"].get("srt", {})
    return list(srt.get("sources", []))


def wait_sources(port: int, check: Any, what: str, agent: subprocess.Popen[bytes], log: Path) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        try:
            sources = srt_sources(port)
        except OSError:
            sources = []
        if sources and check(sources):
            return sources
        assert agent.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"no {what} in 60 s: {sources}"
        time.sleep(0.3)


def test_a_failing_source_shows_on_health_and_status_and_clears(tmp_path: Path) -> None:
    good = serve_stats(free_port())
    down_port = free_port()  # nothing listens yet
    health_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
device: {{id: source-health-box}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote: {{url: "http://127.0.0.1:9/api/v1/import", enabled: false}}
health: {{listen: "127.0.0.1:{health_port}"}}
logging: {{level: info, format: json}}
metrics:
  - name: srt
    interval: 300ms
    sources:
      - {{type: sls, url: "http://127.0.0.1:{good.server_address[1]}/stats?legacy=1", stream: live}}
      - {{type: sls, url: "http://127.0.0.1:{down_port}/stats?legacy=1", stream: live}}
""")
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    down = None
    try:
        wait_for_port("127.0.0.1", health_port, timeout=60, proc=agent)
        sources = wait_sources(health_port, lambda s: s[1]["status"] == "failing" and s[0]["status"] == "ok",
                               "failing sls#1", agent, log)
        assert [s["name"] for s in sources] == ["sls#0", "sls#1"]
        assert sources[0]["last_error"] is None
        assert sources[1]["last_error"] == "connection refused (server down or wrong port?)"
        status = subprocess.run([*cli("metrics-collector"), "status", "--config", str(config)],
                                env=ENV, capture_output=True, text=True, timeout=60).stdout
        assert (f"source srt/sls#1 (sls http://127.0.0.1:{down_port}) failing" in status
                and "connection refused (server down or wrong port?)" in status), status
        assert "sls#0" not in status

        down = serve_stats(down_port)
        sources = wait_sources(health_port, lambda s: all(x["status"] == "ok" for x in s), "recovery",
                               agent, log)
        assert [s["last_error"] for s in sources] == [None, None]
        status = subprocess.run([*cli("metrics-collector"), "status", "--config", str(config)],
                                env=ENV, capture_output=True, text=True, timeout=60).stdout
        assert "source srt/" not in status, status
    finally:
        stop_agent(agent)
        good.shutdown()
        good.server_close()
        if down is not None:
            down.shutdown()
            down.server_close()
