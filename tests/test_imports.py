"""The import structure the architecture rests on: every module imports, no cycle between top-level packages,
the two planes never import each other, and the pure decision cores import no I/O library, not even through
the modules they import.

The graph is read from the source (every import statement, including those inside functions and under
TYPE_CHECKING), so an import hidden in a function body counts as much as one at the top of a file."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["meridian_proto", "meridian_common", "data_plane", "control_plane", "simulator", "regions", "harness",
            "chaos", "demo", "benchmarks", "meridian_cli"]
PLANES = ("data_plane", "control_plane")
IO_LIBRARIES = frozenset({"aiohttp", "grpc", "redis", "aetcd"})
PURE_MODULES = [
    # routing decisions
    "data_plane.policies",
    "data_plane.deployments.breaker",
    "data_plane.deployments.health",
    "data_plane.deployments.stats",
    "data_plane.deployments.engine_metrics",
    "data_plane.deployments.engine_scrape_state",
    "data_plane.serving.attempt_plan",
    "data_plane.serving.answer_timing",
    "data_plane.serving.backend_answer",
    "data_plane.serving.request_shapes",
    "data_plane.serving.sse_events",
    "data_plane.serving.sse_usage",
    "data_plane.serving.usage",
    "data_plane.api.model_cards",
    "data_plane.log_throttle",
    "data_plane.limits.token_bucket",
    "data_plane.limits.admission_queue",
    "data_plane.limits.body_budget",
    "data_plane.telemetry.accumulator",
    "data_plane.callback_rules",
    # the table and its distribution
    "data_plane.table.snapshot",
    "data_plane.table.sync",
    "control_plane.distribution.session",
    "control_plane.tables.compute",
    "control_plane.tables.weights",
    "control_plane.tables.ejection",
    "control_plane.tables.diff",
    "control_plane.policy.document",
    "control_plane.policy.effective",
    "control_plane.telemetry.merge",
    # state machines
    "data_plane.jobs.state",
    "control_plane.election.machine",
    # shared values
    "meridian_common.catalog",
    "meridian_common.histogram",
    "meridian_common.telemetry_counts",
    "meridian_common.engine_figures",
    "meridian_common.table_hash",
    "meridian_common.workload",
    # what a run's verdicts are computed from
    "harness.timeline",
    "chaos.checks",
    "demo.phases",
]


def _source(module: str) -> Path:
    base = ROOT / "proto" if module.startswith("meridian_proto") else ROOT
    path = base.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def _project_modules() -> frozenset[str]:
    names = set()
    for package in PACKAGES:
        names.add(package)
        names.update(m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__,
                                                           prefix=f"{package}."))
    return frozenset(names)


def _imported_names(module: str) -> set[str]:
    """Every dotted name a module's import statements name (`from a.b import c` names a.b and a.b.c)."""
    path = _source(module)
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def _import_graph() -> Mapping[str, frozenset[str]]:
    """Project module -> the project modules and third-party top-level names its imports load, parent
    packages included (importing a.b.c runs a/__init__.py and a/b/__init__.py)."""
    modules = _project_modules()
    graph = {}
    for module in modules:
        edges: set[str] = set()
        for name in _imported_names(module) | {module}:
            parts = name.split(".")
            if parts[0] in PACKAGES:
                edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in modules)
            else:
                edges.add(parts[0])
        edges.discard(module)
        graph[module] = frozenset(edges)
    return graph


def _top_level_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for module, edges in _import_graph().items():
        top = module.split(".")[0]
        graph[top].update(e.split(".")[0] for e in edges if e.split(".")[0] in PACKAGES and not e.startswith(top))
    return graph


def _find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return visiting[visiting.index(node):] + [node]
        if node in done:
            return None
        visiting.append(node)
        for successor in sorted(graph.get(node, ())):
            cycle = visit(successor)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def _reachable(start: str) -> set[str]:
    graph = _import_graph()
    seen, stack = {start}, [start]
    while stack:
        for successor in graph.get(stack.pop(), ()):
            if successor not in seen:
                seen.add(successor)
                stack.append(successor)
    return seen


@pytest.mark.parametrize("name", sorted(_project_modules()))
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_cycle_between_top_level_packages() -> None:
    cycle = _find_cycle(_top_level_graph())
    assert cycle is None, f"top-level packages import each other in a circle: {' -> '.join(cycle or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("plane", PLANES)
def test_no_cycle_between_the_parts_of_a_plane(plane: str) -> None:
    """A part is a subpackage or a module directly in the plane's folder (`data_plane.serving`,
    `data_plane.app_keys`); the plane's own __init__ is left out, every part imports it."""

    def part(module: str) -> str | None:
        pieces = module.split(".")
        return ".".join(pieces[:2]) if pieces[0] == plane and len(pieces) > 1 else None

    graph: dict[str, set[str]] = {}
    for module, edges in _import_graph().items():
        source = part(module)
        if source is not None:
            graph.setdefault(source, set()).update(
                target for target in map(part, edges) if target is not None and target != source)
    cycle = _find_cycle(graph)
    assert cycle is None, f"parts of {plane} import each other in a circle: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize(("plane", "other"), [PLANES, PLANES[::-1]])
def test_planes_do_not_import_each_other(plane: str, other: str) -> None:
    offenders = sorted(module for module, edges in _import_graph().items()
                       if module.split(".")[0] == plane and any(e.split(".")[0] == other for e in edges))
    assert not offenders, f"{plane} imports {other}: {offenders}"


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_io_library(module: str) -> None:
    assert module in _project_modules(), f"{module} is listed as pure but does not exist"
    reached = _reachable(module)
    offenders = sorted(
        f"{source} imports {library}"
        for source in reached if source in _project_modules()
        for library in _import_graph()[source] & IO_LIBRARIES
    )
    assert not offenders, f"{module} is a pure decision core, yet: {offenders}"


def test_the_io_check_sees_an_import_through_another_module() -> None:
    reached = _reachable("data_plane.app")
    assert any(IO_LIBRARIES & _import_graph()[m] for m in reached if m in _project_modules())
