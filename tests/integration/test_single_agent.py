"""One agent per database, however the second one names it (issue 17): a symlink, a
``dir/./`` path and a hard link all meet the running agent's lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fault.support import ENV, agent_config
from tests.helpers import cli, free_port


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="hard links meet the lock on Linux")
def test_second_agent_through_another_name_of_the_database_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "agent.db"
    url = f"http://127.0.0.1:{free_port()}/api/v1/import"  # nothing listens: samples stay queued
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    first = start_agent(agent_config(first_dir, url, device="one", db=db), first_dir / "agent.log")
    try:
        deadline = time.monotonic() + 60
        while not (db.exists() and db.stat().st_size > 0 and (data / "agent.db.lock").exists()):
            assert first.poll() is None, (first_dir / "agent.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the first agent did not create its database"
            time.sleep(0.1)
        (tmp_path / "link").symlink_to(data)
        os.link(db, tmp_path / "hard.db")
        names = {"symlink": tmp_path / "link" / "agent.db", "dot": Path(f"{data}/./agent.db"),
                 "hard link": tmp_path / "hard.db"}
        for how, name in names.items():
            second_dir = tmp_path / how.replace(" ", "-")
            second_dir.mkdir()
            result = subprocess.run([*cli("metrics-collector"), "run", "--config",
                                     str(agent_config(second_dir, url, device="two", db=name))],
                                    env=ENV, capture_output=True, text=True, timeout=120)
            assert result.returncode == 1, f"a second agent through a {how} ran: {result.stderr[-1500:]}"
            assert "another metrics-collector" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
            assert first.poll() is None
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 0
