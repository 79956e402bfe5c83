"""The topology of a multi-region stack: its regions and the RTT between them, where the simulated clients
sit, the logical models and each region's backends (simulated, or a real OpenAI-compatible URL).

Parsed once at the edge (`load_topology`) into frozen objects; every error names the file and the field.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, HttpUrl, model_validator

from meridian_common.catalog import FrozenModel, RoutingDefaults
from meridian_common.config_loading import FieldReferenceError, load_yaml, validate
from meridian_common.workload import REALISTIC, WorkloadConfig
from simulator.settings import MAX_DELAY_MS, MAX_KV_CACHE_TOKENS, MAX_PREFIX_CACHE_BLOCKS

# Names end up in proxy names, file names and URLs, so they stay plain.
_NAME = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SIMULATOR_ONLY = ("ttft_ms", "itl_ms", "capacity", "seed", "prefill_ms_per_1k", "kv_cache_tokens",
                   "prefix_cache_blocks")

Architecture = Literal["dense", "moe", "linear-attention", "hybrid", "other"]


class BackendSpec(FrozenModel):
    """A deployment of a logical model in one region: a simulator started by `meridian up`, or `url`."""

    name: str = Field(pattern=_NAME)
    model: str = Field(min_length=1, description="the logical model it serves")
    profile: Architecture = Field("dense", description="simulator profile, or the real backend's architecture")
    ttft_ms: float = Field(25.0, ge=0)
    itl_ms: float = Field(5.0, ge=0)
    capacity: int = Field(32, ge=1, description="simulator: requests generated at once")
    seed: int | None = None
    prefill_ms_per_1k: float | None = Field(
        None, ge=0, le=MAX_DELAY_MS, description="simulator: prefill ms per 1,000 uncached prompt tokens at no load, "
                                                 "before the profile's attention growth; None: the simulator's default")
    kv_cache_tokens: int | None = Field(None, ge=1, le=MAX_KV_CACHE_TOKENS, description="simulator: KV cache size")
    prefix_cache_blocks: int | None = Field(None, ge=0, le=MAX_PREFIX_CACHE_BLOCKS,
                                            description="simulator: prefix cache size in blocks; 0 disables it")
    cost_per_1m_input: float = Field(0.0, ge=0)
    cost_per_1m_output: float = Field(0.0, ge=0)
    quality: float = Field(0.5, ge=0, le=1)
    max_concurrency: int = Field(0, ge=0, description="the router's limit; 0 = unlimited")
    url: HttpUrl | None = Field(None, description="a real backend's OpenAI base URL instead of a simulator")
    served_model: str | None = Field(None, min_length=1)
    api_key_env: str | None = Field(None, pattern=_ENV_NAME)

    @model_validator(mode="after")
    def _simulated_or_real(self) -> BackendSpec:
        if self.url is None:
            if self.served_model is not None or self.api_key_env is not None:
                raise ValueError("served_model and api_key_env need url (a simulated backend serves the "
                                 "logical model's name)")
            if self.profile == "other":
                raise ValueError("profile 'other' needs url: the simulator has dense, moe, linear-attention "
                                 "and hybrid")
            return self
        if self.served_model is None:
            raise ValueError("a backend with url needs served_model (the model name that server knows)")
        given = sorted(set(_SIMULATOR_ONLY) & self.model_fields_set)
        if given:
            raise ValueError(f"{', '.join(given)} apply to simulated backends only; remove them or url")
        return self

    @property
    def simulated(self) -> bool:
        return self.url is None


class RegionSpec(FrozenModel):
    rtt_ms: dict[str, float] = {}
    backends: tuple[BackendSpec, ...] = ()


class ClientSpec(FrozenModel):
    region: str = Field(min_length=1, description="where the client sits")
    requests_per_s: float = Field(1.0, gt=0)
    workload: WorkloadConfig = Field(REALISTIC, description="what it sends (docs/workload.md)")


class Topology(FrozenModel):
    regions: dict[str, RegionSpec] = Field(min_length=1)
    models: dict[str, RoutingDefaults] = Field(min_length=1)
    clients: dict[str, ClientSpec] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        self._check_region_names()
        self._check_rtts()
        self._check_backends()
        self._check_models()
        for name, client in self.clients.items():
            if client.region not in self.regions:
                raise FieldReferenceError(f"clients.{name}.region",
                                             f"unknown region {client.region!r}; known: {_names(self.regions)}")
        return self

    def _check_region_names(self) -> None:
        for name in self.regions:
            if not re.fullmatch(_NAME, name):
                raise FieldReferenceError(f"regions.{name}", "a region name is lower-case letters, digits "
                                             "and '-' (it is part of proxy and file names)")

    def _check_rtts(self) -> None:
        for name, region in self.regions.items():
            for other, rtt in region.rtt_ms.items():
                path = f"regions.{name}.rtt_ms.{other}"
                if other not in self.regions:
                    raise FieldReferenceError(path, f"unknown region {other!r}; known: {_names(self.regions)}")
                if not math.isfinite(rtt) or rtt < 0:
                    raise FieldReferenceError(path, f"RTT must be a finite number >= 0, got {rtt}")
                if other == name and rtt != 0:
                    raise FieldReferenceError(path, "the RTT of a region to itself is 0")
                reverse = self.regions[other].rtt_ms.get(name)
                if reverse is not None and reverse != rtt:
                    raise FieldReferenceError(
                        path, f"RTT is symmetric but regions.{other}.rtt_ms.{name} is {reverse}, here {rtt}")
        names = sorted(self.regions)
        for index, first in enumerate(names):
            for second in names[index + 1:]:
                if second not in self.regions[first].rtt_ms and first not in self.regions[second].rtt_ms:
                    raise FieldReferenceError(f"regions.{first}.rtt_ms",
                                                 f"no RTT to {second!r} (define it one way or the other)")

    def _check_backends(self) -> None:
        seen: dict[str, str] = {}
        for region_name, region in self.regions.items():
            for index, backend in enumerate(region.backends):
                path = f"regions.{region_name}.backends.{index}"
                if backend.name in seen:
                    raise FieldReferenceError(f"{path}.name", f"backend {backend.name!r} is already defined "
                                                 f"at {seen[backend.name]}; names are unique in the topology")
                seen[backend.name] = path
                if backend.model not in self.models:
                    raise FieldReferenceError(f"{path}.model", f"unknown model {backend.model!r}; "
                                                 f"known: {_names(self.models)}")

    def _check_models(self) -> None:
        for name, model in self.models.items():
            if not self.backends_of(name):
                raise FieldReferenceError(f"models.{name}", "no backend of any region serves this model")
            for fallback in model.fallbacks:
                if fallback == name or fallback not in self.models:
                    raise FieldReferenceError(f"models.{name}.fallbacks",
                                                 f"fallback {fallback!r} must be another model of the topology")

    # --- queries -------------------------------------------------------------------------------------------

    def rtt_ms(self, region: str, other: str) -> float:
        """The round trip between two regions (0 within one)."""
        if region == other:
            return 0.0
        forward = self.regions[region].rtt_ms.get(other)
        return forward if forward is not None else self.regions[other].rtt_ms[region]

    def rtt_matrix(self) -> dict[str, dict[str, float]]:
        """Every pair both ways, self included: what stack.json and the clients carry."""
        return {a: {b: self.rtt_ms(a, b) for b in sorted(self.regions)} for a in sorted(self.regions)}

    def backends(self) -> list[tuple[str, BackendSpec]]:
        """(region, backend) for every backend, in file order."""
        return [(name, b) for name, region in self.regions.items() for b in region.backends]

    def backends_of(self, model: str) -> list[tuple[str, BackendSpec]]:
        return [(region, b) for region, b in self.backends() if b.model == model]


def _names(mapping: dict[str, Any]) -> str:
    return ", ".join(sorted(mapping))


def parse_topology(document: Any, source: str) -> Topology:
    return validate(Topology, document, source)


def load_topology(path: str | Path) -> Topology:
    """The topology file at `path`; raises ConfigError naming the file and the field."""
    return parse_topology(load_yaml(path), str(path))


DEFAULT_TOPOLOGY = Path(__file__).resolve().parent / "topology.yaml"
