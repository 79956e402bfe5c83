"""Everything a router's handlers share, held under one typed application key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from data_plane.auth import Credentials
from data_plane.config import RouterConfig
from data_plane.limits.shared_limits import SharedLimits
from data_plane.limits.waiting_room import WaitingRooms
from data_plane.live_state import RouterState
from data_plane.metrics import RouterMetrics
from data_plane.serving.forwarding import Forwarder
from data_plane.serving.outcome import OutcomeRecorder
from data_plane.serving.response_cache import ResponseCache
from data_plane.table.store import TableStore
from data_plane.table.subscriber import TableSubscriber
from data_plane.telemetry.accumulator import TelemetryAccumulators
from data_plane.telemetry.publisher import TelemetryPublisher


@dataclass
class RouterContext:
    config: RouterConfig
    router_id: str
    state: RouterState
    metrics: RouterMetrics
    credentials: Credentials
    cache: ResponseCache
    table_store: TableStore | None = None
    public_url: str = ""
    telemetry: TelemetryAccumulators = field(
        default_factory=lambda: TelemetryAccumulators(started_unix_ms=int(time.time() * 1000)))
    session: aiohttp.ClientSession | None = None
    forwarder: Forwarder | None = None
    outcomes: OutcomeRecorder | None = None
    telemetry_publisher: TelemetryPublisher | None = None
    table_subscriber: TableSubscriber | None = None
    queues: WaitingRooms = field(default_factory=WaitingRooms)
    shared_limits: SharedLimits | None = None

    def require_forwarder(self) -> Forwarder:
        if self.forwarder is None:
            raise RuntimeError("the router's client session is not started")
        return self.forwarder


ROUTER = web.AppKey("router", RouterContext)
