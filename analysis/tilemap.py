"""US tile-grid maps: every state one equal square, so small states (RI, DE, DC) stay as visible as TX.

The layout is the common 12-column by 8-row grid (Washington Post / statebins) with AK and HI at the
bottom left and PR at the bottom right; no map files or network are needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize, to_rgb
from matplotlib.patches import Rectangle

ROWS, COLUMNS = 8, 12
# (row, column); row 0 is the top of the map.
TILES: dict[str, tuple[int, int]] = {
    "ME": (0, 11),
    "WI": (1, 6), "VT": (1, 10), "NH": (1, 11),
    "WA": (2, 1), "ID": (2, 2), "MT": (2, 3), "ND": (2, 4), "MN": (2, 5), "IL": (2, 6), "MI": (2, 7),
    "NY": (2, 9), "MA": (2, 10),
    "OR": (3, 1), "NV": (3, 2), "WY": (3, 3), "SD": (3, 4), "IA": (3, 5), "IN": (3, 6), "OH": (3, 7),
    "PA": (3, 8), "NJ": (3, 9), "CT": (3, 10), "RI": (3, 11),
    "CA": (4, 1), "UT": (4, 2), "CO": (4, 3), "NE": (4, 4), "MO": (4, 5), "KY": (4, 6), "WV": (4, 7),
    "VA": (4, 8), "MD": (4, 9), "DE": (4, 10),
    "AZ": (5, 2), "NM": (5, 3), "KS": (5, 4), "AR": (5, 5), "TN": (5, 6), "NC": (5, 7), "SC": (5, 8),
    "DC": (5, 9),
    "AK": (6, 0), "OK": (6, 4), "LA": (6, 5), "MS": (6, 6), "AL": (6, 7), "GA": (6, 8),
    "HI": (7, 0), "TX": (7, 4), "FL": (7, 9), "PR": (7, 11),
}
NO_DATA = "#d9d9d9"
GAP = 0.06  # white margin around each tile, in tile units


def _text_color(face: object) -> str:
    """Black on light tiles, white on dark ones (relative luminance), so codes stay legible."""
    r, g, b = to_rgb(face)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def draw_tiles(ax: Axes, faces: Mapping[str, object], notes: Mapping[str, str] | None = None,
               title: str = "") -> None:
    """Every tile of the grid: states in `faces` in their colour, the rest grey with grey codes.

    `notes` adds a small second line (e.g. the value) under a state's code.
    """
    notes = notes or {}
    unknown = sorted(set(faces) - set(TILES))
    if unknown:
        raise ValueError(f"no tile position for {', '.join(unknown)}")
    for state, (row, column) in TILES.items():
        face = faces.get(state, NO_DATA)
        ax.add_patch(Rectangle((column + GAP, -row - 1 + GAP), 1 - 2 * GAP, 1 - 2 * GAP,
                               facecolor=face, edgecolor="none"))
        color = _text_color(face) if state in faces else "#8c8c8c"
        note = notes.get(state)
        y = -row - 0.5
        ax.text(column + 0.5, y + (0.14 if note else 0), state, ha="center", va="center",
                fontsize=9, fontweight="bold", color=color)
        if note:
            ax.text(column + 0.5, y - 0.22, note, ha="center", va="center", fontsize=6.5, color=color)
    ax.set_xlim(0, COLUMNS)
    ax.set_ylim(-ROWS, 0)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def value_map(ax: Axes, values: Mapping[str, float], cmap: Colormap, norm: Normalize,
              title: str = "", note: Callable[[float], str] | None = None) -> ScalarMappable:
    """Tiles coloured by value (NaN: grey, noted n/a); returns the mappable for a colour bar."""
    note = note or (lambda v: f"{v:.2f}")
    faces, notes = {}, {}
    for state, value in values.items():
        finite = value is not None and np.isfinite(value)
        faces[state] = cmap(norm(value)) if finite else NO_DATA
        notes[state] = note(value) if finite else "n/a"
    draw_tiles(ax, faces, notes, title)
    return ScalarMappable(norm=norm, cmap=cmap)


def category_map(ax: Axes, categories: Mapping[str, object], colors: Mapping[object, object],
                 title: str = "") -> None:
    """Tiles coloured by category (e.g. cluster id); `colors` maps each category to a colour."""
    draw_tiles(ax, {state: colors[c] for state, c in categories.items()}, title=title)
