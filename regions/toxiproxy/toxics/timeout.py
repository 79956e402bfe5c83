"""`timeout`: drops all data and closes the connection `timeout` ms after the toxic took effect.

With `timeout` 0 the connection stays open and data is dropped until the toxic is removed; since the
stream has lost data by then, removing the toxic closes the connection (Toxiproxy's Cleanup).
"""

from __future__ import annotations

import dataclasses

from regions.toxiproxy.toxics.toxic import Chunk, Emit, Toxic, ToxicStub, register


@register
@dataclasses.dataclass(frozen=True, slots=True)
class TimeoutToxic(Toxic):
    type_name = "timeout"
    closes_on_removal = True

    timeout: int = 0

    async def pipe(self, chunk: Chunk, stub: ToxicStub, emit: Emit) -> None:
        return  # dropped

    def close_deadline(self, stub: ToxicStub) -> float | None:
        return stub.started_at + self.timeout / 1000 if self.timeout > 0 else None
