"""The true optimum of joint offloading + allocation for small N, by enumeration.

"Beyond the paper": the offloading problem of Eq. 11 over x in {0, 1}^N
(Eq. 11b) is combinatorial, and the paper only compares learned schedulers
with heuristics (GA, random, all-local).  For N <= 12 users the 2^N subsets
can simply all be tried.  For each subset the allocation (Eq. 11h-11k) is the
exact KKT optimum of :func:`dynmec_jax.baselines.optimal_allocation`, computed
for every subset at once (``vmap`` over subsets, chunked with
``lax.map(batch_size=...)`` when the batch is large), and the best subset is
kept.  The result is a lower bound for every scheduler that allocates by the
weighted delay, and the reference against which the scheduling network
(Eq. 21-27) can be measured.

Objectives (the value of one subset x with allocation (b, f)):

* ``"cost"``: the scheduler's objective sum_i C_i with C_i = C_i^edge (Eq. 25,
  with inference delay T_e^infer = ``infer_edge``) if x_i = 1 and
  C_i^loc (Eq. 24, with T_l^infer = ``infer_local``) if x_i = 0.  Units: the
  paper's mix, alpha w T (w [1/s], T [s]) + beta E [J].
* ``"eq11a"``: Eq. 11a, sum_i alpha delay_i + beta E_i + delta miss_i
  (``system.objective`` over ``system.task_outcomes``), with the same
  inference delays.

Which allocation is optimal (``allocation=``):

* ``"weighted_delay"`` (default): ``optimal_allocation``, the exact minimiser
  of sum_{x_i = 1} w_i (T_tra_i + T_com_i).  For a fixed subset, sum_{x_i = 1}
  C_i^edge = alpha sum w_i (T^infer + T_tra + T_com) + beta p sum T_tra, so
  this allocation is the exact optimum of the weighted-delay part of the
  "cost" objective only; the energy term beta p T_tra (beta p = 0.01 W at
  Table II values, next to alpha w_i ~ 1e3 per second) is ignored by the
  allocation (it is counted in the value).  It can raise the cost above the
  true optimum by at most beta p sum_{x_i = 1} T_tra_i (the energy term of
  the returned allocation, see :func:`energy_term_bound`); measured at Table II
  values (N = 10, 64 scenarios, ``benchmarks/exhaustive.py``) the actual gap
  is about 1e-9 relative (float64), far below float32 rounding.
  For ``"eq11a"`` the allocation is optimal for the weighted delay, not for
  Eq. 11a (which weighs delays without w_i and counts deadline misses), so
  the value there is the best subset *under this allocation rule*, not the
  optimum of Eq. 11a over (x, b, f).
* ``"energy_aware"``: :func:`energy_aware_allocation`, the exact minimiser of
  sum_{x_i = 1} C_i^edge including the energy term (bandwidth weights
  w_i + beta p / alpha), which makes the ``"cost"`` result the exact optimum of
  sum_i C_i over (x, b, f) (up to the ``EPS_WEIGHT`` floor of
  ``optimal_allocation``, which only binds for weight-0 users).

Everything is a pure function of arrays; ``exhaustive_optimum`` can be
``jit``-ed (with ``objective``, ``allocation``, ``return_all``,
``max_users``, ``chunk_size`` and a callable ``infer_edge`` static) and
``vmap``-ed over scenarios.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dynmec_jax import system
from dynmec_jax.baselines.optimal import optimal_allocation
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: Largest N enumerated by default: 2^12 = 4,096 subsets per scenario.
MAX_USERS = 12

#: Auto chunking: at most this many (subset x scenario x user) elements per
#: vmapped chunk of subsets (a few hundred MB of float32 temporaries at most).
CHUNK_ELEMENTS = 2 ** 20

OBJECTIVES = ("cost", "eq11a")
ALLOCATIONS = ("weighted_delay", "energy_aware")


@struct.dataclass
class ExhaustiveResult:
    """The best offloading subset and its allocation, for each scenario.

    Attributes:
      offload: x*, the best subset, bool ``(..., N)``.
      bandwidth: its bandwidth allocation [Hz], ``(..., N)`` (0 where local).
      f_alloc: its server CPU allocation [cycles/s], ``(..., N)`` (0 where local).
      value: the objective at the optimum, ``(...)`` (units of the objective).
      all_values: the objective of every subset, ``(..., 2^N)``, in the order
        of :func:`subset_masks` (row k offloads user i iff bit i of k is set);
        ``None`` unless ``return_all=True``.
    """

    offload: Array
    bandwidth: Array
    f_alloc: Array
    value: Array
    all_values: Array | None = None


def subset_masks(n_users: int) -> np.ndarray:
    """All 2^N offloading decisions x in {0, 1}^N (Eq. 11b), as a NumPy array.

    Returns a bool array of shape ``(2^N, N)`` whose row k has x_i = bit i of
    k: row 0 is all-local, row 2^N - 1 is all-offloaded.
    """
    if n_users < 0:
        raise ValueError(f"n_users must be >= 0, got {n_users}")
    codes = np.arange(2 ** n_users, dtype=np.int64)[:, None]
    return ((codes >> np.arange(n_users, dtype=np.int64)) & 1).astype(bool)


def energy_aware_allocation(scn: Scenario, offload_mask: Array,
                            sys_params: SystemParams) -> tuple[Array, Array]:
    """Exact minimiser of sum_{x_i = 1} C_i^edge (Eq. 25) incl. the energy term.

    sum_i C_i^edge = alpha sum_i [(w_i + beta p / alpha) T_tra_i + w_i T_com_i]
    + const, so the CPU share is ``optimal_allocation``'s (weights w_i) and the
    bandwidth is the KKT optimum with weights w_i + beta p / alpha (p the
    transmit power [W]; with alpha = 0 the cost is beta p sum T_tra and the
    weights are 1).  ``optimal_allocation`` takes its weights from the
    scenario through Eq. 19, and its bandwidth solve depends on the scenario
    only through w_i s_i and the distances; so the new weights are passed as
    a scenario whose workload is rescaled so that Eq. 19 returns them
    (deadline at the floor d_min, workload c_avg d_min w'_i / (gamma s_i /
    s_avg)).  Users with size 0 need no bandwidth and get none.

    Args:
      scn: the tasks, fields ``(..., N)``, SI units.
      offload_mask: x_i, bool or 0/1, broadcastable to ``(..., N)``.
      sys_params: the system.
    Returns:
      ``(bandwidth [Hz], f_alloc [cycles/s])``, each ``(..., N)``.
    """
    scn = system.as_scenario(scn)
    _, f_alloc = optimal_allocation(scn, offload_mask, sys_params)
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    has_alpha = sys_params.alpha > 0
    w_tx = jnp.where(has_alpha,
                     w + sys_params.beta * sys_params.tx_power
                     / jnp.where(has_alpha, sys_params.alpha, 1.0),
                     1.0)
    s_norm = scn.size / sys_params.size_avg
    ok = s_norm > 0
    workload_tx = jnp.where(
        ok, sys_params.workload_avg * sys_params.deadline_min * w_tx
        / (sys_params.importance_scale * jnp.where(ok, s_norm, 1.0)), 0.0)
    scn_tx = Scenario(size=scn.size, workload=workload_tx,
                      deadline=jnp.broadcast_to(sys_params.deadline_min, jnp.shape(scn.size)),
                      distance=scn.distance, f_local=scn.f_local)
    bandwidth, _ = optimal_allocation(scn_tx, offload_mask, sys_params)
    return bandwidth, f_alloc


def energy_term_bound(scn: Scenario, offload: Array, bandwidth: Array,
                      sys_params: SystemParams) -> Array:
    """beta p sum_{x_i = 1} T_tra_i (Eq. 1, 5): bound on the energy term's effect.

    For a fixed subset, the "cost" value with the weighted-delay allocation
    exceeds the exact optimum of sum_i C_i (energy term included) by at most
    this amount: the weighted-delay part is minimal at that allocation, and
    the energy part is >= 0 everywhere.  Shape ``(...)``, units of the cost.
    """
    scn = system.as_scenario(scn)
    x = jnp.asarray(offload).astype(bool)
    t_tra = jnp.where(x, system.transmission_delay(
        scn.size, jnp.where(x, bandwidth, 1.0), scn.distance, sys_params), 0.0)
    return sys_params.beta * jnp.sum(system.edge_energy(t_tra, sys_params), axis=-1)


def subset_value(scn: Scenario, offload: Array, bandwidth: Array, f_alloc: Array,
                 sys_params: SystemParams, infer_local: Array = 0.0, infer_edge: Array = 0.0,
                 objective: str = "cost") -> Array:
    """The objective of one decision (x, b, f), summed over tasks, shape ``(...)``.

    ``"cost"``: sum_i [x_i C_i^edge (Eq. 25) + (1 - x_i) C_i^loc (Eq. 24)];
    ``"eq11a"``: Eq. 11a (alpha delay + beta energy + delta miss).
    ``infer_edge`` / ``infer_local``: T_e^infer / T_l^infer [s] (Eq. 35 / 34),
    broadcastable to ``(..., N)``.  The allocation of local users is ignored
    (double-``where``: a local user's 0 bandwidth never enters Eq. 1).
    """
    _check_objective(objective)
    scn = system.as_scenario(scn)
    x = jnp.broadcast_to(jnp.asarray(offload).astype(bool), jnp.shape(scn.size))
    if objective == "cost":
        c_edge = system.cost_edge(scn, jnp.where(x, bandwidth, 1.0), jnp.where(x, f_alloc, 1.0),
                                  sys_params, infer_edge=infer_edge)
        c_loc = system.cost_local(scn, sys_params, infer_local=infer_local)
        return jnp.sum(jnp.where(x, c_edge, c_loc), axis=-1)
    out = system.task_outcomes(scn, x, bandwidth, f_alloc, sys_params,
                               infer_edge=infer_edge, infer_local=infer_local)
    return system.objective(out, sys_params)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def _allocator(allocation: str) -> Callable:
    if allocation == "weighted_delay":
        return optimal_allocation
    if allocation == "energy_aware":
        return energy_aware_allocation
    raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")


def _infer_edge_table(infer_edge, n_users: int) -> Array:
    """(N + 1, ...) table of T_e^infer [s] by number of offloaded users.

    A callable is called on the host (at trace time) with each Python int
    n = 0..N; a constant is repeated.
    """
    if callable(infer_edge):
        rows = [jnp.asarray(infer_edge(n), dtype=jnp.result_type(float))
                for n in range(n_users + 1)]
    else:
        rows = [jnp.asarray(infer_edge, dtype=jnp.result_type(float))] * (n_users + 1)
    return jnp.stack(jnp.broadcast_arrays(*rows))


def exhaustive_optimum(scn: Scenario, sys_params: SystemParams, infer_local: Array = 0.0,
                       infer_edge: Array | Callable[[int], Array] = 0.0,
                       objective: str = "cost", *, allocation: str = "weighted_delay",
                       return_all: bool = False, max_users: int = MAX_USERS,
                       chunk_size: int | None = None) -> ExhaustiveResult:
    """The best of all 2^N offloading subsets, each with its optimal allocation.

    For every x in {0, 1}^N (:func:`subset_masks`) the allocation (b, f) is
    computed by ``optimal_allocation`` (exact minimiser of the importance-
    weighted delay sum_{x_i = 1} w_i (T_tra + T_com), Eq. 1, 2, 19, 11h-11k)
    or, with ``allocation="energy_aware"``, by :func:`energy_aware_allocation`,
    and the objective is evaluated (:func:`subset_value`); the subset with the
    smallest value is returned (ties: the lowest subset index; NaN counts as
    +inf).  With ``objective="cost"`` and the default allocation the result is
    the exact optimum of the weighted-delay part of sum_i C_i (Eq. 24-25); the
    energy term beta p T_tra it leaves out of the allocation can move the
    value by at most :func:`energy_term_bound` (measured ~1e-9 relative at
    Table II values).  With ``objective="eq11a"`` the allocation is optimal
    for the weighted delay, not for Eq. 11a.  See the module docstring.

    Args:
      scn: one scenario (fields ``(N,)``) or a batch (``(..., N)``), SI units;
        NumPy or JAX arrays.
      sys_params: the system (traced float fields are fine).
      infer_local: T_l^infer [s] (Eq. 34), paid by local tasks; broadcastable
        to ``(..., N)``.
      infer_edge: T_e^infer [s] (Eq. 35), paid by offloaded tasks: an array
        broadcastable to ``(..., N)``, or a callable ``n_served -> delay``
        called on the host with each Python int n = 0..N (the number of
        offloaded users of the subset; e.g. an allocator's inference delay,
        which depends on how many users it serves) and returning an array
        broadcastable to ``(..., N)``.
      objective: ``"cost"`` (sum of Eq. 24/25) or ``"eq11a"`` (Eq. 11a).
      allocation: ``"weighted_delay"`` or ``"energy_aware"`` (above).
      return_all: also return every subset's value (``all_values``).
      max_users: largest N accepted (default 12, i.e. 4,096 subsets).
      chunk_size: subsets per vmapped chunk (``lax.map`` batch size); None
        picks one so that a chunk holds about ``CHUNK_ELEMENTS`` elements.

    Returns:
      :class:`ExhaustiveResult` with leading shape ``(...)``.

    Raises:
      ValueError: if N < 1 or N > ``max_users``, or an option is unknown.
    """
    _check_objective(objective)
    alloc = _allocator(allocation)
    scn = system.as_scenario(scn)
    shape = jnp.shape(scn.size)
    if len(shape) < 1:
        raise ValueError("scenario fields must have shape (..., N)")
    n_users = int(shape[-1])
    if n_users < 1:
        raise ValueError(f"need N >= 1 users, got N = {n_users}")
    if n_users > max_users:
        raise ValueError(
            f"exhaustive search over 2^N subsets is limited to N <= {max_users} users "
            f"(max_users), got N = {n_users}")

    masks_np = subset_masks(n_users)
    n_subsets = masks_np.shape[0]
    masks = jnp.asarray(masks_np)
    n_served = jnp.asarray(masks_np.sum(axis=1), dtype=jnp.int32)
    table = _infer_edge_table(infer_edge, n_users)

    def one_subset(args):
        mask, n = args
        bandwidth, f_alloc = alloc(scn, mask, sys_params)
        value = subset_value(scn, mask, bandwidth, f_alloc, sys_params, infer_local=infer_local,
                             infer_edge=table[n], objective=objective)
        return jnp.where(jnp.isnan(value), jnp.inf, value)

    batch = int(math.prod(shape[:-1]))
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // max(1, batch * n_users))
    if chunk_size >= n_subsets:
        values = jax.vmap(one_subset)((masks, n_served))            # (2^N, ...)
    else:
        values = jax.lax.map(one_subset, (masks, n_served), batch_size=int(chunk_size))

    best = jnp.argmin(values, axis=0)                                # (...)
    offload = masks[best]                                            # (..., N)
    bandwidth, f_alloc = alloc(scn, offload, sys_params)
    value = jnp.take_along_axis(values, best[None], axis=0)[0]
    all_values = jnp.moveaxis(values, 0, -1) if return_all else None
    return ExhaustiveResult(offload=offload, bandwidth=bandwidth, f_alloc=f_alloc,
                            value=value, all_values=all_values)
