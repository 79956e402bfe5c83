"""`noop`: passes data through untouched; Toxiproxy registers it as a type that clients may add like any other."""

from __future__ import annotations

import dataclasses

from regions.toxiproxy.toxics.toxic import Toxic, register


@register
@dataclasses.dataclass(frozen=True, slots=True)
class NoopToxic(Toxic):
    type_name = "noop"
