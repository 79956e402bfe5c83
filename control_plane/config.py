"""The control plane's config file: where etcd, Redis and the listeners are, and the catalog it computes from.

Parsed once at the edge into frozen objects; every error names the file and the field's path. The catalog
(regions with their RTTs, logical models with the deployments of every region) reuses the schema the
routers read, so that a deployment means the same thing on both planes.
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from meridian_common.catalog import DeploymentConfig, FrozenModel, ModelConfig
from meridian_common.config_loading import FieldReferenceError, load_yaml, validate
from meridian_common.redis_url import parse_redis_url

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class EtcdConfig(FrozenModel):
    endpoints: tuple[str, ...] = Field(("http://127.0.0.1:2379",), min_length=1)
    prefix: str = "/meridian"
    call_timeout_s: float = Field(
        1.0, gt=0, le=10, description="deadline of one etcd call; past it the replica moves to the next member. A "
        "write sent as the etcd leader dies is dropped and answered only at etcd's own timeout (over 5 s), so this "
        "bounds how long a leader's publishing stalls then")

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for endpoint in value:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
                raise ValueError(f"etcd endpoint {endpoint!r} must look like http://host:port or https://host:port")
        return value

    @field_validator("prefix")
    @classmethod
    def _absolute_prefix(cls, value: str) -> str:
        if not value.startswith("/") or (len(value) > 1 and value.endswith("/")):
            raise ValueError(f"prefix {value!r} must start with '/' and not end with '/', e.g. /meridian")
        return value


class GrpcListen(FrozenModel):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)


class AdminListen(FrozenModel):
    host: str = "127.0.0.1"
    port: int = Field(50052, ge=0, le=65535)
    grpc_port: int = Field(50053, ge=0, le=65535, description="the Admin gRPC service (HTTP/JSON is on port)")
    token_env: str | None = Field(None, pattern=_ENV_NAME, description="variable holding the admin token")


class TlsConfig(FrozenModel):
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False
    allow_plaintext: bool = Field(False, description="serve without TLS on a non-loopback address")

    @model_validator(mode="after")
    def _complete(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        if self.require_client_cert and (self.ca_file is None or self.cert_file is None):
            raise ValueError("require_client_cert needs cert_file, key_file and ca_file (to verify clients)")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class ComputeSettings(FrozenModel):
    """Constants of the table computation (docs/control-plane.md explains each)."""

    weight_time_constant_s: float = Field(10.0, gt=0, description="EMA time constant of the weights")
    max_weight_step: float = Field(0.1, gt=0, le=1, description="largest move of one weight in one tick")
    weight_hysteresis: float = Field(0.05, ge=0, lt=1, description="weight moves up to this stay unpublished")
    min_weight: float = Field(0.05, ge=0, lt=0.5, description="floor of a derived weight")
    max_weight: float = Field(0.8, gt=0.5, le=1, description="cap of a derived weight")
    min_latency_ms: float = Field(1.0, gt=0, description="latency below this counts as this")
    min_requests_for_weight: int = Field(5, ge=1)
    min_requests_for_ejection: int = Field(20, ge=1)
    default_max_error_rate: float = Field(0.5, gt=0, le=1)
    probe_after_s: float = Field(30.0, gt=0)
    probe_weight: float = Field(0.05, gt=0, le=0.5)
    engine_max_age_s: float = Field(5.0, gt=0, description="engine figures observed longer ago are not merged")

    @model_validator(mode="after")
    def _hysteresis_below_step(self) -> ComputeSettings:
        if self.weight_hysteresis >= self.max_weight_step:
            raise ValueError("weight_hysteresis must be below max_weight_step, or weights could never move")
        return self


class RegionConfig(FrozenModel):
    rtt_ms: dict[str, float] = {}


class ControlPlaneConfig(FrozenModel):
    replica_id: str | None = Field(None, min_length=1, description="default: hostname-pid, set by the caller")
    etcd: EtcdConfig = EtcdConfig()
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="one Redis, or redis+sentinel://... (Sentinel)")
    grpc: GrpcListen = GrpcListen()
    admin: AdminListen = AdminListen()
    tls: TlsConfig = TlsConfig()
    lease_ttl_s: float = Field(3.0, gt=0)
    tick_s: float = Field(1.0, gt=0)
    telemetry_window_s: float = Field(10.0, gt=0)
    policy_versions_kept: int = Field(
        100, ge=1, description="policy versions kept in etcd, the one in force included; each push deletes the "
        "older ones (rollback reaches only these)")
    compute: ComputeSettings = ComputeSettings()
    regions: dict[str, RegionConfig] = Field(min_length=1)
    models: dict[str, ModelConfig] = Field(min_length=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parse_redis_url(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ControlPlaneConfig:
        if self.telemetry_window_s < self.tick_s:
            raise FieldReferenceError("telemetry_window_s", "must be >= tick_s, or ticks miss samples")
        if self.compute.probe_after_s <= self.telemetry_window_s:
            raise FieldReferenceError(
                "compute.probe_after_s",
                f"must exceed telemetry_window_s ({self.telemetry_window_s}), or a probe would be judged on "
                "the samples that got the deployment ejected",
            )
        for listener in ("grpc", "admin"):
            host = getattr(self, listener).host
            if not self.tls.enabled and not plaintext_allowed(host, self.tls):
                raise FieldReferenceError(
                    f"{listener}.host",
                    f"{host!r} is not a loopback address and tls has no cert_file; "
                    "configure tls or set tls.allow_plaintext: true",
                )
        self._check_rtts()
        self._check_models()
        return self

    def _check_rtts(self) -> None:
        for name, region in self.regions.items():
            for other, rtt in region.rtt_ms.items():
                path = f"regions.{name}.rtt_ms.{other}"
                if other not in self.regions:
                    raise FieldReferenceError(
                        path, f"unknown region {other!r}; known: {_names(self.regions)}"
                    )
                if not math.isfinite(rtt) or rtt < 0:
                    raise FieldReferenceError(path, f"RTT must be a finite number >= 0, got {rtt}")
                if other == name and rtt != 0:
                    raise FieldReferenceError(path, "the RTT of a region to itself is 0")
                reverse = self.regions[other].rtt_ms.get(name)
                if reverse is not None and reverse != rtt:
                    raise FieldReferenceError(
                        path, f"RTT is symmetric but regions.{other}.rtt_ms.{name} is {reverse}, here {rtt}"
                    )
        names = sorted(self.regions)
        for index, first in enumerate(names):
            for second in names[index + 1 :]:
                if second not in self.regions[first].rtt_ms and first not in self.regions[second].rtt_ms:
                    raise FieldReferenceError(
                        f"regions.{first}.rtt_ms", f"no RTT to {second!r} (define it one way or the other)"
                    )

    def _check_models(self) -> None:
        for name, model in self.models.items():
            for index, deployment in enumerate(model.deployments):
                if deployment.region not in self.regions:
                    raise FieldReferenceError(
                        f"models.{name}.deployments.{index}.region",
                        f"unknown region {deployment.region!r}; known: {_names(self.regions)}",
                    )
            for fallback in model.fallbacks:
                if fallback == name or fallback not in self.models:
                    raise FieldReferenceError(
                        f"models.{name}.fallbacks", f"fallback {fallback!r} must be another catalog model"
                    )

    def rtt_ms(self, region: str, other: str) -> float:
        """The round trip between two catalog regions (0 within a region)."""
        if region == other:
            return 0.0
        forward = self.regions[region].rtt_ms.get(other)
        return forward if forward is not None else self.regions[other].rtt_ms[region]

    def deployment(self, model: str, name: str) -> DeploymentConfig | None:
        return next((d for d in self.models[model].deployments if d.name == name), None)


def _names(mapping: dict[str, Any]) -> str:
    return ", ".join(sorted(mapping))


def plaintext_allowed(host: str, tls: TlsConfig) -> bool:
    """Whether a listener on `host` may serve without TLS: on loopback always, elsewhere only by opt-in.

    The rule stops an admin API or a table stream from being exposed in clear text by accident.
    """
    if tls.allow_plaintext or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_replica_id(hostname: str, pid: int) -> str:
    return f"{hostname}-{pid}"


def parse_control_plane_config(document: Any, source: str) -> ControlPlaneConfig:
    """Validates an already-parsed document; errors are ConfigErrors naming `source` and the field path."""
    return validate(ControlPlaneConfig, document, source)


def load_control_plane_config(path: str | Path) -> ControlPlaneConfig:
    return parse_control_plane_config(load_yaml(path), str(path))
