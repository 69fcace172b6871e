"""The production path does not load what it does not use (issue 16: the agent's RSS over
https with a token is budgeted at 30 MB; each module below cost 0.1-0.6 MB, measured by
bench_footprint --production, docs/benchmarks.md section 7).

A fresh interpreter goes the way `metrics-collector run` goes with the shipped config pointed
at an https destination with a private CA: parse the command line, read the config, import the
agent, build its collectors and its transport, and upload one gzip body over TLS to a server
on loopback named ``localhost``. What it imported is then checked."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from belabox_metrics.cli import HelpFormatter, terminal_columns
from belabox_metrics.collectors.srt import common
from belabox_metrics.tlsconfig import host_name
from tests.helpers import REPO_ROOT
from tests.tlsfiles import make_pki
from tests.unit.test_tls import TlsServer

# Module -> what loaded it before (and what the agent's run path never needs).
NOT_LOADED = {
    "subprocess": "metrics-collector dev",
    "platform": "metrics-collector dev",
    "importlib.resources": "metrics-collector dev",
    "tempfile": "importlib.resources, for dev",
    "shutil": "argparse's help width",
    "bz2": "shutil",
    "lzma": "shutil",
    "difflib": "a suggestion for a mistyped key",
    "encodings.idna": "socket.getaddrinfo and ssl's server_hostname on a str",
    "unicodedata": "encodings.idna (stringprep)",
    "gzip": "one gzip member, which zlib makes",
    "belabox_metrics.collectors.srt.belaui": "SRT source types nobody configured",
    "belabox_metrics.collectors.srt.websocket": "SRT source types nobody configured",
    "belabox_metrics.collectors.srt.sls": "SRT source types nobody configured",
    "belabox_metrics.collectors.srt.mediamtx": "SRT source types nobody configured",
    "belabox_metrics.collectors.srt.srt_live_transmit": "SRT source types nobody configured",
    "belabox_metrics.collectors.srt.srtla_prom": "SRT source types nobody configured",
}

PRODUCTION_PATH = r"""
import json, sys
from belabox_metrics.cli.collector import _parser
from belabox_metrics.config import load_config
args = _parser().parse_args(["run", "--config", sys.argv[1]])
settings = load_config(args.config)
from belabox_metrics.agent import build_collectors
from belabox_metrics.clock import SystemClock
from belabox_metrics.collectors.base import CollectorContext
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.runtime import startup  # noqa: F401
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport
ctx = CollectorContext(FsRoot(settings.host.proc_root, settings.host.sys_root), SystemClock(), settings.device.id)
build_collectors(settings, ctx)
remote = settings.remote
transport = HttpTransport(timeout=remote.timeout, tls=remote.tls, proxy=remote.proxy)
encoder = wire_format(remote.format, settings.device.id)
status = transport.post(remote.url, encoder.compress(b'{"metric":{}}\n'), {"Content-Encoding": "gzip"}).status
print(json.dumps({"status": status, "modules": sorted(k for k, v in sys.modules.items() if v is not None)}))
"""


def test_the_production_path_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = TlsServer(pki)
    try:
        config = yaml.safe_load((REPO_ROOT / "configs" / "config.yaml").read_text())
        config["storage"] = {**config.get("storage", {}), "path": str(tmp_path / "agent.db")}
        config["remote"] = {**config["remote"], "url": server.url(), "format": "vm-jsonl",
                            "tls": {"ca_file": str(pki.ca)}}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
        done = subprocess.run([sys.executable, "-c", PRODUCTION_PATH, str(path)], capture_output=True,
                              text=True, timeout=120, env=env, cwd=tmp_path)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["status"] == 204
    assert server.sni == ["localhost"]
    loaded = {name: why for name, why in NOT_LOADED.items() if name in found["modules"]}
    assert not loaded, f"loaded on the production path: {loaded}"
    assert {"ssl", "http.client", "yaml", "belabox_metrics.collectors.srt"} <= set(found["modules"])


def test_every_source_type_is_in_the_table_that_imports_it_on_first_use() -> None:
    # Once every module of the package is imported, every type is registered: each must be
    # listed with the module that registers it, or a config naming it would not find it.
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules([str(Path(common.__file__).parent)]):
        importlib.import_module(f"belabox_metrics.collectors.srt.{module.name}")
    registered_by = {name: source_type.parse.__module__.rsplit(".", 1)[1]
                     for name, source_type in common.SOURCE_TYPES.registered.items()}
    assert registered_by == common.SOURCE_MODULES
    assert sorted(common.SOURCE_TYPES) == sorted(common.SOURCE_MODULES)
    assert all(common.SOURCE_TYPES[name].name == name for name in common.SOURCE_MODULES)


@pytest.mark.parametrize("columns", [None, "50", "132", "0", "wide"])
def test_help_is_as_wide_as_argparse_makes_it(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    import shutil

    assert terminal_columns() == shutil.get_terminal_size().columns
    ours = argparse.ArgumentParser(prog="x", description="word " * 60, formatter_class=HelpFormatter)
    theirs = argparse.ArgumentParser(prog="x", description="word " * 60)
    assert ours.format_help() == theirs.format_help()


@pytest.mark.parametrize("name, sent", [
    ("localhost", b"localhost"),
    ("metrics.example.org", b"metrics.example.org"),
    ("127.0.0.1", b"127.0.0.1"),
    ("::1", b"::1"),
    ("trailing.dot.", b"trailing.dot."),
    ("bücher.example", "bücher.example"),      # IDNA: ssl and getaddrinfo encode it
    ("a..b", "a..b"),                          # an empty label: IDNA's own error
    ("x" * 64 + ".org", "x" * 64 + ".org"),    # a label too long: likewise
])
def test_host_names_go_as_idna_would_encode_them(name: str, sent: str | bytes) -> None:
    assert host_name(name) == sent
    if isinstance(sent, bytes):
        assert name.encode("idna") == sent
