"""Pseudo-embeddings: deterministic, unit length, different for different inputs."""

from __future__ import annotations

import base64
import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from simulator.embeddings import embedding_vector, encode_base64


@given(key=st.text(max_size=50), dimensions=st.integers(min_value=1, max_value=256))
def test_vectors_are_deterministic_unit_vectors(key: str, dimensions: int) -> None:
    vector = embedding_vector(key, dimensions)
    assert vector == embedding_vector(key, dimensions)
    assert len(vector) == dimensions
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-9)


def test_different_inputs_give_different_vectors() -> None:
    vectors = {tuple(embedding_vector(f"input {i}", 16)) for i in range(200)}
    assert len(vectors) == 200


def test_base64_is_little_endian_float32() -> None:
    vector = embedding_vector("x", 4)
    decoded = struct.unpack("<4f", base64.b64decode(encode_base64(vector)))
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, vector, strict=True))
