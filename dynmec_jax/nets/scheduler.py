"""The scheduling networks of Section IV.C (Eq. 21-22): offloading probabilities.

* :class:`SetScheduler` (the default, beyond the paper): one shared per-user
  MLP of each task's normalised features and pooled summaries of all users
  (two passes), N sigmoid offloading probabilities p_i (the action of
  Eq. 22); its parameters do not depend on N.
* :class:`Scheduler` (the paper's): a Flax MLP from the normalised features
  of all N users, flattened to ``(..., 5N)`` (the state s of Eq. 21), through
  one hidden layer of 32 LeakyReLU units, to N logits.  The input size fixes
  N.  :func:`build_scheduler` picks one by name.

Their training (Eq. 23-27) is in :mod:`dynmec_jax.costs` and
:mod:`dynmec_jax.train.joint`.  Outputs are dimensionless (logits,
probabilities).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynmec_jax import accounting, rng
from dynmec_jax.nets import features
from dynmec_jax.system import Scenario

Array = Any

#: Section V: hidden units of the scheduling and policy models.
HIDDEN = 32
#: LeakyReLU slope (flax default).
NEGATIVE_SLOPE = 0.01


class Scheduler(nn.Module):
    """Scheduling MLP of Eq. 21-22: ``5N -> hidden (LeakyReLU) -> N`` logits.

    ``__call__(z)`` takes the normalised features ``z (..., N, 5)`` of
    :func:`dynmec_jax.features.normalize_features`, flattens them to ``(..., 5N)``
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
    normalised features (:func:`dynmec_jax.features.normalize_features`) next to
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

    Count features (``counts``, for training over mixed N): means and
    shares do not change with N, so without them the network cannot tell
    10 users from 60 with the same task distribution, while the best share
    to offload does depend on N (fewer users, less competition for the
    server).  With ``counts`` every pass also reads log N and the later ones
    log(1 + sum_j q_j), the expected number offloaded.

    Cell features (``n_cell`` > 0, for training over many cells): every
    pass also reads the cell's ``n_cell`` normalised fields
    (:func:`dynmec_jax.cell.cell_features`: bandwidth, server, lambda of
    Eq. 9, channel, beta), the same for every user of a scenario, so the
    share worth offloading can follow the cell.  The same input also takes
    per-user values ``(..., N, n_cell)``: a pipeline with
    ``PipelineSpec.cost_features`` appends each task's stand-alone cost
    ratios in its cell (:func:`dynmec_jax.nets.features.cost_features`), so
    ``n_cell`` is then C + 3 (:meth:`dynmec_jax.pipeline.Models.scheduler_tail`).

    Early exit of the last pass (``gate`` > 0, beyond the paper; a dynamic
    depth of the scheduler, as the MoE's depth is dynamic): the last pass
    runs only for the users whose logit after the earlier passes is within
    +-``gate`` of 0, the undecided ones; the others keep that logit.  Every
    task waits for the scheduler (Eq. 34-35), so the users that exit early
    cut everyone's inference delay: M_Sced then counts the last pass for
    the users that ran it only
    (:func:`dynmec_jax.accounting.gated_scheduler_macs`, per scenario; the
    mask is sown as ``intermediates/last_pass_users``, read by
    :func:`offload_logits_and_macs`).  ``gate`` = 0 runs every pass for
    every user, as before it existed.

    Attributes:
      hidden: hidden units per layer (Section V: 32).
      n_layers: hidden layers per pass.
      negative_slope: LeakyReLU slope.
      passes: 1 or more (above).
      counts: also read log N and log(1 + expected offloaded) (above).
      n_cell: number of cell features read (0: none; above).
      gate: early exit of the last pass (above; 0: none) [logit].
    """

    hidden: int = HIDDEN
    n_layers: int = 2
    negative_slope: float = NEGATIVE_SLOPE
    passes: int = 2
    counts: bool = False
    n_cell: int = 0
    gate: float = 0.0

    def _mlp(self, h, tag):
        for i in range(self.n_layers):
            h = nn.leaky_relu(nn.Dense(self.hidden, name=f"{tag}hidden_{i}")(h),
                              self.negative_slope)
        out = nn.Dense(1, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                       name=f"{tag}out")(h)
        return out[..., 0]

    @nn.compact
    def __call__(self, z: Array, valid: Array | None = None, cell: Array | None = None) -> Array:
        """Logits ``(..., N)`` from features ``z (..., N, 5)``.

        ``cell``: the cell features ``(..., n_cell)`` (or ``(n_cell,)``, one
        cell for every scenario), or per-user inputs ``(..., N, n_cell)``;
        required when ``n_cell`` > 0.

        ``valid`` (bool ``(..., N)``, optional): the real users of scenarios
        padded to a common N; the pooled summaries are over them only, so a
        padded scenario gets the logits of the unpadded one (up to float
        rounding).  Padded users' logits are meaningless.
        """
        if z.shape[-1] != accounting.N_FEATURES:
            raise ValueError(f"scheduler input must be (..., N, {accounting.N_FEATURES}), "
                             f"got {z.shape}")
        if valid is None:
            ctx = jnp.mean(z, axis=-2, keepdims=True)
            weight, n = 1.0, z.shape[-2]
        else:
            weight = jnp.asarray(valid, z.dtype)[..., None]
            n = jnp.maximum(jnp.sum(weight, axis=-2, keepdims=True), 1.0)
            ctx = jnp.sum(weight * z, axis=-2, keepdims=True) / n
        ctx = jnp.broadcast_to(ctx, z.shape)
        if self.counts:
            log_n = jnp.broadcast_to(jnp.log(jnp.asarray(n, z.dtype)), z.shape[:-1] + (1,))
            ctx = jnp.concatenate([ctx, log_n], axis=-1)
        tail = []   # the cell features, last in every pass (a warm start pads zero rows)
        if self.n_cell:
            if cell is None or jnp.shape(cell)[-1] != self.n_cell:
                raise ValueError(f"scheduler reads {self.n_cell} cell features, got "
                                 f"{None if cell is None else jnp.shape(cell)}")
            c = jnp.asarray(cell, z.dtype)
            c = c.reshape(c.shape[:-1] + (1,) * (z.ndim - c.ndim) + c.shape[-1:])
            tail = [jnp.broadcast_to(c, z.shape[:-1] + (self.n_cell,))]
        logits = self._mlp(jnp.concatenate([z, ctx] + tail, axis=-1), "")
        for k in range(1, self.passes):
            q = jax.nn.sigmoid(logits)[..., None] * weight
            nq = jnp.sum(q, axis=-2, keepdims=True)
            ctx_q = jnp.sum(q * z, axis=-2, keepdims=True) / jnp.maximum(nq, 1e-3)
            frac = nq / n
            pooled = [ctx_q, frac] + ([jnp.log1p(nq)] if self.counts else [])
            extra = jnp.concatenate([jnp.broadcast_to(a, z.shape[:-1] + a.shape[-1:])
                                     for a in pooled], -1)
            step = self._mlp(jnp.concatenate([z, ctx, extra] + tail, axis=-1), f"p{k}_")
            if self.gate > 0 and k == self.passes - 1:
                run = jnp.abs(logits) < self.gate     # the undecided users (above)
                if valid is not None:
                    run = run & jnp.asarray(valid, bool)
                self.sow("intermediates", "last_pass_users", run)
                step = jnp.where(run, step, 0.0)
            logits = logits + step
        return logits


#: Scheduler networks: "set" (:class:`SetScheduler`, default) or "paper" (:class:`Scheduler`).
SCHEDULERS = ("set", "paper")


def build_scheduler(kind: str, n_users: int, hidden: int = HIDDEN, n_layers: int = 2,
                    passes: int = 2, counts: bool = False,
                    negative_slope: float = NEGATIVE_SLOPE, n_cell: int = 0,
                    gate: float = 0.0):
    """The scheduler network ``kind`` ("set" or "paper") and its M_Sced [MACs] at N users.

    Returns ``(module, macs)``.  "paper" is Eq. 21-22's ``5N -> hidden -> N``
    (one hidden layer; ``n_layers``, ``passes``, ``counts``, ``n_cell`` and ``gate``
    apply to "set" only).  With ``gate`` > 0 ``macs`` is the most the scheduler
    costs (every user through every pass); :func:`offload_logits_and_macs` gives
    what a scenario costs.
    """
    if kind == "set":
        return (SetScheduler(hidden, n_layers, negative_slope, passes=passes, counts=counts,
                             n_cell=n_cell, gate=gate),
                accounting.set_scheduler_macs(n_users, hidden, n_layers, passes,
                                              counts=counts, n_cell=n_cell))
    if n_cell or gate:
        raise ValueError("cell features and the early exit need the per-user 'set' scheduler")
    if kind == "paper":
        return (Scheduler(n_users, hidden, negative_slope),
                accounting.scheduler_macs(n_users, hidden))
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")


def module_macs(model: nn.Module, n_users: int) -> int:
    """M_Sced [MACs] of a scheduler module applied to a scenario of ``n_users`` users."""
    if isinstance(model, SetScheduler):
        return accounting.set_scheduler_macs(n_users, model.hidden, model.n_layers,
                                             model.passes, counts=model.counts,
                                             n_cell=model.n_cell)
    return accounting.scheduler_macs(model.n_users, model.hidden)


def scheduler_params_count(n_users: int, hidden: int = HIDDEN) -> int:
    """Trainable parameters of :class:`Scheduler` (weights + biases) [count]."""
    return accounting.mlp_params(accounting.scheduler_dims(n_users, hidden))


def init_scheduler(key: Array, model: nn.Module, n_users: int | None = None) -> dict:
    """Initial parameters of ``model`` (a pytree); ``n_users`` only shapes the dummy input
    of a :class:`SetScheduler` (its parameters do not depend on it)."""
    n = getattr(model, "n_users", None) or n_users or 1
    z = jnp.zeros((n, accounting.N_FEATURES), jnp.float32)
    n_cell = getattr(model, "n_cell", 0)
    if n_cell:
        return model.init(key, z, None, jnp.zeros((n_cell,), jnp.float32))
    return model.init(key, z)


def offload_logits(model: Scheduler, params: dict, scn: Scenario,
                   scales: features.FeatureScales, valid: Array | None = None,
                   cell: Array | None = None) -> Array:
    """Logits of the offloading probabilities of Eq. 22, ``(..., N)`` (dimensionless).

    ``scn`` fields ``(..., N)``; ``scales``: the allocator's feature scales
    (Eq. 21's state is the normalised feature set); ``valid``: the real users
    of padded scenarios (:class:`SetScheduler` only); ``cell``: the cell
    features of a scheduler with ``n_cell`` > 0 (:func:`dynmec_jax.cell.cell_features`).
    """
    z = features.normalize_features(scn, scales)
    if valid is None and cell is None:
        return model.apply(params, z)
    if not isinstance(model, SetScheduler):
        raise ValueError("padded scenarios (valid=...) need the per-user 'set' scheduler")
    if cell is None:
        return model.apply(params, z, valid)
    return model.apply(params, z, valid, cell)


def offload_logits_and_macs(model: Scheduler, params: dict, scn: Scenario,
                            scales: features.FeatureScales, valid: Array | None = None,
                            cell: Array | None = None) -> tuple[Array, Array]:
    """``(logits (..., N), M_Sced (...,))``: :func:`offload_logits` and what the scheduler
    cost per scenario [MACs] (Eq. 34-35): :func:`module_macs` for the real users
    (``valid``), or, for a :class:`SetScheduler` with an early exit (``gate`` > 0),
    :func:`dynmec_jax.accounting.gated_scheduler_macs` with the users that ran its last
    pass."""
    n = jnp.asarray(jnp.shape(scn.size)[-1] if valid is None else
                    jnp.sum(jnp.asarray(valid), axis=-1))
    if not (isinstance(model, SetScheduler) and model.gate > 0):
        logits = offload_logits(model, params, scn, scales, valid, cell)
        return logits, jnp.broadcast_to(jnp.asarray(module_macs(model, n), jnp.float32),
                                        logits.shape[:-1])
    z = features.normalize_features(scn, scales)
    logits, out = model.apply(params, z, valid, cell, mutable=["intermediates"])
    run = out["intermediates"]["last_pass_users"][0]
    macs = accounting.gated_scheduler_macs(n, jnp.sum(run, axis=-1), model.hidden,
                                           model.n_layers, model.passes,
                                           counts=model.counts, n_cell=model.n_cell)
    return logits, jnp.asarray(macs, jnp.float32)


def offload_probabilities(model: Scheduler, params: dict, scn: Scenario,
                          scales: features.FeatureScales, valid: Array | None = None,
                          cell: Array | None = None) -> Array:
    """p_i of Eq. 22: the probability of offloading task i, ``(..., N)`` in (0, 1)."""
    return jax.nn.sigmoid(offload_logits(model, params, scn, scales, valid, cell))


def sample_actions(key: Array, probs: Array) -> Array:
    """Training actions x_i ~ Bernoulli(p_i) (Eq. 22), bool ``(..., N)``."""
    return rng.uniform(key, jnp.shape(probs)) < probs


def greedy_actions(probs: Array) -> Array:
    """Evaluation actions x_i = [p_i > 0.5], bool ``(..., N)``."""
    return probs > 0.5
