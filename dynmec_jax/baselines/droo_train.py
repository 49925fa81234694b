"""DROO's training: replay memory, adaptive K, the frames, and a run from the command line.

The decision side of DROO (Huang, Bi, Zhang, IEEE TMC 2020: the DNN,
order-preserving quantisation, exact scoring, save/load) is
:mod:`dynmec_jax.baselines.droo`; this module trains it, as DROO does,
online: each time frame decides fresh scenarios with the current DNN,
stores (input, best candidate) in a replay memory and, every delta frames,
trains the DNN on a random batch of the memory by binary cross-entropy
(self-imitation of the exact search), and adapts K every Delta frames.

Kept from DROO (reference code, github.com/revenol/DROO, values as defaults
of :class:`~dynmec_jax.baselines.droo.DrooConfig`):

* a replay memory of 1,024 entries overwritten oldest first, training every
  delta = 10 frames on 128 entries drawn uniformly with replacement, binary
  cross-entropy, Adam with lr = 0.01 and beta_1 = 0.09 (sic: both reference
  versions pass 0.09) (:class:`ReplayMemory`, :func:`bce_loss`);
* adaptive K with Delta = 32 and the reference code's exact rule, including
  its initial K = N (:func:`adaptive_k_start`).

Adapted, and why:

* Several scenarios per frame (``scenarios_per_frame``, default 1 = DROO):
  a frame decides B scenarios with the same DNN and K and stores all B best
  candidates; delta and Delta still count frames.  B > 1 trades gradient
  steps per scenario (B times fewer) for speed.
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
built from ``lax.scan``; the configuration holds the static settings and
``sys_params`` is traced, so ``jax.jit(jax.vmap(train))`` trains several
seeds (and stacked ``SystemParams``) side by side.  No global state; PRNG
keys are explicit.

A run (``dynmec-train-droo``, :mod:`dynmec_jax.cli.train_droo`): a
:class:`DrooRunConfig` (presets in ``dynmec_jax/configs/droo.py``) and
:func:`train_and_select`, which trains the seeds side by side, scores each on
held-out scenarios of the training distribution, and saves the best with
:func:`~dynmec_jax.baselines.droo.save_droo`.

Units: SI throughout (bits, cycles/bit, s, m, Hz); costs in the units of
Eq. 24-25.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dynmec_jax import accounting, files, system
from dynmec_jax.baselines import droo
from dynmec_jax.baselines.droo import DrooConfig, DrooNet
from dynmec_jax.baselines.greedy import greedy_offloading
from dynmec_jax.system import SystemParams
from dynmec_jax.train import loop
from dynmec_jax.train.config import check_seed

Array = Any

# ----------------------------------------------------------------------------
# Replay memory
# ----------------------------------------------------------------------------

class ReplayMemory(NamedTuple):
    """DROO's replay memory: a ring buffer of fixed-size arrays.

    Entry ``j`` was written at slot ``j % capacity``; ``count`` entries have
    been written in all (the next goes to slot ``count % capacity``), so once
    ``count > capacity`` the memory holds the newest ``capacity`` entries.

    Attributes:
      features: DNN inputs, the Eq. 7 log-ratio features (dimensionless),
        ``(capacity, N_max, 5)`` float32.
      labels: best candidates x (Eq. 11b; least sum_i C_i, Eq. 24-25) as 0/1,
        ``(capacity, N_max)`` float32.
      valid: real users, ``(capacity, N_max)`` bool.
      count: entries written so far, int32 scalar.
    """

    features: Array
    labels: Array
    valid: Array
    count: Array


def memory_init(capacity: int, n_max: int) -> ReplayMemory:
    """An empty :class:`ReplayMemory` of ``capacity`` entries [entries] for N_max =
    ``n_max`` users (Eq. 7 features, Eq. 11b labels; zeros, ``count`` 0)."""
    return ReplayMemory(
        features=jnp.zeros((capacity, n_max, accounting.N_FEATURES), jnp.float32),
        labels=jnp.zeros((capacity, n_max), jnp.float32),
        valid=jnp.zeros((capacity, n_max), bool),
        count=jnp.zeros((), jnp.int32))


def memory_push(mem: ReplayMemory, feats: Array, labels: Array, valid: Array) -> ReplayMemory:
    """Writes B entries (oldest slots first), overwriting the oldest when full.

    Args:
      feats: ``(B, N_max, 5)`` Eq. 7 features (dimensionless); labels:
        ``(B, N_max)`` (bool or 0/1, Eq. 11b's x); valid: bool ``(B, N_max)``.
        B <= capacity [entries] (static).
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

    As the reference (``np.random.choice`` over the filled slots); features
    dimensionless (Eq. 7), labels 0/1 (Eq. 11b).  Returns
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

    K counts candidates (dimensionless), each scored by sum_i C_i (Eq. 24-25);
    K also sets the deployed inference operations (Eq. 9, ``droo.droo_ops``).

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

    The winning index is that of the candidate of least sum_i C_i (Eq. 24-25); a count.

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
    """DROO's training state after some frames (the decisions' costs: Eq. 24-25).

    Attributes:
      params: the DNN's parameters (a Flax variable dict;
        :func:`dynmec_jax.baselines.droo.decide`).
      opt_state: Adam's state.
      memory: the :class:`ReplayMemory`.
      k: K, the number of candidates in force, int32 scalar (give it to
        :func:`dynmec_jax.baselines.droo.decide`).
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
    """DROO's optimiser: Adam(lr, beta_1, beta_2) of ``config`` (the loss, :func:`bce_loss`,
    is dimensionless; the labels minimise sum_i C_i, Eq. 24-25)."""
    return optax.adam(config.lr, b1=config.adam_b1, b2=config.adam_b2)


def init_state(key: Array, config: DrooConfig) -> DrooState:
    """A fresh :class:`DrooState`: initial DNN, empty memory, K = N_max (as DROO); K
    candidates are scored per decision (Eq. 24-25), charged per Eq. 9 when deployed."""
    params = droo.init_params(key, config)
    return DrooState(params=params, opt_state=make_optimizer(config).init(params),
                     memory=memory_init(config.memory_size, config.n_max),
                     k=jnp.asarray(config.n_max, jnp.int32),
                     window_max=jnp.asarray(-1, jnp.int32), frame=jnp.zeros((), jnp.int32),
                     updates=jnp.zeros((), jnp.int32), loss=jnp.zeros((), jnp.float32))


def bce_loss(params, net: DrooNet, feats: Array, labels: Array, valid: Array) -> Array:
    """Binary cross-entropy of the DNN against memory labels, mean over real users.

    DROO's loss (``BCELoss`` of the sigmoid output) computed from the logits
    (``optax.sigmoid_binary_cross_entropy``, numerically stable); padded
    users are left out.  Dimensionless scalar; the labels are the Eq. 11b
    decisions of least sum_i C_i (Eq. 24-25), the features those of Eq. 7.
    """
    logits = net.apply(params, feats)
    ce = optax.sigmoid_binary_cross_entropy(logits, labels)
    v = valid.astype(ce.dtype)
    return jnp.sum(ce * v) / jnp.maximum(jnp.sum(v), 1.0)


def sample_frame(config: DrooConfig, key: Array, sys_params: SystemParams,
                 batch: int | None = None):
    """``(scn, valid)``: the B = ``scenarios_per_frame`` scenarios of one frame
    (or ``batch`` scenarios of the training distribution, e.g. held out).

    N_max users each (``valid`` all true), or N ~ U{n_users_min, ..., N_max}
    padded to N_max with empty tasks (:func:`dynmec_jax.system.sample_mixed_scenarios`).
    ``sys_params.n_users`` is replaced by ``config.n_max``.  Fields ``(B, N_max)``, SI units.
    """
    sp = sys_params.replace(n_users=config.n_max)
    b = config.scenarios_per_frame if batch is None else batch
    if config.n_users_min is None:
        scn = system.sample_scenarios(key, sp, b)
        return scn, jnp.ones(scn.shape, bool)
    return system.sample_mixed_scenarios(key, sp, b, config.n_users_min)


def _make_train_step(config: DrooConfig, net: DrooNet):
    """``train_step(state, key) -> state``: one Adam step of the DNN on ``config.batch``
    memory entries drawn with ``key`` (:func:`memory_sample`, :func:`bce_loss`)."""
    tx = make_optimizer(config)

    def train_step(state: DrooState, key):
        feats, labels, valid = memory_sample(state.memory, key, config.batch)
        loss, grads = jax.value_and_grad(bce_loss)(state.params, net, feats, labels, valid)
        upd, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        return state._replace(params=params, opt_state=opt_state, loss=loss,
                              updates=state.updates + 1)

    return train_step


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
    k_max = config.n_max
    train_step = _make_train_step(config, net)

    def frame(state: DrooState, t, key, sys_params: SystemParams):
        k_scn, k_train = jax.random.split(key)
        if config.adaptive_k:
            k_use, window = adaptive_k_start(state.k, state.window_max, t, config.k_interval,
                                             k_max)
        else:
            k_use, window = state.k, state.window_max
        scn, valid = sample_frame(config, k_scn, sys_params)
        z = droo.scenario_features(scn, sys_params)
        logits = net.apply(state.params, z)
        d = droo.decide_logits(logits, scn, k_use, valid, sys_params)
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


def make_block(config: DrooConfig, n_frames: int | None = None):
    """``n_frames`` consecutive frames of DROO decided at once: ``block(state, ts, keys,
    sys_params, train) -> (state, metrics)``, what :func:`make_frame` gives frame by frame.

    Between two DNN updates (every delta = ``train_interval`` frames) the
    frames decide with the same DNN, and the adaptive K only masks
    candidates (K_max = N_max are always generated), so the
    frames of one update interval are sampled, run through the DNN and
    scored (exact allocation, sum_i C_i of Eq. 24-25) as one batch; only
    the adaptive-K rule (:func:`adaptive_k_start`, :func:`adaptive_k_record`)
    and the choice of the best of the first K candidates run frame by frame
    (a scan over ``(B, N_max)`` costs).  The frames' entries are then pushed
    into the memory in frame order and, when the block ends a delta
    interval, the DNN takes its step with the last frame's training key, as
    in :func:`make_frame`.

    Only the candidates a frame's K can reach are scored
    (:func:`~dynmec_jax.baselines.droo.candidate_costs`): K changes only at
    a K update, by at most one upward (it becomes 2 + a winning index, and
    a winning index is below the K in force), so the block's first K plus
    its number of K updates bounds every frame's K.  At N = 30 K falls from
    30 within the first tenth of training (mean 14.9 over the run), and the scoring is
    most of a frame: blocks and the bound make DROO's training of the quick
    preset about 0.6x the time of frames one by one
    (``docs/performance.md``).  The decisions are the same (bitwise in the
    benchmark and the tests; the batched programs round differently in
    float32, which could only flip a near-tie between two candidates).

    Args:
      config: DROO's settings.
      n_frames: frames per block (static), default ``train_interval``;
        ``n_frames x scenarios_per_frame`` must fit the memory.
    Returns:
      ``block(state, ts, keys, sys_params, train)``: ``ts`` the 0-based
      frame indices (int32 ``(n_frames,)``), ``keys`` the frames' keys as
      :func:`make_frame` takes them, ``train`` (static bool) whether the
      block ends a delta interval (then the DNN takes one Adam step on the
      memory, with the last frame's training key).  Metrics as
      :func:`make_frame`'s, stacked ``(n_frames,)``.
    """
    net = DrooNet(config.n_max, config.hidden)
    train_step = _make_train_step(config, net)
    k_max = config.n_max
    nf = config.train_interval if n_frames is None else n_frames
    b = config.scenarios_per_frame
    if nf * b > config.memory_size:
        raise ValueError(f"a block of {nf} frames x {b} scenarios does not fit the memory "
                         f"of {config.memory_size}")

    def block(state: DrooState, ts, keys, sys_params: SystemParams, train: bool):
        split = jax.vmap(jax.random.split)(keys)                    # (nf, 2) keys
        k_scn, k_train = split[:, 0], split[:, 1]
        scn, valid = jax.vmap(lambda k: sample_frame(config, k, sys_params))(k_scn)
        z = droo.scenario_features(scn, sys_params)                 # (nf, B, N, 5)
        logits = net.apply(state.params, z)
        # Every candidate a frame could use (K = N_max); each frame's K masks them below.
        cands, usable = droo.op_candidates(logits, k_max, valid, threshold=0.0)
        # A frame's K is at most the block's first K plus one per K update in the block
        # (an update sets K <= 2 + a winning index < K), so later candidates are not scored.
        if config.adaptive_k:
            n_upd = jnp.sum((ts > 0) & (ts % config.k_interval == 0))
            bound = jnp.minimum(state.k + n_upd, k_max)
        else:
            bound = jnp.minimum(state.k, k_max)
        cost_all = droo.candidate_costs(scn, cands, usable, sys_params, bound)   # (nf, B, N)
        n_valid = jnp.sum(valid, axis=-1)                           # (nf, B)

        def choose(carry, x):
            k, window = carry
            t, cost, nv = x
            if config.adaptive_k:
                k, window = adaptive_k_start(k, window, t, config.k_interval, k_max)
            k_eff = jnp.maximum(jnp.minimum(k, nv), 1)              # as op_candidates
            masked = jnp.where(jnp.arange(k_max) < k_eff[:, None], cost, jnp.inf)
            best = jnp.argmin(masked, axis=-1)
            best_index = jnp.max(best).astype(jnp.int32)
            if config.adaptive_k:
                window = adaptive_k_record(window, t, best_index, config.k_interval)
            return (k, window), (best, best_index, k)

        (k, window), (best, best_index, k_used) = jax.lax.scan(
            choose, (state.k, state.window_max), (ts, cost_all, n_valid))
        offload = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
        cost = jnp.take_along_axis(cost_all, best[..., None], axis=-1)[..., 0]
        memory = memory_push(state.memory, z.reshape((nf * b,) + z.shape[2:]),
                             offload.reshape(nf * b, -1), valid.reshape(nf * b, -1))
        state = state._replace(memory=memory, k=k, window_max=window,
                               frame=state.frame + nf)
        loss_before = state.loss
        if train:
            state = train_step(state, k_train[-1])
        v = valid.astype(jnp.float32)
        last = jnp.arange(nf) == nf - 1
        trained = last & train
        metrics = {"cost": jnp.mean(cost, axis=-1), "best_index": best_index, "k": k_used,
                   "offload_fraction": jnp.sum(offload * v, axis=(-2, -1))
                   / jnp.maximum(jnp.sum(v, axis=(-2, -1)), 1.0),
                   "loss": jnp.where(trained, state.loss, loss_before),
                   "trained": trained.astype(jnp.float32)}
        return state, metrics

    return block


def make_train_frame_by_frame(config: DrooConfig):
    """DROO's training one frame at a time: ``train(key, sys_params) -> (DrooState,
    metrics)``, a ``lax.scan`` of :func:`make_frame` over ``config.n_frames`` frames.

    The reference order of DROO's main loop, every frame scoring all K_max
    candidates (sum_i C_i, Eq. 24-25).  :func:`make_train` computes the same
    in blocks of frames and is the one to use; this one is what it is
    checked and timed against (``tests/test_droo.py``,
    ``benchmarks/droo_train.py``) and what it falls back to when a block
    would not fit the memory.  Keys are split as :func:`make_train` splits
    them; ``sys_params`` in SI units.
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


def make_train(config: DrooConfig):
    """DROO's training as one pure program: ``train(key, sys_params) -> (DrooState, metrics)``.

    ``key`` splits into the DNN's initialisation and the frames' keys;
    ``config.n_frames`` frames run, ``config.scenarios_per_frame`` fresh
    scenarios each, so the training sees ``config.n_scenarios`` scenarios
    in all (the scenario budget; each decided once, online, as in DROO).
    The frames of each DNN-update interval (delta = ``train_interval``) are
    decided as one batch (:func:`make_block`; a ``lax.scan`` over the
    intervals, then the remaining frames), which computes what
    :func:`make_frame` computes frame by frame (the same decisions, up to
    float32 rounding of the batched DNN).  ``metrics``: the frame metrics
    of :func:`make_frame` (``cost``: sum_i C_i, Eq. 24-25, no inference
    delay), stacked, each ``(n_frames,)``.  ``sys_params`` in SI units.

    Pure: ``jax.jit(jax.vmap(train))`` over stacked keys (and a stacked
    ``SystemParams``) trains several seeds (and sweep points) at once;
    ``sys_params.n_users`` is replaced by ``config.n_max``.
    """
    delta, n = config.train_interval, config.n_frames
    b = config.scenarios_per_frame
    if delta * b > config.memory_size:   # a block would not fit the memory: frame by frame
        return make_train_frame_by_frame(config)
    n_blocks, rest = divmod(n, delta)
    block = make_block(config)
    tail = make_block(config, rest) if rest else None

    def train(key, sys_params: SystemParams):
        k_init, k_frames = jax.random.split(key)
        state = init_state(k_init, config)
        keys = jax.random.split(k_frames, n)
        frames = jnp.arange(n, dtype=jnp.int32)
        full = n_blocks * delta
        state, metrics = jax.lax.scan(
            lambda s, x: block(s, x[0], x[1], sys_params, True), state,
            (frames[:full].reshape(n_blocks, delta),
             keys[:full].reshape((n_blocks, delta) + keys.shape[1:])))   # typed or raw keys
        metrics = jax.tree.map(lambda a: a.reshape((full,) + a.shape[2:]), metrics)
        if tail is not None:
            state, m_rest = tail(state, frames[full:], keys[full:], sys_params, False)
            metrics = jax.tree.map(lambda a, r: jnp.concatenate([a, r]), metrics, m_rest)
        return state, metrics

    return train


# ----------------------------------------------------------------------------
# A run: typed config, seeds side by side, held-out choice, save
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DrooRunConfig:
    """A run of DROO's training (``configs/droo.py``: ``dynmec-train-droo``); the seeds are
    compared by held-out sum_i C_i (Eq. 24-25), SI units throughout.

    Attributes:
      preset: the preset's name (recorded).
      seed, n_seeds: seed i of the run uses ``fold_in(key(seed), i)``
        (:func:`dynmec_jax.files.seed_keys`); the seeds train side by side
        (``jit(vmap(make_train))``).
      system: the system trained on (Table II defaults); its ``n_users`` is
        set to ``droo.n_max`` (N_max is the DNN's size, so it comes from the
        ``droo`` section).
      droo: DROO's settings (:class:`~dynmec_jax.baselines.droo.DrooConfig`:
        N_max, mixed N, the reference hyperparameters, the scenario budget).
      eval_batch: held-out scenarios that choose the saved seed (drawn from
        the training distribution: N ~ U{n_users_min..N_max} if mixed).
      eval_seed: their PRNG seed (``key(eval_seed)``; the training draws from
        ``seed``'s keys).
    """

    preset: str = "default"
    seed: int = 0
    n_seeds: int = 3
    system: SystemParams = dataclasses.field(default_factory=SystemParams)
    droo: DrooConfig = dataclasses.field(default_factory=DrooConfig)
    eval_batch: int = 1024
    eval_seed: int = 777

    def __post_init__(self):
        check_seed("seed", self.seed)
        check_seed("eval_seed", self.eval_seed)
        for name in ("n_seeds", "eval_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.droo, DrooConfig):
            raise TypeError(f"droo must be a DrooConfig, got {type(self.droo).__name__}")
        if self.system.n_users != self.droo.n_max:    # N_max comes from the droo section
            object.__setattr__(self, "system", self.system.replace(n_users=self.droo.n_max))
        try:
            system.validate(self.system)
        except ValueError as e:
            raise ValueError(f"system.{e}") from None


def held_out(run: DrooRunConfig):
    """``(scn, valid)``: ``run.eval_batch`` held-out scenarios of the training distribution
    (:func:`sample_frame` from ``key(run.eval_seed)``), fields ``(eval_batch, N_max)``, SI units."""
    return sample_frame(run.droo, jax.random.key(run.eval_seed), run.system, run.eval_batch)


def _finite_per_seed(params) -> np.ndarray:
    """bool ``(n_seeds,)``: every weight of seed i is finite (leaves stacked on axis 0)."""
    leaves = [np.asarray(a).reshape(a.shape[0], -1) for a in jax.tree.leaves(params)]
    return np.all(np.concatenate([np.isfinite(a) for a in leaves], axis=1), axis=1)


def select_seed(costs, finite_weights) -> int:
    """The index of the lowest held-out cost (sum_i C_i, Eq. 24-25) among the usable seeds.

    NaN-safe: a seed whose cost is NaN or infinite, or whose weights are not
    all finite (``finite_weights[i]`` false), is never chosen.  Raises
    ``ValueError`` if no seed is usable.
    """
    return loop.best_seed(costs, finite_weights)


def write_curves(metrics: dict, workdir, points: int = 100) -> str:
    """The training curves of per-frame ``metrics`` ``(seeds, frames)``: ``points``
    consecutive windows of frames, each averaged (:func:`dynmec_jax.train.loop.summarize`),
    into ``workdir/metrics.jsonl``, TensorBoard events and ``workdir/curves.png``
    (:class:`dynmec_jax.train.loop.Curves`); the step is the frame.  Returns the PNG's path.

    DROO trains as one compiled program (its replay memory and adaptive K run every
    frame), so the curves are written once it ends, not per chunk."""
    frames = int(np.asarray(metrics["cost"]).shape[-1])
    curves = loop.Curves(workdir, [])
    for window in np.array_split(np.arange(frames), min(points, frames)):
        curves.log(loop.summarize(int(window[-1]) + 1, {
            k: np.asarray(v)[..., window] for k, v in metrics.items()}))
    return curves.close("DROO training (per-frame means over windows of frames)")


def train_and_select(run: DrooRunConfig, workdir) -> tuple[droo.DrooModel, dict]:
    """Trains ``run.n_seeds`` seeds, keeps the best on held-out scenarios and saves it.

    The seeds train side by side (``jax.jit(jax.vmap(make_train(run.droo)))``,
    ``run.droo.n_scenarios`` scenarios each); each is scored on the
    :func:`held_out` scenarios (mean over scenarios of sum_i C_i, Eq. 24-25,
    no inference delay, with its final K; :func:`~dynmec_jax.baselines.droo.evaluate`)
    next to greedy + KKT on the same scenarios.  The seed of lowest mean
    cost is chosen NaN-safely: a seed whose cost or weights are not finite is
    never chosen.  Writes ``workdir/config.json`` (the run's config:
    :func:`dynmec_jax.files.claim_workdir`, a workdir holding another run is
    refused), ``workdir/droo`` (:func:`~dynmec_jax.baselines.droo.save_droo`),
    ``workdir/train_droo.json`` (the record) and the curves (:func:`write_curves`).

    Returns:
      ``(model, record)``: the saved :class:`~dynmec_jax.baselines.droo.DrooModel`
      and the record (``per_seed``: held-out ``cost``, ``gap_to_greedy``,
      ``offload_fraction``, final ``k``, ``finite_weights``; ``exported_seed``;
      ``greedy_cost``; ``train_wall_time_s`` [s], compilation included; the
      run config; versions).
    Raises:
      dynmec_jax.train.loop.DivergenceError: no seed has finite weights and
        a finite held-out cost (nothing is saved).
    """
    workdir = files.claim_workdir(run, workdir)
    cfg = run.droo
    keys = files.seed_keys(run.seed, run.n_seeds)
    train = jax.jit(jax.vmap(make_train(cfg), in_axes=(0, None)))
    t0 = time.perf_counter()
    states, metrics = jax.block_until_ready(train(keys, run.system))
    wall = time.perf_counter() - t0
    write_curves(metrics, workdir)
    scn, valid = held_out(run)
    score = jax.jit(jax.vmap(droo.evaluate, in_axes=(0, 0, None, None, None)))
    ev = {k: np.asarray(v, np.float64) for k, v in
          score(states.params, states.k, scn, run.system, valid).items()}
    g = jax.jit(greedy_offloading)(scn, run.system)   # padded users: empty tasks, stay local
    greedy_cost = float(np.mean(np.asarray(g.cost, np.float64)))
    finite_w = _finite_per_seed(states.params)
    try:
        best = select_seed(ev["cost"], finite_w)
    except ValueError:
        raise loop.DivergenceError(cfg.n_frames, "every seed's held-out cost or weights") from None
    tail = max(1, cfg.n_frames // 10)
    per_seed = [{"cost": float(ev["cost"][i]),
                 "gap_to_greedy": float(ev["cost"][i] / greedy_cost - 1),
                 "offload_fraction": float(ev["offload_fraction"][i]),
                 "k": int(states.k[i]), "finite_weights": bool(finite_w[i]),
                 "train_cost_last_10pct": float(np.mean(np.asarray(metrics["cost"][i, -tail:])))}
                for i in range(run.n_seeds)]
    record = {"train_wall_time_s": wall, "n_seeds": run.n_seeds, "exported_seed": best,
              "per_seed": per_seed, "greedy_cost": greedy_cost,
              "greedy_offload_fraction": float(np.mean(np.asarray(g.offload)[np.asarray(valid)])),
              "system": files.to_jsonable(run.system), "config": files.to_jsonable(run),
              "versions": files.versions()}
    logging.info("DROO x%d seeds (%d scenarios each) in %.1f s; exported seed %d: held-out "
                 "cost %.3f (greedy + KKT %.3f)", run.n_seeds, cfg.n_scenarios, wall, best,
                 per_seed[best]["cost"], greedy_cost)
    params = jax.tree.map(lambda a: np.asarray(a[best]), states.params)
    droo.save_droo(params, per_seed[best]["k"], cfg, workdir / "droo", record)
    files.write_json(record, workdir / "train_droo.json", indent=1)
    return droo.load_droo(workdir / "droo"), record


#: ``--export_pretrained`` refuses a DROO whose held-out cost is more than this fraction
#: above greedy + KKT's.  Loose on purpose: DROO is a baseline, and at the reference budget
#: the shipped one is about 38% above greedy; the check catches a broken model, not a weak one.
EXPORT_MAX_GAP_TO_GREEDY = 1.0


def export_pretrained(workdir, dst=None) -> pathlib.Path:
    """Copies ``workdir/droo`` over the shipped default (``dst``, default
    :data:`dynmec_jax.baselines.droo.PRETRAINED_DIR`) after checking it.

    Refused (``ValueError`` naming the path) if a weight is not finite, or if
    the exported seed's held-out ``gap_to_greedy`` in its record is missing,
    not finite or above :data:`EXPORT_MAX_GAP_TO_GREEDY`.  Returns ``dst``.
    """
    src = pathlib.Path(workdir) / "droo"
    model = droo.load_droo(src)
    rec = json.loads(model.record or "{}")
    try:
        gap = rec["per_seed"][rec["exported_seed"]]["gap_to_greedy"]
    except (KeyError, IndexError, TypeError):
        gap = None
    loop.check_export(src, model.params, "held-out gap to greedy + KKT (gap_to_greedy)", gap,
                      EXPORT_MAX_GAP_TO_GREEDY)
    dst = droo.PRETRAINED_DIR if dst is None else pathlib.Path(dst)
    droo.save_droo(model.params, model.k, model.config, dst, rec)
    return dst
