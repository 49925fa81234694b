"""DROO as a baseline scheduler: a DNN, order-preserving quantisation and exact scoring.

Beyond the paper: a learned offloading baseline from the literature,

    L. Huang, S. Bi and Y.-J. A. Zhang, "Deep Reinforcement Learning for
    Online Computation Offloading in Wireless Powered Mobile-Edge Computing
    Networks", IEEE Trans. Mobile Computing 19(11), 2581-2593, 2020
    (reference code: github.com/revenol/DROO, its main loop and ``MemoryDNN``),

adapted to the system of Section III and written as pure JAX programs.

Each time frame, DROO (i) maps the scenario to a relaxed offloading vector
in [0, 1]^N with a DNN, (ii) quantises it into K binary candidates with the
order-preserving (OP) method, (iii) scores every candidate exactly by
solving the resource allocation for it and keeps the best, (iv) stores
(input, best candidate) in a replay memory and trains the DNN on it, and
(v) adapts K.  This module is the decision, (i)-(iii), the settings
(:class:`DrooConfig`), the operation counts and saving/loading a trained
DNN; the training, (iv)-(v), is :mod:`dynmec_jax.baselines.droo_train`.

Kept from DROO (reference code values as defaults): the DNN, fully connected
ReLU with hidden sizes (120, 80) and a sigmoid output (:class:`DrooNet`); OP
quantisation exactly as the reference ``knm`` (:func:`op_candidates`); every
candidate scored by the exact (convex) allocation, the best kept
(:func:`score_candidates`).

Adapted to this system, and why:

* Objective and scoring: DROO maximises the weighted computation rate of a
  wireless-powered network.  Here a candidate x in {0, 1}^N (Eq. 11b) is
  scored by sum_i C_i (Eq. 24 local, Eq. 25 offloaded) under its exact
  allocation, :func:`dynmec_jax.baselines.exhaustive.energy_aware_allocation`
  (Eq. 1-2, 11h-11k, 19), and the *smallest* cost wins.  No inference
  delay enters the scoring (as for the exhaustive optimum and the greedy
  rule); :func:`droo_ops` gives the delay a deployment would pay (Eq. 9).
* Input: instead of DROO's N channel gains, the five features of Eq. 7 per
  user as log-ratios (:func:`dynmec_jax.nets.features.normalize_features`,
  scales from the traced ``sys_params``), flattened: 5 N_max inputs.
* Padding (mixed N): scenarios of N <= N_max users are padded to N_max with
  empty tasks (:func:`dynmec_jax.system.mask_padding`) and a ``valid`` mask.
  Padded users never offload, are left out of the OP ordering and of the
  cross-entropy; a scenario with n real users gets at most n candidates.
  One DNN then serves every N up to N_max.
* Logits: the quantisation runs on the DNN's logits with threshold 0, which
  gives exactly the candidates of the reference's sigmoid output with
  threshold 0.5 (sigmoid is increasing and symmetric about 0.5; the
  TensorFlow reference does the same) but keeps the order of outputs that
  float32 would round to exactly 0 or 1.
A trained DNN: :func:`save_droo`, :func:`load_droo` (a :class:`DrooModel`;
``load_droo()`` is the shipped default, ``dynmec_jax/pretrained/droo``, one
DNN for every N up to 64, made by ``dynmec-train-droo --export_pretrained``).

Units: SI throughout (bits, cycles/bit, s, m, Hz); costs in the units of
Eq. 24-25; operation counts in MAC-equivalents (Eq. 8-9).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, struct

from dynmec_jax import accounting, files, system
from dynmec_jax.baselines import exhaustive, optimal
from dynmec_jax.nets import features
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: DROO's hidden layer sizes (reference ``net = [N, 120, 80, N]``).
HIDDEN = (120, 80)
#: Where :func:`load_droo` finds the shipped default (``dynmec-train-droo --export_pretrained``).
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parents[1] / "pretrained" / "droo"


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DrooConfig:
    """Static settings of DROO (frozen, hashable, validated; saved with the DNN, which
    ``n_max`` and ``hidden`` size; the training is :mod:`~dynmec_jax.baselines.droo_train`).

    Attributes:
      n_max: N_max, users per (padded) scenario; the DNN has 5 N_max inputs
        and N_max outputs, and K <= K_max = N_max.  At a fixed N, N_max = N.
      n_users_min: None: every training scenario has N_max users.  An int:
        training scenarios have N ~ U{n_users_min, ..., N_max} users, padded
        to N_max (:func:`dynmec_jax.system.sample_mixed_scenarios`).
      hidden: hidden layer sizes of the DNN (DROO: (120, 80)).
      memory_size: replay-memory capacity [entries] (DROO: 1,024).
      batch: entries per training batch (DROO: 128).
      train_interval: delta, frames between two DNN updates (DROO: 10).
      k_interval: Delta, frames between two updates of K (DROO: 32).
      adaptive_k: True: K follows DROO's rule
        (:func:`dynmec_jax.baselines.droo_train.adaptive_k_start`); False:
        K = N_max throughout.
      lr: Adam's learning rate (DROO: 0.01).
      adam_b1, adam_b2: Adam's beta_1 (DROO's code: 0.09) and beta_2 (0.999).
      n_scenarios: the scenario budget of training, a multiple of
        ``scenarios_per_frame`` (e.g. the learned scheduler's episodes x batch).
      scenarios_per_frame: B, scenarios decided per frame with the same DNN
        and K (1 is DROO; B > 1 is faster but takes ``n_scenarios / (B
        delta)`` DNN updates in all).  At most ``memory_size``.
    """

    n_max: int = 30
    n_users_min: int | None = None
    hidden: tuple[int, ...] = HIDDEN
    memory_size: int = 1024         # entries
    batch: int = 128
    train_interval: int = 10        # delta [frames]
    k_interval: int = 32            # Delta [frames]
    adaptive_k: bool = True
    lr: float = 0.01
    adam_b1: float = 0.09           # as DROO's code
    adam_b2: float = 0.999
    n_scenarios: int = 9600
    scenarios_per_frame: int = 1

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("n_max", "memory_size", "batch", "train_interval", "k_interval",
                     "n_scenarios", "scenarios_per_frame"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty tuple of sizes >= 1, "
                             f"got {self.hidden!r}")
        if self.n_users_min is not None and not 1 <= self.n_users_min <= self.n_max:
            raise ValueError(f"n_users_min must be in [1, n_max={self.n_max}], "
                             f"got {self.n_users_min!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("adam_b1", "adam_b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.n_scenarios % self.scenarios_per_frame:
            raise ValueError(f"n_scenarios={self.n_scenarios} must be a multiple of "
                             f"scenarios_per_frame={self.scenarios_per_frame}")
        if self.scenarios_per_frame > self.memory_size:
            raise ValueError(f"scenarios_per_frame={self.scenarios_per_frame} must not exceed "
                             f"memory_size={self.memory_size}")

    @property
    def n_frames(self) -> int:
        """Time frames (scan steps) of training: ``n_scenarios / scenarios_per_frame``."""
        return self.n_scenarios // self.scenarios_per_frame

    @property
    def n_updates(self) -> int:
        """DNN updates during training: ``n_frames // train_interval``."""
        return self.n_frames // self.train_interval


# ----------------------------------------------------------------------------
# The DNN
# ----------------------------------------------------------------------------

class DrooNet(nn.Module):
    """DROO's DNN: ``5 N_max -> hidden... (ReLU) -> N_max`` logits.

    ``__call__(z)`` takes the normalised features ``z (..., N_max, 5)``
    (:func:`dynmec_jax.nets.features.normalize_features`, dimensionless),
    flattens them to ``(..., 5 N_max)`` and returns N_max logits; the relaxed
    offloading vector of DROO is ``sigmoid(logits)`` in [0, 1]^N_max
    (:func:`relaxed_offloading`).  MACs per scenario:
    ``accounting.mlp_macs([5 N_max, *hidden, N_max])`` (Eq. 8).

    Attributes:
      n_max: N_max (outputs; inputs are 5 N_max).
      hidden: hidden layer sizes (DROO: (120, 80)).
    """

    n_max: int
    hidden: tuple = HIDDEN

    @nn.compact
    def __call__(self, z: Array) -> Array:
        if z.shape[-2:] != (self.n_max, accounting.N_FEATURES):
            raise ValueError(f"DROO's DNN is built for {self.n_max} users x "
                             f"{accounting.N_FEATURES} features, got input {z.shape}")
        h = z.reshape(z.shape[:-2] + (self.n_max * accounting.N_FEATURES,))
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, name=f"hidden_{i}")(h))
        return nn.Dense(self.n_max, name="out")(h)


def network_from_params(params) -> DrooNet:
    """The :class:`DrooNet` whose parameters are ``params`` (sizes read off their shapes;
    its MACs per scenario, Eq. 8: :func:`dnn_macs`)."""
    p = params["params"]
    n_hidden = sum(1 for name in p if name.startswith("hidden_"))
    hidden = tuple(int(p[f"hidden_{i}"]["kernel"].shape[1]) for i in range(n_hidden))
    return DrooNet(n_max=int(p["out"]["kernel"].shape[1]), hidden=hidden)


def init_params(key: Array, config: DrooConfig):
    """Initial DNN parameters for ``config`` (Flax default initialisation; the DNN reads
    the dimensionless Eq. 7 features of :func:`scenario_features`)."""
    net = DrooNet(config.n_max, config.hidden)
    return net.init(key, jnp.zeros((config.n_max, accounting.N_FEATURES), jnp.float32))


def scenario_features(scn: Scenario, sys_params: SystemParams) -> Array:
    """The DNN input of each scenario: log-ratio features ``(..., N, 5)`` (dimensionless).

    :func:`dynmec_jax.nets.features.normalize_features` with the scales of
    ``sys_params`` (s_avg, c_avg, d_max, l_max, f_loc,max; traced is fine).
    """
    return features.normalize_features(scn, features.FeatureScales.from_params(sys_params))


def relaxed_offloading(params, scn: Scenario, sys_params: SystemParams) -> Array:
    """DROO's relaxed offloading vector sigmoid(DNN(features)), ``(..., N_max)`` in [0, 1]
    (dimensionless; a relaxation of x in {0, 1}^N, Eq. 11b).  ``scn`` fields ``(..., N_max)``,
    SI units (padded users' entries are meaningless)."""
    net = network_from_params(params)
    return jax.nn.sigmoid(net.apply(params, scenario_features(scn, sys_params)))


# ----------------------------------------------------------------------------
# Order-preserving quantisation
# ----------------------------------------------------------------------------

def op_candidates(m: Array, k: Array, valid: Array | None = None,
                  threshold: float = 0.5) -> tuple[Array, Array]:
    """DROO's order-preserving (OP) quantisation into K_max = N binary candidates x (Eq. 11b).

    For a relaxed vector m (``threshold`` 0.5; or logits with ``threshold``
    0, which gives the same candidates), as the reference ``knm``:

    * candidate 0: x_i = [m_i > threshold];
    * candidate j = 1 .. N-1: with m_(j) the entry j-th closest to the
      threshold (``argsort(|m - threshold|)``, stable, ties by index),
      x_i = [m_i > m_(j)] if m_(j) > threshold (the j-th closest entry is
      set to 0, with everything below it), else x_i = [m_i >= m_(j)] (set
      to 1, with everything above it).

    All N candidates are generated (static shapes: K is traced); candidate
    j is usable iff j < min(K, n_valid), n_valid the real users (the
    reference's K <= N at N = n_valid).  Padded users (``valid`` false) are
    left out of the ordering and never offload in any candidate.

    Args:
      m: relaxed offloading vector (or logits), ``(..., N)``.
      k: K, the number of candidates, int, broadcastable to ``(...)``
        (traced is fine).
      valid: bool ``(..., N)``, the real users; None: all.
      threshold: 0.5 for a vector in [0, 1], 0.0 for logits.
    Returns:
      ``(candidates, usable)``: bool ``(..., N, N)`` (candidate axis -2,
      user axis -1) and bool ``(..., N)`` (candidate j usable).
    """
    m = jnp.asarray(m)
    n = m.shape[-1]
    valid = (jnp.ones(m.shape, bool) if valid is None
             else jnp.broadcast_to(jnp.asarray(valid, bool), m.shape))
    dist = jnp.where(valid, jnp.abs(m - threshold), jnp.inf)
    order = jnp.argsort(dist, axis=-1, stable=True)[..., :n - 1]       # (..., N-1)
    m_k = jnp.take_along_axis(m, order, axis=-1)[..., :, None]         # (..., N-1, 1)
    mm = m[..., None, :]                                               # (..., 1, N)
    flips = jnp.where(m_k > threshold, mm > m_k, mm >= m_k)            # (..., N-1, N)
    first = (m > threshold)[..., None, :]
    cands = jnp.concatenate([first, flips], axis=-2) & valid[..., None, :]
    n_valid = jnp.sum(valid, axis=-1)
    k_eff = jnp.minimum(jnp.asarray(k, jnp.int32), n_valid)
    usable = jnp.arange(n) < jnp.maximum(k_eff, 1)[..., None]
    return cands, usable


# ----------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------

class Scores(NamedTuple):
    """Every candidate's exact allocation and cost, leading shape ``(..., K_max)``.

    Attributes:
      cost: sum_i C_i (Eq. 24-25) of each candidate, ``(..., K_max)``; +inf
        for unusable candidates (and NaN costs).
      bandwidth: b_i [Hz], ``(..., K_max, N)`` (0 where local).
      f_alloc: f_i [cycles/s], ``(..., K_max, N)`` (0 where local).
    """

    cost: Array
    bandwidth: Array
    f_alloc: Array


def score_candidates(scn: Scenario, candidates: Array, usable: Array,
                     sys_params: SystemParams) -> Scores:
    """Scores every candidate by its exact allocation (DROO's critic step).

    For each candidate x: ``(b, f) = energy_aware_allocation(scn, x)`` (the
    exact minimiser of sum_{x_i=1} C_i^edge, Eq. 25, over Eq. 11h-11k) and
    cost = sum_i [x_i C_i^edge + (1 - x_i) C_i^loc] (Eq. 24-25, no inference
    delay), all candidates at once (broadcast over the candidate axis).

    Args:
      scn: tasks, fields ``(..., N)``, SI units.
      candidates: bool ``(..., K_max, N)`` (:func:`op_candidates`).
      usable: bool ``(..., K_max)``; the others get cost +inf.
      sys_params: the system (traced is fine).
    Returns:
      :class:`Scores`.
    """
    scn = system.as_scenario(scn)
    shape = jnp.shape(candidates)
    big = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a)[..., None, :], shape), scn)
    bandwidth, f_alloc = exhaustive.energy_aware_allocation(big, candidates, sys_params)
    cost = exhaustive.subset_value(big, candidates, bandwidth, f_alloc, sys_params)
    cost = jnp.where(usable & ~jnp.isnan(cost), cost, jnp.inf)
    return Scores(cost=cost, bandwidth=bandwidth, f_alloc=f_alloc)


def candidate_costs(scn: Scenario, candidates: Array, usable: Array, sys_params: SystemParams,
                    bound: Array, chunk: int = 4) -> Array:
    """The costs of :func:`score_candidates` (sum_i C_i, Eq. 24-25, +inf where unusable),
    computed only for the candidates below ``bound``.

    The candidates are scored ``chunk`` at a time in a ``lax.while_loop``
    until ``bound`` is passed; the later ones get +inf without being scored.
    So a K below K_max (DROO's adaptive K, :mod:`~dynmec_jax.baselines.droo_train`)
    costs about K / K_max of scoring all of them, and a ``bound`` that is
    at least the number of usable candidates gives :func:`score_candidates`'
    costs (each candidate's allocation is computed alone, so only float32
    rounding of the differently shaped program can differ).  Under ``vmap``
    with a batched ``bound`` the loop runs to the largest.

    Args:
      scn: tasks, fields ``(..., N)``, SI units.
      candidates: bool ``(..., K_max, N)``; usable: bool ``(..., K_max)``.
      sys_params: the system (traced is fine).
      bound: int scalar, candidates ``j >= bound`` are not scored (traced).
      chunk: candidates scored per iteration (static).
    Returns:
      cost ``(..., K_max)``, cost units.
    """
    scn = system.as_scenario(scn)
    k_max = candidates.shape[-2]
    n_chunks = -(-k_max // chunk)
    pad = n_chunks * chunk - k_max
    cands = jnp.pad(candidates, [(0, 0)] * (candidates.ndim - 2) + [(0, pad), (0, 0)])
    use = jnp.pad(usable, [(0, 0)] * (usable.ndim - 1) + [(0, pad)])
    # The costs' dtype is the scenario's (float32, or float64 with x64 enabled).
    cost0 = jnp.full(use.shape, jnp.inf, jnp.result_type(scn.size, jnp.float32))

    def body(carry):
        c, cost = carry
        start = c * chunk
        part = score_candidates(
            scn, jax.lax.dynamic_slice_in_dim(cands, start, chunk, axis=cands.ndim - 2),
            jax.lax.dynamic_slice_in_dim(use, start, chunk, axis=use.ndim - 1), sys_params)
        cost = jax.lax.dynamic_update_slice_in_dim(cost, part.cost.astype(cost.dtype), start,
                                                   axis=cost.ndim - 1)
        return c + 1, cost

    _, cost = jax.lax.while_loop(lambda cc: cc[0] * chunk < bound, body,
                                 (jnp.zeros((), jnp.int32), cost0))
    return cost[..., :k_max]


class Decision(NamedTuple):
    """DROO's decision for each scenario, leading shape ``(...)``.

    Attributes:
      offload: x, bool ``(..., N)``.
      bandwidth: b_i [Hz], ``(..., N)`` (0 where local).
      f_alloc: f_i [cycles/s], ``(..., N)`` (0 where local).
      cost: sum_i C_i (Eq. 24-25) of the decision, ``(...)``.
      index: the winning candidate's index (0 = the 0.5 threshold), int32 ``(...)``.
    """

    offload: Array
    bandwidth: Array
    f_alloc: Array
    cost: Array
    index: Array


def decide_logits(logits: Array, scn: Scenario, k: Array, valid: Array | None,
                  sys_params: SystemParams) -> Decision:
    """The DNN's logits ``(..., N_max)`` to a :class:`Decision`: OP candidates on the logits
    (threshold 0, :func:`op_candidates`), each scored by its exact allocation
    (:func:`score_candidates`: sum_i C_i, Eq. 24-25, no inference delay), the
    cheapest kept (ties: the lowest index).  ``scn``: SI units, padded users
    already masked (``valid``, or None: all real); ``k``: K, int."""
    cands, usable = op_candidates(logits, k, valid, threshold=0.0)
    scores = score_candidates(scn, cands, usable, sys_params)
    best = jnp.argmin(scores.cost, axis=-1)

    def pick(a):
        return jnp.take_along_axis(a, best[..., None, None], axis=-2)[..., 0, :]

    cost = jnp.take_along_axis(scores.cost, best[..., None], axis=-1)[..., 0]
    return Decision(offload=pick(cands), bandwidth=pick(scores.bandwidth),
                    f_alloc=pick(scores.f_alloc), cost=cost, index=best.astype(jnp.int32))


def decide_full(params, scn: Scenario, sys_params: SystemParams, K: Array,
                valid: Array | None = None) -> Decision:
    """DROO's inference with everything it computes: :class:`Decision` (see :func:`decide`;
    b_i [Hz], f_i [cycles/s], sum_i C_i, Eq. 24-25, no inference delay, the winning index)."""
    net = network_from_params(params)
    scn = system.as_scenario(scn)
    n = jnp.shape(scn.size)[-1]
    sp = sys_params.replace(n_users=net.n_max)
    if n < net.n_max:
        if valid is not None:
            raise ValueError(f"scenario of {n} users with a valid mask: pad it to "
                             f"n_max={net.n_max} users yourself")
        padded, pad_valid = system.pad_users(scn, net.n_max, sp)
        out = decide_full(params, padded, sys_params, K, pad_valid)
        return out._replace(offload=out.offload[..., :n], bandwidth=out.bandwidth[..., :n],
                            f_alloc=out.f_alloc[..., :n])
    if n > net.n_max:
        raise ValueError(f"{n} users do not fit DROO's DNN for n_max={net.n_max}")
    if valid is not None:
        valid = jnp.broadcast_to(jnp.asarray(valid, bool), jnp.shape(scn.size))
        scn = system.mask_padding(scn, valid, sp)
    logits = net.apply(params, scenario_features(scn, sys_params))
    return decide_logits(logits, scn, jnp.asarray(K, jnp.int32), valid, sys_params)


def decide(params, scn: Scenario, sys_params: SystemParams, K: Array,
           valid: Array | None = None) -> tuple[Array, Array, Array]:
    """DROO's offloading decision and exact allocation: ``(offload, bandwidth, f_alloc)``.

    The DNN maps the scenario's features to logits, :func:`op_candidates`
    makes K candidates (K_max = N_max generated, those >= K masked),
    :func:`score_candidates` scores each one by its exact allocation, and the
    cheapest (sum_i C_i, Eq. 24-25) is returned.  ``jit``-able (K and
    ``sys_params`` traced).

    Args:
      params: the DNN's parameters (``DrooModel.params``,
        ``droo_train.DrooState.params``); the network sizes are read off them.
      scn: tasks, fields ``(B, N)`` or ``(N,)``, SI units.  N = N_max, or
        N < N_max without ``valid`` (then padded to N_max with empty tasks
        here and the outputs cut back to N).
      sys_params: the system (traced is fine).
      K: number of candidates, int scalar or ``(B,)`` (e.g. ``DrooModel.k``);
        values above N_max or the number of real users act as those.
      valid: bool ``(B, N_max)``, the real users of padded scenarios (they are
        treated with :func:`dynmec_jax.system.mask_padding`, never offload
        and get no resources); None: all users are real.
    Returns:
      ``offload`` bool ``(B, N)``, ``bandwidth`` [Hz] and ``f_alloc``
      [cycles/s] ``(B, N)``, 0 where local.
    """
    d = decide_full(params, scn, sys_params, K, valid)
    return d.offload, d.bandwidth, d.f_alloc


def evaluate(params, K: Array, scn: Scenario, sys_params: SystemParams,
             valid: Array | None = None) -> dict:
    """Held-out check of DROO's decisions (:func:`decide_full`), as scalars.

    Returns ``cost`` (mean over scenarios of sum_i C_i, Eq. 24-25, cost units, no
    inference delay, Eq. 9), ``offload_fraction`` (over the real users) and
    ``mean_index`` (mean winning candidate index).
    """
    d = decide_full(params, scn, sys_params, K, valid)
    v = (jnp.ones(jnp.shape(d.offload), jnp.float32) if valid is None
         else jnp.asarray(valid, jnp.float32))
    return {"cost": jnp.mean(d.cost),
            "offload_fraction": jnp.sum(d.offload * v) / jnp.maximum(jnp.sum(v), 1.0),
            "mean_index": jnp.mean(d.index.astype(jnp.float32))}


# ----------------------------------------------------------------------------
# Operation count (Eq. 8-9)
# ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def allocation_ops(n_users: int, special_cost: float = 1.0) -> float:
    """Operations of one :func:`~dynmec_jax.baselines.exhaustive.energy_aware_allocation`
    over ``n_users`` users, in MAC-equivalents (cached).

    Counted on the traced program (all users offloaded; the masked program
    of fixed shape costs the same for any candidate) with
    :func:`dynmec_jax.baselines.optimal.count_jaxpr_ops`, after dead-code
    elimination: ``energy_aware_allocation`` calls the KKT solver twice and
    uses only the CPU share of one and the bandwidth of the other, and the
    compiled program (XLA) does not compute the discarded halves.  Counting
    rule as :func:`dynmec_jax.baselines.optimal.optimal_allocation_ops`
    (``special_cost`` MAC-equivalents per exp/log/divide, default 1).
    """
    return optimal.all_offloaded_ops(exhaustive.energy_aware_allocation, n_users,
                                     special_cost, eliminate_dead_code=True)


def dnn_macs(n_max: int, hidden: tuple = HIDDEN) -> int:
    """MACs of one forward pass of :class:`DrooNet` (Eq. 8 summed, zeta = 1, iota = 0)."""
    return accounting.mlp_macs([accounting.N_FEATURES * n_max, *hidden, n_max])


def droo_ops(n_users: int, K: int, hidden: tuple = HIDDEN, n_max: int | None = None,
             special_cost: float = 1.0) -> float:
    """Operations of one DROO inference, in MAC-equivalents (for Eq. 9).

    = the DNN's MACs (:func:`dnn_macs`) + K x the operations of one exact
    allocation (:func:`allocation_ops`, one per candidate scored).  The
    quantisation (a sort) and the cost sums are not counted (they favour
    DROO, and are small next to the allocations).

    The deployed DROO's inference delay is Eq. 9, ``T = lambda droo_ops /
    f_ser`` [s] (``accounting.inference_delay``), paid by every task, local
    ones too (T_l^infer = T_e^infer = T in Eq. 24-25, 34-35).  At N = 30:
    30,000 MACs + K x 16,188, e.g. K = 14: 256,632, i.e. 0.10 ms (Table II).

    Args:
      n_users: N, users of the scenario (the allocations run over them).
      K: candidates scored (e.g. ``DrooModel.k``), >= 1.
      hidden: the DNN's hidden sizes.
      n_max: the DNN's N_max (default ``n_users``; a mixed-N DNN is built for
        N_max users whatever the scenario's N).
      special_cost: MAC-equivalents per exp/log/divide (:func:`allocation_ops`).
    """
    n_max = n_users if n_max is None else n_max
    if K < 1 or n_users < 1 or n_max < n_users:
        raise ValueError(f"need K >= 1 and 1 <= n_users <= n_max, got K={K}, "
                         f"n_users={n_users}, n_max={n_max}")
    return float(dnn_macs(n_max, tuple(hidden))
                 + K * allocation_ops(int(n_users), float(special_cost)))


# ----------------------------------------------------------------------------
# Save and load
# ----------------------------------------------------------------------------

#: Format of ``droo.json`` (:func:`save_droo`).
FORMAT = 1
_decide_full_jit = jax.jit(decide_full)


@struct.dataclass
class DrooModel:
    """A trained DROO (:func:`load_droo`), a pytree usable inside ``jit`` (decides, Eq. 24-25).

    Attributes:
      params: the DNN's parameters (a Flax variable dict).
      k: K, candidates scored per decision (the final adaptive K), static int.
      config: the :class:`DrooConfig` trained with (static; sizes the DNN).
      record: JSON text of the training record (static; ``"{}"`` if none).
    """

    params: Any
    k: int = struct.field(pytree_node=False)
    config: DrooConfig = struct.field(pytree_node=False)
    record: str = struct.field(pytree_node=False, default="{}")

    @property
    def sys_params(self) -> SystemParams:
        """The system trained on (``record["system"]``, else Table II), N = N_max users."""
        rec = json.loads(self.record or "{}").get("system") or {}
        return SystemParams(**{**rec, "n_users": self.config.n_max})

    def decide(self, scn: Scenario, sys_params: SystemParams | None = None) -> Decision:
        """:func:`decide_full` (jitted) with this DNN and K: x, b_i [Hz], f_i [cycles/s],
        sum_i C_i (Eq. 24-25, no inference delay).  ``scn``: ``(B, N)`` or ``(N,)``,
        N <= N_max, SI units; ``sys_params`` defaults to :attr:`sys_params`."""
        sp = self.sys_params if sys_params is None else sys_params
        return _decide_full_jit(self.params, scn, sp, self.k)


def save_droo(params, k: int, config: DrooConfig, path, record: dict | None = None
              ) -> pathlib.Path:
    """Writes a trained DROO under directory ``path``; returns the path.

    ``params.msgpack`` (Flax msgpack of the DNN's parameters, one seed), then
    ``droo.json`` (``{"format", "config": the DrooConfig's fields, "k",
    "record"}``), each atomically (:func:`dynmec_jax.files.atomic_write`).
    ``k``: K in [1, N_max]; ``config`` must match ``params``' sizes;
    ``record``: JSON-able (costs in Eq. 24-25 units, times in s).
    """
    net = network_from_params(params)
    if (net.n_max, net.hidden) != (config.n_max, config.hidden):
        raise ValueError(f"params are a DNN for n_max={net.n_max}, hidden={net.hidden}; "
                         f"config says n_max={config.n_max}, hidden={config.hidden}")
    if not 1 <= int(k) <= config.n_max:
        raise ValueError(f"k must be in [1, n_max={config.n_max}], got {k}")
    path = pathlib.Path(path)
    meta = {"format": FORMAT, "config": files.to_jsonable(config), "k": int(k),
            "record": files.to_jsonable(record or {})}
    files.atomic_write(path / "params.msgpack",
                       serialization.to_bytes(jax.tree.map(np.asarray, params)))
    files.atomic_write(path / "droo.json", files.dumps(meta, indent=1))
    return path


def load_droo(path=None) -> DrooModel:
    """Loads a DROO saved by :func:`save_droo`; ``path=None`` loads the shipped default.

    The default (:data:`PRETRAINED_DIR`) serves every N up to N_max = 64 (its decisions:
    :meth:`DrooModel.decide`, sum_i C_i of Eq. 24-25; SI units).
    Shapes come from ``jax.eval_shape`` of :func:`init_params`.  Raises
    ``FileNotFoundError`` naming a missing file and ``ValueError`` naming the
    path if the files are corrupt (bad JSON, format, config, K or bytes).
    """
    path = PRETRAINED_DIR if path is None else pathlib.Path(path)
    meta_file, params_file = files.model_files(path, "DROO", "droo.json",
                                               "params.msgpack")
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown droo.json format {meta.get('format')!r} "
                             f"(this version reads format {FORMAT})")
        config, k = DrooConfig(**meta["config"]), meta["k"]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= config.n_max:
            raise ValueError(f"k must be an integer in [1, {config.n_max}], got {k!r}")
        tmpl = jax.eval_shape(lambda: init_params(jax.random.key(0), config))
        params = serialization.from_bytes(tmpl, params_file.read_bytes())
        if not jax.tree.all(jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), tmpl, params)):
            raise ValueError("parameter shapes do not match the stored config")
    except Exception as e:  # msgpack/flax raise various types on corrupt bytes
        raise ValueError(f"corrupt DROO checkpoint at {path}: {e}") from e
    return DrooModel(params=jax.tree.map(jnp.asarray, params), k=k, config=config,
                     record=json.dumps(meta.get("record", {})))
