"""Greedy offloading with the optimal allocation (beyond the paper; Section V.B baseline).

A strong non-learned scheduler for the joint problem of Section V.B: it
starts with every task offloaded, allocates bandwidth and server CPU
optimally (:func:`dynmec_jax.baselines.optimal_allocation`, the KKT optimum
of the importance-weighted delay, Eq. 1-2, 11h-11k, 19), and then repeats

1. compute every offloaded task's own cost at the edge, C_i^edge (Eq. 25),
   and locally, C_i^loc (Eq. 24);
2. keep at the edge only the tasks with C_i^edge < C_i^loc (every task that
   is cheaper locally leaves at once);
3. re-allocate optimally among the tasks still offloaded.

A task that has left never returns (removal only), so at most N rounds
change anything; the loop runs a fixed number of rounds (``n_iters``,
default N) and is a pure ``lax.fori_loop`` program: ``jit``/``vmap``-able,
one compilation per N.  At its fixed point no offloaded task would lower
its own cost by moving to local execution.

Variants measured in exploratory runs and not kept (Table II, N = 30, 1,024
scenarios; sum_i C_i, lower is better): this rule 472.3; removing only the worst task per
round 486.0; adding back, one per round, every local task that would lower
its own cost by returning (best-response dynamics to a Nash point of the
tasks' own costs) 485.9.  Returning tasks take shares from the others, so
the selfish fixed point costs more in total: at this rule's fixed point
about 16% of the local tasks (N = 30) would lower their *own* cost by
returning, and letting them does not pay (docs/reproduction.md).

``objective="delay"`` compares service delays only (T_i^edge against
T_i^loc, Eq. 3-4, with the inference delays), ignoring the energy term:
the delay-only variant.

Inference delay.  :func:`greedy_ops` counts the operations of a deployed
greedy that stops at its fixed point (the rounds that removed a task, one
more that finds none, each a KKT allocation and the tasks' own costs, then
the final allocation), the MAC-equivalents of Eq. 9: the Section V methods
charge every task lambda ``greedy_ops`` / f_ser (local tasks wait for the
decision too).  ``infer_local`` / ``infer_edge``
[s] add given Eq. 34-35 terms to the comparison and the value (default 0).
Units: SI; costs as in Eq. 24-25.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from dynmec_jax import system
from dynmec_jax.baselines.optimal import count_jaxpr_ops, counting_inputs, optimal_allocation
from dynmec_jax.system import Scenario, SystemParams

Array = Any

OBJECTIVES = ("cost", "delay")


@struct.dataclass
class GreedyResult:
    """The greedy decision for each scenario (leading shape ``(...)``).

    Attributes:
      offload: x, bool ``(..., N)``.
      bandwidth: b_i [Hz], ``(..., N)`` (0 where local).
      f_alloc: f_i [cycles/s], ``(..., N)`` (0 where local).
      cost: sum_i C_i (Eq. 24-25) of the decision, ``(...)`` (cost units).
      rounds: rounds that removed at least one task, int32 ``(...)``.
    """

    offload: Array
    bandwidth: Array
    f_alloc: Array
    cost: Array
    rounds: Array


def _check(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def own_costs(scn: Scenario, offload: Array, bandwidth: Array, f_alloc: Array,
              sys_params: SystemParams, infer_local: Array = 0.0, infer_edge: Array = 0.0,
              objective: str = "cost") -> tuple[Array, Array]:
    """``(edge, local)`` per task, ``(..., N)``: what the greedy compares.

    ``objective="cost"``: C_i^edge (Eq. 25) with the given allocation and
    C_i^loc (Eq. 24), cost units.  ``"delay"``: T_e^infer + T_i^edge (Eq. 3)
    and T_l^infer + T_i^loc (Eq. 4) [s].  The edge value of a task that is
    not offloaded is +inf (it has no allocation).
    """
    x = jnp.asarray(offload).astype(bool)
    b = jnp.where(x, bandwidth, 1.0)
    f = jnp.where(x, f_alloc, 1.0)
    if objective == "cost":
        edge = system.cost_edge(scn, b, f, sys_params, infer_edge)
        local = system.cost_local(scn, sys_params, infer_local)
    else:
        edge = infer_edge + system.edge_delay(scn.size, scn.workload, scn.distance, b, f,
                                              sys_params)
        local = infer_local + system.local_delay(scn.workload, scn.size, scn.f_local)
    edge = jnp.where(x, edge, jnp.inf)
    return edge, jnp.broadcast_to(local, jnp.shape(edge))


def greedy_offloading(scn: Scenario, sys_params: SystemParams, *, objective: str = "cost",
                      n_iters: int | None = None,
                      infer_local: Array = 0.0, infer_edge: Array = 0.0) -> GreedyResult:
    """Removal-only greedy offloading with the KKT allocation (module doc).

    Args:
      scn: tasks, fields ``(..., N)`` (NumPy or JAX), SI units.
      sys_params: the system (traced fields are fine).
      objective: ``"cost"`` (Eq. 24-25) or ``"delay"`` (service delay only).
      n_iters: rounds (static); default N, enough to reach the fixed point
        (each round that changes anything removes at least one task).
      infer_local, infer_edge: T_l^infer and T_e^infer [s] (Eq. 34-35) used
        in the comparison and in ``cost`` (default 0: no inference delay).
    Returns:
      :class:`GreedyResult`; ``cost`` is sum_i C_i with the same inference
      delays.
    """
    _check(objective)
    scn = system.as_scenario(scn)
    shape = jnp.shape(scn.size)
    rounds_max = int(shape[-1]) if n_iters is None else int(n_iters)
    if rounds_max < 0:
        raise ValueError(f"n_iters must be >= 0, got {n_iters}")

    def body(_, carry):
        return _round(scn, carry, sys_params, infer_local, infer_edge, objective)

    x0 = jnp.ones(shape, bool)
    x, rounds = jax.lax.fori_loop(0, rounds_max, body,
                                  (x0, jnp.zeros(shape[:-1], jnp.int32)))
    return _finish(scn, x, rounds, sys_params, infer_local, infer_edge)


def _round(scn, carry, sys_params, infer_local, infer_edge, objective):
    """One removal round: allocate, compare own costs, drop every task cheaper locally."""
    x, rounds = carry
    b, f = optimal_allocation(scn, x, sys_params)
    edge, local = own_costs(scn, x, b, f, sys_params, infer_local, infer_edge, objective)
    excess = jnp.where(x, edge - local, -jnp.inf)
    worse = x & ~(excess < 0)          # NaN/inf edge costs leave too
    changed = jnp.any(worse, axis=-1)
    return x & ~worse, rounds + changed.astype(jnp.int32)


def _finish(scn, x, rounds, sys_params, infer_local, infer_edge) -> GreedyResult:
    """The final allocation of the offloaded set and sum_i C_i."""
    b, f = optimal_allocation(scn, x, sys_params)
    c_edge = system.cost_edge(scn, jnp.where(x, b, 1.0), jnp.where(x, f, 1.0), sys_params,
                              infer_edge)
    c_loc = system.cost_local(scn, sys_params, infer_local)
    cost = jnp.sum(jnp.where(x, c_edge, c_loc), axis=-1)
    return GreedyResult(offload=x, bandwidth=jnp.where(x, b, 0.0),
                        f_alloc=jnp.where(x, f, 0.0), cost=cost, rounds=rounds)


@functools.lru_cache(maxsize=256)
def round_ops(n_users: int, objective: str = "cost") -> tuple[float, float]:
    """``(per_round, final)``: operations of one removal round and of the final allocation
    (MAC-equivalents for Eq. 9), for one scenario of N users.

    Counted on the traced program with the rule of
    :func:`dynmec_jax.baselines.optimal.count_jaxpr_ops` (each add, multiply,
    compare, select, exp, log or divide counts 1 per element).  A round is
    the KKT allocation of the offloaded set, the tasks' own costs and the
    comparison; the final step allocates the last set and sums C_i.  Host
    side; cached.
    """
    _check(objective)
    n = int(n_users)
    if n < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    sp, scn = counting_inputs(n)
    carry = (jnp.ones((n,), bool), jnp.zeros((), jnp.int32))
    per_round = count_jaxpr_ops(jax.make_jaxpr(
        lambda s, c: _round(s, c, sp, 0.0, 0.0, objective))(scn, carry))
    final = count_jaxpr_ops(jax.make_jaxpr(
        lambda s, x, r: _finish(s, x, r, sp, 0.0, 0.0))(scn, carry[0], carry[1]))
    return float(per_round), float(final)


def greedy_ops(n_users: int, rounds, objective: str = "cost"):
    """Operations of a deployed greedy that stops at its fixed point (Eq. 9's M).

    ``rounds``: the rounds that removed a task (:attr:`GreedyResult.rounds`,
    may be traced, ``(...)``); a deployed greedy runs them plus one round
    that finds nothing to remove (at most N in all), then the final
    allocation: ``min(rounds + 1, N) per_round + final`` (:func:`round_ops`).
    ``lambda greedy_ops / f_ser`` is its inference delay [s].
    """
    per_round, final = round_ops(n_users, objective)
    return jnp.minimum(jnp.asarray(rounds) + 1, n_users) * per_round + final
