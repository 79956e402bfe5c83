"""The content hash of a routing table, computed the same way by whoever builds or checks one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from meridian_proto import routing_pb2


def content_hash(models: Iterable[routing_pb2.ModelRoute]) -> str:
    """sha256 over the deterministic serialisation of the models section, models in name order."""
    digest = hashlib.sha256()
    for model in sorted(models, key=lambda m: m.model):
        digest.update(model.SerializeToString(deterministic=True))
    return digest.hexdigest()
