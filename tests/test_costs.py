"""Tests of dynmec_jax.costs and dynmec_jax.nets.scheduler (Eq. 21-27): the scheduler
network, the exact counterfactual costs, rewards."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import accounting, costs, pipeline, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.baselines import exhaustive
from dynmec_jax.nets import features
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

N = 5


@pytest.fixture(scope="module")
def setup(tiny_allocator):
    sp = system.SystemParams(n_users=N)
    alloc = tiny_allocator(sp)
    cfg = train_config.TrainConfig(n_users=N, batch=8)
    models = pipeline.build_models(cfg, alloc)
    pol = policy_net.init_policy(jax.random.PRNGKey(3), models.policy)
    return sp, alloc, models, pol


def test_scheduler_parameter_count():
    model = scheduler_net.Scheduler(30)
    params = scheduler_net.init_scheduler(jax.random.PRNGKey(0), model)
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == scheduler_net.scheduler_params_count(30) == 5 * 30 * 32 + 32 + 32 * 30 + 30
    assert accounting.scheduler_macs(30) == 5 * 30 * 32 + 32 * 30


def test_scheduler_rejects_wrong_n():
    model = scheduler_net.Scheduler(4)
    params = scheduler_net.init_scheduler(jax.random.PRNGKey(0), model)
    with pytest.raises(ValueError, match="4 users"):
        model.apply(params, jnp.zeros((3, 5)))


def _one_update(estimator):
    """A jitted SGD step of the N = 1 scheduler on fixed costs; returns pi before/after, R."""
    model = scheduler_net.Scheduler(1)

    @jax.jit
    def run(params, z, c_loc, c_edge, x):
        tc = costs.TaskCosts(local=c_loc, edge=c_edge, width=jnp.ones((1, 1), jnp.int32),
                             depth=jnp.ones((1, 1), jnp.int32),
                             n_served=jnp.ones((1, 1), jnp.int32))

        def loss(p):
            lg = model.apply(p, z)
            if estimator == "eq23":
                return costs.scheduler_loss(lg, tc, x, "eq23")
            # REINFORCE at N = 1: the batch-mean baseline is the sample itself; use the
            # other action's cost as the baseline (same sign convention as the module's).
            taken = jnp.where(x, tc.edge, tc.local)
            other = jnp.where(x, tc.local, tc.edge)
            log_pi = jnp.where(x, jax.nn.log_sigmoid(lg), jax.nn.log_sigmoid(-lg))
            return -jnp.mean((other - taken) * log_pi)

        new = jax.tree.map(lambda a, g: a - 1e-2 * g, params, jax.grad(loss)(params))
        pi0 = costs.action_probabilities(jax.nn.sigmoid(model.apply(params, z)), x)
        pi1 = costs.action_probabilities(jax.nn.sigmoid(model.apply(new, z)), x)
        r = costs.rewards(jax.nn.sigmoid(model.apply(params, z)), tc, x)
        return pi0[0, 0], pi1[0, 0], r[0, 0]

    return model, run


@pytest.mark.parametrize("estimator", ["eq23", "reinforce"])
def test_reward_sign_moves_probability(estimator):
    """One update raises the probability of the taken action iff it was the better one (Eq. 23)."""
    model, run = _one_update(estimator)
    params = scheduler_net.init_scheduler(jax.random.PRNGKey(1), model)
    z = jax.random.normal(jax.random.PRNGKey(2), (1, 1, 5))
    for offloaded in (True, False):
        for edge_better in (True, False):
            c_edge, c_loc = (1.0, 3.0) if edge_better else (3.0, 1.0)
            pi0, pi1, r = run(params, z, jnp.full((1, 1), c_loc), jnp.full((1, 1), c_edge),
                              jnp.full((1, 1), offloaded))
            better = offloaded == edge_better
            assert (float(r) > 0) == better
            assert (float(pi1) > float(pi0)) == better


def test_reinforce_raises_better_action():
    """REINFORCE with the batch-mean baseline: the cheaper of two taken actions gains."""
    model = scheduler_net.Scheduler(2)
    params = scheduler_net.init_scheduler(jax.random.PRNGKey(1), model)
    z = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 5))
    tc = costs.TaskCosts(local=jnp.array([[1.0, 1.0]]), edge=jnp.array([[5.0, 5.0]]),
                         width=jnp.ones((1, 2), jnp.int32),
                         depth=jnp.ones((1, 2), jnp.int32),
                         n_served=jnp.ones((1, 2), jnp.int32))
    x = jnp.array([[False, True]])       # task 0 local (cost 1), task 1 offloaded (cost 5)
    g = jax.grad(lambda p: costs.scheduler_loss(model.apply(p, z), tc, x,
                                                "reinforce"))(params)
    d_logits = jax.jvp(lambda p: model.apply(p, z), (params,),
                       (jax.tree.map(lambda a: -a, g),))[1]
    assert float(d_logits[0, 0]) < 0     # p(offload task 0) down: its local choice was good
    assert float(d_logits[0, 1]) < 0     # p(offload task 1) down: its offloading was bad


def test_eq23_gradient_is_expected_cost_gradient(setup):
    """Module doc: grad of -mean R (Eq. 23, costs fixed) == grad of the expected cost."""
    sp, alloc, models, _ = setup
    params = scheduler_net.init_scheduler(jax.random.PRNGKey(0), models.scheduler)
    scn = system.sample_scenarios(jax.random.PRNGKey(4), sp, 6)
    z = features.normalize_features(scn, alloc.scales)
    k = jax.random.split(jax.random.PRNGKey(5), 2)
    tc = costs.TaskCosts(local=jax.random.uniform(k[0], (6, N)),
                         edge=jax.random.uniform(k[1], (6, N)),
                         width=jnp.ones((6, N), jnp.int32),
                         depth=jnp.ones((6, N), jnp.int32),
                         n_served=jnp.ones((6, N), jnp.int32))
    x = jax.random.uniform(jax.random.PRNGKey(6), (6, N)) < 0.5
    g1 = jax.grad(lambda p: costs.scheduler_loss(models.scheduler.apply(p, z), tc,
                                                 x))(params)

    def expected(p):
        pr = jax.nn.sigmoid(models.scheduler.apply(p, z))
        return jnp.mean(pr * tc.edge + (1 - pr) * tc.local)

    g2 = jax.grad(expected)(params)
    chex.assert_trees_all_close(g1, g2, rtol=1e-5, atol=1e-7)


def test_counterfactual_edge_cost_is_exact(setup):
    """C^edge of a local task == direct recomputation with that task added to the offload set."""
    sp, alloc, models, pol = setup
    B = 3
    scn = system.sample_scenarios(jax.random.PRNGKey(7), sp, B)
    x = np.array(jax.random.uniform(jax.random.PRNGKey(8), (B, N)) < 0.5)
    x[0] = False           # nothing offloaded: every cost is a single-user counterfactual
    x[1] = True            # everything offloaded: only factual costs

    def decide(masks):
        return pipeline.decide_subnet(models, pol, alloc, scn, masks, sp)

    tc = jax.jit(lambda s, xx: costs.task_costs(
        alloc, alloc.logits_all(s), s, xx, decide, sp, models.scheduler_macs,
        models.policy_macs))(scn, jnp.asarray(x))

    @jax.jit
    def direct(one, mask):
        """Decide, allocate and cost the offload set ``mask`` from scratch (no flip tables)."""
        w, d = pipeline.decide_subnet(models, pol, alloc, one, mask[None], sp)
        logits, _ = alloc.logits(one, w, d)
        bw = sp.bandwidth_max * allocator_lib.masked_softmax(logits[..., 0], mask[None])
        fa = sp.f_server * allocator_lib.masked_softmax(logits[..., 1], mask[None])
        macs = alloc.macs(w[0], d[0], jnp.sum(mask))
        t_loc, t_edge = costs.inference_delays(sp, models.scheduler_macs,
                                               models.policy_macs, macs)
        return (system.cost_edge(one, bw, fa, sp, t_edge)[0],
                system.cost_local(one, sp, t_loc)[0], w[0], d[0])

    for b in range(B):
        one = jax.tree.map(lambda a, b=b: a[b:b + 1], scn)
        for i in range(N):
            mask = x[b].copy()
            mask[i] = True
            c_edge, c_loc, w, d = direct(one, jnp.asarray(mask))
            np.testing.assert_allclose(tc.edge[b, i], c_edge[i], rtol=2e-5)
            np.testing.assert_allclose(tc.local[b, i], c_loc[i], rtol=1e-6)
            assert int(tc.width[b, i]) == int(w) and int(tc.depth[b, i]) == int(d)
            assert int(tc.n_served[b, i]) == int(mask.sum())
    # the direct path really allocates like Allocator.allocate
    w, d = pipeline.decide_subnet(models, pol, alloc, scn, jnp.asarray(x), sp)
    bw, _ = alloc.allocate(scn, jnp.asarray(x), w, d)
    logits, _ = alloc.logits(scn, w, d)
    np.testing.assert_allclose(bw, sp.bandwidth_max * allocator_lib.masked_softmax(logits[..., 0],
                                                                                   jnp.asarray(x)),
                               rtol=1e-5, atol=1e-3)


def test_marginal_costs_are_system_totals(setup):
    """Estimator "marginal": the factual side of every task is the scenario's total cost."""
    sp, alloc, models, pol = setup
    scn = system.sample_scenarios(jax.random.PRNGKey(11), sp, 3)
    x = jnp.asarray(np.array([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool))

    @jax.jit
    def both(s, xx):
        def decide(masks):
            return pipeline.decide_subnet(models, pol, alloc, s, masks, sp)
        la = alloc.logits_all(s)
        args = (alloc, la, s, xx, decide, sp, models.scheduler_macs, models.policy_macs)
        return costs.task_costs(*args), costs.marginal_costs(*args)

    per_task, marg = both(scn, x)
    # the factual total: offloaded tasks' C^edge (factual for them) + local tasks' C^loc
    total = np.where(np.asarray(x), per_task.edge, per_task.local).sum(-1)
    factual = np.where(np.asarray(x), marg.edge, marg.local)
    np.testing.assert_allclose(factual, np.broadcast_to(total[:, None], factual.shape),
                               rtol=1e-5)
    chex.assert_tree_all_finite(marg)


def test_advantages_cap_non_finite():
    tc = costs.TaskCosts(local=jnp.array([[1.0, 2.0, jnp.nan]]),
                         edge=jnp.array([[jnp.inf, 1.0, 1.0]]),
                         width=jnp.ones((1, 3), jnp.int32),
                         depth=jnp.ones((1, 3), jnp.int32),
                         n_served=jnp.ones((1, 3), jnp.int32))
    adv = costs.advantages(tc, jnp.array([[False, True, True]]))
    np.testing.assert_allclose(adv, [[1.0, 1.0, 0.0]])


@pytest.mark.parametrize("n", [1, N])
def test_finite_values_and_gradients_at_edges(tiny_allocator, n):
    """Rows: nothing offloaded, one offloaded, all offloaded, tiny deadlines with a size-0 task."""
    sp = system.SystemParams(n_users=n)
    alloc = tiny_allocator(sp)
    cfg = train_config.TrainConfig(n_users=n, batch=4)
    models = pipeline.build_models(cfg, alloc)
    pol = policy_net.init_policy(jax.random.PRNGKey(3), models.policy)
    sched = scheduler_net.init_scheduler(jax.random.PRNGKey(0), models.scheduler)
    scn = system.sample_scenarios(jax.random.PRNGKey(9), sp, 4)
    x = np.zeros((4, n), bool)
    x[1, 0] = True
    x[2] = True
    x[3, ::2] = True
    scn = scn.replace(deadline=scn.deadline.at[3].set(sp.deadline_min),
                      size=scn.size.at[3, 0].set(0.0))
    x = jnp.asarray(x)

    @jax.jit
    def loss_and_grad(sp_params, pol_params):
        def loss(sp_params, pol_params):
            def decide(masks):
                return pipeline.decide_subnet(models, pol_params, alloc, scn, masks, sp)
            tc = costs.task_costs(alloc, alloc.logits_all(scn), scn, x, decide, sp,
                                  models.scheduler_macs, models.policy_macs)
            lg = scheduler_net.offload_logits(models.scheduler, sp_params, scn, alloc.scales)
            total = (costs.scheduler_loss(lg, tc, x, "eq23")
                     + costs.scheduler_loss(lg, tc, x, "reinforce"))
            return total, (tc.local, tc.edge)
        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(sp_params, pol_params)

    (val, aux), grads = loss_and_grad(sched, pol)
    chex.assert_tree_all_finite((val, aux, grads))


def test_bad_options():
    tc = costs.TaskCosts(*(jnp.ones((1, 1)),) * 5)
    with pytest.raises(ValueError, match="estimator"):
        costs.scheduler_loss(jnp.zeros((1, 1)), tc, jnp.ones((1, 1), bool), "ppo")
    with pytest.raises(ValueError, match="optimizer"):
        train_joint.make_optimizer(1e-3, "rmsprop")


def test_inference_delays_eq34_35():
    sp = system.SystemParams()
    t_l, t_e = costs.inference_delays(sp, 5760, 384, 1e6)
    np.testing.assert_allclose(t_l, sp.efficiency * 5760 / sp.f_server, rtol=1e-6)
    np.testing.assert_allclose(t_e, sp.efficiency * (5760 + 384 + 1e6) / sp.f_server, rtol=1e-6)


# ----------------------------------------------------------------------------
# The per-user ("set") scheduler and the relative advantage (beyond the paper)
# ----------------------------------------------------------------------------

def test_set_scheduler_starts_at_half_for_any_n_and_is_equivariant():
    model = scheduler_net.SetScheduler()
    params = scheduler_net.init_scheduler(jax.random.PRNGKey(0), model, 30)
    n_par = sum(x.size for x in jax.tree.leaves(params))
    # Two passes of (input -> 32 -> 32 -> 1): inputs 10, then 16.
    assert n_par == (10 * 32 + 32) + (16 * 32 + 32) + 2 * (32 * 32 + 32 + 32 + 1) == 3074
    assert accounting.set_scheduler_macs(30) == 30 * (10 * 32 + 16 * 32 + 2 * (32 * 32 + 32))
    assert accounting.set_scheduler_macs(30, passes=1, n_layers=1) == 30 * (10 * 32 + 32)
    for n in (1, 5, 30, 60):
        sp = system.SystemParams(n_users=n)
        scn = system.sample_scenarios(jax.random.PRNGKey(n), sp, 4)
        p = jax.nn.sigmoid(scheduler_net.offload_logits(model, params, scn,
                                                        features.FeatureScales.from_params(sp)))
        assert p.shape == (4, n)
        assert bool(jnp.all((p >= 0.3) & (p <= 0.7)))
    # Equivariance: permuting the users permutes the logits (random, non-zero weights).
    params = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
    z = jax.random.normal(jax.random.PRNGKey(2), (3, 7, 5))
    perm = jnp.array([3, 0, 6, 1, 5, 2, 4])
    np.testing.assert_allclose(model.apply(params, z[:, perm]), model.apply(params, z)[:, perm],
                               rtol=1e-5, atol=1e-6)


def test_default_pipeline_scheduler_starts_at_half(setup):
    sp, alloc, models, _ = setup
    params = scheduler_net.init_scheduler(jax.random.PRNGKey(7), models.scheduler, N)
    scn = system.sample_scenarios(jax.random.PRNGKey(8), sp, 16)
    p = scheduler_net.offload_probabilities(models.scheduler, params, scn, alloc.scales)
    assert bool(jnp.all((p >= 0.3) & (p <= 0.7)))


def test_relative_advantage_keeps_sign_and_is_bounded():
    local = jnp.array([[1.0, 200.0, 3.0, 1.0]])
    edge = jnp.array([[3.0, 2.0, 1.0, jnp.inf]])
    tc = costs.TaskCosts(local, edge, *(jnp.ones((1, 4), jnp.int32),) * 3)
    x = jnp.array([[True, True, False, False]])
    raw = costs.advantages(tc, x, "raw")
    rel = costs.advantages(tc, x, "relative")
    np.testing.assert_allclose(rel[0, :3], [(1 - 3) / 4, (200 - 2) / 202, (1 - 3) / 4],
                               rtol=1e-6)
    assert float(rel[0, 3]) == 1.0                      # infinite C^edge, kept local: +1
    assert bool(jnp.all(jnp.sign(rel) == jnp.sign(raw)))
    assert bool(jnp.all(jnp.abs(rel) <= 1.0))
    with pytest.raises(ValueError, match="advantage"):
        costs.advantages(tc, x, "scaled")


def _synthetic_tasks(key, batch, n, sp):
    """Half the tasks (at random) need 1,600 cycles/bit on a 0.01 GHz local CPU (local cost
    ~10^2-10^3, offload them); the other half need 1 cycle/bit far from the server (local
    cost ~10^-3, keep them local).  Returns the scenario and the known answer."""
    k = jax.random.split(key, 3)
    offload = jax.random.uniform(k[0], (batch, n)) < 0.5
    jit = jax.random.uniform(k[1], (5, batch, n), minval=0.8, maxval=1.2)
    size = 2000.0 * jit[0]
    workload = jnp.where(offload, 1600.0, 1.0) * jit[1]
    distance = jnp.where(offload, 50.0, 500.0) * jit[2] / 1.2
    scn = system.Scenario(size=size, workload=workload, deadline=0.1 * jit[3],
                          distance=distance, f_local=1e7 * jit[4])
    return scn, offload


def test_scheduler_learns_a_known_answer(tiny_allocator):
    """On a synthetic instance with a known answer, the default scheduler and estimator agree
    with the optimal decision on >= 95% of held-out tasks after training."""
    n = 8
    sp = system.SystemParams(n_users=n)
    alloc = tiny_allocator(sp)
    cfg = train_config.TrainConfig(n_users=n, batch=32, episodes=120, pretrain_steps=0)
    models = pipeline.build_models(cfg, alloc)
    test_scn, answer = _synthetic_tasks(jax.random.PRNGKey(100), 64, n, sp)
    # The answer is the true optimum of sum_i C_i (exhaustive, KKT allocation).
    opt = exhaustive.exhaustive_optimum(test_scn, sp, objective="cost")
    assert float(jnp.mean(opt.offload == answer)) >= 0.99

    update = train_joint.make_update(cfg, alloc)
    tx = train_joint.make_optimizer(cfg.scheduler_lr)
    s0 = scheduler_net.init_scheduler(jax.random.PRNGKey(1), models.scheduler, n)
    p0 = policy_net.init_policy(jax.random.PRNGKey(2), models.policy)
    state = train_joint.JointState(s0, tx.init(s0), p0, optax_init(cfg, p0),
                                   jnp.zeros((), jnp.int32))

    @jax.jit
    def train(state, key):
        def body(st, k):
            k1, k2 = jax.random.split(k)
            scn, _ = _synthetic_tasks(k1, cfg.batch, n, sp)
            return update(st, scn, k2, sp)
        return jax.lax.scan(body, state, jax.random.split(key, cfg.episodes))

    state, _ = train(state, jax.random.PRNGKey(3))
    p = scheduler_net.offload_probabilities(models.scheduler, state.scheduler, test_scn,
                                            alloc.scales)
    agree = float(jnp.mean(scheduler_net.greedy_actions(p) == answer))
    assert agree >= 0.95, agree


def optax_init(cfg, params):
    return train_joint.make_optimizer(cfg.policy_lr).init(params)
