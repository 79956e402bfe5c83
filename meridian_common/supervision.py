"""Keeps a background loop alive: an unexpected exception is logged with the loop's name, counted, and the loop
is started again after a bounded exponential backoff. Cancelling the supervisor stops the loop at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

RestartHook = Callable[[str], None]
"""Called with the loop's name each time it is started again (a metric counts it)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"backoff: expected 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")

    def delay_s(self, failures_in_a_row: int) -> float:
        """The wait before the next start: initial_s, doubled for every further failure in a row, at most
        max_s."""
        return min(self.max_s, self.initial_s * 2 ** min(max(0, failures_in_a_row - 1), 64))


DEFAULT_BACKOFF = Backoff()


async def supervise(name: str, run: Callable[[], Awaitable[None]], *, on_restart: RestartHook | None = None,
                    backoff: Backoff = DEFAULT_BACKOFF) -> None:
    """Awaits `run()` until it returns (the loop is done) or this coroutine is cancelled. An exception from it is
    logged (`background_loop_failed`, with the traceback) and `run()` is called again after `backoff`; a run
    that lasted `backoff.max_s` before failing starts the doubling afresh, so a loop failing once a day never
    waits long, and one failing at once never spins."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except Exception:
            failures = 1 if time.monotonic() - started >= backoff.max_s else failures + 1
            delay_s = backoff.delay_s(failures)
            log.exception(event("background_loop_failed", loop=name, failures_in_a_row=failures,
                                restart_in_s=round(delay_s, 3)))
        await asyncio.sleep(delay_s)
        log.info(event("background_loop_restarted", loop=name))
        if on_restart is not None:
            on_restart(name)
