"""Runs a server coroutine on uvloop when it is installed, and exits cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we run on
    uvloop = None


async def _until_signalled(main: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def run(main: Coroutine[Any, Any, None]) -> int:
    if uvloop is not None:
        uvloop.run(_until_signalled(main))
    else:
        asyncio.run(_until_signalled(main))
    return 0
