"""CPU time used by a server's whole process tree, read from ``/proc``.

Requests per second on a shared machine drift with whatever else runs. The
CPU a server spends per request drifts much less, so the report gives both.
Linux only; elsewhere the figure is simply absent.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields follow the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (hypercorn's or gunicorn's workers)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid``'s tree so far, or None off Linux."""
    if not PROC.is_dir():
        return None
    ticks = 0
    for member in descendants(pid):
        fields = _stat(member)
        if fields is not None:
            # utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
