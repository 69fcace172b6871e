"""One agent per database: an flock on a lock file beside it, holding the PID.

flock (not the SQLite file's own POSIX locks, which drop when any descriptor of the file
closes) is released by the kernel when the process dies, even by SIGKILL, so a stale lock
never blocks a restart. The lock file is never unlinked: unlinking races a starting peer.
"""

from __future__ import annotations

import fcntl
import os


class AlreadyRunning(Exception):
    def __init__(self, lock_path: str, pid: str) -> None:
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"another metrics-collector ({who}) is using this database "
                         f"(lock {lock_path}); stop it first or use another storage.path")
        self.pid = pid


class ProcessLock:
    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
