"""The methods of Section V and their metrics, as jit/vmap-able functions.

Every method maps a batch of scenarios (fields ``(B, N)``) to a
:class:`MethodResult`: a :class:`~dynmec_jax.pipeline.Decision` (offloading,
sub-network, allocation, inference delays per scenario) plus the operation
count of its allocation algorithm.  :func:`scenario_metrics` turns a result
into per-scenario metrics; :func:`summarize` averages them.

Inference delay of each method (Eq. 9, 34-35: T = lambda M / f_ser [s]; which
networks' MACs M includes; "edge" = paid by offloaded tasks, "local" = paid
by local tasks):

Section V.A (every task offloaded; no scheduler runs):

================  ==========================================================
PolicyMoE         edge: M_Poli + M_Alloc(k, l, N), (k, l) from the policy.
Fix width MoE     edge: M_Poli + M_Alloc(K, l, N), l from the policy.
Fix depth MoE     edge: M_Poli + M_Alloc(k, L, N), k from the policy.
Fix MoE           edge: M_Alloc(k, l, N) at the fixed (default (K, L)).
Static model      edge: the static model's MACs for N users.
GA                edge: ``ga.ga_ops(N)["total"]``, a *modelled* operation
                  count of the GA as implemented (not a MAC count of a
                  network; labelled ``allocator_ops_kind = "modelled"``).
Oracle (beyond)   edge: M_Alloc(k*, l*, N) with (k*, l*) the Eq. 28 label
                  used directly; the search over (k, l) is not counted (an
                  idealised bound on what a policy can achieve).
Optimal (beyond)  edge: ``baselines.optimal_allocation_ops(N)``, the traced
                  op count of the KKT solver (modelled).
================  ==========================================================

Section V.B (users have computing power):

================  ==========================================================
PMRL              local: M_Sced; edge: M_Sced + M_Poli + M_Alloc(k, l, n).
RL                local: M_Sced; edge: M_Sced + M_Alloc(K, L, n) (scheduler
                  trained with the largest fixed allocator; no policy).
Rand              local: 0; edge: M_Poli + M_Alloc(k, l, n) (offload with
                  probability 1/2; no scheduler runs).
Fix MoE (joint)   local: M_Sced; edge: M_Sced + M_Alloc(K, L, n): PMRL's
                  scheduler (its offloading decisions) with the largest fixed
                  sub-network instead of the policy (our reading of "Fix MoE"
                  in Section V.B, where the paper does not define it).
Local execution   none (0 for every task).
Greedy (beyond)   none: :func:`dynmec_jax.baselines.greedy.greedy_offloading`,
                  removal-only greedy offloading on the Eq. 24-25 costs with
                  the KKT allocation; its run time is not modelled (a
                  favour to the baseline: its cost is a lower bound on what
                  it would cost with any inference delay).
GA (joint)        local and edge: ``ga.ga_ops(N, joint=True)["total"]``
                  (modelled): every task waits for the GA's decision.
================  ==========================================================

n is the number of offloaded tasks of the scenario.  MAC counts follow
:mod:`dynmec_jax.accounting` (zeta = 1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynmec_jax import accounting, baselines, costs, pipeline, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.baselines import exhaustive as exhaustive_lib
from dynmec_jax.baselines import ga as ga_lib
from dynmec_jax.baselines import greedy as greedy_lib
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.pipeline import Decision, Pipeline
from dynmec_jax.system import Scenario, SystemParams

Array = Any

SECTION_VA = ("PolicyMoE", "Fix width MoE", "Fix depth MoE", "Fix MoE", "Static model", "GA",
              "Oracle", "Optimal")
SECTION_VB = ("PMRL", "RL", "Fix MoE", "Rand", "Local execution", "Greedy", "GA")


class MethodResult(NamedTuple):
    """A method's decision and the size of its allocation algorithm.

    Attributes:
      decision: offload ``(B, N)``, width/depth ``(B,)`` (1 where a method has
        no sub-network), bandwidth [Hz] and f_alloc [cycles/s] ``(B, N)``,
        inference delays [s] ``(B,)``.
      allocator_macs: MACs (networks) or modelled operations (GA, Optimal)
        of the allocation algorithm per scenario, ``(B,)`` (Fig. 10).
    """

    decision: Decision
    allocator_macs: Array


def _decision(x, width, depth, bandwidth, f_alloc, t_local, t_edge):
    shape = jnp.shape(x)[:-1]
    return Decision(jnp.asarray(x).astype(bool),
                    jnp.broadcast_to(jnp.asarray(width, jnp.int32), shape),
                    jnp.broadcast_to(jnp.asarray(depth, jnp.int32), shape),
                    bandwidth, f_alloc,
                    jnp.broadcast_to(jnp.asarray(t_local, bandwidth.dtype), shape),
                    jnp.broadcast_to(jnp.asarray(t_edge, bandwidth.dtype), shape))


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------

def scenario_metrics(scn: Scenario, result: MethodResult, sys_params: SystemParams) -> dict:
    """Per-scenario metrics of Section V, each ``(B,)``.

    * ``delay``: mean service delay over the N tasks [s], inference delay
      included (Fig. 5, 7).
    * ``miss_ratio``: fraction of tasks whose service delay exceeds the
      deadline (Fig. 6, 8).
    * ``energy``: total user-side energy of the scenario [J] (Eq. 5-6;
      Fig. 9); ``energy_per_task`` [J].
    * ``allocator_macs``: MACs / modelled ops of the allocation algorithm
      (Fig. 10).
    * ``inference_share``: sum of the tasks' inference delays over the sum of
      their service delays (Fig. 11), dimensionless.
    * ``weighted_delay``: sum_i w_i x service delay_i (Eq. 19 weights,
      dimensionless); tasks with w_i = 0 contribute 0.
    * ``objective``: Eq. 11a summed over tasks (alpha, beta, delta weights).
    * ``cost``: sum_i C_i, the scheduler's cost (Eq. 24 for local tasks,
      Eq. 25 for offloaded ones, each with the method's inference delay);
      the value :func:`dynmec_jax.baselines.exhaustive.exhaustive_optimum`
      minimises with ``objective="cost"``; ``cost_delay`` and ``cost_energy``
      its two parts (:func:`cost_terms`).
    * ``offload_fraction``, ``width``, ``depth``.
    """
    scn = system.as_scenario(scn)
    d = result.decision
    x = d.offload
    cost_d, cost_e = cost_terms(scn, result, sys_params)
    t_edge = d.inference_delay_edge[..., None]
    t_local = d.inference_delay_local[..., None]
    out = system.task_outcomes(scn, x, d.bandwidth, d.f_alloc, sys_params,
                               infer_edge=t_edge, infer_local=t_local)
    infer = jnp.where(x, t_edge, t_local)
    total_delay = jnp.sum(out.delay, -1)
    ok = total_delay > 0
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    wd = jnp.sum(jnp.where(w > 0, w * jnp.where(w > 0, out.delay, 0.0), 0.0), -1)
    return {
        "delay": jnp.mean(out.delay, -1),
        "miss_ratio": jnp.mean(out.miss, -1),
        "energy": jnp.sum(out.energy, -1),
        "energy_per_task": jnp.mean(out.energy, -1),
        "allocator_macs": jnp.broadcast_to(
            jnp.asarray(result.allocator_macs, out.delay.dtype), total_delay.shape),
        "inference_share": jnp.where(
            ok, jnp.sum(jnp.broadcast_to(infer, out.delay.shape), -1)
            / jnp.where(ok, total_delay, 1.0), 0.0),
        "weighted_delay": wd,
        "objective": system.objective(out, sys_params),
        "cost": cost_d + cost_e,
        "cost_delay": cost_d,
        "cost_energy": cost_e,
        "offload_fraction": jnp.mean(x.astype(out.delay.dtype), -1),
        "width": d.width.astype(out.delay.dtype),
        "depth": d.depth.astype(out.delay.dtype),
    }


def task_cost(scn: Scenario, result: MethodResult, sys_params: SystemParams) -> Array:
    """sum_i C_i of a decision (Eq. 24-25 with its inference delays, Eq. 34-35), ``(B,)``.

    C_i = C_i^edge (bandwidth, f_alloc and T_e^infer of the decision) if task
    i is offloaded, C_i^loc (with T_l^infer) otherwise; cost units (alpha w T
    with w [1/s], T [s], plus beta E [J]).  Local tasks' 0 allocation never
    enters Eq. 1 (double ``where``).
    """
    delay_term, energy_term = cost_terms(scn, result, sys_params)
    return delay_term + energy_term


def cost_terms(scn: Scenario, result: MethodResult, sys_params: SystemParams):
    """The two parts of sum_i C_i (Eq. 24-25): ``(sum alpha w_i T_i, sum beta E_i)``, ``(B,)`` each.

    T_i is the service delay with the decision's inference delay (Eq. 34-35;
    w_i T_i dimensionless), E_i the user-side energy [J] (Eq. 5 or 6).  Tasks
    with w_i = 0 have a 0 delay term.
    """
    scn = system.as_scenario(scn)
    d = result.decision
    out = system.task_outcomes(scn, d.offload, d.bandwidth, d.f_alloc, sys_params,
                               infer_edge=d.inference_delay_edge[..., None],
                               infer_local=d.inference_delay_local[..., None])
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    delay_term = jnp.where(w > 0, w * jnp.where(w > 0, out.delay, 0.0), 0.0)
    return (sys_params.alpha * jnp.sum(delay_term, -1),
            sys_params.beta * jnp.sum(out.energy, -1))


def summarize(metrics: dict) -> dict:
    """Means over scenarios of :func:`scenario_metrics` (host floats)."""
    return {k: float(jnp.mean(v)) for k, v in metrics.items()}


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
    return MethodResult(_decision(x, width, depth, b, f, t_loc, t_edge), macs)


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
    _, t_edge = costs.inference_delays(sys_params, 0, policy_net.policy_macs(model.hidden), macs)
    return MethodResult(_decision(x, width, depth, b, f, jnp.zeros_like(t_edge), t_edge), macs)


def oracle(allocator, scn: Scenario, sys_params: SystemParams, variant: str = "full",
           offload: Array | None = None) -> MethodResult:
    """Oracle (beyond the paper): the Eq. 28 label used as the decision.

    (width, depth) = argmin of the mean C^edge over the offloaded tasks
    (inference delay included), found from one ``logits_all`` pass; edge
    inference delay lambda M_Alloc(k*, l*, n) / f_ser (the search itself is
    not counted: an idealised bound).
    """
    scn = system.as_scenario(scn)
    x = _all(scn) if offload is None else jnp.asarray(offload).astype(bool)
    la = allocator.logits_all(scn)
    width, depth, _ = costs.labels(allocator, la, scn, x, sys_params, variant=variant)
    return fixed_subnet(allocator, scn, sys_params, width, depth, offload=x)


def optimal(scn: Scenario, sys_params: SystemParams, offload: Array | None = None,
            special_cost: float = 1.0) -> MethodResult:
    """Optimal (beyond the paper): the KKT allocation of ``baselines.optimal_allocation``.

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
    return MethodResult(_decision(x, 1, 1, b, f, 0.0, t_edge),
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
    return MethodResult(_decision(res.offload, 1, 1, res.bandwidth, res.f_alloc,
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


def random_offload(key: Array, pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                   prob: float = 0.5) -> MethodResult:
    """Rand of Section V.B: offload each task with probability ``prob``, policy MoE allocation.

    No scheduler runs: local tasks pay no inference delay; offloaded ones pay
    lambda (M_Poli + M_Alloc(k, l, n)) / f_ser (M_Poli = 0 if ``pipe`` is a
    "fixed" pipeline).
    """
    scn = system.as_scenario(scn)
    x = jax.random.uniform(key, jnp.shape(scn.size)) < prob
    d = pipeline.decide_body(pipe, scn, sys_params, offload=x)
    macs = pipe.allocator.macs(d.width, d.depth, jnp.sum(x, -1))
    _, t_edge = costs.inference_delays(sys_params, 0, pipe.models.policy_macs, macs)
    return MethodResult(d._replace(inference_delay_local=jnp.zeros_like(t_edge),
                                   inference_delay_edge=t_edge), macs)


def fixed_with_scheduler(pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                         width=None, depth=None) -> MethodResult:
    """Fix MoE in the joint case (Section V.B): ``pipe``'s greedy scheduler, fixed sub-network.

    Offloading x = [p > 0.5] from ``pipe``'s scheduler; allocation by the
    sub-network (width, depth) (default the largest, (K, L)) for every
    scenario; inference delays (Eq. 34-35): local lambda M_Sced / f_ser,
    edge lambda (M_Sced + M_Alloc(width, depth, n)) / f_ser (no policy runs).
    """
    scn = system.as_scenario(scn)
    probs = scheduler_net.offload_probabilities(pipe.models.scheduler, pipe.scheduler_params, scn,
                                                pipe.allocator.scales)
    x = scheduler_net.greedy_actions(probs)
    return fixed_subnet(pipe.allocator, scn, sys_params, width, depth, offload=x,
                        scheduler_macs=pipe.models.scheduler_macs, scheduler_local=True)


def local_execution(scn: Scenario, sys_params: SystemParams) -> MethodResult:
    """Local execution of Section V.B: every task runs locally; no inference delay."""
    scn = system.as_scenario(scn)
    shape = jnp.shape(scn.size)
    zeros = jnp.zeros(shape, scn.size.dtype)
    return MethodResult(_decision(jnp.zeros(shape, bool), 1, 1, zeros, zeros, 0.0, 0.0),
                        jnp.zeros(shape[:-1], scn.size.dtype))


def greedy(scn: Scenario, sys_params: SystemParams, objective: str = "cost") -> MethodResult:
    """Greedy + KKT (beyond the paper): removal-only greedy offloading, optimal allocation.

    :func:`dynmec_jax.baselines.greedy.greedy_offloading` with ``objective``
    ("cost": Eq. 24-25; "delay": service delay only).  No inference delay
    (the greedy's run time is not modelled); no sub-network (width = depth
    = 1 in the decision, 0 allocator MACs).
    """
    scn = system.as_scenario(scn)
    g = greedy_lib.greedy_offloading(scn, sys_params, objective=objective)
    shape = g.offload.shape[:-1]
    return MethodResult(_decision(g.offload, 1, 1, g.bandwidth, g.f_alloc, 0.0, 0.0),
                        jnp.zeros(shape, g.bandwidth.dtype))


def exhaustive(scn: Scenario, sys_params: SystemParams) -> MethodResult:
    """Optimum (beyond the paper, N <= 12): the best of all 2^N offloading subsets.

    :func:`dynmec_jax.baselines.exhaustive.exhaustive_optimum` on sum_i C_i
    (Eq. 24-25) with the energy-aware exact allocation; no inference delay.
    """
    scn = system.as_scenario(scn)
    o = exhaustive_lib.exhaustive_optimum(scn, sys_params, objective="cost",
                                          allocation="energy_aware")
    shape = o.offload.shape[:-1]
    return MethodResult(_decision(o.offload, 1, 1, o.bandwidth, o.f_alloc, 0.0, 0.0),
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


# ----------------------------------------------------------------------------
# Convenience: all methods of a section
# ----------------------------------------------------------------------------

def section_va(key: Array, scn: Scenario, sys_params: SystemParams, allocator,
               policy_params: dict, static_allocator=None, fix_width_params=None,
               fix_depth_params=None, ga_iters: int | None = 200) -> dict:
    """Metrics (per scenario) of the Section V.A methods, ``{name: metrics}``.

    ``policy_params`` (variant "full"), ``fix_width_params`` and
    ``fix_depth_params`` (policies pre-trained with those variants; None
    skips the method), ``static_allocator`` (None skips "Static model"),
    ``ga_iters`` (None skips "GA").
    """
    scn = system.as_scenario(scn)
    out = {"PolicyMoE": policy_moe(allocator, policy_params, scn, sys_params),
           "Fix MoE": fixed_subnet(allocator, scn, sys_params),
           "Oracle": oracle(allocator, scn, sys_params),
           "Optimal": optimal(scn, sys_params)}
    if fix_width_params is not None:
        out["Fix width MoE"] = policy_moe(allocator, fix_width_params, scn, sys_params,
                                          "fix_width")
    if fix_depth_params is not None:
        out["Fix depth MoE"] = policy_moe(allocator, fix_depth_params, scn, sys_params,
                                          "fix_depth")
    if static_allocator is not None:
        out["Static model"] = static_model(static_allocator, scn, sys_params)
    if ga_iters is not None:
        out["GA"] = genetic(key, scn, sys_params, joint=False, n_iters=ga_iters)
    return {k: scenario_metrics(scn, v, sys_params) for k, v in out.items()}


def section_vb(key: Array, scn: Scenario, sys_params: SystemParams, pmrl: Pipeline,
               rl: Pipeline | None = None, ga_iters: int | None = 200) -> dict:
    """Metrics (per scenario) of the Section V.B methods, ``{name: metrics}``.

    ``pmrl``: the trained joint pipeline (also provides Rand's policy and
    allocator, and "Fix MoE"'s scheduler, :func:`fixed_with_scheduler`);
    ``rl``: the scheduler trained with the fixed largest allocator (None
    skips "RL"); ``ga_iters`` (None skips "GA").  "Greedy" is
    :func:`greedy` (greedy offloading + KKT allocation, beyond the paper).
    """
    scn = system.as_scenario(scn)
    k_rand, k_ga = jax.random.split(key)
    out = {"PMRL": pipeline_method(pmrl, scn, sys_params),
           "Fix MoE": fixed_with_scheduler(pmrl, scn, sys_params),
           "Rand": random_offload(k_rand, pmrl, scn, sys_params),
           "Local execution": local_execution(scn, sys_params),
           "Greedy": greedy(scn, sys_params)}
    if rl is not None:
        out["RL"] = pipeline_method(rl, scn, sys_params)
    if ga_iters is not None:
        out["GA"] = genetic(k_ga, scn, sys_params, joint=True, n_iters=ga_iters)
    return {k: scenario_metrics(scn, v, sys_params) for k, v in out.items()}
