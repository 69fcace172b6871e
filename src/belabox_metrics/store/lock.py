"""One agent per database: flocks on a lock file beside it (holding the PID) and on the
database file itself.

flock (not the SQLite file's own POSIX locks, which drop when any descriptor of the file
closes) is released by the kernel when the process dies, even by SIGKILL, so a stale lock
never blocks a restart. The lock file is never unlinked: unlinking races a starting peer.

The lock must meet a second agent however it names the database. The lock file sits beside
the *resolved* path (a symlink, ``dir/./db`` or ``dir/../dir/db`` name the same lock file),
and on Linux the database file itself is flocked too, which is the same lock for every path
of that file: a hard link or a bind mount. (Linux keeps flock and SQLite's POSIX locks
apart; on other systems they may interact, so there only the lock file is used.) A
database that does not exist yet (or was moved aside as corrupt) is locked once it has been
created: ``hold_database()`` after opening it.
"""

from __future__ import annotations

import fcntl
import os
import sys


class AlreadyRunning(Exception):
    def __init__(self, lock_path: str, pid: str) -> None:
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"another metrics-collector ({who}) is using this database "
                         f"(lock {lock_path}); stop it first or use another storage.path")
        self.pid = pid


# flock on the database file itself: only where it is independent of SQLite's POSIX locks.
LOCK_DATABASE_FILE = sys.platform.startswith("linux")


class ProcessLock:
    def __init__(self, db_path: str) -> None:
        self.db_path = os.path.realpath(db_path)
        self.path = self.db_path + ".lock"
        self._fd: int | None = None
        self._db_fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(self.path, holder) from None
        try:
            self.hold_database()
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def hold_database(self) -> None:
        """flock the database file itself (Linux), when it exists: again after it was
        created or replaced (quarantine moves a corrupt one aside)."""
        if not LOCK_DATABASE_FILE:
            return
        try:
            info = os.stat(self.db_path)
        except FileNotFoundError:
            return
        if self._db_fd is not None:
            held = os.fstat(self._db_fd)
            if (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino):
                return
        db_fd = os.open(self.db_path, os.O_RDWR)
        try:
            fcntl.flock(db_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(db_fd)
            # Held through another name of the same file (a hard link, a bind mount): that
            # agent's PID is in the lock file beside the name it used.
            raise AlreadyRunning(self.db_path, "") from None
        if self._db_fd is not None:
            os.close(self._db_fd)  # the file moved aside: no SQLite lock of ours is on it
        self._db_fd = db_fd

    def release(self) -> None:
        # The database descriptor is closed last of all the process's descriptors of that
        # file: closing it drops SQLite's POSIX locks of this process, so callers release
        # only after the database is closed.
        for name in ("_db_fd", "_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
