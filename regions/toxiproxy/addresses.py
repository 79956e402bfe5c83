"""`host:port` strings as Go's net package writes and reads them (IPv6 hosts in brackets)."""

from __future__ import annotations

import ipaddress
import re
import socket


def split_host_port(address: str) -> tuple[str, int]:
    """Splits `host:port`, `[v6]:port` or `:port` as Go's net.SplitHostPort and LookupPort do, raising ValueError
    with Go's text. As net.Listen and net.Dial read an address, "" is no host and port 0, and so is an empty port.
    """
    if not address:
        return "", 0
    colon = address.rfind(":")
    if colon < 0:
        raise ValueError(f"address {address}: missing port in address")
    start, end = 0, 0
    if address[0] == "[":
        close = address.find("]")
        if close < 0:
            raise ValueError(f"address {address}: missing ']' in address")
        if close + 1 != colon:
            why = "too many colons" if close + 1 < len(address) and address[close + 1] == ":" else "missing port"
            raise ValueError(f"address {address}: {why} in address")
        host = address[1:close]
        start, end = 1, close + 1
    else:
        host = address[:colon]
        if ":" in host:
            raise ValueError(f"address {address}: too many colons in address")
    if "[" in address[start:]:
        raise ValueError(f"address {address}: unexpected '[' in address")
    if "]" in address[end:]:
        raise ValueError(f"address {address}: unexpected ']' in address")
    return host, _port(address[colon + 1:])


def _port(text: str) -> int:
    sign = text[:1] if text[:1] in ("+", "-") else ""
    digits = text[len(sign):]
    if not re.fullmatch("[0-9]*", digits):
        # Go would look a service name up in /etc/services; the numbers are all that Toxiproxy's clients send.
        raise ValueError(f"lookup tcp/{text}: unknown port")
    port = int(digits or "0")
    if sign == "-":
        port = -port
    if not 0 <= port <= 65535:
        raise ValueError(f"address {text}: invalid port")
    return port


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_wildcard(ip: str) -> bool:
    """No host, 0.0.0.0 or ::: Go listens on every interface for all of them."""
    return not ip or (is_ip_literal(ip) and ipaddress.ip_address(ip).is_unspecified)


def listen_target(ip: str, has_ipv6: bool) -> tuple[socket.AddressFamily, str, bool]:
    """(family, address, dual stack) that Go's net.Listen binds for a resolved IP, or "" for none.

    A wildcard becomes one IPv6 socket that takes IPv4 too, so Go reports it as `[::]:port` even when it
    was asked for 0.0.0.0; without IPv6 it is 0.0.0.0.
    """
    if is_wildcard(ip):
        return (socket.AF_INET6, "::", True) if has_ipv6 else (socket.AF_INET, "0.0.0.0", False)
    return (socket.AF_INET6 if ":" in ip else socket.AF_INET), ip, False
