"""Starts simulators as child processes on ephemeral 127.0.0.1 ports and stops them by pid: what tests,
benchmarks and the multi-region launcher use to get a backend they can throw away."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from meridian_common.service_process import ProcessHandle, ServiceProcess, ServiceStartError, start_service

__all__ = ["RunningSimulator", "ServiceStartError", "simulator_command", "start_simulator",
           "start_simulators"]

READY_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class RunningSimulator(ProcessHandle):
    managed: ServiceProcess

    @property
    def name(self) -> str:
        return self.managed.name

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, where `/health`, `/metrics` and `/sim/config` live."""
        return self.managed.url

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (`.../v1`), as a client or a router deployment wants it."""
        return f"{self.managed.url}/v1"

    @property
    def port(self) -> int:
        return self.managed.port

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def simulator_command(args: Sequence[str], python: str = sys.executable) -> list[str]:
    """The argv of `meridian sim-backend` on 127.0.0.1, any free port, plus `args`."""
    return [python, "-m", "meridian_cli.main", "sim-backend", "--host", "127.0.0.1", "--port", "0", *args]


def start_simulator(args: Sequence[str], log_path: Path, *, name: str | None = None,
                    timeout_s: float = READY_TIMEOUT_S,
                    env: Mapping[str, str] | None = None) -> RunningSimulator:
    """Starts `meridian sim-backend ARGS` logging to `log_path` and returns once `/health` answers (at most
    `timeout_s`); raises ServiceStartError with the log's tail, the child stopped, if it does not."""
    service = start_service(name or log_path.stem, simulator_command(args), log_path.parent,
                            health_path="/health", timeout_s=timeout_s, env=env, log_path=log_path)
    return RunningSimulator(service)


def start_simulators(specs: Mapping[str, Sequence[str]], workdir: Path, *,
                     timeout_s: float = READY_TIMEOUT_S) -> dict[str, RunningSimulator]:
    """Starts one simulator per `name: args` at the same time (each logs to `workdir/NAME.log`); if any
    fails, the others are stopped before the error is raised."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not specs:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(specs), 16)) as pool:
        futures = {name: pool.submit(start_simulator, args, workdir / f"{name}.log", name=name,
                                     timeout_s=timeout_s) for name, args in specs.items()}
    started: dict[str, RunningSimulator] = {}
    failure: BaseException | None = None
    for name, future in futures.items():
        try:
            started[name] = future.result()
        except BaseException as error:  # whatever went wrong, no started child may outlive this call
            failure = failure or error
    if failure is not None:
        for simulator in started.values():
            simulator.stop()
        raise failure
    return started
