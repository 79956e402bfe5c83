"""Usage and cost as the router reports them: a cost as plain decimal dollars, the client a cost is counted
under."""

from __future__ import annotations

import pytest

from data_plane.auth import ANONYMOUS, metric_client
from data_plane.serving.usage import Usage, usd


@pytest.mark.parametrize(("amount", "text"), [
    (0.0, "0"),
    (1.2345e-4, "0.00012345"),
    (Usage(300, 500, False).cost(0.1, 0.2), "0.00013"),  # float noise is rounded away
    (3e-9, "0.000000003"),  # never in exponent form
    (12.5, "12.5"),
])
def test_usd(amount: float, text: str) -> None:
    assert usd(amount) == text


@pytest.mark.parametrize(("identity", "label"), [
    ("key-0123456789abcdef", "key-0123456789abcdef"),
    ("peer-10.0.0.7", ANONYMOUS),
    ("peer-unknown", ANONYMOUS),
])
def test_metric_client_keeps_keys_and_folds_addresses(identity: str, label: str) -> None:
    assert metric_client(identity) == label
