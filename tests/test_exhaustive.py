"""Tests of dynmec_jax.baselines.exhaustive: the true optimum over all 2^N offloading subsets."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import baselines, costs, evaluation, pipeline, system
from dynmec_jax import methods as methods_lib
from dynmec_jax.baselines import exhaustive
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

N = 4


def test_subset_masks():
    m = exhaustive.subset_masks(3)
    assert m.shape == (8, 3)
    assert not m[0].any() and m[-1].all()
    np.testing.assert_array_equal(m[5], [True, False, True])


def test_matches_python_enumeration():
    sp = system.SystemParams(n_users=3)
    scn = system.sample_scenarios(jax.random.key(0), sp, 2)
    res = jax.jit(lambda s: exhaustive.exhaustive_optimum(s, sp, infer_local=1e-4, infer_edge=2e-3,
                                                          return_all=True))(scn)
    @jax.jit
    def value(one, x):
        bw, fa = baselines.optimal_allocation(one, x, sp)
        return exhaustive.subset_value(one, x, bw, fa, sp, 1e-4, 2e-3)

    for b in range(2):
        one = jax.tree.map(lambda a, b=b: a[b], scn)
        vals = [float(value(one, jnp.array(bits[::-1])))
                for bits in itertools.product([False, True], repeat=3)]
        order = [int("".join("1" if v else "0" for v in bits), 2)
                 for bits in itertools.product([False, True], repeat=3)]
        np.testing.assert_allclose(np.asarray(res.all_values[b])[order], vals, rtol=1e-5)
        assert float(res.value[b]) == pytest.approx(min(vals), rel=1e-5)


def test_rejects_large_n():
    sp = system.SystemParams(n_users=13)
    scn = system.sample_scenarios(jax.random.key(0), sp, 1)
    with pytest.raises(ValueError, match="N <= 12"):
        exhaustive.exhaustive_optimum(scn, sp)


def test_never_beaten_by_any_method(tiny_allocator):
    """sum_i C_i of every method (PMRL, RL-fixed, Rand, Local, GA, optimal allocation of
    PMRL's offload set), with or without its inference delay, is >= the exhaustive optimum."""
    sp = system.SystemParams(n_users=N)
    alloc = tiny_allocator(sp)
    cfg = train_config.TrainConfig(n_users=N)
    models = pipeline.build_models(cfg, alloc)       # any decisions will do: use random networks
    s_params = scheduler_net.init_scheduler(jax.random.key(1), models.scheduler)
    p_params = policy_net.init_policy(jax.random.key(2), models.policy)
    state = train_joint.JointState(s_params, None, p_params, None, jnp.zeros((), jnp.int32))
    pmrl = pipeline.make_pipeline(cfg, alloc, state)
    scn = system.sample_scenarios(jax.random.key(7), sp, 32)
    key = jax.random.key(1)

    def every_method(k, s):
        chosen = tuple(m for m in methods_lib.section("vb")
                       if not set(m.needs) & {"rl", "pmrl_paper", "droo"} and m.charge != "bound")
        k_rand, k_ga = jax.random.split(k)
        inputs = methods_lib.Inputs(allocator=alloc, pmrl=pmrl, ga_iters=5,
                                    keys={"rand": k_rand, "ga_vb": k_ga})
        per = {name: m.cost for name, m in methods_lib.evaluate(chosen, inputs, s, sp).items()}
        x = evaluation.pipeline_method(pmrl, s, sp).decision.offload
        opt_alloc = evaluation.optimal(s, sp, offload=x)
        per["Optimal allocation (PMRL's offload)"] = evaluation.task_cost(s, opt_alloc, sp)
        per["... without inference delay"] = evaluation.task_cost(
            s, evaluation.without_inference(opt_alloc), sp)
        return per

    per_method = jax.jit(every_method)(key, scn)
    # without inference delay, and given the smallest inference delays a PMRL could pay
    t_l = costs.inference_delays(sp, pmrl.models.scheduler_macs, 0, 0)[0]

    @jax.jit
    def optima(s):
        opt = exhaustive.exhaustive_optimum(s, sp, objective="cost", allocation="energy_aware")
        opt_inf = exhaustive.exhaustive_optimum(
            s, sp, infer_local=t_l, objective="cost", allocation="energy_aware",
            infer_edge=lambda n: costs.inference_delays(
                sp, pmrl.models.scheduler_macs, pmrl.models.policy_macs,
                alloc.macs(1, 1, max(n, 1)))[1])
        return opt, opt_inf

    opt, opt_inf = optima(scn)
    chex.assert_tree_all_finite((per_method, opt.value, opt_inf.value))
    for name, c in per_method.items():
        assert np.all(np.asarray(c) >= np.asarray(opt.value) * (1 - 1e-4)), name
    # PMRL pays at least the smallest inference delay the allocator can have
    assert np.all(np.asarray(per_method["PMRL"]) >= np.asarray(opt_inf.value) * (1 - 1e-4))
    assert np.all(np.asarray(opt_inf.value) >= np.asarray(opt.value) * (1 - 1e-6))


def test_edges_n1_and_tiny_deadlines():
    sp = system.SystemParams(n_users=1)
    scn = system.sample_scenarios(jax.random.key(2), sp, 3)
    scn = scn.replace(deadline=jnp.full((3, 1), sp.deadline_min),
                      size=scn.size.at[0, 0].set(0.0))
    res = jax.jit(lambda s: exhaustive.exhaustive_optimum(s, sp, return_all=True))(scn)
    chex.assert_tree_all_finite((res.value, res.bandwidth, res.f_alloc))
    np.testing.assert_allclose(res.value, np.asarray(res.all_values).min(-1))
