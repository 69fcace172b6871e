"""Every kernel file the collectors read goes through an FsRoot, so tests can point the
collectors at a captured tree (an RK3588, an x86 box, an edge case) instead of the live
/proc and /sys.

Collectors that run every few seconds keep their files open as ``KernelFile``s and re-read
them from offset 0 with ``os.pread``: the kernel regenerates /proc and sysfs contents on a
read at offset 0, and skipping open/close halves the cost of a cycle on a busy encoder.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

_O_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


class KernelFile:
    """One /proc or /sys file, opened lazily and re-read whole with ``os.pread``.

    ``read()`` returns the current contents or raises ``OSError`` (ENOENT when the file is
    gone, ENODEV when its sysfs node was removed, EINVAL/ENODATA/EBUSY from a driver). After
    an error the descriptor is closed, so the next ``read()`` opens the path again: a sysfs
    node that was removed and re-created (a USB modem re-enumerated) is picked up.

    ``sequential`` marks seq_file files that list one record per device (/proc/diskstats,
    /proc/net/dev): the kernel hands those out at most one page per read whatever the
    buffer size, so they are read until an empty read. Single-record files (/proc/stat,
    /proc/meminfo, sysfs attributes) and regular files return everything in one read when
    the buffer is large enough, so a short read is the end.
    """

    __slots__ = ("_fd", "_size", "path", "sequential")

    def __init__(self, path: str, *, sequential: bool = False, size: int = 16384) -> None:
        self.path = path
        self.sequential = sequential
        self._size = size
        self._fd = -1

    def read_bytes(self) -> bytes:
        fd = self._fd
        if fd < 0:
            fd = self._fd = os.open(self.path, _O_FLAGS)
        try:
            data = os.pread(fd, self._size, 0)
            if self.sequential or len(data) == self._size:
                data = self._read_rest(fd, data)
        except OSError:
            self.close()
            raise
        return data

    def _read_rest(self, fd: int, first: bytes) -> bytes:
        parts = [first]
        offset = len(first)
        # Bounded: a kernel file that never ends would be a kernel bug; 4 MiB is far above
        # anything a collector reads (a 128-core /proc/stat is ~40 KiB).
        while first and offset < 4 * 1024 * 1024:
            first = os.pread(fd, self._size, offset)
            parts.append(first)
            offset += len(first)
        return b"".join(parts)

    def read(self) -> str:
        return self.read_bytes().decode("ascii", "replace")

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class FsRoot:
    proc: str = "/proc"
    sys: str = "/sys"

    def proc_path(self, *parts: str) -> str:
        return os.path.join(self.proc, *parts)

    def sys_path(self, *parts: str) -> str:
        return os.path.join(self.sys, *parts)

    def read_proc(self, *parts: str) -> str:
        with open(self.proc_path(*parts), encoding="ascii", errors="replace") as handle:
            return handle.read()

    def read_sys(self, *parts: str) -> str:
        with open(self.sys_path(*parts), encoding="ascii", errors="replace") as handle:
            return handle.read()

    def list_sys(self, *parts: str) -> list[str]:
        try:
            return sorted(os.listdir(self.sys_path(*parts)))
        except OSError:
            return []

    def exists_sys(self, *parts: str) -> bool:
        return os.path.exists(self.sys_path(*parts))

    def open_file(self, path: str, *, sequential: bool = False) -> KernelFile:
        """The one place a KernelFile is made (tests override it to inject driver errors)."""
        return KernelFile(path, sequential=sequential)

    def open_proc(self, *parts: str, sequential: bool = False) -> KernelFile:
        return self.open_file(self.proc_path(*parts), sequential=sequential)

    def open_sys(self, *parts: str) -> KernelFile:
        return self.open_file(self.sys_path(*parts))
