"""Tests of dynmec_jax.system: each equation against a NumPy float64 reference."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from dynmec_jax import system

P = system.SystemParams()


def np_scenario(seed, n=7, batch=3, params=P):
    rng = np.random.default_rng(seed)
    shape = (batch, n)
    return dict(
        size=rng.uniform(0, 2 * params.size_avg, shape),
        workload=rng.uniform(0, 2 * params.workload_avg, shape),
        deadline=np.maximum(rng.uniform(0, params.deadline_max, shape), params.deadline_min),
        distance=rng.uniform(params.distance_min, params.distance_max, shape),
        f_local=rng.uniform(params.f_local_min, params.f_local_max, shape),
    )


# ---- NumPy float64 references, written from the paper's equations directly ----

def ref_transmission_delay(s, b, dist, p=P):
    snr = (p.path_loss_const * (p.ref_distance / dist) ** p.path_loss_exp * p.tx_power
           / (b * p.noise_psd))
    return s / (b * np.log2(1 + snr))                                    # Eq. 1


def ref_edge_compute_delay(c, s, f):
    return c * s / f                                                      # Eq. 2


def ref_local_delay(c, s, f_loc):
    return c * s / f_loc                                                  # Eq. 4


def ref_edge_energy(t_tra, p=P):
    return p.tx_power * t_tra                                             # Eq. 5


def ref_local_energy(c, s, f_loc, p=P):
    return p.energy_coeff * c * s * f_loc ** 2                            # Eq. 6


def ref_importance(s, c, d, p=P):
    # Eq. 19
    return (p.importance_scale * (c / p.workload_avg) * (s / p.size_avg)
            / np.maximum(d, p.deadline_min))


def random_alloc(seed, shape, p=P):
    rng = np.random.default_rng(seed)
    b = rng.dirichlet(np.ones(shape[-1]), shape[:-1]) * p.bandwidth_max
    f = rng.dirichlet(np.ones(shape[-1]), shape[:-1]) * p.f_server
    return b, f


def to_scn(d, dtype):
    return system.Scenario(**{k: jnp.asarray(v, dtype) for k, v in d.items()})


@pytest.fixture(params=["float32", "float64"])
def precision(request):
    """Runs a test in float32 (rtol 1e-4) and under jax_enable_x64 (rtol 1e-5)."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield jnp.float64, 1e-5
    else:
        yield jnp.float32, 1e-4


def test_equations_match_numpy_reference(precision):
    dtype, rtol = precision
    d = np_scenario(0)
    b, f = random_alloc(1, d["size"].shape)
    scn = to_scn(d, dtype)
    bj, fj = jnp.asarray(b, dtype), jnp.asarray(f, dtype)
    t_tra = system.transmission_delay(scn.size, bj, scn.distance, P)
    assert t_tra.dtype == dtype
    ref_tra = ref_transmission_delay(d["size"], b, d["distance"])
    np.testing.assert_allclose(t_tra, ref_tra, rtol=rtol)
    np.testing.assert_allclose(system.edge_compute_delay(scn.workload, scn.size, fj),
                               ref_edge_compute_delay(d["workload"], d["size"], f), rtol=rtol)
    np.testing.assert_allclose(
        system.edge_delay(scn.size, scn.workload, scn.distance, bj, fj, P),
        ref_tra + ref_edge_compute_delay(d["workload"], d["size"], f), rtol=rtol)   # Eq. 3
    np.testing.assert_allclose(system.local_delay(scn.workload, scn.size, scn.f_local),
                               ref_local_delay(d["workload"], d["size"], d["f_local"]), rtol=rtol)
    np.testing.assert_allclose(system.edge_energy(t_tra, P), ref_edge_energy(ref_tra), rtol=rtol)
    np.testing.assert_allclose(
        system.local_energy(scn.workload, scn.size, scn.f_local, P),
        ref_local_energy(d["workload"], d["size"], d["f_local"]), rtol=rtol)
    np.testing.assert_allclose(
        system.importance_weights(scn.size, scn.workload, scn.deadline, P),
        ref_importance(d["size"], d["workload"], d["deadline"]), rtol=rtol)


def test_outcomes_costs_and_objective_match_reference(precision):
    dtype, rtol = precision
    d = np_scenario(2)
    rng = np.random.default_rng(3)
    x = rng.random(d["size"].shape) < 0.6
    b, f = random_alloc(4, d["size"].shape)
    b, f = np.where(x, b, 0.0), np.where(x, f, 0.0)
    t_e, t_l = 1.3e-3, 2e-5
    scn = to_scn(d, dtype)
    out = system.task_outcomes(scn, x, jnp.asarray(b, dtype), jnp.asarray(f, dtype), P,
                               infer_edge=t_e, infer_local=t_l)
    with np.errstate(divide="ignore", invalid="ignore"):
        tra = ref_transmission_delay(d["size"], b, d["distance"])
        com = ref_edge_compute_delay(d["workload"], d["size"], f)
    loc = ref_local_delay(d["workload"], d["size"], d["f_local"])
    delay = np.where(x, t_e + tra + com, t_l + loc)
    energy = np.where(x, ref_edge_energy(tra),
                      ref_local_energy(d["workload"], d["size"], d["f_local"]))
    np.testing.assert_allclose(out.delay, delay, rtol=rtol)
    np.testing.assert_allclose(out.energy, energy, rtol=rtol)
    np.testing.assert_array_equal(out.miss, (delay > d["deadline"]).astype(float))
    obj = (P.alpha * delay + P.beta * energy + P.delta * (delay > d["deadline"])).sum(-1)
    np.testing.assert_allclose(system.objective(out, P), obj, rtol=rtol)               # Eq. 11a
    w = ref_importance(d["size"], d["workload"], d["deadline"])
    np.testing.assert_allclose(
        system.cost_local(scn, P, infer_local=t_l),
        P.alpha * w * (t_l + loc)
        + P.beta * ref_local_energy(d["workload"], d["size"], d["f_local"]),
        rtol=rtol)                                                                      # Eq. 24
    bf, ff = random_alloc(5, d["size"].shape)
    tra_all = ref_transmission_delay(d["size"], bf, d["distance"])
    np.testing.assert_allclose(
        system.cost_edge(scn, jnp.asarray(bf, dtype), jnp.asarray(ff, dtype), P, infer_edge=t_e),
        P.alpha * w * (t_e + tra_all + ref_edge_compute_delay(d["workload"], d["size"], ff))
        + P.beta * ref_edge_energy(tra_all), rtol=rtol)                                 # Eq. 25
    wd = np.where(x, w * (tra + com), 0.0).sum(-1)
    np.testing.assert_allclose(
        system.weighted_delay(scn, x, jnp.asarray(b, dtype), jnp.asarray(f, dtype), P), wd,
        rtol=rtol)


class VariantsTest(chex.TestCase):
    """The equations give the same numbers with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 30)
    def test_jit_and_eager_agree(self, n):
        d = np_scenario(6, n=n)
        b, f = random_alloc(7, d["size"].shape)
        scn = to_scn(d, jnp.float32)

        @self.variant
        def fn(scn, b, f):
            out = system.task_outcomes(scn, jnp.ones(scn.shape, bool), b, f, P)
            return out.delay, system.weighted_delay(scn, jnp.ones(scn.shape, bool), b, f, P)

        delay, wd = fn(scn, jnp.asarray(b, jnp.float32), jnp.asarray(f, jnp.float32))
        chex.assert_shape(delay, (3, n))
        chex.assert_shape(wd, (3,))
        chex.assert_tree_all_finite((delay, wd))
        tra = ref_transmission_delay(d["size"], b, d["distance"])
        np.testing.assert_allclose(delay, tra + d["workload"] * d["size"] / f, rtol=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    size=st.floats(1.0, 1e6), distance=st.floats(5.0, 500.0),
    b1=st.floats(1.0, 5e5), ratio=st.floats(1.0 + 1e-3, 100.0))
def test_more_bandwidth_is_never_slower(size, distance, b1, ratio):
    t1 = system.transmission_delay(jnp.float32(size), jnp.float32(b1), jnp.float32(distance), P)
    t2 = system.transmission_delay(jnp.float32(size), jnp.float32(b1 * ratio),
                                   jnp.float32(distance), P)
    assert float(t2) <= float(t1) * (1 + 1e-6)


def _edge_scenario(n):
    base = np_scenario(8, n=n, batch=1)
    if n >= 4:
        base["size"][0, 0] = 0.0                  # size 0
        base["workload"][0, 1] = 0.0              # workload 0
        base["deadline"][0, 2] = P.deadline_min   # deadline = d_min
        base["distance"][0, 3] = 5.0
    base["distance"][0, -1] = 500.0
    return to_scn(base, jnp.float32)


@pytest.mark.parametrize("n", [1, 4, 30, 500])
@pytest.mark.parametrize("n_offloaded", ["none", "one", "all"])
def test_no_nan_or_inf_at_edges(n, n_offloaded):
    scn = _edge_scenario(n)
    x = jnp.zeros(scn.shape, bool)
    if n_offloaded == "one":
        x = x.at[0, -1].set(True)
    elif n_offloaded == "all":
        x = jnp.ones(scn.shape, bool)
    served = jnp.maximum(x.sum(-1, keepdims=True), 1)
    b0 = jnp.where(x, P.bandwidth_max / served, 0.0)
    f0 = jnp.where(x, P.f_server / served, 0.0)

    def loss(b, f, scn):
        out = system.task_outcomes(scn, x, b, f, P, infer_edge=1e-3, infer_local=1e-5)
        return (system.objective(out, P).sum() + system.weighted_delay(scn, x, b, f, P).sum()
                + system.cost_local(scn, P).sum())

    val, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(b0, f0, scn)
    chex.assert_tree_all_finite((val, grads))


def test_zero_allocation_to_served_task_is_infinite_not_nan():
    t = system.transmission_delay(jnp.float32(100.0), jnp.float32(0.0), jnp.float32(50.0), P)
    assert np.isinf(t)
    assert system.transmission_delay(jnp.float32(0.0), jnp.float32(0.0), jnp.float32(50.0), P) == 0
    assert system.edge_compute_delay(jnp.float32(0.0), jnp.float32(10.0), jnp.float32(0.0)) == 0


def test_sample_scenarios_shapes_and_ranges():
    scn = system.sample_scenarios(jax.random.PRNGKey(0), P, batch=512)
    chex.assert_shape([scn.size, scn.workload, scn.deadline, scn.distance, scn.f_local], (512, 30))
    assert scn.features().shape == (512, 30, 5)
    assert float(scn.size.min()) >= 0 and float(scn.size.max()) <= 2 * P.size_avg
    assert abs(float(scn.size.mean()) / P.size_avg - 1) < 0.02
    assert abs(float(scn.workload.mean()) / P.workload_avg - 1) < 0.02
    assert float(scn.deadline.min()) >= P.deadline_min
    assert float(scn.deadline.max()) <= P.deadline_max
    assert float(scn.distance.min()) >= 5 and float(scn.distance.max()) <= 500
    assert float(scn.f_local.min()) >= 0.01e9 and float(scn.f_local.max()) <= 0.15e9
    again = system.sample_scenarios(jax.random.PRNGKey(0), P, batch=512)
    np.testing.assert_array_equal(scn.size, again.size)


def test_vmap_over_stacked_params_is_a_sweep():
    ps = [dataclasses.replace(P, size_avg=v, bandwidth_max=bw)
          for v, bw in [(500.0, 0.5e6), (2000.0, 1e6)]]
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *ps)
    key = jax.random.PRNGKey(3)

    def f(p):
        scn = system.sample_scenarios(key, p, 8)
        n = p.n_users
        b = jnp.full(scn.shape, p.bandwidth_max / n)
        fa = jnp.full(scn.shape, p.f_server / n)
        return system.weighted_delay(scn, jnp.ones(scn.shape, bool), b, fa, p)

    swept = jax.vmap(f)(stacked)
    for i, p in enumerate(ps):
        np.testing.assert_allclose(swept[i], f(p), rtol=1e-5)


def test_snr_coefficient_value():
    # K = g0 (l0/l)^h p / sigma0 at l = 100 m, computed by hand in float64.
    k = 1e-4 * (1 / 100) ** 2.8 * 0.1 / 10 ** -20.4
    coeff = float(jnp.exp(system.log_snr_coeff(jnp.float32(100.0), P)))
    assert math.isclose(coeff, k, rel_tol=1e-5)


# ---- validate: one error per field ----

_BAD = [(name, 0.0) for name in system._POSITIVE] + [(name, -1.0) for name in system._POSITIVE] \
    + [(name, -0.5) for name in system._NON_NEGATIVE] \
    + [(name, float("nan")) for name in system._POSITIVE + system._NON_NEGATIVE]


@pytest.mark.parametrize("field,value", _BAD)
def test_validate_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        system.validate(dataclasses.replace(P, **{field: value}))


@pytest.mark.parametrize("lo,hi", system._ORDERED)
def test_validate_min_above_max(lo, hi):
    bad = dataclasses.replace(P, **{lo: getattr(P, hi) * 2})
    with pytest.raises(ValueError, match=lo):
        system.validate(bad)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_validate_n_users(n):
    with pytest.raises(ValueError, match="n_users"):
        system.validate(dataclasses.replace(P, n_users=n))


def test_validate_accepts_defaults_and_sweeps():
    assert system.validate(P) is P
    swept = dataclasses.replace(P, f_server=np.array([1e9, 2.5e9, 5e9]))
    system.validate(swept)
    with pytest.raises(ValueError, match="f_server"):
        system.validate(dataclasses.replace(P, f_server=np.array([1e9, 0.0])))
