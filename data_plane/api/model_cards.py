"""What `/v1/models` says of a logical model: OpenAI's fields, and what a client plans with — its context
window and the range of its deployments' prices. Pure over the table's model."""

from __future__ import annotations

from typing import Any

from data_plane.table.snapshot import ModelSpec


def model_card(model: ModelSpec, created: int) -> dict[str, Any]:
    """`context_window` is the largest any deployment declares (a request up to it can be served somewhere;
    null when none declares one); `pricing` the cheapest and dearest deployment's price per million tokens
    (a request's price depends on the deployment that serves it: the `x-meridian-cost-usd` header says)."""
    deployments = model.deployments
    windows = [d.context_window for d in deployments if d.context_window > 0]
    card: dict[str, Any] = {"id": model.name, "object": "model", "created": created, "owned_by": "meridian",
                            "context_window": max(windows) if windows else None}
    if deployments:
        inputs = [d.cost_per_1m_input for d in deployments]
        outputs = [d.cost_per_1m_output for d in deployments]
        card["pricing"] = {"input_per_1m": {"min": min(inputs), "max": max(inputs)},
                           "output_per_1m": {"min": min(outputs), "max": max(outputs)}, "currency": "USD"}
    return card
