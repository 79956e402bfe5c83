from __future__ import annotations

import pytest

from meridian_common.redis_url import SentinelTarget, parse_redis_url, redis_endpoint


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", None),
        ("rediss://:pw@cache:6380/1", None),
        ("unix:///run/redis.sock", None),
        ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/meridian",
         SentinelTarget((("10.0.0.1", 26379), ("10.0.0.2", 26380)), "meridian")),
        ("redis+sentinel://app:s%40cret@s1:1,s2/meridian/2",
         SentinelTarget((("s1", 1), ("s2", 26379)), "meridian", 2, "app", "s@cret")),
    ],
)
def test_parse(url: str, expected: SentinelTarget | None) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379", "must start with redis://"),
        ("redis+sentinel:///meridian", "lists its sentinels"),
        ("redis+sentinel://s1:1", "/<service name>"),
        ("redis+sentinel://s1:1/meridian/zero", "/<db number>"),
        ("redis+sentinel://s1:port/meridian", "must be host:port"),
    ],
)
def test_invalid_urls_say_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="e.g. redis|must start") as error:
        parse_redis_url(url)
    assert says in str(error.value)


def test_endpoints_for_logs_never_show_the_password() -> None:
    assert redis_endpoint("redis+sentinel://app:s3cret@s1:1,s2:2/meridian/0") == "sentinel:meridian@s1:1,s2:2"
    assert "s3cret" not in redis_endpoint("redis://app:s3cret@h:1/0")
