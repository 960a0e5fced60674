"""Figure panels shared by the run report (analysis/report.py) and the study report
(analysis/study_report.py): a grid of axes, and tile maps of per-state values on one colour scale."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from analysis.tilemap import value_map


def panel_grid(n: int, width: float, height: float, columns: int = 2) -> tuple[Figure, list[Axes]]:
    """A figure of n panels of width x height inches, `columns` per row, unused grid cells hidden."""
    ncols = max(1, min(columns, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def tile_maps(maps: list[tuple[str, dict[str, float]]], cmap: str, norm: Normalize, label: str,
              note: Callable[[float], str], width: float, height: float) -> Figure:
    """One tile map per (title, per-state values), two per row, sharing one colour bar."""
    fig, axes = panel_grid(len(maps), width, height)
    mappables = [value_map(ax, values, colormaps[cmap], norm, title, note)
                 for ax, (title, values) in zip(axes, maps, strict=True)]
    fig.colorbar(mappables[0], ax=axes, shrink=0.7, label=label)
    return fig
