"""One-flip local search over an offloading set (beyond the paper).

Starting from a given offloading set x^0 (e.g. the learned scheduler's,
:func:`dynmec_jax.evaluation.pipeline_search`), each round scores every set
that differs from the current one in one task (N candidates: one task moved
to the edge or back home), each under its optimal allocation of Eq. 25's
cost (:func:`~dynmec_jax.baselines.exhaustive.energy_aware_allocation`:
bandwidth and server CPU that minimise sum_{x_i = 1} C_i^edge, energy term
included), and moves to the cheapest if it lowers sum_i C_i (Eq. 24-25);
best improvement, at most ``max_rounds`` rounds (default N).  The result is
1-flip optimal: no single task can change side and lower the total.  It is
a pure ``lax.while_loop`` program (``jit``/``vmap``-able, one compilation
per N) that stops when a round moves no scenario of the batch.

Why (docs/reproduction.md, "Any cell"): in the cells where the any-cell
pipeline is furthest from the certified optimum, its offloading set under
the optimal allocation is as far, yet this search from that set ends within
0.05% of the optimum's cost in every cell measured (``results/any_cell.md``).

Inference delay.  :func:`search_ops` counts the operations of a deployed
search that stops when a round finds no better neighbour (the rounds that
moved, one more, each N + 1 allocations and costs; the final allocation),
the MAC-equivalents of Eq. 9, with the counting rule of
:func:`dynmec_jax.baselines.optimal.count_jaxpr_ops`.  Units: SI; costs as
in Eq. 24-25.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from dynmec_jax import system
from dynmec_jax.baselines.exhaustive import energy_aware_allocation, subset_value
from dynmec_jax.baselines.optimal import all_offloaded_ops, count_jaxpr_ops, counting_inputs
from dynmec_jax.system import Scenario, SystemParams

Array = Any


@struct.dataclass
class SearchResult:
    """Outcome of :func:`one_flip_search` (leading shape ``(...)``).

    Attributes:
      offload: the final set x_i, bool ``(..., N)``.
      bandwidth, f_alloc: its optimal allocation [Hz], [cycles/s] ``(..., N)``
        (0 for local tasks).
      cost: sum_i C_i of the final set (Eq. 24-25, with the given inference
        delays), ``(...)``.
      moves: rounds that changed the set, int32 ``(...)``.
    """

    offload: Array
    bandwidth: Array
    f_alloc: Array
    cost: Array
    moves: Array


def set_cost(scn: Scenario, offload: Array, sys_params: SystemParams,
             infer_local: Array = 0.0, infer_edge: Array = 0.0) -> Array:
    """sum_i C_i (Eq. 24-25) of ``offload (..., N)`` under its optimal allocation (Eq. 25's
    cost, :func:`~dynmec_jax.baselines.exhaustive.energy_aware_allocation`); local
    tasks pay ``infer_local``, offloaded ones ``infer_edge`` [s] (Eq. 34-35; scalars or
    ``(...)``, one per scenario)."""
    b, f = energy_aware_allocation(scn, offload, sys_params)
    return _value(scn, offload, b, f, sys_params, infer_local, infer_edge)


def _value(scn, offload, bandwidth, f_alloc, sys_params, infer_local, infer_edge):
    """sum_i C_i of a decision with per-scenario inference delays
    (:func:`~dynmec_jax.baselines.exhaustive.subset_value`, delays over the N tasks)."""
    return subset_value(scn, offload, bandwidth, f_alloc, sys_params,
                        jnp.asarray(infer_local)[..., None], jnp.asarray(infer_edge)[..., None])


def _round(scn, x, sys_params, infer_local, infer_edge):
    """One best-improvement round for one scenario ``(N,)``: ``(new set, moved)``."""
    n = x.shape[-1]
    flips = jnp.where(jnp.eye(n, dtype=bool), ~x[None, :], x[None, :])  # (N, N)
    cand = jnp.concatenate([x[None, :], flips])                         # current first
    costs = jax.vmap(lambda c: set_cost(scn, c, sys_params, infer_local, infer_edge))(cand)
    costs = jnp.where(costs < jnp.inf, costs, jnp.inf)                  # NaN: never picked
    j = jnp.argmin(costs)                     # ties keep the current set (index 0)
    pick = jnp.arange(n + 1) == j             # one-hot row select (counted ops, no gather)
    return jnp.any(cand & pick[:, None], axis=0), j > 0


def one_flip_search(scn: Scenario, offload: Array, sys_params: SystemParams, *,
                    max_rounds: int | None = None, infer_local: Array = 0.0,
                    infer_edge: Array = 0.0) -> SearchResult:
    """Best-improvement one-flip local search from ``offload`` (module doc).

    Args:
      scn: tasks, fields ``(..., N)``, SI units.
      offload: the starting set x^0, bool or 0/1 ``(..., N)``.
      sys_params: the system, one cell (scalar fields).
      max_rounds: rounds (static), default N.
      infer_local, infer_edge: T_l^infer and T_e^infer [s] (Eq. 34-35) of
        local and offloaded tasks, scalars or ``(...)``, used in the costs.
    Returns:
      :class:`SearchResult`.
    """
    scn = system.as_scenario(scn)
    x0 = jnp.broadcast_to(jnp.asarray(offload).astype(bool), jnp.shape(scn.size))
    batch = x0.shape[:-1]
    rounds = int(x0.shape[-1]) if max_rounds is None else int(max_rounds)
    if rounds < 0:
        raise ValueError(f"max_rounds must be >= 0, got {max_rounds}")
    flat = jax.tree.map(lambda a: jnp.reshape(a, (-1, a.shape[-1])), scn)
    il = jnp.broadcast_to(jnp.asarray(infer_local, jnp.float32), batch).reshape(-1)
    ie = jnp.broadcast_to(jnp.asarray(infer_edge, jnp.float32), batch).reshape(-1)
    step = jax.vmap(lambda s, x, a, e: _round(s, x, sys_params, a, e))

    def body(carry):
        x, moves, i, _ = carry
        x, moved = step(flat, x, il, ie)
        return x, moves + moved.astype(jnp.int32), i + 1, jnp.any(moved)

    x_flat = x0.reshape(-1, x0.shape[-1])
    x, moves, _, _ = jax.lax.while_loop(      # until no scenario moves (or max_rounds)
        lambda c: (c[2] < rounds) & c[3], body,
        (x_flat, jnp.zeros(x_flat.shape[0], jnp.int32), jnp.int32(0), jnp.bool_(True)))
    x = x.reshape(x0.shape)
    b, f = energy_aware_allocation(scn, x, sys_params)
    cost = _value(scn, x, b, f, sys_params, il.reshape(batch), ie.reshape(batch))
    return SearchResult(offload=x, bandwidth=jnp.where(x, b, 0.0), f_alloc=jnp.where(x, f, 0.0),
                        cost=cost, moves=moves.reshape(batch))


@functools.lru_cache(maxsize=256)
def round_ops(n_users: int) -> tuple[float, float]:
    """``(per_round, final)``: operations of one search round (N + 1 allocations and
    costs, the comparison) and of the final allocation, for one scenario of N users
    (MAC-equivalents for Eq. 9; counted on the traced program with the rule of
    :func:`~dynmec_jax.baselines.optimal.count_jaxpr_ops`).  Host side; cached."""
    n = int(n_users)
    if n < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    sp, scn = counting_inputs(n)
    x = jnp.ones((n,), bool)
    per_round = count_jaxpr_ops(jax.make_jaxpr(lambda s, c: _round(s, c, sp, 0.0, 0.0))(scn, x))
    return float(per_round), all_offloaded_ops(energy_aware_allocation, n)


def search_ops(n_users: int, moves):
    """Operations of a deployed search that stops when a round finds no better neighbour
    (Eq. 9's M): ``min(moves + 1, N) per_round + final`` (:func:`round_ops`; ``moves``
    from :attr:`SearchResult.moves`, may be traced)."""
    per_round, final = round_ops(n_users)
    return jnp.minimum(jnp.asarray(moves) + 1, n_users) * per_round + final
