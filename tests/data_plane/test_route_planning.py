"""A request too long for every context window of its model and fallbacks is the client's to fix: 400
context_length_exceeded, naming the estimate and the largest window."""

from __future__ import annotations

import pytest
from routing_fixtures import model_spec, request, spec

from data_plane.errors import ClientError
from data_plane.serving.route_planning import refuse_too_long
from meridian_common import policy_names as names


@pytest.mark.parametrize(("windows", "fallback_windows", "refused"), [
    ((4096, 8192), (), True),
    ((4096, 8192), (32768,), False),  # a fallback's window fits
    ((4096, 0), (), False),  # a deployment that declares no window may take it
    ((16384,), (), False),
    ((), (), False),
])
def test_refuse_too_long(windows: tuple[int, ...], fallback_windows: tuple[int, ...], refused: bool) -> None:
    route = request(names.LATENCY_FIRST, input_tokens=9000, requested_output_tokens=1000)
    chain = [(model_spec(*(spec(f"d{i}", context_window=w) for i, w in enumerate(windows))), route)]
    if fallback_windows:
        chain.append((model_spec(*(spec(f"f{i}", context_window=w) for i, w in enumerate(fallback_windows)),
                                 name="big"), route))
    if not refused:
        refuse_too_long(chain, "messages")
        return
    with pytest.raises(ClientError) as caught:
        refuse_too_long(chain, "messages")
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "maximum context length is 8192 tokens" in error.message
    assert "about 10000 tokens (9000 in the messages, 1000 in the completion" in error.message
