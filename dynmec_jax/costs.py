"""Costs, rewards, labels and losses of the joint problem (Eq. 19-29, 34-35).

Everything here is a pure function of an :class:`~dynmec_jax.allocator.Allocator`,
scenarios and decisions; the networks are in :mod:`dynmec_jax.nets` and the
training loops in :mod:`dynmec_jax.train`.

* :func:`inference_delays`: T_l^infer and T_e^infer of Eq. 34-35 [s].
* :func:`task_costs`: C_i^loc (Eq. 24) and C_i^edge (Eq. 25) of every task,
  where C_i^edge of a task kept local is the cost it *would* have had if it
  alone had been offloaded in addition (the exact counterfactual, below).
* :func:`marginal_costs` (beyond the paper; the default estimator): the
  whole scenario's cost with S minus {i} and with S u {i}, for every task i.
* :func:`advantages`, :func:`rewards` and :func:`scheduler_loss`: Eq. 23
  (raw or relative advantage) and the update of Eq. 26-27.
* :func:`label_costs` / :func:`labels`: Eq. 28, the (width, depth) minimising
  the mean C^edge (inference delay of Eq. 35 included) over the offloaded
  tasks, every sub-network evaluated from one ``Allocator.logits_all``
  pass; :func:`policy_loss`: Eq. 29 (MSE).
* :func:`weighted_parts`: the allocator's two training losses (Section IV.A,
  after Eq. 19 and 20).

Eq. 23 (docs/reproduction.md).  As printed both branches are multiplied by p_i,
the offloading probability; then a good *local* decision would raise the
offloading probability, against the text.  We read p_i as the probability of
the action taken, pi_i = p_i if offloaded and 1 - p_i if kept local::

    R_i = (C_i^other - C_i^taken) pi_i,   C held fixed (stop_gradient).

Eq. 26 (the estimator).  The scheduler ascends the gradient of the mean
reward R(A) = mean over tasks i and scenarios of R_i.  Because the costs are
constants, for an offloaded task ``grad R_i = (C_loc - C_edge) grad p_i``, and
for a local one ``grad R_i = (C_edge - C_loc) grad (1 - p_i) = (C_loc -
C_edge) grad p_i``: the same for both branches, whichever action was sampled.
It is exactly ``-grad E_x[C_i] = -grad (p_i C_edge + (1 - p_i) C_loc)``, the
gradient of the expected per-task cost with the costs held fixed (the sampled
offload set only enters through the costs, via the shares the other users
get).  So the estimator is::

    g = (1 / (B N)) sum_{b, i} (C_bi^loc - C_bi^edge) grad_theta p_bi(theta),

applied with gradient ascent (Eq. 27) through optax (Adam by default, see
:func:`dynmec_jax.train.joint.make_optimizer`).  ``estimator="reinforce"`` gives the standard
score-function alternative, ``(1/(BN)) sum (b - C_taken) grad log pi``, with
b the batch-mean cost of the taken actions.

Counterfactual C_edge (exact).  The allocator's per-user logits (Eq. 18, 20)
do not depend on the offload mask: only the softmax over the offloaded set S
does.  For every task i, the set S u {i} gives i's shares by a softmax over
S u {i}; the policy re-decides (width, depth) on S u {i} and the logits of
that sub-network come from the one-pass ``Allocator.logits_all``.  For an
offloaded task S u {i} = S, so the same formula gives its factual cost.  All N
single flips are vectorised (``(B, N, N)`` arrays).

Units: SI (s, Hz, cycles/s, J); costs are alpha w T + beta E (w [1/s] T [s] is
dimensionless, E in J, as in Eq. 24-25).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynmec_jax import accounting, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: Scheduler update rules (:func:`scheduler_loss`).
ESTIMATORS = ("eq23", "reinforce", "marginal")


# ----------------------------------------------------------------------------
# Inference delays and per-task costs (Eq. 24-25, 34-35)
# ----------------------------------------------------------------------------

def inference_delays(sys_params: SystemParams, scheduler_macs, policy_macs, allocator_macs):
    """``(T_l^infer, T_e^infer)`` of Eq. 34-35 [s].

    T_l = lambda M_Sced / f_ser (paid by a local task: the scheduler ran);
    T_e = lambda (M_Sced + M_Poli + M_Alloc) / f_ser (paid by an offloaded
    task).  Each MAC count may be a number or an array (broadcast); pass 0
    for a network a method does not run.
    """
    t_local = accounting.inference_delay(scheduler_macs, sys_params)
    t_edge = accounting.inference_delay(
        jnp.asarray(scheduler_macs) + jnp.asarray(policy_macs) + jnp.asarray(allocator_macs),
        sys_params)
    return t_local, t_edge


class TaskCosts(NamedTuple):
    """Per-task costs of Eq. 24-25, each ``(B, N)``.

    Attributes:
      local: C_i^loc (Eq. 24) with T_l^infer.
      edge: C_i^edge (Eq. 25) with T_e^infer; for a task kept local, the
        exact cost it would have had had it been offloaded (S u {i}).
      width, depth: the (width, depth) the policy chose on S u {i} (int32).
      n_served: |S u {i}| (int32).
      scale: C_i^loc + C_i^edge, the task's own costs (Eq. 24-25 with S u
        {i}), the denominator of the relative advantage
        (:func:`advantages`); the same for :func:`marginal_costs`.  None
        means ``local + edge``.
    """

    local: Array
    edge: Array
    width: Array
    depth: Array
    n_served: Array
    scale: Array | None = None


def masked_mean(valid: Array | None) -> Callable[[Array], Array]:
    """The mean over the real users of padded scenarios (``valid`` bool ``(B, N)``), as a
    function of an array ``(B, N)``; ``jnp.mean`` when ``valid`` is None.  Units of the array."""
    if valid is None:
        return jnp.mean
    v = jnp.asarray(valid, bool)

    def mean(a):
        return jnp.sum(jnp.where(v, a, 0.0)) / jnp.maximum(jnp.sum(v), 1)

    return mean


def per_scenario(value, like: Array) -> Array:
    """A number, or a per-scenario ``(B,)`` array given trailing axes to broadcast against
    ``like`` ``(B, ...)`` (e.g. M_Sced of scenarios with different N, Eq. 34-35)."""
    v = jnp.asarray(value)
    return v.reshape(v.shape + (1,) * (jnp.ndim(like) - v.ndim)) if v.ndim else value


def task_costs(allocator, logits_all: Array, scn: Scenario, offload: Array,
               decide_fn: Callable[[Array], tuple], sys_params: SystemParams,
               scheduler_macs, policy_macs) -> TaskCosts:
    """C^loc and C^edge of every task (Eq. 24-25, 34-35), the edge one exact for flips.

    Args:
      allocator: the (fixed) :class:`~dynmec_jax.allocator.Allocator`.
      logits_all: ``allocator.logits_all(scn)``, ``(K, L, B, N, 2)``
        (mask-independent; computed once per batch).
      scn: tasks, fields ``(B, N)``.
      offload: x, bool ``(B, N)`` (the sampled or greedy actions).
      decide_fn: maps a set of offload masks ``(B, M, N)`` to the policy's
        ``(width, depth)``, int ``(B, M)`` each (a fixed sub-network ignores
        the masks).
      sys_params: the system (b_max [Hz], f_ser [cycles/s], lambda, ...).
      scheduler_macs, policy_macs: M_Sced and M_Poli [MACs] (0 if absent).
    Returns:
      :class:`TaskCosts`.  For task i the offload set is S u {i}: i's shares
      come from a softmax of the chosen sub-network's logits over S u {i},
      and its inference delay counts M_Alloc(width, depth, |S u {i}|).
    """
    x = jnp.asarray(offload).astype(bool)
    n = x.shape[-1]
    eye = jnp.eye(n, dtype=bool)
    masks = x[..., None, :] | eye                                # (B, N_i, N_j)
    width, depth = decide_fn(masks)                              # (B, N_i)
    logits = allocator_lib.gather_subnet(logits_all, width, depth)             # (B, N_i, N_j, 2)
    share_b, share_f = allocator_lib.shares(logits, masks, sys_params)  # (B, N_i, N_j)
    bandwidth = jnp.sum(jnp.where(eye, share_b, 0.0), -1)       # task i's own share
    f_alloc = jnp.sum(jnp.where(eye, share_f, 0.0), -1)
    n_served = jnp.sum(masks, axis=-1).astype(jnp.int32)         # (B, N_i)
    t_loc, t_edge = inference_delays(
        sys_params, per_scenario(scheduler_macs, width), policy_macs,
        allocator.macs(width, depth, n_served))
    c_loc = system.cost_local(scn, sys_params, t_loc)
    c_edge = system.cost_edge(scn, bandwidth, f_alloc, sys_params, t_edge)
    return TaskCosts(local=c_loc, edge=c_edge, width=width.astype(jnp.int32),
                     depth=depth.astype(jnp.int32), n_served=n_served, scale=c_loc + c_edge)


def _set_costs(allocator, logits_all, scn, masks, decide_fn, sys_params, scheduler_macs,
               policy_macs):
    """Total cost sum_j C_j (Eq. 24-25) of each offload set ``masks (B, M, N)``, ``(B, M)``."""
    width, depth = decide_fn(masks)                              # (B, M)
    logits = allocator_lib.gather_subnet(logits_all, width, depth)             # (B, M, N, 2)
    bandwidth, f_alloc = allocator_lib.shares(logits, masks, sys_params)
    n_served = jnp.sum(masks, axis=-1)
    t_loc, t_edge = inference_delays(sys_params, per_scenario(scheduler_macs, width),
                                     policy_macs, allocator.macs(width, depth, n_served))
    scn_b = jax.tree.map(lambda a: a[..., None, :], scn)         # (B, 1, N)
    c_edge = system.cost_edge(scn_b, jnp.where(masks, bandwidth, 1.0),
                              jnp.where(masks, f_alloc, 1.0), sys_params, t_edge[..., None])
    c_loc = system.cost_local(scn_b, sys_params, jnp.broadcast_to(t_loc, n_served.shape)[..., None])
    return jnp.sum(jnp.where(masks, c_edge, c_loc), axis=-1)


def marginal_costs(allocator, logits_all: Array, scn: Scenario, offload: Array,
                   decide_fn: Callable[[Array], tuple], sys_params: SystemParams,
                   scheduler_macs, policy_macs) -> TaskCosts:
    """System-level counterfactual costs (beyond the paper; estimator ``"marginal"``).

    For every task i: ``local`` = sum_j C_j (Eq. 24-25, inference delays of
    Eq. 34-35) of the whole scenario with the offload set S minus {i}, and
    ``edge`` = the same with S u {i}; the policy re-decides (width, depth)
    for each set.  Their difference is task i's *marginal* effect on the
    total cost, including the bandwidth and CPU shares its offloading takes
    from the other offloaded tasks, which the per-task costs of Eq. 23 ignore
    (a difference reward).  Same shapes and semantics as :func:`task_costs`
    (``width``/``depth``/``n_served`` of S u {i}), so :func:`rewards` and
    :func:`scheduler_loss` apply unchanged.  Cost units; ``(B, N)`` each.
    """
    x = jnp.asarray(offload).astype(bool)
    eye = jnp.eye(x.shape[-1], dtype=bool)
    m_out = x[..., None, :] & ~eye
    own = task_costs(allocator, logits_all, scn, x, decide_fn, sys_params, scheduler_macs,
                     policy_macs)
    tot_in = _set_costs(allocator, logits_all, scn, x[..., None, :] | eye, decide_fn,
                        sys_params, scheduler_macs, policy_macs)
    tot_out = _set_costs(allocator, logits_all, scn, m_out, decide_fn, sys_params,
                         scheduler_macs, policy_macs)
    return own._replace(local=tot_out, edge=tot_in)


# ----------------------------------------------------------------------------
# Reward and update (Eq. 23, 26-27)
# ----------------------------------------------------------------------------

#: Advantage scalings (:func:`advantages`).
ADVANTAGES = ("relative", "raw")


def advantages(costs: TaskCosts, offload: Array, kind: str = "raw") -> Array:
    """The per-task advantage of the action taken, ``(B, N)``, held fixed (``stop_gradient``).

    ``kind="raw"``: C^other - C^taken (Eq. 23 without the probability
    factor), in cost units.  Non-finite values (a counterfactual share that
    underflows to 0 gives an infinite C^edge) are replaced by the largest
    finite magnitude in the batch with their sign, so one such task cannot
    turn the update into NaN; NaN becomes 0.

    ``kind="relative"`` (beyond the paper; the default of training):
    ``(C^other - C^taken) / (C_i^loc + C_i^edge)`` with the task's *own* costs
    of :func:`task_costs` (``costs.scale``), clipped to [-1, 1]
    (dimensionless).  C^loc - C^edge is heavy-tailed (w_i ~ 1/d_i): for
    urgent tasks better offloaded it is orders of magnitude larger than for
    tasks better kept local, so the raw signal lets the urgent tasks drive
    every logit to "offload" within a few updates.  The relative one
    keeps the sign (which action is better) and weighs every task alike.  An
    infinite C^edge gives -1 or +1.
    """
    if kind not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {ADVANTAGES}, got {kind!r}")
    x = jnp.asarray(offload).astype(bool)
    adv = jax.lax.stop_gradient(jnp.where(x, costs.local - costs.edge, costs.edge - costs.local))
    if kind == "relative":
        scale = costs.local + costs.edge if costs.scale is None else costs.scale
        scale = jax.lax.stop_gradient(scale)
        ok = jnp.isfinite(scale) & (scale > 0)
        rel = jnp.where(ok, adv / jnp.where(ok, scale, 1.0), jnp.sign(adv))
        rel = jnp.where(jnp.isnan(rel), 0.0, rel)
        return jnp.clip(rel, -1.0, 1.0)
    finite = jnp.isfinite(adv)
    cap = jnp.max(jnp.where(finite, jnp.abs(adv), 0.0))
    adv = jnp.where(finite, adv, jnp.where(jnp.isnan(adv), 0.0, jnp.sign(adv) * cap))
    return adv


def action_probabilities(probs: Array, offload: Array) -> Array:
    """pi_i: p_i if task i was offloaded, 1 - p_i if kept local (Eq. 23, docs/reproduction.md)."""
    return jnp.where(jnp.asarray(offload).astype(bool), probs, 1.0 - probs)


def rewards(probs: Array, costs: TaskCosts, offload: Array, advantage: str = "raw") -> Array:
    """Eq. 23: R_i = (C_i^other - C_i^taken) pi_i, ``(B, N)`` (cost units).

    pi_i is the probability of the action taken (docs/reproduction.md); the
    costs are held fixed.  R(A) of Section IV.C is the mean over tasks.
    ``advantage="relative"`` scales the cost difference as in
    :func:`advantages` (dimensionless).
    """
    return advantages(costs, offload, advantage) * action_probabilities(probs, offload)


def bernoulli_entropy(logits: Array) -> Array:
    """Entropy of x ~ Bernoulli(sigmoid(logit)) [nats], from logits (stable), shape of logits."""
    p = jax.nn.sigmoid(logits)
    return p * jax.nn.softplus(-logits) + (1.0 - p) * jax.nn.softplus(logits)


def scheduler_loss(logits: Array, costs: TaskCosts, offload: Array,
                   estimator: str = "eq23", advantage: str = "raw",
                   entropy: Array = 0.0, valid: Array | None = None) -> Array:
    """Loss whose gradient *descent* is the Eq. 26-27 gradient *ascent* on R(A).

    ``estimator="eq23"``: ``-mean_{b,i} R_bi`` with R from :func:`rewards`;
    its gradient is ``-(1/BN) sum A_bi grad p_bi`` with A the advantage of
    :func:`advantages` (``advantage``: "raw" = C^loc - C^edge as in Eq. 23,
    "relative" = the same over the task's own costs).
    ``estimator="reinforce"``: ``-mean((b - C^taken) log pi)``, b the batch
    mean of C^taken (both held fixed; ``advantage`` does not apply).
    ``estimator="marginal"``: the same loss as "eq23", to be used with the
    costs of :func:`marginal_costs` (the caller picks the costs;
    :func:`dynmec_jax.train.joint.make_update` does).  ``entropy``: weight of
    an entropy bonus ``-entropy mean H(p)`` (0 = none).  ``logits``: the
    scheduler's output ``(B, N)``.  ``valid`` (bool ``(B, N)``, optional):
    the real users of padded scenarios; the means run over them only.
    Scalar (cost units for "raw", else dimensionless).
    """
    x = jnp.asarray(offload).astype(bool)
    mean = masked_mean(valid)
    bonus = entropy * mean(bernoulli_entropy(logits))
    if estimator in ("eq23", "marginal"):
        return -mean(rewards(jax.nn.sigmoid(logits), costs, x, advantage)) - bonus
    if estimator == "reinforce":
        taken = jax.lax.stop_gradient(jnp.where(x, costs.edge, costs.local))
        finite = jnp.isfinite(taken)
        cap = jnp.max(jnp.where(finite, taken, 0.0))
        taken = jnp.where(finite, taken, cap)
        adv = mean(taken) - taken
        log_pi = jnp.where(x, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
        return -mean(adv * log_pi) - bonus
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


# ----------------------------------------------------------------------------
# Labels (Eq. 28) and the policy's loss (Eq. 29)
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
    bandwidth, f_alloc = allocator_lib.shares(logits_all, x, sys_params)
    n = jnp.sum(x, axis=-1)
    _, t_edge = inference_delays(
        sys_params, scheduler_macs, policy_macs_, allocator.macs_table(n))
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
    allowed = jnp.asarray(policy_net.allowed_subnets(K, L, variant, fixed))
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
    policy_net.check_variant(variant)
    target = jnp.stack([width, depth], -1).astype(out.dtype)
    use = jnp.array([variant in ("full", "fix_depth"), variant in ("full", "fix_width")])
    sq = jnp.sum(jnp.where(use, jnp.square(out - target), 0.0), axis=-1)
    v = jnp.asarray(valid).astype(out.dtype)
    return jnp.sum(sq * v) / jnp.maximum(jnp.sum(v), 1.0)


# ----------------------------------------------------------------------------
# The allocator's training losses (Section IV.A)
# ----------------------------------------------------------------------------

def weighted_parts(scn: Scenario, offload: Array, bandwidth: Array, f_alloc: Array,
                   sys_params: SystemParams):
    """``(sum_i w_i T_tra_i, sum_i w_i T_com_i)`` over offloaded users, each ``(...)``.

    The two training losses of Section IV.A (T_w^tra after Eq. 19 and
    T_w^com after Eq. 20); dimensionless.  Masked users and users with
    w_i = 0 contribute exactly 0.
    """
    x = jnp.asarray(offload).astype(bool)
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    out = system.task_outcomes(scn, x, bandwidth, f_alloc, sys_params)
    active = x & (w > 0)

    def wsum(t):
        return jnp.sum(jnp.where(active, w * jnp.where(active, t, 0.0), 0.0), axis=-1)

    return wsum(out.t_tra), wsum(out.t_com)
