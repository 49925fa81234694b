"""Tests of dynmec_jax.baselines.exact: the certified optimum (SCIP outer approximation)."""

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import baselines, system
from dynmec_jax.baselines import exact, exact_alloc, exhaustive

needs_scip = pytest.mark.skipif(importlib.util.find_spec("pyscipopt") is None,
                                reason="needs the 'exact' extra (pyscipopt)")


def scenarios(n, batch, seed=0, **overrides):
    """(SystemParams, float64 NumPy scenarios (batch, n)) at Table II defaults + overrides."""
    sp = system.SystemParams(n_users=n, **overrides)
    scn = system.sample_scenarios(jax.random.key(seed), sp, batch)
    return sp, jax.tree.map(lambda a: np.asarray(a, np.float64), scn)


def exhaustive_x64(scn, sp, infer_local=0.0, infer_edge=0.0):
    """exhaustive_optimum (cost, energy-aware allocation) in float64, as NumPy arrays."""
    with jax.enable_x64(True):
        r = jax.jit(lambda s: exhaustive.exhaustive_optimum(
            s, sp, infer_local=infer_local, infer_edge=infer_edge, objective="cost",
            allocation="energy_aware"))(scn)
        return jax.tree.map(np.asarray, r)


def recomputed_cost(scn, res, sp, infer_local=0.0, infer_edge=0.0):
    """sum_i C_i of (x, b, f) by system.cost_local / cost_edge in float64."""
    x = res.offload
    with jax.enable_x64(True):
        c_edge = system.cost_edge(scn, jnp.where(x, res.bandwidth, 1.0),
                                  jnp.where(x, res.f_alloc, 1.0), sp, infer_edge=infer_edge)
        c_loc = system.cost_local(scn, sp, infer_local=infer_local)
        return np.asarray(jnp.sum(jnp.where(x, c_edge, c_loc), axis=-1))


@needs_scip
@pytest.mark.parametrize("n,batch,overrides,infer", [
    (4, 4, {}, (0.0, 0.0)),
    (8, 4, {}, (0.0, 0.0)),
    (10, 3, {}, (0.0, 0.0)),
    (8, 3, {}, (1e-3, 4e-3)),
    (10, 3, {"beta": 0.5, "bandwidth_max": 2e6}, (2e-3, 5e-3)),
])
def test_matches_exhaustive(n, batch, overrides, infer):
    sp, scn = scenarios(n, batch, seed=n, **overrides)
    il, ie = infer
    ref = exhaustive_x64(scn, sp, il, ie)
    for seed in (True, False):
        res = exact.exact_optimum(scn, sp, infer_local=il, infer_edge=ie, seed=seed)
        np.testing.assert_array_equal(res.offload, ref.offload)
        np.testing.assert_allclose(res.cost, ref.value, rtol=1e-6)
        np.testing.assert_allclose(res.bandwidth, ref.bandwidth, rtol=0,
                                   atol=1e-9 * sp.bandwidth_max)
        np.testing.assert_allclose(res.f_alloc, ref.f_alloc, rtol=0, atol=1e-9 * sp.f_server)
        assert (res.status == "optimal").all()
        assert (res.lower_bound <= ref.value * (1 + 1e-12)).all()
        assert (res.gap <= 1e-6).all()


@needs_scip
def test_bounds_n30():
    sp, scn = scenarios(30, 2, seed=3)
    res = exact.exact_optimum(scn, sp)
    assert res.offload.shape == (2, 30) and res.cost.shape == (2,)
    assert (res.status == "optimal").all()
    assert (res.lower_bound <= res.cost).all()
    np.testing.assert_allclose(res.gap, (res.cost - res.lower_bound) / res.cost)
    assert (res.gap <= 1e-6).all() and (res.iterations >= 1).all()
    # Never worse than the greedy (its own float32 value, and its set re-allocated
    # exactly in float64) or than all-local execution.
    greedy = baselines.greedy_offloading(scn, sp)
    assert (res.cost <= np.asarray(greedy.cost, np.float64) * (1 + 1e-5)).all()
    for k in range(2):
        one = jax.tree.map(lambda a, k=k: a[k], scn)
        assert res.cost[k] <= exact_alloc.set_cost(one, np.asarray(greedy.offload[k]), sp)
    local = np.asarray(system.cost_local(scn, sp), np.float64).sum(-1)
    assert (res.cost <= local).all()


@needs_scip
def test_feasible_and_cost_recomputed():
    sp, scn = scenarios(30, 2, seed=4, bandwidth_max=2e6)
    il, ie = 1e-3, 3e-3
    res = exact.exact_optimum(scn, sp, infer_local=il, infer_edge=ie)
    x = res.offload
    assert x.any() and not x.all()
    assert (res.bandwidth >= 0).all() and (res.f_alloc >= 0).all()
    assert (res.bandwidth[~x] == 0).all() and (res.f_alloc[~x] == 0).all()
    assert (res.bandwidth[x] > 0).all() and (res.f_alloc[x] > 0).all()
    assert (res.bandwidth.sum(-1) <= sp.bandwidth_max * (1 + 1e-12)).all()
    assert (res.f_alloc.sum(-1) <= sp.f_server * (1 + 1e-12)).all()
    np.testing.assert_allclose(recomputed_cost(scn, res, sp, il, ie), res.cost, rtol=1e-12)


def test_set_allocation_matches_energy_aware():
    sp, scn = scenarios(12, 1, seed=5)
    one = jax.tree.map(lambda a: a[0], scn)
    x = np.arange(12) % 3 != 0
    b, f = exact_alloc.set_allocation(one, x, sp)
    with jax.enable_x64(True):
        b_ref, f_ref = exhaustive.energy_aware_allocation(one, x, sp)
        value = exhaustive.subset_value(one, x, b_ref, f_ref, sp, 1e-3, 2e-3)
    np.testing.assert_allclose(b, np.asarray(b_ref), rtol=0, atol=1e-10 * sp.bandwidth_max)
    np.testing.assert_allclose(f, np.asarray(f_ref), rtol=0, atol=1e-10 * sp.f_server)
    assert exact_alloc.set_cost(one, x, sp, infer_local=1e-3, infer_edge=2e-3) == pytest.approx(
        float(value), rel=1e-12)


@needs_scip
def test_single_scenario_and_padding():
    """One (N,) scenario gives unbatched results; empty (padded) tasks stay local."""
    sp, scn = scenarios(6, 1, seed=6)
    one = jax.tree.map(lambda a: a[0], scn)
    res = exact.exact_optimum(one, sp)
    assert res.offload.shape == (6,) and res.cost.shape == () and str(res.status) == "optimal"
    sp8 = system.SystemParams(n_users=8)
    padded, valid = system.pad_users(one, 8, sp8)
    padded = jax.tree.map(lambda a: np.asarray(a, np.float64), padded)
    res8 = exact.exact_optimum(padded, sp8)
    np.testing.assert_array_equal(res8.offload[:6], res.offload)
    assert not res8.offload[6:].any() and (res8.bandwidth[6:] == 0).all()
    assert float(res8.cost) == pytest.approx(float(res.cost), rel=1e-12)


@needs_scip
def test_time_limit():
    sp, scn = scenarios(60, 1, seed=7)
    res = exact.exact_optimum(scn, sp, time_limit=1e-6)
    assert res.status[0] == "time_limit"
    assert np.isfinite(res.lower_bound[0]) and 0 < res.lower_bound[0] <= res.cost[0]
    assert res.gap[0] > 1e-6
    np.testing.assert_allclose(recomputed_cost(scn, res, sp), res.cost, rtol=1e-12)


@needs_scip
def test_rejects_bad_arguments():
    sp, scn = scenarios(4, 1)
    with pytest.raises(ValueError, match="tol"):
        exact.exact_optimum(scn, sp, tol=0.0)
    with pytest.raises(ValueError, match="infer_edge"):
        exact.exact_optimum(scn, sp, infer_edge=-1.0)
    with pytest.raises(ValueError, match="size"):
        exact.exact_optimum(scn.replace(size=-scn.size), sp)


def test_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyscipopt", None)      # import pyscipopt -> ImportError
    sp, scn = scenarios(4, 1)
    with pytest.raises(ImportError, match=r"needs pyscipopt: pip install -e '\.\[exact\]'"):
        exact.exact_optimum(scn, sp)
