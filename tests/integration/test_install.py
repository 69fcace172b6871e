"""scripts/build.sh, install.sh and uninstall.sh, run for real into temp roots.

The host bundle is built once per module (about 4 s, needs the package index or pip's cache);
each scenario then installs into its own temp root with --no-systemctl (about 1-2 s each).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import IN_CI, REPO_ROOT

pytestmark = pytest.mark.slow

VERSION_RE = re.compile(r'^version\s*=\s*"([^"]+)"', re.MULTILINE)
VERSION = VERSION_RE.search((REPO_ROOT / "pyproject.toml").read_text()).group(1)  # type: ignore[union-attr]
NETWORK_FAILURE = "cannot reach the package index"
BUNDLE_FILES = {
    "wheels",
    "install.sh",
    "uninstall.sh",
    "config.yaml",
    "metrics-collector.service",
    "VERSION",
    "SHA256SUMS",
}


def bash(
    script: Path, *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def build(only: str, out: Path, *extra: str, repo: Path = REPO_ROOT, version: str = VERSION) -> Path:
    """Run build.sh; skip (dev box) or fail (CI) when the package index is unreachable."""
    env = {**os.environ, "PYTHON": sys.executable}
    proc = bash(repo / "scripts" / "build.sh", "--only", only, "--out", out, *extra, timeout=240, env=env)
    if proc.returncode != 0 and NETWORK_FAILURE in proc.stderr:
        message = (
            "build.sh needs the package index (or PyYAML and setuptools in pip's cache):\n"
            + proc.stderr[-2000:]
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    assert proc.returncode == 0, output(proc)
    tarballs = sorted(out.glob(f"belabox-metrics-{version}-*.tar.gz"))
    assert len(tarballs) == 1, f"expected one bundle in {out}: {tarballs}\n{output(proc)}"
    assert "summary" in proc.stdout and tarballs[0].name in proc.stdout, proc.stdout
    return tarballs[0]


def unpack(tarball: Path, into: Path) -> Path:
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        if hasattr(tarfile, "data_filter"):  # 3.10.12+/3.11.4+; silences 3.12+'s warning
            archive.extractall(into, filter="data")
        else:
            archive.extractall(into)  # our own archive, just built
    top = {name.split("/")[0] for name in names}
    assert top == {tarball.name.removesuffix(".tar.gz")}, top
    return into / top.pop()


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def opt(self) -> Path:
        return self.root / "opt" / "belabox-metrics"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def previous(self) -> Path:
        return self.opt / "previous"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "belabox-metrics" / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "var" / "lib" / "belabox-metrics"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / "metrics-collector.service"

    def venvs(self) -> list[str]:
        return sorted(p.name for p in (self.opt / "venvs").iterdir())

    def current_venv(self) -> str:
        target = os.readlink(self.current)
        assert target.startswith("venvs/"), target
        return target.removeprefix("venvs/")


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpacked host bundle (built once for the module)."""
    out = tmp_path_factory.mktemp("dist")
    tarball = build("host", out)
    return unpack(tarball, tmp_path_factory.mktemp("unpacked"))


def install(bundle: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = bash(bundle / "install.sh", "--root", root, "--no-systemctl", "--python", sys.executable, *extra)
    assert proc.returncode == 0, output(proc)
    return proc


@pytest.fixture(scope="module")
def first_install(host_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    layout = Layout(tmp_path_factory.mktemp("root-first"))
    proc = install(host_bundle, layout.root)
    assert "checksums OK" in proc.stdout, proc.stdout
    yield layout


def test_bundle_holds_wheels_scripts_config_unit_and_checksums(host_bundle: Path) -> None:
    assert {p.name for p in host_bundle.iterdir()} == BUNDLE_FILES
    assert (host_bundle / "VERSION").read_text().strip() == VERSION
    wheels = sorted(p.name for p in (host_bundle / "wheels").iterdir())
    assert f"belabox_metrics-{VERSION}-py3-none-any.whl" in wheels, wheels
    assert any(w.lower().startswith("pyyaml-") for w in wheels), wheels
    assert any(w.startswith("pip-") for w in wheels), wheels  # install.sh needs no ensurepip
    assert (host_bundle / "config.yaml").read_bytes() == (REPO_ROOT / "configs" / "config.yaml").read_bytes()
    unit = (REPO_ROOT / "systemd" / "metrics-collector.service").read_bytes()
    assert (host_bundle / "metrics-collector.service").read_bytes() == unit
    assert os.access(host_bundle / "install.sh", os.X_OK)
    sums = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"],
        cwd=host_bundle,
        capture_output=True,
        text=True,
        check=False,
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    listed = {line.split(None, 1)[1] for line in (host_bundle / "SHA256SUMS").read_text().splitlines()}
    on_disk = {
        str(p.relative_to(host_bundle))
        for p in host_bundle.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert listed == on_disk


def test_first_install_creates_venv_current_link_config_data_and_unit(first_install: Layout) -> None:
    layout = first_install
    venvs = layout.venvs()
    assert len(venvs) == 1 and venvs[0].startswith(f"{VERSION}-"), venvs
    assert layout.current.is_symlink()
    assert layout.current_venv() == venvs[0]
    assert not layout.previous.exists()
    collector = layout.current / "bin" / "metrics-collector"
    assert collector.is_file() and os.access(collector, os.X_OK)

    assert layout.config.read_bytes() == (REPO_ROOT / "configs" / "config.yaml").read_bytes()
    assert stat.S_IMODE(layout.config.stat().st_mode) == 0o640
    assert stat.S_IMODE(layout.config.parent.stat().st_mode) == 0o750
    assert layout.data.is_dir()
    assert stat.S_IMODE(layout.data.stat().st_mode) == 0o750
    assert layout.unit.read_bytes() == (REPO_ROOT / "systemd" / "metrics-collector.service").read_bytes()
    assert stat.S_IMODE(layout.unit.stat().st_mode) == 0o644
    # The venv carries its own unit, for a rollback to restore.
    assert (layout.current / "share" / "belabox-metrics" / "metrics-collector.service").is_file()
    # The scripts stay on the board (the unpacked bundle in /tmp does not).
    for script in ("install.sh", "uninstall.sh"):
        installed = layout.opt / "bin" / script
        assert installed.read_bytes() == (REPO_ROOT / "scripts" / script).read_bytes()
        assert stat.S_IMODE(installed.stat().st_mode) == 0o755


def test_installed_collector_runs_and_accepts_the_installed_config(first_install: Layout) -> None:
    collector = first_install.current / "bin" / "metrics-collector"
    help_run = subprocess.run(
        [str(collector), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert help_run.returncode == 0, help_run.stdout + help_run.stderr
    assert "check-config" in help_run.stdout
    # What the unit's ExecStartPre runs on the board.
    check = subprocess.run(
        [str(collector), "check-config", "--config", str(first_install.config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_installed_venv_is_isolated_from_the_source_tree(first_install: Layout) -> None:
    python = first_install.current / "bin" / "python"
    code = "import belabox_metrics, yaml; print(belabox_metrics.__file__)"
    where = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=30, check=False, cwd="/"
    )
    assert where.returncode == 0, where.stderr
    assert str(first_install.opt) in where.stdout, where.stdout


def test_upgrade_keeps_edited_config_and_data_and_the_previous_venv(
    host_bundle: Path, tmp_path: Path
) -> None:
    layout = Layout(tmp_path / "root")
    install(host_bundle, layout.root)
    first = layout.current_venv()
    edited = layout.config.read_text().replace("belabox-001", "belabox-edited")
    layout.config.write_text(edited)
    (layout.data / "metrics.db").write_bytes(b"not-yet-uploaded")

    proc = install(host_bundle, layout.root)
    assert "kept (not overwritten)" in proc.stdout, proc.stdout
    assert layout.config.read_text() == edited
    example = layout.config.parent / "config.yaml.example"
    assert example.read_bytes() == (host_bundle / "config.yaml").read_bytes()
    assert (layout.data / "metrics.db").read_bytes() == b"not-yet-uploaded"
    second = layout.current_venv()
    assert second != first
    assert layout.venvs() == sorted([first, second])
    assert os.readlink(layout.previous) == f"venvs/{first}"
    assert (layout.current / "bin" / "metrics-collector").is_file()

    # A third install keeps only the last two venvs.
    install(host_bundle, layout.root)
    third = layout.current_venv()
    assert layout.venvs() == sorted([second, third])
    assert os.readlink(layout.previous) == f"venvs/{second}"

    # --rollback swaps current and previous, with the script installed on the board.
    rollback = bash(layout.opt / "bin" / "install.sh", "--root", layout.root, "--no-systemctl", "--rollback")
    assert rollback.returncode == 0, output(rollback)
    assert layout.current_venv() == second
    assert os.readlink(layout.previous) == f"venvs/{third}"


def test_install_from_the_repo_with_a_bundle_tarball(host_bundle: Path, tmp_path: Path) -> None:
    tarball = tmp_path / f"{host_bundle.name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(host_bundle, arcname=host_bundle.name)
    layout = Layout(tmp_path / "root")
    proc = bash(
        REPO_ROOT / "scripts" / "install.sh",
        "--bundle",
        tarball,
        "--root",
        layout.root,
        "--no-systemctl",
        "--python",
        sys.executable,
    )
    assert proc.returncode == 0, output(proc)
    assert (layout.current / "bin" / "metrics-collector").is_file()


def test_tampered_bundle_is_refused_before_anything_is_installed(host_bundle: Path, tmp_path: Path) -> None:
    tampered = tmp_path / host_bundle.name
    shutil.copytree(host_bundle, tampered)
    with (tampered / "metrics-collector.service").open("a") as unit:
        unit.write("\nUser=root\n")
    layout = Layout(tmp_path / "root")
    proc = bash(tampered / "install.sh", "--root", layout.root, "--no-systemctl", "--python", sys.executable)
    assert proc.returncode != 0
    assert "checksum mismatch" in proc.stderr, output(proc)
    assert not layout.opt.exists() and not layout.unit.exists()


def test_install_refuses_root_prefix_with_systemctl(host_bundle: Path, tmp_path: Path) -> None:
    proc = bash(host_bundle / "install.sh", "--root", tmp_path, "--python", sys.executable)
    assert proc.returncode != 0
    assert "--no-systemctl" in proc.stderr, output(proc)
    assert not (tmp_path / "opt").exists()


def test_uninstall_keeps_config_and_data_and_purge_removes_them(host_bundle: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    install(host_bundle, layout.root)
    (layout.data / "metrics.db").write_bytes(b"queue")

    proc = bash(host_bundle / "uninstall.sh", "--root", layout.root, "--no-systemctl")
    assert proc.returncode == 0, output(proc)
    assert not layout.opt.exists()
    assert not layout.unit.exists()
    assert layout.config.is_file() and (layout.data / "metrics.db").is_file()
    assert "kept:" in proc.stdout and str(layout.config.parent) in proc.stdout, proc.stdout

    # Installing again after an uninstall reuses the kept config.
    reinstall = install(host_bundle, layout.root)
    assert "kept (not overwritten)" in reinstall.stdout

    purge = bash(host_bundle / "uninstall.sh", "--root", layout.root, "--no-systemctl", "--purge")
    assert purge.returncode == 0, output(purge)
    assert not layout.opt.exists()
    assert not layout.config.parent.exists()
    assert not layout.data.exists()
    assert not layout.unit.exists()


def test_aarch64_bundle_has_pyyaml_wheels_for_cp310_and_cp311(tmp_path: Path) -> None:
    tarball = build("aarch64", tmp_path / "dist", "--python-versions", "3.10 3.11")
    assert tarball.name == f"belabox-metrics-{VERSION}-linux-aarch64.tar.gz"
    with tarfile.open(tarball) as archive:
        wheels = [Path(name).name for name in archive.getnames() if name.endswith(".whl")]
        members = {Path(name).name for name in archive.getnames() if name.count("/") == 1}
    assert members == BUNDLE_FILES
    assert f"belabox_metrics-{VERSION}-py3-none-any.whl" in wheels, wheels
    for cp in ("cp310", "cp311"):
        yaml = [w for w in wheels if w.lower().startswith("pyyaml-") and f"-{cp}-{cp}-" in w]
        assert len(yaml) == 1, (cp, wheels)
        assert "aarch64" in yaml[0] and "manylinux" in yaml[0], yaml
    compiled = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert all("aarch64" in w for w in compiled), compiled


def test_build_fails_naming_a_dependency_without_an_aarch64_wheel(tmp_path: Path) -> None:
    """A copy of the repo whose package depends on docopt, which publishes only an sdist."""
    repo = tmp_path / "repo"
    for name in ("scripts", "configs", "systemd"):
        shutil.copytree(REPO_ROOT / name, repo / name)
    (repo / "src" / "belabox_metrics").mkdir(parents=True)
    (repo / "src" / "belabox_metrics" / "__init__.py").write_text("")
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    with_docopt = re.sub(
        r"^dependencies = \[\n",
        'dependencies = [\n    "docopt==0.6.2",\n',
        pyproject,
        count=1,
        flags=re.MULTILINE,
    )
    assert with_docopt != pyproject
    (repo / "pyproject.toml").write_text(with_docopt)
    env = {**os.environ, "PYTHON": sys.executable}
    proc = bash(
        repo / "scripts" / "build.sh",
        "--only",
        "aarch64",
        "--python-versions",
        "3.11",
        "--out",
        tmp_path / "dist",
        timeout=240,
        env=env,
    )
    if NETWORK_FAILURE in proc.stderr:
        if IN_CI:
            pytest.fail(proc.stderr[-2000:])
        pytest.skip(f"build.sh needs the package index:\n{proc.stderr[-2000:]}")
    assert proc.returncode != 0, output(proc)
    assert "no binary wheel for 'docopt==0.6.2'" in proc.stderr, output(proc)
    assert not list((tmp_path / "dist").glob("*.tar.gz"))


def test_token_file_is_installed_0600_kept_on_upgrade_and_checked_by_the_agent(host_bundle: Path,
                                                                             tmp_path: Path) -> None:
    from belabox_metrics.secrets import read_secret_file
    from belabox_metrics.validation import ConfigError

    source = tmp_path / "token.txt"
    source.write_text("device-token-0123456789\n")
    root = tmp_path / "root"
    proc = install(host_bundle, root, "--token-file", str(source))
    token = root / "etc" / "belabox-metrics" / "api-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == "device-token-0123456789"
    assert "device-token-0123456789" not in proc.stdout + proc.stderr
    assert read_secret_file(str(token), "remote.token_file") == "device-token-0123456789"
    upgrade = install(host_bundle, root)
    assert "kept" in upgrade.stdout and token.read_text() == "device-token-0123456789"
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(str(token), "remote.token_file")


# -- upgrade across a migration, then roll back --------------------------------------------

# The last commit whose schema is 4 (migration 5, "series indexed by lane", came next): a real
# older release, built into a bundle from the repository's history. Its agent predates
# schema_compat, so it refuses a schema 5 database outright, as released boards do.
OLDER_RELEASE = "0c1b98e8025a5119c14be5ac478362d1f1441190"
OLDER_SCHEMA = 4
DEVICE = "box-rollback"


@pytest.fixture(scope="module")
def older_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("older-tree")
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", OLDER_RELEASE],
                             capture_output=True, timeout=120, check=False)
    if archive.returncode != 0:
        message = f"the older release {OLDER_RELEASE[:10]} is not in this clone's history (a shallow clone?): " \
                  + archive.stderr.decode(errors="replace")[-300:]
        shallow = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--is-shallow-repository"],
                                 capture_output=True, text=True, timeout=30, check=False).stdout.strip() == "true"
        # A shallow clone lacks history by construction (not a missing tool): skip even in CI.
        if IN_CI and not shallow:
            pytest.fail(message)
        pytest.skip(message)
    (tree / "older.tar").write_bytes(archive.stdout)
    with tarfile.open(tree / "older.tar") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tree / "repo", filter="data")
        else:
            tar.extractall(tree / "repo")
    repo = tree / "repo"
    version = VERSION_RE.search((repo / "pyproject.toml").read_text()).group(1)  # type: ignore[union-attr]
    schema = (repo / "src" / "belabox_metrics" / "store" / "schema.py").read_text()
    assert schema.count("    Migration(\n") == OLDER_SCHEMA, "OLDER_RELEASE is not the schema 4 release"
    tarball = build("host", tmp_path_factory.mktemp("older-dist"), repo=repo, version=version)
    return unpack(tarball, tmp_path_factory.mktemp("older-unpacked"))


def agent_env() -> dict[str, str]:
    """The installed venv's code only: nothing of this checkout on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


SampleKey = tuple[str, str, int, float]


def recorded(db: Path) -> set[SampleKey]:
    """Every sample in the database, with plain SQL (the same in schema 4 and 5), read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {(str(n), str(labels), int(ts), float(v)) for n, labels, ts, v in conn.execute(
            "SELECT s.name, s.labels, m.ts, m.value FROM samples m JOIN series s ON s.id = m.series_id "
            "WHERE s.value_type = 0")}
    finally:
        conn.close()


def schema_of(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])
    finally:
        conn.close()


def run_installed_agent(layout: Layout, log: Path, more_than: int, timeout: float = 90.0) -> int:
    """Run the installed (current) agent until its database holds more than ``more_than``
    samples, then stop it with SIGTERM; returns its exit code."""
    db = layout.data / "metrics.db"
    with log.open("ab") as out:
        agent = subprocess.Popen([str(layout.current / "bin" / "metrics-collector"), "run", "--config",
                                  str(layout.config)], stdout=out, stderr=subprocess.STDOUT, env=agent_env())
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert agent.poll() is None, f"agent exited {agent.returncode}: " + log.read_text()[-2000:]
            try:
                if db.exists() and len(recorded(db)) > more_than:
                    break
            except sqlite3.Error:  # the agent may be creating or migrating it
                pass
            assert time.monotonic() < deadline, "no new samples: " + log.read_text()[-2000:]
            time.sleep(0.2)
        agent.terminate()
        return agent.wait(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_upgrade_across_a_migration_then_rollback_loses_nothing(
        host_bundle: Path, older_bundle: Path, tmp_path: Path) -> None:
    """The schema 4 release records and uploads; this version migrates its database to 5
    (keeping a copy), records and uploads more; the installed install.sh --rollback restores
    the older venv and its unit and makes the database schema 4 again; the older agent opens
    it and goes on; forward again. Every sample recorded is still stored, and VictoriaMetrics
    (dedup off) holds each one exactly once."""
    from tests.fault.support import agent_config, audit
    from tests.helpers import free_port, require_tool
    from tests.vm import VictoriaMetrics, vm_available

    binary = vm_available() or require_tool("victoria-metrics", "victoria-metrics")
    vm = VictoriaMetrics(binary, tmp_path / "vm-data", free_port(), dedup=False)
    vm.start()
    try:
        layout = Layout(tmp_path / "root")
        install(older_bundle, layout.root)
        older_venv = layout.current_venv()
        older_unit = layout.unit.read_bytes()
        db = layout.data / "metrics.db"
        agent_config(layout.config.parent, vm.import_url, device=DEVICE, db=db, remote_interval="300ms")
        log = tmp_path / "agent.log"

        assert run_installed_agent(layout, log, 20) == 0
        assert schema_of(db) == OLDER_SCHEMA
        by_older = recorded(db)

        install(host_bundle, layout.root)  # the upgrade
        assert layout.unit.read_bytes() == (host_bundle / "metrics-collector.service").read_bytes() != older_unit
        assert run_installed_agent(layout, log, len(by_older) + 20) == 0
        assert schema_of(db) == 5
        copy = layout.data / "metrics.db.schema4.bak"
        assert schema_of(copy) == OLDER_SCHEMA and recorded(copy) == by_older
        before_rollback = recorded(db)
        assert by_older < before_rollback

        rollback = bash(layout.opt / "bin" / "install.sh", "--root", layout.root, "--no-systemctl", "--rollback")
        assert rollback.returncode == 0, output(rollback)
        assert "downgrade-db" in rollback.stdout and "nothing lost" in rollback.stdout, rollback.stdout
        assert layout.current_venv() == older_venv
        assert layout.unit.read_bytes() == older_unit
        assert schema_of(db) == OLDER_SCHEMA and recorded(db) == before_rollback

        # The older agent opens it (its query refuses a newer schema) and records on.
        query = subprocess.run([str(layout.current / "bin" / "metrics-collector"), "query", "--config",
                                str(layout.config), "--last", "1"], capture_output=True, text=True,
                               timeout=60, env=agent_env(), check=False)
        assert query.returncode == 0 and f"{len(before_rollback)} stored" in query.stdout, query.stdout + query.stderr
        assert run_installed_agent(layout, log, len(before_rollback) + 20) == 0
        after_older = recorded(db)
        assert before_rollback < after_older

        forward = bash(layout.opt / "bin" / "install.sh", "--root", layout.root, "--no-systemctl", "--rollback")
        assert forward.returncode == 0, output(forward)
        assert "downgrade-db" not in forward.stdout  # going forward, the newer one migrates by itself
        assert run_installed_agent(layout, log, len(after_older) + 20) == 0
        assert schema_of(db) == 5 and after_older < recorded(db)
        assert sorted(p.name for p in layout.data.glob("*.bak")) == ["metrics.db.schema4.bak"]

        found = audit(vm, db, vm.import_url, DEVICE)
        assert found.ok and found.duplicates == 0, found
        assert found.delivered >= len(before_rollback) > 0, found
    finally:
        vm.stop()
