"""Tests of dynmec_jax.baselines.ga: the GA baseline of Section V.A / V.B."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import accounting, system
from dynmec_jax.baselines import ga

N = 5
ITERS = 30
P = system.SystemParams(n_users=N)


def scenario(seed, batch=None, params=P):
    """One (N,) scenario, or a (batch, N) batch."""
    scn = system.sample_scenarios(jax.random.key(seed), params, 1 if batch is None else batch)
    return jax.tree.map(lambda a: a[0], scn) if batch is None else scn


# The GA objects and their jitted runs are shared so each configuration compiles once.
ALGS = {joint: ga.GeneticAlgorithm(N, n_iters=ITERS, joint=joint) for joint in (False, True)}
RUNS = {joint: jax.jit(alg.run) for joint, alg in ALGS.items()}
MASK = jnp.array([True, False, True, True, False])


def run(joint, seed=0, scn=None, mask=MASK):
    alg = ALGS[joint]
    scn = scenario(seed) if scn is None else scn
    return RUNS[joint](jax.random.key(seed), scn, mask, P, alg.default_params()), scn


def check_budgets(res, params=P):
    b, f, x = (np.asarray(a) for a in (res.bandwidth, res.f_alloc, res.offload))
    assert np.all(b >= 0) and np.all(f >= 0)
    assert b.sum() <= params.bandwidth_max * (1 + 1e-6)
    assert f.sum() <= params.f_server * (1 + 1e-6)
    assert np.all(b[~x] == 0) and np.all(f[~x] == 0)
    if x.any():  # budgets are met with equality
        np.testing.assert_allclose(b.sum(), params.bandwidth_max, rtol=1e-5)
        np.testing.assert_allclose(f.sum(), params.f_server, rtol=1e-5)


@pytest.mark.parametrize("joint", [False, True])
def test_budgets_respected(joint):
    res, _ = run(joint, seed=1)
    check_budgets(res)
    if not joint:
        np.testing.assert_array_equal(res.offload, MASK)


@pytest.mark.parametrize("joint", [False, True])
def test_history_non_increasing_and_improves(joint):
    res, _ = run(joint, seed=2, mask=jnp.ones(N, bool))
    hist = np.asarray(res.best_objective_history)
    assert hist.shape == (ITERS + 1,)
    assert np.all(np.diff(hist) <= 0)
    assert hist[-1] < hist[0]  # beats the best of the initial population (equal share included)
    assert res.objective == hist[-1]


@pytest.mark.parametrize("joint", [False, True])
def test_objective_matches_recomputation(joint):
    res, scn = run(joint, seed=3)
    out = system.task_outcomes(scn, res.offload, res.bandwidth, res.f_alloc, P)
    np.testing.assert_allclose(system.objective(out, P), res.objective, rtol=1e-6)


def test_vmap_equals_loop():
    alg = ALGS[False]
    gp = alg.default_params()
    scn = scenario(4, batch=3)
    mask = jnp.ones((3, N), bool).at[1, 0].set(False)
    key = jax.random.key(7)
    batched = jax.jit(alg.run_batch)(key, scn, mask, P, gp)
    keys = jax.random.split(key, 3)
    for i in range(3):
        scn_i = jax.tree.map(lambda a, i=i: a[i], scn)
        one = RUNS[False](keys[i], scn_i, mask[i], P, gp)
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-6)


class JitTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_matches_no_jit(self):
        alg = ga.GeneticAlgorithm(N, n_iters=5, joint=True)
        scn = scenario(5)
        fn = self.variant(alg.run)
        res = fn(jax.random.key(3), scn, MASK, P, alg.default_params())
        ref = jax.jit(alg.run)(jax.random.key(3), scn, MASK, P, alg.default_params())
        for a, b in zip(jax.tree.leaves(res), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("joint", [False, True])
@pytest.mark.parametrize("case", ["zero_size_and_work", "one_offloaded", "none_offloaded",
                                  "all_zero"])
def test_edge_cases_finite(joint, case):
    scn = scenario(6)
    mask = jnp.ones(N, bool)
    if case == "zero_size_and_work":
        scn = scn.replace(size=scn.size.at[0].set(0.0), workload=scn.workload.at[1].set(0.0))
    elif case == "one_offloaded":
        mask = jnp.zeros(N, bool).at[2].set(True)
    elif case == "none_offloaded":
        mask = jnp.zeros(N, bool)
    else:  # every task empty: objective 0 for every individual
        scn = scn.replace(size=jnp.zeros(N))
    res, _ = run(joint, scn=scn, mask=mask)
    chex.assert_tree_all_finite(res)
    check_budgets(res)
    if not joint and case == "none_offloaded":
        assert np.all(np.asarray(res.bandwidth) == 0)
    if case == "one_offloaded" and not joint:
        assert res.bandwidth[2] == pytest.approx(P.bandwidth_max, rel=1e-6)
        assert res.f_alloc[2] == pytest.approx(P.f_server, rel=1e-6)
    if case == "all_zero":
        assert res.objective == 0.0


def test_selection_probabilities():
    p = ga.selection_probabilities(jnp.array([jnp.inf, 1.0, 2.0]))
    np.testing.assert_allclose(p, [0.0, 2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(ga.selection_probabilities(jnp.array([0.0, 1.0, 0.0])),
                               [0.5, 0.0, 0.5])
    np.testing.assert_allclose(ga.selection_probabilities(jnp.full(4, jnp.inf)), 0.25)
    # Roulette never picks a zero-fitness (infinite-objective) individual.
    idx = ga.roulette(jax.random.key(0), jnp.array([jnp.inf, 1.0, jnp.inf, 3.0]), 2000)
    assert set(np.unique(np.asarray(idx))) <= {1, 3}
    assert 0.65 < np.mean(np.asarray(idx) == 1) < 0.85  # expected 3/4


def test_decode_and_infinite_gene():
    genes = jnp.array([[0.0, 1.0, 3.0, 1.0, 1.0, 1.0]])  # N = 3: bandwidth genes, CPU genes
    x = jnp.array([[True, True, False]])
    b, f = ga.decode(genes, x, system.SystemParams(n_users=3))
    np.testing.assert_allclose(b, [[0.0, 0.5e6, 0.0]])
    np.testing.assert_allclose(f, [[1.25e9, 1.25e9, 0.0]])
    # All offloaded genes zero: equal shares.
    b, _ = ga.decode(jnp.zeros((1, 6)), x, system.SystemParams(n_users=3))
    np.testing.assert_allclose(b, [[0.25e6, 0.25e6, 0.0]])
    # A user with data and zero bandwidth has an infinite objective (fitness 0).
    p3 = system.SystemParams(n_users=3)
    scn = system.Scenario(*(jnp.full((3,), v) for v in (1e3, 800.0, 0.1, 100.0, 1e8)))
    assert np.isinf(ga.evaluate(genes, x, scn, p3)[0])


def test_rate_schedule_and_defaults():
    assert ga.default_params(False).decay_interval == 25
    assert ga.default_params(True).decay_interval == 40
    assert ALGS[True].default_params().decay_interval == 40
    rates = [float(ga._decayed(0.2, 0.5, 25, jnp.int32(t))) for t in (0, 24, 25, 49, 50)]
    np.testing.assert_allclose(rates, [0.2, 0.2, 0.1, 0.1, 0.05], rtol=1e-6)
    assert ALGS[False].pop_size == 6 * N


@pytest.mark.parametrize("n", [1, 7])
def test_ga_ops_matches_jaxpr_count(n):
    counted = ga.evaluation_ops(n)
    ops = ga.ga_ops(n, pop_factor=6, n_iters=0)
    evals = 6 * n
    assert ops["evaluations"] == evals
    np.testing.assert_equal(ops["arith"], evals * counted["arith"])
    np.testing.assert_equal(ops["transcendental"], evals * counted["transcendental"])


def test_ga_ops_scaling():
    a = ga.ga_ops(30, n_iters=200)
    assert a["evaluations"] == 180 * 201
    assert ga.ga_ops(30, n_iters=200, joint=True)["total"] > a["total"]
    heavy = ga.ga_ops(30, n_iters=200, transcendental_cost=20, random_cost=10)
    assert heavy["total"] == a["arith"] + 20 * a["transcendental"] + 10 * a["random"]
    delay = float(accounting.inference_delay(a["total"], system.SystemParams()))
    assert delay == pytest.approx(a["total"] / 2.5e9, rel=1e-6)


def test_constructor_validation():
    with pytest.raises(ValueError):
        ga.GeneticAlgorithm(0)
    with pytest.raises(ValueError):
        ALGS[False].run(jax.random.key(0), scenario(0, params=system.SystemParams(n_users=4)),
                        jnp.ones(4, bool), P, ALGS[False].default_params())
