"""The Redis URLs Meridian takes, parsed (no I/O: configs validate with it; redis_connection.py makes clients):

- `redis://[user:password@]host:port/db`, `rediss://...`, `unix:///path`: one Redis server;
- `redis+sentinel://[user:password@]host:port,host:port,.../service[/db]`: the primary that Redis Sentinel
  names for `service`. Every connection asks the sentinels where the primary is, so after a failover the next
  connection (redis-py reconnects after a connection error) reaches the new one. The password, if any, is the
  primary's and its replicas'; the sentinels are asked without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_EXAMPLE = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/meridian/0"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def describe(self) -> str:
        """For logs: where the primary is looked up, never the password."""
        return f"sentinel:{self.service}@" + ",".join(f"{host}:{port}" for host, port in self.sentinels)


def parse_redis_url(url: str) -> SentinelTarget | None:
    """The Sentinel target of a `redis+sentinel://` URL, None for a plain Redis URL; a ValueError says what is
    wrong and shows the expected form."""
    parts = urlsplit(url)
    if parts.scheme in PLAIN_SCHEMES:
        return None
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"a Redis URL must start with redis://, rediss://, unix:// or {SENTINEL_SCHEME}://, got "
                         f"{parts.scheme or 'no scheme'}://")
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
    if not sentinels:
        raise ValueError(f"a {SENTINEL_SCHEME} URL lists its sentinels as host:port,host:port; e.g. {SENTINEL_EXAMPLE}")
    path = [segment for segment in parts.path.split("/") if segment]
    if not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"a {SENTINEL_SCHEME} URL ends with /<service name>[/<db number>]; e.g. {SENTINEL_EXAMPLE}")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    return SentinelTarget(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                          unquote(username) or None, unquote(password) or None)


def _host_port(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":") if ":" in item else (item, "", str(DEFAULT_SENTINEL_PORT))
    if not host or not port.isdigit():
        raise ValueError(f"sentinel {item!r} must be host:port; e.g. {SENTINEL_EXAMPLE}")
    return host, int(port)


def redis_endpoint(url: str) -> str:
    """Where a Redis URL leads, for logs: the URL itself may carry a password."""
    target = parse_redis_url(url)
    if target is not None:
        return target.describe()
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
