"""Which callback URLs a job may name and where a callback may connect, and the signature receivers check.
Pure: the deliverer (`callbacks.py`) resolves names and posts; this module only decides.

A callback is a request the router makes on a client's behalf, so it is held to what the operator allowed:
a host (or `*.domain`) and a port listed in `callback_allowed_hosts`, and, unless
`callback_private_addresses` is set, only public addresses once the name is resolved (no loopback,
link-local such as 169.254.169.254, private or reserved address).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from yarl import URL

SIGNATURE_TOLERANCE_S = 300
"""How old a signature's timestamp may be for `signature_valid`: receivers refuse replays older than this."""
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HostPattern:
    """`host`, `*.domain` (its subdomains, not the domain itself) or either with `:port`; without a port only
    the scheme's default port (80, 443) is allowed."""

    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        """Raises ValueError naming what is wrong with `text`."""
        host, port = text.strip().lower(), None
        if "/" in host or "@" in host:
            raise _not_a_host(text)
        if host.startswith("["):
            close = host.find("]")
            if close < 0:
                raise ValueError(f"{text!r}: missing ']'")
            host, rest = host[1:close], host[close + 1:]
            if rest:
                port = _port(text, rest)
        elif host.count(":") == 1:
            host, _, port_text = host.partition(":")
            port = _port(text, ":" + port_text)
        bare = host[2:] if host.startswith("*.") else host
        if not bare or "*" in bare or (":" in bare and not is_ip_literal(bare)):
            raise _not_a_host(text)
        return cls(host.rstrip("."), port)

    def allows(self, host: str, port: int, scheme: str) -> bool:
        host = host.lower().rstrip(".")
        if self.host.startswith("*."):
            named = host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        else:
            named = host == self.host
        return named and port == (self.port if self.port is not None else _DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def _not_a_host(text: str) -> ValueError:
    return ValueError(f"{text!r} is not a host name, *.domain or IP address, with an optional :port (no scheme "
                      "or path)")


def _port(text: str, suffix: str) -> int:
    if not suffix.startswith(":") or not suffix[1:].isdigit() or not 0 < int(suffix[1:]) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(suffix[1:])


def is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def public_address(address: str) -> bool:
    """Whether `address` (an IP literal) is a public one: not loopback, link-local, private, shared,
    multicast, unspecified or reserved, IPv4-mapped IPv6 addresses judged as the IPv4 they carry."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def callback_refusal(url: str, patterns: Sequence[HostPattern], *, has_secret: bool,
                     private_addresses: bool) -> str | None:
    """Why a submit may not name this callback_url, or None when it may. A host name is checked again
    against its resolved addresses when the callback is posted."""
    if not has_secret:
        return ("callbacks are disabled on this router: it has no signing secret "
                "(set jobs.callback_secret_env and that variable)")
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError:
        return f"callback_url {url!r} is not a URL"
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host or port is None:
        return f"callback_url must be an absolute http or https URL, got {url!r}"
    if parsed.user is not None or parsed.password is not None:
        return "callback_url must not carry credentials"
    host = parsed.host
    if not any(pattern.allows(host, port, parsed.scheme) for pattern in patterns):
        allowed = ", ".join(map(str, patterns)) or "none"
        return f"callback host {host!r} port {port} is not allowed (jobs.callback_allowed_hosts: {allowed})"
    if not private_addresses and is_ip_literal(host) and not public_address(host):
        return (f"callback host {host!r} is not a public address "
                "(set jobs.callback_private_addresses to allow loopback and private networks)")
    return None


def sign(secret: bytes, body: bytes, timestamp_s: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`: the timestamp is signed with the body, so a
    receiver that refuses old timestamps cannot be sent a captured callback again."""
    digest = hmac.new(secret, str(timestamp_s).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={digest}"


def signature_valid(secret: bytes, body: bytes, header: str, now_s: float,
                    tolerance_s: float = SIGNATURE_TOLERANCE_S) -> bool:
    """What a receiver checks: a `v1` signature of this body and timestamp, the timestamp within
    `tolerance_s` of `now_s`."""
    fields = dict(part.partition("=")[::2] for part in header.split(",") if "=" in part)
    timestamp = fields.get("t", "")
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, int(timestamp)), f"t={timestamp},v1={fields.get('v1', '')}")
