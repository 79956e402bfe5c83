from __future__ import annotations

import pytest

from control_plane.endpoint_ring import EndpointRing

A, B, C = "http://a:2379", "http://b:2379", "http://c:2379"


@pytest.mark.parametrize(
    ("ring", "failed_generation", "current", "generation"),
    [
        (EndpointRing((A, B, C)), 0, B, 1),
        (EndpointRing((A, B, C), index=2, generation=5), 5, A, 6),  # wraps around
        (EndpointRing((A, B, C), index=1, generation=1), 0, B, 1),  # a late failure of an older client
        (EndpointRing((A,)), 0, A, 0),  # nowhere else to go
    ],
)
def test_after_failure(ring: EndpointRing, failed_generation: int, current: str, generation: int) -> None:
    moved = ring.after_failure(failed_generation)
    assert (moved.current, moved.generation) == (current, generation)


def test_concurrent_failures_of_one_client_move_once() -> None:
    ring = EndpointRing((A, B, C))
    for _ in range(3):
        ring = ring.after_failure(0)
    assert ring.current == B


def test_every_endpoint_is_visited_in_order() -> None:
    ring = EndpointRing((A, B, C))
    seen = []
    for _ in range(4):
        seen.append(ring.current)
        ring = ring.after_failure(ring.generation)
    assert seen == [A, B, C, A]


@pytest.mark.parametrize(("endpoints", "index"), [((), 0), ((A,), 1)])
def test_invalid_rings_are_refused(endpoints: tuple[str, ...], index: int) -> None:
    with pytest.raises(ValueError):
        EndpointRing(endpoints, index)


def test_a_round_of_failures_means_the_cluster_is_out_of_reach_until_a_call_succeeds() -> None:
    ring = EndpointRing((A, B, C))
    for _ in range(2):
        ring = ring.after_failure(ring.generation)
    assert not ring.all_failed
    ring = ring.after_failure(ring.generation)
    assert ring.all_failed and ring.current == A
    assert ring.after_success(ring.generation - 1).all_failed  # an older client's success says nothing
    back = ring.after_success(ring.generation)
    assert not back.all_failed and back.current == A and back.generation == ring.generation
