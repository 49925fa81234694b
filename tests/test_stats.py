"""Tests of dynmec_jax.stats: the one confidence interval (Student t)."""

import math

import numpy as np
import pytest
from scipy import stats

from dynmec_jax import stats as dstats


def test_mean_ci_matches_student_t():
    v = [1.0, 2.0, 4.0, 3.5, 0.5]
    a = dstats.mean_ci(v)
    n = len(v)
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    ci = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    assert a["n"] == 5
    assert a["mean"] == pytest.approx(mean)
    assert a["std"] == pytest.approx(std)
    assert a["ci"] == pytest.approx(ci)
    assert a["ci"] == pytest.approx(2.7764451 * std / math.sqrt(5), rel=1e-6)
    a90 = dstats.mean_ci(np.asarray(v), confidence=0.90)
    assert a90["ci"] == pytest.approx(stats.t.ppf(0.95, 4) * std / math.sqrt(5))


def test_mean_ci_edge_cases():
    one = dstats.mean_ci([3.0])
    assert one == {"mean": 3.0, "ci": 0.0, "n": 1, "std": 0.0}
    nan = dstats.mean_ci([1.0, float("nan"), 3.0, float("inf")])
    assert nan["n"] == 2 and nan["mean"] == pytest.approx(2.0)
    assert nan["ci"] == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))
    empty = dstats.mean_ci([])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["ci"])
    assert dstats.mean_ci([float("nan")])["n"] == 0
    assert isinstance(dstats.mean_ci(np.float32([1, 2]))["mean"], float)


def test_relative_gap_is_the_paired_difference_over_the_reference():
    b = np.array([10.0, 20.0, 30.0, 40.0])
    a = b * 1.01 + np.array([0.1, -0.1, 0.2, -0.2])
    g = dstats.relative_gap(a, b)
    d = dstats.mean_ci(a - b)
    assert g["mean"] == pytest.approx(a.mean() / b.mean() - 1)
    assert g["ci"] == pytest.approx(d["ci"] / b.mean()) and g["n"] == 4
