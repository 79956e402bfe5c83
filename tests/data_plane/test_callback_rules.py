"""Which callback URLs a job may name, where a callback may connect, and the signature receivers check."""

from __future__ import annotations

import asyncio

import pytest

from data_plane.callback_rules import HostPattern, callback_refusal, public_address, sign, signature_valid
from data_plane.jobs.callbacks import PublicAddressResolver

PATTERNS = tuple(HostPattern.parse(p) for p in ("hooks.example.com", "*.internal.example.com:8443", "127.0.0.1:9000",
                                                  "[::1]:9001", "93.184.216.34"))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/cb", True),
        ("http://hooks.example.com/cb", True),  # port 80, the scheme's default
        ("https://HOOKS.example.com./cb", True),
        ("https://hooks.example.com:8443/cb", False),  # a port the pattern did not name
        ("https://a.internal.example.com:8443/cb", True),
        ("https://a.internal.example.com/cb", False),
        ("https://internal.example.com:8443/cb", False),  # *.domain is its subdomains only
        ("https://evil-internal.example.com:8443/cb", False),
        ("https://93.184.216.34/cb", True),
        ("https://93.184.216.34:8080/cb", False),
        ("https://evil.test/cb", False),
    ],
)
def test_hosts_and_ports_must_be_listed(url: str, allowed: bool) -> None:
    refusal = callback_refusal(url, PATTERNS, has_secret=True, private_addresses=False)
    assert (refusal is None) is allowed, refusal


@pytest.mark.parametrize(
    ("url", "private_addresses", "allowed"),
    [
        ("http://127.0.0.1:9000/cb", False, False),
        ("http://127.0.0.1:9000/cb", True, True),
        ("http://[::1]:9001/cb", False, False),
        ("http://[::1]:9001/cb", True, True),
    ],
)
def test_loopback_and_private_addresses_need_the_setting(url: str, private_addresses: bool, allowed: bool) -> None:
    refusal = callback_refusal(url, PATTERNS, has_secret=True, private_addresses=private_addresses)
    assert (refusal is None) is allowed, refusal
    if not allowed:
        assert "not a public address" in (refusal or "") and "callback_private_addresses" in (refusal or "")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://hooks.example.com/cb", "absolute http or https URL"),
        ("/relative", "absolute http or https URL"),
        ("https://user:pw@hooks.example.com/cb", "credentials"),
        ("https://hooks.example.com:99999/cb", "not a URL"),
    ],
)
def test_malformed_callback_urls_are_refused(url: str, expected: str) -> None:
    assert expected in (callback_refusal(url, PATTERNS, has_secret=True, private_addresses=True) or "")


def test_no_secret_no_callbacks() -> None:
    refusal = callback_refusal("https://hooks.example.com/cb", PATTERNS, has_secret=False, private_addresses=True)
    assert "no signing secret" in (refusal or "")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("203.0.113.7", False),  # TEST-NET-3 is reserved
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("2606:4700:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert public_address(address) is public


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("https://hooks.example.com", "not a host name"),
        ("hooks.example.com/path", "not a host name"),
        ("*", "not a host name"),
        ("a.*.example.com", "not a host name"),
        ("hooks.example.com:0", "port must be a number"),
        ("hooks.example.com:http", "port must be a number"),
        ("[::1", "missing ']'"),
    ],
)
def test_bad_patterns_are_refused(pattern: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        HostPattern.parse(pattern)


def test_a_name_that_resolves_to_loopback_reaches_nothing() -> None:
    async def resolve() -> None:
        resolver = PublicAddressResolver()
        try:
            with pytest.raises(OSError, match="no public address"):
                await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    asyncio.run(resolve())


def test_signatures_carry_a_timestamp_and_expire() -> None:
    header = sign(b"k", b"body", 1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert signature_valid(b"k", b"body", header, now_s=1_000_100)
    assert not signature_valid(b"k", b"body!", header, now_s=1_000_100)
    assert not signature_valid(b"other", b"body", header, now_s=1_000_100)
    assert not signature_valid(b"k", b"body", header, now_s=1_000_000 + 301), "a replay after the tolerance"
    forged = header.replace("t=1000000", "t=1000200")
    assert not signature_valid(b"k", b"body", forged, now_s=1_000_200), "the timestamp is signed too"
    assert not signature_valid(b"k", b"body", "sha256=abc", now_s=1_000_000)
