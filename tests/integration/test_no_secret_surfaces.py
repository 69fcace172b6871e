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
    """Refuses every upload, echoing the Authorization header (and ``also_echo``) in three
    ways: a 401, a vmauth-style 400, and a receiver-style 400 naming the first sample (a
    dead letter)."""

    def __init__(self, also_echo: str = "") -> None:
        self.requests = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = self.headers.get("Authorization", "") + also_echo
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


SRT_SECRETS = {
    "belaui-password": "belaUI-Pass-51c0d9",
    "sls-api-key": "sls-ApiKey-9e41b2",
    "mediamtx-credentials": "mtxuser:mtx-Pass-2f77a0",
    "srtla-credentials": "srtla:srtla-Pass-c13e58",
}


def test_srt_source_secrets_are_masked_from_the_start(tmp_path: Path) -> None:
    """`run` registers every SRT source's secret file at start (issue 18), not only when the
    source reads it: a belaUI that never answers never gets the password read, a disabled
    source never reads its files. An error body from elsewhere that shows them (here the
    upload's proxy) must still come out masked on /health, /metrics, the log and the DB."""
    files = {}
    for name, value in SRT_SECRETS.items():
        path = tmp_path / name
        path.write_text(value + "\n")
        path.chmod(0o600)
        files[name] = path
    echoed = " ".join(v.partition(":")[2] if ":" in v else v for v in SRT_SECRETS.values())
    proxy = EchoingProxy(also_echo=" " + echoed)
    health_port = free_port()
    closed = free_port()  # nothing listens: the belaUI login never happens
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
  retry: {{max_attempts: 1, backoff_base: 100ms, backoff_max: 200ms, jitter: 0}}
health: {{listen: "127.0.0.1:{health_port}"}}
logging: {{level: debug, format: json}}
metrics:
  - {{name: cpu.temperature, interval: 100ms, mock: true}}
  - name: srt
    interval: 500ms
    sources:
      - {{type: belaui, url: "ws://127.0.0.1:{closed}/", password_file: {files['belaui-password']},
          token_file: {tmp_path / 'belaui-token'}}}
      - {{type: sls, url: "http://127.0.0.1:{closed}/stats", publisher: publish/live/feed1,
          api_key_file: {files['sls-api-key']}, enabled: false}}
      - {{type: mediamtx, url: "http://127.0.0.1:{closed}", path: live,
          credentials_file: {files['mediamtx-credentials']}, enabled: false}}
      - {{type: srtla-prom, url: "http://127.0.0.1:{closed}/metrics",
          credentials_file: {files['srtla-credentials']}, enabled: false}}
""")
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    surfaces: dict[str, str] = {}
    try:
        wait_for_port("127.0.0.1", health_port, timeout=60, proc=agent)
        deadline = time.monotonic() + 90
        while True:
            health = get(f"http://127.0.0.1:{health_port}/health")
            if proxy.requests >= 3 and "not valid here" in health:  # the echo reached /health
                break
            assert agent.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"no refusal shown yet ({proxy.requests} requests): {health}"
            time.sleep(0.5)
        surfaces["/health"] = health
        surfaces["/metrics"] = get(f"http://127.0.0.1:{health_port}/metrics")
    finally:
        stop_agent(agent)
        proxy.close()
    surfaces["log"] = log.read_text()
    for path in sorted(tmp_path.glob("agent.db*")):
        surfaces[path.name] = path.read_bytes().decode("latin-1")

    shown = {key: value.partition(":")[2] or value for key, value in SRT_SECRETS.items()}
    leaks = {name: [key for key, value in shown.items() if value in text]
             for name, text in surfaces.items()}
    assert not any(leaks.values()), f"SRT secrets show: {leaks}"
    assert "***" in surfaces["/health"] and "***" in surfaces["log"]
