"""`host:port` strings as Go's net package writes and reads them (IPv6 hosts in brackets)."""

from __future__ import annotations

import ipaddress
import socket


def split_host_port(address: str) -> tuple[str, int]:
    """Splits `host:port`, `[v6]:port` or `:port`; raises ValueError naming what is wrong.

    As Go's net.Listen and net.Dial read an address: "" is no host and port 0, and so is an empty port.
    """
    if not address:
        return "", 0
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {address}: too many colons in address")
    if not port_text:
        return host, 0
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"address {address}: invalid port")
    return host, int(port_text)


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
