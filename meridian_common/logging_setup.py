"""Logging set-up shared by every process: one line per event, key=value pairs."""

from __future__ import annotations

import logging
import os
from typing import Any


def configure_logging(process: str, level: str | None = None) -> None:
    # The format names none of these: reading them costs a getpid() (and more) per record, which with a line
    # per router ACK was a few percent of a control-plane replica's time.
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    logging.basicConfig(
        level=(level or os.environ.get("MERIDIAN_LOG_LEVEL", "INFO")).upper(),
        format=f"%(asctime)s %(levelname)s {process} %(name)s %(message)s",
        force=True,
    )


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(text: str) -> str:
    return "".join(_ESCAPES.get(c) or (c if c.isprintable() else f"\\x{ord(c):02x}") for c in text)


def event(name: str, **fields: Any) -> str:
    """Formats one log line: `name key=value ...`. A value that is empty or holds a space, a quote or any
    character that is not printable is quoted with those escaped, so that no value (a request path, a
    backend's error text) can start a forged line or hide text from a terminal."""
    parts = [name]
    for key, value in fields.items():
        text = str(value)
        if not text or not text.isprintable() or " " in text or '"' in text:
            text = '"' + _escaped(text) + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)
