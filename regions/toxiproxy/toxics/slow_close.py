"""`slow_close`: delays closing the destination by `delay` ms after the source has closed."""

from __future__ import annotations

import dataclasses

from regions.toxiproxy.toxics.toxic import Toxic, ToxicStub, register


@register
@dataclasses.dataclass(frozen=True, slots=True)
class SlowCloseToxic(Toxic):
    type_name = "slow_close"

    delay: int = 0

    async def on_eof(self, stub: ToxicStub) -> None:
        await stub.sleep(self.delay / 1000)
