"""What a server process costs, read from /proc: the CPU time it and its descendants used (what a benchmark
charges a server for the requests it served, robust on a noisy machine where wall-clock throughput is not) and
its resident memory (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:  # gone
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return text[text.rindex(")") + 2:].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and every process descended from it, as they are now."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += _children(current)
    return tree


def tree_cpu_by_process(pid: int) -> dict[int, float]:
    """User and system CPU seconds of `pid` and of each of its living descendants (one that exited took its time
    with it unless its parent waited for it, in which case the parent's cutime/cstime count it)."""
    seconds: dict[int, float] = {}
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:  # fields[11:15]: utime, stime, cutime, cstime (stat fields 14-17)
            seconds[member] = sum(int(value) for value in fields[11:15]) / _TICKS_PER_S
    return seconds



def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of `pid` itself."""
    fields = _stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(f"no process {pid}")
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def rss_bytes(pid: int) -> int:
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
