"""The router's config file, parsed once at the edge into frozen, validated objects.

The `models` section is the bootstrap routing table: `bootstrap_table()` turns it into the same
protobuf table the control plane streams, so the router has a single way to read a table.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, PrivateAttr, field_validator, model_validator

from data_plane.callback_rules import HostPattern
from meridian_common.catalog import ChatContinuation, FrozenModel, ModelConfig, model_route_proto
from meridian_common.config_loading import FieldReferenceError, load_config
from meridian_common.redis_url import parse_redis_url
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2

MiB = 1024 * 1024
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class Listen(FrozenModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class HealthCheckConfig(FrozenModel):
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)
    healthy_after: int = Field(2, ge=1, description="consecutive successful probes to rejoin")
    unhealthy_after: int = Field(2, ge=1, description="consecutive failed probes to leave")
    latency_probe_tokens: int = Field(
        32, ge=0, le=256, description="each round also streams an answer of this many tokens from every healthy "
        "deployment and feeds its TTFT and TPOT into the estimates; 0 = off")
    latency_probe_timeout_s: float = Field(
        30.0, gt=0, description="how long a latency probe may wait: it measures a saturated backend's whole queue "
        "(and runs apart from the rounds, one at a time per backend)")


class StatisticsConfig(FrozenModel):
    """How a router's live figures of each deployment age (see docs/router.md)."""

    window_s: float = Field(10.0, gt=0, description="error rate and p95s; as long as the control plane's window")
    decay_s: float = Field(2.0, gt=0, description="time constant of the recent TTFT and TPOT that predict latency")
    stale_after_s: float = Field(10.0, gt=0, description="with no sample for this long a figure is unknown, and a "
                                 "local deployment that got no request for this long is due a trial")


class EngineMetricsConfig(FrozenModel):
    """Scraping each local deployment's own metrics page (vLLM's, SGLang's): its queue, KV-cache use and
    throughput. A backend without one (Ollama) simply has no engine figures."""

    enabled: bool = True
    path: str = Field("/metrics", pattern=r"^/", description="appended to the deployment's URL without its /v1")
    interval_s: float = Field(0.25, gt=0, description="how often each local deployment is scraped")
    timeout_s: float = Field(1.0, gt=0)
    stale_after_s: float = Field(2.0, gt=0, description="scraped figures older than this are not used")
    table_stale_after_s: float = Field(
        15.0, gt=0, description="other regions' figures, which come in the table, older than this are not used")
    names: Literal["auto", "vllm", "sglang"] = Field(
        "auto", description="the metric names to read; auto: whichever the page has")
    retry_without_metrics_s: float = Field(
        30.0, gt=0, description="a deployment whose page is missing (404) or has no engine metrics is tried again "
        "this much later, not every interval")


class PrefixAffinityConfig(FrozenModel):
    """Prefers the deployment likely to hold a prompt's leading blocks in its prefix cache, weighed against
    its load: the prefill the cache saves is taken off that deployment's predicted time to first token."""

    enabled: bool = True
    block_chars: int = Field(256, ge=16, description="characters of prompt text per hashed block (~64 tokens)")
    max_blocks: int = Field(256, ge=1, description="leading blocks hashed per request; longer prompts stop there")
    blocks_per_deployment: int = Field(16_384, ge=1, description="block hashes remembered per deployment (LRU)")


class ControlPlaneLink(FrozenModel):
    """Where the router subscribes to its routing table; without it the config's models are the table."""

    targets: tuple[str, ...] = Field(min_length=1, description="host:port of every replica's gRPC server")
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    allow_plaintext: bool = Field(False, description="plaintext to a target that is not on 127.0.0.1")

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> ControlPlaneLink:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        if self.ca_file is None and not self.allow_plaintext:
            remote = [t for t in self.targets if t.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]")]
            if remote:
                raise ValueError(f"targets {remote} are not on 127.0.0.1: set ca_file for TLS, or "
                                 "allow_plaintext: true to accept plaintext explicitly")
        return self


class TelemetryConfig(FrozenModel):
    interval_s: float = Field(0.5, gt=0)
    buffer_max_batches: int = Field(120, ge=1, description="batches kept while Redis is unreachable")
    stream_maxlen: int = Field(2000, ge=10)


class RateLimitSettings(FrozenModel):
    """How routers of a region share their rate limits through `redis_url` (see docs/traffic-shaping.md)."""

    sync_interval_s: float = Field(0.25, gt=0, le=5, description="one Redis round trip this often")
    heartbeat_ttl_s: float = Field(2.0, gt=0, description="a router silent this long no longer counts")
    max_client_keys: int = Field(10_000, ge=1, description="client buckets kept, least recently used dropped")


class JobsConfig(FrozenModel):
    """Asynchronous jobs (`/v1/async/...`, see docs/traffic-shaping.md); they need `redis_url`."""

    enabled: bool = True
    concurrency: int = Field(4, ge=0, description="jobs this router runs at once; 0 = it only answers polls")
    lease_s: float = Field(5.0, gt=0, description="a running job whose owner is silent this long is taken over")
    result_ttl_s: float = Field(86_400.0, gt=0, description="how long a job is kept after its last change")
    max_attempts: int = Field(3, ge=1, description="runs of a job (takeovers and retried failures) before it fails")
    max_queued: int = Field(10_000, ge=1, description="queued jobs of the region; a submit above it gets 429")
    max_queued_per_client: int = Field(100, ge=1, description="queued jobs of one client; a submit above it gets "
                                                                "429, so that no client can fill the region's queue")
    max_body_bytes: int = Field(1 << 20, gt=0, description="largest job body: each is kept in Redis until "
                                                            "result_ttl_s")
    poll_interval_s: float = Field(0.2, gt=0, description="how often an idle router looks at the queue")
    retry_backoff_s: float = Field(1.0, gt=0, description="wait before a failed run's next attempt, doubled each time")
    callback_secret_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the HMAC-SHA256 key that signs callbacks")
    callback_allowed_hosts: tuple[str, ...] = Field(
        (), description="hosts a callback_url may name: exact, or *.domain for its subdomains, each with an optional "
                        ":port (without one, only the scheme's default port)")
    callback_private_addresses: bool = Field(
        False, description="let callbacks reach loopback, link-local and private addresses (off: public only)")
    callback_max_attempts: int = Field(5, ge=1)
    callback_backoff_s: float = Field(1.0, gt=0, description="first retry delay of a callback, doubled each time")
    callback_timeout_s: float = Field(5.0, gt=0)

    _callback_host_patterns: tuple[HostPattern, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _host_patterns(self) -> JobsConfig:
        # Parsed once here, not on every submit that names a callback.
        try:
            self._callback_host_patterns = tuple(HostPattern.parse(p) for p in self.callback_allowed_hosts)
        except ValueError as error:
            raise ValueError(f"callback_allowed_hosts: {error}") from error
        return self

    @property
    def callback_host_patterns(self) -> tuple[HostPattern, ...]:
        return self._callback_host_patterns


class BackendKeys(FrozenModel):
    """Which environment variables a table from the control plane may name as a deployment's `api_key_env`.

    The router sends that variable's value as a bearer token to the deployment's URL, both from the table:
    without this list, whoever serves the table stream could read any variable of the router's environment.
    Besides these, a table may name every variable the router's own `models` section names.
    """

    env_prefixes: tuple[str, ...] = Field(
        ("MERIDIAN_BACKEND_",), description="a variable whose name starts with one of these may be named")
    env_names: tuple[str, ...] = Field((), description="further variables that may be named, exactly")

    @field_validator("env_prefixes")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            if not re.fullmatch(_ENV_NAME, prefix):
                raise ValueError(f"{prefix!r} is not the start of a variable name (an empty prefix would let a "
                                 "table name any variable)")
        return value

    @field_validator("env_names")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(_ENV_NAME, name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class RequestBodyLimits(FrozenModel):
    """How many bytes of clients' request bodies a router holds at once, and how long it waits for one; a single
    body's limit is `max_body_bytes` (see docs/router.md)."""

    in_flight_bytes: int = Field(
        64 * MiB, gt=0, description="request body bytes held at once, each from its first byte read to its answer; "
        "a body that does not fit is a 503 with Retry-After")
    read_timeout_s: float = Field(30.0, gt=0, description="time to receive a whole body; a slower client gets 408")


class StreamStallConfig(FrozenModel):
    """When a stream that has started counts as cut for waiting on its backend: `tpot_multiple` times the
    deployment's time per output token, within [floor_s, cap_s]; the cap when its TPOT is not known yet."""

    tpot_multiple: float = Field(50.0, gt=0, description="tokens' worth of silence that is a stall")
    floor_s: float = Field(2.0, gt=0, description="never a shorter stall timeout: batch hiccups are not cuts")
    cap_s: float = Field(15.0, gt=0, description="never a longer one, and the timeout while the TPOT is unknown")

    @model_validator(mode="after")
    def _floor_below_cap(self) -> StreamStallConfig:
        if self.floor_s > self.cap_s:
            raise ValueError(f"floor_s ({self.floor_s}) is above cap_s ({self.cap_s}): set floor_s <= cap_s")
        return self


class RouterConfig(FrozenModel):
    region: str = Field(min_length=1)
    listen: Listen = Listen()
    router_id: str | None = None
    models: dict[str, ModelConfig] = Field(min_length=1)
    max_body_bytes: int = Field(16 * MiB, gt=0, description="one request body's limit; 413 above it")
    request_bodies: RequestBodyLimits = RequestBodyLimits()
    request_timeout_s: float = Field(120.0, gt=0, description="overall deadline of one request")
    connect_timeout_s: float = Field(2.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="deployments tried before giving up")
    max_stream_resumes: int = Field(
        2, ge=0, description="times one stream cut by its backend after its first byte is continued on another "
        "deployment; 0 = never: a cut stream ends with an error event")
    stream_stall: StreamStallConfig = StreamStallConfig()
    chat_continuation: ChatContinuation = Field(
        ChatContinuation.VLLM, description="how a cut chat stream is continued on a deployment that does not set "
        "its own: vllm sends continue_final_message and add_generation_prompt (vLLM, SGLang); prefill ends the "
        "messages with the partial assistant message only, for servers that continue such a message as it is")
    client_api_keys_env: str | None = Field(
        None, description="environment variable holding comma-separated client API keys"
    )
    admin_token_env: str | None = Field(None, description="environment variable holding the admin token")
    ops_auth: bool = Field(False, description="/routing and /metrics require the admin token too (/health and "
                                              "/ready stay open for probes)")
    redis_url: str | None = Field(None, description="telemetry, the response cache, shared rate limits and jobs; "
                                                    "one Redis, or redis+sentinel://... (Sentinel)")
    control_plane: ControlPlaneLink | None = None
    state_dir: Path | None = Field(None, description="where the last good table is persisted")
    public_url: str | None = Field(None, description="the URL clients use, reported to the control plane")
    peers: dict[str, tuple[HttpUrl, ...]] = Field(
        {}, description="every region's routers (this one included), listed by GET /v1/regions"
    )
    telemetry: TelemetryConfig = TelemetryConfig()
    health_check: HealthCheckConfig = HealthCheckConfig()
    statistics: StatisticsConfig = StatisticsConfig()
    engine_metrics: EngineMetricsConfig = EngineMetricsConfig()
    prefix_affinity: PrefixAffinityConfig = PrefixAffinityConfig()
    rate_limits: RateLimitSettings = RateLimitSettings()
    jobs: JobsConfig = JobsConfig()
    backend_keys: BackendKeys = BackendKeys()

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_redis_url(value)
        return value

    @model_validator(mode="after")
    def _own_secrets_stay_home(self) -> RouterConfig:
        # A variable a table may name goes, as a bearer token, to a URL the table names too.
        for path, name in (("admin_token_env", self.admin_token_env),
                           ("client_api_keys_env", self.client_api_keys_env),
                           ("jobs.callback_secret_env", self.jobs.callback_secret_env)):
            if name is not None and self.backend_key_env_allowed(name):
                raise FieldReferenceError(
                    path, f"{name} holds one of this router's own secrets, but backend_keys (or a deployment's "
                    "api_key_env) lets a routing table name it as a backend key, to be sent to any URL: rename "
                    "the variable or narrow backend_keys")
        return self

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> RouterConfig:
        for name, model in self.models.items():
            missing = [f for f in model.fallbacks if f not in self.models]
            if missing:
                raise ValueError(f"model {name!r} names unknown fallbacks {missing}")
            if name in model.fallbacks:
                raise ValueError(f"model {name!r} names itself as a fallback")
        return self

    @model_validator(mode="after")
    def _largest_body_fits(self) -> RouterConfig:
        if self.request_bodies.in_flight_bytes < self.max_body_bytes:
            raise ValueError(f"request_bodies.in_flight_bytes ({self.request_bodies.in_flight_bytes}) is below "
                             f"max_body_bytes ({self.max_body_bytes}): a body of the largest size could never be read")
        return self

    def backend_key_env_names(self) -> frozenset[str]:
        """The variables a table may name exactly: `backend_keys.env_names` and those of the `models` section."""
        named = {d.api_key_env for model in self.models.values() for d in model.deployments if d.api_key_env}
        return frozenset(self.backend_keys.env_names) | named

    def backend_key_env_allowed(self, name: str) -> bool:
        return name in self.backend_key_env_names() or name.startswith(self.backend_keys.env_prefixes)


def load_router_config(path: str | Path) -> RouterConfig:
    return load_config(RouterConfig, path)


def bootstrap_table(config: RouterConfig, now_unix_ms: int | None = None) -> routing_pb2.RoutingTable:
    """The config file's models as routing table version 0 (any control-plane table is newer)."""
    models = [model_route_proto(name, model, config.region) for name, model in sorted(config.models.items())]
    return routing_pb2.RoutingTable(
        version=0,
        epoch=0,
        region=config.region,
        content_hash=content_hash(models),
        computed_at_unix_ms=int(time.time() * 1000) if now_unix_ms is None else now_unix_ms,
        models=models,
        source="config",
    )
