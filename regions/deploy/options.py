"""What a render takes besides the topology."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from regions.deploy.images import MERIDIAN_IMAGE
from regions.topology import DEFAULT_TOPOLOGY


@dataclass(frozen=True, slots=True)
class RenderOptions:
    source: str = "regions/topology.yaml"
    """The topology as the generated files' headers name it."""
    image: str = MERIDIAN_IMAGE
    """The Meridian image every Meridian container runs."""


def topology_label(path: Path) -> str:
    """How headers name a topology file: the bundled one by its place in the repository, so that a render from
    any directory is byte for byte the same."""
    return "regions/topology.yaml" if path.resolve() == DEFAULT_TOPOLOGY else str(path)
