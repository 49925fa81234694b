"""Tests of dynmec_jax.nets.moe and the allocation path of dynmec_jax.allocator (Eq. 12-20, 32)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import accounting, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.nets import features, moe
from dynmec_jax.train.allocator import layer_rows

K, L, H, N, B = 4, 3, 8, 5, 3
SYS = system.SystemParams(n_users=N)
SCALES = features.FeatureScales.from_params(SYS)
MODEL = moe.MoEAllocator(n_experts=K, n_layers=L, hidden=H, zero_gate_init=False)
ZERO_GATE_MODEL = moe.MoEAllocator(n_experts=K, n_layers=L, hidden=H)
PAIRS = [(k, d) for k in range(1, K + 1) for d in range(1, L + 1)]


@functools.cache
def _params(model=MODEL, seed=0):
    return allocator_lib.init_params(jax.random.key(seed), model)


def _scenario(seed=1, batch=B, n=N, params=SYS):
    return system.sample_scenarios(jax.random.key(seed), params.replace(n_users=n), batch)


def _mask(seed=2, shape=(B, N)):
    m = np.array(jax.random.bernoulli(jax.random.key(seed), 0.7, shape))
    m[..., 0] = True  # at least one offloaded user per scenario
    return jnp.asarray(m)


def _allocator(model, params, sys_params=SYS, scales=None):
    """An Allocator around a bare network (default scales from ``sys_params``)."""
    scales = features.FeatureScales.from_params(sys_params) if scales is None else scales
    return allocator_lib.Allocator(params, scales, sys_params, model)


def allocate(model, params, scn, mask, width, depth, sys_params, scales=None, noise_key=None):
    return allocator_lib.allocate(_allocator(model, params, sys_params, scales), scn, mask,
                                  width, depth, sys_params, noise_key)


def allocate_all(model, params, scn, mask, sys_params, scales=None, noise_key=None):
    return allocator_lib.allocate_all(_allocator(model, params, sys_params, scales), scn, mask,
                                      sys_params, noise_key)


@functools.cache
def _jit_allocate(model):
    return jax.jit(functools.partial(allocate, model))


@functools.cache
def _jit_allocate_all(model):
    return jax.jit(functools.partial(allocate_all, model))


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------
# NumPy reference: inactive experts and layers physically removed.
# ---------------------------------------------------------------------------

def _leaky(x, slope=0.01):
    return np.where(x >= 0, x, slope * x)


def _reference(params, scn, mask, width, depth, sys_params):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    z = np.asarray(features.normalize_features(scn, SCALES), np.float64)
    lead = z.shape[:-1]
    zf = z.reshape(-1, z.shape[-1])
    logits = np.zeros((zf.shape[0], 2))
    for m, x in enumerate(zf):
        gate_logits = x @ p["w_gate"]
        chosen = np.argsort(-gate_logits, kind="stable")[:width]
        g = np.exp(gate_logits[chosen] - gate_logits[chosen].max())
        g /= g.sum()
        y = np.zeros(H)
        for gk, k in zip(g, chosen, strict=True):
            # expert k truncated to its first `depth` layers: a plain MLP.
            h = _leaky(x @ p["w_in"][k] + p["b_in"][k])
            for i in range(depth - 1):
                h = _leaky(h @ p["w_hidden"][i, k] + p["b_hidden"][i, k])
            y += gk * h
        logits[m] = y @ p["w_heads"] + p["b_heads"]
    logits = logits.reshape(lead + (2,))
    mask = np.asarray(mask, bool)

    def share(a):
        e = np.where(mask, np.exp(np.where(mask, a - a.max(-1, keepdims=True), 0.0)), 0.0)
        s = e.sum(-1, keepdims=True)
        return e / np.where(s > 0, s, 1.0)

    return (sys_params.bandwidth_max * share(logits[..., 0]),
            sys_params.f_server * share(logits[..., 1]))


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_experts,n_layers,hidden", [(10, 3, 64), (K, L, H), (3, 1, 16)])
def test_parameter_counts_match_accounting(n_experts, n_layers, hidden):
    model = moe.MoEAllocator(n_experts=n_experts, n_layers=n_layers, hidden=hidden)
    params = jax.eval_shape(lambda k: allocator_lib.init_params(k, model),
                            jax.random.key(0))["params"]
    dynamic = _count([params[k] for k in ("w_in", "b_in", "w_hidden", "b_hidden")])
    fixed = _count([params[k] for k in ("w_gate", "w_noise", "w_heads", "b_heads")])
    expected = accounting.allocation_model_params(
        n_experts, n_layers, n_experts=n_experts, n_layers=n_layers, hidden=hidden)
    assert dynamic == expected["dynamic"]
    assert fixed == expected["fixed"]
    assert _count(params) == dynamic + fixed
    if (n_experts, n_layers, hidden) == (10, 3, 64):
        assert (dynamic, fixed) == (87_040, 230)


# ---------------------------------------------------------------------------
# Correctness of the masked sub-networks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("width,depth", [(1, 1), (1, 3), (2, 2), (3, 1), (4, 3), (4, 2)])
def test_masked_subnetwork_matches_physically_removed_reference(width, depth):
    params, scn, mask = _params(), _scenario(), _mask()
    bw, fa = _jit_allocate(MODEL)(params, scn, mask, width, depth, SYS, SCALES)
    ref_bw, ref_fa = _reference(params, scn, mask, width, depth, SYS)
    np.testing.assert_allclose(bw, ref_bw, rtol=2e-5, atol=1e-6 * SYS.bandwidth_max)
    np.testing.assert_allclose(fa, ref_fa, rtol=2e-5, atol=1e-6 * SYS.f_server)


def test_gate_has_exactly_width_nonzeros_summing_to_one():
    z = features.normalize_features(_scenario(batch=4), SCALES)
    for model in (MODEL, ZERO_GATE_MODEL):  # random logits, and all-equal logits (ties)
        params = _params(model)
        for width in range(1, K + 1):
            g = np.asarray(model.apply(params, z, width, method=moe.MoEAllocator.gates))
            assert g.shape == z.shape[:-1] + (K,)
            np.testing.assert_array_equal(np.count_nonzero(g, axis=-1), width)
            np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-6)
            assert np.all(g >= 0)
    # Per-scenario widths.
    widths = jnp.array([1, 2, 3, 4])
    g = np.asarray(MODEL.apply(_params(), z, widths[:, None], method=moe.MoEAllocator.gates))
    np.testing.assert_array_equal(np.count_nonzero(g, axis=-1),
                                  np.broadcast_to(widths[:, None], g.shape[:-1]))


def test_gate_count_exact_for_widely_spread_logits():
    logits = jnp.array([[0.0, -200.0, -1000.0, 5.0]])
    for width in range(1, 5):
        g = moe.gates_from_logits(logits, moe.expert_ranks(logits), width)
        assert int(np.count_nonzero(g)) == width
        np.testing.assert_allclose(g.sum(), 1.0, rtol=1e-6)


def test_expert_ranks_match_top_k_including_ties():
    logits = jnp.array([[0.3, -1.0, 2.0, 0.3], [0.0, 0.0, 0.0, 0.0], [1.0, 5.0, 1.0, 5.0]])
    ranks = moe.expert_ranks(logits)
    _, idx = jax.lax.top_k(logits, 4)
    np.testing.assert_array_equal(np.argsort(ranks, axis=-1), idx)
    np.testing.assert_array_equal(moe._gate_order(ranks), idx)
    np.testing.assert_array_equal(ranks[1], [0, 1, 2, 3])  # ties: lower index first


def test_allocation_sums_to_capacity_and_is_zero_elsewhere():
    params, scn, mask = _params(), _scenario(), _mask()
    for width, depth in [(1, 1), (3, 2), (4, 3)]:
        bw, fa = _jit_allocate(MODEL)(params, scn, mask, width, depth, SYS, SCALES)
        assert np.all(np.asarray(bw)[~np.asarray(mask)] == 0.0)
        assert np.all(np.asarray(fa)[~np.asarray(mask)] == 0.0)
        assert np.all(np.asarray(bw)[np.asarray(mask)] > 0.0)
        np.testing.assert_allclose(bw.sum(-1), SYS.bandwidth_max, rtol=1e-5)
        np.testing.assert_allclose(fa.sum(-1), SYS.f_server, rtol=1e-5)
    # No user offloaded: all zeros.
    none = jnp.zeros((B, N), bool)
    bw, fa = _jit_allocate(MODEL)(params, scn, none, 2, 2, SYS, SCALES)
    assert np.all(np.asarray(bw) == 0.0) and np.all(np.asarray(fa) == 0.0)


def test_user_permutation_permutes_allocation():
    params, scn, mask = _params(), _scenario(), _mask()
    perm = np.array([3, 0, 4, 1, 2])
    scn_p = jax.tree.map(lambda a: a[:, perm], scn)
    for width, depth in [(2, 3), (4, 1)]:
        bw, fa = _jit_allocate(MODEL)(params, scn, mask, width, depth, SYS, SCALES)
        bw_p, fa_p = _jit_allocate(MODEL)(params, scn_p, mask[:, perm], width, depth, SYS, SCALES)
        np.testing.assert_allclose(bw_p, bw[:, perm], rtol=1e-5)
        np.testing.assert_allclose(fa_p, fa[:, perm], rtol=1e-5)


def test_per_scenario_width_and_depth():
    params, scn, mask = _params(), _scenario(), _mask()
    widths, depths = jnp.array([1, 4, 2]), jnp.array([3, 1, 2])
    bw, fa = _jit_allocate(MODEL)(params, scn, mask, widths, depths, SYS, SCALES)
    bw2, _ = _jit_allocate(MODEL)(params, scn, mask, widths[:, None], depths[:, None], SYS, SCALES)
    np.testing.assert_array_equal(bw, bw2)
    for b in range(B):
        one, one_f = _jit_allocate(MODEL)(params, scn, mask, int(widths[b]), int(depths[b]),
                                          SYS, SCALES)
        np.testing.assert_allclose(bw[b], one[b], rtol=1e-6)
        np.testing.assert_allclose(fa[b], one_f[b], rtol=1e-6)


def test_layer_rows_compute_only_the_used_layers_with_the_same_values():
    """Users sorted deepest first and each hidden layer run on its prefix only give the
    masked pass's logits and gates, and their gradients."""
    params = _params()
    z = jax.random.normal(jax.random.key(3), (6, N, 5))
    depth = jnp.repeat(jnp.array([3, 3, 2, 2, 2, 1]), N).reshape(6, N)
    width = jnp.array([1, 4, 2, 3, 4, 1])[:, None] * jnp.ones((1, N), jnp.int32)
    rows = layer_rows((1, 3, 2), N)
    assert rows == (5 * N, 2 * N)

    def loss(p, rows):
        logits, gates = MODEL.apply(p, z, width, depth, None, None, rows)
        return jnp.sum(jnp.sin(logits)) + jnp.sum(gates ** 2), (logits, gates)

    (_, masked), g_masked = jax.value_and_grad(loss, has_aux=True)(params, None)
    (_, sliced), g_sliced = jax.value_and_grad(loss, has_aux=True)(params, rows)
    chex.assert_trees_all_close(sliced, masked, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(g_sliced, g_masked, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layer_rows"):
        MODEL.apply(params, z, width, depth, None, None, (N,))


def test_capacity_dispatch_equals_the_masked_pass_and_drops_only_beyond_capacity():
    """Capacity dispatch computes only the picked experts: with every depth group's
    capacity at its size, the masked pass's logits and gradients; with less, only the
    users that lost an expert change, and dropped_pairs counts those pairs."""
    params = _params()
    z = jax.random.normal(jax.random.key(4), (6, N, 5))
    depth = jnp.repeat(jnp.array([3, 3, 2, 2, 2, 1]), N).reshape(6, N)
    width = jnp.array([1, 4, 2, 3, 4, 1])[:, None] * jnp.ones((1, N), jnp.int32)
    eps = jax.random.normal(jax.random.key(5), (6, N, MODEL.n_experts))
    rows = layer_rows((1, 3, 2), N)
    assert moe.depth_groups(6 * N, rows) == [(0, 2 * N, 3), (2 * N, 5 * N, 2), (5 * N, 6 * N, 1)]
    full = (N, 3 * N, 2 * N)                    # users of depth 1, 2, 3

    def loss(p, cap):
        logits, gates = MODEL.apply(p, z, width, depth, None, eps, rows, cap)
        return jnp.sum(jnp.sin(logits)) + jnp.sum(gates ** 2), (logits, gates)

    (_, masked), g_masked = jax.value_and_grad(loss, has_aux=True)(params, None)
    (_, disp), g_disp = jax.value_and_grad(loss, has_aux=True)(params, full)
    chex.assert_trees_all_close(disp, masked, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(g_disp, g_masked, rtol=1e-5, atol=1e-6)
    gates = masked[1].reshape(-1, MODEL.n_experts)
    assert float(moe.dropped_pairs(gates, rows, full)) == 0.0
    small = (2, 5, 3)
    (_, cut), _ = jax.value_and_grad(loss, has_aux=True)(params, small)
    share = float(moe.dropped_pairs(gates, rows, small))
    sel = np.asarray(gates > 0)
    assert 0 < share < 1
    # an expert keeps the first `capacity` users of a group that picked it, in user order
    kept = np.zeros_like(sel)
    for lo, hi, d in moe.depth_groups(6 * N, rows):
        kept[lo:hi] = sel[lo:hi] & (np.cumsum(sel[lo:hi], axis=0) <= small[d - 1])
    assert share == pytest.approx((sel & ~kept).sum() / sel.sum())
    lost = (sel & ~kept).any(-1)
    same = ~lost
    a, b = np.asarray(cut[0]).reshape(-1, 2), np.asarray(masked[0]).reshape(-1, 2)
    np.testing.assert_allclose(a[same], b[same], rtol=1e-5, atol=1e-6)
    assert np.abs(a[lost] - b[lost]).max(-1).min() > 1e-4    # every such user changes
    with pytest.raises(ValueError, match="capacity"):
        MODEL.apply(params, z, width, depth, None, eps, None, full)
    assert moe.expert_capacity(100, 5.5, 10, 1.25) == 69
    assert moe.expert_capacity(100, 10, 10, 1.25) == 100          # never above the group
    with pytest.raises(ValueError, match="capacity factor"):
        moe.expert_capacity(100, 5.5, 10, 0.0)


def test_out_of_range_width_or_depth_raises():
    params, scn, mask = _params(), _scenario(), _mask()
    with pytest.raises(ValueError, match="width"):
        _allocator(MODEL, params).allocate(scn, mask, 0, 1)
    with pytest.raises(ValueError, match="depth"):
        _allocator(MODEL, params).allocate(scn, mask, 1, L + 1)
    with pytest.raises(ValueError, match="width"):
        _allocator(MODEL, params).allocate(scn, mask, np.array([1, K + 1, 2]), 1)


# ---------------------------------------------------------------------------
# All sub-networks at once
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("with_noise", [False, True])
def test_allocate_all_equals_allocate_for_every_subnetwork(with_noise):
    params, scn, mask = _params(), _scenario(), _mask()
    key = jax.random.key(7) if with_noise else None
    bw_all, fa_all = _jit_allocate_all(MODEL)(params, scn, mask, SYS, SCALES, key)
    assert bw_all.shape == (K, L, B, N) and fa_all.shape == (K, L, B, N)
    widths = jnp.array([k for k, _ in PAIRS])
    depths = jnp.array([d for _, d in PAIRS])
    one = jax.jit(jax.vmap(lambda w, d: allocate(MODEL, params, scn, mask, w, d, SYS, SCALES, key)))
    bw, fa = one(widths, depths)
    np.testing.assert_allclose(bw_all.reshape(K * L, B, N), bw, rtol=1e-5,
                               atol=1e-7 * SYS.bandwidth_max)
    np.testing.assert_allclose(fa_all.reshape(K * L, B, N), fa, rtol=1e-5,
                               atol=1e-7 * SYS.f_server)


def test_allocate_all_with_tied_gates():
    params, scn, mask = _params(ZERO_GATE_MODEL), _scenario(), _mask()
    bw_all, _ = _jit_allocate_all(ZERO_GATE_MODEL)(params, scn, mask, SYS, SCALES)
    for width, depth in [(1, 1), (2, 3), (4, 2)]:
        bw, _ = _jit_allocate(ZERO_GATE_MODEL)(params, scn, mask, width, depth, SYS, SCALES)
        np.testing.assert_allclose(bw_all[width - 1, depth - 1], bw, rtol=1e-5,
                                   atol=1e-7 * SYS.bandwidth_max)


# ---------------------------------------------------------------------------
# Compilation and gradients
# ---------------------------------------------------------------------------

def test_no_recompilation_across_width_and_depth():
    chex.clear_trace_counter()
    params, scn, mask = _params(), _scenario(), _mask()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(params, scn, mask, width, depth):
        return allocate(MODEL, params, scn, mask, width, depth, SYS, SCALES)

    for width, depth in [(1, 1), (4, 3), (2, 2), (3, 1)]:
        jax.block_until_ready(run(params, scn, mask, width, depth))


def _loss(model, params, scn, mask, width, depth, sys_params, noise_key=None):
    bw, fa, (_, _, load_balance) = allocator_lib.allocate_with_aux(
        _allocator(model, params, sys_params), scn, mask, width, depth, sys_params, noise_key)
    return jnp.sum(system.weighted_delay(scn, mask, bw, fa, sys_params)) + 0.1 * load_balance


_GRAD_CASES = {
    "width_1": dict(width=1, depth=3),
    "zero_init_gates_ties": dict(width=2, depth=2, model=ZERO_GATE_MODEL),
    "zero_init_gates_full_width": dict(width=K, depth=3, model=ZERO_GATE_MODEL),
    "one_user_offloaded": dict(width=3, depth=2, mask="one"),
    "no_user_offloaded": dict(width=3, depth=2, mask="none"),
    "tiny_deadlines": dict(width=2, depth=3, tiny_deadline=True),
    "single_user": dict(width=4, depth=1, n=1),
    "training_noise": dict(width=2, depth=3, noise=True, model=ZERO_GATE_MODEL),
}


@pytest.mark.parametrize("case", sorted(_GRAD_CASES))
def test_gradients_are_finite(case):
    c = _GRAD_CASES[case]
    model = c.get("model", MODEL)
    n = c.get("n", N)
    params = _params(model)
    scn = _scenario(batch=2, n=n)
    if c.get("tiny_deadline"):
        scn = scn.replace(deadline=jnp.full_like(scn.deadline, 1e-9))
    mask = {"one": jnp.zeros((2, n), bool).at[:, 1].set(True),
            "none": jnp.zeros((2, n), bool)}.get(c.get("mask"), jnp.ones((2, n), bool))
    key = jax.random.key(3) if c.get("noise") else None
    grad = jax.jit(jax.grad(_loss, argnums=1), static_argnums=0)(
        model, params, scn, mask, c["width"], c["depth"], SYS.replace(n_users=n), key)
    chex.assert_tree_all_finite(grad)
    if c.get("mask") == "none":
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grad))
    else:
        assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grad))


def test_masked_softmax_all_masked_is_zero_with_finite_gradient():
    logits = jnp.array([[1.0, -2.0, 3.0], [1e30, -1e30, 0.0]])
    mask = jnp.array([[False, False, False], [True, False, True]])
    out = allocator_lib.masked_softmax(logits, mask)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1], [1.0, 0.0, 0.0])
    g = jax.grad(lambda x: jnp.sum(allocator_lib.masked_softmax(x, mask) * jnp.arange(3.0)))(logits)
    chex.assert_tree_all_finite(g)


def test_load_balance_loss_zero_at_balance_with_finite_gradient():
    balanced = jnp.full((6, K), 1.0 / K)
    assert float(moe.load_balance_loss(balanced)) == 0.0
    g = jax.grad(moe.load_balance_loss)(balanced)
    chex.assert_tree_all_finite(g)
    one_expert = jnp.zeros((6, K)).at[:, 0].set(1.0)
    np.testing.assert_allclose(moe.load_balance_loss(one_expert), K - 1.0, rtol=1e-6)
    assert float(moe.load_balance_loss(one_expert, jnp.zeros(6, bool))) == 0.0


def test_normalize_features_finite_and_logarithmic():
    scn = system.Scenario(size=jnp.array([0.0, 1000.0]), workload=jnp.array([797.5, 0.0]),
                          deadline=jnp.array([0.16, 0.016]), distance=jnp.array([500.0, 5.0]),
                          f_local=jnp.array([0.15e9, 0.015e9]))
    z = np.asarray(features.normalize_features(scn, SCALES))
    assert z.shape == (2, 5) and np.all(np.isfinite(z))
    np.testing.assert_allclose(z[0], [np.log(1e-4), 0.0, 0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(z[1], [0.0, np.log(1e-4), np.log(0.1), np.log(0.01), np.log(0.1)],
                               rtol=1e-6)


def test_width_per_scenario_is_never_taken_for_per_user_values():
    """A (B,) width is one per scenario, also when B = N (it was broadcast per user); a shape
    that fits neither is a clear error."""
    model = moe.MoEAllocator(n_experts=3, n_layers=2, hidden=8)
    z = jax.random.normal(jax.random.key(0), (4, 4, 5))      # B = N = 4
    params = model.init(jax.random.key(1), z, 1, 1)
    width = jnp.array([1, 2, 3, 1])
    logits, _ = model.apply(params, z, width, 2)
    one_by_one = jnp.stack([model.apply(params, z[i], int(width[i]), 2)[0] for i in range(4)])
    np.testing.assert_allclose(logits, one_by_one, rtol=1e-6, atol=1e-6)
    per_user = jnp.broadcast_to(width[:, None], (4, 4))
    np.testing.assert_allclose(model.apply(params, z, per_user, 2)[0], logits, rtol=1e-6)
    with pytest.raises(ValueError, match=r"width of shape \(3,\) does not fit scenarios of "
                                         r"shape \(4, 4\): give a scalar, one per scenario"):
        model.apply(params, z, jnp.array([1, 2, 3]), 2)
