"""Every kernel file the collectors read goes through an FsRoot, so tests can point the
collectors at a captured tree (an RK3588, an x86 box, an edge case) instead of the live
/proc and /sys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
