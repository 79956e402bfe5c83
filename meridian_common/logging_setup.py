"""Logging set-up shared by every process: one line per event, key=value pairs."""

from __future__ import annotations

import logging
import os
from typing import Any


def configure_logging(process: str, level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("MERIDIAN_LOG_LEVEL", "INFO")).upper(),
        format=f"%(asctime)s %(levelname)s {process} %(name)s %(message)s",
        force=True,
    )


def event(name: str, **fields: Any) -> str:
    """Formats one log line: `name key=value ...`; values with spaces are quoted."""
    parts = [name]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c.isspace() for c in text) or '"' in text:
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)
