"""Figures and result files of Section V (Figs. 4-12), mean and 95% CI over seeds.

Pure matplotlib with the Agg canvas: every figure is a
:class:`matplotlib.figure.Figure` built by a ``build_*_figure`` function
(returned, for tests and notebooks) and written by the matching ``plot_*``
function; ``matplotlib.pyplot`` is never imported, so no global figure state
is created or leaked.

Conventions
-----------
* Over-seed aggregation (:func:`sweep_table`): the mean and the half-width of
  the two-sided Student-t confidence interval of :func:`dynmec_jax.stats.mean_ci`.
* Units: the plot functions draw ``value * y_scale`` against ``x * x_scale``;
  the caller states the resulting units in the axis labels (e.g. delay in s
  with ``y_scale=1e3`` and ``ylabel="... [ms]"``).  Error bars are the CI
  half-widths scaled the same way.
* Method styles come from the caller (``styles``: the method registry's,
  :func:`dynmec_jax.methods.styles`); other names get a style from
  :data:`FALLBACK_STYLES` chosen by a CRC32 hash of the name, so they are
  stable across figures and runs.
* Output files are written atomically (:func:`dynmec_jax.files.atomic_write`);
  parent folders are created.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynmec_jax import files, stats

__all__ = [
    "OPTIMUM_COLOUR",
    "FALLBACK_STYLES",
    "method_style",
    "sweep_table",
    "build_sweep_figure",
    "plot_sweep",
    "build_fig04_figure",
    "plot_fig04",
    "build_bars_figure",
    "plot_bars",
    "build_fig12_figure",
    "plot_fig12",
    "save_figure",
    "build_curves_figure",
    "plot_curves",
]

DPI = 120

#: Colour of the optimum's line in Fig. 4.
OPTIMUM_COLOUR = "#7f7f7f"

FALLBACK_STYLES: tuple[tuple[str, str, str], ...] = (
    ("#637939", "o", "-"),
    ("#8c6d31", "s", "-"),
    ("#843c39", "^", "-"),
    ("#7b4173", "D", "-"),
    ("#3182bd", "v", "-"),
    ("#e6550d", "p", "-"),
    ("#31a354", "h", "-"),
    ("#756bb1", ">", "-"),
    ("#636363", "<", "-"),
    ("#a55194", "8", "-"),
)

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def method_style(method: str, styles: Mapping[str, tuple] | None = None
                 ) -> tuple[str, str, str]:
    """``(colour, marker, linestyle)`` of a series: from ``styles`` (the method registry's,
    :func:`dynmec_jax.methods.styles`) when it has the name, else hashed (stable)."""
    if styles and method in styles:
        return tuple(styles[method])
    return FALLBACK_STYLES[zlib.crc32(method.encode("utf-8")) % len(FALLBACK_STYLES)]


# ----------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------

def sweep_table(records: Sequence[Mapping[str, Any]], metric: str,
                confidence: float = 0.95) -> dict:
    """Aggregates per-seed records of a sweep over seeds, per (method, x).

    ``records``: ``[{"method": str, "x": float, "seed": int, "metrics":
    {name: float}}]``.  Returns ``{"x": [sorted unique x], "series": {method:
    {"mean": [...], "ci": [...], "n": [...], "std": [...]}}}`` with lists
    aligned with ``"x"``; methods keep their order of first appearance.  A
    (method, x) cell without a finite value of ``metric`` (no record, metric
    missing, or NaN) has mean/ci/std NaN and n 0.  Values keep their unit.
    """
    xs = sorted({float(r["x"]) for r in records})
    index = {x: i for i, x in enumerate(xs)}
    cells: dict[str, list[list[float]]] = {}
    for r in records:
        per_x = cells.setdefault(str(r["method"]), [[] for _ in xs])
        v = r.get("metrics", {}).get(metric)
        if v is not None:
            per_x[index[float(r["x"])]].append(float(v))
    series = {}
    for method, per_x in cells.items():
        aggs = [stats.mean_ci(v, confidence) for v in per_x]
        series[method] = {k: [a[k] for a in aggs] for k in ("mean", "ci", "n", "std")}
    return {"x": xs, "series": series}


# ----------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------

def save_figure(fig: Figure, path: str | os.PathLike) -> str:
    """Writes ``fig`` atomically at ``dpi=120`` (format from the suffix, default PNG).

    Rendered in memory, then written by :func:`dynmec_jax.files.atomic_write`.
    Clears the figure afterwards (releases its artists); returns ``str(path)``.
    """
    path = pathlib.Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=DPI, format=fmt)
    finally:
        fig.clear()
    files.atomic_write(path, buf.getvalue())
    return str(path)


def _new_figure(nrows: int, ncols: int, panel_w: float = 5.2, panel_h: float = 3.9,
                extra_h: float = 0.0) -> tuple[Figure, list]:
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows + extra_h), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _grid(n: int) -> tuple[int, int]:
    if n <= 0:
        raise ValueError("at least one panel is needed")
    if n > 4:
        raise ValueError(f"at most 4 panels, got {n}")
    return {1: (1, 1), 2: (1, 2), 3: (2, 2), 4: (2, 2)}[n]


def _arr(v, scale: float = 1.0) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a * scale


def _clean_err(mean: np.ndarray, ci: np.ndarray) -> np.ndarray:
    """CI half-widths with NaN replaced by 0 (so a point without a CI still draws)."""
    ci = np.where(np.isfinite(ci), np.abs(ci), 0.0)
    return np.where(np.isfinite(mean), ci, 0.0)


def _panel_title(letter: str, text: str) -> str:
    return f"({letter}) {text}" if text else f"({letter})"


# ----------------------------------------------------------------------------
# Figs. 5-9: sweeps
# ----------------------------------------------------------------------------

def build_sweep_figure(panels: Sequence[Mapping[str, Any]], ylabel: str,
                       right_axis_methods: Iterable[str] = ("GA",), title: str | None = None,
                       yscale: str = "linear", styles: Mapping[str, tuple] | None = None
                       ) -> Figure:
    """The Figure of :func:`plot_sweep` (not saved); see there for the arguments.

    Axes: one per panel (unused grid cells removed) plus one twin right-hand
    axis per panel in which a method of ``right_axis_methods`` has a finite
    value, so ``len(fig.axes) == len(panels) + #panels with a right axis``.
    """
    right = tuple(right_axis_methods or ())
    nrows, ncols = _grid(len(panels))
    fig, axes = _new_figure(nrows, ncols, extra_h=0.5)
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    handles: dict[str, Any] = {}
    for i, (ax, p) in enumerate(zip(axes, panels, strict=False)):
        table = p["table"]
        xs = _arr(table["x"], float(p.get("x_scale", 1.0)))
        ys_ = float(p.get("y_scale", 1.0))
        xlabel = str(p.get("xlabel", ""))
        letter = str(p.get("letter", _LETTERS[i]))
        ptitle = p.get("title", xlabel.split(" [")[0])
        ax.set_title(_panel_title(letter, ptitle))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(str(p.get("ylabel", ylabel)))
        ax.set_yscale(str(p.get("yscale", yscale)))
        if p.get("xscale", "linear") == "symlog":
            ax.set_xscale("symlog", linthresh=float(p.get("linthresh", 1.0)))
        else:
            ax.set_xscale(str(p.get("xscale", "linear")))
        ax.grid(True, alpha=0.3)
        series = table["series"]
        right_here = [m for m in series if m in right
                      and np.isfinite(_arr(series[m]["mean"])).any()]
        rax = None
        if right_here:
            rax = ax.twinx()
            rax.set_yscale(yscale)
            rax.set_ylabel(f"{ylabel} ({', '.join(right_here)}, right axis)")
        for method, s in series.items():
            mean = _arr(s["mean"], ys_)
            if not np.isfinite(mean).any():
                continue
            err = _clean_err(mean, _arr(s.get("ci", np.full_like(mean, np.nan)), ys_))
            colour, marker, ls = method_style(method, styles)
            target = rax if method in right_here else ax
            if method in right_here:
                ls = "--"
            h = target.errorbar(xs, mean, yerr=err, color=colour, marker=marker, linestyle=ls,
                                capsize=3, markersize=6, linewidth=1.4, label=method)
            handles.setdefault(method, h)
        if rax is not None:
            rax.tick_params(axis="y", colors=method_style(right_here[0], styles)[0])
    if handles:
        labels = [m + (" (right axis)" if m in right else "") for m in handles]
        fig.legend(list(handles.values()), labels, loc="outside lower center",
                   ncol=min(len(handles), 6), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_sweep(panels: Sequence[Mapping[str, Any]], path: str | os.PathLike, ylabel: str,
               right_axis_methods: Iterable[str] = ("GA",), title: str | None = None,
               yscale: str = "linear", styles: Mapping[str, tuple] | None = None) -> str:
    """Line plot of up to four sweeps (Figs. 5-9), mean with 95% CI error bars.

    ``panels``: up to 4 dicts ``{"xlabel": str, "table": sweep_table output,
    "x_scale": float = 1 (x drawn as x * x_scale, e.g. 1e-9 for Hz -> GHz),
    "y_scale": float = 1 (values and CIs drawn times y_scale, e.g. 1e3 for
    s -> ms), "letter": str = "a", "b", ...; optional "title": str (panel
    title after "(a) "; default the xlabel without its "[unit]"); "ylabel": str
    (this panel's, instead of ``ylabel``); "xscale": "linear", "log" or
    "symlog" (with "linthresh": the linear range around 0); "yscale": this
    panel's y scale}``.  Grid
    1x1, 1x2 or 2x2.  ``ylabel``: label of the left axes including the unit
    after scaling.  Methods in ``right_axis_methods`` are drawn dashed on a
    twin right-hand axis labelled ``"<ylabel> (GA, right axis)"`` (as GA in
    the paper's Figs. 5-8).  ``yscale``: "linear" or "log" (both axes).  One
    shared legend below the panels.  ``styles``: ``{name: (colour, marker,
    linestyle)}`` (:func:`method_style`).  Returns ``str(path)``.
    """
    fig = build_sweep_figure(panels, ylabel, right_axis_methods, title, yscale, styles)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------
# Fig. 4: model size
# ----------------------------------------------------------------------------

def build_fig04_figure(data: Mapping[str, Any], ylabel: str = "Weighted delay",
                       y_scale: float = 1.0) -> Figure:
    """The Figure of :func:`plot_fig04` (not saved); two axes."""
    width = np.asarray(data["width"], dtype=float)
    depth = list(data["depth"])
    fig, axes = _new_figure(1, 2, extra_h=0.4)
    opt = data.get("optimal_wd")
    panels = (("wd", "a", "Without inference delay"),
              ("wd_infer", "b", "With inference delay"))
    handles: dict[str, Any] = {}
    for ax, (key, letter, text) in zip(axes, panels, strict=True):
        mean = _arr(data[key]["mean"], y_scale)
        ci = _arr(data[key].get("ci", np.full(mean.shape, np.nan)), y_scale)
        if mean.shape != (len(width), len(depth)):
            raise ValueError(f"data[{key!r}]['mean'] has shape {mean.shape}, "
                             f"expected (len(width), len(depth)) = {(len(width), len(depth))}")
        for d, dep in enumerate(depth):
            colour, marker, _ = FALLBACK_STYLES[d % len(FALLBACK_STYLES)]
            lbl = f"depth {dep:g}" if isinstance(dep, (int, float)) else f"depth {dep}"
            h = ax.errorbar(width, mean[:, d], yerr=_clean_err(mean[:, d], ci[:, d]),
                            color=colour, marker=marker, capsize=3, linewidth=1.4, label=lbl)
            handles.setdefault(lbl, h)
        if opt is not None and np.isfinite(float(opt)):
            colour = OPTIMUM_COLOUR
            h = ax.axhline(float(opt) * y_scale, color=colour, linestyle="--", linewidth=1.2,
                           label="Optimal (no inference)")
            handles.setdefault("Optimal (no inference)", h)
        if key == "wd_infer" and np.isfinite(mean).any():
            k, d = np.unravel_index(np.nanargmin(mean), mean.shape)
            h = ax.plot([width[k]], [mean[k, d]], marker="*", markersize=18, color="gold",
                        markeredgecolor="black", linestyle="none",
                        label="best size (min. of (b))")[0]
            handles.setdefault("best size (min. of (b))", h)
        ax.set_title(_panel_title(letter, text))
        ax.set_xlabel("Width (experts per layer)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(width)
        ax.grid(True, alpha=0.3)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
               ncol=min(len(handles), 6), frameon=False)
    return fig


def plot_fig04(data: Mapping[str, Any], path: str | os.PathLike,
               ylabel: str = "Weighted delay", y_scale: float = 1.0) -> str:
    """Fig. 4: allocation performance versus model width and depth.

    ``data``: ``{"width": [w_1..w_K], "depth": [d_1..d_L], "wd": {"mean": KxL,
    "ci": KxL}, "wd_infer": {"mean": KxL, "ci": KxL}, "optimal_wd": float or
    None}``; ``[k][l]`` is width k, depth l; values are the importance-weighted
    delay (unit of the caller, dimensionless in the reproduction; drawn times
    ``y_scale``).  Panel (a): ``wd`` (no inference delay) vs width, one line
    per depth, CI error bars; panel (b): ``wd_infer`` (inference delay
    included), with its minimum over (width, depth) marked by a star.  Both
    panels show ``optimal_wd`` as a horizontal dashed line when given and
    finite.  Other keys of ``data`` are ignored.  Returns ``str(path)``.
    """
    return save_figure(build_fig04_figure(data, ylabel, y_scale), path)


# ----------------------------------------------------------------------------
# Figs. 10-11: grouped bars
# ----------------------------------------------------------------------------

def _bars(ax, groups: Sequence[str], series: Mapping[str, tuple[np.ndarray, np.ndarray]],
          styles: Mapping[str, Any] | None = None) -> dict:
    n = max(len(series), 1)
    width = 0.8 / n
    pos = np.arange(len(groups), dtype=float)
    handles = {}
    for j, (name, (mean, ci)) in enumerate(series.items()):
        colour = method_style(name, styles)[0]
        heights = np.where(np.isfinite(mean), mean, 0.0)
        h = ax.bar(pos + (j - (n - 1) / 2) * width, heights, width * 0.95,
                   yerr=_clean_err(mean, ci), capsize=3, color=colour, edgecolor="black",
                   linewidth=0.5, label=name, error_kw={"elinewidth": 1.0})
        handles[name] = h
    ax.set_xticks(pos)
    ax.set_xticklabels(groups)
    ax.grid(True, axis="y", alpha=0.3)
    return handles


def build_bars_figure(table: Mapping[str, Any], ylabel: str, xlabel: str,
                      title: str | None = None, y_scale: float = 1.0, log: bool = False,
                      x_scale: float = 1.0, x_format: str = "{:g}",
                      styles: Mapping[str, tuple] | None = None) -> Figure:
    """The Figure of :func:`plot_bars` (not saved); one axis."""
    xs = _arr(table["x"], x_scale)
    fig, (ax,) = _new_figure(1, 1, panel_w=7.0, panel_h=4.2)
    series = {m: (_arr(s["mean"], y_scale),
                  _arr(s.get("ci", [math.nan] * len(xs)), y_scale))
              for m, s in table["series"].items()}
    handles = _bars(ax, [x_format.format(x) for x in xs], series, styles)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if handles:
        ax.legend(list(handles.values()), list(handles.keys()), fontsize="small")
    return fig


def plot_bars(table: Mapping[str, Any], path: str | os.PathLike, ylabel: str, xlabel: str,
              title: str | None = None, y_scale: float = 1.0, log: bool = False,
              x_scale: float = 1.0, x_format: str = "{:g}",
              styles: Mapping[str, tuple] | None = None) -> str:
    """Grouped bars with 95% CI error bars (Fig. 10: MACs; Fig. 11: inference share).

    ``table``: :func:`sweep_table` output; one group per x (labelled with
    ``x_format.format(x * x_scale)``, e.g. ``x_scale=1e-3`` for bit -> kbit),
    one bar per method (colours from ``styles``), heights ``mean * y_scale`` (e.g.
    ``1e-6`` for MACs -> MMACs, ``100`` for a fraction -> %); missing cells
    draw as empty.  ``log``: logarithmic y axis.  Returns ``str(path)``.
    """
    fig = build_bars_figure(table, ylabel, xlabel, title, y_scale, log, x_scale, x_format,
                            styles)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------
# Fig. 12: training cost
# ----------------------------------------------------------------------------

_FIG12_STYLES = {"progressive": "#d62728", "traditional": "#1f77b4"}
_CASE_LABELS = {"full": "Full (width + depth)", "width": "Width", "depth": "Depth"}


def build_fig12_figure(data: Mapping[str, Any], log_ratio: float = 20.0) -> Figure:
    """The Figure of :func:`plot_fig12` (not saved); two axes."""
    cases = [str(c) for c in data["cases"]]
    methods = [m for m in ("progressive", "traditional") if m in data]
    fig, axes = _new_figure(1, 2, extra_h=0.4)
    panels = (("steps", "a", "Optimiser steps", "Training steps to target"),
              ("seconds", "b", "Wall time", "Training wall time [s]"))
    handles: dict[str, Any] = {}
    for ax, (key, letter, text, ylabel) in zip(axes, panels, strict=True):
        series = {}
        for m in methods:
            block = data[m].get(key, {})
            mean = _arr(block.get("mean", [math.nan] * len(cases)))
            ci = _arr(block.get("ci", [math.nan] * len(cases)))
            series[m.capitalize()] = (mean, ci)
        styles = {m.capitalize(): (_FIG12_STYLES[m], "o", "-") for m in methods}
        bars = _bars(ax, [_CASE_LABELS.get(c, c) for c in cases], series, styles)
        handles.update(bars)
        vals = np.concatenate([s[0] for s in series.values()]) if series else np.array([])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size and vals.max() / vals.min() > log_ratio:
            ax.set_yscale("log")
        missed = False
        for m in methods:
            reached = data[m].get("reached")
            if reached is None:
                continue
            for patch, ok in zip(bars[m.capitalize()].patches, reached, strict=False):
                if not ok:
                    patch.set_hatch("//")
                    missed = True
        if missed:
            ax.text(0.01, 0.99, "hatched: target not reached in every seed",
                    transform=ax.transAxes, va="top", fontsize="x-small")
        ax.set_title(_panel_title(letter, text))
        ax.set_xlabel("Dynamic MoE trained")
        ax.set_ylabel(ylabel)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
               ncol=max(len(handles), 1), frameon=False)
    return fig


def plot_fig12(data: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Fig. 12: training cost of progressive shrinkage vs traditional training.

    ``data``: ``{"cases": ["full", "width", "depth"], "progressive": {"steps":
    {"mean": [...], "ci": [...]}, "seconds": {"mean", "ci"}, optional
    "reached": [bool per case]}, "traditional": {same}}``.  Panel (a):
    optimiser steps; panel (b): wall time [s]; grouped bars per case with 95%
    CI error bars; a panel's y axis is logarithmic when its largest / smallest
    positive mean exceeds 20.  Bars of cases whose ``reached`` is false are
    hatched.  Other keys are ignored.  Returns ``str(path)``.
    """
    return save_figure(build_fig12_figure(data), path)


# ----------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------

def build_curves_figure(history: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """The Figure of :func:`plot_curves` (not saved): one panel per metric."""
    names = [k for k in (history[0] if history else {}) if k not in ("step", "per_seed")]
    for h in history[1:]:
        names += [k for k in h if k not in ("step", "per_seed") and k not in names]
    ncols = min(4, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, axes = _new_figure(nrows, ncols, panel_w=4.0, panel_h=2.8)
    for ax in axes[len(names):]:
        fig.delaxes(ax)
    for ax, name in zip(axes, names, strict=False):
        pts = [(h["step"], h[name]) for h in history if name in h]
        steps = np.asarray([p[0] for p in pts], float)
        seeds = [h.get("per_seed", {}).get(name) for h in history if name in h]
        if seeds and all(s is not None for s in seeds):
            per = np.asarray(seeds, float)
            for j in range(per.shape[1]):
                ax.plot(steps, per[:, j], color="#999999", linewidth=0.7)
        ax.plot(steps, np.asarray([p[1] for p in pts], float), color="#d62728", linewidth=1.5,
                marker="." if len(pts) < 30 else None)
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                title: str = "") -> str:
    """Training curves: one panel per metric of ``history`` (entries ``{"step", name:
    mean, "per_seed": {name: [...]}}``), the mean in red and each seed in grey, against
    the step.  Returns ``str(path)``."""
    return save_figure(build_curves_figure(history, title), path)
