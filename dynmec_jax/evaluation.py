"""Scoring decisions, and the methods of Section V, as jit/vmap-able functions.

* :func:`score` is the **public scorer**: any offloading decision (a
  method's, or a researcher's own rule), with a given allocation or the
  optimal one, becomes per-task delay, deadline miss, energy and cost C_i
  (Eq. 1-6, 24-25, 34-35) in a :class:`Score`; :func:`metrics` reduces it to
  the figures' per-scenario :class:`Metrics`.  Every Section V method is
  scored through it (:func:`scenario_metrics`).
* Each method maps a batch of scenarios (fields ``(B, N)``) to a
  :class:`MethodResult`: a :class:`~dynmec_jax.pipeline.Decision`
  (offloading, sub-network, allocation, inference delays per scenario) plus
  the operation count of its allocation algorithm.  The methods are
  registered, with their figure style and what they need, in
  :mod:`dynmec_jax.methods`.

**Charging inference time (one rule).**  A method a deployment would run
pays its own compute through Eq. 9, T = lambda M / f_ser [s], from its
operation count M; a *bound* (Optimum, Oracle) pays nothing and is
labelled a bound.  "Edge" = paid by offloaded tasks, "local" = paid by
local tasks (they wait for the decision when the method decides for all):

Section V.A (every task offloaded; no scheduler runs):

================  ==========================================================
PolicyMoE         edge: M_Poli + M_Alloc(k, l, N), (k, l) from the policy.
Fix width MoE     edge: M_Poli + M_Alloc(K, l, N), l from the policy.
Fix depth MoE     edge: M_Poli + M_Alloc(k, L, N), k from the policy.
Fix MoE           edge: M_Alloc(K, L, N).
Static model      edge: the static model's MACs for N users.
GA                edge: ``ga.ga_ops(N)["total"]``, a *modelled* operation
                  count of the GA as implemented.
KKT (beyond)      edge: ``baselines.optimal_allocation_ops(N)``, the traced
                  operation count of the KKT solver.
Oracle (bound)    none: the Eq. 28 label (k*, l*) used directly.
================  ==========================================================

Section V.B (users have computing power):

================  ==========================================================
PMRL              local: M_Sced; edge: M_Sced + M_Poli + M_Alloc(k, l, n).
RL                local: M_Sced; edge: M_Sced + M_Alloc(K, L, n).
Rand              local: 0; edge: M_Poli + M_Alloc(k, l, n) (no scheduler).
Fix MoE (joint)   local: M_Sced; edge: M_Sced + M_Alloc(K, L, n): PMRL's
                  scheduler with the largest fixed sub-network.
Local execution   none (nothing runs).
Greedy (beyond)   local and edge: ``greedy.greedy_ops(N, rounds)``, the
                  traced operations of the rounds it ran plus one, and the
                  final allocation.
DROO (beyond)     local and edge: M_DNN + K x the operations of one exact
                  allocation (``droo.droo_ops``).
GA (joint)        local and edge: ``ga.ga_ops(N, joint=True)["total"]``.
Optimum (bound)   none: the best offloading set with the exact allocation.
================  ==========================================================

n is the number of offloaded tasks of the scenario.  MAC counts follow
:mod:`dynmec_jax.accounting` (zeta = 1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from dynmec_jax import accounting, baselines, costs, pipeline, rng, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.baselines import droo as droo_lib
from dynmec_jax.baselines import exhaustive as exhaustive_lib
from dynmec_jax.baselines import ga as ga_lib
from dynmec_jax.baselines import greedy as greedy_lib
from dynmec_jax.baselines import local_search
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.pipeline import Decision, Pipeline
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: How :func:`score` allocates when no allocation is given.
ALLOCATIONS = ("cost", "weighted_delay")


class MethodResult(NamedTuple):
    """A method's decision and the size of its allocation algorithm.

    Attributes:
      decision: offload ``(B, N)``, width/depth ``(B,)`` (1 where a method has
        no sub-network), bandwidth [Hz] and f_alloc [cycles/s] ``(B, N)``,
        inference delays [s] ``(B,)``.
      allocator_macs: MACs (networks) or modelled operations (GA, KKT)
        of the allocation algorithm per scenario, ``(B,)`` (Fig. 10).
    """

    decision: Decision
    allocator_macs: Array


def decision(offload, width, depth, bandwidth, f_alloc, t_local, t_edge) -> Decision:
    """A :class:`~dynmec_jax.pipeline.Decision` with the scalars broadcast to the batch.

    ``offload`` bool ``(..., N)``; ``width``/``depth`` int (scalar or
    ``(...)``); ``bandwidth`` [Hz] and ``f_alloc`` [cycles/s] ``(..., N)``;
    ``t_local``/``t_edge`` the inference delays of Eq. 34-35 [s] (scalar or
    ``(...)``).
    """
    shape = jnp.shape(offload)[:-1]
    return Decision(jnp.asarray(offload).astype(bool),
                    jnp.broadcast_to(jnp.asarray(width, jnp.int32), shape),
                    jnp.broadcast_to(jnp.asarray(depth, jnp.int32), shape),
                    bandwidth, f_alloc,
                    jnp.broadcast_to(jnp.asarray(t_local, bandwidth.dtype), shape),
                    jnp.broadcast_to(jnp.asarray(t_edge, bandwidth.dtype), shape))


# ----------------------------------------------------------------------------
# The public scorer and the figures' metrics
# ----------------------------------------------------------------------------

class Score(NamedTuple):
    """Per-task outcome of a decision (each ``(..., N)`` unless noted), SI units.

    Attributes:
      offload, bandwidth, f_alloc: the decision scored (bool; Hz; cycles/s).
      infer_local, infer_edge: the inference delays T_l^infer and
        T_e^infer of Eq. 34-35 charged to local and offloaded tasks [s], ``(...)``.
      delay: service delay, inference delay included [s] (Eq. 3-4, 11a).
      miss: 1.0 where the delay exceeds the deadline, else 0.0.
      energy: user-side energy [J] (Eq. 5 or 6).
      weighted: w_i x delay_i (Eq. 19 weights; dimensionless; 0 where w_i = 0).
      cost: C_i = alpha w_i delay_i + beta E_i (Eq. 24 or 25 with the
        inference delays; cost units).
      t_tra, t_com, t_loc: Eq. 1, 2 (offloaded tasks) and 4 (local tasks) [s].
    """

    offload: Array
    bandwidth: Array
    f_alloc: Array
    infer_local: Array
    infer_edge: Array
    delay: Array
    miss: Array
    energy: Array
    weighted: Array
    cost: Array
    t_tra: Array
    t_com: Array
    t_loc: Array


def score(scn: Scenario, offload: Array, bandwidth: Array | None = None,
          f_alloc: Array | None = None, *, sys_params: SystemParams,
          inference_delay=0.0, allocation: str = "cost") -> Score:
    """Scores an offloading decision: per-task delay, miss, energy and C_i (Eq. 1-6, 24-25).

    Args:
      scn: the tasks, fields ``(..., N)`` (NumPy or JAX), SI units.
      offload: x_i, bool or 0/1 ``(..., N)``.
      bandwidth, f_alloc: the allocation [Hz], [cycles/s] ``(..., N)``
        (ignored where x_i = 0).  None: the optimal allocation of the
        offloaded set (``allocation``): ``"cost"`` minimises sum_i C_i^edge
        of Eq. 25, energy term included
        (:func:`~dynmec_jax.baselines.exhaustive.energy_aware_allocation`);
        ``"weighted_delay"`` the importance-weighted delay alone
        (:func:`~dynmec_jax.baselines.optimal_allocation`, the KKT optimum
        of Eq. 18-20's objective).
      sys_params: the system (keyword).
      inference_delay: [s], paid by every task (a number or ``(...)`` per
        scenario), or a pair ``(t_local, t_edge)`` (Eq. 34-35: what local and
        offloaded tasks pay).  The project's rule (module doc): a deployed
        method pays its own compute through Eq. 9; a bound pays 0.
      allocation: see ``bandwidth``.
    Returns:
      :class:`Score`; :func:`metrics` gives the figures' per-scenario numbers.
      jit/vmap-able.
    """
    scn = system.as_scenario(scn)
    x = jnp.asarray(offload).astype(bool)
    if (bandwidth is None) != (f_alloc is None):
        raise ValueError("give both bandwidth and f_alloc, or neither (optimal allocation)")
    if bandwidth is None:
        if allocation == "cost":
            bandwidth, f_alloc = exhaustive_lib.energy_aware_allocation(scn, x, sys_params)
        elif allocation == "weighted_delay":
            bandwidth, f_alloc = baselines.optimal_allocation(scn, x, sys_params)
        else:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
        bandwidth, f_alloc = jnp.where(x, bandwidth, 0.0), jnp.where(x, f_alloc, 0.0)
    if isinstance(inference_delay, (tuple, list)):
        t_local, t_edge = inference_delay
    else:
        t_local = t_edge = inference_delay
    batch = jnp.shape(x)[:-1]
    dtype = jnp.result_type(bandwidth)
    t_local = jnp.broadcast_to(jnp.asarray(t_local, dtype), batch)
    t_edge = jnp.broadcast_to(jnp.asarray(t_edge, dtype), batch)
    out = system.task_outcomes(scn, x, bandwidth, f_alloc, sys_params,
                               infer_edge=t_edge[..., None], infer_local=t_local[..., None])
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    weighted = jnp.where(w > 0, w * jnp.where(w > 0, out.delay, 0.0), 0.0)
    cost = sys_params.alpha * weighted + sys_params.beta * out.energy
    return Score(x, bandwidth, f_alloc, t_local, t_edge, out.delay, out.miss, out.energy,
                 weighted, cost, out.t_tra, out.t_com, out.t_loc)


#: Metrics stored per method and scenario (:class:`Metrics`), in order.
METRICS = ("delay", "miss_ratio", "energy", "allocator_macs", "inference_share",
           "weighted_delay", "offload_fraction", "width", "depth", "cost", "cost_delay",
           "cost_energy")


class Metrics(NamedTuple):
    """Per-scenario metrics of Section V (each ``(...)``; :func:`metrics`).

    Attributes:
      delay: mean service delay over the N tasks [s], inference delay
        included (Figs. 5, 7).
      miss_ratio: fraction of tasks past their deadline (Figs. 6, 8).
      energy: total user-side energy of the scenario [J] (Eq. 5-6; Fig. 9).
      allocator_macs: MACs / modelled operations of the allocation
        algorithm (Fig. 10).
      inference_share: sum of the tasks' inference delays over the sum of
        their service delays (Fig. 11), dimensionless.
      weighted_delay: sum_i w_i delay_i (Eq. 19 weights; dimensionless).
      offload_fraction: share of tasks offloaded.
      width, depth: the sub-network (1 where a method has none).
      cost: sum_i C_i (Eq. 24-25 with the inference delays), the scheduler's
        objective; cost_delay, cost_energy: its two parts (alpha sum w_i
        delay_i and beta sum E_i).
    """

    delay: Array
    miss_ratio: Array
    energy: Array
    allocator_macs: Array
    inference_share: Array
    weighted_delay: Array
    offload_fraction: Array
    width: Array
    depth: Array
    cost: Array
    cost_delay: Array
    cost_energy: Array


def metrics(sc: Score, sys_params: SystemParams, width=1, depth=1,
            allocator_macs=0.0) -> Metrics:
    """The figures' per-scenario :class:`Metrics` of a :class:`Score`.

    ``width``/``depth`` (the sub-network) and ``allocator_macs`` (Fig. 10)
    are reported as given (scalars or ``(...)``).
    """
    total_delay = jnp.sum(sc.delay, -1)
    ok = total_delay > 0
    infer = jnp.where(sc.offload, sc.infer_edge[..., None], sc.infer_local[..., None])
    dtype = sc.delay.dtype
    wd = jnp.sum(sc.weighted, -1)
    cost_d = sys_params.alpha * wd
    cost_e = sys_params.beta * jnp.sum(sc.energy, -1)
    return Metrics(
        delay=jnp.mean(sc.delay, -1),
        miss_ratio=jnp.mean(sc.miss, -1),
        energy=jnp.sum(sc.energy, -1),
        allocator_macs=jnp.broadcast_to(jnp.asarray(allocator_macs, dtype), total_delay.shape),
        inference_share=jnp.where(
            ok, jnp.sum(jnp.broadcast_to(infer, sc.delay.shape), -1)
            / jnp.where(ok, total_delay, 1.0), 0.0),
        weighted_delay=wd,
        offload_fraction=jnp.mean(sc.offload.astype(dtype), -1),
        width=jnp.broadcast_to(jnp.asarray(width), total_delay.shape).astype(dtype),
        depth=jnp.broadcast_to(jnp.asarray(depth), total_delay.shape).astype(dtype),
        cost=cost_d + cost_e, cost_delay=cost_d, cost_energy=cost_e)


def score_result(scn: Scenario, result: MethodResult, sys_params: SystemParams) -> Score:
    """:func:`score` of a method's decision (its allocation and inference delays)."""
    d = result.decision
    return score(scn, d.offload, d.bandwidth, d.f_alloc, sys_params=sys_params,
                 inference_delay=(d.inference_delay_local, d.inference_delay_edge))


def scenario_metrics(scn: Scenario, result: MethodResult, sys_params: SystemParams) -> Metrics:
    """Per-scenario :class:`Metrics` of a method's result (through :func:`score`)."""
    d = result.decision
    return metrics(score_result(scn, result, sys_params), sys_params, d.width, d.depth,
                   result.allocator_macs)


def task_cost(scn: Scenario, result: MethodResult, sys_params: SystemParams) -> Array:
    """sum_i C_i of a method's decision (Eq. 24-25 with its inference delays), ``(B,)``."""
    return scenario_metrics(scn, result, sys_params).cost


def without_inference(result: MethodResult) -> MethodResult:
    """``result`` with both inference delays set to 0 (e.g. to split a gap into its parts)."""
    d = result.decision
    return result._replace(decision=d._replace(
        inference_delay_local=jnp.zeros_like(d.inference_delay_local),
        inference_delay_edge=jnp.zeros_like(d.inference_delay_edge)))


# ----------------------------------------------------------------------------
# Section V.A: all tasks offloaded
# ----------------------------------------------------------------------------

def _all(scn):
    return jnp.ones(jnp.shape(system.as_scenario(scn).size), bool)


def fixed_subnet(allocator, scn: Scenario, sys_params: SystemParams, width=None, depth=None,
                 offload: Array | None = None, scheduler_macs=0,
                 scheduler_local: bool = False) -> MethodResult:
    """Fix MoE / Static model (Section V.A): one sub-network for every scenario.

    ``width``/``depth`` default to the largest (K, L) and may be traced
    (one compiled function serves all).  ``offload`` defaults to all tasks.
    Inference delay: edge = lambda (``scheduler_macs`` + M_Alloc(width,
    depth, n)) / f_ser; local = lambda ``scheduler_macs`` / f_ser if
    ``scheduler_local`` else 0.  Any :class:`~dynmec_jax.allocator.Allocator`
    (e.g. the static model) is accepted.
    """
    scn = system.as_scenario(scn)
    x = _all(scn) if offload is None else jnp.asarray(offload).astype(bool)
    shape = x.shape[:-1]
    width = jnp.broadcast_to(jnp.asarray(allocator.n_experts if width is None else width,
                                         jnp.int32), shape)
    depth = jnp.broadcast_to(jnp.asarray(allocator.n_layers if depth is None else depth,
                                         jnp.int32), shape)
    b, f = allocator_lib.allocate(allocator, scn, x, width, depth, sys_params)
    macs = allocator.macs(width, depth, jnp.sum(x, -1))
    t_loc, t_edge = costs.inference_delays(sys_params, scheduler_macs, 0, macs)
    if not scheduler_local:
        t_loc = jnp.zeros_like(t_edge)
    return MethodResult(decision(x, width, depth, b, f, t_loc, t_edge), macs)


def static_model(allocator, scn: Scenario, sys_params: SystemParams) -> MethodResult:
    """Static model of Section V.A: ``allocator`` (any, e.g. ``StaticAllocator``) at full size.

    Edge inference delay: lambda M_Alloc / f_ser with the model's MACs for N
    users (:meth:`Allocator.macs`).
    """
    return fixed_subnet(allocator, scn, sys_params)


def policy_moe(allocator, policy_params, scn: Scenario, sys_params: SystemParams,
               variant: str = "full", offload: Array | None = None,
               policy_model: policy_net.Policy | None = None) -> MethodResult:
    """PolicyMoE / Fix width MoE / Fix depth MoE (Section V.A; ``variant``).

    The policy picks (width, depth) from the offloaded set (all tasks by
    default); edge inference delay lambda (M_Poli + M_Alloc(k, l, n)) /
    f_ser, no scheduler (local tasks pay 0).  ``policy_model`` defaults to
    ``Policy(K, L)`` with 32 hidden units.
    """
    scn = system.as_scenario(scn)
    x = _all(scn) if offload is None else jnp.asarray(offload).astype(bool)
    K, L = allocator.n_experts, allocator.n_layers
    model = policy_net.Policy(K, L) if policy_model is None else policy_model
    feats = policy_net.policy_features(scn, x, allocator.scales, sys_params, allocator.sys_params)
    width, depth = policy_net.choose(model.apply(policy_params, feats), K, L, variant)
    b, f = allocator_lib.allocate(allocator, scn, x, width, depth, sys_params)
    macs = allocator.macs(width, depth, jnp.sum(x, -1))
    _, t_edge = costs.inference_delays(sys_params, 0, accounting.policy_macs(model.hidden), macs)
    return MethodResult(decision(x, width, depth, b, f, jnp.zeros_like(t_edge), t_edge), macs)


def oracle(allocator, scn: Scenario, sys_params: SystemParams, variant: str = "full",
           offload: Array | None = None) -> MethodResult:
    """Oracle (a bound, beyond the paper): the Eq. 28 label used as the decision.

    (width, depth) = argmin of the mean C^edge over the offloaded tasks
    (inference delay included), found from one ``logits_all`` pass.  As a
    bound it pays no inference delay (module doc); ``allocator_macs`` is the
    label's M_Alloc(k*, l*, n) (Fig. 10's "Eq. 28 label").
    """
    scn = system.as_scenario(scn)
    x = _all(scn) if offload is None else jnp.asarray(offload).astype(bool)
    la = allocator.logits_all(scn)
    width, depth, _ = costs.labels(allocator, la, scn, x, sys_params, variant=variant)
    res = fixed_subnet(allocator, scn, sys_params, width, depth, offload=x)
    return without_inference(res)


def optimal(scn: Scenario, sys_params: SystemParams, offload: Array | None = None,
            special_cost: float = 1.0) -> MethodResult:
    """KKT (beyond the paper): the allocation of ``baselines.optimal_allocation``, deployed.

    Edge inference delay lambda M / f_ser with M =
    ``baselines.optimal_allocation_ops(N, special_cost=...)``, the traced
    operation count of the solver for N served users (modelled; a lower
    bound with the default ``special_cost = 1``).  N is the static number of
    users (the solver runs on the whole scenario).
    """
    scn = system.as_scenario(scn)
    x = _all(scn) if offload is None else jnp.asarray(offload).astype(bool)
    n = x.shape[-1]
    b, f = baselines.optimal_allocation(scn, x, sys_params)
    ops = baselines.optimal_allocation_ops(n, special_cost=special_cost)
    t_edge = accounting.inference_delay(ops, sys_params)
    shape = x.shape[:-1]
    return MethodResult(decision(x, 1, 1, b, f, 0.0, t_edge),
                        jnp.full(shape, ops, b.dtype))


def genetic(key: Array, scn: Scenario, sys_params: SystemParams, joint: bool = False,
            n_iters: int = 200, pop_factor: int = 6,
            offload: Array | None = None) -> MethodResult:
    """GA of Section V.A (``joint=False``, allocation only, all offloaded) or V.B (joint).

    Uses :class:`~dynmec_jax.baselines.ga.GeneticAlgorithm` with the paper's
    hyperparameters (decay interval 25, or 40 if joint).  Inference delay:
    lambda ``ga_ops(N, pop_factor, n_iters, joint)["total"]`` / f_ser, a
    modelled operation count, paid by offloaded tasks and, in joint mode,
    also by local ones (they wait for the GA's decision).  ``n_iters`` and
    ``pop_factor`` are static.
    """
    scn = system.as_scenario(scn)
    n = jnp.shape(scn.size)[-1]
    x0 = _all(scn) if offload is None else jnp.asarray(offload).astype(bool)
    alg = ga_lib.GeneticAlgorithm(n, pop_factor=pop_factor, n_iters=n_iters, joint=joint)
    res = alg.run_batch(key, scn, x0, sys_params, alg.default_params())
    ops = ga_lib.ga_ops(n, pop_factor, n_iters, joint)["total"]
    t = accounting.inference_delay(ops, sys_params)
    shape = x0.shape[:-1]
    return MethodResult(decision(res.offload, 1, 1, res.bandwidth, res.f_alloc,
                                  t if joint else 0.0, t),
                        jnp.full(shape, ops, res.bandwidth.dtype))


# ----------------------------------------------------------------------------
# Section V.B: joint scheduling and allocation
# ----------------------------------------------------------------------------

def pipeline_method(pipe: Pipeline, scn: Scenario, sys_params: SystemParams) -> MethodResult:
    """PMRL (a "full" pipeline) or RL (a "fixed" pipeline at (K, L)) of Section V.B.

    Greedy scheduler (p > 0.5); inference delays of Eq. 34-35 with the
    pipeline's networks: local M_Sced, edge M_Sced + M_Poli (0 for "fixed")
    + M_Alloc(k, l, n).
    """
    scn = system.as_scenario(scn)
    d = pipeline.decide_body(pipe, scn, sys_params)
    macs = pipe.allocator.macs(d.width, d.depth, jnp.sum(d.offload, -1))
    return MethodResult(d, macs)


def pipeline_search(pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                    max_rounds: int | None = None) -> MethodResult:
    """PMRL + one-flip search (beyond the paper): the pipeline's offloading set, refined by
    :func:`dynmec_jax.baselines.local_search.one_flip_search` with the optimal allocation
    of Eq. 25's cost, deployed.

    Inference delays: the pipeline's own (Eq. 34-35, :func:`pipeline_method`)
    plus lambda ``search_ops(N, moves)`` / f_ser (Eq. 9) for every task (each
    waits for the search).  The sub-network is the pipeline's (its MACs
    stay in ``allocator_macs``), though the allocation is the search's.
    ``sys_params``: one cell.
    """
    return searched(pipeline_method(pipe, scn, sys_params), scn, sys_params, max_rounds)


def searched(res: MethodResult, scn: Scenario, sys_params: SystemParams,
             max_rounds: int | None = None) -> MethodResult:
    """A deployed method's result (e.g. :func:`pipeline_method`'s) refined by the one-flip
    search from its offloading set (Eq. 24-25 with the optimal allocation), the search's
    Eq. 9 delay [s] added to its own inference delays (:func:`pipeline_search`)."""
    d = res.decision
    scn = system.as_scenario(scn)
    s = local_search.one_flip_search(scn, d.offload, sys_params, max_rounds=max_rounds,
                                     infer_local=d.inference_delay_local,
                                     infer_edge=d.inference_delay_edge)
    t = accounting.inference_delay(local_search.search_ops(d.offload.shape[-1], s.moves),
                                   sys_params)
    return MethodResult(decision(s.offload, d.width, d.depth, s.bandwidth, s.f_alloc,
                                 d.inference_delay_local + t, d.inference_delay_edge + t),
                        res.allocator_macs)


def random_offload(key: Array, pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                   prob: float = 0.5) -> MethodResult:
    """Rand of Section V.B: offload each task with probability ``prob``, policy MoE allocation.

    No scheduler runs: local tasks pay no inference delay; offloaded ones pay
    lambda (M_Poli + M_Alloc(k, l, n)) / f_ser (M_Poli = 0 if ``pipe`` is a
    "fixed" pipeline).
    """
    scn = system.as_scenario(scn)
    x = rng.uniform(key, jnp.shape(scn.size)) < prob
    d = pipeline.decide_body(pipe, scn, sys_params, offload=x)
    macs = pipe.allocator.macs(d.width, d.depth, jnp.sum(x, -1))
    _, t_edge = costs.inference_delays(sys_params, 0, pipe.models.policy_macs, macs)
    return MethodResult(d._replace(inference_delay_local=jnp.zeros_like(t_edge),
                                   inference_delay_edge=t_edge), macs)


def fixed_with_scheduler(pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                         width=None, depth=None) -> MethodResult:
    """Fix MoE in the joint case (Section V.B): ``pipe``'s greedy scheduler, fixed sub-network.

    Offloading x = [p > 0.5] from ``pipe``'s scheduler (``Models.greedy_offload``:
    dominated tasks kept local if its spec says so); allocation by the
    sub-network (width, depth) (default the largest, (K, L)) for every
    scenario; inference delays (Eq. 34-35): local lambda M_Sced / f_ser,
    edge lambda (M_Sced + M_Alloc(width, depth, n)) / f_ser (no policy runs).
    """
    scn = system.as_scenario(scn)
    m = pipe.models
    _, x, sched_macs = m.greedy_offload(pipe.scheduler_params, scn, sys_params,
                                        pipe.allocator.scales)
    return fixed_subnet(pipe.allocator, scn, sys_params, width, depth, offload=x,
                        scheduler_macs=sched_macs, scheduler_local=True)


def local_execution(scn: Scenario, sys_params: SystemParams) -> MethodResult:
    """Local execution of Section V.B: every task runs locally; no inference delay."""
    scn = system.as_scenario(scn)
    shape = jnp.shape(scn.size)
    zeros = jnp.zeros(shape, scn.size.dtype)
    return MethodResult(decision(jnp.zeros(shape, bool), 1, 1, zeros, zeros, 0.0, 0.0),
                        jnp.zeros(shape[:-1], scn.size.dtype))


def greedy(scn: Scenario, sys_params: SystemParams, objective: str = "cost") -> MethodResult:
    """Greedy + KKT (beyond the paper): removal-only greedy offloading, optimal allocation.

    :func:`dynmec_jax.baselines.greedy.greedy_offloading` with ``objective``
    ("cost": Eq. 24-25; "delay": service delay only).  Deployed, it pays its
    own compute (module doc): every task waits lambda ``greedy_ops(N,
    rounds)`` / f_ser (Eq. 9), the rounds it ran plus one and the final
    allocation.  No sub-network (width = depth = 1 in the decision, 0
    allocator MACs).
    """
    scn = system.as_scenario(scn)
    g = greedy_lib.greedy_offloading(scn, sys_params, objective=objective)
    ops = greedy_lib.greedy_ops(g.offload.shape[-1], g.rounds, objective)
    t = accounting.inference_delay(ops, sys_params)
    shape = g.offload.shape[:-1]
    return MethodResult(decision(g.offload, 1, 1, g.bandwidth, g.f_alloc, t, t),
                        jnp.zeros(shape, g.bandwidth.dtype))


def droo(params, k, scn: Scenario, sys_params: SystemParams) -> MethodResult:
    """DROO (beyond the paper; Huang, Bi, Zhang, IEEE TMC 2020): its trained DNN, K
    order-preserving candidates, each scored by the exact allocation
    (:func:`dynmec_jax.baselines.droo.decide`).

    ``params``: the DNN (``DrooState.params``); ``k``: its adaptive K
    (``DrooState.k``, may be traced).  Deployed, it pays its own compute
    (module doc): every task waits lambda (M_DNN + K x the operations of one
    allocation) / f_ser (Eq. 9; :func:`dynmec_jax.baselines.droo.droo_ops`).
    """
    scn = system.as_scenario(scn)
    n = jnp.shape(scn.size)[-1]
    x, b, f = droo_lib.decide(params, scn, sys_params, k)
    n_max = droo_lib.network_from_params(params).n_max
    ops = (droo_lib.dnn_macs(n_max, droo_lib.network_from_params(params).hidden)
           + jnp.clip(jnp.asarray(k), 1, n) * droo_lib.allocation_ops(n))
    t = accounting.inference_delay(ops, sys_params)
    return MethodResult(decision(x, 1, 1, b, f, t, t), jnp.zeros(x.shape[:-1], b.dtype))


def exhaustive(scn: Scenario, sys_params: SystemParams) -> MethodResult:
    """Optimum (a bound, beyond the paper, N <= 12): the best of all 2^N offloading subsets.

    :func:`dynmec_jax.baselines.exhaustive.exhaustive_optimum` on sum_i C_i
    (Eq. 24-25) with the energy-aware exact allocation; as a bound it pays
    no inference delay.
    """
    scn = system.as_scenario(scn)
    o = exhaustive_lib.exhaustive_optimum(scn, sys_params, objective="cost",
                                          allocation="energy_aware")
    shape = o.offload.shape[:-1]
    return MethodResult(decision(o.offload, 1, 1, o.bandwidth, o.f_alloc, 0.0, 0.0),
                        jnp.zeros(shape, o.bandwidth.dtype))


def policy_regret(models, policy_params, allocator, scn: Scenario, offload: Array,
                  sys_params: SystemParams) -> dict:
    """How far the policy's (width, depth) is from the per-scenario best (Eq. 28).

    For the offload set ``offload`` (``(B, N)``) of each scenario, the Eq. 28
    objective (mean C^edge over the offloaded tasks, inference delay of
    Eq. 35 included) of the policy's choice against its minimum over the
    sub-networks the variant allows (the label).  Returns per-scenario
    ``(B,)`` arrays: ``regret`` (relative excess, dimensionless; 0 where
    nothing is offloaded), ``label_width``, ``label_depth`` and
    ``label_macs`` (M_Alloc of the label for the number offloaded [MACs]).
    """
    scn = system.as_scenario(scn)
    x = jnp.asarray(offload).astype(bool)
    la = allocator.logits_all(scn)
    lw, ld, table = costs.labels(allocator, la, scn, x, sys_params, models.scheduler_macs,
                                 models.policy_macs, models.variant, models.fixed)
    w, d = pipeline.decide_subnet(models, policy_params, allocator, scn, x, sys_params)
    chosen = allocator_lib.gather_subnet(table, w, d)
    best = allocator_lib.gather_subnet(table, lw, ld)
    valid = jnp.any(x, -1) & (best > 0)
    regret = jnp.where(valid, chosen / jnp.where(valid, best, 1.0) - 1.0, 0.0)
    return {"regret": regret, "label_width": lw.astype(regret.dtype),
            "label_depth": ld.astype(regret.dtype),
            "label_macs": allocator.macs(lw, ld, jnp.sum(x, -1))
            .astype(regret.dtype)}
