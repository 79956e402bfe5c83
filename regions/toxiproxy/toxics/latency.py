"""`latency`: delays each chunk by `latency` ms ± `jitter` ms, counted from when it was read."""

from __future__ import annotations

import dataclasses

from regions.toxiproxy.toxics.toxic import Chunk, Emit, Toxic, ToxicStub, register


@register
@dataclasses.dataclass(frozen=True, slots=True)
class LatencyToxic(Toxic):
    type_name = "latency"

    latency: int = 0
    jitter: int = 0

    def delay_ms(self, stub: ToxicStub) -> int:
        if self.jitter > 0:
            # Toxiproxy: rand.Int63n(2*jitter) - jitter, i.e. uniform in [-jitter, jitter).
            return self.latency + stub.rng.randrange(2 * self.jitter) - self.jitter
        return self.latency

    async def pipe(self, chunk: Chunk, stub: ToxicStub, emit: Emit) -> None:
        # Chunks queue up behind one another, so a later chunk only waits what is left of its own delay.
        wait_s = self.delay_ms(stub) / 1000 - (stub.now() - chunk.timestamp)
        if await stub.sleep(wait_s) and wait_s > 0:
            chunk = dataclasses.replace(chunk, timestamp=chunk.timestamp + wait_s)
        await emit(chunk)
