"""`meridian bench propagation --subscribers`: a small run against real etcd, Redis and one replica, with the
figures' keys and every subscriber's ACK of every push checked; and the table printed from them."""

from __future__ import annotations

import pytest

from benchmarks.propagation_scale import propagation_scale_table, run_propagation_scale

SUBSCRIBERS = 20
PUSHES = 3
pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_twenty_subscribers_ack_every_push() -> None:
    figures = run_propagation_scale([SUBSCRIBERS], PUSHES, 2, lambda _message: None)

    [run] = figures["runs"]
    assert run["subscribers"] == SUBSCRIBERS and run["pushes"] == PUSHES
    assert run["every_subscriber_acked_every_push"] and run["acks_per_push_min"] == SUBSCRIBERS
    assert run["nacks"] == 0
    # Generous bounds: the machine is shared; the bench's own target is for 1,000 subscribers.
    assert 0 < run["push_to_all_ack_p50_ms"] <= run["push_to_all_ack_p99_ms"] < 5000
    assert run["replica_rss_after_bytes"] > 0 and "replica_rss_bytes_per_subscriber" in run
    assert run["replica_cpu_ms_per_push"] > 0
    assert "PASS  20 subscribers" in propagation_scale_table(figures)
