"""The report's plots: pure functions from numbers to PNG bytes.

Figures are made with matplotlib's object API on the Agg canvas (never `pyplot`), so making a
plot touches no global state, needs no display and is safe in a server or a worker thread. Each
function draws one figure of small panels in a grid: a report shows a few images, each readable
at a glance, rather than dozens. Non-finite values (a NaN loss logged as "nan") are left out of
the drawing; they stay visible in the report's tables.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PANEL_SIZE = (5.0, 3.0)  # inches per panel
DPI = 90


@dataclass(frozen=True)
class Series:
    """One line: `label` in the legend, points (x, y); `dashed` for a baseline such as the reference."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    dashed: bool = False


@dataclass(frozen=True)
class Panel:
    """One chart of a grid; `boundaries` are vertical markers (x, label), e.g. where a round starts."""

    title: str
    series: tuple[Series, ...]
    xlabel: str = "step"
    boundaries: tuple[tuple[float, str], ...] = ()


def finite_points(x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    """The (x, y) pairs whose y is a finite number."""
    kept = [(a, b) for a, b in zip(x, y) if b is not None and math.isfinite(b)]
    return [a for a, _ in kept], [b for _, b in kept]


def line_panels_png(panels: Sequence[Panel], columns: int = 2) -> bytes:
    """A grid of line charts, one per panel (at least one panel)."""
    figure, axes = _grid(len(panels), columns)
    for ax, panel in zip(axes, panels):
        for series in panel.series:
            xs, ys = finite_points(series.x, series.y)
            # Markers make a short series (a few rounds, a single eval) visible as points.
            marker = "o" if len(xs) <= 30 else None
            ax.plot(xs, ys, linestyle="--" if series.dashed else "-", marker=marker, markersize=3,
                    linewidth=1.2, label=series.label)
        for x, label in panel.boundaries:
            ax.axvline(x, color="0.55", linestyle=":", linewidth=1)
            ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                        textcoords="offset points", fontsize=7, color="0.35")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and rounds are whole numbers
        _finish_axes(ax, legend=len(panel.series) > 1)
    return _png(figure)


def histograms_png(groups: Sequence[tuple[str, Mapping[str, Sequence[float]]]], columns: int = 2) -> bytes:
    """Overlaid histograms per group (title, {label: values}), with bins shared inside a group so
    that before / after distributions are compared bar for bar."""
    figure, axes = _grid(len(groups), columns)
    for ax, (title, samples) in zip(axes, groups):
        finite = {label: [v for v in values if v is not None and math.isfinite(v)] for label, values in samples.items()}
        edges = shared_bin_edges([v for values in finite.values() for v in values])
        for label, values in finite.items():
            if values:
                ax.hist(values, bins=edges, alpha=0.55, label=f"{label} (n={len(values)})")
        ax.set_title(title, fontsize=9)
        _finish_axes(ax, legend=True)
    return _png(figure)


def shared_bin_edges(values: Sequence[float], bins: int = 20) -> np.ndarray:
    """Bin edges over all values; a single repeated value gets a unit-wide range around it."""
    if not values:
        return np.linspace(0.0, 1.0, bins + 1)
    low, high = min(values), max(values)
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def win_rates_png(rates: Mapping[str, Mapping[int, float]]) -> bytes:
    """Grouped bars: for each round, the policy's win rate against the reference per scorer.
    The dashed line at 0.5 is a tie with the reference."""
    rounds = sorted({r for per_round in rates.values() for r in per_round})
    figure, axes = _grid(1, 1, size=(max(5.0, 1.2 * len(rounds) + 2.5), 3.2))
    ax = axes[0]
    width = 0.8 / max(1, len(rates))
    for index, (source, per_round) in enumerate(rates.items()):
        xs = [position + index * width for position, r in enumerate(rounds) if r in per_round]
        ax.bar(xs, [per_round[r] for r in rounds if r in per_round], width=width, label=source)
    ax.axhline(0.5, color="0.4", linestyle="--", linewidth=1)
    ax.set_xticks([position + 0.4 - width / 2 for position in range(len(rounds))], [f"round {r}" for r in rounds])
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate vs reference", fontsize=8)
    _finish_axes(ax, legend=False)
    # Below the axes: inside, the legend would hide the bars it explains.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(4, len(rates)))
    return _png(figure)


def _grid(count: int, columns: int, size: tuple[float, float] = PANEL_SIZE):
    if count < 1:
        raise ValueError("a figure needs at least one panel")
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(size[0] * columns, size[1] * rows), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, axes[:count]


def _finish_axes(ax, legend: bool) -> None:
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    # No "Software" stamp: the same data gives the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
