"""What /v1/models says of a model: OpenAI's fields, the largest declared context window, the price range."""

from __future__ import annotations

from typing import Any

import pytest
from routing_fixtures import model_spec as model
from routing_fixtures import spec

from data_plane.api.model_cards import model_card
from data_plane.table.snapshot import DeploymentSpec


@pytest.mark.parametrize(("deployments", "window", "pricing"), [
    ((spec("a", cost_in=0.1, cost_out=0.3, context_window=8192),
      spec("b", cost_in=0.5, cost_out=0.2, context_window=131072), spec("c", cost_in=0.2, cost_out=0.9)),
     131072, {"input_per_1m": {"min": 0.1, "max": 0.5}, "output_per_1m": {"min": 0.2, "max": 0.9},
              "currency": "USD"}),
    ((spec("a", cost_in=0.1, cost_out=0.3),), None,
     {"input_per_1m": {"min": 0.1, "max": 0.1}, "output_per_1m": {"min": 0.3, "max": 0.3}, "currency": "USD"}),
])
def test_model_card(deployments: tuple[DeploymentSpec, ...], window: int | None, pricing: dict[str, Any]) -> None:
    assert model_card(model(*deployments), 1700000000) == {
        "id": "m", "object": "model", "created": 1700000000, "owned_by": "meridian", "context_window": window,
        "pricing": pricing}


def test_a_model_without_deployments_has_no_pricing() -> None:
    assert "pricing" not in model_card(model(), 0)
