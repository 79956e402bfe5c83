"""Imports every module of the project: catches import cycles and the two planes importing each other."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["benchmarks", "meridian_proto", "meridian_common", "meridian_cli", "data_plane", "control_plane",
            "regions", "chaos", "simulator"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")]
    return names


@pytest.mark.parametrize("name", _modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


@pytest.mark.parametrize(
    ("plane", "forbidden"), [("data_plane", "control_plane"), ("control_plane", "data_plane")]
)
def test_planes_do_not_import_each_other(plane: str, forbidden: str) -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / plane).rglob("*.py")
        if f"import {forbidden}" in (text := path.read_text()) or f"from {forbidden}" in text
    ]
    assert not offenders, f"{plane} imports {forbidden}: {offenders}"
