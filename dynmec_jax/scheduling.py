"""The scheduling model of Section IV.C: offloading probabilities, costs and rewards (Eq. 21-27).

* :class:`SetScheduler` (the default, beyond the paper): one shared per-user
  MLP of each task's normalised features and pooled summaries of all users
  (two passes), N sigmoid offloading probabilities p_i (the action of
  Eq. 22); its parameters do not depend on N.
* :class:`Scheduler` (the paper's): a Flax MLP from the normalised features
  of all N users, flattened to ``(..., 5N)`` (the state s of Eq. 21), through
  one hidden layer of 32 LeakyReLU units, to N logits.  The input size fixes
  N.  :func:`build_scheduler` picks one by name.
* :func:`inference_delays`: T_l^infer and T_e^infer of Eq. 34-35 [s].
* :func:`task_costs`: C_i^loc (Eq. 24) and C_i^edge (Eq. 25) of every task,
  where C_i^edge of a task kept local is the cost it *would* have had if it
  alone had been offloaded in addition (the exact counterfactual, below).
* :func:`marginal_costs` (beyond the paper; the default estimator): the
  whole scenario's cost with S minus {i} and with S u {i}, for every task i.
* :func:`advantages`, :func:`rewards` and :func:`scheduler_loss`: Eq. 23
  (raw or relative advantage) and the update of Eq. 26-27.

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
:func:`make_optimizer`).  ``estimator="reinforce"`` gives the standard
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

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dynmec_jax import accounting, moe, system
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: Table II: learning rate of the scheduling model.
LEARNING_RATE = 2e-3
#: Section V: hidden units of the scheduling and policy models.
HIDDEN = 32
#: LeakyReLU slope (flax default).
NEGATIVE_SLOPE = 0.01
#: Scheduler update rules (:func:`scheduler_loss`).
ESTIMATORS = ("eq23", "reinforce", "marginal")


# ----------------------------------------------------------------------------
# The network (Eq. 21-22)
# ----------------------------------------------------------------------------

class Scheduler(nn.Module):
    """Scheduling MLP of Eq. 21-22: ``5N -> hidden (LeakyReLU) -> N`` logits.

    ``__call__(z)`` takes the normalised features ``z (..., N, 5)`` of
    :func:`dynmec_jax.moe.normalize_features`, flattens them to ``(..., 5N)``
    and returns the N offloading *logits*; ``p_i = sigmoid(logit_i)``
    (:func:`offload_probabilities`).  Logits rather than probabilities are
    returned so ``log p`` and ``log(1 - p)`` stay finite.

    Parameters: ``5N hidden + hidden + hidden N + N`` (5,822 at N = 30,
    hidden = 32); MACs: :func:`dynmec_jax.accounting.scheduler_macs` (5,760).
    The input size fixes N: one scheduler is trained per N (a sweep over N
    recompiles per shape).

    Attributes:
      n_users: N.
      hidden: hidden units (Section V: 32).
      negative_slope: LeakyReLU slope.
    """

    n_users: int
    hidden: int = HIDDEN
    negative_slope: float = NEGATIVE_SLOPE

    @nn.compact
    def __call__(self, z: Array) -> Array:
        if z.shape[-2:] != (self.n_users, accounting.N_FEATURES):
            raise ValueError(f"scheduler built for {self.n_users} users x "
                             f"{accounting.N_FEATURES} features, got input {z.shape}")
        x = z.reshape(z.shape[:-2] + (self.n_users * accounting.N_FEATURES,))
        h = nn.leaky_relu(nn.Dense(self.hidden, name="hidden")(x), self.negative_slope)
        return nn.Dense(self.n_users, name="out")(h)


class SetScheduler(nn.Module):
    """Per-user scheduler (beyond the paper; the default): one shared MLP per task.

    Pass 1: task i's logit is ``MLP_1([z_i, mean_j z_j])``, its own
    normalised features (:func:`dynmec_jax.moe.normalize_features`) next to
    the mean over all N users of the same features (a Deep Sets summary of
    the competition for the server).  Each later pass adds ``MLP_k([z_i,
    mean_j z_j, sum_j q_j z_j / sum_j q_j, sum_j q_j / N])`` to the logit,
    with q_j = sigmoid(logit_j) of the passes before: a summary of the tasks
    the scheduler would offload, whose shares of the server and channel set
    what offloading task i costs (the KKT allocation depends on the offloaded
    set only through such sums).  Each MLP has ``n_layers`` hidden layers of
    ``hidden`` LeakyReLU units and one output.

    The parameters do not depend on N, so one network serves any number of
    users, and the output is equivariant to the order of the users.  Every
    output layer starts at zero, so every p_i = 0.5 at initialisation.

    Why not the paper's ``5N -> 32 -> N``: its 32 hidden units are shared by
    all N outputs, and N per-task decisions do not fit through them; why two
    passes: one pass of mean features stays about 1.2% above the exhaustive
    optimum at N = 10, two reach 0.3% (docs/reproduction.md, scheduler
    ablation).

    Size at the defaults (hidden 32, 2 layers, 2 passes): 3,074 parameters;
    MACs per user :func:`dynmec_jax.accounting.set_scheduler_macs` (2,944;
    88,320 at N = 30).

    Attributes:
      hidden: hidden units per layer (Section V: 32).
      n_layers: hidden layers per pass.
      negative_slope: LeakyReLU slope.
      passes: 1 or more (above).
    """

    hidden: int = HIDDEN
    n_layers: int = 2
    negative_slope: float = NEGATIVE_SLOPE
    passes: int = 2

    def _mlp(self, h, tag):
        for i in range(self.n_layers):
            h = nn.leaky_relu(nn.Dense(self.hidden, name=f"{tag}hidden_{i}")(h),
                              self.negative_slope)
        out = nn.Dense(1, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                       name=f"{tag}out")(h)
        return out[..., 0]

    @nn.compact
    def __call__(self, z: Array) -> Array:
        if z.shape[-1] != accounting.N_FEATURES:
            raise ValueError(f"scheduler input must be (..., N, {accounting.N_FEATURES}), "
                             f"got {z.shape}")
        ctx = jnp.broadcast_to(jnp.mean(z, axis=-2, keepdims=True), z.shape)
        logits = self._mlp(jnp.concatenate([z, ctx], axis=-1), "")
        for k in range(1, self.passes):
            q = jax.nn.sigmoid(logits)[..., None]
            nq = jnp.sum(q, axis=-2, keepdims=True)
            ctx_q = jnp.sum(q * z, axis=-2, keepdims=True) / jnp.maximum(nq, 1e-3)
            frac = nq / z.shape[-2]
            extra = jnp.broadcast_to(jnp.concatenate([ctx_q, frac], -1),
                                     z.shape[:-1] + (z.shape[-1] + 1,))
            logits = logits + self._mlp(jnp.concatenate([z, ctx, extra], axis=-1), f"p{k}_")
        return logits


#: Scheduler networks: "set" (:class:`SetScheduler`, default) or "paper" (:class:`Scheduler`).
SCHEDULERS = ("set", "paper")


def build_scheduler(kind: str, n_users: int, hidden: int = HIDDEN, n_layers: int = 2,
                    passes: int = 2):
    """The scheduler network ``kind`` ("set" or "paper") and its M_Sced [MACs] at N users.

    Returns ``(module, macs)``.  "paper" is Eq. 21-22's ``5N -> hidden -> N``
    (one hidden layer; ``n_layers`` and ``passes`` apply to "set" only).
    """
    if kind == "set":
        return (SetScheduler(hidden, n_layers, passes=passes),
                accounting.set_scheduler_macs(n_users, hidden, n_layers, passes))
    if kind == "paper":
        return Scheduler(n_users, hidden), accounting.scheduler_macs(n_users, hidden)
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")


def module_macs(model: nn.Module, n_users: int) -> int:
    """M_Sced [MACs] of a scheduler module applied to a scenario of ``n_users`` users."""
    if isinstance(model, SetScheduler):
        return accounting.set_scheduler_macs(n_users, model.hidden, model.n_layers,
                                             model.passes)
    return accounting.scheduler_macs(model.n_users, model.hidden)


def scheduler_params_count(n_users: int, hidden: int = HIDDEN) -> int:
    """Trainable parameters of :class:`Scheduler` (weights + biases) [count]."""
    return accounting.mlp_params(accounting.scheduler_dims(n_users, hidden))


def init_scheduler(key: Array, model: nn.Module, n_users: int | None = None) -> dict:
    """Initial parameters of ``model`` (a pytree); ``n_users`` only shapes the dummy input
    of a :class:`SetScheduler` (its parameters do not depend on it)."""
    n = getattr(model, "n_users", None) or n_users or 1
    return model.init(key, jnp.zeros((n, accounting.N_FEATURES), jnp.float32))


def offload_logits(model: Scheduler, params: dict, scn: Scenario,
                   scales: moe.FeatureScales) -> Array:
    """Logits of the offloading probabilities of Eq. 22, ``(..., N)`` (dimensionless).

    ``scn`` fields ``(..., N)``; ``scales``: the allocator's feature scales
    (Eq. 21's state is the normalised feature set).
    """
    return model.apply(params, moe.normalize_features(scn, scales))


def offload_probabilities(model: Scheduler, params: dict, scn: Scenario,
                          scales: moe.FeatureScales) -> Array:
    """p_i of Eq. 22: the probability of offloading task i, ``(..., N)`` in (0, 1)."""
    return jax.nn.sigmoid(offload_logits(model, params, scn, scales))


def sample_actions(key: Array, probs: Array) -> Array:
    """Training actions x_i ~ Bernoulli(p_i) (Eq. 22), bool ``(..., N)``."""
    return jax.random.uniform(key, jnp.shape(probs)) < probs


def greedy_actions(probs: Array) -> Array:
    """Evaluation actions x_i = [p_i > 0.5], bool ``(..., N)``."""
    return probs > 0.5


# ----------------------------------------------------------------------------
# Costs (Eq. 24-25, 34-35)
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


def allocator_macs_table(allocator, n_served: Array) -> Array:
    """M_Alloc of every sub-network, ``(K, L) + shape(n_served)`` [MACs] (Eq. 30-33).

    0 where ``n_served`` is 0 (nothing to allocate).  Works for the static
    model too (``(1, L, ...)``, the same count everywhere).
    """
    n = jnp.asarray(n_served)
    if allocator.is_moe:
        return allocator.macs_table(n)
    m = allocator.macs(allocator.n_experts, allocator.n_layers, n)
    return jnp.broadcast_to(m, (1, allocator.n_layers) + n.shape)


def allocator_macs(allocator, width: Array, depth: Array, n_served: Array) -> Array:
    """M_Alloc of sub-network (width, depth) applied to ``n_served`` users [MACs] (Eq. 30-33).

    Elementwise over broadcast arrays; traced values are fine.  The static
    model ignores width and depth.
    """
    if allocator.is_moe:
        return allocator.macs(jnp.asarray(width), jnp.asarray(depth), jnp.asarray(n_served))
    return allocator.macs(allocator.n_experts, allocator.n_layers, jnp.asarray(n_served))


def gather_subnet(table: Array, width: Array, depth: Array) -> Array:
    """``table[width-1, depth-1, b, ...]`` per leading index: ``(K, L, B, ...)`` -> ``(B, ...)``.

    ``width``/``depth``: int ``(B,)`` or ``(B, M)`` (1-based); for ``(B, M)``
    the result is ``(B, M, ...)`` with ``table`` ``(K, L, B, ...)`` indexed
    at ``[w[b, m]-1, d[b, m]-1, b]``.  Used to pick the logits or costs of a
    traced sub-network out of the one-pass tables.
    """
    t = jnp.moveaxis(table, 2, 0)                           # (B, K, L, ...)
    w = jnp.asarray(width).astype(jnp.int32) - 1
    d = jnp.asarray(depth).astype(jnp.int32) - 1
    K, L = t.shape[1], t.shape[2]
    w = jnp.clip(w, 0, K - 1)
    d = jnp.clip(d, 0, L - 1)
    if w.ndim == 1:
        return jax.vmap(lambda tb, wb, db: tb[wb, db])(t, w, d)
    return jax.vmap(lambda tb, wb, db: jax.vmap(lambda wm, dm: tb[wm, dm])(wb, db))(t, w, d)


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


def task_costs(allocator, logits_all: Array, scn: Scenario, offload: Array,
               decide_fn: Callable[[Array], tuple], sys_params: SystemParams,
               scheduler_macs, policy_macs) -> TaskCosts:
    """C^loc and C^edge of every task (Eq. 24-25, 34-35), the edge one exact for flips.

    Args:
      allocator: the (fixed) :class:`~dynmec_jax.allocation.Allocator`.
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
    logits = gather_subnet(logits_all, width, depth)             # (B, N_i, N_j, 2)
    share_b = moe.masked_softmax(logits[..., 0], masks)
    share_f = moe.masked_softmax(logits[..., 1], masks)
    bandwidth = sys_params.bandwidth_max * jnp.sum(jnp.where(eye, share_b, 0.0), -1)
    f_alloc = sys_params.f_server * jnp.sum(jnp.where(eye, share_f, 0.0), -1)
    n_served = jnp.sum(masks, axis=-1).astype(jnp.int32)         # (B, N_i)
    t_loc, t_edge = inference_delays(
        sys_params, scheduler_macs, policy_macs,
        allocator_macs(allocator, width, depth, n_served))
    c_loc = system.cost_local(scn, sys_params, t_loc)
    c_edge = system.cost_edge(scn, bandwidth, f_alloc, sys_params, t_edge)
    return TaskCosts(local=c_loc, edge=c_edge, width=width.astype(jnp.int32),
                     depth=depth.astype(jnp.int32), n_served=n_served, scale=c_loc + c_edge)


def _set_costs(allocator, logits_all, scn, masks, decide_fn, sys_params, scheduler_macs,
               policy_macs):
    """Total cost sum_j C_j (Eq. 24-25) of each offload set ``masks (B, M, N)``, ``(B, M)``."""
    width, depth = decide_fn(masks)                              # (B, M)
    logits = gather_subnet(logits_all, width, depth)             # (B, M, N, 2)
    bandwidth = sys_params.bandwidth_max * moe.masked_softmax(logits[..., 0], masks)
    f_alloc = sys_params.f_server * moe.masked_softmax(logits[..., 1], masks)
    n_served = jnp.sum(masks, axis=-1)
    t_loc, t_edge = inference_delays(sys_params, scheduler_macs, policy_macs,
                                     allocator_macs(allocator, width, depth, n_served))
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
                   entropy: Array = 0.0) -> Array:
    """Loss whose gradient *descent* is the Eq. 26-27 gradient *ascent* on R(A).

    ``estimator="eq23"``: ``-mean_{b,i} R_bi`` with R from :func:`rewards`;
    its gradient is ``-(1/BN) sum A_bi grad p_bi`` with A the advantage of
    :func:`advantages` (``advantage``: "raw" = C^loc - C^edge as in Eq. 23,
    "relative" = the same over the task's own costs).
    ``estimator="reinforce"``: ``-mean((b - C^taken) log pi)``, b the batch
    mean of C^taken (both held fixed; ``advantage`` does not apply).
    ``estimator="marginal"``: the same loss as "eq23", to be used with the
    costs of :func:`marginal_costs` (the caller picks the costs;
    :func:`dynmec_jax.policy.make_episode` does).  ``entropy``: weight of
    an entropy bonus ``-entropy mean H(p)`` (0 = none).  ``logits``: the
    scheduler's output ``(B, N)``.  Scalar (cost units for "raw", else
    dimensionless).
    """
    x = jnp.asarray(offload).astype(bool)
    bonus = entropy * jnp.mean(bernoulli_entropy(logits))
    if estimator in ("eq23", "marginal"):
        return -jnp.mean(rewards(jax.nn.sigmoid(logits), costs, x, advantage)) - bonus
    if estimator == "reinforce":
        taken = jax.lax.stop_gradient(jnp.where(x, costs.edge, costs.local))
        finite = jnp.isfinite(taken)
        cap = jnp.max(jnp.where(finite, taken, 0.0))
        taken = jnp.where(finite, taken, cap)
        adv = jnp.mean(taken) - taken
        log_pi = jnp.where(x, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
        return -jnp.mean(adv * log_pi) - bonus
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def make_optimizer(lr: float = LEARNING_RATE, kind: str = "adam",
                   clip_norm: float = 0.0) -> optax.GradientTransformation:
    """The scheduler's optimiser (Eq. 27): ``"adam"`` (default) or ``"sgd"`` at ``lr``.

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
