"""docker/: what can be proven without a Docker engine (none runs here or in CI).

The compose file is parsed as YAML and checked for the settings the product relies on; the
VictoriaMetrics flags that decide what is stored must equal the ones the tests run the real
binary with. The Dockerfile is parsed instruction by instruction; the package is built from
only the files it copies; and its own ENTRYPOINT/CMD start a real receiver that its own
HEALTHCHECK command then finds healthy.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO_ROOT, free_port, wait_for_port
from tests.vm import VM_FLAGS

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile.receiver"
MIN_VM_VERSION = (1, 97, 1)
# Flags the tests set differently on purpose, with the reason. Any other flag both set
# must be equal.
TEST_ONLY_DIFFERENCES = {
    "retentionPeriod": "tests load fixtures with old timestamps; the stack keeps 30 days",
}


# -- compose ----------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def vm_service() -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"]["victoriametrics"]
    return service


def flags(args: list[str] | tuple[str, ...]) -> dict[str, str]:
    """['-a=1', '--b=2', '-c'] -> {'a': '1', 'b': '2', 'c': 'true'}"""
    out = {}
    for arg in args:
        name, _, value = arg.lstrip("-").partition("=")
        out[name] = value or "true"
    return out


def test_compose_parses_and_has_the_services() -> None:
    services = compose()["services"]
    assert set(services) >= {"victoriametrics", "receiver"}
    assert services["receiver"]["build"]["dockerfile"] == "docker/Dockerfile.receiver"
    assert (DOCKER / services["receiver"]["build"]["context"] / "pyproject.toml").exists()


def test_victoriametrics_image_is_pinned_at_or_above_1_97_1() -> None:
    image = vm_service()["image"]
    match = re.fullmatch(r"victoriametrics/victoria-metrics:v(\d+)\.(\d+)\.(\d+)", image)
    assert match, f"{image!r} is not pinned to an exact vX.Y.Z tag"
    assert tuple(int(g) for g in match.groups()) >= MIN_VM_VERSION


def test_victoriametrics_port_retention_dedup_and_logs() -> None:
    service = vm_service()
    vm_flags = flags(service["command"])
    assert vm_flags["retentionPeriod"] == "30d"
    assert vm_flags["dedup.minScrapeInterval"] == "1ms"
    assert vm_flags["httpListenAddr"] == ":8428"
    assert any(str(p).endswith(":8428:8428") or str(p) == "8428:8428" for p in service["ports"])
    storage = vm_flags["storageDataPath"]
    assert any(str(v).endswith(":" + storage) for v in service["volumes"]), "data must live in a volume"
    logging = service["logging"]
    assert logging["driver"] == "json-file" and logging["options"]["max-size"] == "10m"


def test_every_service_rotates_its_logs() -> None:
    for name, service in compose()["services"].items():
        assert service["logging"]["driver"] == "json-file", name
        assert service["logging"]["options"]["max-size"] == "10m", name


def test_victoriametrics_healthcheck_probes_its_health_endpoint() -> None:
    check = vm_service()["healthcheck"]
    test = check["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:8428/health" in test
    for key in ("interval", "timeout", "retries"):
        assert key in check


def test_published_ports_stay_on_the_hosts_loopback() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_vm_flags_equal_the_flags_the_tests_run_victoriametrics_with() -> None:
    stack, tests = flags(vm_service()["command"]), flags(VM_FLAGS)
    assert stack["dedup.minScrapeInterval"] == tests["dedup.minScrapeInterval"]
    for name in set(stack) & set(tests):
        if name not in TEST_ONLY_DIFFERENCES:
            assert stack[name] == tests[name], f"-{name}: stack {stack[name]!r}, tests {tests[name]!r}"


# -- Dockerfile -------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return out


def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    return steps[last_from:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_every_base_image_is_pinned_to_an_exact_version() -> None:
    bases = [args.split()[0] for kw, args in dockerfile() if kw == "FROM"]
    assert bases
    for base in bases:
        image, _, tag = base.partition(":")
        assert image == "python", base
        assert re.fullmatch(r"3\.\d+\.\d+-slim(-\w+)?", tag), f"{base} is not pinned to 3.X.Y-slim"
    major_minor = {re.match(r"3\.\d+", b.partition(":")[2]).group() for b in bases}  # type: ignore[union-attr]
    assert len(major_minor) == 1, "build and runtime stages must share the Python version (the venv)"


def test_runs_as_a_non_root_user() -> None:
    users = [args for kw, args in final_stage() if kw == "USER"]
    assert users, "no USER: the receiver would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_exposes_the_port_the_command_listens_on_and_has_a_healthcheck() -> None:
    stage = final_stage()
    exposed = {args.split("/")[0] for kw, args in stage if kw == "EXPOSE"}
    cmd = exec_form(next(args for kw, args in stage if kw == "CMD"))
    listen = cmd[cmd.index("--listen") + 1]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0", "inside the container the receiver must listen beyond its loopback"
    assert port in exposed
    check = next(args for kw, args in stage if kw == "HEALTHCHECK")
    assert check.split()[-1] != "NONE" and "CMD" in check
    assert f"127.0.0.1:{port}/health" in check


def test_installs_the_project_with_the_receiver_extra() -> None:
    runs = " ".join(args for kw, args in dockerfile() if kw == "RUN")
    assert '".[receiver]"' in runs or "'.[receiver]'" in runs
    entrypoint = exec_form(next(args for kw, args in final_stage() if kw == "ENTRYPOINT"))
    assert entrypoint == ["metrics-receiver"]


def copied_sources() -> list[str]:
    sources = []
    for kw, args in dockerfile():
        if kw == "COPY" and not args.startswith("--from"):
            *src, _dest = args.split()
            sources += src
    return sources


def test_context_ignore_file_keeps_what_the_dockerfile_copies() -> None:
    ignore = (DOCKER / "Dockerfile.receiver.dockerignore").read_text().split()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert ignore[ignore.index("*")] == "*"
    assert {s.rstrip("/") for s in copied_sources()} <= kept


def test_package_builds_from_only_the_files_the_dockerfile_copies(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for source in copied_sources():
        path = REPO_ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, context / source)
    build = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"],
        cwd=context, capture_output=True, text=True, timeout=60)
    assert build.returncode == 0, build.stderr[-2000:]
    sdist = context / "dist" / build.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        info = next(n for n in names if n.endswith("/PKG-INFO") and n.count("/") == 1)
        metadata = archive.extractfile(info).read().decode()  # type: ignore[union-attr]
    assert "Provides-Extra: receiver" in metadata
    assert any(n.endswith("belabox_metrics/cli/receiver.py") for n in names)


def test_the_images_command_starts_a_receiver_its_healthcheck_finds_healthy(tmp_path: Path) -> None:
    stage = final_stage()
    entrypoint = exec_form(next(args for kw, args in stage if kw == "ENTRYPOINT"))
    cmd = exec_form(next(args for kw, args in stage if kw == "CMD"))
    image_port = cmd[cmd.index("--listen") + 1].rpartition(":")[2]
    port = free_port()
    # The image's own arguments, with the listen address moved to loopback (tests never
    # listen beyond it) and the data directory to a temp dir.
    args = [a.replace(f"0.0.0.0:{image_port}", f"127.0.0.1:{port}").replace("/data/", f"{tmp_path}/")
            for a in cmd]
    assert entrypoint == ["metrics-receiver"]
    receiver_main = "import sys; from belabox_metrics.cli.receiver import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", receiver_main, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        check = next(a for kw, a in stage if kw == "HEALTHCHECK")
        probe = exec_form(check[check.index("CMD") + 3:].strip())
        assert probe[0] == "python"
        probe = [sys.executable, *(p.replace(f":{image_port}/", f":{port}/") for p in probe[1:])]
        result = subprocess.run(probe, capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "receiver.db").exists()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_healthcheck_fails_when_nothing_answers() -> None:
    check = next(a for kw, a in final_stage() if kw == "HEALTHCHECK")
    probe = exec_form(check[check.index("CMD") + 3:].strip())
    port = free_port()  # closed: nothing listens there
    probe = [sys.executable, *(re.sub(r":\d+/health", f":{port}/health", p) for p in probe[1:])]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=20)
    assert result.returncode != 0, shlex.join(probe)
