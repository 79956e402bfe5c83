"""The I/O-free parts of Meridian's Toxiproxy server: request parsing and JSON shaping, toxic attributes,
toxicity draws, address parsing, and each toxic's pipe driven with a fake stub (no sockets, no sleeping)."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions.toxiproxy import api_json, go_json
from regions.toxiproxy.addresses import join_host_port, listen_target, split_host_port
from regions.toxiproxy.api_error import ApiError
from regions.toxiproxy.toxicity import draw_active
from regions.toxiproxy.toxics import REGISTRY, Chunk, StreamClosed, Toxic
from regions.toxiproxy.toxics.bandwidth import BandwidthToxic
from regions.toxiproxy.toxics.latency import LatencyToxic
from regions.toxiproxy.toxics.limit_data import LimitDataToxic
from regions.toxiproxy.toxics.reset_peer import ResetPeerToxic
from regions.toxiproxy.toxics.slicer import SlicerToxic, slice_bounds
from regions.toxiproxy.toxics.timeout import TimeoutToxic
from regions.toxiproxy.toxics.toxic import attributes_from_json


class FakeStub:
    """A stub on a virtual clock: sleeping advances the clock; `interrupt_after` sleeps it is 'removed'."""

    def __init__(self, toxic: Toxic, *, now: float = 100.0, interrupt_after: int | None = None) -> None:
        self.state: Any = toxic.new_state()
        self.started_at = now
        self.rng = random.Random(7)
        self.clock = now
        self.sleeps: list[float] = []
        self._interrupt_after = interrupt_after

    def now(self) -> float:
        return self.clock

    async def sleep(self, seconds: float) -> bool:
        if self._interrupt_after is not None and len(self.sleeps) >= self._interrupt_after:
            return False
        self.sleeps.append(seconds)
        if seconds > 0:
            self.clock += seconds
        return True

    async def sleep_uninterrupted(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock += max(seconds, 0)


def run_pipe(toxic: Toxic, stub: FakeStub, chunk: Chunk) -> list[tuple[bytes, float]]:
    out: list[tuple[bytes, float]] = []

    async def emit(piece: Chunk) -> None:
        out.append((piece.data, stub.clock))

    asyncio.run(toxic.pipe(chunk, stub, emit))
    return out


# --- attributes ------------------------------------------------------------------------------------------

def test_every_toxiproxy_type_is_registered() -> None:
    assert set(REGISTRY) == {"latency", "bandwidth", "slow_close", "timeout", "reset_peer", "limit_data",
                             "slicer", "noop"}


def test_noop_has_no_attributes_and_passes_data_on() -> None:
    toxic = attributes_from_json(REGISTRY["noop"], {"anything": 5})
    stub = FakeStub(toxic)
    assert run_pipe(toxic, stub, Chunk(b"as is", stub.clock)) == [(b"as is", 100.0)] and stub.sleeps == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, LatencyToxic(0, 0)),
        ({}, LatencyToxic(0, 0)),
        ({"latency": 5}, LatencyToxic(5, 0)),
        ({"latency": 5, "jitter": None, "unknown": "ignored"}, LatencyToxic(5, 0)),
    ],
)
def test_attributes_defaults_and_ignored_keys(raw: Any, expected: LatencyToxic) -> None:
    assert attributes_from_json(LatencyToxic, raw) == expected


def test_attributes_take_any_int64() -> None:
    assert attributes_from_json(BandwidthToxic, {"rate": 2**63 - 1}) == BandwidthToxic(rate=2**63 - 1)


def test_attributes_update_keeps_unmentioned_fields() -> None:
    base = SlicerToxic(average_size=10, size_variation=2, delay=5)
    assert attributes_from_json(SlicerToxic, {"delay": 9}, base=base) == SlicerToxic(10, 2, 9)


@pytest.mark.parametrize("value", [True, 1.5, 100.0, "10", [1], -1, 2**63])
def test_attributes_reject_non_integers_and_negatives(value: Any) -> None:
    with pytest.raises(ApiError) as error:
        attributes_from_json(BandwidthToxic, {"rate": value})
    assert error.value.status == 400 and "attributes.rate" in error.value.message


def test_attributes_must_be_an_object() -> None:
    with pytest.raises(ApiError, match="bad request body"):
        attributes_from_json(BandwidthToxic, [1, 2])


# --- toxic and proxy requests ----------------------------------------------------------------------------

def test_toxic_defaults() -> None:
    spec = api_json.parse_toxic_create({"type": "timeout"}, existing_names=[])
    assert api_json.toxic_json(spec) == {"attributes": {"timeout": 0}, "name": "timeout_downstream",
                                         "type": "timeout", "stream": "downstream", "toxicity": 1}


def test_stream_is_case_insensitive_but_kept_as_written() -> None:
    spec = api_json.parse_toxic_create({"type": "latency", "stream": "UpStream"}, existing_names=[])
    assert (spec.name, spec.stream, spec.direction) == ("latency_UpStream", "UpStream", "upstream")


@pytest.mark.parametrize(
    ("doc", "existing", "status", "message"),
    [
        ({"type": "nope", "stream": "sideways"}, [], 400, "stream was invalid"),  # stream checked first
        ({"type": "nope"}, [], 400, "invalid toxic type"),
        ({"type": "latency"}, ["latency_downstream"], 409, "toxic already exists"),
        ({"type": "latency", "name": "x"}, ["x"], 409, "toxic already exists"),
        ({"type": "nope", "stream": "sideways", "attributes": 5}, [], 400, "bad request body: attributes"),
        ({"type": "nope", "toxicity": 2}, [], 400, "invalid toxic type"),  # Toxiproxy's answers first
        ({"type": "latency", "toxicity": -1}, ["latency_downstream"], 409, "toxic already exists"),
        ({"type": "latency", "toxicity": 1.5}, [], 400, "bad request body: toxicity"),
        ({"type": "latency", "toxicity": "high"}, [], 400, "bad request body: toxicity"),
        ({"type": "latency", "toxicity": 10**400}, [], 400, "bad request body: toxicity"),
        ({"type": "latency", "attributes": {"latency": "x"}}, [], 400, "bad request body: attributes.latency"),
        (["not", "an", "object"], [], 400, "bad request body"),
    ],
)
def test_toxic_create_errors(doc: Any, existing: list[str], status: int, message: str) -> None:
    with pytest.raises(ApiError) as error:
        api_json.parse_toxic_create(doc, existing_names=existing)
    assert error.value.status == status and error.value.message.startswith(message)


def test_toxic_update_rejects_toxicity_out_of_range() -> None:
    spec = api_json.parse_toxic_create({"type": "latency"}, [])
    with pytest.raises(ApiError, match="bad request body: toxicity"):
        api_json.parse_toxic_update({"toxicity": 1.01}, spec)


def test_toxic_update_merges_attributes_and_toxicity() -> None:
    spec = api_json.parse_toxic_create({"type": "latency", "attributes": {"latency": 10, "jitter": 3}}, [])
    updated = api_json.parse_toxic_update({"attributes": {"jitter": 4}}, spec)
    assert updated.toxic == LatencyToxic(10, 4) and updated.toxicity == 1.0 and updated.name == spec.name
    assert api_json.parse_toxic_update({"toxicity": 0.5}, spec).toxicity == 0.5


def test_toxics_listed_upstream_first() -> None:
    specs = [api_json.parse_toxic_create({"type": t, "stream": s}, [])
             for t, s in [("latency", "downstream"), ("timeout", "upstream"), ("slicer", "downstream")]]
    assert [s.name for s in api_json.toxics_in_api_order(specs)] == [
        "timeout_upstream", "latency_downstream", "slicer_downstream"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"upstream": "a:1"}, "missing required field: name"),
        ({"name": "a"}, "missing required field: upstream"),
        ({"name": "a", "upstream": "a:1", "enabled": "yes"}, "bad request body: enabled"),
        ("proxy", "bad request body"),
    ],
)
def test_proxy_create_errors(doc: Any, message: str) -> None:
    with pytest.raises(ApiError) as error:
        api_json.parse_proxy_create(doc)
    assert error.value.status == 400 and error.value.message.startswith(message)


def test_proxy_create_defaults_enabled() -> None:
    assert api_json.parse_proxy_create({"name": "a", "upstream": "b:1", "enabled": None}) == api_json.ProxyInput(
        name="a", listen="", upstream="b:1", enabled=True)


def test_proxy_update_keeps_current_fields() -> None:
    current = api_json.ProxyInput(name="a", listen="127.0.0.1:4000", upstream="b:1", enabled=True)
    assert api_json.parse_proxy_update({"enabled": False}, current) == api_json.ProxyInput(
        name="a", listen="127.0.0.1:4000", upstream="b:1", enabled=False)


def test_populate_validates_every_proxy_before_any() -> None:
    with pytest.raises(ApiError, match="missing required field: upstream at proxy 2"):
        api_json.parse_populate([{"name": "a", "upstream": "b:1"}, {"name": "c"}])
    with pytest.raises(ApiError, match="bad request body"):
        api_json.parse_populate({"name": "a"})
    # A wrong type anywhere fails the decoding, before any proxy's required fields are looked at.
    with pytest.raises(ApiError, match="bad request body"):
        api_json.parse_populate([{"name": "a"}, {"name": "c", "upstream": "b:1", "enabled": "yes"}])
    with pytest.raises(ApiError, match="missing required field: name at proxy 2"):
        api_json.parse_populate([{"name": "a", "upstream": "b:1"}, None])


def test_proxy_json_has_toxiproxys_keys_in_its_order() -> None:
    proxy = api_json.ProxyInput(name="a", listen="127.0.0.1:4000", upstream="b:1", enabled=True)
    assert list(api_json.proxy_json(proxy, [])) == ["name", "listen", "upstream", "enabled", "Logger", "toxics"]


def test_populate_json_shapes() -> None:
    assert api_json.populate_json([], None) == {"proxies": None}
    error = ApiError("boom", 500)
    assert api_json.populate_json([{"name": "a"}], error) == {"error": "boom", "status": 500,
                                                              "proxies": [{"name": "a"}]}


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b"\xff", b'{"a": NaN}', b"[Infinity]", b"-Infinity"])
def test_parse_body_errors(raw: bytes) -> None:
    with pytest.raises(ApiError, match="bad request body"):
        api_json.parse_body(raw)


def test_parse_body_too_deep_is_a_bad_body() -> None:
    with pytest.raises(ApiError, match="bad request body: exceeded max depth"):
        api_json.parse_body(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 1} and then anything', {"a": 1}),  # Go's Decoder reads the first value only
        (b' \r\n\t[1] [2]', [1]),
        (b"null", None),
        (b'{"a": "x\\ud800y", "\\udfff": 1}', {"a": "x\ufffdy", "\ufffd": 1}),
        (b'{"a": "\xff\xe2\x82"}', {"a": "\ufffd\ufffd\ufffd"}),  # one U+FFFD per invalid byte, as Go
        (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),
    ],
)
def test_go_json_decode(raw: bytes, expected: Any) -> None:
    assert go_json.decode(raw) == expected


def test_go_json_keys_match_fields_ignoring_case() -> None:
    doc = {"Name": "a", "NAME": None, "nAmE": "b", "names": "c"}
    assert go_json.values(doc, "name") == ["a", "b"]
    assert go_json.values({"\u212aey": 1, "\u017ftream": 2}, "key") == [1]  # Kelvin sign folds to k, as in Go
    assert go_json.values({"\u017ftream": 2}, "stream") == [2]  # and long s to s


def test_request_fields_match_ignoring_case() -> None:
    assert api_json.parse_proxy_create({"Name": "a", "UPSTREAM": "b:1", "Enabled": False}) == api_json.ProxyInput(
        name="a", listen="", upstream="b:1", enabled=False)
    spec = api_json.parse_toxic_create(
        {"TYPE": "latency", "Stream": "upstream", "Attributes": {"Latency": 5}, "attributes": {"JITTER": 2}}, [])
    assert (spec.name, spec.toxic) == ("latency_upstream", LatencyToxic(5, 2))
    with pytest.raises(ApiError, match="bad request body: name"):
        api_json.parse_proxy_create({"name": "a", "NAME": 5, "upstream": "b:1"})


def test_go_json_repeated_key_takes_its_last_place() -> None:
    assert list(go_json.decode(b'{"a": 1, "b": 2, "a": 3}').items()) == [("b", 2), ("a", 3)]


def test_null_bodies_change_nothing() -> None:
    with pytest.raises(ApiError, match="missing required field: name"):
        api_json.parse_proxy_create(None)
    current = api_json.ProxyInput(name="a", listen="127.0.0.1:4000", upstream="b:1", enabled=False)
    assert api_json.parse_proxy_update(None, current) == current
    assert api_json.parse_populate(None) == []
    with pytest.raises(ApiError, match="invalid toxic type"):
        api_json.parse_toxic_create(None, existing_names=[])
    spec = api_json.parse_toxic_create({"type": "latency", "attributes": {"latency": 3}}, [])
    assert api_json.parse_toxic_update(None, spec) == spec


# --- addresses, toxicity ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:0", ("::1", 0)), (":8474", ("", 8474)),
     ("localhost:1", ("localhost", 1))],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected
    assert join_host_port(*expected) == address


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1", "address 127.0.0.1: missing port in address"),
        ("a:b", "lookup tcp/b: unknown port"),
        ("a:70000", "address 70000: invalid port"),
        ("a:-1", "address -1: invalid port"),
        ("::1:80", "address ::1:80: too many colons in address"),
        ("[::1", "address [::1: missing ']' in address"),
        ("[::1]", "address [::1]: missing port in address"),
        ("[::1]80", "address [::1]80: missing port in address"),
        ("[::1]:1:2", "address [::1]:1:2: too many colons in address"),
        ("a]:1", "address a]:1: unexpected ']' in address"),
        ("a[:1", "address a[:1: unexpected '[' in address"),
    ],
)
def test_split_host_port_rejects_with_gos_words(address: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        split_host_port(address)
    assert str(error.value) == message


def test_split_host_port_takes_a_signed_port_as_go_does() -> None:
    assert split_host_port("a:+80") == ("a", 80) and split_host_port("a:-0") == ("a", 0)


@pytest.mark.parametrize(
    ("address", "expected"),
    [("", ("", 0)), ("127.0.0.1:", ("127.0.0.1", 0)), ("[::1]:", ("::1", 0)), (":", ("", 0))],
)
def test_no_address_or_no_port_is_port_0(address: str, expected: tuple[str, int]) -> None:
    # Go's net.Listen: "" is every interface on a free port, and an empty port is port 0.
    assert split_host_port(address) == expected


@pytest.mark.parametrize(
    ("ip", "has_ipv6", "expected"),
    [
        ("", True, (socket.AF_INET6, "::", True)),
        ("0.0.0.0", True, (socket.AF_INET6, "::", True)),
        ("::", True, (socket.AF_INET6, "::", True)),
        ("", False, (socket.AF_INET, "0.0.0.0", False)),
        ("0.0.0.0", False, (socket.AF_INET, "0.0.0.0", False)),
        ("127.0.0.1", True, (socket.AF_INET, "127.0.0.1", False)),
        ("::1", True, (socket.AF_INET6, "::1", False)),
    ],
)
def test_wildcards_listen_on_every_interface_in_one_socket(ip: str, has_ipv6: bool,
                                                           expected: tuple[socket.AddressFamily, str, bool]) -> None:
    assert listen_target(ip, has_ipv6) == expected


@given(st.integers(min_value=0, max_value=2**32))
def test_toxicity_bounds(seed: int) -> None:
    rng = random.Random(seed)
    assert draw_active(1.0, rng) and not draw_active(0.0, rng)


def test_toxicity_is_a_probability() -> None:
    rng = random.Random(1)
    hits = sum(draw_active(0.3, rng) for _ in range(10_000))
    assert 2700 < hits < 3300


# --- toxics' pipes on a virtual clock ---------------------------------------------------------------------

def test_latency_counts_from_when_the_chunk_was_read() -> None:
    stub = FakeStub(LatencyToxic(latency=100))
    # Read 30 ms ago: only 70 ms are left to wait.
    out = run_pipe(LatencyToxic(latency=100), stub, Chunk(b"x", timestamp=stub.clock - 0.03))
    assert stub.sleeps == [pytest.approx(0.07)] and out == [(b"x", pytest.approx(100.07))]


@given(st.integers(min_value=0, max_value=2**32))
def test_latency_jitter_stays_in_range(seed: int) -> None:
    stub = FakeStub(LatencyToxic())
    stub.rng = random.Random(seed)
    assert 80 <= LatencyToxic(latency=100, jitter=20).delay_ms(stub) < 120


def test_latency_forwards_held_chunk_when_removed() -> None:
    stub = FakeStub(LatencyToxic(latency=1000), interrupt_after=0)
    assert run_pipe(LatencyToxic(latency=1000), stub, Chunk(b"kept", stub.clock)) == [(b"kept", 100.0)]


def test_bandwidth_paces_in_100ms_slices() -> None:
    toxic = BandwidthToxic(rate=10)  # 10 KB/s: 1000 bytes per 100 ms slice
    stub = FakeStub(toxic)
    out = run_pipe(toxic, stub, Chunk(b"a" * 2500, stub.clock))
    assert [len(data) for data, _ in out] == [1000, 1000, 500]
    assert sum(stub.sleeps) == pytest.approx(0.25)


def test_bandwidth_forwards_rest_when_removed() -> None:
    toxic = BandwidthToxic(rate=10)
    stub = FakeStub(toxic, interrupt_after=1)
    out = run_pipe(toxic, stub, Chunk(b"a" * 2500, stub.clock))
    assert b"".join(data for data, _ in out) == b"a" * 2500


def test_limit_data_truncates_then_closes_across_chunks() -> None:
    toxic = LimitDataToxic(bytes=5)
    stub = FakeStub(toxic)
    assert run_pipe(toxic, stub, Chunk(b"abc", stub.clock)) == [(b"abc", 100.0)]
    with pytest.raises(StreamClosed) as closed:
        run_pipe(toxic, stub, Chunk(b"defgh", stub.clock))
    assert not closed.value.reset and stub.state.transmitted == 5


def test_timeout_drops_data_and_has_a_deadline() -> None:
    toxic = TimeoutToxic(timeout=250)
    stub = FakeStub(toxic)
    assert run_pipe(toxic, stub, Chunk(b"lost", stub.clock)) == []
    assert toxic.close_deadline(stub) == pytest.approx(100.25)
    assert TimeoutToxic(timeout=0).close_deadline(stub) is None


def test_reset_peer_resets_after_its_timeout() -> None:
    toxic = ResetPeerToxic(timeout=40)
    stub = FakeStub(toxic)
    with pytest.raises(StreamClosed) as closed:
        run_pipe(toxic, stub, Chunk(b"x", stub.clock))
    assert closed.value.reset and stub.sleeps == [pytest.approx(0.04)]


@given(length=st.integers(min_value=0, max_value=5000), average=st.integers(min_value=0, max_value=300),
       variation=st.integers(min_value=0, max_value=300), seed=st.integers(min_value=0, max_value=2**32))
def test_slice_bounds_cover_the_chunk(length: int, average: int, variation: int, seed: int) -> None:
    cuts = slice_bounds(length, average, variation, random.Random(seed))
    assert cuts[0] == 0 and cuts[-1] == length
    assert all(a < b for a, b in zip(cuts, cuts[1:], strict=False)) or length == 0
    if 0 < variation < average:
        assert all(b - a <= average + variation for a, b in zip(cuts, cuts[1:], strict=False))


def test_slicer_emits_every_byte_in_order_with_delays() -> None:
    toxic = SlicerToxic(average_size=10, size_variation=3, delay=500)
    stub = FakeStub(toxic)
    data = bytes(range(256)) * 4
    out = run_pipe(toxic, stub, Chunk(data, stub.clock))
    assert b"".join(piece for piece, _ in out) == data and len(out) > 50
    assert all(sleep == pytest.approx(0.0005) for sleep in stub.sleeps)
