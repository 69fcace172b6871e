"""Real servers for tests and benchmarks: a daemon started and stopped by PID, nginx with TLS
in front of an upstream (a bearer token checked, keep-alive or not, bodies re-chunked with a
trailer, client certificates required)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

from tests.helpers import REPO_ROOT, free_port, require_tool, wait_for_port
from tests.tlsfiles import Pki

TOKEN = "conformance-token-0123456789"
ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | {"PYTHONPATH": str(REPO_ROOT)}


class Daemon:
    def __init__(self, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None,
                 cleanup: Path | None = None) -> None:
        self.port = port
        self.log = log
        self.cleanup = cleanup
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env or ENV)
        try:
            wait_for_port("127.0.0.1", port, timeout=30, proc=self.proc)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def remove(self) -> None:
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def start_nginx(tmp: Path, pki: Pki, upstream: int, *, keepalive: bool = True, chunked: bool = False,
                client_cert: bool = False, token: str = TOKEN) -> Daemon:
    binary = require_tool("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx", "nginx")
    root = tmp / f"nginx-{free_port()}"
    root.mkdir()
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    mtls = f"ssl_client_certificate {pki.ca}; ssl_verify_client on;" if client_cert else ""
    rechunk = ("sub_filter_types *; sub_filter 'requestURI' 'requestURI'; sub_filter_once off; "
               "add_trailer X-Upstream-Status $upstream_status always;") if chunked else ""
    (root / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  log_format conn '$connection $connection_requests $status $request_length';
  access_log {root}/access.log conn;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  keepalive_timeout {'60s' if keepalive else '0'};
  client_max_body_size 16m;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki.server_cert};
    ssl_certificate_key {pki.server_key};
    {mtls}
    location / {{
      if ($http_authorization != "Bearer {token}") {{ return 401; }}
      proxy_pass http://127.0.0.1:{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      {rechunk}
    }}
  }}
}}
""")
    return Daemon([binary, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"], port,
                  root / "stdout.log")


def nginx_connections(daemon: Daemon) -> Counter[str]:
    """Requests per connection, from nginx's access log ($connection)."""
    lines = (daemon.log.parent / "access.log").read_text().splitlines()
    return Counter(line.split()[0] for line in lines)
