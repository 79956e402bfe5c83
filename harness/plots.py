"""matplotlib set up headless (Agg) for every report's plots, and the shading of a run's phases on a time axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
from matplotlib.transforms import blended_transform_factory  # noqa: E402

__all__ = ["plt", "shade_windows"]


def shade_windows(axis: Any, windows: Sequence[tuple[float, float, str]], *, label: bool = True) -> None:
    """Shades several labelled windows (start_s, end_s, label) of one time axis, alternating two neutral tones so
    that no data colour is taken, with a dashed line at each boundary and each label at the top of its window;
    for runs with more phases than one fault window."""
    transform = blended_transform_factory(axis.transData, axis.transAxes)
    for index, (start_s, end_s, text) in enumerate(windows):
        axis.axvspan(start_s, end_s, color="0.5" if index % 2 else "0.8", alpha=0.15, linewidth=0, zorder=0)
        axis.axvline(start_s, color="0.3", linestyle="--", linewidth=0.8, zorder=3)
        if label and text:
            axis.text((start_s + end_s) / 2, 0.97, text, transform=transform, ha="center", va="top",
                      fontsize="small", zorder=4, bbox={"boxstyle": "round,pad=0.2", "facecolor": "white",
                                                        "alpha": 0.85, "linewidth": 0})
