"""How much memory this process may still take: the bound every command checks its input against before work.

Example:
    >>> memory_budget() > 0
    True
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cgroup_room", "memory_budget", "proc_status_bytes"]


def memory_budget() -> int:
    """What a command may hold: half of this machine's physical memory, or less where the process is limited (its
    address-space or data limit, less what it already maps; a cgroup's memory.max, less what the group uses)."""
    import resource  # POSIX only: imported here, so that importing this module works everywhere

    budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    for limit, field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            budget = min(budget, soft - proc_status_bytes(field))
    cgroup = cgroup_room()
    return max(0, budget if cgroup is None else min(budget, cgroup))


def proc_status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status in bytes (0 where there is none: not Linux)."""
    try:
        with open("/proc/self/status") as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":")), 0)
    except OSError:
        return 0


def cgroup_room(proc: str | Path = "/proc/self/cgroup", root: str | Path = "/sys/fs/cgroup") -> int | None:
    """Room under the cgroup v2 ``memory.max`` of this process's group and of every group above it: the limit less
    what the group uses, its reclaimable page cache (``inactive_file``) not counted; None where none is limited."""
    try:
        rel = next(line.split(":", 2)[2].strip() for line in Path(proc).read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration, IndexError):
        return None
    rooms: list[int] = []
    top = Path(root)
    group = top / rel.lstrip("/")
    while group != top and top in group.parents:
        try:
            limit = (group / "memory.max").read_text().strip()
            if limit != "max":
                stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines() if line.count(" ") == 1)
                used = int((group / "memory.current").read_text()) - int(stat.get("inactive_file", 0))
                rooms.append(int(limit) - used)
        except (OSError, ValueError):
            pass  # a group without the memory controller, or files of another shape: no limit known there
        group = group.parent
    return min(rooms) if rooms else None
