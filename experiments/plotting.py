"""Plots from result tables, shared by the experiment scripts and the notebooks.

Every function takes a tidy DataFrame (rows of ``results.csv`` or a figure CSV) and column
names, draws on a Matplotlib ``Axes`` (a new figure when none is given) and returns the axes.
``save`` writes a small PNG. No function computes anything but means, ratios and fronts.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: scripts, CI, notebooks executed by nbclient
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MARKERS = "osD^v<>pPX*h"


def _axes(ax, size=(6.4, 3.6)):
    if ax is None:
        _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def panels(n: int, ncols: int = 2, size: tuple[float, float] = (4.2, 3.0)):
    """A figure of ``n`` axes in rows of ``ncols``; returns (figure, flat list of axes)."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             layout="constrained", squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def bars(df: pd.DataFrame, x: str, y: str, hue: str | None = None, *, ax=None,
         ylabel: str | None = None, title: str = "", logy: bool = False, fmt: str = "{:.3g}"):
    """Grouped bars of ``y`` by ``x`` (one bar per ``hue`` value), labelled with their values."""
    ax = _axes(ax)
    table = df.pivot_table(index=x, columns=hue, values=y, aggfunc="mean", sort=False) \
        if hue else df.groupby(x, sort=False)[[y]].mean()
    n = max(len(table.columns), 1)
    width = 0.8 / n
    xs = np.arange(len(table.index))
    for i, col in enumerate(table.columns):
        vals = table[col].to_numpy(dtype=float)
        rects = ax.bar(xs + (i - (n - 1) / 2) * width, vals, width,
                       label=str(col) if hue else None)
        ax.bar_label(rects, labels=["" if np.isnan(v) else fmt.format(v) for v in vals],
                     fontsize=7, padding=1)
    labels = [str(i) for i in table.index]
    crowded = sum(map(len, labels)) > 40
    ax.set_xticks(xs, labels, rotation=25 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(ylabel or y)
    if logy:
        ax.set_yscale("log")
        vals = table.to_numpy(dtype=float)
        if np.isfinite(vals).any() and (vals > 0).any():  # bars grow from a visible bottom
            lo, hi = np.nanmin(vals[vals > 0]), np.nanmax(vals)
            ax.set_ylim(lo / 3, hi * 3)
    if hue:
        ax.legend(fontsize=8, title=hue, title_fontsize=8)
    ax.set_title(title, fontsize=10)
    return ax


def lines(df: pd.DataFrame, x: str, y: str, hue: str | None = None, *, ax=None,
          ylabel: str | None = None, xlabel: str | None = None, title: str = "",
          logx: bool = False, logy: bool = False):
    """One line of mean ``y`` against ``x`` per ``hue`` value."""
    ax = _axes(ax)
    groups = df.groupby(hue, sort=False) if hue else [(None, df)]
    for i, (key, g) in enumerate(groups):
        m = g.groupby(x)[y].mean().sort_index()
        ax.plot(m.index, m.to_numpy(), marker=MARKERS[i % len(MARKERS)],
                label=None if key is None else str(key))
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if hue:
        ax.legend(fontsize=8, title=hue, title_fontsize=8)
    ax.set_title(title, fontsize=10)
    return ax


def stacked(df: pd.DataFrame, index: str, parts: list[str], *, ax=None,
            ylabel: str = "", title: str = "", labels: list[str] | None = None):
    """Stacked bars: one bar per ``index`` value, one segment per column in ``parts``."""
    ax = _axes(ax)
    table = df.set_index(index)[parts]
    bottom = np.zeros(len(table))
    xs = np.arange(len(table))
    for col, label in zip(parts, labels or parts):
        vals = table[col].fillna(0).to_numpy(dtype=float)
        ax.bar(xs, vals, 0.7, bottom=bottom, label=label)
        bottom += vals
    ax.set_xticks(xs, [str(i) for i in table.index], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return ax


def pareto_mask(x: pd.Series, y: pd.Series) -> np.ndarray:
    """Points not dominated in (lower x, lower y)."""
    pts = np.column_stack([x.to_numpy(dtype=float), y.to_numpy(dtype=float)])
    keep = np.ones(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        if np.isnan(p).any():
            keep[i] = False
            continue
        dominated = np.all(pts <= p, axis=1) & np.any(pts < p, axis=1)
        keep[i] = not dominated.any()
    return keep


def pareto(df: pd.DataFrame, x: str, y: str, hue: str, style: str | None = None, *, ax=None,
           xlabel: str | None = None, ylabel: str | None = None, title: str = "",
           annotate: str | None = None, legend: str | None = "inside"):
    """Scatter of ``y`` against ``x`` (log-log), coloured by ``hue``, marker by ``style``; the
    Pareto front (lower is better on both axes) is drawn as a step line. ``legend``: "inside",
    "outside" (right of the axes) or None."""
    from matplotlib.lines import Line2D

    ax = _axes(ax, size=(7.0, 4.4))
    styles = list(dict.fromkeys(df[style])) if style else [None]
    colors = {h: f"C{i % 10}" for i, h in enumerate(dict.fromkeys(df[hue]))}
    for key, g in df.groupby([hue, style] if style else [hue], sort=False):
        h, s = key[0], (key[1] if style else None)
        ax.scatter(g[x], g[y], color=colors[h], marker=MARKERS[styles.index(s) % len(MARKERS)],
                   s=26, alpha=0.85)
        if annotate:
            for _, r in g.iterrows():
                ax.annotate(str(r[annotate]), (r[x], r[y]), fontsize=6, alpha=0.7,
                            xytext=(2, 2), textcoords="offset points")
    front = df[pareto_mask(df[x], df[y])].sort_values(x)
    if len(front):
        ax.step(front[x], front[y], where="post", color="k", lw=0.8, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if legend:
        handles = [Line2D([], [], ls="", marker="o", color=c, label=str(h))
                   for h, c in colors.items()]
        handles += [Line2D([], [], ls="", marker=MARKERS[i % len(MARKERS)], color="0.3",
                           label=str(s)) for i, s in enumerate(styles) if s is not None]
        handles.append(Line2D([], [], color="k", lw=0.8, label="Pareto front"))
        where = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)} if legend == "outside" \
            else {"ncol": 2}
        ax.legend(handles=handles, fontsize=7, **where)
    ax.set_title(title, fontsize=10)
    return ax


def save(ax_or_fig, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure as a PNG (small: the committed ones stay under 200 KB)."""
    fig = ax_or_fig if isinstance(ax_or_fig, plt.Figure) else ax_or_fig.figure
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {path}")
    return path
