"""Tests of dynmec_jax.evaluation: every Section V.A / V.B method and the metrics."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import evaluation, methods, pipeline, system
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.nets import static as static_net
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

N = 4


@pytest.fixture(scope="module")
def world(tiny_allocator):
    sp = system.SystemParams(n_users=N)
    alloc = tiny_allocator(sp)
    key = jax.random.key(0)
    pipes = {}
    for variant in ("full", "fixed"):
        cfg = train_config.TrainConfig(n_users=N, batch=4, pretrain_steps=0, episodes=1,
                                       variant=variant)
        models = pipeline.build_models(cfg, alloc)
        # Random weights everywhere (the scheduler's output layer starts at 0, p = 0.5):
        # some tasks offloaded, some not.
        s_params = scheduler_net.init_scheduler(jax.random.key(1), models.scheduler, N)
        leaves, tree = jax.tree.flatten(s_params)
        keys = jax.random.split(jax.random.key(5), len(leaves))
        s_params = jax.tree.unflatten(tree, [jax.random.normal(k, a.shape)
                                             for k, a in zip(keys, leaves, strict=True)])
        state = train_joint.JointState(
            s_params, None,
            policy_net.init_policy(jax.random.key(2), models.policy), None,
            jnp.zeros((), jnp.int32))
        pipes[variant] = pipeline.make_pipeline(cfg, alloc, state)
    scn = system.sample_scenarios(jax.random.key(3), sp, 8)
    return sp, alloc, key, pipes, scn


def _inputs(world, **extra):
    sp, alloc, key, pipes, scn = world
    k_rand, k_ga = jax.random.split(key)
    return methods.Inputs(allocator=alloc, pmrl=pipes["full"], rl=pipes["fixed"],
                          keys={"rand": k_rand, "ga_va": k_ga, "ga_vb": k_ga}, ga_iters=3,
                          **extra)


def test_section_vb_methods(world):
    sp, alloc, key, pipes, scn = world
    chosen = tuple(m for m in methods.section("vb") if not set(m.needs) & {"pmrl_paper", "droo"}
                   and m.subsample is None and not m.host)
    res = jax.jit(lambda s: methods.evaluate(chosen, _inputs(world), s, sp))(scn)
    assert set(res) == set(methods.names(chosen))
    for name, m in res.items():
        chex.assert_tree_all_finite(m)
        for k in ("delay", "miss_ratio", "energy", "cost"):
            assert getattr(m, k).shape == (8,), (name, k)
        assert np.all((np.asarray(m.miss_ratio) >= 0) & (np.asarray(m.miss_ratio) <= 1))
    local = res["Local execution"]
    assert float(local.offload_fraction.mean()) == 0.0
    assert float(local.inference_share.mean()) == 0.0
    # Fix MoE (joint) = PMRL's offloading with the largest sub-network
    np.testing.assert_array_equal(res["Fix MoE"].offload_fraction, res["PMRL"].offload_fraction)
    assert np.all(np.asarray(res["Fix MoE"].width) == alloc.n_experts)
    assert np.all(np.asarray(res["RL"].depth) == alloc.n_layers)
    # the charging rule: a bound pays nothing, a deployed greedy pays its operations
    opt = evaluation.scenario_metrics(scn, evaluation.exhaustive(scn, sp), sp)
    assert float(opt.inference_share.max()) == 0.0
    assert float(res["Greedy"].inference_share.min()) > 0.0
    assert np.all(np.asarray(opt.cost) <= np.asarray(res["Greedy"].cost) * (1 + 1e-5))
    with pytest.raises(ValueError, match="runs on the host"):
        methods.evaluate((methods.OPTIMUM,), _inputs(world), scn, sp)


def test_section_va_methods(world):
    sp, alloc, key, pipes, scn = world
    pol = pipes["full"].policy_params
    static = allocator_lib.Allocator(
        params=allocator_lib.init_params(jax.random.PRNGKey(0),
                                         static_net.StaticAllocator(hidden=16, n_layers=2)),
        scales=alloc.scales, sys_params=sp, model=static_net.StaticAllocator(hidden=16,
                                                                             n_layers=2))
    chosen = tuple(m for m in methods.section("va") if m.subsample is None)
    inputs = _inputs(world, static=static, policies={"full": pol, "fix_width": pol,
                                                     "fix_depth": pol})
    res = jax.jit(lambda s: methods.evaluate(chosen, inputs, s, sp))(scn)
    assert set(res) == set(methods.names(chosen))   # GA: tests/test_ga.py
    for m in res.values():
        chex.assert_tree_all_finite(m)
        np.testing.assert_array_equal(m.offload_fraction, 1.0)
    # the oracle picks the best sub-network by Eq. 28 and, a bound, pays no inference delay
    assert float(res["Oracle"].inference_share.max()) == 0.0
    assert float(res["Oracle"].cost.mean()) <= float(res["Fix MoE"].cost.mean()) * (1 + 1e-6)


def test_registry_is_consistent():
    assert {m.section for m in methods.REGISTRY} == set(methods.SECTIONS)
    for sec in methods.SECTIONS:
        names = methods.names(methods.section(sec))
        assert len(set(names)) == len(names)
    assert {m.name for m in methods.REGISTRY if m.charge == "bound"} == {"Oracle", "Optimum"}
    assert methods.get("vb", "Optimum").label == "Optimum (bound)"
    assert methods.styles()["PMRL"] == methods.PMRL.style
    with pytest.raises(ValueError, match="unknown method 'PPO'"):
        methods.get("vb", "PPO")


def test_public_scorer_scores_any_rule_like_the_methods(world):
    """A researcher's own offloading rule, scored with the optimal allocation, equals the
    same decision scored through a method; per-task C_i sum to the figures' cost."""
    sp, alloc, key, pipes, scn = world
    g = evaluation.greedy(scn, sp)
    d = g.decision
    sc = evaluation.score(scn, d.offload, d.bandwidth, d.f_alloc, sys_params=sp,
                          inference_delay=(d.inference_delay_local, d.inference_delay_edge))
    m = evaluation.scenario_metrics(scn, g, sp)
    np.testing.assert_allclose(sc.cost.sum(-1), m.cost, rtol=1e-6)
    np.testing.assert_allclose(evaluation.metrics(sc, sp).delay, m.delay, rtol=1e-6)
    # my rule: offload the tasks with the longest local delay, optimal allocation of the set
    t_loc = scn.workload * scn.size / scn.f_local
    mine = t_loc > jnp.median(t_loc, axis=-1, keepdims=True)
    own = evaluation.score(scn, mine, sys_params=sp)
    assert own.delay.shape == scn.shape and bool(jnp.all(jnp.isfinite(own.cost)))
    np.testing.assert_array_equal(own.bandwidth > 0, mine)
    np.testing.assert_allclose(own.bandwidth.sum(-1), sp.bandwidth_max, rtol=1e-5)
    # the optimal allocation minimises sum C_i^edge: no worse than the learned allocator's
    b, f = allocator_lib.allocate(alloc, scn, mine, alloc.n_experts, alloc.n_layers, sp)
    learned = evaluation.score(scn, mine, b, f, sys_params=sp)
    assert np.all(np.asarray(own.cost.sum(-1)) <= np.asarray(learned.cost.sum(-1)) * (1 + 1e-5))
    with pytest.raises(ValueError, match="both bandwidth and f_alloc"):
        evaluation.score(scn, mine, b, None, sys_params=sp)


def test_task_cost_matches_recomputation(world):
    sp, alloc, key, pipes, scn = world
    r = evaluation.pipeline_method(pipes["full"], scn, sp)
    d = r.decision
    x = np.asarray(d.offload)
    c_edge = np.asarray(system.cost_edge(scn, d.bandwidth, d.f_alloc, sp,
                                         d.inference_delay_edge[:, None]))
    c_loc = np.asarray(system.cost_local(scn, sp, d.inference_delay_local[:, None]))
    c = np.where(x, np.where(x, c_edge, 0.0), c_loc).sum(-1)
    assert x.any() and (~x).any()
    np.testing.assert_allclose(evaluation.task_cost(scn, r, sp), c, rtol=1e-5)


def test_metrics_at_edges(world):
    """N = 1, nothing offloaded, tiny deadlines: finite metrics."""
    sp = system.SystemParams(n_users=1)
    scn = system.sample_scenarios(jax.random.key(4), sp, 3)
    scn = scn.replace(deadline=jnp.full((3, 1), sp.deadline_min))
    for r in (evaluation.local_execution(scn, sp),
              evaluation.optimal(scn, sp, offload=jnp.array([[True], [False], [True]]))):
        chex.assert_tree_all_finite(evaluation.scenario_metrics(scn, r, sp))
