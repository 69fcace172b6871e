"""A private CA with a server and a client certificate, made by the real `openssl` in a temp
dir: what an operator running nginx, caddy or vmauth with their own CA has."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import require_tool

SERVER_NAMES = ("localhost", "metrics.test")


@dataclass(frozen=True)
class Pki:
    ca: Path            # CA certificate (what remote.tls.ca_file points at)
    server_cert: Path   # for 127.0.0.1, ::1, localhost and metrics.test
    server_key: Path
    client_cert: Path   # CN=belabox-001, signed by the same CA (mutual TLS)
    client_key: Path
    other_ca: Path      # an unrelated CA: verification against it must fail


def _run(openssl: str, *args: str, cwd: Path) -> None:
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Pki:
    openssl = require_tool("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=belabox test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    sans = ",".join(["IP:127.0.0.1", "IP:::1", *(f"DNS:{n}" for n in SERVER_NAMES)])
    (directory / "server.ext").write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                                          "basicConstraints=CA:FALSE\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=belabox-001")):
        _run(openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)
        _run(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=directory)
    for key in ("server.key", "client.key", "ca.key", "other-ca.key"):
        os.chmod(directory / key, 0o600)
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key",
               directory / "client.pem", directory / "client.key", directory / "other-ca.pem")
