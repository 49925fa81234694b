"""The certified optimum of joint offloading + allocation for any N (beyond the paper).

:func:`dynmec_jax.baselines.exhaustive.exhaustive_optimum` tries all 2^N
offloading subsets and stops at N = 12.  This module finds the same optimum
for any N, with a proven lower bound, by outer approximation with the MILP
solver SCIP (``pyscipopt``, an optional extra: ``pip install -e '.[exact]'``).

The problem (one scenario of N tasks; Eq. 11b, 11h-11k with the costs of
Eq. 24-25)::

    min_{x, b, f}  sum_i (1 - x_i) C_i^loc + x_i C_i^edge(b_i, f_i)
    s.t.           x in {0, 1}^N,  b, f >= 0,  sum_i b_i <= b_max,  sum_i f_i <= f_ser,

with C_i^loc = alpha w_i (T_l^infer + c_i s_i / f_i^loc) + beta mu c_i s_i (f_i^loc)^2
(Eq. 4, 6, 24, 34) and C_i^edge = alpha w_i (T_e^infer + T_tra_i(b_i) +
c_i s_i / f_i) + beta p T_tra_i(b_i) (Eq. 1, 2, 5, 25, 35), w_i of Eq. 19.

Structure.  For a fixed offload set S the problem is convex and separates:

* CPU (Eq. 2): min sum_{i in S} alpha w_i c_i s_i / f_i over sum f_i <= f_ser
  is (sum_{i in S} sqrt(q_i))^2 / f_ser with q_i = alpha w_i c_i s_i, at
  f_i proportional to sqrt(q_i);
* bandwidth (Eq. 1): with shares y_i = b_i / b_max, each task pays
  g_i(y_i) = (alpha w_i + beta p) T_tra_i(y_i b_max), convex and decreasing,
  and the shares satisfy sum_{i in S} y_i <= 1.

:func:`set_allocation` computes that optimum exactly in float64 (the CPU in
closed form, the bandwidth by a joint Newton solve of its KKT system, the
same log-space system as :mod:`dynmec_jax.baselines.optimal`), and
:func:`set_cost` its value.  The same allocation (up to float rounding) is
``exhaustive.energy_aware_allocation``.

Outer approximation.  The MILP has binaries x_i, continuous shares
y_i in [0, 1] with y_i <= x_i and sum_i y_i <= 1, one epigraph variable t_i
per task for its bandwidth term and one, u, for the CPU term.  Each t_i is
bounded below by tangents of g_i written in perspective form::

    t_i >= g_i(y0) x_i + g_i'(y0) (y_i - y0 x_i)        (one cut per point y0).

For x_i = 1 this is the tangent of the convex g_i at y0, so t_i >= g_i(y_i)
is relaxed, never cut off; for x_i = 0 the constraint y_i <= x_i forces
y_i = 0 and the cut reads t_i >= 0, the true (zero) term.  The CPU term is
u >= (sum_i sqrt(q_i) x_i)^2 / f_ser, bounded below by the tangents of the
convex z -> z^2 / f_ser at points z0 (linear in x).  Every feasible (x, b, f)
of the original problem therefore has a MILP point with the same x and an
objective no larger, so the MILP optimum (SCIP's dual bound when it stops
early) is a lower bound of the true optimum, and so is sum_i
min(C_i^loc, edge floor_i) (below), the bound before any MILP.  Any x evaluated with its exact
allocation gives an upper bound.  The loop

1. solves the MILP (warm-started with the best known decision as an
   incumbent) -> lower bound LB and a candidate x;
2. computes the exact allocation of x -> upper bound UB (kept if better);
3. adds tangents at x's optimal shares y*(x) and at its z(x) (and at the
   MILP's own shares), and repeats,

until (UB - LB) / UB <= ``tol`` or the time limit.  It terminates: once
tangents at the exact optimum of a set x are present, the MILP value of x
is at least its true cost (the tangent plane at the KKT point is supported
by the same multiplier), so no set is ever returned twice with a value
below its cost, and there are finitely many sets.  The first MILP is seeded
with tangents at the shares of the all-offloaded allocation and of the
greedy removal heuristic's set (as ``baselines.greedy_offloading``, float64),
on a geometric grid of shares from the all-offloaded ones up to 1, and on a
grid of CPU loads; the better of the two sets is the first incumbent.
(Measured, Table II, 8 scenarios: this seeding halves the MILP solves of a
cold start from the all-offloaded set; adding a 1-flip local search from the
greedy's set saves a few more solves but costs more time than it saves.)

Tasks that are never worth offloading are fixed local before the MILP:
if C_i^loc <= alpha w_i T_e^infer + g_i(1) + q_i / f_ser (the edge cost
with the whole bandwidth and the whole server), any solution offloading i
costs no less with i local (its resources freed), so x_i = 0 loses nothing.
This includes every task with size or workload 0 (C_i^loc = 0).

Numerics.  Everything is float64 NumPy on the host (float32 would leave a
~1e-7 relative error, too close to the certificate's 1e-6 default
tolerance and far above the ~1e-15 gaps it usually reaches): Eq. 1 in
log space as in :mod:`dynmec_jax.system`, the KKT solve iterated to
convergence (|step| < 1e-13).  The MILP's objective is
divided by the first upper bound over the number of free tasks, so each
task's term is O(1) and SCIP's feasibility tolerance, tightened to 1e-8
(``FEASTOL``), is relative to the terms (measured: the bound never exceeded
the returned cost by more than 2e-15 relative, N = 10 ... 100, five
cells).  The lower bound is therefore proven up to SCIP's
floating-point tolerances (it is not an exact rational certificate); a
bound a few ulps above the returned cost is clipped to it.  The reported
``cost`` is sum_i C_i of the returned (x, b, f) recomputed with the same
formulas as ``system.cost_local`` / ``system.cost_edge`` (float64).

Everything runs one scenario at a time on the host CPU (SCIP in a single
thread); no JAX, no global state.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, NamedTuple

import numpy as np

from dynmec_jax import checks
from dynmec_jax.system import Scenario, SystemParams

Array = Any

LN2 = math.log(2.0)

#: Raised (as ``ImportError``) when pyscipopt is not installed.
MISSING_EXTRA = "dynmec_jax.baselines.exact needs pyscipopt: pip install -e '.[exact]'"

#: Status values of :class:`ExactResult`.
STATUSES = ("optimal", "time_limit", "stalled")

#: Convergence threshold of the bandwidth KKT Newton solve (in log SNR).
NEWTON_TOL = 1e-13
#: Largest number of Newton steps of the bandwidth solve.
NEWTON_MAX = 100
#: SCIP's feasibility tolerance (default 1e-6): tight, so that the MILP's bound is
#: accurate far below ``tol``.  On an unstable LP SCIP retries at 1e-3 times this;
#: SoPlex then uses 1e-10 and may print a one-line (harmless) warning to stdout,
#: which SCIP's silenced output does not cover.
FEASTOL = 1e-8
#: Smallest share at which a tangent cut is placed (shares below are clipped).
MIN_SHARE = 1e-9
#: Tangent points closer than this (relative) to an existing one are skipped.
DUPLICATE_RTOL = 1e-9
#: Points of the initial CPU-load grid.
CPU_GRID = 24
#: Factor between successive points of the initial share grid (per task).
SHARE_GRID_FACTOR = 1.6


class ExactResult(NamedTuple):
    """The certified optimum of each scenario (NumPy arrays, leading shape ``(...)``).

    Attributes:
      offload: x, bool ``(..., N)``.
      bandwidth: b_i [Hz], ``(..., N)``, 0 where local; sum <= b_max.
      f_alloc: f_i [cycles/s], ``(..., N)``, 0 where local; sum <= f_ser.
      cost: sum_i C_i (Eq. 24-25) of (x, b, f), float64 ``(...)``: the upper
        bound.
      lower_bound: a proven lower bound of the optimum of sum_i C_i over all
        (x, b, f), float64 ``(...)``.
      gap: (cost - lower_bound) / cost, float64 ``(...)`` (0 when cost is 0).
      status: str ``(...)``: ``"optimal"`` when gap <= tol (the decision is
        optimal within tol); ``"time_limit"`` when the time limit stopped the
        loop first (the bounds are the best found, still valid);
        ``"stalled"`` when the MILP repeats a decision it has already been
        given every tangent for without closing the gap: SCIP's precision is
        reached (seen only with ``tol`` below ~1e-9, at gaps ~2e-10); the
        bounds are still valid.
      seconds: wall time per scenario [s], float64 ``(...)``.
      iterations: MILP solves per scenario, int ``(...)``.
    """

    offload: np.ndarray
    bandwidth: np.ndarray
    f_alloc: np.ndarray
    cost: np.ndarray
    lower_bound: np.ndarray
    gap: np.ndarray
    status: np.ndarray
    seconds: np.ndarray
    iterations: np.ndarray


def _import_scip():
    """pyscipopt, imported lazily; ``ImportError(MISSING_EXTRA)`` if it is absent."""
    try:
        import pyscipopt
    except ImportError as e:
        raise ImportError(MISSING_EXTRA) from e
    return pyscipopt


# ---------------------------------------------------------------------------
# Per-task constants and the transmission term of Eq. 1 in float64.
# ---------------------------------------------------------------------------
class _Tasks(NamedTuple):
    """Float64 constants of one scenario's tasks, each ``(N,)`` (module doc)."""

    size: np.ndarray        # s_i [bits]
    log_k: np.ndarray       # log K_i, K_i = g_0 (l_0/l_i)^h p / sigma_0 [Hz]
    tx_weight: np.ndarray   # A_i = alpha w_i + beta p: g_i(y) = A_i T_tra_i(y b_max)
    cpu: np.ndarray         # q_i = alpha w_i c_i s_i: CPU term q_i / f_i
    cpu_share: np.ndarray   # w_i c_i s_i: the CPU split is proportional to its sqrt
    c_local: np.ndarray     # C_i^loc (Eq. 24)
    c_edge0: np.ndarray     # alpha w_i T_e^infer (the constant part of Eq. 25)
    b_max: float
    f_ser: float


def _tasks(scn: Scenario, sp: SystemParams, infer_local, infer_edge) -> _Tasks:
    """The constants of :class:`_Tasks` for one scenario (fields ``(N,)``, float64)."""
    s, c, d, dist, f_loc = (np.asarray(getattr(scn, k), np.float64) for k in
                            ("size", "workload", "deadline", "distance", "f_local"))
    alpha, beta = float(sp.alpha), float(sp.beta)
    d_min = float(sp.deadline_min)
    w = (float(sp.importance_scale) * (c / float(sp.workload_avg))
         * (s / float(sp.size_avg)) / np.where(d > d_min, d, d_min))          # Eq. 19
    log_k = (math.log(sp.path_loss_const) + float(sp.path_loss_exp)
             * (math.log(sp.ref_distance) - np.log(dist))
             + math.log(sp.tx_power) - math.log(sp.noise_psd))
    work = c * s
    t_loc = np.where(f_loc > 0, work / np.where(f_loc > 0, f_loc, 1.0), 0.0)     # Eq. 4
    c_local = (alpha * w * (infer_local + t_loc)
               + beta * float(sp.energy_coeff) * work * f_loc ** 2)              # Eq. 24
    return _Tasks(size=s, log_k=log_k, tx_weight=alpha * w + beta * float(sp.tx_power),
                  cpu=alpha * w * work, cpu_share=w * work, c_local=c_local,
                  c_edge0=alpha * w * infer_edge, b_max=float(sp.bandwidth_max),
                  f_ser=float(sp.f_server))


def _log1p_exp(z):
    """log(1 + e^z), stable for every real z (softplus)."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _g1(log_x):
    """ln(1 + x) - x / (1 + x) at x = e^log_x, without cancellation for small x."""
    e = np.exp(-np.abs(log_x))
    u = np.where(log_x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))      # x / (1 + x)
    small = u < 0.05
    us = np.where(small, u, 0.0)
    series = np.zeros_like(us)
    for k in range(13, 1, -1):                                      # sum_{k>=2} u^k / k
        series = (series + 1.0 / k) * us
    series = series * us
    return np.where(small, series, _log1p_exp(log_x) - u)


def _tx_term(size, log_k, weight, b_max: float, share):
    """(g(y), g'(y)) per task at the shares ``y`` (> 0): g(y) = weight T_tra(y b_max) (Eq. 1).

    With the rate r(b) = b log2(1 + K/b) and x = K / b: g = weight s / r(y b_max) and
    g' = -weight s b_max r'(b) / r(b)^2, r'(b) = (ln(1+x) - x/(1+x)) / ln 2.
    All arguments broadcast; ``weight`` = alpha w_i + beta p (Eq. 25).
    """
    b = share * b_max
    log_x = log_k - np.log(b)
    rate = b * _log1p_exp(log_x) / LN2
    g = weight * size / rate
    dg = -g * b_max * (_g1(log_x) / LN2) / rate
    return g, dg


# ---------------------------------------------------------------------------
# The exact allocation of a fixed offload set.
# ---------------------------------------------------------------------------
def _psi(t):
    """psi(t) = log phi(e^t) and psi'(t) of the bandwidth KKT system (see optimal.py)."""
    e = np.exp(-np.abs(t))
    u = np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    log1px = np.maximum(t, 0.0) + np.log1p(e)
    small = u < 0.05
    us = np.where(small, u, 0.0)
    s1 = np.full_like(us, 1.0 / 13.0)
    for k in range(12, 1, -1):
        s1 = 1.0 / k + us * s1                                   # sum_{k>=2} u^(k-2) / k
    s2 = 1.0 + us * s1
    psi_s = 2.0 * t + math.log(LN2) + np.log(s1) - 2.0 * np.log(s2)
    dpsi_s = 2.0 + 1.0 / s1 - 2.0 / s2
    g = np.where(small, 1.0, log1px - u)
    big_l = np.where(small, 1.0, log1px)
    psi_l = 2.0 * t + math.log(LN2) + np.log(g) - 2.0 * np.log(big_l)
    dpsi_l = 2.0 + u * u / g - 2.0 * u / big_l
    return np.where(small, psi_s, psi_l), np.where(small, dpsi_s, dpsi_l)


def _lse(z):
    m = np.max(z)
    return m + math.log(np.sum(np.exp(z - m)))


def _bandwidth_shares(log_k, weight, log_bmax):
    """KKT shares y_i (sum 1) minimising sum_i weight_i / r_i(y_i b_max) (Eq. 1, 11h).

    Conditions weight_i r_i'(b_i) / r_i(b_i)^2 = nu with sum_i b_i = b_max, in
    the log space of :mod:`dynmec_jax.baselines.optimal` (t_i = log(K_i / b_i),
    psi(t_i) = lam + 2 log K_i - log weight_i, log sum_i K_i e^{-t_i} =
    log b_max), solved by its joint Newton method until the step is below
    ``NEWTON_TOL``.  ``log_bmax``: log b_max [log Hz].
    """
    n = log_k.shape[0]
    c = 2.0 * log_k - np.log(weight)
    t_eq = log_k - log_bmax + math.log(n)
    psi_eq, _ = _psi(t_eq)
    m = psi_eq - 2.0 * t_eq
    lam = 2.0 * (_lse(log_k - 0.5 * (c - m)) - log_bmax)
    t = 0.5 * (lam + c - m)
    for _ in range(NEWTON_MAX):
        psi, dpsi = _psi(t)
        resid = psi - lam - c
        z = log_k - t
        lse = _lse(z)
        p_over = np.exp(z - lse) / dpsi
        dlam = (lse - log_bmax + np.sum(p_over * resid)) / np.sum(p_over)
        dt = (dlam - resid) / dpsi
        t = t + dt
        lam = lam + dlam
        if np.max(np.abs(dt)) < NEWTON_TOL:
            break
    z = log_k - t
    share = np.exp(z - _lse(z))
    return share / np.sum(share)


def set_allocation(scn: Scenario, offload: Array, sys_params: SystemParams
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The exact float64 optimum allocation of one offload set (Eq. 1, 2, 11h-11k, 19, 25).

    Minimises sum_{x_i = 1} C_i^edge (Eq. 25, energy term included) over
    b, f >= 0 with sum b_i <= b_max and sum f_i <= f_ser: the CPU in closed
    form, f_i = f_ser sqrt(w_i c_i s_i) / sum_j sqrt(w_j c_j s_j); the
    bandwidth from the KKT system of the weights alpha w_i + beta p (Newton
    to convergence).  The float64 counterpart of
    ``exhaustive.energy_aware_allocation`` (without its ``EPS_WEIGHT``
    floor: a task of weight 0 and size > 0 gets no bandwidth).  The inference
    delays are constants here and do not change the allocation.

    Args:
      scn: one scenario, fields ``(N,)`` (NumPy or JAX), SI units.
      offload: x, bool or 0/1 ``(N,)``.
      sys_params: the system.
    Returns:
      ``(bandwidth [Hz], f_alloc [cycles/s])``, float64 ``(N,)``, 0 where local.
    """
    tasks = _tasks(scn, sys_params, 0.0, 0.0)
    x = np.broadcast_to(np.asarray(offload, bool), tasks.size.shape)
    return _allocate(tasks, x)


def _allocate(tasks: _Tasks, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bandwidth [Hz], f_alloc [cycles/s]) of :func:`set_allocation`, from :class:`_Tasks`."""
    n = tasks.size.shape[0]
    bandwidth = np.zeros(n)
    f_alloc = np.zeros(n)
    need_bw = x & (tasks.size > 0) & (tasks.tx_weight > 0)
    if need_bw.any():
        bandwidth[need_bw] = tasks.b_max * _bandwidth_shares(
            tasks.log_k[need_bw], (tasks.tx_weight * tasks.size)[need_bw],
            math.log(tasks.b_max))
    need_cpu = x & (tasks.cpu_share > 0)
    if need_cpu.any():
        root = np.sqrt(tasks.cpu_share[need_cpu])
        f_alloc[need_cpu] = tasks.f_ser * root / np.sum(root)
    return bandwidth, f_alloc


def _edge_costs(tasks: _Tasks, x, bandwidth, f_alloc) -> np.ndarray:
    """C_i^edge (Eq. 25) of the offloaded tasks with their allocation, +inf elsewhere.

    Float64, with the formulas of ``system.cost_edge``: the rate of Eq. 1 as
    b softplus(log K - log b) / ln 2, 0/0 -> 0 and x/0 -> inf.
    """
    out = np.full(tasks.size.shape[0], np.inf)
    if not x.any():
        return out
    s = tasks.size[x]
    b = bandwidth[x]
    ok = b > 0
    b_safe = np.where(ok, b, 1.0)
    rate = np.where(ok, b_safe * _log1p_exp(tasks.log_k[x] - np.log(b_safe)) / LN2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_tra = np.where(rate > 0, s / np.where(rate > 0, rate, 1.0),
                         np.where(s > 0, np.inf, 0.0))
        f = f_alloc[x]
        q = tasks.cpu[x]
        t_cpu = np.where(f > 0, q / np.where(f > 0, f, 1.0), np.where(q > 0, np.inf, 0.0))
        tx = np.where(tasks.tx_weight[x] > 0, tasks.tx_weight[x] * t_tra, 0.0)
    out[x] = tasks.c_edge0[x] + tx + t_cpu
    return out


def _decision_cost(tasks: _Tasks, x, bandwidth, f_alloc) -> float:
    """sum_i C_i (Eq. 24-25) of a decision, float64, as ``system.cost_local`` / ``cost_edge``."""
    return float(np.sum(np.where(x, _edge_costs(tasks, x, bandwidth, f_alloc),
                                 tasks.c_local)))


def set_cost(scn: Scenario, offload: Array, sys_params: SystemParams, *,
             infer_local: Array = 0.0, infer_edge: Array = 0.0) -> float:
    """sum_i C_i (Eq. 24-25, 34-35) of one offload set with its :func:`set_allocation`.

    Args:
      scn: one scenario, fields ``(N,)``, SI units.
      offload: x, bool or 0/1 ``(N,)``.
      sys_params: the system.
      infer_local, infer_edge: T_l^infer / T_e^infer [s] (Eq. 34-35),
        broadcastable to ``(N,)``.
    Returns:
      the cost (float64, cost units: alpha w T + beta E).
    """
    n = np.shape(np.asarray(scn.size))[-1]
    tasks = _tasks(scn, sys_params, np.broadcast_to(np.asarray(infer_local, np.float64), (n,)),
                   np.broadcast_to(np.asarray(infer_edge, np.float64), (n,)))
    x = np.broadcast_to(np.asarray(offload, bool), (n,))
    return _decision_cost(tasks, x, *_allocate(tasks, x))


# ---------------------------------------------------------------------------
# The outer-approximation loop for one scenario.
# ---------------------------------------------------------------------------
class _Evaluator:
    """Exact costs of offload sets (cached), restricted to the free tasks."""

    def __init__(self, tasks: _Tasks, free: np.ndarray):
        self.tasks = tasks
        self.free = free
        self.cache: dict[bytes, tuple[float, np.ndarray, np.ndarray]] = {}

    def full(self, x_free: np.ndarray) -> np.ndarray:
        x = np.zeros(self.tasks.size.shape[0], bool)
        x[self.free] = x_free
        return x

    def __call__(self, x_free: np.ndarray):
        key = np.packbits(x_free).tobytes()
        if key not in self.cache:
            x = self.full(x_free)
            b, f = _allocate(self.tasks, x)
            self.cache[key] = (_decision_cost(self.tasks, x, b, f), b, f)
        return self.cache[key]


def _greedy(evaluate: _Evaluator, n_free: int) -> np.ndarray:
    """Removal-only greedy (as ``baselines.greedy_offloading``, float64, energy-aware
    allocation): every offloaded task whose own C^edge >= C^loc leaves, until none does."""
    tasks = evaluate.tasks
    c_local = tasks.c_local[evaluate.free]
    x = np.ones(n_free, bool)
    for _ in range(n_free):
        if not x.any():
            break
        _, b, f = evaluate(x)
        edge = _edge_costs(tasks, evaluate.full(x), b, f)[evaluate.free]
        worse = x & ~(edge < c_local)
        if not worse.any():
            break
        x = x & ~worse
    return x


def _solve_one(tasks: _Tasks, tol: float, time_limit: float, seed: bool, scip) -> dict:
    """Outer approximation for one scenario (module doc); returns the result fields."""
    start = time.perf_counter()
    n = tasks.size.shape[0]
    # Fix local every task whose best possible edge cost is no lower than its local cost.
    pos = tasks.size > 0
    g_whole = np.zeros(n)
    g_whole[pos] = _tx_term(tasks.size[pos], tasks.log_k[pos], tasks.tx_weight[pos],
                            tasks.b_max, 1.0)[0]
    edge_floor = tasks.c_edge0 + g_whole + tasks.cpu / tasks.f_ser
    free = (tasks.c_local > edge_floor) & pos & (tasks.tx_weight > 0)
    evaluate = _Evaluator(tasks, free)
    n_free = int(free.sum())
    # A first lower bound: each task costs at least min(C^loc, its edge floor).
    lb = float(np.sum(np.where(free, edge_floor, tasks.c_local)))

    def result(x_free, lb, status, iterations):
        cost, b, f = evaluate(x_free)
        lb = min(lb, cost)            # SCIP's tolerances can put its bound a few ulps above
        return dict(offload=evaluate.full(x_free), bandwidth=b, f_alloc=f, cost=cost,
                    lower_bound=lb, gap=(cost - lb) / cost if cost > 0 else 0.0,
                    status=status, seconds=time.perf_counter() - start,
                    iterations=iterations)

    if n_free == 0:
        return result(np.zeros(0, bool), lb, "optimal", 0)

    # ---- Seeds: all offloaded and the greedy's set. ---------------------------------
    x_all = np.ones(n_free, bool)
    seeds = [x_all, _greedy(evaluate, n_free)] if seed else [x_all]
    costs = [evaluate(x)[0] for x in seeds]
    x_best = seeds[int(np.argmin(costs))]
    ub = min(costs)
    scale = ub / n_free                            # > 0: every free task costs > 0

    log_k, size, weight = tasks.log_k[free], tasks.size[free], tasks.tx_weight[free]
    root_q = np.sqrt(tasks.cpu[free] / tasks.f_ser / scale)    # u >= (root_q . x)^2

    def shares_of(x_free):
        return evaluate(x_free)[1][free] / tasks.b_max

    # ---- The MILP (objective divided by ``scale``). ------------------------------------
    model = scip.Model()
    model.hideOutput()
    model.setParam("limits/gap", tol / 4.0)
    model.setParam("limits/absgap", 0.0)
    model.setParam("numerics/feastol", FEASTOL)
    model.setParam("lp/threads", 1)
    model.setParam("parallel/maxnthreads", 1)
    model.setParam("misc/catchctrlc", False)
    xv = [model.addVar(f"x{i}", vtype="B") for i in range(n_free)]
    yv = [model.addVar(f"y{i}", lb=0.0, ub=1.0) for i in range(n_free)]
    tv = [model.addVar(f"t{i}", lb=0.0) for i in range(n_free)]
    uv = model.addVar("u", lb=0.0)
    for i in range(n_free):
        model.addCons(yv[i] <= xv[i])
    model.addCons(scip.quicksum(yv) <= 1.0)
    lin = (tasks.c_edge0[free] - tasks.c_local[free]) / scale
    model.setObjective(scip.quicksum(float(lin[i]) * xv[i] for i in range(n_free))
                       + scip.quicksum(tv) + uv)
    model.addObjoffset(float(np.sum(tasks.c_local)) / scale)

    points: list[list[float]] = [[] for _ in range(n_free)]
    cpu_points: list[float] = []

    def add_share_cuts(y_new, which) -> int:
        """Perspective tangents t_i >= g_i(y0) x_i + g_i'(y0) (y_i - y0 x_i) at y0 = y_new_i."""
        keep = []
        for i in np.flatnonzero(which):
            y0 = min(max(float(y_new[i]), MIN_SHARE), 1.0)
            if all(abs(y0 - p) > DUPLICATE_RTOL * p for p in points[i]):
                points[i].append(y0)
                keep.append((i, y0))
        if keep:
            ii = np.asarray([i for i, _ in keep])
            y0s = np.asarray([y0 for _, y0 in keep])
            g, dg = _tx_term(size[ii], log_k[ii], weight[ii], tasks.b_max, y0s)
            for i, y0, gi, dgi in zip(ii, y0s, g / scale, dg / scale, strict=True):
                model.addCons(tv[i] - float(dgi) * yv[i] - float(gi - dgi * y0) * xv[i] >= 0.0)
        return len(keep)

    def add_cpu_cut(z0: float) -> int:
        """Tangent u >= 2 z0 (root_q . x) - z0^2 of u >= (root_q . x)^2 at z0."""
        if any(abs(z0 - p) <= DUPLICATE_RTOL * p for p in cpu_points):
            return 0
        cpu_points.append(z0)
        model.addCons(uv - scip.quicksum(float(2.0 * z0 * root_q[i]) * xv[i]
                                         for i in range(n_free)) >= -z0 * z0)
        return 1

    for x_seed in seeds:
        add_share_cuts(shares_of(x_seed), x_seed)
        add_cpu_cut(float(root_q @ x_seed))
    if seed:
        y = shares_of(x_all)
        while np.any(y < 1.0):
            y = np.minimum(y * SHARE_GRID_FACTOR, 1.0)
            add_share_cuts(y, x_all)
        for z0 in np.linspace(0.0, float(root_q.sum()), CPU_GRID)[1:]:
            add_cpu_cut(float(z0))

    def converged():
        return (ub - lb) / ub <= tol

    iterations = 0
    status = "time_limit"
    while True:
        if converged():
            status = "optimal"
            break
        remaining = time_limit - (time.perf_counter() - start)
        if remaining <= 0:
            break
        # Incumbent: the best set with its exact allocation (it satisfies every cut).
        y_b = shares_of(x_best)
        g_b = np.zeros(n_free)
        g_b[x_best] = _tx_term(size[x_best], log_k[x_best], weight[x_best], tasks.b_max,
                               y_b[x_best])[0] / scale
        sol = model.createSol()
        for i in range(n_free):
            model.setSolVal(sol, xv[i], float(x_best[i]))
            model.setSolVal(sol, yv[i], float(y_b[i]))
            model.setSolVal(sol, tv[i], float(g_b[i]))
        model.setSolVal(sol, uv, float(root_q @ x_best) ** 2)
        model.addSol(sol, free=True)
        model.setParam("limits/time", remaining)
        model.optimize()
        iterations += 1
        dual = model.getDualbound()
        if math.isfinite(dual) and abs(dual) < model.infinity():
            lb = max(lb, dual * scale)
        best = model.getBestSol()
        x_new = np.asarray([model.getSolVal(best, v) > 0.5 for v in xv])
        y_milp = np.asarray([model.getSolVal(best, v) for v in yv])
        timed_out = model.getStatus() == "timelimit"
        model.freeTransform()
        cost_new = evaluate(x_new)[0]
        if cost_new < ub:
            ub, x_best = cost_new, x_new
        if converged():
            status = "optimal"
            break
        if timed_out:
            break
        # Outer-approximation cuts at x_new's exact optimum, Kelley cuts at the MILP's shares.
        added = (add_share_cuts(shares_of(x_new), x_new) + add_cpu_cut(float(root_q @ x_new))
                 + add_share_cuts(y_milp, x_new & (y_milp > MIN_SHARE)))
        if added == 0:
            status = "stalled"
            break
    return result(x_best, lb, status, iterations)


def exact_optimum(scn: Scenario, sys_params: SystemParams, *, infer_local: Array = 0.0,
                  infer_edge: Array = 0.0, tol: float = 1e-6, time_limit: float = 60.0,
                  progress: bool = False, seed: bool = True) -> ExactResult:
    """The certified optimum of sum_i C_i over (x, b, f) (Eq. 11b, 11h-11k, 24-25), any N.

    Minimises sum_i [(1 - x_i) C_i^loc + x_i C_i^edge(b_i, f_i)] (Eq. 24 with
    T_l^infer = ``infer_local``, Eq. 25 with T_e^infer = ``infer_edge``,
    Eq. 1, 2, 19, 34-35) over x in {0, 1}^N and b, f >= 0 with
    sum b <= b_max, sum f <= f_ser, by outer approximation with SCIP (module
    doc), one scenario at a time on the host.  The result agrees with
    ``exhaustive.exhaustive_optimum(..., objective="cost",
    allocation="energy_aware")`` for N <= 12 and carries a proven lower bound
    for every N.

    Args:
      scn: one scenario (fields ``(N,)``) or a batch (``(B, N)``), NumPy or
        JAX arrays, SI units.
      sys_params: the system (plain float fields, not a stacked sweep).
      infer_local: T_l^infer [s] (Eq. 34), paid by local tasks; broadcastable
        to the fields' shape (default 0: the bound used as "Optimum").
      infer_edge: T_e^infer [s] (Eq. 35), paid by offloaded tasks; likewise.
      tol: relative gap (UB - LB) / UB at which a scenario is optimal
        (below ~1e-9 SCIP's own tolerances can end a scenario "stalled").
      time_limit: wall-time limit per scenario [s].
      progress: print one line per scenario to stderr.
      seed: seed the first MILP with the greedy's set (incumbent and
        tangents) and with tangents on a share grid and a CPU-load grid
        (module doc).  ``False`` starts from the all-offloaded set with
        tangents there only: more MILP solves, the same optimum (the
        certificate does not depend on the heuristic).

    Returns:
      :class:`ExactResult` of NumPy arrays with leading shape ``(B,)`` (or
      none for one scenario).

    Raises:
      ImportError: if pyscipopt is not installed (``MISSING_EXTRA``).
      ValueError: if the scenario is malformed (``checks.validate_scenario``),
        an inference delay is negative or not finite, or ``tol`` /
        ``time_limit`` is not positive.
    """
    scip = _import_scip()
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0, got {time_limit!r}")
    scn = checks.validate_scenario(scn, sys_params)         # float64, (N,) or (B, N)
    single = scn.size.ndim == 1
    shape = (1, scn.size.shape[0]) if single else scn.size.shape
    n_scn = shape[0]
    fields = {k: getattr(scn, k).reshape(shape)
              for k in ("size", "workload", "deadline", "distance", "f_local")}
    delays = {}
    for name, value in (("infer_local", infer_local), ("infer_edge", infer_edge)):
        v = np.asarray(value, np.float64)
        if not np.all(np.isfinite(v) & (v >= 0)):
            raise ValueError(f"{name} must be finite and >= 0 [s], got {value!r}")
        delays[name] = np.broadcast_to(v, scn.size.shape).reshape(shape)
    t_loc, t_edge = delays["infer_local"], delays["infer_edge"]
    rows = []
    for k in range(n_scn):
        one = Scenario(**{name: v[k] for name, v in fields.items()})
        tasks = _tasks(one, sys_params, t_loc[k], t_edge[k])
        rows.append(_solve_one(tasks, float(tol), float(time_limit), bool(seed), scip))
        if progress:
            r = rows[-1]
            print(f"exact_optimum: scenario {k + 1}/{n_scn}: cost {r['cost']:.10g}, "
                  f"gap {r['gap']:.1e}, {r['status']}, {r['iterations']} MILPs, "
                  f"{r['seconds']:.2f} s", file=sys.stderr, flush=True)

    def stack(name, dtype=None):
        out = np.asarray([r[name] for r in rows], dtype=dtype)
        return out[0] if single else out

    return ExactResult(offload=stack("offload", bool), bandwidth=stack("bandwidth", np.float64),
                       f_alloc=stack("f_alloc", np.float64), cost=stack("cost", np.float64),
                       lower_bound=stack("lower_bound", np.float64),
                       gap=stack("gap", np.float64), status=stack("status", str),
                       seconds=stack("seconds", np.float64),
                       iterations=stack("iterations", np.int64))
