"""Real simulator and router processes on 127.0.0.1 ephemeral ports for the router's end-to-end tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from meridian_common.service_process import ServiceProcess, start_service

StartSimulator = Callable[..., ServiceProcess]
StartRouter = Callable[..., ServiceProcess]


def meridian(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def start_simulator(workdir: Path) -> Iterator[StartSimulator]:
    started: list[ServiceProcess] = []

    def start(name: str, *flags: str, env: Mapping[str, str] | None = None) -> ServiceProcess:
        service = start_service(name, meridian("sim-backend", "--port", "0", *flags), workdir, env=env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def start_router(workdir: Path) -> Iterator[StartRouter]:
    started: list[ServiceProcess] = []

    def start(name: str, config_text: str, env: Mapping[str, str] | None = None, *flags: str) -> ServiceProcess:
        config = workdir / f"{name}.yaml"
        config.write_text(config_text)
        service = start_service(name, meridian("router", "--config", str(config), "--port", "0", *flags), workdir,
                                health_path="/ready", env=env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def deployment_yaml(name: str, url: str, *, model: str = "m", region: str = "test", architecture: str = "dense",
                    cost_in: float = 0.1, cost_out: float = 0.2, quality: float = 0.8,
                    max_concurrency: int = 0, extra: str = "") -> str:
    lines = [
        f"      - name: {name}",
        f"        url: {url}/v1",
        f"        served_model: {model}",
        f"        region: {region}",
        f"        architecture: {architecture}",
        f"        cost_per_1m_input: {cost_in}",
        f"        cost_per_1m_output: {cost_out}",
        f"        quality: {quality}",
        f"        max_concurrency: {max_concurrency}",
    ]
    return "\n".join(lines) + (f"\n        {extra}" if extra else "")
