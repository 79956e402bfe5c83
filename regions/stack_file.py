"""`.meridian/stack.json`: what `meridian up` started and where it listens, written atomically and readable
only by its owner (it holds the stack's admin token). Other commands find a running stack through it.

A process is recorded with its pid and its start time (from /proc), so that a pid reused by an unrelated
process after the stack died is never taken for, or signalled as, one of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_DIR = ".meridian"
STACK_FILE = "stack.json"
FORMAT_VERSION = 1


class StackFileError(RuntimeError):
    """stack.json exists but cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int | None
    """Field 22 of /proc/<pid>/stat when it was started; None where /proc is unavailable."""
    log: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "start_ticks": self.start_ticks, "log": self.log}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ProcessRecord:
        return cls(str(entry["name"]), int(entry["pid"]), entry.get("start_ticks"), entry.get("log"))

    def alive(self) -> bool:
        """Whether this very process still runs (a zombie or a reused pid does not count)."""
        return _pid_alive(self.pid) and process_start_ticks(self.pid) == self.start_ticks


def process_start_ticks(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; everything after the last ')' is fixed.
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_process(name: str, pid: int, log: Path | str | None = None) -> ProcessRecord:
    return ProcessRecord(name, pid, process_start_ticks(pid), str(log) if log is not None else None)


def state_dir(directory: Path | str | None = None) -> Path:
    """`.meridian` under `directory` (default: the current directory)."""
    return Path(directory or Path.cwd()) / STATE_DIR


def stack_path(directory: Path | str | None = None) -> Path:
    return state_dir(directory) / STACK_FILE


def write_stack(path: Path, stack: dict[str, Any]) -> None:
    """Replaces `path` atomically with mode 0600: a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(stack, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def read_stack(path: Path) -> dict[str, Any] | None:
    """The stack file's content, None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StackFileError(f"{path}: cannot read: {error.strerror or error}") from error
    try:
        stack = json.loads(text)
    except json.JSONDecodeError as error:
        raise StackFileError(f"{path}: not valid JSON ({error}); remove it if no stack runs") from error
    if not isinstance(stack, dict) or stack.get("format") != FORMAT_VERSION:
        raise StackFileError(f"{path}: not a stack file of format {FORMAT_VERSION}")
    return stack


def processes(stack: dict[str, Any]) -> list[ProcessRecord]:
    return [ProcessRecord.from_json(entry) for entry in stack.get("processes", [])]


def alive_processes(stack: dict[str, Any]) -> list[ProcessRecord]:
    return [record for record in processes(stack) if record.alive()]


def launcher_alive(stack: dict[str, Any]) -> bool:
    launcher = stack.get("launcher")
    return launcher is not None and ProcessRecord.from_json(launcher).alive()


def find_stack(directory: Path | str | None = None) -> dict[str, Any]:
    """The running stack of `directory` (default: the current one), for `meridian policy|status|chaos`.

    Raises StackFileError with what to do when there is no stack.json or none of its processes runs.
    """
    path = stack_path(directory)
    stack = read_stack(path)
    if stack is None:
        raise StackFileError(f"no stack here ({path} does not exist): start one with `meridian up`")
    if not alive_processes(stack):
        raise StackFileError(f"the stack of {path} is not running any more: `meridian down` cleans up, "
                             "`meridian up` starts a new one")
    return stack


def admin_urls(stack: dict[str, Any]) -> list[str]:
    return list(stack["control_plane"]["admin"])


def admin_token(stack: dict[str, Any]) -> str:
    return str(stack["admin_token"])
