"""Deterministic pseudo-embeddings: a unit vector seeded by a hash of the input, so equal inputs always get
equal vectors and different inputs almost surely different ones."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct


def embedding_vector(key: str, dimensions: int) -> list[float]:
    # blake2b rather than hash(): Python salts str hashes per process, and vectors must survive restarts.
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def encode_base64(vector: list[float]) -> str:
    """Little-endian float32, base64: what OpenAI returns for `encoding_format: "base64"` (the SDK's
    default) and what the SDK decodes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
