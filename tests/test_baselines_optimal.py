"""Tests of dynmec_jax.baselines.optimal / equal: the KKT optimum of the weighted delay.

An independent NumPy float64 solver (bisection on log nu with a per-user
bisection on log b, in the direct parametrisation a r'(b) / r(b)^2 = nu) is the
reference; hypothesis checks budgets, optimality against the equal share and
random feasible allocations, the KKT conditions, and finiteness of values and
gradients at the edges.  Shapes are kept fixed per test so jit compiles once.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynmec_jax import accounting, baselines, system
from dynmec_jax.baselines import optimal

P = system.SystemParams()
LN2 = math.log(2.0)
B, N = 4, 8   # shape of the property-test batches


# ---- scenarios -------------------------------------------------------------

def np_scenario(seed, batch=B, n=N, params=P, *, wide=False, p_zero_size=0.0,
                p_zero_work=0.0, p_offload=0.7, dtype=np.float32):
    """A batch of scenarios (NumPy, ``dtype``) and an offload mask.

    ``wide``: sizes and workloads log-uniform over 8 and 6 decades, deadlines
    up to 1 s, distances often at the 5 m / 500 m extremes.
    """
    rng = np.random.default_rng(seed)
    shape = (batch, n)
    if wide:
        size = 10.0 ** rng.uniform(-2, 6, shape)
        work = 10.0 ** rng.uniform(-1, 5, shape)
        deadline = rng.uniform(params.deadline_min, 1.0, shape)
        dist = np.where(rng.random(shape) < 0.5, rng.choice([5.0, 500.0], shape),
                        rng.uniform(5.0, 500.0, shape))
    else:
        size = rng.uniform(0, 2 * params.size_avg, shape)
        work = rng.uniform(0, 2 * params.workload_avg, shape)
        deadline = np.maximum(rng.uniform(0, params.deadline_max, shape), params.deadline_min)
        dist = rng.uniform(params.distance_min, params.distance_max, shape)
    size = np.where(rng.random(shape) < p_zero_size, 0.0, size)
    work = np.where(rng.random(shape) < p_zero_work, 0.0, work)
    f_loc = rng.uniform(params.f_local_min, params.f_local_max, shape)
    offload = rng.random(shape) < p_offload
    scn = system.Scenario(*(a.astype(dtype) for a in (size, work, deadline, dist, f_loc)))
    return scn, offload


# ---- NumPy float64 reference, written from Eq. 1, 2, 19 directly -------------

def ref_weights(s, c, d, p=P):
    d = np.maximum(d, p.deadline_min)
    return p.importance_scale * (c / p.workload_avg) * (s / p.size_avg) / d


def ref_snr_coeff(dist, p=P):
    """K = g0 (l0/l)^h p / sigma0 [Hz] (Eq. 1), plain float64."""
    return p.path_loss_const * (p.ref_distance / dist) ** p.path_loss_exp * p.tx_power / p.noise_psd


def _ref_log_g(x):
    """log(ln(1+x) - x/(1+x)); the x-power series below x = 1e-3."""
    xs = np.minimum(x, 1e-3)
    series = 0.5 + xs * (-2 / 3 + xs * (3 / 4 + xs * (-4 / 5 + xs * (5 / 6 + xs * (-6 / 7)))))
    xl = np.maximum(x, 1e-3)
    return np.where(x < 1e-3, np.log(series) + 2 * np.log(xs),
                    np.log(np.log1p(xl) - xl / (1 + xl)))


def ref_bandwidth(a, k, bmax, iters=56):
    """Bisection on log nu; for each nu, bisection on log b_i of a r'(b)/r(b)^2 = nu.

    r(b) = b log2(1 + K/b), r'(b) = (ln(1+x) - x/(1+x)) / ln 2 with x = K/b.
    ``a``, ``k``: (B, N), users with a = 0 get 0; ``bmax``: (B, 1).  56 halvings
    of [-300, 300] (outer) and of an 81-wide log-b bracket (inner) reach 1e-14.
    """
    active = a > 0
    la = np.log(np.where(active, a, 1.0))
    lk = np.log(k)
    lbmax = np.log(bmax)

    def log_gain(logb):                      # log(a r'/r^2), decreasing in b
        x = np.exp(lk - logb)
        return la + _ref_log_g(x) + np.log(LN2) - 2 * logb - 2 * np.log(np.log1p(x))

    def b_of(lognu):
        lo = lbmax - 80.0 + 0 * a
        hi = lbmax + 1.0 + 0 * a
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            big = log_gain(mid) > lognu
            lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
        return np.where(active, np.exp(0.5 * (lo + hi)), 0.0)

    lo = np.full(np.shape(bmax), -300.0)
    hi = np.full(np.shape(bmax), 300.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = b_of(mid).sum(-1, keepdims=True) > bmax
        lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    return b_of(0.5 * (lo + hi))


def ref_effective_weights(w, x):
    """The documented bandwidth weights: max(w, 1e-6 mean_offloaded(w)); 1 if all are 0."""
    mean = np.where(x, w, 0).sum(-1, keepdims=True) / np.maximum(x.sum(-1, keepdims=True), 1)
    return np.where(mean > 0, np.maximum(w, 1e-6 * mean), 1.0)


def ref_optimal(scn, x, p=P):
    s, c, d, dist = (np.asarray(a, np.float64) for a in (scn.size, scn.workload, scn.deadline,
                                                          scn.distance))
    w = ref_weights(s, c, d, p)
    q = np.sqrt(np.where(x, w * c * s, 0.0))
    tot = q.sum(-1, keepdims=True)
    f = float(p.f_server) * np.where(tot > 0, q / np.where(tot > 0, tot, 1), 0.0)
    a = np.where(x & (s > 0), ref_effective_weights(w, x) * s, 0.0)
    bmax = np.full(s.shape[:-1] + (1,), float(p.bandwidth_max))
    return ref_bandwidth(a, ref_snr_coeff(dist, p), bmax), f


def ref_gain(b, a, k):
    """a r'(b) / r(b)^2 (the marginal weighted-delay gain of bandwidth), float64."""
    x = k / b
    r = b * np.log1p(x) / LN2
    return a * np.exp(_ref_log_g(x)) / LN2 / r ** 2


opt_jit = jax.jit(baselines.optimal_allocation)
eq_jit = jax.jit(baselines.equal_allocation)
wd_jit = jax.jit(system.weighted_delay)


# ---- agreement with the reference ------------------------------------------

@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), wide=st.booleans(),
       bmax=st.sampled_from([0.5e6, 2e4, 1e9]), p_zero=st.sampled_from([0.0, 0.2]))
def test_matches_numpy_reference_float32(seed, wide, bmax, p_zero):
    params = P.replace(bandwidth_max=bmax)
    scn, x = np_scenario(seed, wide=wide, p_zero_size=p_zero, p_zero_work=p_zero)
    b, f = opt_jit(scn, x, params)
    assert b.dtype == jnp.float32
    b_ref, f_ref = ref_optimal(scn, x, params)
    np.testing.assert_allclose(np.asarray(b), b_ref, rtol=1e-4, atol=1e-9 * bmax)
    np.testing.assert_allclose(np.asarray(f), f_ref, rtol=1e-4, atol=1e-9 * P.f_server)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), wide=st.booleans(),
       bmax=st.sampled_from([0.5e6, 1e3, 1e9, 1e12]), p_zero=st.sampled_from([0.0, 0.2]))
def test_matches_numpy_reference_x64(seed, wide, bmax, p_zero):
    params = P.replace(bandwidth_max=bmax)
    scn, x = np_scenario(seed, wide=wide, p_zero_size=p_zero, p_zero_work=p_zero,
                         dtype=np.float64)
    with jax.enable_x64(True):
        b, f = opt_jit(scn, x, params)
        assert b.dtype == jnp.float64
        b, f = np.asarray(b), np.asarray(f)
    b_ref, f_ref = ref_optimal(scn, x, params)
    np.testing.assert_allclose(b, b_ref, rtol=1e-9, atol=1e-14 * bmax)
    np.testing.assert_allclose(f, f_ref, rtol=1e-12, atol=1e-14 * P.f_server)


def test_newton_iterations_converged_x64():
    """The default step count is at the fixed point of the iteration (float64)."""
    scn, x = np_scenario(7, batch=16, n=30, wide=True, p_zero_work=0.2, dtype=np.float64)
    with jax.enable_x64(True):
        b3, _ = baselines.optimal_allocation(scn, x, P)
        b9, _ = baselines.optimal_allocation(scn, x, P, newton_iters=9)
        np.testing.assert_allclose(np.asarray(b3), np.asarray(b9), rtol=1e-12, atol=0)


def test_eps_weight_only_touches_zero_weight_users():
    scn, x = np_scenario(8, p_offload=1.0)
    b6, _ = opt_jit(scn, x, P)
    b8, _ = opt_jit(scn, x, P, eps_weight=1e-8)
    np.testing.assert_allclose(b6, b8, rtol=1e-6)       # all weights above both floors
    work = np.array(scn.workload)
    work[:, :2] = 0.0
    scn0 = scn.replace(workload=work)
    b6, _ = opt_jit(scn0, x, P)
    b8, _ = opt_jit(scn0, x, P, eps_weight=1e-8)
    # b grows like sqrt(weight) at high SNR: 100x less weight, ~10x less bandwidth.
    ratio = np.asarray(b6)[:, :2] / np.asarray(b8)[:, :2]
    assert np.all((ratio > 8) & (ratio < 12))


# ---- properties (float32) --------------------------------------------------

scenario_args = dict(seed=st.integers(0, 2**31 - 1), wide=st.booleans(),
                     p_offload=st.sampled_from([0.3, 0.7, 1.0]))


@settings(max_examples=8, deadline=None)
@given(**scenario_args)
def test_budgets_and_beats_equal_and_random(seed, wide, p_offload):
    scn, x = np_scenario(seed, wide=wide, p_offload=p_offload)
    b, f = opt_jit(scn, x, P)
    b, f = np.asarray(b), np.asarray(f)
    # Budgets (Eq. 11h-11k); exactly 0 for users not offloaded.
    assert np.all(b >= 0) and np.all(f >= 0)
    assert np.all(b.sum(-1) <= P.bandwidth_max * (1 + 1e-5))
    assert np.all(f.sum(-1) <= P.f_server * (1 + 1e-5))
    assert np.all(b[~x] == 0) and np.all(f[~x] == 0)
    opt = np.asarray(wd_jit(scn, x, b, f, P))
    assert np.all(np.isfinite(opt))
    be, fe = eq_jit(scn, x, P)
    equal = np.asarray(wd_jit(scn, x, be, fe, P))
    assert np.all(opt <= equal * (1 + 1e-5))
    # 1,000 random feasible allocations: Dirichlet shares over the served users.
    rng = np.random.default_rng(seed)
    n_rand = 1000
    shares = rng.dirichlet(np.ones(N), size=(2, n_rand, B)) * x
    shares = shares / np.maximum(shares.sum(-1, keepdims=True), 1e-30)
    rep = jax.tree.map(lambda a: np.broadcast_to(a, (n_rand,) + a.shape), scn)
    rand = np.asarray(wd_jit(rep, np.broadcast_to(x, rep.size.shape),
                             (P.bandwidth_max * shares[0]).astype(np.float32),
                             (P.f_server * shares[1]).astype(np.float32), P))
    assert np.all(opt[None] <= rand * (1 + 1e-5))


@settings(max_examples=8, deadline=None)
@given(**scenario_args)
def test_kkt_conditions(seed, wide, p_offload):
    scn, x = np_scenario(seed, wide=wide, p_offload=p_offload)
    b, f = opt_jit(scn, x, P)
    b, f = np.asarray(b, np.float64), np.asarray(f, np.float64)
    s, c, d, dist = (np.asarray(a, np.float64) for a in (scn.size, scn.workload, scn.deadline,
                                                          scn.distance))
    w = ref_weights(s, c, d)
    a = ref_effective_weights(w, x) * s
    k = ref_snr_coeff(dist)
    for i in range(B):
        act = x[i] & (s[i] > 0)
        if act.sum() >= 2:
            gain = ref_gain(b[i, act], a[i, act], k[i, act])
            np.testing.assert_allclose(gain, np.mean(gain), rtol=1e-3)
        need = x[i] & (w[i] * c[i] * s[i] > 0)
        if need.sum() >= 2:
            ratio = (w * c * s)[i, need] / f[i, need] ** 2
            np.testing.assert_allclose(ratio, np.mean(ratio), rtol=1e-4)
        assert np.all(f[i, x[i] & ~need] == 0)
        assert np.all(b[i, x[i] & (s[i] == 0)] == 0)


@settings(max_examples=10, deadline=None)
@given(size=st.floats(1.0, 1e6), dist=st.floats(5.0, 500.0),
       lo=st.floats(-2.0, 6.0), span=st.floats(0.1, 2.0))
def test_more_bandwidth_is_never_slower(size, dist, lo, span):
    # b from 0.01 Hz to 100 MHz (up to ~1.4 K_i at 500 m): beyond that the rate
    # saturates at K/ln 2 and float32 can no longer resolve 64 grid steps.
    bw = jnp.asarray(np.logspace(lo, lo + span, 64), jnp.float32)
    t = np.asarray(system.transmission_delay(jnp.float32(size), bw, jnp.float32(dist), P))
    assert np.all(np.isfinite(t)) and np.all(t > 0)
    assert np.all(np.diff(t) <= 0)


# ---- edges: finite values and gradients -------------------------------------

def _edge_loss(fields, x, params, v):
    scn = system.Scenario(**fields)
    b, f = baselines.optimal_allocation(scn, x, params)
    wd = system.weighted_delay(scn, x, b, f, params)
    return (jnp.sum(v[0] * b / params.bandwidth_max) + jnp.sum(v[1] * f / params.f_server)
            + jnp.sum(wd) * 1e-3)


_edge_grad = jax.jit(jax.value_and_grad(_edge_loss, argnums=(0, 2)))


def _edge_cases():
    cases = {}
    scn, _ = np_scenario(11, batch=2, n=6)
    base = {k: np.array(getattr(scn, k)) for k in ("size", "workload", "deadline", "distance",
                                                    "f_local")}
    all_x = np.ones((2, 6), bool)

    def case(name, x=all_x, **changes):
        fields = {k: v.copy() for k, v in base.items()}
        for k, (idx, val) in changes.items():
            fields[k][idx] = val
        cases[name] = (fields, x)

    case("size0", size=((slice(None), [0, 3]), 0.0))
    case("all_size0", size=((slice(None), slice(None)), 0.0))
    case("workload0", workload=((slice(None), [1, 2]), 0.0))
    case("all_workload0", workload=((slice(None), slice(None)), 0.0))
    case("deadline_min", deadline=((slice(None), slice(None)), P.deadline_min))
    case("distance_5m", distance=((slice(None), slice(None)), 5.0))
    case("distance_500m", distance=((slice(None), slice(None)), 500.0))
    case("distance_mixed", distance=((slice(None), [0, 1, 2]), 5.0))
    one = np.zeros((2, 6), bool)
    one[:, 2] = True
    case("one_offloaded", x=one)
    case("none_offloaded", x=np.zeros((2, 6), bool))
    for n in (1, 500):
        scn, _ = np_scenario(12, batch=2, n=n)
        cases[f"N={n}"] = ({k: np.array(getattr(scn, k)) for k in base}, np.ones((2, n), bool))
    return cases


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edges_finite_values_and_gradients(name):
    fields, x = EDGE_CASES[name]
    v = jax.random.normal(jax.random.PRNGKey(0), (2,) + x.shape)
    b, f = baselines.optimal_allocation(system.Scenario(**fields), x, P)
    chex.assert_tree_all_finite((b, f))
    assert np.all(np.asarray(b)[~x] == 0) and np.all(np.asarray(f)[~x] == 0)
    assert np.all(np.asarray(b).sum(-1) <= P.bandwidth_max * (1 + 1e-5))
    loss, (g_scn, g_par) = _edge_grad(fields, x, P, v)
    chex.assert_tree_all_finite((loss, g_scn, g_par.bandwidth_max, g_par.f_server))
    if name == "none_offloaded":
        assert np.all(np.asarray(b) == 0) and np.all(np.asarray(f) == 0)
    if name == "one_offloaded":
        np.testing.assert_allclose(np.asarray(b)[:, 2], P.bandwidth_max, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(f)[:, 2], P.f_server, rtol=1e-6)
    if name == "all_size0":
        assert np.all(np.asarray(b) == 0) and np.all(np.asarray(f) == 0)
    if name == "workload0":
        # workload 0 needs no CPU but still sends data: small positive bandwidth.
        assert np.all(np.asarray(f)[:, [1, 2]] == 0)
        assert np.all(np.asarray(b)[:, [1, 2]] > 0)


def test_gradients_match_finite_differences_x64():
    """The implicit gradient equals central differences of the solution (float64)."""
    scn, x = np_scenario(5, batch=1, n=6, p_offload=0.8, dtype=np.float64)
    fields = {k: np.asarray(getattr(scn, k))[0] for k in ("size", "workload", "deadline",
                                                            "distance", "f_local")}
    x = x[0]
    v = np.random.default_rng(0).normal(size=(2, 6))
    with jax.enable_x64(True):
        def loss(flds, bmax):
            b, f = baselines.optimal_allocation(system.Scenario(**flds), x,
                                                P.replace(bandwidth_max=bmax))
            return jnp.sum(v[0] * b) / 5e5 + jnp.sum(v[1] * f) / P.f_server

        g, g_bmax = jax.grad(loss, argnums=(0, 1))(fields, 5e5)
        for key in ("size", "workload", "deadline", "distance"):
            for j in np.flatnonzero(x)[:3]:
                h = 1e-6 * fields[key][j]
                up = {k: a.copy() for k, a in fields.items()}
                dn = {k: a.copy() for k, a in fields.items()}
                up[key][j] += h
                dn[key][j] -= h
                fd = (loss(up, 5e5) - loss(dn, 5e5)) / (2 * h)
                np.testing.assert_allclose(g[key][j], fd, rtol=1e-5, atol=1e-12)
        fd = (loss(fields, 5e5 * (1 + 1e-6)) - loss(fields, 5e5 * (1 - 1e-6))) / (1e-6 * 5e5 * 2)
        np.testing.assert_allclose(g_bmax, fd, rtol=1e-5, atol=1e-18)


# ---- shapes, jit / no-jit, vmap over params -----------------------------------

class OptimalVariantsTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes_budgets_and_single_scenario(self):
        scn, x = np_scenario(3, batch=3, n=5)
        alloc = self.variant(baselines.optimal_allocation)
        b, f = alloc(scn, x, P)
        chex.assert_shape((b, f), (3, 5))
        chex.assert_tree_all_finite((b, f))
        # A single scenario (N,) gives the same as its row of the batch, and a leading shape
        # (2, 3, N) with a broadcast offload mask the same as (3, N): checked in float64,
        # where the shapes' different vectorisation cannot hide a broadcasting error in
        # float32 rounding (the suite compiles unoptimised, tests/conftest.py).
        with jax.enable_x64(True):
            scn64 = jax.tree.map(lambda a: np.asarray(a, np.float64), scn)
            b, f = alloc(scn64, x, P)
            one = jax.tree.map(lambda a: a[1], scn64)
            b1, f1 = alloc(one, x[1], P)
            chex.assert_shape((b1, f1), (5,))
            np.testing.assert_allclose(b1, b[1], rtol=1e-12)
            np.testing.assert_allclose(f1, f[1], rtol=1e-12)
            two = jax.tree.map(lambda a: np.stack([a, a]), scn64)
            b2, f2 = alloc(two, x, P)
            chex.assert_shape((b2, f2), (2, 3, 5))
            np.testing.assert_allclose(b2[1], b, rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_equal_allocation(self):
        scn, x = np_scenario(4, batch=3, n=5)
        x[0] = False
        b, f = self.variant(baselines.equal_allocation)(scn, x, P)
        chex.assert_shape((b, f), (3, 5))
        n = x.sum(-1, keepdims=True)
        np.testing.assert_allclose(b, np.where(x, P.bandwidth_max / np.maximum(n, 1), 0), rtol=1e-6)
        np.testing.assert_allclose(f, np.where(x, P.f_server / np.maximum(n, 1), 0), rtol=1e-6)


def test_vmap_over_stacked_params_equals_separate_calls():
    scn, x = np_scenario(9)
    p1, p2 = P.replace(bandwidth_max=0.5e6), P.replace(bandwidth_max=2e6, f_server=1e9)
    stacked = jax.tree.map(lambda a, b: jnp.stack([jnp.asarray(a, jnp.float32),
                                                   jnp.asarray(b, jnp.float32)]), p1, p2)
    bv, fv = jax.jit(jax.vmap(baselines.optimal_allocation, in_axes=(None, None, 0)))(
        scn, x, stacked)
    for i, p in enumerate((p1, p2)):
        b, f = opt_jit(scn, x, p)
        np.testing.assert_allclose(bv[i], b, rtol=1e-5)
        np.testing.assert_allclose(fv[i], f, rtol=1e-5)


# ---- operation count ----------------------------------------------------------

def test_ops_count_is_linear_and_positive():
    ops = [baselines.optimal_allocation_ops(n) for n in (1, 2, 3, 10)]
    assert baselines.optimal_allocation_ops(0) == 0
    per_user = ops[1] - ops[0]
    assert per_user > 0 and ops[0] > per_user
    assert ops[2] - ops[1] == per_user and ops[3] - ops[0] == 9 * per_user
    # Each Newton step costs ops; special functions cost more when weighted more.
    assert baselines.optimal_allocation_ops(10, newton_iters=6) > ops[3]
    assert baselines.optimal_allocation_ops(10, special_cost=15) > ops[3]
    delay = accounting.inference_delay(baselines.optimal_allocation_ops(30), P)
    assert np.isfinite(delay) and delay > 0
    with pytest.raises(ValueError):
        baselines.optimal_allocation_ops(-1)


def test_ops_counter_rejects_unknown_primitives():
    jaxpr = jax.make_jaxpr(lambda a: jnp.sort(a))(jnp.ones(3))
    with pytest.raises(NotImplementedError):
        optimal.count_jaxpr_ops(jaxpr)
    jaxpr = jax.make_jaxpr(lambda a: jnp.sum(a * a + 1.0) / 2.0)(jnp.ones(4))
    assert optimal.count_jaxpr_ops(jaxpr) == 4 + 4 + 4 + 1
    assert optimal.count_jaxpr_ops(jaxpr, special_cost=10) == 4 + 4 + 4 + 10

