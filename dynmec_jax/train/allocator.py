"""Training the allocation network (Section IV.A-B, Fig. 2(b) and 3).

* :func:`make_train_step`: the two updates of Fig. 2(b) on one batch: the
  bandwidth update (head A, loss = importance-weighted transmission delay,
  Eq. 18-19 and 1) and then the CPU update (head B, loss = weighted computing
  delay, Eq. 20 and 2), each with its own Adam state (lr 1e-3).
* Progressive shrinking (Section IV.B, Fig. 3) as data: a per-step boolean
  table ``allowed (K, L)`` of the sub-networks that may be sampled
  (:meth:`~dynmec_jax.train.config.AllocatorConfig.schedule`); each scenario
  of a batch trains one sampled (width, depth), drawn inside ``jit``.  The
  drivers stratify the depths (a fixed number of scenarios per depth,
  deepest first: :func:`depth_counts`), so that each hidden layer runs only
  on the scenarios that use it; every sub-network is trained as often in
  expectation as with i.i.d. draws.
  Phases: full network, then elastic width, then elastic depth, then both;
  sub-networks inherit the trained weights (Once-for-All).  The
  "traditional" baseline of Fig. 12 trains each sub-network from scratch:
  a table with one allowed entry per independently initialised model.
* :func:`train_chunk`: ``lax.scan`` over a chunk of steps;
  :func:`train_and_evaluate` runs chunks for several seeds at once (``vmap``),
  with orbax checkpoints between chunks, resumes from the latest checkpoint,
  and evaluates every seed against the optimal allocation
  (:func:`evaluate_subnets`).

Units: SI (Hz, cycles/s, s); weighted delays are dimensionless (w [1/s] x T [s]).
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynmec_jax import accounting, baselines, costs, files, rng, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.allocator import Allocator
from dynmec_jax.nets.features import FeatureScales
from dynmec_jax.nets.moe import dropped_pairs, expert_capacity, load_balance_loss
from dynmec_jax.system import Scenario, SystemParams
from dynmec_jax.train import loop
from dynmec_jax.train.config import AllocatorConfig

Array = Any


class AllocatorState(NamedTuple):
    """Weights, the two Adam states (bandwidth and CPU updates) and the step."""

    params: Any
    opt_bandwidth: Any
    opt_cpu: Any
    step: Array


def init_state(key: Array, model: nn.Module, tx: optax.GradientTransformation) -> AllocatorState:
    """Fresh weights (:func:`dynmec_jax.allocator.init_params`) and optimiser states."""
    p = allocator_lib.init_params(key, model)
    return AllocatorState(p, tx.init(p), tx.init(p), jnp.zeros((), jnp.int32))


def sample_offload(key: Array, shape, all_fraction, p_min: float = 0.2) -> Array:
    """Training offload masks: with probability ``all_fraction`` a scenario
    offloads every task (Section V.A), else each task is offloaded with a
    per-scenario probability ~ U[p_min, 1] (the joint case, Section V.B)."""
    k1, k2, k3 = jax.random.split(key, 3)
    everyone = rng.uniform(k1, shape[:-1] + (1,)) < all_fraction
    p = rng.uniform(k2, shape[:-1] + (1,), minval=p_min, maxval=1.0)
    return everyone | (rng.uniform(k3, shape) < p)


def sample_subnets(key: Array, allowed: Array, batch: int):
    """One (width, depth) per scenario, uniform over ``allowed (K, L)`` (bool)."""
    K, L = allowed.shape
    logits = jnp.where(allowed.reshape(-1), 0.0, -jnp.inf)
    idx = rng.categorical(key, logits, shape=(batch,))
    return idx // L + 1, idx % L + 1


# ----------------------------------------------------------------------------
# Depth strata: computing only the layers the sampled sub-networks use
# ----------------------------------------------------------------------------

def depth_stratum(allowed) -> tuple[int, ...]:
    """The depth profile of ``allowed (K, L)`` (host, NumPy): allowed widths per
    depth 1..L divided by their greatest common divisor, e.g. ``(0, 0, 1)``
    (depth L only) or ``(1, 1, 1)`` (every depth equally often)."""
    per_depth = np.asarray(allowed, bool).sum(0).astype(int)
    if not per_depth.any():
        raise ValueError("allowed holds no sub-network")
    return tuple(int(c) for c in per_depth // np.gcd.reduce(per_depth[per_depth > 0]))


def width_profile(allowed) -> tuple[float, ...]:
    """Mean allowed width per depth 1..L of ``allowed (K, L)`` (host; 0.0 where a depth
    has none): the expected width of a user of that depth under uniform sampling."""
    a = np.asarray(allowed, bool)
    widths = np.arange(1, a.shape[0] + 1)[:, None]
    n = a.sum(0)
    return tuple(float(w) for w in np.where(n > 0, (a * widths).sum(0) / np.maximum(n, 1), 0.0))


def table_strata(table, widths: bool = False) -> tuple[tuple, ...]:
    """The distinct :func:`depth_stratum` of a schedule table ``(T, K, L)``, in order.

    ``widths=True`` (for capacity dispatch, ``capacity_factor`` of
    :func:`make_train_step`): each stratum is the depth profile followed by
    the :func:`width_profile` (length 2L), so that tables with the same depths
    but other widths (the full network and elastic width) get their own
    static expert capacities.
    """
    out = []
    for allowed in np.asarray(table, bool):
        s = depth_stratum(allowed) + (width_profile(allowed) if widths else ())
        if s not in out:
            out.append(s)
    return tuple(out)


def depth_counts(stratum: tuple[int, ...], batch: int) -> tuple[int, ...]:
    """Scenarios per depth 1..L of a stratified batch of ``batch`` scenarios.

    Proportional to ``stratum`` (the expected counts of uniform sampling over
    the allowed sub-networks), rounded by largest remainder, ties to the
    deeper depth; depths with weight 0 get none.  A depth whose expected
    count is below one can get none either: keep ``batch`` (the micro-batch
    when micro-batching) at least a few times L.
    """
    w = np.asarray(stratum, float)
    exact = batch * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(w)), key=lambda d: (-(exact[d] - counts[d]), -d))
    for d in order[:batch - counts.sum()]:
        counts[d] += 1
    return tuple(int(c) for c in counts)


def layer_rows(counts: tuple[int, ...], n_users: int) -> tuple[int, ...]:
    """Users per hidden layer when scenarios are sorted deepest first (static).

    Hidden layer ``i`` (0-based among the L-1; layer ``i + 2`` of Eq. 32) is
    used by the scenarios of depth ``>= i + 2``: the first
    ``n_users * sum(counts[i + 1:])`` flattened users
    (:meth:`~dynmec_jax.nets.moe.MoEAllocator.expert_outputs`).
    """
    return tuple(n_users * int(sum(counts[i + 1:])) for i in range(len(counts) - 1))


def sample_subnets_stratified(key: Array, allowed: Array, counts: tuple[int, ...],
                              tiles: int = 1):
    """One (width, depth) per scenario, depths in fixed proportions, deepest first.

    ``counts[d - 1]`` scenarios (static) get depth d, in the order L, ..., 1,
    and this pattern is repeated ``tiles`` times (one per micro-batch); each
    scenario's width is uniform over the widths ``allowed (K, L)``
    allows at its depth.  With ``counts = depth_counts(depth_stratum(allowed),
    B)`` every sub-network is as likely as under :func:`sample_subnets`
    (up to the rounding of the counts); the depths are stratified, not drawn.
    """
    L = len(counts)
    depth = np.tile(np.repeat(np.arange(L, 0, -1), counts[::-1]), tiles)  # static
    logits = jnp.where(jnp.asarray(allowed)[:, depth - 1].T, 0.0, -jnp.inf)  # (B, K)
    width = rng.categorical(key, logits) + 1
    return width.astype(jnp.int32), jnp.asarray(depth, jnp.int32)


def stratum_index(allowed: Array, strata: tuple[tuple, ...]) -> Array:
    """Index of the stratum of ``allowed`` (traced) among ``strata`` (0 if none matches);
    strata of :func:`table_strata` with or without widths."""
    a = jnp.asarray(allowed, jnp.int32)
    L = a.shape[1]
    per_depth = jnp.sum(a, axis=0)
    total = jnp.sum(per_depth)
    s = jnp.asarray([st[:L] for st in strata], jnp.int32)                # (S, L)
    match = jnp.all(per_depth * s.sum(-1, keepdims=True) == s * total, axis=-1)
    if len(strata[0]) == 2 * L:   # the mean width per depth must match too
        w_sum = jnp.sum(a * jnp.arange(1, a.shape[0] + 1)[:, None], axis=0)
        mean_w = jnp.asarray([st[L:] for st in strata], jnp.float32)      # (S, L)
        match &= jnp.all(jnp.abs(w_sum - mean_w * per_depth) < 1e-3, axis=-1)
    return jnp.argmax(match)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, batch: int,
                    offload_all_fraction: float = 0.5, load_balance_weight: float = 0.0,
                    loss_scale: float = 1e-3, micro_batch: int | None = None,
                    capacity_factor: float | None = None) -> Callable:
    """The training step of Fig. 2(b): bandwidth update, then CPU update.

    Returns ``step(state, key, sys_params, scales, allowed, strata=None) ->
    (state, metrics)``.  Both updates use the same sampled batch of scenarios,
    offload masks, sub-networks (one per scenario, from ``allowed``) and gate
    noise (Eq. 16); the second is evaluated at the weights after the
    first, as the paper describes.  ``loss_scale`` only rescales the loss
    (Adam is invariant to it up to its epsilon).  Metrics:
    ``weighted_tra`` (before the first update), ``weighted_com`` (before the
    second) and ``weighted_delay`` (both before the first), batch means.

    ``micro_batch`` (scenarios, a divisor of ``batch``; None or ``batch``:
    off) computes each update's gradient as a ``lax.scan`` over slices of
    that many scenarios, summing their gradients.  The loss is a mean over
    scenarios, so this is the same gradient (same batch, same gate noise,
    drawn for the whole batch and sliced) up to float summation order; it
    keeps the ``(K, micro_batch * N, hidden)`` activations in cache, which
    can be faster on a CPU with a small cache and slower on another
    (measured: docs/measurements.md), so it is off by default.  Ignored when
    ``load_balance_weight``
    is non-zero (the importance loss couples the whole batch).

    ``strata`` (static: a tuple of :func:`depth_stratum` profiles, e.g.
    :func:`table_strata` of the schedule) switches on the computation of only
    what the sampled sub-networks use in depth: the depths of a batch (of
    each micro-batch) are stratified in the proportions of the stratum of
    ``allowed`` (:func:`sample_subnets_stratified`, deepest first) and each
    hidden layer runs only on the scenarios deep enough to use it
    (``layer_rows``).  One branch is compiled per stratum and ``lax.switch``
    picks the one of ``allowed`` (which must match one of them).  The same
    sub-networks are trained as often in expectation as with ``strata=None``
    (i.i.d. uniform over ``allowed``, every layer computed and masked); in
    the elastic-depth phases at L = 3 the hidden layers cost half as much.

    ``capacity_factor`` (with ``strata`` from ``table_strata(table,
    widths=True)``; None: off) also skips the experts a user's gate did not
    pick: in each depth group an expert takes at most
    :func:`~dynmec_jax.nets.moe.expert_capacity` users (the group's users
    times the stratum's mean width over K, times the factor) and computes
    only those (:meth:`~dynmec_jax.nets.moe.MoEAllocator.dispatched_mixture`);
    pairs beyond it are dropped, and the metric ``dropped`` is their share in
    the first update.  A stratum where every group's capacity is its size
    (the full-width phases) runs the masked pass.
    """
    tiles = 1
    if micro_batch is not None and not load_balance_weight:
        if micro_batch < 1 or batch % micro_batch:
            raise ValueError(f"micro_batch must divide batch={batch}, got {micro_batch}")
        tiles = batch // micro_batch

    def losses(params, scn, mask, width, depth, scales, sys_params, noise_key, gate_noise=None,
               rows=None, caps=None):
        """Per-scenario weighted T_tra and T_com sums, the load-balance loss and the share
        of dropped (user, expert) pairs."""
        alloc = Allocator(params, scales, sys_params, model)
        logits, gates = alloc.logits(scn, width, depth, noise_key, gate_noise, rows, caps)
        b, f = allocator_lib.shares(logits, mask, sys_params)
        tra, com = costs.weighted_parts(scn, mask, b, f, sys_params)
        lb = load_balance_loss(gates, mask) if load_balance_weight else 0.0
        dropped = (0.0 if caps is None else jax.lax.stop_gradient(
            dropped_pairs(gates.reshape(-1, gates.shape[-1]), rows, caps)))
        return tra, com, lb, dropped

    def batch_grad(params, part, data, scales, sys_params, rows, caps):
        """Gradient of update ``part`` (0: bandwidth, 1: CPU) on the whole batch."""
        scn, mask, width, depth, k_noise = data

        def loss(p):
            tra, com, lb, dropped = losses(p, scn, mask, width, depth, scales, sys_params,
                                           k_noise, rows=rows, caps=caps)
            main = jnp.mean(tra if part == 0 else com) * loss_scale
            return main + load_balance_weight * lb, (jnp.mean(tra), jnp.mean(com), dropped)

        (_, (tra, com, dropped)), g = jax.value_and_grad(loss, has_aux=True)(params)
        return g, tra, com, dropped

    def tiled_grad(params, part, data, scales, sys_params, rows, caps):
        """The same gradient summed over ``tiles`` slices of ``micro_batch`` scenarios."""
        def tile_loss(p, d):
            tra, com, _, dropped = losses(p, d[0], d[1], d[2], d[3], scales, sys_params, None,
                                          d[4], rows, caps)
            return jnp.sum(tra if part == 0 else com) * (loss_scale / batch), (
                jnp.sum(tra), jnp.sum(com), dropped)

        def body(carry, d):
            g, tra, com, dropped = carry
            (_, (t, c, dr)), gt = jax.value_and_grad(tile_loss, has_aux=True)(params, d)
            return (jax.tree.map(jnp.add, g, gt), tra + t, com + c, dropped + dr), None

        zero = jax.tree.map(jnp.zeros_like, params)
        (g, tra, com, dropped), _ = jax.lax.scan(body, (zero, 0.0, 0.0, 0.0), data)
        return g, tra / batch, com / batch, dropped / tiles

    def capacities(stratum, counts, n_users):
        """Static expert capacity per depth group, or None (masked) where it saves nothing."""
        if capacity_factor is None or not hasattr(model, "n_experts"):
            return None
        L = len(counts)
        group = [c * n_users for c in counts]
        caps = tuple(expert_capacity(n, stratum[L + d], model.n_experts, capacity_factor)
                     if n else 0 for d, n in enumerate(group))
        return None if caps == tuple(group) else caps

    def run(state: AllocatorState, key, sys_params: SystemParams, scales: FeatureScales,
            allowed, counts, stratum=None):
        """One step; ``counts``: scenarios per depth of a micro-batch (None: masked)."""
        k_scn, k_off, k_sub, k_noise = jax.random.split(key, 4)
        scn = system.sample_scenarios(k_scn, sys_params, batch)
        mask = sample_offload(k_off, scn.shape, offload_all_fraction)
        if counts is None:
            width, depth = sample_subnets(k_sub, allowed, batch)
            rows = caps = None
        else:
            width, depth = sample_subnets_stratified(k_sub, allowed, counts, tiles)
            rows = layer_rows(counts, scn.shape[-1])
            caps = capacities(stratum, counts, scn.shape[-1])
        if tiles > 1:
            n_experts = getattr(model, "n_experts", 1)
            # The noise gate_logits would draw for the whole batch (M = B N rows).
            eps = rng.normal(k_noise, (batch * scn.shape[-1], n_experts), jnp.float32)
            split = lambda x: x.reshape((tiles, batch // tiles) + x.shape[1:])
            data = jax.tree.map(split, (scn, mask, width, depth,
                                        eps.reshape(batch, scn.shape[-1], n_experts)))
            grad = tiled_grad
        else:
            data = (scn, mask, width, depth, k_noise)
            grad = batch_grad
        g, tra0, com0, dropped = grad(state.params, 0, data, scales, sys_params, rows, caps)
        upd, opt_b = tx.update(g, state.opt_bandwidth, state.params)
        p = optax.apply_updates(state.params, upd)
        g, _, com1, _ = grad(p, 1, data, scales, sys_params, rows, caps)
        upd, opt_f = tx.update(g, state.opt_cpu, p)
        p = optax.apply_updates(p, upd)
        metrics = {"weighted_tra": tra0, "weighted_com": com1, "weighted_delay": tra0 + com0}
        if capacity_factor is not None:
            metrics["dropped"] = jnp.asarray(dropped, jnp.float32)
        return AllocatorState(p, opt_b, opt_f, state.step + 1), metrics

    def step(state: AllocatorState, key, sys_params: SystemParams, scales: FeatureScales,
             allowed, strata: tuple[tuple, ...] | None = None):
        if strata is None:
            return run(state, key, sys_params, scales, allowed, None)
        L = jnp.shape(allowed)[-1]
        if capacity_factor is not None and any(len(st) != 2 * L for st in strata):
            raise ValueError("capacity_factor needs strata with widths: "
                             "table_strata(table, widths=True)")
        branches = [functools.partial(run, counts=depth_counts(st[:L], batch // tiles),
                                      stratum=st) for st in strata]
        if len(branches) == 1:
            return branches[0](state, key, sys_params, scales, allowed)
        return jax.lax.switch(stratum_index(allowed, strata), branches, state, key, sys_params,
                              scales, allowed)

    return step


def train_chunk(step_fn: Callable, state: AllocatorState, key: Array, sys_params: SystemParams,
                scales: FeatureScales, allowed_seq: Array,
                strata: tuple[tuple[int, ...], ...] | None = None):
    """``lax.scan`` of ``step_fn`` over a chunk; ``allowed_seq (T, K, L)`` per step.

    The key of step t is ``fold_in(key, state.step + t)``, so a chunk's result
    does not depend on how training was cut into chunks or resumed.
    ``strata`` (static) is passed to every step (:func:`make_train_step`;
    the drivers use :func:`table_strata` of the whole schedule, so that every
    chunk compiles to the same program).
    Returns ``(state, metrics)`` with metrics stacked over the T steps.
    """
    def body(st, allowed):
        k = jax.random.fold_in(key, st.step)
        return step_fn(st, k, sys_params, scales, allowed, strata)

    return jax.lax.scan(body, state, allowed_seq)


class Setup(NamedTuple):
    """Everything a training run derives from its config."""

    sys_params: SystemParams
    scales: FeatureScales
    model: nn.Module
    tx: optax.GradientTransformation
    step_fn: Callable


def setup(config: AllocatorConfig, sys_params: SystemParams | None = None) -> Setup:
    """System (default ``config.system``), feature scales, network, optimiser (Adam) and
    train step of ``config``."""
    sys_params = config.system if sys_params is None else sys_params
    t = config.train
    model = config.model.build()
    tx = optax.adam(t.lr)
    step_fn = make_train_step(model, tx, t.batch, t.offload_all_fraction,
                              t.load_balance_weight, micro_batch=t.micro_batch,
                              capacity_factor=t.capacity_factor or None)
    return Setup(sys_params, FeatureScales.from_params(sys_params), model, tx, step_fn)


# ----------------------------------------------------------------------------
# Evaluation against the optimum (Fig. 4)
# ----------------------------------------------------------------------------

def evaluate_subnets(alloc: Allocator, scn: Scenario, offload: Array,
                     sys_params: SystemParams | None = None,
                     optimum: tuple | None = None) -> dict:
    """Weighted delays of every sub-network versus the optimal allocation (Fig. 4).

    Returns arrays over scenarios: ``wd (K, L, B)`` without inference delay
    (Fig. 4(a)), ``wd_infer (K, L, B)`` with each sub-network's Eq. 9
    inference delay added to every served task (Fig. 4(b)), ``opt (B,)``, and
    ``gap (K, L)`` = mean(wd) / mean(opt) - 1 (relative excess weighted delay).
    """
    sp = alloc.sys_params if sys_params is None else sys_params
    scn = system.as_scenario(scn)
    offload = jnp.asarray(offload).astype(bool)
    if optimum is None:
        optimum = baselines.optimal_allocation(scn, offload, sp)
    return _evaluate_jit(alloc, scn, offload, sp, optimum)


@jax.jit
def _evaluate_jit(alloc, scn, offload, sys_params, optimum):
    b, f = allocator_lib.allocate_all(alloc, scn, offload, sys_params)
    wd = system.weighted_delay(scn, offload, b, f, sys_params)                # (K, L, B)
    served = offload.sum(-1)                                                  # (B,)
    t_inf = accounting.inference_delay(alloc.macs_table(served), sys_params)  # (K, L, B)
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    wsum = jnp.sum(jnp.where(offload, w, 0.0), -1)                            # (B,)
    opt = system.weighted_delay(scn, offload, optimum[0], optimum[1], sys_params)
    return {"wd": wd, "wd_infer": wd + t_inf * wsum, "opt": opt,
            "gap": wd.mean(-1) / opt.mean() - 1.0, "t_infer": t_inf.mean(-1)}


def eval_scenarios(seed: int, batch: int, offload_fraction: float, sys_params: SystemParams):
    """Held-out evaluation scenarios and the two offload masks (all, random fraction)."""
    k_scn, k_off = jax.random.split(jax.random.key(int(seed)))
    scn = system.sample_scenarios(k_scn, sys_params, int(batch))
    return scn, {"all": jnp.ones(scn.shape, bool),
                 "random": rng.uniform(k_off, scn.shape) < offload_fraction}


# ----------------------------------------------------------------------------
# The training driver
# ----------------------------------------------------------------------------

def finished(config: AllocatorConfig, workdir) -> bool:
    """Whether ``workdir`` holds the finished run of ``config``: its record
    (``allocator_eval.json``, written last), every seed's allocator and the
    curves (``metrics.jsonl``, if there) parse, and the curves hold one line
    per entry of the record's history (a file cut at a line's end parses).

    Anything less (a seed half saved by a kill between its two files, a
    truncated record or curve file) is not done: :func:`train_and_evaluate`
    then restores the last checkpoint and rewrites every file, with the
    same numbers.
    """
    workdir = pathlib.Path(workdir)
    try:
        rec = files.read_json(workdir / "allocator_eval.json")
        if rec.get("config") != json.loads(files.config_json(config)):
            return False
        for i in range(config.n_seeds):
            allocator_lib.load_allocator(workdir / "seeds" / f"seed_{i}")
        allocator_lib.load_allocator(workdir / "allocator")
        curves = workdir / "metrics.jsonl"
        if curves.exists():
            lines = [json.loads(line)
                     for line in curves.read_text(encoding="utf-8").splitlines()]
            if len(lines) != len(rec.get("history", ())):
                return False
    except (OSError, ValueError, AttributeError):   # JSONDecodeError, UnicodeError: ValueError
        return False
    return True


#: Largest gap to the optimal weighted delay an exported default allocator may have (any
#: sub-network, every task offloaded): a model worse than this is not shipped.
EXPORT_MAX_GAP = 0.05


def export_pretrained(workdir, dst=None) -> pathlib.Path:
    """Copies ``workdir/allocator`` over the shipped default (``dst``, default
    :data:`dynmec_jax.allocator.PRETRAINED_DIR`) after checking it.

    Refused (``ValueError``) if the model does not load, has a non-finite
    weight, or a sub-network's gap to the optimum above :data:`EXPORT_MAX_GAP`
    in its record.  Returns ``dst``.
    """
    workdir = pathlib.Path(workdir)
    alloc = allocator_lib.load_allocator(workdir / "allocator")
    gap = json.loads(alloc.record).get("record", {}).get("max_gap_all")
    loop.check_export(workdir / "allocator", alloc.params, "worst sub-network gap to the "
                      "optimum (max_gap_all)", gap, EXPORT_MAX_GAP)
    dst = allocator_lib.PRETRAINED_DIR if dst is None else pathlib.Path(dst)
    allocator_lib.save_allocator(alloc, dst, json.loads(alloc.record).get("record"))
    return dst


def train_and_evaluate(config: AllocatorConfig, workdir, progress: bool = True) -> dict:
    """Trains ``config.n_seeds`` allocators side by side and evaluates them.

    All seeds run as one ``jit(vmap(train_chunk))`` program per chunk of
    ``train.chunk_steps`` steps.  After each chunk the stacked state is
    checkpointed with orbax under ``workdir/checkpoints`` together with the
    training history (the mean weighted delay after each chunk); a rerun
    with the same config resumes from the latest checkpoint and its history
    (a different config raises ``ValueError``), so a resumed run records what
    an uninterrupted one does, wall times aside.  At the end every seed is
    evaluated against the optimal allocation on held-out scenarios (all
    tasks offloaded, and a random ``eval.offload_fraction``), every seed
    ``i`` is saved in ``workdir/seeds/seed_i``, seed ``export_seed`` in
    ``workdir/allocator``, and the record in ``workdir/allocator_eval.json``
    (last: its presence marks the run finished, :func:`finished`).  Returns
    the record.
    """
    s = setup(config)
    t = config.train
    workdir = files.claim_workdir(config, workdir)

    n = config.n_seeds
    keys = files.seed_keys(config.seed, n)
    table = config.schedule()
    total = len(table)
    init = jax.jit(jax.vmap(lambda k: init_state(jax.random.fold_in(k, 10**6), s.model, s.tx)))
    # every chunk: one program, one branch per depth (and, with capacity, width) profile
    strata = table_strata(table, widths=bool(t.capacity_factor))
    run = jax.jit(jax.vmap(
        lambda st, k, allowed: train_chunk(s.step_fn, st, k, s.sys_params, s.scales, allowed,
                                           strata),
        in_axes=(0, 0, None)))
    e = config.eval
    curve_scn, _ = eval_scenarios(e.seed, e.curve_batch, e.offload_fraction, s.sys_params)
    curve_gaps = _curve_gaps(s, curve_scn)
    timing = {"train_s": 0.0, "steps": 0}

    def chunk_fn(state, lo, hi):
        t0 = time.perf_counter()
        state, metrics = run(state, keys, jnp.asarray(table[lo:hi]))
        jax.block_until_ready(state)
        timing["train_s"] += time.perf_counter() - t0
        timing["steps"] += hi - lo
        return state, metrics

    state, history = loop.run_chunks(
        init(keys), chunk_fn, loop.chunk_bounds(total, t.chunk_steps), workdir,
        params_of=lambda st: st.params, evaluate=lambda st, hi: curve_gaps(st.params),
        desc=f"train allocator x{n} seeds", show="weighted_delay", progress=progress)
    t_train = timing["train_s"]

    scn, masks = eval_scenarios(e.seed, e.batch, e.offload_fraction, s.sys_params)
    optima = {k: baselines.optimal_allocation(scn, m, s.sys_params) for k, m in masks.items()}
    per_seed = []
    allocs = []
    for i in range(n):
        alloc = Allocator(jax.tree.map(lambda a, i=i: a[i], state.params), s.scales,
                          s.sys_params, s.model)
        allocs.append(alloc)
        res = {}
        for name, mask in masks.items():
            e = evaluate_subnets(alloc, scn, mask, optimum=optima[name])
            res[name] = {"gap": np.asarray(e["gap"]).tolist(),
                         "weighted_delay": np.asarray(e["wd"].mean(-1)).tolist(),
                         "weighted_delay_infer": np.asarray(e["wd_infer"].mean(-1)).tolist(),
                         "optimal_weighted_delay": float(e["opt"].mean()),
                         "inference_delay_s": np.asarray(e["t_infer"]).tolist()}
        per_seed.append(res)
    record = {
        "config": json.loads(files.config_json(config)),
        "steps": total,
        "train_wall_time_s": t_train,
        "steps_per_s": timing["steps"] / t_train if t_train else None,
        "history": history,
        "per_seed": per_seed,
        # NaN-safe: a NaN gives NaN (written as null, export refused) whatever the order
        "max_gap_all": loop.worst_over_seeds([r["all"]["gap"] for r in per_seed]),
        "max_gap_random": loop.worst_over_seeds([r["random"]["gap"] for r in per_seed]),
        "full_gap_all": loop.worst_over_seeds([r["all"]["gap"][-1][-1] for r in per_seed]),
        "versions": files.versions(),
    }
    extra = {k: v for k, v in record.items() if k != "history"}
    for i, alloc in enumerate(allocs):
        allocator_lib.save_allocator(alloc, workdir / "seeds" / f"seed_{i}",
                                     {"seed_index": i, "config": record["config"]})
    allocator_lib.save_allocator(allocs[config.export_seed], workdir / "allocator", extra)
    files.write_json(record, pathlib.Path(workdir) / "allocator_eval.json", indent=1)
    return record


def _curve_gaps(s: Setup, scn: Scenario) -> Callable:
    """``gaps(stacked params) -> {"gap_largest", "gap_worst"}`` per seed: the relative excess
    weighted delay (Eq. 18-20) of the largest and of the worst sub-network over the optimal
    allocation on ``scn`` (every task offloaded; the optimum computed once), for the curves."""
    mask = jnp.ones(scn.shape, bool)
    opt = system.weighted_delay(scn, mask, *baselines.optimal_allocation(scn, mask, s.sys_params),
                                s.sys_params).mean()

    @jax.jit
    @jax.vmap
    def gaps(params):
        alloc = Allocator(params, s.scales, s.sys_params, s.model)
        b, f = allocator_lib.allocate_all(alloc, scn, mask, s.sys_params)
        g = system.weighted_delay(scn, mask, b, f, s.sys_params).mean(-1) / opt - 1.0
        return {"gap_largest": g[-1, -1], "gap_worst": jnp.max(g)}

    return gaps
