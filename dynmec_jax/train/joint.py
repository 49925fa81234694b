"""Algorithm 1: training the scheduler and the policy together (Section IV.C).

Pure programs in the style of purejaxrl (``make_*(config, allocator)``
returns a function that ``jit`` and ``vmap`` take whole; the allocator is
fixed and closed over; shapes live in the static
:class:`~dynmec_jax.train.config.TrainConfig`, the swept
:class:`~dynmec_jax.system.SystemParams` fields are traced):

* :func:`make_pretrain`: lines 2-6, the policy pre-trained on the Eq. 28
  labels with every task offloaded; several variants at once (they share
  each step's scenarios and the allocator's one-pass ``logits_all``, the
  dominant cost).
* :func:`make_update`: lines 12-16 on given scenarios (sample x ~
  Bernoulli(p), costs and rewards of Eq. 23-25, one step of each model);
  :func:`make_episode` samples the scenarios first.
* :func:`make_joint`: lines 7-16 from a (pre-)trained policy;
  :func:`make_train`: the whole algorithm (pre-training, then the episodes).
* :func:`evaluate_state`: a held-out check with greedy actions.

Units: SI throughout; costs as in :mod:`dynmec_jax.costs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dynmec_jax import cell as cell_lib
from dynmec_jax import costs, system
from dynmec_jax.nets import features
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.pipeline import Models, build_models, decide_subnet
from dynmec_jax.system import Scenario, SystemParams
from dynmec_jax.train.config import TrainConfig

Array = Any

#: ``fold_in`` constant of the key of a step's cells (cell-conditioned training only, so the
#: scenarios of a one-cell run are those of its key, as before cells existed).
CELL_KEY = 0xCE11


class JointState(NamedTuple):
    """Scheduler and policy weights, their optimiser states, and the episode counter."""

    scheduler: Any
    scheduler_opt: Any
    policy: Any
    policy_opt: Any
    episode: Array


def make_optimizer(lr: float, kind: str = "adam",
                   clip_norm: float = 0.0) -> optax.GradientTransformation:
    """The scheduler's and the policy's optimiser: ``"adam"`` (default) or ``"sgd"`` at ``lr``.

    Eq. 27 is plain gradient ascent, ``theta' = theta + lr grad J``
    (``"sgd"``).  The costs span orders of magnitude (w_i ~ 1/d_i with d_i
    down to 1 ms), so the raw gradient's scale varies by 10^3 between
    batches; Adam is scale-free and at the paper's lr = 2e-3 learns several
    times faster in our measurements (docs/reproduction.md), so it is the
    default.  The loss is minimised, i.e. the reward ascended.  ``clip_norm``
    > 0 clips the gradient's global norm first (``optax.clip_by_global_norm``).
    """
    if kind == "adam":
        tx = optax.adam(lr)
    elif kind == "sgd":
        tx = optax.sgd(lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {kind!r}")
    if clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    return tx


def scheduler_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The scheduler's optimiser of ``config`` (Eq. 27; lr, kind and clipping)."""
    return make_optimizer(config.scheduler_lr, config.scheduler_optimizer, config.clip_norm)


def policy_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The policy's optimiser of ``config`` (Eq. 29's minimiser)."""
    return make_optimizer(config.policy_lr, config.policy_optimizer)


def sample_training_scenarios(config: TrainConfig, key, sys_params: SystemParams):
    """``(scn, valid)``: ``config.batch`` training scenarios of N = ``config.n_users`` users
    (``valid`` None), or of mixed N padded to it (``config.n_users_min``; ``valid`` marks
    the real users, :func:`dynmec_jax.system.sample_mixed_scenarios`)."""
    sp = sys_params.replace(n_users=config.n_users)
    if config.n_users_min is None:
        return system.sample_scenarios(key, sp, config.batch), None
    return system.sample_mixed_scenarios(key, sp, config.batch, config.n_users_min)


def sample_training_cells(config: TrainConfig, key, sys_params: SystemParams):
    """The cells of ``config.batch`` training scenarios: ``sys_params`` itself (one cell),
    or with ``config.cell`` one cell per scenario drawn over that range
    (:func:`dynmec_jax.cell.sample_cells`; float fields ``(batch,)``), a share
    ``config.cell_base_share`` of them left at ``sys_params``, each field of the
    others at an end of its range with probability ``config.cell_edge_share``."""
    if not config.cell:
        return sys_params
    if not config.cell_base_share:
        return cell_lib.sample_cells(key, sys_params, config.batch, config.cell_ranges,
                                     config.cell_edge_share)
    k_cell, k_base = jax.random.split(key)
    cells = cell_lib.sample_cells(k_cell, sys_params, config.batch, config.cell_ranges,
                                  config.cell_edge_share)
    base = cell_lib.broadcast_cells(sys_params, config.batch)
    keep = jax.random.uniform(k_base, (config.batch,)) < config.cell_base_share
    return jax.tree.map(lambda b, c: jnp.where(keep, b, c), base, cells)


def with_users(models: Models, valid: Array | None) -> Models:
    """``models`` with M_Sced (Eq. 34-35) per scenario for its number of real users."""
    if valid is None:
        return models
    n = jnp.sum(jnp.asarray(valid), axis=-1)
    return models._replace(scheduler_macs=scheduler_net.module_macs(models.scheduler, n))


def joint_step_quantities(models: Models, state: JointState, allocator, scn: Scenario,
                          offload: Array, sys_params: SystemParams, logits_all=None,
                          marginal: bool = False, advantage: str = "raw",
                          valid: Array | None = None, logits: Array | None = None):
    """Everything one episode needs for the sampled/greedy actions ``offload``.

    Returns a dict: ``logits`` (scheduler, ``(B, N)``), ``probs``,
    ``costs`` (:class:`~dynmec_jax.costs.TaskCosts`), ``rewards``
    (Eq. 23, ``(B, N)``; with ``marginal`` the costs are the system-level
    ones of :func:`~dynmec_jax.costs.marginal_costs`), factual
    ``width``/``depth`` ``(B,)``, Eq. 28
    ``label_width``/``label_depth`` on the current offload set, ``valid``
    (scenarios with an offloaded task) and the ``logits_all`` table.
    ``valid``: the real users of padded scenarios (``models`` then carries
    per-scenario M_Sced, :func:`with_users`).  ``sys_params``: one cell, or one per
    scenario (float fields ``(B,)``; then everything is computed per scenario under
    :func:`dynmec_jax.cell.over_scenarios` and ``logits_all`` is not returned).
    ``logits``: the scheduler's logits ``(B, N)`` when the caller has them (else
    computed here).
    """
    if cell_lib.is_per_scenario(sys_params):
        macs = jnp.broadcast_to(jnp.asarray(models.scheduler_macs), scn.shape[:1])

        def one(sp, s, x, v, mc, lg):
            q = joint_step_quantities(models._replace(scheduler_macs=mc), state, allocator, s,
                                      x, sp, None, marginal, advantage, v, lg)
            q.pop("logits_all")
            return q

        return cell_lib.over_scenarios(one, sys_params, scn, offload, valid, macs, logits)
    if logits_all is None:
        logits_all = allocator.logits_all(scn)
    if logits is None:
        logits = scheduler_net.offload_logits(models.scheduler, state.scheduler, scn,
                                              allocator.scales, valid,
                                              models.scheduler_tail(scn, sys_params))
    probs = jax.nn.sigmoid(logits)

    def decide(masks):
        return decide_subnet(models, state.policy, allocator, scn, masks, sys_params)

    cost_fn = costs.marginal_costs if marginal else costs.task_costs
    task = cost_fn(allocator, logits_all, scn, offload, decide, sys_params,
                   models.scheduler_macs, models.policy_macs)
    width, depth = decide(offload)
    lw, ld, _ = costs.labels(allocator, logits_all, scn, offload, sys_params,
                             models.scheduler_macs, models.policy_macs, models.variant,
                             models.fixed)
    return {"logits": logits, "probs": probs, "costs": task,
            "rewards": costs.rewards(probs, task, offload, advantage), "width": width,
            "depth": depth, "label_width": lw, "label_depth": ld,
            "valid": jnp.any(offload, axis=-1), "logits_all": logits_all}


def make_pretrain(configs: Mapping[str, TrainConfig] | TrainConfig, allocator):
    """Algorithm 1, lines 2-6, for one or several policy variants at once.

    ``configs``: a :class:`TrainConfig` or ``{name: TrainConfig}`` (e.g. the
    "full", "fix_width" and "fix_depth" variants of Section V.A); they must
    agree on ``n_users``, ``batch`` and ``pretrain_steps``.  Returns
    ``pretrain(key, sys_params) -> {name: (policy_params, opt_state,
    metrics)}`` (a single config: the one triple).  Each step samples
    ``batch`` scenarios (``system.sample_scenarios`` with the traced
    ``sys_params``), offloads every task, labels them by Eq. 28 (M_Sced and
    M_Poli included, constant across (k, l)) restricted to each variant, and
    takes one optimiser step of each on Eq. 29.  Variant i starts from
    ``init_policy(fold_in(k_init, i))``; the variants share the scenarios and
    the allocator's ``logits_all``.  Metrics ``loss`` and ``accuracy``
    (rounded output == label), stacked per step (empty for variant "fixed",
    which has no policy to train, and when ``pretrain_steps`` is 0).

    The returned function also has its parts, for a chunked driver
    (:mod:`dynmec_jax.train.joint_run`): ``pretrain.init(k_init) -> (params,
    opts)`` (dicts by variant name) and ``pretrain.run((params, opts), keys,
    sys_params)``, the scan over given per-step keys.
    """
    single = isinstance(configs, TrainConfig)
    configs = {"policy": configs} if single else dict(configs)
    first = next(iter(configs.values()))
    for name, c in configs.items():
        if (c.n_users, c.n_users_min, c.batch, c.pretrain_steps, c.cell) != (
                first.n_users, first.n_users_min, first.batch, first.pretrain_steps, first.cell):
            raise ValueError(f"pre-training {name!r} differs in n_users/n_users_min/batch/"
                             "pretrain_steps/cell")
    models = {name: build_models(c, allocator) for name, c in configs.items()}
    txs = {name: policy_optimizer(c) for name, c in configs.items()}
    trained = [name for name, c in configs.items() if c.variant != "fixed"]

    def step(carry, key, sys_params):
        params, opts = carry
        scn, users = sample_training_scenarios(first, key, sys_params)
        x = jnp.ones(scn.shape, bool) if users is None else users
        cells = sample_training_cells(first, jax.random.fold_in(key, CELL_KEY), sys_params)
        m0 = models[next(iter(configs))]

        def quantities(sp, scn, x, users):   # one cell (per scenario: under vmap)
            la = allocator.logits_all(scn)
            out = {"feats": policy_net.policy_features(scn, x, allocator.scales, sp,
                                                       allocator.sys_params,
                                                       m0.cell_features(sp))}
            for name in trained:
                m = with_users(models[name], users)
                out[name] = costs.labels(allocator, la, scn, x, sp, m.scheduler_macs,
                                         m.policy_macs, m.variant, m.fixed)[:2]
            return out

        q = cell_lib.over_scenarios(quantities, cells, scn, x, users)
        feats = q["feats"]
        valid = jnp.ones(scn.shape[:1], bool)
        new_p, new_o, metrics = dict(params), dict(opts), {}
        for name in trained:
            m = models[name]
            lw, ld = q[name]

            def loss_fn(p, m=m, lw=lw, ld=ld):
                out = m.policy.apply(p, feats)
                return costs.policy_loss(out, lw, ld, valid, m.variant), out

            (loss, out), g = jax.value_and_grad(loss_fn, has_aux=True)(params[name])
            upd, new_o[name] = txs[name].update(g, opts[name], params[name])
            new_p[name] = optax.apply_updates(params[name], upd)
            w, d = policy_net.choose(out, m.n_experts, m.n_layers, m.variant, m.fixed)
            metrics[name] = {"loss": loss, "accuracy": jnp.mean((w == lw) & (d == ld))}
        return (new_p, new_o), metrics

    def init(k_init):
        params = {name: policy_net.init_policy(jax.random.fold_in(k_init, i), models[name].policy,
                                               len(models[name].cell))
                  for i, name in enumerate(configs)}
        return params, {name: txs[name].init(params[name]) for name in configs}

    def run(carry, keys, sys_params: SystemParams):
        return jax.lax.scan(lambda c, k: step(c, k, sys_params), carry, keys)

    def pretrain(key, sys_params: SystemParams):
        k_init, k_steps = jax.random.split(key)
        params, opts = init(k_init)
        empty = {"loss": jnp.zeros((0,)), "accuracy": jnp.zeros((0,))}
        metrics = {name: empty for name in configs}
        if trained and first.pretrain_steps > 0:
            keys = jax.random.split(k_steps, first.pretrain_steps)
            (params, opts), stacked = run((params, opts), keys, sys_params)
            metrics.update(stacked)
        out = {name: (params[name], opts[name], metrics[name]) for name in configs}
        return out["policy"] if single else out

    pretrain.init, pretrain.run = init, run   # the parts, for a chunked driver
    return pretrain


def make_update(config: TrainConfig, allocator):
    """The update of one episode of Algorithm 1 (lines 12-16) on given scenarios.

    ``update(state, scn, key, sys_params, valid=None, logits_all=None) -> (state,
    metrics)``, ``scn`` fields ``(B, N)`` (any scenarios, e.g. a synthetic
    instance in a test); ``valid`` marks the real users of padded scenarios
    (padded users never offload and do not enter the losses or the metrics);
    ``sys_params`` one cell, or one per scenario (float fields ``(B,)``,
    :func:`sample_training_cells`); ``logits_all``: the allocator's
    ``logits_all(scn)`` when the caller has it (:func:`make_joint_group`
    shares it between configs; else computed here).

    Samples x ~ Bernoulli(p) from the scheduler (``key``), lets the
    policy pick (width, depth) (and, for each flip, on S u {i}), computes the
    Eq. 24-25 costs and Eq. 23 rewards, updates the policy on the Eq. 28
    labels of the current offload set (Eq. 29) and the scheduler by ascent
    on R(A) (Eq. 26-27).  Metrics (scalars): ``reward`` (mean R),
    ``cost`` (mean C of the taken actions), ``expected_cost`` (mean of
    p C^edge + (1-p) C^loc), ``offload_fraction``, ``policy_loss``,
    ``policy_accuracy``, ``width``, ``depth`` (means).  With
    ``config.estimator == "marginal"`` ``cost`` and ``expected_cost`` are
    scenario totals (the marginal costs are system-level).
    """
    models = build_models(config, allocator)
    tx_s = scheduler_optimizer(config)
    tx_p = policy_optimizer(config)

    def update(state: JointState, scn: Scenario, k_act, sys_params: SystemParams,
               valid: Array | None = None, logits_all: Array | None = None):
        m = with_users(models, valid)
        z = features.normalize_features(scn, allocator.scales)
        cf = models.scheduler_tail(scn, sys_params)     # (C,), (B, C) or (B, N, C + 3)
        extra = (valid, cf) if cf is not None else (() if valid is None else (valid,))
        logits = m.scheduler.apply(state.scheduler, z, *extra)
        x = scheduler_net.sample_actions(k_act, jax.nn.sigmoid(logits))
        if valid is not None:
            x = x & valid
        q = joint_step_quantities(m, state, allocator, scn, x, sys_params, logits_all,
                                  marginal=config.estimator == "marginal",
                                  advantage=config.advantage, valid=valid, logits=logits)
        task = q["costs"]
        # Entropy bonus: config.entropy at the first episode, linearly down to 0 at the last.
        frac = state.episode.astype(logits.dtype) / max(config.episodes, 1)
        ent = config.entropy * jnp.maximum(1.0 - frac, 0.0)

        def s_loss(p):
            lg = m.scheduler.apply(p, z, *extra)
            return costs.scheduler_loss(lg, task, x, config.estimator, config.advantage, ent,
                                        valid)

        g_s = jax.grad(s_loss)(state.scheduler)
        upd, s_opt = tx_s.update(g_s, state.scheduler_opt, state.scheduler)
        s_params = optax.apply_updates(state.scheduler, upd)

        feats = cell_lib.over_scenarios(
            lambda sp, s, xs: policy_net.policy_features(s, xs, allocator.scales, sp,
                                                         allocator.sys_params,
                                                         models.cell_features(sp)),
            sys_params, scn, x)

        def p_loss(p):
            return costs.policy_loss(models.policy.apply(p, feats), q["label_width"],
                                     q["label_depth"], q["valid"], models.variant)

        loss_p, g_p = jax.value_and_grad(p_loss)(state.policy)
        if config.variant == "fixed":
            p_params, p_opt = state.policy, state.policy_opt
        else:
            upd, p_opt = tx_p.update(g_p, state.policy_opt, state.policy)
            p_params = optax.apply_updates(state.policy, upd)

        probs = q["probs"]
        taken = jnp.where(x, task.edge, task.local)
        served = q["valid"].astype(probs.dtype)
        hit = ((q["width"] == q["label_width"]) & (q["depth"] == q["label_depth"]))
        mean = costs.masked_mean(valid)   # over the real users of padded scenarios
        metrics = {
            "reward": mean(q["rewards"]),
            "cost": mean(taken),
            "expected_cost": mean(probs * task.edge + (1 - probs) * task.local),
            "offload_fraction": mean(x),
            "policy_loss": loss_p,
            "policy_accuracy": jnp.sum(hit * served) / jnp.maximum(jnp.sum(served), 1.0),
            "width": jnp.mean(q["width"]), "depth": jnp.mean(q["depth"]),
            "entropy": mean(costs.bernoulli_entropy(logits)),
        }
        return JointState(s_params, s_opt, p_params, p_opt, state.episode + 1), metrics

    return update


def make_episode(config: TrainConfig, allocator):
    """One episode of Algorithm 1 (lines 11-16).

    ``episode(state, key, sys_params) -> (state, metrics)``: samples
    ``config.batch`` scenarios of ``sys_params`` (Section V's distribution,
    N = ``config.n_users``, or mixed N, :func:`sample_training_scenarios`),
    with ``config.cell`` one cell per scenario (:func:`sample_training_cells`),
    and applies :func:`make_update` to them.
    """
    shared = _shared_episode(config, {"one": make_update(config, allocator)}, allocator)

    def episode(state: JointState, key, sys_params: SystemParams):
        states, metrics = shared({"one": state}, key, sys_params)
        return states["one"], metrics["one"]

    return episode


def _shared_episode(config: TrainConfig, updates: Mapping[str, Any], allocator):
    """One episode of every update in ``updates`` (:func:`make_update`s by name) on the
    scenarios, cells and action key drawn from ``key`` as ``config`` samples them, with
    the allocator's ``logits_all`` computed once for all (one cell per batch)."""

    def episode(states: dict, key, sys_params: SystemParams):
        k_scn, k_act = jax.random.split(key)
        scn, valid = sample_training_scenarios(config, k_scn, sys_params)
        cells = sample_training_cells(config, jax.random.fold_in(k_scn, CELL_KEY), sys_params)
        la = None if cell_lib.is_per_scenario(cells) else allocator.logits_all(scn)
        out = {name: upd(states[name], scn, k_act, cells, valid, la)
               for name, upd in updates.items()}
        return {n: o[0] for n, o in out.items()}, {n: o[1] for n, o in out.items()}

    return episode


def joint_parts(config: TrainConfig, allocator):
    """``(start, run)``: a fresh scheduler next to a given policy, and the episodes' scan.

    ``start(k_sched, policy_params, policy_opt) -> JointState``; ``run(state,
    k_eps, sys_params)`` scans ``config.episodes`` episodes on
    ``split(k_eps, episodes)``; ``run.keys(state, keys, sys_params)`` scans
    the episodes of given keys (a chunk of them).
    """
    model = build_models(config, allocator).scheduler
    tx_s = scheduler_optimizer(config)
    episode = make_episode(config, allocator)

    def start(k_sched, policy_params, policy_opt) -> JointState:
        s_params = scheduler_net.init_scheduler(k_sched, model, config.n_users)
        return JointState(s_params, tx_s.init(s_params), policy_params, policy_opt,
                          jnp.zeros((), jnp.int32))

    def run(state: JointState, k_eps, sys_params: SystemParams):
        return run_keys(state, jax.random.split(k_eps, config.episodes), sys_params)

    def run_keys(state: JointState, keys, sys_params: SystemParams):
        return jax.lax.scan(lambda s, k: episode(s, k, sys_params), state, keys)

    run.keys = run_keys   # the episodes on given per-episode keys (a chunked driver)
    return start, run


#: The fields of :class:`TrainConfig` that decide what :func:`make_episode` samples and how
#: many episodes run: configs that agree on them can share their episodes' scenarios.
SAMPLING_FIELDS = ("n_users", "n_users_min", "batch", "episodes", "cell", "cell_base_share",
                   "cell_edge_share")


def make_joint_group(configs: Mapping[str, TrainConfig], allocator):
    """Algorithm 1's episodes (lines 11-16) of several configs in one scan, on shared scenarios.

    ``run(states, k_eps, sys_params) -> (states, metrics)``, ``states`` and
    ``metrics`` dicts by config name: episode ``e`` of every config samples
    the same scenarios, cells and action uniforms (the keys of
    :func:`joint_parts`' ``run``: ``split(k_eps, episodes)[e]`` split into
    scenario and action keys), and the allocator's ``logits_all`` of those
    scenarios (the costliest part of an episode: every sub-network of the
    frozen allocator, for every user) is computed once for all configs.  A
    config's result is that of its own :func:`make_joint` run from the same
    state and ``k_eps`` (the same operations; e.g. PMRL with the paper's
    scheduler beside the default, or RL on PMRL's training scenarios: common
    random numbers).  The configs must agree on :data:`SAMPLING_FIELDS`
    (``ValueError`` naming the first that differs); ``sys_params`` one cell.
    """
    configs = dict(configs)
    if not configs:
        raise ValueError("make_joint_group needs at least one config")
    first = next(iter(configs.values()))
    for name, c in configs.items():
        for f in SAMPLING_FIELDS:
            if getattr(c, f) != getattr(first, f):
                raise ValueError(f"config {name!r} differs in {f} ({getattr(c, f)!r} against "
                                 f"{getattr(first, f)!r}): its episodes cannot share scenarios")
    episode = _shared_episode(first, {name: make_update(c, allocator)
                                      for name, c in configs.items()}, allocator)

    def run(states: dict, k_eps, sys_params: SystemParams):
        keys = jax.random.split(k_eps, first.episodes)
        return jax.lax.scan(lambda s, k: episode(s, k, sys_params), dict(states), keys)

    return run


def make_start(config: TrainConfig, allocator):
    """``start(key, sys_params) -> (JointState, k_eps, pretrain metrics)``: what
    :func:`make_train` does before its episodes (``key`` split in three: pre-training
    with ``config.pretrain_steps`` (:func:`make_pretrain`), a fresh scheduler, the
    episodes' key, which it returns); ``make_train`` is ``start`` then
    :func:`joint_parts`' ``run`` on that key."""
    pretrain = make_pretrain(config, allocator)
    start, _ = joint_parts(config, allocator)

    def start_fn(key, sys_params: SystemParams):
        k_pre, k_sched, k_eps = jax.random.split(key, 3)
        p_params, p_opt, pre_metrics = pretrain(k_pre, sys_params)
        return start(k_sched, p_params, p_opt), k_eps, pre_metrics

    return start_fn


def make_joint(config: TrainConfig, allocator):
    """Algorithm 1, lines 7-16, from a given (pre-trained) policy.

    ``joint(key, sys_params, policy_params, policy_opt) -> (JointState,
    metrics per episode)``: ``key`` splits into the scheduler's
    initialisation and the episodes' keys; ``config.episodes`` episodes
    (:func:`make_episode`) run in a ``lax.scan``.
    """
    start, run = joint_parts(config, allocator)

    def joint(key, sys_params: SystemParams, policy_params, policy_opt):
        k_sched, k_eps = jax.random.split(key)
        return run(start(k_sched, policy_params, policy_opt), k_eps, sys_params)

    return joint


def make_train(config: TrainConfig, allocator):
    """Algorithm 1 as one pure program: ``train(key, sys_params) -> (JointState, metrics)``.

    Pre-trains the policy with all tasks offloaded (:func:`make_pretrain`),
    initialises the scheduler, then runs ``config.episodes`` episodes as
    :func:`make_joint` does (``key`` splits in three: pre-training,
    scheduler, episodes).  ``metrics = {"pretrain": {...per step}, "joint":
    {...per episode}}``.  Pure: ``jax.jit(jax.vmap(train))`` over stacked
    keys and a stacked ``SystemParams`` trains several seeds and sweep
    points at once (``n_users`` is taken from ``config``).
    """
    start = make_start(config, allocator)
    _, run = joint_parts(config, allocator)

    def train(key, sys_params: SystemParams):
        state, k_eps, pre_metrics = start(key, sys_params)
        state, metrics = run(state, k_eps, sys_params)
        return state, {"pretrain": pre_metrics, "joint": metrics}

    return train


def train_seeds(config: TrainConfig, allocator, sys_params: SystemParams, keys: Array):
    """Algorithm 1 for every key at once: ``jit(vmap(make_train(config)))``.

    Returns the stacked ``(JointState, metrics)`` (leading axis = seeds).
    ``sys_params`` is shared by all seeds.
    """
    train = make_train(config, allocator)
    return jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, sys_params)


def evaluate_state(config: TrainConfig, allocator, state: JointState, scn: Scenario,
                   sys_params: SystemParams, valid: Array | None = None) -> dict:
    """Held-out check of a training state with greedy actions (x = [p > 0.5]; with
    ``config.skip_dominated`` the dominated tasks stay local, as the pipeline decides).

    Returns scalars: ``reward`` (mean Eq. 23 reward of the greedy actions),
    ``cost`` (mean cost C of the taken actions, Eq. 24-25),
    ``expected_cost`` (mean p C^edge + (1-p) C^loc), ``offload_fraction``,
    ``policy_accuracy`` (greedy (width, depth) == Eq. 28 label).  ``valid``:
    the real users of padded scenarios (the means run over them); ``sys_params``
    one cell or one per scenario.
    """
    models = build_models(config, allocator)
    scn = system.as_scenario(scn)
    logits, x, sched_macs = models.greedy_offload(state.scheduler, scn, sys_params,
                                                  allocator.scales, valid)
    probs = jax.nn.sigmoid(logits)
    # M_Sced per scenario: its real users, and with an early exit those that ran the last pass
    models = models._replace(scheduler_macs=sched_macs)
    if valid is not None:
        x = x & valid
    mean = costs.masked_mean(valid)
    q = joint_step_quantities(models, state, allocator, scn, x, sys_params, valid=valid,
                              logits=logits)
    c = q["costs"]
    served = q["valid"].astype(probs.dtype)
    hit = (q["width"] == q["label_width"]) & (q["depth"] == q["label_depth"])
    return {"reward": mean(q["rewards"]),
            "cost": mean(jnp.where(x, c.edge, c.local)),
            "expected_cost": mean(probs * c.edge + (1 - probs) * c.local),
            "offload_fraction": mean(x),
            "policy_accuracy": jnp.sum(hit * served) / jnp.maximum(jnp.sum(served), 1.0)}


def warm_start(template, loaded):
    """``loaded`` weights in the shapes of ``template`` (same layers, a pytree each).

    A kernel of ``template`` with more input rows than ``loaded``'s (inputs
    appended since, e.g. the cell features, which every network reads last)
    gets the loaded rows first and zeros after: the network computes what
    the loaded one did, whatever the new inputs.  Layers of ``template`` that
    ``loaded`` lacks keep their ``template`` values: a set scheduler with more
    passes (:class:`~dynmec_jax.nets.scheduler.SetScheduler`, whose output
    layers start at zero) starts from the loaded passes' logits.  Any other
    mismatch (a shape, a layer of ``loaded`` that ``template`` lacks) raises
    ``ValueError``.
    """
    def pad(t, v):
        v = jnp.asarray(v, t.dtype)
        if t.shape == v.shape:
            return v
        if t.ndim == 2 and v.ndim == 2 and t.shape[1] == v.shape[1] and t.shape[0] > v.shape[0]:
            return jnp.concatenate([v, jnp.zeros((t.shape[0] - v.shape[0], t.shape[1]),
                                                 t.dtype)])
        raise ValueError(f"cannot warm-start a {t.shape} weight from a {v.shape} one")

    def merge(t, v, path):
        if isinstance(t, Mapping) and isinstance(v, Mapping):
            extra = sorted(set(v) - set(t))
            if extra:
                raise ValueError(f"cannot warm-start: the loaded network has layers "
                                 f"{[path + str(k) for k in extra]} the new one lacks")
            return {k: merge(t[k], v[k], f"{path}{k}/") if k in v else t[k] for k in t}
        if jax.tree.structure(t) != jax.tree.structure(v):
            raise ValueError(f"cannot warm-start {path or 'the network'}: the layers differ "
                             f"({jax.tree.structure(v)} vs {jax.tree.structure(t)})")
        return jax.tree.map(pad, t, v)

    return merge(template, loaded, "")


def unstack(tree, i: int):
    """Seed ``i`` of a stacked pytree (e.g. a vmapped :class:`JointState`).

    One compiled program per tree structure, the index a traced argument (sliced
    leaf by leaf outside ``jit``, each leaf's shape would compile a program of its own).
    """
    return _unstack(tree, jnp.asarray(i, jnp.int32))


@jax.jit
def _unstack(tree, i):
    return jax.tree.map(lambda a: a[i], tree)

