"""The one confidence interval of the project: mean and Student-t half-width.

Every figure, table and claim reports a mean with a 95% confidence interval
from :func:`mean_ci`: the sample of per-seed (or per-scenario) values,
non-finite entries dropped, half-width ``t_{(1 + c)/2, n - 1} s / sqrt(n)``
with ``s`` the sample standard deviation (ddof = 1).  :func:`relative_gap`
applies it to the paired per-scenario differences of two methods.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats as scipy_stats


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> dict:
    """Mean and Student-t confidence half-width of a sample.

    ``values``: numbers (one per seed or scenario; any unit, kept).
    Non-finite entries (NaN, +-inf) are dropped and ``n`` counts the rest.
    Returns ``{"mean", "ci", "n", "std"}``: ``std`` the sample standard
    deviation (ddof = 1) and ``ci = t.ppf((1 + confidence) / 2, n - 1) std /
    sqrt(n)`` (the interval is ``mean +- ci``).  ``n == 1`` gives ``ci = std
    = 0.0`` (no spread measurable); ``n == 0`` gives NaN for mean, ci and std.
    """
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                   dtype=float).ravel()
    a = a[np.isfinite(a)]
    n = int(a.size)
    if n == 0:
        return {"mean": math.nan, "ci": math.nan, "n": 0, "std": math.nan}
    mean = float(np.mean(a))
    if n == 1:
        return {"mean": mean, "ci": 0.0, "n": 1, "std": 0.0}
    std = float(np.std(a, ddof=1))
    tq = float(scipy_stats.t.ppf(0.5 * (1.0 + confidence), n - 1))
    return {"mean": mean, "ci": tq * std / math.sqrt(n), "n": n, "std": std}


def relative_gap(a, b, confidence: float = 0.95) -> dict:
    """``mean(a) / mean(b) - 1`` with the CI of the paired differences ``a - b`` over mean(b).

    ``a``, ``b``: per-scenario values of two methods on the same scenarios
    (e.g. sum_i C_i of a method and of the optimum).  Returns ``{"mean",
    "ci", "n"}`` (dimensionless; ``ci`` the half-width of :func:`mean_ci` of
    the differences, divided by mean(b)).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = mean_ci(a - b, confidence)
    base = float(np.mean(b))
    return {"mean": d["mean"] / base, "ci": d["ci"] / base, "n": d["n"]}
