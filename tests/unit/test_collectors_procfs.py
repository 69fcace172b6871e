"""KernelFile: re-reads from offset 0 with pread, reads seq_file files past one page,
reopens after an error."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from belabox_metrics.collectors.procfs import FsRoot, KernelFile


def test_reread_sees_new_contents_without_reopening(tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_text("1\n")
    handle = KernelFile(str(path))
    assert handle.read() == "1\n"
    with open(path, "w") as out:  # same inode, as a kernel file regenerated on read
        out.write("12345\n")
    assert handle.read() == "12345\n"
    handle.close()


def test_large_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big"
    text = "".join(f"line {n}\n" for n in range(20000))
    path.write_text(text)
    for sequential in (False, True):
        handle = KernelFile(str(path), sequential=sequential)
        assert handle.read() == text
        handle.close()


def test_missing_file_raises_then_recovers_when_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later"
    handle = KernelFile(str(path))
    with pytest.raises(FileNotFoundError):
        handle.read()
    path.write_text("ok\n")
    assert handle.read() == "ok\n"
    handle.close()


def test_error_closes_descriptor_so_next_read_reopens(tmp_path: Path) -> None:
    first = tmp_path / "zone"
    first.write_text("41000\n")
    handle = KernelFile(str(first))
    assert handle.read() == "41000\n"
    fd = handle._fd
    os.close(fd)  # the node went away under us: the next pread fails with EBADF
    with pytest.raises(OSError):
        handle.read()
    assert handle._fd == -1
    first.write_text("42000\n")
    assert handle.read() == "42000\n"
    handle.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")
def test_sequential_proc_file_longer_than_a_page_is_read_whole() -> None:
    # /proc/self/maps is a seq_file listing one record per mapping: the kernel hands out at
    # most a page per read, so a single pread would truncate it.
    handle = KernelFile("/proc/self/maps", sequential=True)
    data = handle.read()
    handle.close()
    with open("/proc/self/maps") as reference:
        expected_lines = reference.read().count("\n")
    assert len(data) > 4096
    assert data.endswith("\n")
    assert abs(data.count("\n") - expected_lines) <= 5  # mappings may change in between


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")
def test_live_proc_files_reread_at_offset_zero() -> None:
    handle = FsRoot().open_proc("uptime")
    first = float(handle.read().split()[0])
    second = float(handle.read().split()[0])
    handle.close()
    assert second >= first > 0


def test_fsroot_paths_are_rooted(tmp_path: Path) -> None:
    (tmp_path / "p" / "net").mkdir(parents=True)
    (tmp_path / "p" / "net" / "dev").write_text("x\n")
    (tmp_path / "s" / "class").mkdir(parents=True)
    fs = FsRoot(proc=str(tmp_path / "p"), sys=str(tmp_path / "s"))
    assert fs.open_proc("net", "dev", sequential=True).read() == "x\n"
    assert fs.exists_sys("class")
    assert not fs.exists_sys("class", "thermal")
    assert fs.list_sys("class", "thermal") == []
