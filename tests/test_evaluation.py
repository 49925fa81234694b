"""Tests of dynmec_jax.evaluation: every Section V.A / V.B method and the metrics."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import evaluation, pipeline, system
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


def test_section_vb_methods(world):
    sp, alloc, key, pipes, scn = world
    res = jax.jit(lambda k, s: evaluation.section_vb(k, s, sp, pipes["full"], pipes["fixed"],
                                                     ga_iters=None))(key, scn)
    assert set(res) == set(evaluation.SECTION_VB) - {"GA"}   # GA: tests/test_exhaustive.py
    for name, m in res.items():
        chex.assert_tree_all_finite(m)
        for k in ("delay", "miss_ratio", "energy", "cost"):
            assert m[k].shape == (8,), (name, k)
        assert np.all((np.asarray(m["miss_ratio"]) >= 0) & (np.asarray(m["miss_ratio"]) <= 1))
    local = res["Local execution"]
    assert float(local["offload_fraction"].mean()) == 0.0
    assert float(local["inference_share"].mean()) == 0.0
    # Fix MoE (joint) = PMRL's offloading with the largest sub-network
    np.testing.assert_array_equal(res["Fix MoE"]["offload_fraction"],
                                  res["PMRL"]["offload_fraction"])
    assert np.all(np.asarray(res["Fix MoE"]["width"]) == alloc.n_experts)
    assert np.all(np.asarray(res["RL"]["depth"]) == alloc.n_layers)


def test_section_va_methods(world):
    sp, alloc, key, pipes, scn = world
    pol = pipes["full"].policy_params
    static = allocator_lib.Allocator(
        params=allocator_lib.init_params(jax.random.PRNGKey(0),
                                         static_net.StaticAllocator(hidden=16, n_layers=2)),
        scales=alloc.scales, sys_params=sp, model=static_net.StaticAllocator(hidden=16,
                                                                             n_layers=2))
    res = jax.jit(lambda k, s: evaluation.section_va(k, s, sp, alloc, pol, static, pol, pol,
                                                     ga_iters=None))(key, scn)
    assert set(res) == set(evaluation.SECTION_VA) - {"GA"}   # GA: tests/test_ga.py
    for m in res.values():
        chex.assert_tree_all_finite(m)
        np.testing.assert_array_equal(m["offload_fraction"], 1.0)
    # the oracle picks the best sub-network by Eq. 28, so it beats Fix MoE in mean C^edge
    assert float(res["Oracle"]["cost"].mean()) <= float(res["Fix MoE"]["cost"].mean()) * (1 + 1e-6)


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
