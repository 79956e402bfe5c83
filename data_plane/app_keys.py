"""The router's components in its aiohttp application, one typed key each: `create_app` sets those that exist
before start-up, each cleanup context in app.py those it starts, and the handlers read what they use."""

from __future__ import annotations

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
from data_plane.serving.pipeline import Serving
from data_plane.serving.request_body import BodyIntake
from data_plane.serving.response_cache import ResponseCache
from data_plane.table.store import TableStore
from data_plane.table.subscriber import TableSubscriber
from data_plane.telemetry.accumulator import TelemetryAccumulators
from data_plane.telemetry.publisher import TelemetryPublisher
from data_plane.worker import WorkerIdentity

CONFIG = web.AppKey("config", RouterConfig)
ROUTER_ID = web.AppKey("router_id", str)
STATE = web.AppKey("state", RouterState)
METRICS = web.AppKey("metrics", RouterMetrics)
CREDENTIALS = web.AppKey("credentials", Credentials)
QUEUES = web.AppKey("queues", WaitingRooms)
BODY_INTAKE = web.AppKey("body_intake", BodyIntake)
TELEMETRY = web.AppKey("telemetry", TelemetryAccumulators)
TABLE_STORE = web.AppKey("table_store", TableStore)
"""Absent unless the config has a state_dir."""

PUBLIC_URL = web.AppKey("public_url", str)
"""Set by `serve` once the socket is bound, before start-up; absent in an application served otherwise."""

SESSION = web.AppKey("client_session", aiohttp.ClientSession)
OUTCOMES = web.AppKey("outcomes", OutcomeRecorder)
FORWARDER = web.AppKey("forwarder", Forwarder)
CACHE = web.AppKey("cache", ResponseCache)
SERVING = web.AppKey("serving", Serving)
TABLE_SUBSCRIBER = web.AppKey("table_subscriber", TableSubscriber)
"""Absent unless the config links the router to a control plane."""
TELEMETRY_PUBLISHER = web.AppKey("telemetry_publisher", TelemetryPublisher)
"""Absent unless the config has a redis_url."""
SHARED_LIMITS = web.AppKey("shared_limits", SharedLimits)
"""Absent unless the config has a redis_url."""
WORKER = web.AppKey("worker", WorkerIdentity)
"""Absent unless the router runs as one of several workers (`meridian router --workers N`)."""
