"""DROO as a baseline scheduler: a DNN, order-preserving quantisation and exact scoring.

Beyond the paper: a learned offloading baseline from the literature,

    L. Huang, S. Bi and Y.-J. A. Zhang, "Deep Reinforcement Learning for
    Online Computation Offloading in Wireless Powered Mobile-Edge Computing
    Networks", IEEE Trans. Mobile Computing 19(11), 2581-2593, 2020
    (the authors' public reference code, github.com/revenol/DROO: its main
    loop and its ``MemoryDNN`` class, TensorFlow and PyTorch versions),

adapted to the system of Section III and written as one pure JAX program.

Each time frame, DROO (i) maps the scenario to a relaxed offloading vector
in [0, 1]^N with a DNN, (ii) quantises it into K binary candidates with the
order-preserving (OP) method, (iii) scores every candidate exactly by
solving the resource allocation for it and keeps the best, (iv) stores
(input, best candidate) in a replay memory and, every delta frames, trains
the DNN on a random batch of the memory by binary cross-entropy (the best
candidate is the label: self-imitation of the exact search), and (v) adapts
K every Delta frames to the largest candidate index that recently won.

Kept from DROO (reference code values as defaults):

* the DNN: a fully connected ReLU network with hidden sizes (120, 80) and a
  sigmoid output (:class:`DrooNet`);
* OP quantisation, exactly as the reference ``knm`` (:func:`op_candidates`);
* scoring every candidate by the exact solution of the remaining (convex)
  resource-allocation problem and keeping the best (:func:`score_candidates`);
* a replay memory of 1,024 entries overwritten oldest first, training every
  delta = 10 frames on 128 entries drawn uniformly with replacement, binary
  cross-entropy, Adam with lr = 0.01 and beta_1 = 0.09 (sic: both reference
  versions pass 0.09);
* adaptive K with Delta = 32 and the reference code's exact rule, including
  its initial K = N (:func:`adaptive_k_start`).

Adapted to this system, and why:

* Objective and scoring: DROO maximises the weighted computation rate of a
  wireless-powered network, with a bisection search for each candidate's
  time allocation.  Here a candidate x in {0, 1}^N (Eq. 11b) is scored by
  sum_i C_i (Eq. 24 for local tasks, Eq. 25 for offloaded ones) under its
  exact allocation, :func:`dynmec_jax.baselines.exhaustive.energy_aware_allocation`
  (bandwidth from the KKT conditions of the full Eq. 25 cost, server CPU in
  closed form, Eq. 1-2, 11h-11k, 19), and the *smallest* cost wins.  No
  inference delay enters the scoring (as for the exhaustive optimum and the
  greedy rule); :func:`droo_ops` gives the delay a deployment would pay.
* Input: DROO feeds the N channel gains scaled by 1e6.  Here each user has
  the five features of Eq. 7 on very different scales, so the DNN reads the
  log-ratio features of :func:`dynmec_jax.nets.features.normalize_features`
  (the input of every network of this project), flattened over the users:
  5 N_max inputs.  The feature scales follow the traced ``sys_params``
  (:meth:`~dynmec_jax.nets.features.FeatureScales.from_params`).
* Padding (mixed N): scenarios of N <= N_max users are padded to N_max with
  empty tasks (:func:`dynmec_jax.system.mask_padding`) and a ``valid`` mask.
  Padded users never offload (every candidate is ANDed with ``valid``), are
  left out of the OP ordering, and are masked out of the cross-entropy; a
  scenario with n real users gets at most n candidates (the reference's
  maximum K = N at N = n).  One DNN then serves every N up to N_max.  At a
  fixed N, N_max = N and nothing is padded.
* Logits: the DNN returns logits and the quantisation runs on them with
  threshold 0, which is exactly equivalent to the reference's sigmoid output
  with threshold 0.5 (sigmoid is increasing and symmetric about 0.5, so the
  order of |m - 0.5| is the order of |logit| and m > m_k iff logit >
  logit_k; the TensorFlow reference does the same) but keeps the order of
  float32 outputs that the sigmoid would round to exactly 0 or 1.
* Static shapes: K is traced, so all K_max = N_max candidates are generated
  and those with index >= K are masked (never chosen).
* Several scenarios per frame (``scenarios_per_frame``, default 1 = DROO):
  a frame decides B scenarios with the same DNN and K and stores all B best
  candidates; delta and Delta still count frames.  B > 1 trades gradient
  steps per scenario (B times fewer) for speed; see :class:`DrooConfig`.
* Bookkeeping: the memory pointer starts at 0 and sampling draws from the
  entries written so far (the reference's counter starts at 1, so its slot 0
  holds a zero row, which can be sampled, until the first wrap); the DNN
  trains after frames delta - 1, 2 delta - 1, ... (0-based; the reference:
  delta - 2, 2 delta - 2, ...).  The DNN starts from Flax's default
  initialisation (the PyTorch reference uses PyTorch's defaults; the
  TensorFlow one N(0, 1/N) weights and biases 0.1), and Adam's state is
  kept across updates (as in the TensorFlow reference; the PyTorch one
  re-creates its optimiser at every update and adds L2 1e-4).

Measured (2 shared CPU cores; Table II values; 9,600 training scenarios,
one per frame, i.e. 960 DNN updates; held-out sum_i C_i, mean over 1,024
scenarios; no inference delay): at N = 10, 75.9-76.1 (3 seeds; final
K = 6), the removal-only greedy 76.0, the exact optimum 74.5 (DROO +2.0%);
at N = 30, 538-539 (final K = 13-14) against the greedy's 486 (+10.8%):
the best of the K OP neighbours of the DNN's own output, which is also its
training label, stops improving well before the greedy's level.  With
lr = 1e-3 and beta_1 = 0.9 instead of the reference values, 524-528
(+8.2%).  Training at N = 30 takes about 2.5 s per seed after a 5-8 s
compilation; several scenarios per frame save little time and cost
quality (B = 8: 554).

Everything is pure: :func:`make_train` returns ``train(key, sys_params)``
built from ``lax.scan``; the configuration (:class:`DrooConfig`) holds
the static settings and ``sys_params`` is traced, so
``jax.jit(jax.vmap(train))`` trains several seeds (and stacked
``SystemParams``) side by side.  No global state; PRNG keys are explicit.

Units: SI throughout (bits, cycles/bit, s, m, Hz); costs in the units of
Eq. 24-25; operation counts in MAC-equivalents (Eq. 8-9).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dynmec_jax import accounting, system
from dynmec_jax.baselines import exhaustive
from dynmec_jax.baselines.optimal import count_jaxpr_ops
from dynmec_jax.nets import features
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: DROO's hidden layer sizes (reference ``net = [N, 120, 80, N]``).
HIDDEN = (120, 80)


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DrooConfig:
    """Static settings of DROO's training (frozen, hashable; validated when built).

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
      adaptive_k: True: K follows :func:`adaptive_k_start`; False: K = N_max
        throughout.
      lr: Adam's learning rate (DROO: 0.01).
      adam_b1, adam_b2: Adam's beta_1 (DROO's code: 0.09) and beta_2 (0.999).
      n_scenarios: total number of training scenarios, i.e. the scenario
        budget (e.g. the learned scheduler's episodes x batch); must be a
        multiple of ``scenarios_per_frame``.
      scenarios_per_frame: B, scenarios decided per frame (scan step) with the
        same DNN and K; all B best candidates enter the memory.  1 is DROO;
        a larger B runs faster on a CPU but takes B times fewer gradient
        steps per scenario (delta and Delta count frames), so it is
        ``n_scenarios / (B delta)`` updates in all.  At most ``memory_size``.
    """

    n_max: int = 30
    n_users_min: int | None = None
    hidden: tuple = HIDDEN
    memory_size: int = 1024
    batch: int = 128
    train_interval: int = 10
    k_interval: int = 32
    adaptive_k: bool = True
    lr: float = 0.01
    adam_b1: float = 0.09
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
    """The :class:`DrooNet` whose parameters are ``params`` (sizes read off their shapes)."""
    p = params["params"]
    n_hidden = sum(1 for name in p if name.startswith("hidden_"))
    hidden = tuple(int(p[f"hidden_{i}"]["kernel"].shape[1]) for i in range(n_hidden))
    return DrooNet(n_max=int(p["out"]["kernel"].shape[1]), hidden=hidden)


def init_params(key: Array, config: DrooConfig):
    """Initial DNN parameters for ``config`` (Flax default initialisation)."""
    net = DrooNet(config.n_max, config.hidden)
    return net.init(key, jnp.zeros((config.n_max, accounting.N_FEATURES), jnp.float32))


def scenario_features(scn: Scenario, sys_params: SystemParams) -> Array:
    """The DNN input of each scenario: log-ratio features ``(..., N, 5)`` (dimensionless).

    :func:`dynmec_jax.nets.features.normalize_features` with the scales of
    ``sys_params`` (s_avg, c_avg, d_max, l_max, f_loc,max; traced is fine).
    """
    return features.normalize_features(scn, features.FeatureScales.from_params(sys_params))


def relaxed_offloading(params, scn: Scenario, sys_params: SystemParams) -> Array:
    """DROO's relaxed offloading vector sigmoid(DNN(features)), ``(..., N_max)`` in [0, 1].

    ``scn`` fields ``(..., N_max)`` (padded users' entries are meaningless).
    """
    net = network_from_params(params)
    return jax.nn.sigmoid(net.apply(params, scenario_features(scn, sys_params)))


# ----------------------------------------------------------------------------
# Order-preserving quantisation
# ----------------------------------------------------------------------------

def op_candidates(m: Array, k: Array, valid: Array | None = None,
                  threshold: float = 0.5) -> tuple[Array, Array]:
    """DROO's order-preserving (OP) quantisation into K_max = N binary candidates.

    For a relaxed vector m (``threshold`` 0.5; or logits with ``threshold``
    0, which gives the same candidates), as the reference ``knm``:

    * candidate 0: x_i = [m_i > threshold];
    * candidate j = 1 .. N-1: with m_(j) the entry j-th closest to the
      threshold (``argsort(|m - threshold|)``, stable, ties by index),
      x_i = [m_i > m_(j)] if m_(j) > threshold (the j-th closest entry is
      set to 0, with everything below it), else x_i = [m_i >= m_(j)] (set
      to 1, with everything above it).

    All N candidates are generated (static shape); candidate j is usable iff
    j < min(K, n_valid), where n_valid is the number of real users: the
    reference generates K <= N candidates, so a scenario of n real users
    gets at most n.  Padded users (``valid`` false) are left out of the
    ordering and never offload in any candidate.

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


def _decide_logits(logits, scn, k, valid, sys_params) -> Decision:
    """Quantise logits (threshold 0), score, pick the best candidate (ties: lowest index)."""
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
    """DROO's inference with everything it computes: :class:`Decision`.

    See :func:`decide`; also returns the cost (Eq. 24-25, no inference
    delay) and the winning candidate's index.
    """
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
    return _decide_logits(logits, scn, jnp.asarray(K, jnp.int32), valid, sys_params)


def decide(params, scn: Scenario, sys_params: SystemParams, K: Array,
           valid: Array | None = None) -> tuple[Array, Array, Array]:
    """DROO's offloading decision and exact allocation: ``(offload, bandwidth, f_alloc)``.

    The DNN maps the scenario's features to logits, :func:`op_candidates`
    makes K candidates (K_max = N_max generated, those >= K masked),
    :func:`score_candidates` scores each one by its exact allocation, and the
    cheapest (sum_i C_i, Eq. 24-25) is returned.  ``jit``-able (K and
    ``sys_params`` traced).

    Args:
      params: the DNN's parameters (e.g. ``DrooState.params``); the network
        sizes are read off them.
      scn: tasks, fields ``(B, N)`` or ``(N,)``, SI units.  N = N_max, or
        N < N_max without ``valid`` (then padded to N_max with empty tasks
        here and the outputs cut back to N).
      sys_params: the system (traced is fine).
      K: number of candidates, int scalar or ``(B,)`` (e.g. ``DrooState.k``);
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


# ----------------------------------------------------------------------------
# Replay memory
# ----------------------------------------------------------------------------

class ReplayMemory(NamedTuple):
    """DROO's replay memory: a ring buffer of fixed-size arrays.

    Entry ``j`` was written at slot ``j % capacity``; ``count`` entries have
    been written in all (the next goes to slot ``count % capacity``), so once
    ``count > capacity`` the memory holds the newest ``capacity`` entries.

    Attributes:
      features: DNN inputs, ``(capacity, N_max, 5)`` float32.
      labels: best candidates as 0/1, ``(capacity, N_max)`` float32.
      valid: real users, ``(capacity, N_max)`` bool.
      count: entries written so far, int32 scalar.
    """

    features: Array
    labels: Array
    valid: Array
    count: Array


def memory_init(capacity: int, n_max: int) -> ReplayMemory:
    """An empty :class:`ReplayMemory` of ``capacity`` entries for N_max = ``n_max`` users."""
    return ReplayMemory(
        features=jnp.zeros((capacity, n_max, accounting.N_FEATURES), jnp.float32),
        labels=jnp.zeros((capacity, n_max), jnp.float32),
        valid=jnp.zeros((capacity, n_max), bool),
        count=jnp.zeros((), jnp.int32))


def memory_push(mem: ReplayMemory, feats: Array, labels: Array, valid: Array) -> ReplayMemory:
    """Writes B entries (oldest slots first), overwriting the oldest when full.

    Args:
      feats: ``(B, N_max, 5)``; labels: ``(B, N_max)`` (bool or 0/1);
      valid: bool ``(B, N_max)``.  B <= capacity (static).
    """
    cap = mem.labels.shape[0]
    b = labels.shape[0]
    if b > cap:
        raise ValueError(f"cannot push {b} entries into a memory of {cap}")
    idx = (mem.count + jnp.arange(b, dtype=jnp.int32)) % cap
    return ReplayMemory(
        features=mem.features.at[idx].set(jnp.asarray(feats, mem.features.dtype)),
        labels=mem.labels.at[idx].set(jnp.asarray(labels, mem.labels.dtype)),
        valid=mem.valid.at[idx].set(jnp.asarray(valid, bool)),
        count=mem.count + b)


def memory_sample(mem: ReplayMemory, key: Array, batch: int) -> tuple[Array, Array, Array]:
    """``batch`` entries drawn uniformly with replacement from those written so far.

    As the reference (``np.random.choice`` over the filled slots).  Returns
    ``(features, labels, valid)`` of shapes ``(batch, N_max, 5)``,
    ``(batch, N_max)``, ``(batch, N_max)``.  The memory must not be empty.
    """
    cap = mem.labels.shape[0]
    filled = jnp.maximum(jnp.minimum(mem.count, cap), 1)
    idx = jax.random.randint(key, (batch,), 0, filled)
    return mem.features[idx], mem.labels[idx], mem.valid[idx]


# ----------------------------------------------------------------------------
# Adaptive K
# ----------------------------------------------------------------------------

def adaptive_k_start(k: Array, window_max: Array, frame: Array, k_interval: int,
                     k_max: int) -> tuple[Array, Array]:
    """DROO's adaptive-K rule at the start of a frame, as in the reference main loop.

    The reference, at 0-based frame i before deciding::

        if i > 0 and i % Delta == 0:
            max_k = max(k_idx_his[-Delta:-1]) + 1   # Delta == 1: k_idx_his[-1] + 1
            K = min(max_k + 1, N)

    with K = N initially and ``k_idx_his`` the 0-based index of each frame's
    winning candidate.  So K = min(2 + the largest winning index over frames
    i - Delta .. i - 2, N): the slice ``[-Delta:-1]`` leaves out the latest
    frame i - 1 (the paper's rule, K = min(max(k*_{t-1}, ..., k*_{t-Delta})
    + 1, N) with 1-based k*, includes it), and K keeps a margin of one
    candidate above the largest index that won.  Instead of the history, the
    running maximum of the window is carried (:func:`adaptive_k_record`).

    Args:
      k: K in force before this frame, int32.
      window_max: the window's running maximum (-1 for none), int32.
      frame: i, the 0-based frame index (traced or not).
      k_interval: Delta (static); k_max: N (static).
    Returns:
      ``(k, window_max)``: K for this frame (and on, until the next update)
      and the window's running maximum (reset to -1 at an update).
    """
    update = (frame > 0) & (frame % k_interval == 0)
    k_new = jnp.where(update, jnp.minimum(window_max + 2, k_max), k)
    return k_new.astype(jnp.int32), jnp.where(update, -1, window_max).astype(jnp.int32)


def adaptive_k_record(window_max: Array, frame: Array, best_index: Array,
                      k_interval: int) -> Array:
    """Counts frame i's winning index in the adaptive-K window (:func:`adaptive_k_start`).

    Frames with ``i % Delta == Delta - 1`` are left out (the reference's
    ``[-Delta:-1]``); with Delta = 1 the window is the latest frame alone.

    Args:
      window_max: running maximum after :func:`adaptive_k_start`, int32.
      frame: i (0-based); best_index: the frame's winning index (with
        several scenarios per frame: their largest), int32.
      k_interval: Delta (static).
    Returns:
      the new running maximum, int32.
    """
    best_index = jnp.asarray(best_index, jnp.int32)
    if k_interval == 1:
        return best_index
    counted = frame % k_interval != k_interval - 1
    return jnp.where(counted, jnp.maximum(window_max, best_index), window_max).astype(jnp.int32)


# ----------------------------------------------------------------------------
# Training (DROO's algorithm as one pure program)
# ----------------------------------------------------------------------------

class DrooState(NamedTuple):
    """DROO's training state after some frames.

    Attributes:
      params: the DNN's parameters (a Flax variable dict; :func:`decide`).
      opt_state: Adam's state.
      memory: the :class:`ReplayMemory`.
      k: K, the number of candidates in force, int32 scalar (give it to
        :func:`decide`).
      window_max: running maximum of the adaptive-K window, int32 (-1: none).
      frame: frames processed, int32.
      updates: DNN updates taken, int32.
      loss: cross-entropy of the latest update (0 before the first), float32.
    """

    params: Any
    opt_state: Any
    memory: ReplayMemory
    k: Array
    window_max: Array
    frame: Array
    updates: Array
    loss: Array


def make_optimizer(config: DrooConfig) -> optax.GradientTransformation:
    """DROO's optimiser: Adam(lr, beta_1, beta_2) of ``config``."""
    return optax.adam(config.lr, b1=config.adam_b1, b2=config.adam_b2)


def init_state(key: Array, config: DrooConfig) -> DrooState:
    """A fresh :class:`DrooState`: initial DNN, empty memory, K = N_max (as DROO)."""
    params = init_params(key, config)
    return DrooState(params=params, opt_state=make_optimizer(config).init(params),
                     memory=memory_init(config.memory_size, config.n_max),
                     k=jnp.asarray(config.n_max, jnp.int32),
                     window_max=jnp.asarray(-1, jnp.int32), frame=jnp.zeros((), jnp.int32),
                     updates=jnp.zeros((), jnp.int32), loss=jnp.zeros((), jnp.float32))


def bce_loss(params, net: DrooNet, feats: Array, labels: Array, valid: Array) -> Array:
    """Binary cross-entropy of the DNN against memory labels, mean over real users.

    DROO's loss (``BCELoss`` of the sigmoid output) computed from the logits
    (``optax.sigmoid_binary_cross_entropy``, numerically stable); padded
    users are left out.  Dimensionless scalar.
    """
    logits = net.apply(params, feats)
    ce = optax.sigmoid_binary_cross_entropy(logits, labels)
    v = valid.astype(ce.dtype)
    return jnp.sum(ce * v) / jnp.maximum(jnp.sum(v), 1.0)


def sample_frame(config: DrooConfig, key: Array, sys_params: SystemParams):
    """``(scn, valid)``: the B = ``scenarios_per_frame`` scenarios of one frame.

    N_max users each (``valid`` all true), or N ~ U{n_users_min, ..., N_max}
    padded to N_max (:func:`dynmec_jax.system.sample_mixed_scenarios`).
    ``sys_params.n_users`` is replaced by ``config.n_max``.
    """
    sp = sys_params.replace(n_users=config.n_max)
    b = config.scenarios_per_frame
    if config.n_users_min is None:
        scn = system.sample_scenarios(key, sp, b)
        return scn, jnp.ones(scn.shape, bool)
    return system.sample_mixed_scenarios(key, sp, b, config.n_users_min)


def make_frame(config: DrooConfig):
    """One time frame of DROO: ``frame(state, t, key, sys_params) -> (state, metrics)``.

    ``t`` is the 0-based frame index (pass it un-batched, e.g. from the scan's
    ``xs``, so that the update's ``lax.cond`` stays a branch under ``vmap``).
    Steps: update K (:func:`adaptive_k_start`, :func:`adaptive_k_record`); sample B scenarios
    (:func:`sample_frame`); decide them (DNN, OP quantisation, exact scoring);
    push the B (features, best candidate) pairs into the memory; if
    ``(t + 1) % train_interval == 0``, one Adam step on ``batch`` memory
    entries (:func:`bce_loss`).

    Metrics (scalars): ``cost`` (mean sum_i C_i of the frame's decisions,
    Eq. 24-25), ``best_index`` (largest winning index), ``k`` (K used),
    ``offload_fraction`` (over real users), ``loss`` (latest update's
    cross-entropy), ``trained`` (1.0 if the DNN was updated this frame).
    """
    net = DrooNet(config.n_max, config.hidden)
    tx = make_optimizer(config)
    k_max = config.n_max

    def train_step(state: DrooState, key):
        feats, labels, valid = memory_sample(state.memory, key, config.batch)
        loss, grads = jax.value_and_grad(bce_loss)(state.params, net, feats, labels, valid)
        upd, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        return state._replace(params=params, opt_state=opt_state, loss=loss,
                              updates=state.updates + 1)

    def frame(state: DrooState, t, key, sys_params: SystemParams):
        k_scn, k_train = jax.random.split(key)
        if config.adaptive_k:
            k_use, window = adaptive_k_start(state.k, state.window_max, t, config.k_interval,
                                             k_max)
        else:
            k_use, window = state.k, state.window_max
        scn, valid = sample_frame(config, k_scn, sys_params)
        z = scenario_features(scn, sys_params)
        logits = net.apply(state.params, z)
        d = _decide_logits(logits, scn, k_use, valid, sys_params)
        best_index = jnp.max(d.index)
        if config.adaptive_k:
            window = adaptive_k_record(window, t, best_index, config.k_interval)
        memory = memory_push(state.memory, z, d.offload, valid)
        state = state._replace(memory=memory, k=k_use, window_max=window, frame=state.frame + 1)
        do_train = (t + 1) % config.train_interval == 0
        state = jax.lax.cond(do_train, train_step, lambda s, _: s, state, k_train)
        v = valid.astype(jnp.float32)
        metrics = {"cost": jnp.mean(d.cost), "best_index": best_index, "k": k_use,
                   "offload_fraction": jnp.sum(d.offload * v) / jnp.maximum(jnp.sum(v), 1.0),
                   "loss": state.loss, "trained": jnp.asarray(do_train, jnp.float32)}
        return state, metrics

    return frame


def make_train(config: DrooConfig):
    """DROO's training as one pure program: ``train(key, sys_params) -> (DrooState, metrics)``.

    ``key`` splits into the DNN's initialisation and the frames' keys;
    ``config.n_frames`` frames (:func:`make_frame`) run in one ``lax.scan``,
    ``config.scenarios_per_frame`` fresh scenarios each, so the training
    sees ``config.n_scenarios`` scenarios in all (the scenario budget; each
    decided once, online, as in DROO).  ``metrics``: the frame metrics of
    :func:`make_frame`, stacked, each ``(n_frames,)``.

    Pure: ``jax.jit(jax.vmap(train))`` over stacked keys (and a stacked
    ``SystemParams``) trains several seeds (and sweep points) at once;
    ``sys_params.n_users`` is replaced by ``config.n_max``.
    """
    frame = make_frame(config)

    def train(key, sys_params: SystemParams):
        k_init, k_frames = jax.random.split(key)
        state = init_state(k_init, config)
        keys = jax.random.split(k_frames, config.n_frames)
        frames = jnp.arange(config.n_frames, dtype=jnp.int32)
        return jax.lax.scan(lambda s, x: frame(s, x[0], x[1], sys_params), state,
                            (frames, keys))

    return train


def evaluate(params, K: Array, scn: Scenario, sys_params: SystemParams,
             valid: Array | None = None) -> dict:
    """Held-out check of DROO's decisions (:func:`decide_full`), as scalars.

    Returns ``cost`` (mean over scenarios of sum_i C_i, Eq. 24-25, no
    inference delay), ``offload_fraction`` (over the real users) and
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

def _dead_code_eliminated(closed):
    """The jaxpr without the equations its outputs do not need (what XLA would run).

    Uses JAX's internal ``dce_jaxpr``; if it is unavailable the jaxpr is
    returned whole (an over-count).
    """
    try:
        from jax._src.interpreters import partial_eval as pe
        jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
        return jaxpr
    except Exception:  # pragma: no cover - depends on JAX internals
        return closed.jaxpr


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
    if n_users < 0:
        raise ValueError(f"n_users must be >= 0, got {n_users}")
    if n_users == 0:
        return 0.0
    params = SystemParams(n_users=n_users)
    ones = jnp.ones((n_users,), jnp.float32)
    scn = Scenario(size=ones, workload=ones, deadline=ones, distance=ones, f_local=ones)

    def run(s):
        return exhaustive.energy_aware_allocation(s, jnp.ones((n_users,), bool), params)

    closed = jax.make_jaxpr(run)(scn)
    return float(count_jaxpr_ops(_dead_code_eliminated(closed), special_cost))


def dnn_macs(n_max: int, hidden: tuple = HIDDEN) -> int:
    """MACs of one forward pass of :class:`DrooNet` (Eq. 8 summed, zeta = 1, iota = 0)."""
    return accounting.mlp_macs([accounting.N_FEATURES * n_max, *hidden, n_max])


def droo_ops(n_users: int, K: int, hidden: tuple = HIDDEN, n_max: int | None = None,
             special_cost: float = 1.0) -> float:
    """Operations of one DROO inference, in MAC-equivalents (for Eq. 9).

    = the DNN's MACs (:func:`dnn_macs`, as :mod:`dynmec_jax.accounting`
    counts them: one per multiply-accumulate of each dense layer) + K x the
    operations of one exact allocation (:func:`allocation_ops`, one per
    candidate scored).  The quantisation (a sort) and the candidates' cost
    sums are not counted (they favour DROO, and are small next to the
    allocations).

    The deployed DROO's inference delay is Eq. 9, ``T = lambda droo_ops /
    f_ser`` [s] (``accounting.inference_delay(droo_ops(...), sys_params)``),
    and every task pays it, local ones too: they wait for the decision
    (T_l^infer = T_e^infer = T in Eq. 24-25, 34-35).  At N = 30 with the
    default DNN: 30,000 MACs + K x 16,188 (special_cost 1), e.g. K = 14:
    256,632, i.e. 0.10 ms at Table II's f_ser = 2.5 GHz and lambda = 1.

    Args:
      n_users: N, users of the scenario (the allocations run over them).
      K: candidates scored (e.g. ``int(DrooState.k)``), >= 1.
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
