"""Toxiproxy's HTTP API and proxy behaviour, tested only through the API (raw HTTP and the `toxiproxy`
client) so that the same tests pass against a real toxiproxy-server: set TOXIPROXY_URL to use one,
otherwise Meridian's server is started on an ephemeral port."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import NotFound, ProxyExists

from regions.toxiproxy.launcher import start_toxiproxy

HOST = "127.0.0.1"
IO_TIMEOUT_S = 5.0
PREFIX = "mtp_"

DEFAULT_ATTRIBUTES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "limit_data": {"bytes": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
}


# --- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def toxiproxy_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TOXIPROXY_URL")
    if url:
        yield url.rstrip("/")
        return
    running = start_toxiproxy(tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log")
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(scope="session")
def client(toxiproxy_url: str) -> Toxiproxy:
    parsed = urllib.parse.urlsplit(toxiproxy_url)
    server = Toxiproxy()
    server.update_api_consumer(parsed.hostname, parsed.port)
    return server


@pytest.fixture(autouse=True)
def _remove_test_proxies(toxiproxy_url: str) -> Iterator[None]:
    yield
    # Only ours: a shared real toxiproxy may hold other proxies.
    status, proxies = api(toxiproxy_url, "GET", "/proxies")
    assert status == 200
    for name in proxies:
        if name.startswith(PREFIX):
            api(toxiproxy_url, "DELETE", f"/proxies/{urllib.parse.quote(name)}")


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(IO_TIMEOUT_S * 2)
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = _Server((HOST, 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=IO_TIMEOUT_S)


class _HttpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.connection.settimeout(IO_TIMEOUT_S)
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = b"hello from upstream"
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = _Server((HOST, 0), _HttpHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=IO_TIMEOUT_S)


# --- helpers --------------------------------------------------------------------------------------------

def api(base_url: str, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body or None); never raises on HTTP errors."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=IO_TIMEOUT_S) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return status, (json.loads(text) if text.strip() else None)


def raw_request(base_url: str, method: str, path: str,
                user_agent: str = "Python-urllib") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) exactly as sent; never raises on HTTP errors."""
    request = urllib.request.Request(base_url + path, method=method, headers={"User-Agent": user_agent})
    try:
        with urllib.request.urlopen(request, timeout=IO_TIMEOUT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def unique(name: str) -> str:
    return f"{PREFIX}{name}_{uuid.uuid4().hex[:8]}"


def create_proxy(base_url: str, upstream_port: int, name: str = "p", **fields: Any) -> dict[str, Any]:
    status, proxy = api(base_url, "POST", "/proxies",
                        {"name": unique(name), "listen": f"{HOST}:0", "upstream": f"{HOST}:{upstream_port}",
                         **fields})
    assert status == 201, proxy
    return dict(proxy)


def add_toxic(base_url: str, proxy: dict[str, Any], **toxic: Any) -> dict[str, Any]:
    status, body = api(base_url, "POST", f"/proxies/{proxy['name']}/toxics", toxic)
    assert status == 200, body
    return dict(body)


def listen_port(proxy: dict[str, Any]) -> int:
    return int(proxy["listen"].rsplit(":", 1)[1])


def connect(proxy: dict[str, Any]) -> socket.socket:
    sock = socket.create_connection((HOST, listen_port(proxy)), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    deadline = time.monotonic() + IO_TIMEOUT_S
    data = b""
    while len(data) < size and time.monotonic() < deadline:
        piece = sock.recv(size - len(data))
        if not piece:
            break
        data += piece
    return data


def recv_until_closed(sock: socket.socket, limit: int = 1 << 20) -> tuple[bytes, str]:
    """Everything until the peer closes: (data, "eof" | "reset"); bounded in time and size."""
    deadline = time.monotonic() + IO_TIMEOUT_S
    data = b""
    while time.monotonic() < deadline and len(data) < limit:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not piece:
            return data, "eof"
        data += piece
    raise AssertionError(f"connection still open after {IO_TIMEOUT_S}s ({len(data)} bytes received)")


def round_trip_s(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - started


# --- API ------------------------------------------------------------------------------------------------

def test_version(toxiproxy_url: str, client: Toxiproxy) -> None:
    request = urllib.request.Request(toxiproxy_url + "/version")
    with urllib.request.urlopen(request, timeout=IO_TIMEOUT_S) as response:
        assert response.status == 200
        text = response.read().decode()
    # Toxiproxy >= 2.7 answers JSON; older ones the bare version string.
    version = json.loads(text)["version"] if text.lstrip().startswith("{") else text.strip()
    assert isinstance(version, str) and version
    assert client.version()


def test_proxy_lifecycle_through_client(client: Toxiproxy, echo_port: int) -> None:
    name = unique("client")
    proxy = client.create(upstream=f"{HOST}:{echo_port}", name=name)
    assert proxy.enabled is True
    assert proxy.upstream == f"{HOST}:{echo_port}"
    assert proxy.listen.startswith(f"{HOST}:") and not proxy.listen.endswith(":0")
    assert name in client.proxies()
    assert client.get_proxy(name).listen == proxy.listen
    with pytest.raises(ProxyExists):
        client.create(upstream=f"{HOST}:{echo_port}", name=name)
    assert proxy.destroy()
    assert client.get_proxy(name) is None
    with pytest.raises(NotFound):
        proxy.destroy()


def test_proxy_json_shape_and_listing(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    # "Logger" is Toxiproxy's (proxy.go: an exported, untagged field that Go encodes as {}).
    assert list(proxy) == ["name", "listen", "upstream", "enabled", "Logger", "toxics"]
    assert proxy["enabled"] is True and proxy["Logger"] == {} and proxy["toxics"] == []
    status, shown = api(toxiproxy_url, "GET", f"/proxies/{proxy['name']}")
    assert (status, shown) == (200, proxy)
    status, listing = api(toxiproxy_url, "GET", "/proxies")
    assert status == 200 and listing[proxy["name"]] == proxy


def test_create_duplicate_is_409(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    status, body = api(toxiproxy_url, "POST", "/proxies",
                       {"name": proxy["name"], "listen": f"{HOST}:0", "upstream": f"{HOST}:{echo_port}"})
    assert (status, body) == (409, {"error": "proxy already exists", "status": 409})


def test_duplicate_is_409_before_listen_is_read(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    conflict = (409, {"error": "proxy already exists", "status": 409})
    for listen in ["not an address", proxy["listen"], ""]:
        body = {"name": proxy["name"], "listen": listen, "upstream": f"{HOST}:{echo_port}"}
        assert api(toxiproxy_url, "POST", "/proxies", body) == conflict
    # Go's decoder matches keys to fields ignoring case, and reads the first JSON value, never what follows it.
    assert api(toxiproxy_url, "POST", "/proxies", {"Name": proxy["name"], "UPSTREAM": f"{HOST}:{echo_port}"}) == (
        conflict)
    raw = json.dumps({"name": proxy["name"], "upstream": f"{HOST}:{echo_port}"}).encode() + b" and more"
    assert api(toxiproxy_url, "POST", "/proxies", raw=raw) == conflict


def test_duplicate_is_checked_after_decoding_and_required_fields(toxiproxy_url: str, echo_port: int) -> None:
    # api.go ProxyCreate: decode (400), name and upstream (400), then ProxyCollection.Add (409).
    proxy = create_proxy(toxiproxy_url, echo_port)
    status, error = api(toxiproxy_url, "POST", "/proxies", {"name": proxy["name"]})
    assert (status, error) == (400, {"error": "missing required field: upstream", "status": 400})
    status, error = api(toxiproxy_url, "POST", "/proxies",
                        {"name": proxy["name"], "upstream": f"{HOST}:{echo_port}", "enabled": "yes"})
    assert status == 400 and error["error"].startswith("bad request body: ")


def test_null_bodies_are_empty_ones(toxiproxy_url: str, echo_port: int) -> None:
    assert api(toxiproxy_url, "POST", "/proxies", raw=b"null") == (
        400, {"error": "missing required field: name", "status": 400})
    assert api(toxiproxy_url, "POST", "/populate", raw=b"null") == (201, {"proxies": None})
    proxy = create_proxy(toxiproxy_url, echo_port)
    assert api(toxiproxy_url, "POST", f"/proxies/{proxy['name']}", raw=b"null") == (200, proxy)
    toxic = add_toxic(toxiproxy_url, proxy, type="latency", attributes={"latency": 5})
    path = f"/proxies/{proxy['name']}/toxics/{toxic['name']}"
    assert api(toxiproxy_url, "PATCH", path, raw=b"null") == (200, toxic)
    assert api(toxiproxy_url, "POST", f"/proxies/{proxy['name']}/toxics", raw=b"null") == (
        400, {"error": "invalid toxic type", "status": 400})


def test_nan_is_not_json(toxiproxy_url: str, echo_port: int) -> None:
    raw = b'{"name": "%s", "upstream": "%s:%d", "extra": NaN}' % (unique("nan").encode(), HOST.encode(), echo_port)
    status, error = api(toxiproxy_url, "POST", "/proxies", raw=raw)
    assert status == 400 and error["error"].startswith("bad request body: ")


def test_invalid_text_in_a_name_becomes_replacement_characters(toxiproxy_url: str, echo_port: int) -> None:
    # Go's decoder turns a lone surrogate escape into U+FFFD; keeping it made every later answer fail to encode.
    raw = b'{"name": "%s\\ud800", "listen": "%s:0", "upstream": "%s:%d"}' % (
        unique("text").encode(), HOST.encode(), HOST.encode(), echo_port)
    status, proxy = api(toxiproxy_url, "POST", "/proxies", raw=raw)
    assert status == 201 and proxy["name"].endswith("\ufffd")
    status, listing = api(toxiproxy_url, "GET", "/proxies")
    assert status == 200 and listing[proxy["name"]] == proxy
    assert api(toxiproxy_url, "DELETE", f"/proxies/{urllib.parse.quote(proxy['name'])}")[0] == 204


def test_keys_match_ignoring_case(toxiproxy_url: str, echo_port: int) -> None:
    name = unique("case")
    status, proxy = api(toxiproxy_url, "POST", "/proxies",
                        {"Name": name, "LISTEN": f"{HOST}:0", "Upstream": f"{HOST}:{echo_port}", "ENABLED": False})
    assert status == 201 and (proxy["name"], proxy["enabled"]) == (name, False) and proxy["listen"] == f"{HOST}:0"
    toxic = add_toxic(toxiproxy_url, proxy, Type="latency", STREAM="upstream", Attributes={"Latency": 7})
    assert (toxic["name"], toxic["attributes"]) == ("latency_upstream", {"latency": 7, "jitter": 0})
    status, updated = api(toxiproxy_url, "PATCH", f"/proxies/{name}/toxics/latency_upstream",
                          {"ATTRIBUTES": {"JITTER": 3}, "Toxicity": 0.5})
    assert status == 200 and (updated["attributes"], updated["toxicity"]) == ({"latency": 7, "jitter": 3}, 0.5)


def test_listen_failures_are_500_in_gos_words(toxiproxy_url: str, echo_port: int) -> None:
    with socket.socket() as held:
        held.bind((HOST, 0))
        held.listen()
        port = held.getsockname()[1]
        status, error = api(toxiproxy_url, "POST", "/proxies",
                            {"name": unique("busy"), "listen": f"{HOST}:{port}", "upstream": f"{HOST}:{echo_port}"})
        assert (status, error) == (500, {"error": f"listen tcp {HOST}:{port}: bind: address already in use",
                                         "status": 500})
    status, error = api(toxiproxy_url, "POST", "/proxies",
                        {"name": unique("bogus"), "listen": "bogus", "upstream": f"{HOST}:{echo_port}"})
    assert (status, error) == (500, {"error": "listen tcp: address bogus: missing port in address", "status": 500})
    proxy = create_proxy(toxiproxy_url, echo_port)
    # Update resolves the new address first (proxy.go Differs) and answers with that error as it is.
    assert api(toxiproxy_url, "PATCH", f"/proxies/{proxy['name']}", {"listen": "bogus"}) == (
        500, {"error": "address bogus: missing port in address", "status": 500})


def test_create_with_an_empty_port_binds_a_free_one(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port, listen=f"{HOST}:")
    assert proxy["listen"].startswith(f"{HOST}:") and listen_port(proxy) > 0
    with connect(proxy) as sock:
        assert round_trip_s(sock) < IO_TIMEOUT_S


def test_no_listen_address_is_not_an_error(toxiproxy_url: str, echo_port: int, http_port: int) -> None:
    # Enabled, such a proxy listens on every interface (Go's net.Listen("tcp", "")); these tests only ever
    # listen on 127.0.0.1, so it stays disabled while its empty address is read.
    name = unique("nolisten")
    status, proxy = api(toxiproxy_url, "POST", "/proxies",
                        {"name": name, "upstream": f"{HOST}:{echo_port}", "enabled": False})
    assert status == 201 and (proxy["listen"], proxy["enabled"]) == ("", False)
    status, updated = api(toxiproxy_url, "PATCH", f"/proxies/{name}", {"upstream": f"{HOST}:{http_port}"})
    assert status == 200 and (updated["listen"], updated["upstream"]) == ("", f"{HOST}:{http_port}")
    status, moved = api(toxiproxy_url, "PATCH", f"/proxies/{name}", {"listen": f"{HOST}:", "enabled": True})
    assert status == 200 and moved["enabled"] is True and listen_port(moved) > 0
    status, emptied = api(toxiproxy_url, "PATCH", f"/proxies/{name}", {"listen": "", "enabled": False})
    assert status == 200 and (emptied["listen"], emptied["enabled"]) == ("", False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"listen": f"{HOST}:0", "upstream": f"{HOST}:1"}, "missing required field: name"),
        ({"name": f"{PREFIX}x", "listen": f"{HOST}:0"}, "missing required field: upstream"),
        ({"name": 5, "upstream": f"{HOST}:1"}, "bad request body"),
    ],
)
def test_create_bad_input_is_400(toxiproxy_url: str, body: dict[str, Any], message: str) -> None:
    status, error = api(toxiproxy_url, "POST", "/proxies", body)
    assert status == 400 and error["status"] == 400
    assert error["error"].startswith(message)


def test_malformed_json_is_400(toxiproxy_url: str) -> None:
    status, error = api(toxiproxy_url, "POST", "/proxies", raw=b"{not json")
    assert status == 400 and error["error"].startswith("bad request body")


def test_unknown_proxy_and_toxic_are_404(toxiproxy_url: str, echo_port: int) -> None:
    missing = {"error": "proxy not found", "status": 404}
    assert api(toxiproxy_url, "GET", f"/proxies/{PREFIX}missing") == (404, missing)
    assert api(toxiproxy_url, "DELETE", f"/proxies/{PREFIX}missing") == (404, missing)
    assert api(toxiproxy_url, "POST", f"/proxies/{PREFIX}missing", {"enabled": False}) == (404, missing)
    assert api(toxiproxy_url, "GET", f"/proxies/{PREFIX}missing/toxics") == (404, missing)
    proxy = create_proxy(toxiproxy_url, echo_port)
    toxic_missing = {"error": "toxic not found", "status": 404}
    assert api(toxiproxy_url, "GET", f"/proxies/{proxy['name']}/toxics/nope") == (404, toxic_missing)
    assert api(toxiproxy_url, "DELETE", f"/proxies/{proxy['name']}/toxics/nope") == (404, toxic_missing)
    assert api(toxiproxy_url, "POST", f"/proxies/{proxy['name']}/toxics/nope", {}) == (404, toxic_missing)


def test_disable_refuses_connections_and_enable_restores(client: Toxiproxy, toxiproxy_url: str,
                                                         echo_port: int) -> None:
    proxy_json = create_proxy(toxiproxy_url, echo_port)
    proxy = client.get_proxy(proxy_json["name"])
    open_connection = connect(proxy_json)
    assert round_trip_s(open_connection) < IO_TIMEOUT_S
    proxy.disable()
    assert api(toxiproxy_url, "GET", f"/proxies/{proxy.name}")[1]["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, listen_port(proxy_json)), timeout=IO_TIMEOUT_S).close()
    # Disabling also cuts the connections that were open.
    open_connection.settimeout(IO_TIMEOUT_S)
    assert recv_until_closed(open_connection)[0] == b""
    open_connection.close()
    proxy.enable()
    status, shown = api(toxiproxy_url, "GET", f"/proxies/{proxy.name}")
    assert shown["enabled"] is True and shown["listen"] == proxy_json["listen"]
    with connect(proxy_json) as sock:
        assert round_trip_s(sock) < IO_TIMEOUT_S


def test_update_upstream_and_listen(toxiproxy_url: str, echo_port: int, http_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    status, updated = api(toxiproxy_url, "POST", f"/proxies/{proxy['name']}", {"upstream": f"{HOST}:{http_port}"})
    assert status == 200
    assert updated["upstream"] == f"{HOST}:{http_port}" and updated["enabled"] is True
    with urllib.request.urlopen(f"http://{updated['listen']}/", timeout=IO_TIMEOUT_S) as response:
        assert response.read() == b"hello from upstream"
    status, moved = api(toxiproxy_url, "POST", f"/proxies/{proxy['name']}", {"listen": f"{HOST}:0"})
    assert status == 200 and moved["enabled"] is True and listen_port(moved) != 0


def test_updates_change_only_what_toxiproxy_lets_them(toxiproxy_url: str, echo_port: int) -> None:
    # proxy.go Update takes listen, upstream and enabled; UpdateToxicJson takes attributes and toxicity.
    proxy = create_proxy(toxiproxy_url, echo_port)
    other = unique("renamed")
    status, updated = api(toxiproxy_url, "PATCH", f"/proxies/{proxy['name']}", {"name": other, "toxics": [1]})
    assert (status, updated) == (200, proxy)
    assert api(toxiproxy_url, "GET", f"/proxies/{other}")[0] == 404
    toxic = add_toxic(toxiproxy_url, proxy, type="latency", attributes={"latency": 5})
    path = f"/proxies/{proxy['name']}/toxics/{toxic['name']}"
    status, kept = api(toxiproxy_url, "PATCH", path,
                       {"name": "other", "type": "timeout", "stream": "upstream", "attributes": {"timeout": 9}})
    assert (status, kept) == (200, toxic)
    assert api(toxiproxy_url, "GET", f"/proxies/{proxy['name']}/toxics") == (200, [toxic])


@pytest.mark.parametrize("toxic_type", sorted(DEFAULT_ATTRIBUTES))
def test_toxic_crud_for_every_type(toxiproxy_url: str, echo_port: int, toxic_type: str) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    base = f"/proxies/{proxy['name']}/toxics"
    created = add_toxic(toxiproxy_url, proxy, type=toxic_type)
    assert created == {"attributes": DEFAULT_ATTRIBUTES[toxic_type], "name": f"{toxic_type}_downstream",
                       "type": toxic_type, "stream": "downstream", "toxicity": 1}
    upstream = add_toxic(toxiproxy_url, proxy, type=toxic_type, stream="upstream", toxicity=0.5)
    assert upstream["name"] == f"{toxic_type}_upstream" and upstream["toxicity"] == 0.5
    assert api(toxiproxy_url, "POST", base, {"type": toxic_type}) == (
        409, {"error": "toxic already exists", "status": 409})
    assert api(toxiproxy_url, "GET", f"{base}/{toxic_type}_downstream") == (200, created)
    status, listing = api(toxiproxy_url, "GET", base)
    assert status == 200 and sorted(t["name"] for t in listing) == sorted([created["name"], upstream["name"]])
    assert api(toxiproxy_url, "GET", f"/proxies/{proxy['name']}")[1]["toxics"] == listing

    first_attribute = next(iter(DEFAULT_ATTRIBUTES[toxic_type]))
    status, updated = api(toxiproxy_url, "POST", f"{base}/{toxic_type}_downstream",
                          {"attributes": {first_attribute: 7}, "toxicity": 0.25})
    assert status == 200
    assert updated["attributes"] == {**DEFAULT_ATTRIBUTES[toxic_type], first_attribute: 7}
    assert updated["toxicity"] == 0.25

    status, _ = api(toxiproxy_url, "DELETE", f"{base}/{toxic_type}_downstream")
    assert status == 204
    assert api(toxiproxy_url, "GET", f"{base}/{toxic_type}_downstream")[0] == 404
    assert [t["name"] for t in api(toxiproxy_url, "GET", base)[1]] == [upstream["name"]]


def test_noop_toxic(toxiproxy_url: str, echo_port: int) -> None:
    # toxics/noop.go registers "noop" like every other type.
    proxy = create_proxy(toxiproxy_url, echo_port)
    created = add_toxic(toxiproxy_url, proxy, type="noop", stream="upstream", attributes={"ignored": 1})
    assert created == {"attributes": {}, "name": "noop_upstream", "type": "noop", "stream": "upstream",
                       "toxicity": 1}
    with connect(proxy) as sock:
        assert round_trip_s(sock) < IO_TIMEOUT_S
    path = f"/proxies/{proxy['name']}/toxics/noop_upstream"
    assert api(toxiproxy_url, "PATCH", path, {"toxicity": 0.5}) == (200, {**created, "toxicity": 0.5})
    assert api(toxiproxy_url, "DELETE", path)[0] == 204


def test_toxic_through_client(client: Toxiproxy, toxiproxy_url: str, echo_port: int) -> None:
    proxy = client.get_proxy(create_proxy(toxiproxy_url, echo_port)["name"])
    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 10})
    proxy.add_toxic(name="cut", type="limit_data", stream="upstream", attributes={"bytes": 1000})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "cut"}
    assert toxics["latency_downstream"].attributes == {"latency": 100, "jitter": 10}
    assert toxics["cut"].stream == "upstream"
    assert proxy.destroy_toxic("cut")
    assert proxy.get_toxic("cut") is None


@pytest.mark.parametrize(
    ("toxic", "status", "message"),
    [
        ({"type": "nonsense"}, 400, "invalid toxic type"),
        ({"type": "latency", "stream": "sideways"}, 400,
         "stream was invalid, can be either upstream or downstream"),
        ({"type": "latency", "attributes": {"latency": "slow"}}, 400, "bad request body"),
    ],
)
def test_bad_toxic_is_400(toxiproxy_url: str, echo_port: int, toxic: dict[str, Any], status: int,
                          message: str) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    got_status, error = api(toxiproxy_url, "POST", f"/proxies/{proxy['name']}/toxics", toxic)
    assert got_status == status and error["error"].startswith(message)


def test_toxic_checks_come_in_toxiproxys_order(toxiproxy_url: str, echo_port: int) -> None:
    # toxic_collection.go AddToxicJson: decode (attributes must be an object), stream, type, duplicate name.
    proxy = create_proxy(toxiproxy_url, echo_port)
    base = f"/proxies/{proxy['name']}/toxics"
    status, error = api(toxiproxy_url, "POST", base, {"type": "nonsense", "stream": "sideways", "attributes": [1]})
    assert status == 400 and error["error"].startswith("bad request body")
    add_toxic(toxiproxy_url, proxy, type="latency")
    # Meridian refuses a toxicity outside [0, 1], which Toxiproxy stores; Toxiproxy's own answers come first.
    assert api(toxiproxy_url, "POST", base, {"type": "latency", "toxicity": 2}) == (
        409, {"error": "toxic already exists", "status": 409})
    assert api(toxiproxy_url, "POST", base, {"type": "nonsense", "toxicity": -1}) == (
        400, {"error": "invalid toxic type", "status": 400})
    # A number too large for any float is a decoding error in Go (it was a 500 here).
    status, error = api(toxiproxy_url, "POST", base, raw=b'{"type": "timeout", "toxicity": 1%s}' % (b"0" * 400))
    assert status == 400 and error["error"].startswith("bad request body")


def test_attribute_beyond_int64_is_400_and_stores_nothing(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    base = f"/proxies/{proxy['name']}/toxics"
    status, error = api(toxiproxy_url, "POST", base, {"type": "latency", "attributes": {"latency": 2**63}})
    assert status == 400 and error["error"].startswith("bad request body")
    largest = add_toxic(toxiproxy_url, proxy, type="bandwidth", attributes={"rate": 2**63 - 1})
    assert api(toxiproxy_url, "GET", base) == (200, [largest])
    assert api(toxiproxy_url, "GET", "/proxies")[0] == 200


def test_reset_enables_proxies_and_removes_toxics(client: Toxiproxy, toxiproxy_url: str, echo_port: int) -> None:
    first = create_proxy(toxiproxy_url, echo_port)
    second = create_proxy(toxiproxy_url, echo_port, enabled=False)
    assert second["enabled"] is False
    add_toxic(toxiproxy_url, first, type="latency", attributes={"latency": 1000})
    add_toxic(toxiproxy_url, first, type="timeout", stream="upstream")
    status, _ = api(toxiproxy_url, "POST", "/reset")
    assert status == 204
    for proxy in (first, second):
        shown = api(toxiproxy_url, "GET", f"/proxies/{proxy['name']}")[1]
        assert shown["enabled"] is True and shown["toxics"] == []
    with connect(first) as sock:
        assert round_trip_s(sock) < 0.5
    add_toxic(toxiproxy_url, first, type="latency")
    assert client.reset()
    assert api(toxiproxy_url, "GET", f"/proxies/{first['name']}/toxics")[1] == []


def test_populate_creates_keeps_and_replaces(toxiproxy_url: str, echo_port: int, http_port: int) -> None:
    names = [unique("pop_a"), unique("pop_b")]
    wanted = [{"name": name, "listen": f"{HOST}:0", "upstream": f"{HOST}:{echo_port}"} for name in names]
    status, body = api(toxiproxy_url, "POST", "/populate", wanted)
    assert status == 201 and list(body) == ["proxies"]
    created = {proxy["name"]: proxy for proxy in body["proxies"]}
    assert set(created) == set(names) and all(p["enabled"] and listen_port(p) for p in created.values())

    add_toxic(toxiproxy_url, created[names[0]], type="latency")
    same = [{"name": name, "listen": created[name]["listen"], "upstream": f"{HOST}:{echo_port}"} for name in names]
    same[1]["upstream"] = f"{HOST}:{http_port}"
    status, body = api(toxiproxy_url, "POST", "/populate", same)
    assert status == 201
    again = {proxy["name"]: proxy for proxy in body["proxies"]}
    assert [t["name"] for t in again[names[0]]["toxics"]] == ["latency_downstream"]  # untouched
    assert again[names[1]]["upstream"] == f"{HOST}:{http_port}"  # replaced

    status, error = api(toxiproxy_url, "POST", "/populate", [{"name": unique("pop_c")}])
    assert status == 400 and error["status"] == 400
    assert error["error"] == "missing required field: upstream at proxy 1" and not error["proxies"]
    assert api(toxiproxy_url, "POST", "/populate", {"not": "a list"})[0] == 400
    # proxy_collection.go PopulateJson decodes the whole array before checking any proxy's fields.
    status, error = api(toxiproxy_url, "POST", "/populate",
                        [{"name": unique("pop_d")}, {"name": unique("pop_e"), "upstream": 5}])
    assert status == 400 and error["error"].startswith("bad request body") and error["proxies"] is None


def test_populate_through_client(client: Toxiproxy, echo_port: int) -> None:
    name = unique("client_pop")
    populated = client.populate([{"name": name, "listen": f"{HOST}:0", "upstream": f"{HOST}:{echo_port}"}])
    assert [proxy.name for proxy in populated] == [name]
    assert client.get_proxy(name) is not None


def test_unknown_routes_and_methods_answer_as_gorilla_mux(toxiproxy_url: str) -> None:
    status, headers, body = raw_request(toxiproxy_url, "GET", "/nope")
    assert (status, body) == (404, b"404 page not found\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    for method, path in [("PUT", "/proxies"), ("HEAD", "/version"), ("PUT", f"/proxies/{PREFIX}x/toxics")]:
        assert raw_request(toxiproxy_url, method, path)[::2] == (405, b"")


def test_version_answer(toxiproxy_url: str) -> None:
    status, headers, body = raw_request(toxiproxy_url, "GET", "/version")
    assert status == 200 and headers["Content-Type"] == "application/json;charset=utf-8"
    assert body.startswith(b'{"version": "') and body.endswith(b'"}\n')


def test_browsers_are_refused(toxiproxy_url: str) -> None:
    status, headers, body = raw_request(toxiproxy_url, "GET", "/proxies", user_agent="Mozilla/5.0")
    assert (status, body, headers["X-Content-Type-Options"]) == (403, b"User agent not allowed\n", "nosniff")


# --- behaviour ------------------------------------------------------------------------------------------

def test_http_through_proxy_with_latency(toxiproxy_url: str, http_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, http_port)
    url = f"http://{proxy['listen']}/"
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=IO_TIMEOUT_S) as response:
        assert response.read() == b"hello from upstream"
    baseline_s = time.monotonic() - started
    add_toxic(toxiproxy_url, proxy, type="latency", attributes={"latency": 300})
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=IO_TIMEOUT_S) as response:
        assert response.read() == b"hello from upstream"
    elapsed_s = time.monotonic() - started
    assert elapsed_s >= 0.29 and elapsed_s < baseline_s + 3.0


def test_latency_added_to_live_connection_delays_later_chunks(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    with connect(proxy) as sock:
        assert round_trip_s(sock) < 0.25
        add_toxic(toxiproxy_url, proxy, type="latency", stream="upstream", attributes={"latency": 300})
        assert round_trip_s(sock) >= 0.29
        api(toxiproxy_url, "DELETE", f"/proxies/{proxy['name']}/toxics/latency_upstream")
        assert round_trip_s(sock) < 0.25


def test_removing_latency_mid_connection_loses_no_bytes(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    messages = [f"message {i:03d};".encode() for i in range(30)]
    with connect(proxy) as sock:
        add_toxic(toxiproxy_url, proxy, type="latency", attributes={"latency": 400})
        for message in messages[:15]:
            sock.sendall(message)
            time.sleep(0.01)
        status, _ = api(toxiproxy_url, "DELETE", f"/proxies/{proxy['name']}/toxics/latency_downstream")
        assert status == 204
        for message in messages[15:]:
            sock.sendall(message)
        expected = b"".join(messages)
        assert recv_exactly(sock, len(expected)) == expected
        assert round_trip_s(sock) < 0.25


def test_toxicity_zero_never_applies(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    add_toxic(toxiproxy_url, proxy, type="latency", toxicity=0.0, attributes={"latency": 1000})
    for _ in range(5):
        with connect(proxy) as sock:
            assert round_trip_s(sock) < 0.5


def test_limit_data_closes_after_n_bytes(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    add_toxic(toxiproxy_url, proxy, type="limit_data", attributes={"bytes": 10})
    payload = bytes(range(100))
    with connect(proxy) as sock:
        sock.sendall(payload)
        data, _ = recv_until_closed(sock)
    assert data == payload[:10]


def test_timeout_stalls_then_closes(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    add_toxic(toxiproxy_url, proxy, type="timeout", attributes={"timeout": 400})
    started = time.monotonic()
    with connect(proxy) as sock:
        sock.sendall(b"anyone there?")
        data, _ = recv_until_closed(sock)
    elapsed_s = time.monotonic() - started
    assert data == b""
    assert 0.35 <= elapsed_s < 3.0


def test_reset_peer_resets(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    add_toxic(toxiproxy_url, proxy, type="reset_peer", attributes={"timeout": 0})
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        data, how = recv_until_closed(sock)
    assert (data, how) == (b"", "reset")


def test_slow_close_delays_the_close(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    add_toxic(toxiproxy_url, proxy, type="slow_close", attributes={"delay": 300})
    with connect(proxy) as sock:
        assert round_trip_s(sock) < 0.25
        started = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        data, _ = recv_until_closed(sock)
    assert data == b""
    assert time.monotonic() - started >= 0.29


def test_bandwidth_slows_a_transfer(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    payload = os.urandom(10_000)
    with connect(proxy) as sock:
        unthrottled_s = round_trip_s(sock, payload)
        add_toxic(toxiproxy_url, proxy, type="bandwidth", attributes={"rate": 20})  # 20 KB/s: 0.5 s
        throttled_s = round_trip_s(sock, payload)
    assert unthrottled_s < 0.3
    assert 0.35 <= throttled_s < 3.0


def test_slicer_delivers_every_byte(toxiproxy_url: str, echo_port: int) -> None:
    proxy = create_proxy(toxiproxy_url, echo_port)
    add_toxic(toxiproxy_url, proxy, type="slicer", attributes={"average_size": 100, "size_variation": 50,
                                                               "delay": 200})
    payload = os.urandom(20_000)
    with connect(proxy) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload


def test_upstream_unreachable_closes_client(toxiproxy_url: str) -> None:
    with socket.socket() as placeholder:
        placeholder.bind((HOST, 0))
        dead_port = placeholder.getsockname()[1]
    proxy = create_proxy(toxiproxy_url, dead_port)
    with connect(proxy) as sock:
        assert recv_until_closed(sock)[0] == b""


def test_log_file_written_by_launcher_when_local(tmp_path: Path) -> None:
    if os.environ.get("TOXIPROXY_URL"):
        pytest.skip("uses the launcher, not the server under test")
    running = start_toxiproxy(tmp_path / "logs" / "toxiproxy.log")
    try:
        assert api(running.url, "GET", "/proxies") == (200, {})
        assert running.implementation in ("real", "meridian")
    finally:
        running.stop()
    assert running.process.poll() is not None
    assert (tmp_path / "logs" / "toxiproxy.log").exists()
