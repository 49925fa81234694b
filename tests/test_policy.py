"""Tests of dynmec_jax.policy: Eq. 28-29 labels and loss, Algorithm 1, the pipeline."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import tiny_allocator

from dynmec_jax import policy, scheduling, system
from dynmec_jax.configs import joint as joint_config

N = 4


@pytest.fixture(scope="module")
def sp():
    return system.SystemParams(n_users=N)


@pytest.fixture(scope="module")
def alloc(sp):
    return tiny_allocator(sp)


@pytest.fixture(scope="module")
def trained(alloc, sp):
    """A few seconds of Algorithm 1 at tiny sizes, and the same state with the initial scheduler."""
    cfg = policy.TrainConfig(n_users=N, batch=32, pretrain_steps=60, episodes=150,
                             scheduler_lr=2e-2, policy_lr=1e-2)
    key = jax.random.key(0)
    state, metrics = jax.jit(policy.make_train(cfg, alloc))(key, sp)
    k_sched = jax.random.split(key, 3)[1]          # make_train's scheduler-init key
    models = policy.build_models(cfg, alloc)
    state0 = state._replace(scheduler=scheduling.init_scheduler(k_sched, models.scheduler))
    return cfg, state, state0, metrics


@pytest.fixture(scope="module")
def untrained(alloc):
    """A pipeline state with random networks (enough for save/load/decide)."""
    cfg = policy.TrainConfig(n_users=N)
    models = policy.build_models(cfg, alloc)
    state = policy.TrainState(scheduling.init_scheduler(jax.random.key(1), models.scheduler), None,
                              policy.init_policy(jax.random.key(2), models.policy), None,
                              jnp.zeros((), jnp.int32))
    return cfg, state, None, None


def test_policy_size():
    model = policy.Policy(10, 3)
    params = policy.init_policy(jax.random.PRNGKey(0), model)
    assert sum(x.size for x in jax.tree.leaves(params)) == policy.policy_params_count() == 418
    assert policy.policy_macs() == 10 * 32 + 32 * 2


def test_choose_rounds_clips_and_variants():
    out = jnp.array([[0.2, 7.6], [2.5, 1.4], [9.0, -3.0]])
    w, d = policy.choose(out, 4, 3)
    np.testing.assert_array_equal(w, [1, 2, 4])
    np.testing.assert_array_equal(d, [3, 1, 1])
    w, d = policy.choose(out, 4, 3, "fix_width")
    np.testing.assert_array_equal(w, [4, 4, 4])
    w, d = policy.choose(out, 4, 3, "fix_depth")
    np.testing.assert_array_equal(d, [3, 3, 3])
    w, d = policy.choose(out, 4, 3, "fixed", (2, 2))
    np.testing.assert_array_equal(np.stack([w, d]), [[2, 2, 2], [2, 2, 2]])
    with pytest.raises(ValueError, match="variant"):
        policy.choose(out, 4, 3, "tiny")


def test_labels_equal_brute_force_argmin(alloc, sp):
    """Eq. 28 from one logits_all pass == argmin over allocator.allocate per (width, depth)."""
    B = 6
    scn = system.sample_scenarios(jax.random.PRNGKey(1), sp, B)
    x = np.array(jax.random.uniform(jax.random.PRNGKey(2), (B, N)) < 0.6)
    x[0] = True
    x[1] = False
    x[1, 2] = True
    x = jnp.asarray(x)
    s_macs, p_macs = 123, 45
    K, L = alloc.n_experts, alloc.n_layers
    brute = np.zeros((K, L, B))
    n = np.asarray(x.sum(-1))
    for k in range(1, K + 1):
        for d in range(1, L + 1):
            b, f = alloc.allocate(scn, x, k, d)
            _, t_e = scheduling.inference_delays(sp, s_macs, p_macs, alloc.macs(k, d, n))
            c = system.cost_edge(scn, jnp.where(x, b, 1.0), jnp.where(x, f, 1.0), sp,
                                 t_e[:, None])
            brute[k - 1, d - 1] = (np.where(np.asarray(x), np.asarray(c), 0).sum(-1)
                                   / np.maximum(n, 1))
    labels = jax.jit(lambda v: policy.labels(alloc, alloc.logits_all(scn), scn, x, sp, s_macs,
                                             p_macs, v), static_argnums=0)
    for variant in ("full", "fix_width", "fix_depth", "fixed"):
        lw, ld, table = labels(variant)
        np.testing.assert_allclose(table, brute, rtol=1e-4)
        allowed = policy.allowed_subnets(K, L, variant)
        masked = np.where(allowed[..., None], brute, np.inf).reshape(K * L, B)
        idx = masked.argmin(0)
        np.testing.assert_array_equal(lw, idx // L + 1)
        np.testing.assert_array_equal(ld, idx % L + 1)


def test_policy_features_invariant_and_finite(sp):
    scn = system.sample_scenarios(jax.random.PRNGKey(3), sp, 3)
    x = jnp.array([[True, False, True, True], [False] * 4, [True] * 4])
    ref = sp
    scales = tiny_allocator(sp).scales
    f = policy.policy_features(scn, x, scales, sp, ref)
    assert f.shape == (3, policy.N_POLICY_INPUTS)
    perm = jnp.array([2, 0, 3, 1])
    fp = policy.policy_features(jax.tree.map(lambda a: a[:, perm], scn), x[:, perm], scales,
                                sp, ref)
    np.testing.assert_allclose(f, fp, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(f[1, :7], 0.0)            # empty set: zeros
    g = jax.jit(jax.grad(lambda s: jnp.sum(policy.policy_features(s, x, scales, sp, ref))))(scn)
    chex.assert_tree_all_finite(g)


def test_policy_loss_variants_and_validity():
    out = jnp.array([[1.0, 1.0], [3.0, 2.0]])
    w, d = jnp.array([2, 1]), jnp.array([3, 1])
    valid = jnp.array([True, False])
    assert float(policy.policy_loss(out, w, d, valid)) == pytest.approx(1.0 + 4.0)
    assert float(policy.policy_loss(out, w, d, valid, "fix_width")) == pytest.approx(4.0)
    assert float(policy.policy_loss(out, w, d, valid, "fix_depth")) == pytest.approx(1.0)
    assert float(policy.policy_loss(out, w, d, valid, "fixed")) == 0.0
    assert float(policy.policy_loss(out, w, d, jnp.zeros(2, bool))) == 0.0


def test_joint_training_improves(trained, alloc, sp):
    """A few seconds of Algorithm 1: pre-training lowers Eq. 29; the scheduler lowers the cost."""
    cfg, state, state0, metrics = trained
    pre = np.asarray(metrics["pretrain"]["loss"])
    assert pre[-10:].mean() < pre[:10].mean()
    scn = system.sample_scenarios(jax.random.key(42), sp, 256)
    ev = jax.jit(lambda st: policy.evaluate_state(cfg, alloc, st, scn, sp))
    before, after = ev(state0), ev(state)
    assert float(after["expected_cost"]) < float(before["expected_cost"])
    assert float(after["reward"]) > float(before["reward"])
    j = metrics["joint"]
    assert float(jnp.mean(j["expected_cost"][-30:])) < float(jnp.mean(j["expected_cost"][:30]))
    chex.assert_tree_all_finite(metrics)


def test_vmap_over_seeds_and_system_without_retrace(alloc, sp):
    cfg = policy.TrainConfig(n_users=N, batch=8, pretrain_steps=0, episodes=3)
    train = chex.assert_max_traces(policy.make_train(cfg, alloc), n=1)
    run = jax.jit(jax.vmap(train))
    sps = jax.tree.map(lambda a, b: jnp.stack([jnp.asarray(a), jnp.asarray(b)]),
                       sp, sp.replace(f_server=2 * sp.f_server))
    keys = jax.random.split(jax.random.key(0), 2)
    st, m = run(keys, sps)
    assert st.episode.shape == (2,) and int(st.episode[0]) == 3
    st2, _ = run(jax.random.split(jax.random.key(1), 2),
                 sps.replace(f_server=sps.f_server * 1.5))     # new values, no retrace
    chex.assert_tree_all_finite((m, st2.scheduler))
    chex.clear_trace_counter()


def test_pipeline_round_trip_and_decide(untrained, alloc, sp, tmp_path):
    cfg, state, _, _ = untrained
    pipe = policy.make_pipeline(cfg, alloc, state, {"note": "test"})
    policy.save_pipeline(pipe, tmp_path / "p")
    loaded = policy.load_pipeline(tmp_path / "p")
    scn = jax.tree.map(np.asarray, system.sample_scenarios(jax.random.key(5), sp, 3))
    d1, d2 = pipe.decide(scn), loaded.decide(scn)
    chex.assert_trees_all_close(d1, d2)
    assert d1.offload.shape == (3, N) and d1.width.shape == (3,)
    assert d1.inference_delay_edge.shape == (3,)
    single = loaded.decide(jax.tree.map(lambda a: a[1], scn))
    assert single.offload.shape == (N,) and single.width.shape == ()
    chex.assert_trees_all_close(single, jax.tree.map(lambda a: a[1], d1))
    x = np.asarray(d1.offload)
    b = np.asarray(d1.bandwidth)
    assert np.all(b[~x] == 0)
    np.testing.assert_allclose(b.sum(-1)[x.any(-1)], sp.bandwidth_max, rtol=1e-5)
    assert np.all(np.asarray(d1.inference_delay_edge) > np.asarray(d1.inference_delay_local))
    assert "note" in loaded.record


def test_load_pipeline_errors_name_the_path(untrained, alloc, tmp_path):
    cfg, state, _, _ = untrained
    path = policy.save_pipeline(policy.make_pipeline(cfg, alloc, state), tmp_path / "p")
    (path / "policy.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=str(path)):
        policy.load_pipeline(path)
    (path / "scheduler.msgpack").unlink()
    with pytest.raises(FileNotFoundError, match="scheduler.msgpack"):
        policy.load_pipeline(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        policy.load_pipeline(tmp_path / "nowhere")


def test_shipped_pipeline_loads():
    pipe = policy.load_pipeline()
    sp = pipe.allocator.sys_params
    d = pipe.decide(jax.tree.map(np.asarray, system.sample_scenarios(jax.random.key(0), sp, 2)))
    assert d.offload.shape == (2, sp.n_users)


def test_config_validation():
    cfg = joint_config.get_config("smoke")
    policy.validate_config(cfg)
    tc = policy.train_config(cfg, variant="fixed", n_users=3)
    assert tc.variant == "fixed" and tc.n_users == 3
    bad = joint_config.get_config("smoke")
    bad.train.estimator = "ppo"
    with pytest.raises(ValueError, match="estimator"):
        policy.validate_config(bad)
    bad = joint_config.get_config("smoke")
    bad.system.n_users = 0
    with pytest.raises(ValueError, match="n_users"):
        policy.validate_config(bad)
    with pytest.raises(ValueError, match="preset"):
        joint_config.get_config("huge")
