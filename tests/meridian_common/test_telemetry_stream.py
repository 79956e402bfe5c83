"""The stream both planes name, and the Redis endpoint their logs show."""

from __future__ import annotations

from meridian_common.redis_url import redis_endpoint
from meridian_common.telemetry_stream import stream_key


def test_a_region_has_one_stream() -> None:
    assert stream_key("eu-west") == "meridian:telemetry:eu-west"


def test_the_log_names_the_endpoint_never_the_password() -> None:
    assert redis_endpoint("redis://user:s3cret@10.0.0.5:6380/0") == "10.0.0.5:6380"
    assert redis_endpoint("rediss://:s3cret@cache.internal/1") == "cache.internal:6379"
    assert redis_endpoint("unix:///run/redis.sock") == "/run/redis.sock"
