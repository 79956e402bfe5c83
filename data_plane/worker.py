"""Which worker of a `meridian router --workers N` this process is: its router id and the private socket on
which it answers its siblings' requests for its metrics (docs/router.md#workers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    index: int
    count: int
    directory: Path
    """The pool's private directory (mode 0700): port files and every worker's metrics socket."""

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker index {self.index} is not in 0..{self.count - 1}")

    def router_id(self, base: str) -> str:
        """Each worker is a router of its own to the control plane and the shared limits: its own id."""
        return f"{base}-w{self.index}"

    def table_file(self, region: str) -> str:
        """Each worker persists the table it applied under its own name: a worker starting after a sibling saved
        the current version would otherwise take it from disk and never hear it from the control plane."""
        return f"table-{region}-w{self.index}.bin"

    def metrics_socket(self, index: int) -> Path:
        return self.directory / f"worker-{index}.metrics.sock"

    def siblings(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]
