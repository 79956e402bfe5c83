"""Routing policies in the Gateway API Inference Extension's shape: filters, clamped scorers and one
picker, over plain values; `decide` is the whole interface the router's shell calls."""

from __future__ import annotations

from data_plane.policies.candidate import (
    Candidate,
    CandidateFigures,
    Decision,
    PolicyState,
    RouteRequest,
    TrialReason,
    UnknownPolicy,
)
from data_plane.policies.scheduler import RANKERS, decide

__all__ = [
    "RANKERS",
    "Candidate",
    "CandidateFigures",
    "Decision",
    "PolicyState",
    "RouteRequest",
    "TrialReason",
    "UnknownPolicy",
    "decide",
]
