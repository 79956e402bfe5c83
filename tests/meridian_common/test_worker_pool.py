"""The worker pool's pure restart count and its port reservation (SO_REUSEPORT on Linux)."""

from __future__ import annotations

import socket

import pytest

from meridian_common.aiohttp_serving import bind_socket
from meridian_common.supervision import Backoff
from meridian_common.worker_pool import failures_in_a_row, reserve_port, usable_cpus

BACKOFF = Backoff(initial_s=0.5, max_s=30.0)


@pytest.mark.parametrize(("previous", "ran_s", "expected", "delay_s"), [
    (0, 0.1, 1, 0.5),     # the first death waits the initial delay
    (1, 0.1, 2, 1.0),     # dying at once again doubles it
    (5, 2.0, 6, 16.0),
    (9, 1.0, 10, 30.0),   # never beyond max_s
    (9, 30.0, 1, 0.5),    # a worker that lived max_s starts the count afresh
])
def test_failures_in_a_row(previous: int, ran_s: float, expected: int, delay_s: float) -> None:
    failures = failures_in_a_row(previous, ran_s, BACKOFF)
    assert failures == expected
    assert BACKOFF.delay_s(failures) == delay_s


def test_a_reserved_port_is_shared_by_reuse_port_listeners_only() -> None:
    with reserve_port("127.0.0.1", 0) as reserved:
        port = reserved.getsockname()[1]
        assert port > 0
        first, second = (bind_socket("127.0.0.1", port, reuse_port=True) for _ in range(2))
        with first, second:
            first.listen(8)
            second.listen(8)
            with socket.socket() as other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
            # Connections reach a listener, never the reservation (which does not listen).
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        # The workers gone, the reservation still holds the port against other programs.
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))


def test_usable_cpus_is_at_least_one() -> None:
    assert usable_cpus() >= 1
