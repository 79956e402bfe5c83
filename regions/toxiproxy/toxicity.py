"""Whether a toxic applies to one connection: one draw against its toxicity, as Toxiproxy's stub does."""

from __future__ import annotations

import random


def draw_active(toxicity: float, rng: random.Random) -> bool:
    # rng.random() is in [0, 1): toxicity 0 never applies, toxicity 1 always does.
    return rng.random() < toxicity
