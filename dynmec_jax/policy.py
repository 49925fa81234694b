"""The policy model, its labels (Eq. 28-29), Algorithm 1 and the joint pipeline.

* :class:`Policy`: a Flax MLP (one hidden layer of 32 LeakyReLU units, as in
  Section V) from a permutation-invariant summary of the offloaded tasks
  (:func:`policy_features`) to real-valued ``(width, depth)``, rounded and
  clipped to ``[1, K] x [1, L]`` by :func:`choose`.
* :func:`label_costs` / :func:`labels`: Eq. 28, the (width, depth) minimising
  the mean C^edge (Eq. 25, inference delay of Eq. 35 included) over the
  offloaded tasks, every sub-network evaluated from one
  ``Allocator.logits_all`` pass.  :func:`policy_loss`: Eq. 29 (MSE).
* Variants (Section V.A): ``"full"`` (policy picks width and depth),
  ``"fix_width"`` (width = K, policy picks depth), ``"fix_depth"`` (depth = L,
  policy picks width), and ``"fixed"`` (no policy: a given (width, depth),
  e.g. the RL baseline of Section V.B with the largest network).  Labels and
  losses are restricted accordingly.
* :func:`make_pretrain` and :func:`make_train`: Algorithm 1 as pure
  functions built from ``lax.scan``; ``jax.jit(jax.vmap(train))`` runs seeds
  and sweep points side by side (the swept :class:`SystemParams` fields are
  traced; shapes live in the static :class:`TrainConfig`).
* :class:`Pipeline` (scheduler, policy, allocator) with ``.decide(scn)``,
  :func:`save_pipeline` and :func:`load_pipeline`.

Policy inputs (a choice: the paper does not list them).  The label of Eq. 28
trades the allocator's quality against its inference delay, which is
lambda M_Alloc(k, l, n) / f_ser with M_Alloc linear in the number n of served
users.  The summary therefore holds, for the offloaded set S
(:data:`POLICY_INPUTS`, 10 numbers): log n (0 if S is empty); the means over
S of the five normalised log features of ``moe.normalize_features`` (what the
allocator sees); log of the summed normalised importance weights
``sum_S w_i d_ref / gamma`` (Eq. 19, dimensionless); and log(f_ser / f_ref),
log(b_max / b_ref), log(lambda / lambda_ref) with the reference being the
allocator's training ``sys_params``, so one policy can serve sweeps of the
server.  It is invariant to the order of users and defined for any N.  Size:
10 -> 32 -> 2, 418 parameters and 384 MACs (Eq. 8 with zeta = 1; the O(N)
sums of the summary are not counted, as bias adds and activations are not).

Outputs: the last layer's output is offset by the centre ``((K+1)/2,
(L+1)/2)`` of the action box, so an untrained policy starts mid-range; MSE
(Eq. 29) is on the raw real outputs against the integer labels.

Units: SI throughout; costs as in :mod:`dynmec_jax.scheduling`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct

from dynmec_jax import accounting, allocation, moe, scheduling, system
from dynmec_jax.system import Scenario, SystemParams

Array = Any

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent / "pretrained" / "pipeline"

#: Table II: learning rate of the policy model.
LEARNING_RATE = 1e-4
#: Names of the policy inputs (:func:`policy_features`), in order.
POLICY_INPUTS = ("log_n_served", "mean_log_size", "mean_log_workload", "mean_log_deadline",
                 "mean_log_distance", "mean_log_f_local", "log_sum_importance",
                 "log_f_server_ratio", "log_bandwidth_ratio", "log_efficiency_ratio")
N_POLICY_INPUTS = len(POLICY_INPUTS)
VARIANTS = ("full", "fix_width", "fix_depth", "fixed")


# ----------------------------------------------------------------------------
# Inputs and the network
# ----------------------------------------------------------------------------

def _safe_log(x: Array, ok: Array) -> Array:
    return jnp.where(ok, jnp.log(jnp.where(ok, x, 1.0)), 0.0)


def policy_features(scn: Scenario, offload: Array, scales: moe.FeatureScales,
                    sys_params: SystemParams, ref_params: SystemParams) -> Array:
    """Permutation-invariant summary of the offloaded tasks, ``(..., 10)`` (dimensionless).

    See the module doc and :data:`POLICY_INPUTS`.  ``scn`` fields ``(B, N)``
    (or ``(N,)``); ``offload`` bool ``(B, N)`` or a stack of masks
    ``(B, M, N)`` (then the scenario is broadcast over M).  An empty set gives
    zeros for the set statistics (finite values and gradients).
    ``ref_params``: the reference system (the allocator's training one).
    """
    x = jnp.asarray(offload).astype(bool)
    z = moe.normalize_features(scn, scales)                         # (..., N, 5)
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    w = w * scales.deadline / sys_params.importance_scale            # dimensionless
    extra = x.ndim - jnp.ndim(scn.size)
    for _ in range(extra):
        z = jnp.expand_dims(z, -3)
        w = jnp.expand_dims(w, -2)
    n = jnp.sum(x, axis=-1)
    nf = n.astype(z.dtype)
    has = n > 0
    sums = jnp.sum(jnp.where(x[..., None], z, 0.0), axis=-2)
    means = jnp.where(has[..., None], sums / jnp.where(has, nf, 1.0)[..., None], 0.0)
    wsum = jnp.sum(jnp.where(x, w, 0.0), axis=-1)
    server = jnp.stack([jnp.log(sys_params.f_server / ref_params.f_server),
                        jnp.log(sys_params.bandwidth_max / ref_params.bandwidth_max),
                        jnp.log(sys_params.efficiency / ref_params.efficiency)])
    server = jnp.broadcast_to(server.astype(z.dtype), n.shape + (3,))
    return jnp.concatenate([_safe_log(nf, has)[..., None], means,
                            _safe_log(wsum, wsum > 0)[..., None], server], axis=-1)


class Policy(nn.Module):
    """Policy MLP of Section IV.C: ``10 -> hidden (LeakyReLU) -> 2`` = (width, depth).

    The output is ``Dense(2)(h) + ((K+1)/2, (L+1)/2)`` in units of experts
    and layers (real-valued; :func:`choose` rounds and clips).  Parameters:
    ``10 hidden + hidden + 2 hidden + 2`` = 418 at hidden = 32; MACs
    :func:`policy_macs` (384).

    Attributes:
      n_experts: K; n_layers: L (set the output offset).
      hidden: hidden units (Section V: 32).
      negative_slope: LeakyReLU slope.
    """

    n_experts: int = 10
    n_layers: int = 3
    hidden: int = scheduling.HIDDEN
    negative_slope: float = scheduling.NEGATIVE_SLOPE

    @nn.compact
    def __call__(self, features: Array) -> Array:
        h = nn.leaky_relu(nn.Dense(self.hidden, name="hidden")(features), self.negative_slope)
        centre = jnp.array([(self.n_experts + 1) / 2, (self.n_layers + 1) / 2], h.dtype)
        return nn.Dense(2, name="out")(h) + centre


def policy_macs(hidden: int = scheduling.HIDDEN) -> int:
    """M_Poli of Eq. 35 for :class:`Policy` [MACs] (Eq. 8, zeta = 1)."""
    return accounting.policy_macs(N_POLICY_INPUTS, hidden)


def policy_params_count(hidden: int = scheduling.HIDDEN) -> int:
    """Trainable parameters of :class:`Policy` [count]."""
    return accounting.mlp_params(accounting.policy_dims(N_POLICY_INPUTS, hidden))


def init_policy(key: Array, model: Policy) -> dict:
    """Initial parameters of ``model``."""
    return model.init(key, jnp.zeros((N_POLICY_INPUTS,), jnp.float32))


def _check_variant(variant: str):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def choose(out: Array, n_experts: int, n_layers: int, variant: str = "full",
           fixed: tuple | None = None):
    """Rounds and clips the policy output ``(..., 2)`` to ints (width, depth), each ``(...)``.

    ``variant``: "full" uses both outputs; "fix_width" sets width = K;
    "fix_depth" sets depth = L; "fixed" returns ``fixed`` = (width, depth)
    (default (K, L)) and ignores ``out``.  int32, in ``[1, K] x [1, L]``.
    """
    _check_variant(variant)
    shape = out.shape[:-1]
    r = jnp.round(out).astype(jnp.int32)
    width = jnp.clip(r[..., 0], 1, n_experts)
    depth = jnp.clip(r[..., 1], 1, n_layers)
    if variant in ("fix_width", "fixed"):
        width = jnp.full(shape, n_experts if variant == "fix_width" or fixed is None
                         else fixed[0], jnp.int32)
    if variant in ("fix_depth", "fixed"):
        depth = jnp.full(shape, n_layers if variant == "fix_depth" or fixed is None
                         else fixed[1], jnp.int32)
    return width, depth


def allowed_subnets(n_experts: int, n_layers: int, variant: str = "full",
                    fixed: tuple | None = None) -> np.ndarray:
    """Bool ``(K, L)``: the sub-networks a variant may choose (Eq. 28 restricted)."""
    _check_variant(variant)
    a = np.zeros((n_experts, n_layers), bool)
    if variant == "full":
        a[:] = True
    elif variant == "fix_width":
        a[n_experts - 1, :] = True
    elif variant == "fix_depth":
        a[:, n_layers - 1] = True
    else:
        k, d = (n_experts, n_layers) if fixed is None else fixed
        a[k - 1, d - 1] = True
    return a


# ----------------------------------------------------------------------------
# Labels (Eq. 28) and loss (Eq. 29)
# ----------------------------------------------------------------------------

def label_costs(allocator, logits_all: Array, scn: Scenario, offload: Array,
                sys_params: SystemParams, scheduler_macs=0, policy_macs_=0) -> Array:
    """Mean C^edge over the offloaded tasks for every sub-network, ``(K, L, B)`` (Eq. 25, 28).

    ``logits_all``: ``allocator.logits_all(scn)`` ``(K, L, B, N, 2)``.
    Inference delay of Eq. 35 included: lambda (M_Sced + M_Poli +
    M_Alloc(k, l, n)) / f_ser with n the number offloaded.  Scenarios with
    nothing offloaded give 0 everywhere.
    """
    x = jnp.asarray(offload).astype(bool)
    bandwidth = sys_params.bandwidth_max * moe.masked_softmax(logits_all[..., 0], x)
    f_alloc = sys_params.f_server * moe.masked_softmax(logits_all[..., 1], x)
    n = jnp.sum(x, axis=-1)
    _, t_edge = scheduling.inference_delays(
        sys_params, scheduler_macs, policy_macs_, scheduling.allocator_macs_table(allocator, n))
    c = system.cost_edge(scn, jnp.where(x, bandwidth, 1.0), jnp.where(x, f_alloc, 1.0),
                         sys_params, t_edge[..., None])
    total = jnp.sum(jnp.where(x, c, 0.0), axis=-1)
    return total / jnp.maximum(n, 1).astype(total.dtype)


def labels(allocator, logits_all: Array, scn: Scenario, offload: Array,
           sys_params: SystemParams, scheduler_macs=0, policy_macs_=0,
           variant: str = "full", fixed: tuple | None = None):
    """Eq. 28: ``(width*, depth*)`` = argmin over allowed (k, l) of the mean C^edge.

    Returns ``(width, depth, costs)``: int32 ``(B,)`` each (1-based) and the
    ``(K, L, B)`` table of :func:`label_costs`.  Ties go to the smallest
    width, then depth.  NaN costs are treated as +inf.
    """
    costs = label_costs(allocator, logits_all, scn, offload, sys_params, scheduler_macs,
                        policy_macs_)
    K, L = costs.shape[:2]
    allowed = jnp.asarray(allowed_subnets(K, L, variant, fixed))
    c = jnp.where(allowed[..., None] & ~jnp.isnan(costs), costs, jnp.inf)
    flat = c.reshape((K * L,) + c.shape[2:])
    idx = jnp.argmin(flat, axis=0)
    return (idx // L + 1).astype(jnp.int32), (idx % L + 1).astype(jnp.int32), costs


def policy_loss(out: Array, width: Array, depth: Array, valid: Array,
                variant: str = "full") -> Array:
    """Eq. 29: ||P_label - P_out||^2, averaged over the ``valid`` scenarios.

    ``out`` ``(B, 2)``; labels int ``(B,)``; ``valid`` bool ``(B,)`` (at least
    one offloaded task).  "fix_width" uses only the depth output, "fix_depth"
    only the width output, "fixed" gives 0.  Units: experts^2 + layers^2.
    """
    _check_variant(variant)
    target = jnp.stack([width, depth], -1).astype(out.dtype)
    use = jnp.array([variant in ("full", "fix_depth"), variant in ("full", "fix_width")])
    sq = jnp.sum(jnp.where(use, jnp.square(out - target), 0.0), axis=-1)
    v = jnp.asarray(valid).astype(out.dtype)
    return jnp.sum(sq * v) / jnp.maximum(jnp.sum(v), 1.0)


# ----------------------------------------------------------------------------
# Algorithm 1
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static settings of Algorithm 1 (shapes, step counts, optimiser choices).

    Attributes:
      n_users: N (fixes the scheduler's input size; one scheduler per N).
      batch: scenarios per step (pre-training and episodes).
      pretrain_steps: policy pre-training steps with all tasks offloaded
        (Algorithm 1, lines 2-6).
      episodes: E_max of Algorithm 1 (one batch and one update of each model
        per episode).
      scheduler_lr, policy_lr: Table II: 2e-3 and 1e-4.
      scheduler_optimizer, policy_optimizer: "adam" or "sgd".
      estimator: "marginal" (the default; beyond the paper: Eq. 23's update on
        the system-level counterfactual costs of
        :func:`~dynmec_jax.scheduling.marginal_costs`), "eq23" (Eq. 23 with
        the task's own costs held fixed) or "reinforce".
      variant: "full", "fix_width", "fix_depth" or "fixed" (module doc).
      fixed_width, fixed_depth: the sub-network of variant "fixed" (None:
        the largest, K and L).
      scheduler_hidden, policy_hidden: hidden units (Section V: 32).
      scheduler: the scheduler network, "set" (per-user
        :class:`~dynmec_jax.scheduling.SetScheduler`, parameters independent
        of N; the default) or "paper" (Eq. 21-22's ``5N -> 32 -> N``).
      scheduler_layers: hidden layers per pass of the "set" scheduler (the
        paper's has one).
      scheduler_passes: passes of the "set" scheduler (2: a second pass that
        also sees the tasks the first pass would offload).
      advantage: "relative" (default) or "raw" (Eq. 23 as printed); see
        :func:`~dynmec_jax.scheduling.advantages`.
      entropy: weight of an entropy bonus on the offloading probabilities at
        the first episode, decaying linearly to 0 at the last (0 = none).
      clip_norm: global-norm clip of the scheduler's gradient (0 = none).
    """

    n_users: int = 30
    batch: int = 64
    pretrain_steps: int = 3000
    episodes: int = 2000
    scheduler_lr: float = scheduling.LEARNING_RATE
    policy_lr: float = LEARNING_RATE
    scheduler_optimizer: str = "adam"
    policy_optimizer: str = "adam"
    estimator: str = "marginal"
    variant: str = "full"
    fixed_width: int | None = None
    fixed_depth: int | None = None
    scheduler_hidden: int = scheduling.HIDDEN
    policy_hidden: int = scheduling.HIDDEN
    scheduler: str = "set"
    scheduler_layers: int = 2
    scheduler_passes: int = 2
    advantage: str = "relative"
    entropy: float = 0.0
    clip_norm: float = 0.0

    def fixed(self, n_experts: int, n_layers: int):
        """(width, depth) of variant "fixed" (defaults: K, L)."""
        return (n_experts if self.fixed_width is None else self.fixed_width,
                n_layers if self.fixed_depth is None else self.fixed_depth)


class TrainState(NamedTuple):
    """Parameters and optimiser states of Algorithm 1, and the episode counter."""

    scheduler: Any
    scheduler_opt: Any
    policy: Any
    policy_opt: Any
    episode: Array


class Models(NamedTuple):
    """The static parts of a joint model: modules, sizes and MAC counts."""

    scheduler: scheduling.Scheduler
    policy: Policy
    n_experts: int
    n_layers: int
    variant: str
    fixed: tuple
    scheduler_macs: int
    policy_macs: int


def build_models(config: TrainConfig, allocator) -> Models:
    """Modules and MAC counts (M_Sced, M_Poli of Eq. 34-35) for ``config``.

    M_Poli is 0 for variant "fixed" (no policy runs).
    """
    _check_variant(config.variant)
    K, L = allocator.n_experts, allocator.n_layers
    fixed = config.fixed(K, L)
    if not (1 <= fixed[0] <= K and 1 <= fixed[1] <= L):
        raise ValueError(f"fixed sub-network {fixed} outside [1, {K}] x [1, {L}]")
    if config.advantage not in scheduling.ADVANTAGES:
        raise ValueError(f"advantage must be one of {scheduling.ADVANTAGES}, "
                         f"got {config.advantage!r}")
    sched, sched_macs = scheduling.build_scheduler(config.scheduler, config.n_users,
                                                   config.scheduler_hidden,
                                                   config.scheduler_layers,
                                                   config.scheduler_passes)
    return Models(
        scheduler=sched, policy=Policy(K, L, config.policy_hidden), n_experts=K, n_layers=L,
        variant=config.variant, fixed=fixed, scheduler_macs=sched_macs,
        policy_macs=0 if config.variant == "fixed" else policy_macs(config.policy_hidden))


def _opt(kind: str, lr: float, clip_norm: float = 0.0) -> optax.GradientTransformation:
    return scheduling.make_optimizer(lr, kind, clip_norm)


def decide_subnet(models: Models, policy_params, allocator, scn: Scenario, offload: Array,
                  sys_params: SystemParams):
    """The policy's (width, depth) for offload set(s) ``offload`` (``(B, N)`` or ``(B, M, N)``).

    Greedy (rounded) choice; int32 of the mask's leading shape.
    """
    feats = policy_features(scn, offload, allocator.scales, sys_params, allocator.sys_params)
    out = models.policy.apply(policy_params, feats)
    return choose(out, models.n_experts, models.n_layers, models.variant, models.fixed)


def joint_step_quantities(models: Models, state: TrainState, allocator, scn: Scenario,
                          offload: Array, sys_params: SystemParams, logits_all=None,
                          marginal: bool = False, advantage: str = "raw"):
    """Everything one episode needs for the sampled/greedy actions ``offload``.

    Returns a dict: ``logits`` (scheduler, ``(B, N)``), ``probs``,
    ``costs`` (:class:`~dynmec_jax.scheduling.TaskCosts`), ``rewards``
    (Eq. 23, ``(B, N)``; with ``marginal`` the costs are the system-level
    ones of :func:`~dynmec_jax.scheduling.marginal_costs`), factual
    ``width``/``depth`` ``(B,)``, Eq. 28
    ``label_width``/``label_depth`` on the current offload set, ``valid``
    (scenarios with an offloaded task) and the ``logits_all`` table.
    """
    if logits_all is None:
        logits_all = allocator.logits_all(scn)
    logits = scheduling.offload_logits(models.scheduler, state.scheduler, scn, allocator.scales)
    probs = jax.nn.sigmoid(logits)

    def decide(masks):
        return decide_subnet(models, state.policy, allocator, scn, masks, sys_params)

    cost_fn = scheduling.marginal_costs if marginal else scheduling.task_costs
    costs = cost_fn(allocator, logits_all, scn, offload, decide, sys_params,
                    models.scheduler_macs, models.policy_macs)
    width, depth = decide(offload)
    lw, ld, _ = labels(allocator, logits_all, scn, offload, sys_params, models.scheduler_macs,
                       models.policy_macs, models.variant, models.fixed)
    return {"logits": logits, "probs": probs, "costs": costs,
            "rewards": scheduling.rewards(probs, costs, offload, advantage), "width": width,
            "depth": depth, "label_width": lw, "label_depth": ld,
            "valid": jnp.any(offload, axis=-1), "logits_all": logits_all}


def make_pretrain(config: TrainConfig, allocator):
    """Algorithm 1, lines 2-6: ``pretrain(key, sys_params) -> (policy_params, opt, metrics)``.

    Each step samples ``config.batch`` scenarios (``system.sample_scenarios``
    with the traced ``sys_params``), offloads every task, labels them by
    Eq. 28 (M_Sced and M_Poli included, constant across (k, l)) and takes one
    optimiser step on Eq. 29.  A ``lax.scan`` over ``config.pretrain_steps``;
    metrics ``loss``, ``accuracy`` (rounded output == label) stacked per step.
    """
    models = build_models(config, allocator)
    sp_n = config.n_users
    tx = _opt(config.policy_optimizer, config.policy_lr)

    def step(carry, key, sys_params):
        params, opt = carry
        scn = system.sample_scenarios(key, sys_params.replace(n_users=sp_n), config.batch)
        x = jnp.ones(scn.shape, bool)
        la = allocator.logits_all(scn)
        lw, ld, _ = labels(allocator, la, scn, x, sys_params, models.scheduler_macs,
                           models.policy_macs, models.variant, models.fixed)
        feats = policy_features(scn, x, allocator.scales, sys_params, allocator.sys_params)
        valid = jnp.ones(scn.shape[:1], bool)

        def loss_fn(p):
            out = models.policy.apply(p, feats)
            return policy_loss(out, lw, ld, valid, models.variant), out

        (loss, out), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        params = optax.apply_updates(params, upd)
        w, d = choose(out, models.n_experts, models.n_layers, models.variant, models.fixed)
        acc = jnp.mean((w == lw) & (d == ld))
        return (params, opt), {"loss": loss, "accuracy": acc}

    def pretrain(key, sys_params, params=None):
        k_init, k_steps = jax.random.split(key)
        if params is None:
            params = init_policy(k_init, models.policy)
        opt = tx.init(params)
        if config.variant == "fixed" or config.pretrain_steps == 0:
            return params, opt, {"loss": jnp.zeros((0,)), "accuracy": jnp.zeros((0,))}
        keys = jax.random.split(k_steps, config.pretrain_steps)
        (params, opt), metrics = jax.lax.scan(lambda c, k: step(c, k, sys_params),
                                              (params, opt), keys)
        return params, opt, metrics

    return pretrain


def make_episode(config: TrainConfig, allocator):
    """One episode of Algorithm 1 (lines 11-16).

    ``episode(state, key, sys_params) -> (state, metrics)``: samples
    ``config.batch`` scenarios of ``sys_params`` (Section V's distribution,
    N = ``config.n_users``) and applies :func:`make_update` to them.
    """
    update = make_update(config, allocator)

    def episode(state: TrainState, key, sys_params: SystemParams):
        k_scn, k_act = jax.random.split(key)
        scn = system.sample_scenarios(k_scn, sys_params.replace(n_users=config.n_users),
                                      config.batch)
        return update(state, scn, k_act, sys_params)

    return episode


def make_update(config: TrainConfig, allocator):
    """The update of one episode of Algorithm 1 (lines 12-16) on given scenarios.

    ``update(state, scn, key, sys_params) -> (state, metrics)``, ``scn``
    fields ``(B, N)`` (any scenarios, e.g. a synthetic instance in a test).

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
    tx_s = _opt(config.scheduler_optimizer, config.scheduler_lr, config.clip_norm)
    tx_p = _opt(config.policy_optimizer, config.policy_lr)

    def update(state: TrainState, scn: Scenario, k_act, sys_params: SystemParams):
        z = moe.normalize_features(scn, allocator.scales)
        logits = models.scheduler.apply(state.scheduler, z)
        x = scheduling.sample_actions(k_act, jax.nn.sigmoid(logits))
        q = joint_step_quantities(models, state, allocator, scn, x, sys_params,
                                  marginal=config.estimator == "marginal",
                                  advantage=config.advantage)
        costs = q["costs"]
        # Entropy bonus: config.entropy at the first episode, linearly down to 0 at the last.
        frac = state.episode.astype(logits.dtype) / max(config.episodes, 1)
        ent = config.entropy * jnp.maximum(1.0 - frac, 0.0)

        def s_loss(p):
            lg = models.scheduler.apply(p, z)
            return scheduling.scheduler_loss(lg, costs, x, config.estimator, config.advantage,
                                             ent)

        g_s = jax.grad(s_loss)(state.scheduler)
        upd, s_opt = tx_s.update(g_s, state.scheduler_opt, state.scheduler)
        s_params = optax.apply_updates(state.scheduler, upd)

        feats = policy_features(scn, x, allocator.scales, sys_params, allocator.sys_params)

        def p_loss(p):
            return policy_loss(models.policy.apply(p, feats), q["label_width"],
                               q["label_depth"], q["valid"], models.variant)

        loss_p, g_p = jax.value_and_grad(p_loss)(state.policy)
        if config.variant == "fixed":
            p_params, p_opt = state.policy, state.policy_opt
        else:
            upd, p_opt = tx_p.update(g_p, state.policy_opt, state.policy)
            p_params = optax.apply_updates(state.policy, upd)

        probs = q["probs"]
        taken = jnp.where(x, costs.edge, costs.local)
        valid = q["valid"].astype(probs.dtype)
        hit = ((q["width"] == q["label_width"]) & (q["depth"] == q["label_depth"]))
        metrics = {
            "reward": jnp.mean(q["rewards"]),
            "cost": jnp.mean(taken),
            "expected_cost": jnp.mean(probs * costs.edge + (1 - probs) * costs.local),
            "offload_fraction": jnp.mean(x),
            "policy_loss": loss_p,
            "policy_accuracy": jnp.sum(hit * valid) / jnp.maximum(jnp.sum(valid), 1.0),
            "width": jnp.mean(q["width"]), "depth": jnp.mean(q["depth"]),
        }
        return TrainState(s_params, s_opt, p_params, p_opt, state.episode + 1), metrics

    return update


def make_train(config: TrainConfig, allocator):
    """Algorithm 1 as one pure program: ``train(key, sys_params) -> (TrainState, metrics)``.

    The allocator is fixed (closed over).  Pre-trains the policy with all
    tasks offloaded (:func:`make_pretrain`), initialises the scheduler
    randomly, then runs ``config.episodes`` episodes (:func:`make_episode`)
    in a ``lax.scan``.  ``metrics = {"pretrain": {...per step}, "joint":
    {...per episode}}``.  Pure: ``jax.jit(jax.vmap(train))`` over stacked
    keys and a stacked ``SystemParams`` trains several seeds and sweep
    points at once (``n_users`` is taken from ``config``).
    """
    models = build_models(config, allocator)
    pretrain = make_pretrain(config, allocator)
    episode = make_episode(config, allocator)
    tx_s = _opt(config.scheduler_optimizer, config.scheduler_lr, config.clip_norm)

    def train(key, sys_params: SystemParams):
        k_pre, k_sched, k_joint = jax.random.split(key, 3)
        p_params, p_opt, pre_metrics = pretrain(k_pre, sys_params)
        s_params = scheduling.init_scheduler(k_sched, models.scheduler, config.n_users)
        state = TrainState(s_params, tx_s.init(s_params), p_params, p_opt,
                           jnp.zeros((), jnp.int32))
        keys = jax.random.split(k_joint, config.episodes)
        state, joint = jax.lax.scan(lambda s, k: episode(s, k, sys_params), state, keys)
        return state, {"pretrain": pre_metrics, "joint": joint}

    return train


def evaluate_state(config: TrainConfig, allocator, state: TrainState, scn: Scenario,
                   sys_params: SystemParams) -> dict:
    """Held-out check of a training state with greedy actions (x = [p > 0.5]).

    Returns scalars: ``reward`` (mean Eq. 23 reward of the greedy actions),
    ``cost`` (mean cost C of the taken actions, Eq. 24-25),
    ``expected_cost`` (mean p C^edge + (1-p) C^loc), ``offload_fraction``,
    ``policy_accuracy`` (greedy (width, depth) == Eq. 28 label).
    """
    models = build_models(config, allocator)
    scn = system.as_scenario(scn)
    probs = scheduling.offload_probabilities(models.scheduler, state.scheduler, scn,
                                             allocator.scales)
    x = scheduling.greedy_actions(probs)
    q = joint_step_quantities(models, state, allocator, scn, x, sys_params)
    c = q["costs"]
    valid = q["valid"].astype(probs.dtype)
    hit = (q["width"] == q["label_width"]) & (q["depth"] == q["label_depth"])
    return {"reward": jnp.mean(q["rewards"]),
            "cost": jnp.mean(jnp.where(x, c.edge, c.local)),
            "expected_cost": jnp.mean(probs * c.edge + (1 - probs) * c.local),
            "offload_fraction": jnp.mean(x),
            "policy_accuracy": jnp.sum(hit * valid) / jnp.maximum(jnp.sum(valid), 1.0)}


# ----------------------------------------------------------------------------
# The joint pipeline
# ----------------------------------------------------------------------------

class Decision(NamedTuple):
    """The pipeline's decision for a scenario or a batch (leading shape ``(...)``).

    Attributes:
      offload: x_i, bool ``(..., N)``.
      width, depth: the allocator sub-network, int32 ``(...)``.
      bandwidth: b_i [Hz], ``(..., N)`` (0 for local tasks; sums to b_max
        over offloaded ones).
      f_alloc: f_i^ser [cycles/s], ``(..., N)`` (likewise with f_ser).
      inference_delay_local: T_l^infer of Eq. 34 [s], ``(...)``.
      inference_delay_edge: T_e^infer of Eq. 35 [s], ``(...)`` (with
        M_Alloc for the number actually offloaded).
    """

    offload: Array
    width: Array
    depth: Array
    bandwidth: Array
    f_alloc: Array
    inference_delay_local: Array
    inference_delay_edge: Array


def allocate_subnet(allocator, scn: Scenario, offload: Array, width: Array, depth: Array,
                    sys_params: SystemParams):
    """``(bandwidth [Hz], f_alloc [cycles/s])`` of per-scenario sub-networks (Eq. 12-20).

    Traced width/depth ``(B,)`` are fine (one compiled function serves all).
    """
    logits, _ = allocator.logits(scn, width, depth)
    x = jnp.asarray(offload).astype(bool)
    return (sys_params.bandwidth_max * moe.masked_softmax(logits[..., 0], x),
            sys_params.f_server * moe.masked_softmax(logits[..., 1], x))


@struct.dataclass
class Pipeline:
    """Scheduler + policy + allocator (Section IV), a pytree usable inside ``jit``.

    Attributes:
      scheduler_params, policy_params: trained parameters (``policy_params``
        unused for variant "fixed").
      allocator: the fixed :class:`~dynmec_jax.allocation.Allocator`.
      models: :class:`Models` (static): modules, variant, MAC counts.
      record: JSON text (training config and record), static.
    """

    scheduler_params: Any
    policy_params: Any
    allocator: Any
    models: Models = struct.field(pytree_node=False)
    record: str = struct.field(pytree_node=False, default="{}")

    @property
    def n_users(self) -> int | None:
        """N the scheduler was built for; None for a per-user scheduler (any N)."""
        return getattr(self.models.scheduler, "n_users", None)

    def decide(self, scn: Scenario, sys_params: SystemParams | None = None) -> Decision:
        """Greedy joint decision: offload (p > 0.5), (width, depth), allocation, delays.

        ``scn`` fields ``(N,)`` or ``(B, N)`` (NumPy or JAX); ``sys_params``
        defaults to the allocator's.  Returns a :class:`Decision` of the same
        leading shape.
        """
        sp = self.allocator.sys_params if sys_params is None else sys_params
        scn = system.as_scenario(scn)
        single = jnp.ndim(scn.size) == 1
        if single:
            scn = jax.tree.map(lambda a: a[None], scn)
        d = _decide_jit(self, scn, sp)
        return jax.tree.map(lambda a: a[0], d) if single else d


def decide_body(pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                offload: Array | None = None) -> Decision:
    """:meth:`Pipeline.decide` for ``(B, N)`` scenarios (jit-able).

    ``offload``: override the scheduler (e.g. the Rand baseline); None uses
    the greedy scheduler.  Inference delays follow Eq. 34-35 with the
    pipeline's M_Sced and M_Poli.
    """
    m = pipe.models
    if offload is None:
        probs = scheduling.offload_probabilities(m.scheduler, pipe.scheduler_params, scn,
                                                 pipe.allocator.scales)
        offload = scheduling.greedy_actions(probs)
    x = jnp.asarray(offload).astype(bool)
    width, depth = decide_subnet(m, pipe.policy_params, pipe.allocator, scn, x, sys_params)
    bandwidth, f_alloc = allocate_subnet(pipe.allocator, scn, x, width, depth, sys_params)
    n = jnp.sum(x, axis=-1)
    t_loc, t_edge = scheduling.inference_delays(
        sys_params, scheduling.module_macs(m.scheduler, x.shape[-1]), m.policy_macs,
        scheduling.allocator_macs(pipe.allocator, width, depth, n))
    shape = n.shape
    return Decision(x, width, depth, bandwidth, f_alloc, jnp.broadcast_to(t_loc, shape),
                    jnp.broadcast_to(t_edge, shape))


_decide_jit = jax.jit(decide_body)


def make_pipeline(config: TrainConfig, allocator, state: TrainState,
                  record: dict | None = None) -> Pipeline:
    """A :class:`Pipeline` from a trained :class:`TrainState` (one seed, not vmapped)."""
    rec = {"config": dataclasses.asdict(config), **(record or {})}
    return Pipeline(scheduler_params=state.scheduler, policy_params=state.policy,
                    allocator=allocator, models=build_models(config, allocator),
                    record=json.dumps(rec))


def _allocator_model_cfg(allocator) -> dict:
    rec = json.loads(allocator.record or "{}")
    if "model" in rec:
        return dict(rec["model"])
    mdl = allocator.model
    if allocator.is_moe:
        return {"kind": "moe", "n_experts": mdl.n_experts, "n_layers": mdl.n_layers,
                "hidden": mdl.hidden, "negative_slope": mdl.negative_slope}
    return {"kind": "static", "n_experts": 1, "n_layers": mdl.n_layers,
            "hidden": mdl.hidden, "static_hidden": mdl.hidden,
            "negative_slope": mdl.negative_slope}


def _atomic_write(path: pathlib.Path, data: bytes):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_pipeline(pipe: Pipeline, path) -> pathlib.Path:
    """Writes a pipeline under directory ``path``.

    Files: ``scheduler.msgpack``, ``policy.msgpack`` (flax msgpack),
    ``pipeline.json`` (module settings, variant, fixed sub-network, record)
    and ``allocator/`` (:func:`dynmec_jax.allocation.save_allocator`).
    """
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    m = pipe.models
    is_set = isinstance(m.scheduler, scheduling.SetScheduler)
    meta = {
        "scheduler": {"kind": "set" if is_set else "paper",
                      "n_users": None if is_set else m.scheduler.n_users,
                      "n_layers": m.scheduler.n_layers if is_set else 1,
                      "passes": m.scheduler.passes if is_set else 1,
                      "trained_n_users": json.loads(pipe.record or "{}").get(
                          "config", {}).get("n_users"),
                      "hidden": m.scheduler.hidden,
                      "negative_slope": m.scheduler.negative_slope},
        "policy": {"hidden": m.policy.hidden, "negative_slope": m.policy.negative_slope},
        "variant": m.variant, "fixed": list(m.fixed),
        "record": json.loads(pipe.record or "{}"),
    }
    allocation.save_allocator(pipe.allocator, path / "allocator",
                              _allocator_model_cfg(pipe.allocator),
                              json.loads(pipe.allocator.record or "{}").get("record"))
    _atomic_write(path / "scheduler.msgpack",
                  serialization.to_bytes(jax.tree.map(np.asarray, pipe.scheduler_params)))
    _atomic_write(path / "policy.msgpack",
                  serialization.to_bytes(jax.tree.map(np.asarray, pipe.policy_params)))
    _atomic_write(path / "pipeline.json", json.dumps(meta, indent=1).encode())
    return path


def load_pipeline(path=None) -> Pipeline:
    """Loads a saved pipeline; ``path=None`` loads the shipped default.

    The default lives in ``dynmec_jax/pretrained/pipeline`` (made by
    ``launch/train_joint.py --export_pretrained``).

    Raises ``FileNotFoundError`` naming the missing file (e.g. when the
    default has not been produced yet) and ``ValueError`` naming the path if
    the files are corrupt.
    """
    path = PRETRAINED_DIR if path is None else pathlib.Path(path)
    files = [path / "pipeline.json", path / "scheduler.msgpack", path / "policy.msgpack"]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"pipeline checkpoint file missing: {f}")
    allocator = allocation.load_allocator(path / "allocator")
    try:
        meta = json.loads(files[0].read_text())
        s, p = meta["scheduler"], meta["policy"]
        K, L = allocator.n_experts, allocator.n_layers
        variant = meta["variant"]
        _check_variant(variant)
        fixed = tuple(int(v) for v in meta["fixed"])
        kind = s.get("kind", "paper")
        if kind == "set":
            sched = scheduling.SetScheduler(int(s["hidden"]), int(s["n_layers"]),
                                            float(s["negative_slope"]),
                                            int(s.get("passes", 1)))
            n_ref = int(s.get("trained_n_users") or system.SystemParams().n_users)
        else:
            sched = scheduling.Scheduler(int(s["n_users"]), int(s["hidden"]),
                                         float(s["negative_slope"]))
            n_ref = sched.n_users
        pol = Policy(K, L, int(p["hidden"]), float(p["negative_slope"]))
        models = Models(sched, pol, K, L, variant, fixed, scheduling.module_macs(sched, n_ref),
                        0 if variant == "fixed" else policy_macs(pol.hidden))
        s_tmpl = scheduling.init_scheduler(jax.random.key(0), sched, n_ref)
        p_tmpl = init_policy(jax.random.key(0), pol)
        s_params = serialization.from_bytes(s_tmpl, files[1].read_bytes())
        p_params = serialization.from_bytes(p_tmpl, files[2].read_bytes())
        for t, v in ((s_tmpl, s_params), (p_tmpl, p_params)):
            if not jax.tree.all(jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), t, v)):
                raise ValueError("parameter shapes do not match the stored config")
    except Exception as e:  # msgpack/flax raise various types on corrupt bytes
        raise ValueError(f"corrupt pipeline checkpoint at {path}: {e}") from e
    return Pipeline(scheduler_params=jax.tree.map(jnp.asarray, s_params),
                    policy_params=jax.tree.map(jnp.asarray, p_params), allocator=allocator,
                    models=models, record=json.dumps(meta.get("record", {})))


# ----------------------------------------------------------------------------
# Config-driven training (launch/train_joint.py, launch/evaluate_joint.py)
# ----------------------------------------------------------------------------

_TRAIN_KEYS = ("batch", "pretrain_steps", "episodes", "scheduler_lr", "policy_lr",
               "scheduler_optimizer", "policy_optimizer", "estimator", "variant",
               "scheduler", "scheduler_hidden", "scheduler_layers", "scheduler_passes",
               "advantage", "entropy", "clip_norm")


def validate_config(cfg) -> None:
    """Host-side check of a ``configs/joint.py`` config; ``ValueError`` naming the field."""
    for name in ("seed", "n_seeds"):
        if name not in cfg:
            raise ValueError(f"config lacks field {name!r}")
    if int(cfg.n_seeds) < 1:
        raise ValueError(f"n_seeds must be >= 1, got {cfg.n_seeds}")
    system.params_from_overrides(cfg.system.to_dict())
    t = cfg.train
    for name in _TRAIN_KEYS:
        if name not in t:
            raise ValueError(f"config.train lacks field {name!r}")
    for name in ("batch", "episodes"):
        if int(t[name]) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {t[name]}")
    if int(t.pretrain_steps) < 0:
        raise ValueError(f"train.pretrain_steps must be >= 0, got {t.pretrain_steps}")
    for name in ("scheduler_lr", "policy_lr"):
        if not float(t[name]) > 0:
            raise ValueError(f"train.{name} must be > 0, got {t[name]}")
    for name in ("scheduler_optimizer", "policy_optimizer"):
        if t[name] not in ("adam", "sgd"):
            raise ValueError(f"train.{name} must be 'adam' or 'sgd', got {t[name]!r}")
    if t.estimator not in scheduling.ESTIMATORS:
        raise ValueError(f"train.estimator must be one of {scheduling.ESTIMATORS}, "
                         f"got {t.estimator!r}")
    _check_variant(t.variant)
    if t.scheduler not in scheduling.SCHEDULERS:
        raise ValueError(f"train.scheduler must be one of {scheduling.SCHEDULERS}, "
                         f"got {t.scheduler!r}")
    if t.advantage not in scheduling.ADVANTAGES:
        raise ValueError(f"train.advantage must be one of {scheduling.ADVANTAGES}, "
                         f"got {t.advantage!r}")
    for name in ("scheduler_hidden", "scheduler_layers", "scheduler_passes"):
        if int(t[name]) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {t[name]}")
    for name in ("entropy", "clip_norm"):
        if not float(t[name]) >= 0:
            raise ValueError(f"train.{name} must be >= 0, got {t[name]}")


def train_config(cfg, variant: str | None = None, n_users: int | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a joint config (``variant``/``n_users`` override it)."""
    t = cfg.train
    return TrainConfig(
        n_users=int(cfg.system.n_users if n_users is None else n_users),
        batch=int(t.batch), pretrain_steps=int(t.pretrain_steps), episodes=int(t.episodes),
        scheduler_lr=float(t.scheduler_lr), policy_lr=float(t.policy_lr),
        scheduler_optimizer=str(t.scheduler_optimizer),
        policy_optimizer=str(t.policy_optimizer), estimator=str(t.estimator),
        variant=str(t.variant if variant is None else variant), scheduler=str(t.scheduler),
        scheduler_hidden=int(t.scheduler_hidden), scheduler_layers=int(t.scheduler_layers),
        scheduler_passes=int(t.scheduler_passes), advantage=str(t.advantage),
        entropy=float(t.entropy), clip_norm=float(t.clip_norm))


def load_config_allocator(cfg):
    """The allocator named by ``cfg.allocator`` ("" = the pretrained default)."""
    path = str(cfg.get("allocator", "") or "")
    return allocation.load_allocator(path or None)


def seed_keys(seed: int, n: int) -> Array:
    """Per-seed keys ``(n,)``: seed s uses ``fold_in(key(seed), s)``."""
    base = jax.random.key(int(seed))
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))


def train_seeds(tc: TrainConfig, allocator, sys_params: SystemParams, keys: Array):
    """Algorithm 1 for every key at once: ``jit(vmap(make_train(tc)))``.

    Returns the stacked ``(TrainState, metrics)`` (leading axis = seeds).
    ``sys_params`` is shared by all seeds.
    """
    train = make_train(tc, allocator)
    return jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, sys_params)


def unstack(tree, i: int):
    """Seed ``i`` of a stacked pytree (e.g. a vmapped :class:`TrainState`)."""
    return jax.tree.map(lambda a: a[i], tree)
