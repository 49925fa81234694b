"""Tests of the policy (dynmec_jax.nets.policy), Eq. 28-29 (dynmec_jax.costs), Algorithm 1
(dynmec_jax.train.joint) and dynmec_jax.pipeline."""


import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import accounting, costs, pipeline, system, typedconfig
from dynmec_jax.configs import joint as joint_config
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

N = 4


@pytest.fixture(scope="module")
def sp():
    return system.SystemParams(n_users=N)


@pytest.fixture(scope="module")
def alloc(tiny_allocator, sp):
    return tiny_allocator(sp)


@pytest.fixture(scope="module")
def trained(alloc, sp):
    """A few seconds of Algorithm 1 at tiny sizes, and the same state with the initial scheduler."""
    cfg = train_config.TrainConfig(n_users=N, batch=32, pretrain_steps=60, episodes=150,
                                   scheduler_lr=2e-2, policy_lr=1e-2)
    key = jax.random.key(0)
    state, metrics = jax.jit(train_joint.make_train(cfg, alloc))(key, sp)
    k_sched = jax.random.split(key, 3)[1]          # make_train's scheduler-init key
    models = pipeline.build_models(cfg, alloc)
    state0 = state._replace(scheduler=scheduler_net.init_scheduler(k_sched, models.scheduler))
    return cfg, state, state0, metrics


@pytest.fixture(scope="module")
def untrained(alloc):
    """A pipeline state with random networks (enough for save/load/decide)."""
    cfg = train_config.TrainConfig(n_users=N)
    models = pipeline.build_models(cfg, alloc)
    s_params = scheduler_net.init_scheduler(jax.random.key(1), models.scheduler)
    p_params = policy_net.init_policy(jax.random.key(2), models.policy)
    state = train_joint.JointState(s_params, None, p_params, None, jnp.zeros((), jnp.int32))
    return cfg, state, None, None


def test_policy_size():
    model = policy_net.Policy(10, 3)
    params = policy_net.init_policy(jax.random.PRNGKey(0), model)
    assert sum(x.size for x in jax.tree.leaves(params)) == policy_net.policy_params_count() == 418
    assert accounting.policy_macs() == 10 * 32 + 32 * 2


def test_choose_rounds_clips_and_variants():
    out = jnp.array([[0.2, 7.6], [2.5, 1.4], [9.0, -3.0]])
    w, d = policy_net.choose(out, 4, 3)
    np.testing.assert_array_equal(w, [1, 2, 4])
    np.testing.assert_array_equal(d, [3, 1, 1])
    w, d = policy_net.choose(out, 4, 3, "fix_width")
    np.testing.assert_array_equal(w, [4, 4, 4])
    w, d = policy_net.choose(out, 4, 3, "fix_depth")
    np.testing.assert_array_equal(d, [3, 3, 3])
    w, d = policy_net.choose(out, 4, 3, "fixed", (2, 2))
    np.testing.assert_array_equal(np.stack([w, d]), [[2, 2, 2], [2, 2, 2]])
    with pytest.raises(ValueError, match="variant"):
        policy_net.choose(out, 4, 3, "tiny")


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
            _, t_e = costs.inference_delays(sp, s_macs, p_macs, alloc.macs(k, d, n))
            c = system.cost_edge(scn, jnp.where(x, b, 1.0), jnp.where(x, f, 1.0), sp,
                                 t_e[:, None])
            brute[k - 1, d - 1] = (np.where(np.asarray(x), np.asarray(c), 0).sum(-1)
                                   / np.maximum(n, 1))
    labels = jax.jit(lambda v: costs.labels(alloc, alloc.logits_all(scn), scn, x, sp, s_macs,
                                            p_macs, v), static_argnums=0)
    for variant in ("full", "fix_width", "fix_depth", "fixed"):
        lw, ld, table = labels(variant)
        np.testing.assert_allclose(table, brute, rtol=1e-4)
        allowed = policy_net.allowed_subnets(K, L, variant)
        masked = np.where(allowed[..., None], brute, np.inf).reshape(K * L, B)
        idx = masked.argmin(0)
        np.testing.assert_array_equal(lw, idx // L + 1)
        np.testing.assert_array_equal(ld, idx % L + 1)


def test_policy_features_invariant_and_finite(tiny_allocator, sp):
    scn = system.sample_scenarios(jax.random.PRNGKey(3), sp, 3)
    x = jnp.array([[True, False, True, True], [False] * 4, [True] * 4])
    ref = sp
    scales = tiny_allocator(sp).scales
    f = policy_net.policy_features(scn, x, scales, sp, ref)
    assert f.shape == (3, policy_net.N_POLICY_INPUTS)
    perm = jnp.array([2, 0, 3, 1])
    fp = policy_net.policy_features(jax.tree.map(lambda a: a[:, perm], scn), x[:, perm], scales,
                                    sp, ref)
    np.testing.assert_allclose(f, fp, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(f[1, :7], 0.0)            # empty set: zeros
    g = jax.jit(jax.grad(lambda s: jnp.sum(policy_net.policy_features(s, x, scales, sp, ref))))(scn)
    chex.assert_tree_all_finite(g)


def test_policy_loss_variants_and_validity():
    out = jnp.array([[1.0, 1.0], [3.0, 2.0]])
    w, d = jnp.array([2, 1]), jnp.array([3, 1])
    valid = jnp.array([True, False])
    assert float(costs.policy_loss(out, w, d, valid)) == pytest.approx(1.0 + 4.0)
    assert float(costs.policy_loss(out, w, d, valid, "fix_width")) == pytest.approx(4.0)
    assert float(costs.policy_loss(out, w, d, valid, "fix_depth")) == pytest.approx(1.0)
    assert float(costs.policy_loss(out, w, d, valid, "fixed")) == 0.0
    assert float(costs.policy_loss(out, w, d, jnp.zeros(2, bool))) == 0.0


def test_joint_training_improves(trained, alloc, sp):
    """A few seconds of Algorithm 1: pre-training lowers Eq. 29; the scheduler lowers the cost."""
    cfg, state, state0, metrics = trained
    pre = np.asarray(metrics["pretrain"]["loss"])
    assert pre[-10:].mean() < pre[:10].mean()
    scn = system.sample_scenarios(jax.random.key(42), sp, 256)
    ev = jax.jit(lambda st: train_joint.evaluate_state(cfg, alloc, st, scn, sp))
    before, after = ev(state0), ev(state)
    assert float(after["expected_cost"]) < float(before["expected_cost"])
    assert float(after["reward"]) > float(before["reward"])
    j = metrics["joint"]
    assert float(jnp.mean(j["expected_cost"][-30:])) < float(jnp.mean(j["expected_cost"][:30]))
    chex.assert_tree_all_finite(metrics)


def test_vmap_over_seeds_and_system_without_retrace(alloc, sp):
    cfg = train_config.TrainConfig(n_users=N, batch=8, pretrain_steps=0, episodes=3)
    train = chex.assert_max_traces(train_joint.make_train(cfg, alloc), n=1)
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
    pipe = pipeline.make_pipeline(cfg, alloc, state, {"note": "test"})
    pipeline.save_pipeline(pipe, tmp_path / "p")
    loaded = pipeline.load_pipeline(tmp_path / "p")
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
    path = pipeline.save_pipeline(pipeline.make_pipeline(cfg, alloc, state), tmp_path / "p")
    (path / "policy.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=str(path)):
        pipeline.load_pipeline(path)
    (path / "scheduler.msgpack").unlink()
    with pytest.raises(FileNotFoundError, match="scheduler.msgpack"):
        pipeline.load_pipeline(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pipeline.load_pipeline(tmp_path / "nowhere")


def test_shipped_pipeline_loads():
    pipe = pipeline.load_pipeline()
    sp = pipe.allocator.sys_params
    d = pipe.decide(jax.tree.map(np.asarray, system.sample_scenarios(jax.random.key(0), sp, 2)))
    assert d.offload.shape == (2, sp.n_users)


def test_config_validation():
    cfg = typedconfig.from_configdict(train_config.JointConfig, joint_config.get_config("smoke"))
    assert cfg.train.n_users == cfg.system.n_users == 6
    bad = joint_config.get_config("smoke")
    bad.train.estimator = "ppo"
    with pytest.raises(ValueError, match="estimator"):
        typedconfig.from_configdict(train_config.JointConfig, bad)
    bad = joint_config.get_config("smoke")
    bad.system.n_users = 0
    with pytest.raises(ValueError, match="n_users"):
        typedconfig.from_configdict(train_config.JointConfig, bad)
    with pytest.raises(ValueError, match="preset"):
        joint_config.get_config("huge")


def test_variants_pretrained_together_equal_each_alone(alloc, sp):
    """make_pretrain with several variants shares scenarios but not updates: the first
    variant's result equals its pre-training alone (same keys)."""
    full = train_config.TrainConfig(n_users=N, batch=8, pretrain_steps=5, episodes=1)
    fix_w = dataclasses.replace(full, variant="fix_width")
    key = jax.random.key(3)
    both = jax.jit(train_joint.make_pretrain({"full": full, "fix_width": fix_w}, alloc))(key, sp)
    alone = jax.jit(train_joint.make_pretrain(full, alloc))(key, sp)
    chex.assert_trees_all_close(both["full"][0], alone[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both["full"][2]["loss"], alone[2]["loss"], rtol=1e-6)
    assert not np.allclose(both["fix_width"][2]["loss"], alone[2]["loss"])


def test_joint_starts_from_the_given_trained_policy(alloc, sp):
    """make_joint continues from the policy it is given (no re-initialisation); its key
    splits into (scheduler init, episodes)."""
    cfg = train_config.TrainConfig(n_users=N, batch=8, pretrain_steps=4, episodes=0)
    p, o, _ = train_joint.make_pretrain(cfg, alloc)(jax.random.key(1), sp)
    key = jax.random.key(5)
    state, _ = train_joint.make_joint(cfg, alloc)(key, sp, p, o)
    chex.assert_trees_all_equal(state.policy, p)
    chex.assert_trees_all_equal(state.policy_opt, o)
    model = pipeline.build_models(cfg, alloc).scheduler
    chex.assert_trees_all_equal(
        state.scheduler, scheduler_net.init_scheduler(jax.random.split(key)[0], model, N))
    run, _ = jax.jit(train_joint.make_joint(dataclasses.replace(cfg, episodes=3), alloc))(
        key, sp, p, o)
    assert int(run.episode) == 3
    assert not np.allclose(jax.tree.leaves(run.policy)[0], jax.tree.leaves(p)[0])


def test_joint_group_shares_scenarios_and_gives_each_config_its_own_run(alloc, sp):
    """make_joint_group runs PMRL, PMRL (paper) and RL in one scan on shared scenarios: each
    config's state and metrics are those of its own make_joint run from the same state and
    episodes' key; RL's start is make_train's (make_start)."""
    pmrl = train_config.TrainConfig(n_users=N, batch=8, pretrain_steps=4, episodes=6)
    paper = dataclasses.replace(pmrl, scheduler="paper", advantage="raw", estimator="eq23",
                                scheduler_passes=1, scheduler_layers=1)
    rl = dataclasses.replace(pmrl, pretrain_steps=0, variant="fixed")
    p, o, _ = train_joint.make_pretrain(pmrl, alloc)(jax.random.key(1), sp)
    k_sched, k_eps = jax.random.split(jax.random.key(5))
    states = {n: train_joint.joint_parts(c, alloc)[0](k_sched, p, o)
              for n, c in (("pmrl", pmrl), ("paper", paper))}
    states["rl"], k_rl, _ = train_joint.make_start(rl, alloc)(jax.random.key(6), sp)
    cfgs = {"pmrl": pmrl, "paper": paper, "rl": rl}
    group, metrics = jax.jit(train_joint.make_joint_group(cfgs, alloc))(states, k_eps, sp)
    for name, c in cfgs.items():
        alone, m = jax.jit(train_joint.joint_parts(c, alloc)[1])(states[name], k_eps, sp)
        chex.assert_trees_all_close(group[name], alone, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics[name]["cost"], m["cost"], rtol=1e-5)
    # make_train is make_start then the episodes on the key make_start returns.
    rl_state, rl_m = jax.jit(train_joint.make_train(rl, alloc))(jax.random.key(6), sp)
    alone, _ = jax.jit(train_joint.joint_parts(rl, alloc)[1])(states["rl"], k_rl, sp)
    chex.assert_trees_all_close(rl_state, alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(metrics["pmrl"]["cost"], metrics["paper"]["cost"])
    with pytest.raises(ValueError, match="differs in batch"):
        train_joint.make_joint_group({"a": pmrl, "b": dataclasses.replace(pmrl, batch=4)}, alloc)
    with pytest.raises(ValueError, match="at least one"):
        train_joint.make_joint_group({}, alloc)


def test_padded_users_are_invisible_to_the_set_scheduler_and_cost_nothing(alloc, sp):
    scn = system.sample_scenarios(jax.random.key(11), sp.replace(n_users=5), 3)
    padded, valid = system.pad_users(scn, 9, sp)
    assert padded.size.shape == (3, 9) and bool(valid[:, :5].all()) and not valid[:, 5:].any()
    c_loc = system.cost_local(padded, sp)
    assert np.all(np.asarray(c_loc)[:, 5:] == 0.0)          # empty tasks kept local: free
    for counts in (False, True):      # with count features, log N is the real users' N
        model = scheduler_net.SetScheduler(counts=counts)
        params = model.init(jax.random.key(0), jnp.zeros((5, 5)))
        params = jax.tree.map(lambda a: 0.3 * jax.random.normal(jax.random.key(1), a.shape),
                              params)
        a = scheduler_net.offload_logits(model, params, scn, alloc.scales)
        b = scheduler_net.offload_logits(model, params, padded, alloc.scales, valid)[:, :5]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        n_params = sum(x.size for x in jax.tree.leaves(params))
        dims = accounting.set_scheduler_dims(counts=counts)
        assert n_params == sum(accounting.mlp_params(d) for d in dims)
    with pytest.raises(ValueError, match="set"):
        scheduler_net.offload_logits(scheduler_net.Scheduler(9), None, padded, alloc.scales,
                                     valid)


def test_mixed_n_training_never_offloads_padding(alloc, sp):
    cfg = train_config.TrainConfig(n_users=7, n_users_min=2, batch=8, pretrain_steps=3,
                                   episodes=4)
    state, metrics = jax.jit(train_joint.make_train(cfg, alloc))(jax.random.key(2), sp)
    chex.assert_tree_all_finite((state, metrics))
    scn, valid = train_joint.sample_training_scenarios(cfg, jax.random.key(3), sp)
    n = np.asarray(valid).sum(-1)
    assert scn.size.shape == (8, 7) and n.min() >= 2 and n.max() <= 7
    ev = train_joint.evaluate_state(cfg, alloc, state, scn, sp, valid)
    chex.assert_tree_all_finite(ev)
    update = train_joint.make_update(cfg, alloc)
    _, m = jax.jit(update)(state, scn, jax.random.key(4), sp, valid)
    assert 0.0 <= float(m["offload_fraction"]) <= 1.0
    with pytest.raises(ValueError, match="n_users_min"):
        train_config.TrainConfig(n_users=7, n_users_min=8)
    with pytest.raises(ValueError, match="set"):
        train_config.TrainConfig(n_users=7, n_users_min=2, scheduler="paper")


def test_decide_serves_any_n_with_one_compiled_program(alloc, sp):
    cfg = train_config.TrainConfig(n_users=N)
    models = pipeline.build_models(cfg, alloc)
    s_params = scheduler_net.init_scheduler(jax.random.key(1), models.scheduler)
    s_params = jax.tree.map(lambda a: 0.3 * jax.random.normal(jax.random.key(5), a.shape),
                            s_params)
    p_params = policy_net.init_policy(jax.random.key(2), models.policy)
    pipe = pipeline.Pipeline(s_params, p_params, alloc, pipeline.PipelineSpec.of(cfg))
    assert pipe.n_users is None
    scns = {n: system.sample_scenarios(jax.random.key(n), sp.replace(n_users=n), 2)
            for n in (3, 17, 40, 64)}
    sizes = []
    decisions = {}
    for n, scn in scns.items():
        decisions[n] = pipe.decide(scn)
        sizes.append(pipeline._decide_jit._cache_size())
    assert sizes[1:] == sizes[:1] * 3                 # no new compilation after N = 3
    for n, scn in scns.items():
        d = decisions[n]
        assert d.offload.shape == (2, n) and d.bandwidth.shape == (2, n)
        ref = pipeline._decide_jit(pipe, system.as_scenario(scn), sp)   # unpadded
        np.testing.assert_array_equal(d.offload, ref.offload)
        np.testing.assert_allclose(d.bandwidth, ref.bandwidth, rtol=1e-4,
                                   atol=1e-6 * sp.bandwidth_max)
        np.testing.assert_allclose(d.inference_delay_edge, ref.inference_delay_edge, rtol=1e-6)
    assert pipeline.padded_users(3) == pipeline.padded_users(64) == 64
    assert pipeline.padded_users(65) == 128


def test_jitted_decide_flags_the_scenarios_whose_input_is_invalid(alloc, sp):
    """Under jit a NaN task cannot raise; the decision says which scenario it spoilt."""
    cfg = train_config.TrainConfig(n_users=N)
    models = pipeline.build_models(cfg, alloc)
    pipe = pipeline.Pipeline(scheduler_net.init_scheduler(jax.random.key(1), models.scheduler),
                             policy_net.init_policy(jax.random.key(2), models.policy), alloc,
                             pipeline.PipelineSpec.of(cfg))
    scn = system.sample_scenarios(jax.random.key(3), sp, 3)
    scn = scn.replace(size=scn.size.at[1, 2].set(jnp.nan), deadline=scn.deadline.at[2, 0].set(0.0))
    d = jax.jit(pipeline.decide_body)(pipe, scn, sp)
    np.testing.assert_array_equal(d.input_ok, [True, False, False])
    with pytest.raises(ValueError, match="'size' at index"):
        pipe.decide(scn)   # the host path refuses
