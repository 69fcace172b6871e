"""No secret on any surface (issue 17): an auth proxy whose error bodies echo the credential
it refused (vmauth-style `auth token "Bearer ..." is not valid here`) must not make the
agent show the token anywhere: /health, /metrics, `status`, `query`, `dead-letters`, its
log, or the bytes of its database (dead-letter reasons included, WAL too)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.fault.support import ENV, start_agent, stop_agent
from tests.helpers import cli, free_port, wait_for_port

TOKEN = "planted-Secret-7f3a9c2e"


class EchoingProxy:
    """Refuses every upload, echoing the Authorization header in three ways: a 401, a
    vmauth-style 400, and a receiver-style 400 naming the first sample (a dead letter)."""

    def __init__(self) -> None:
        self.requests = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = self.headers.get("Authorization", "")
                with proxy.lock:
                    proxy.requests += 1
                    n = proxy.requests
                if n % 3 == 1:
                    status, body = 401, f'auth token "{auth}" is not valid here'.encode()
                elif n % 3 == 2:
                    status, body = 400, f"cannot authorize request with auth tokens [{auth}]".encode()
                else:
                    status, body = 400, json.dumps({"success": False,
                                                    "error": f"metrics[0].value: refused for {auth}"}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


def test_a_planted_token_shows_on_no_surface(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    proxy = EchoingProxy()
    health_port = free_port()
    db = tmp_path / "agent.db"
    config = tmp_path / "config.yaml"
    config.write_text(f"""
device: {{id: secret-box}}
storage: {{path: {db}}}
remote:
  url: http://127.0.0.1:{proxy.port}/api/metrics
  format: json
  interval: 300ms
  timeout: 2s
  token_file: {token_file}
  retry: {{max_attempts: 1, backoff_base: 100ms, backoff_max: 200ms, jitter: 0}}
health: {{listen: "127.0.0.1:{health_port}"}}
logging: {{level: debug, format: json}}
metrics:
  - {{name: cpu.temperature, interval: 100ms, mock: true}}
""")
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    surfaces: dict[str, str] = {}
    try:
        wait_for_port("127.0.0.1", health_port, timeout=60, proc=agent)
        deadline = time.monotonic() + 90
        while True:
            health = get(f"http://127.0.0.1:{health_port}/health")
            dead = subprocess.run([*cli("metrics-collector"), "dead-letters", "--config", str(config)],
                                  env=ENV, capture_output=True, text=True, timeout=60).stdout
            if proxy.requests >= 9 and "***" in health and "no dead letters" not in dead:
                break
            assert agent.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"no refusal shown yet ({proxy.requests} requests): {health}"
            time.sleep(0.5)
        surfaces["/health"] = health
        surfaces["/metrics"] = get(f"http://127.0.0.1:{health_port}/metrics")
        for command in (["status"], ["query", "--last", "200"], ["dead-letters", "--last", "100"]):
            result = subprocess.run([*cli("metrics-collector"), *command, "--config", str(config)],
                                    env=ENV, capture_output=True, text=True, timeout=60)
            surfaces[" ".join(command)] = result.stdout + result.stderr
    finally:
        stop_agent(agent)
        proxy.close()
    surfaces["log"] = log.read_text()
    for path in sorted(tmp_path.glob("agent.db*")):
        surfaces[path.name] = path.read_bytes().decode("latin-1")

    leaks = [name for name, text in surfaces.items() if TOKEN in text or TOKEN[:12] in text]
    assert not leaks, f"the token shows on {leaks}"
    # The refusals did reach those surfaces, masked: the check above is not vacuous.
    assert "***" in surfaces["/health"] and "***" in surfaces["status"]
    assert "***" in surfaces["dead-letters --last 100"]
    assert "***" in surfaces["log"]
