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

:func:`dynmec_jax.baselines.exact_alloc.set_allocation` computes that
optimum exactly in float64 (the CPU in closed form, the bandwidth by a joint
Newton solve of its KKT system, the same log-space system as
:mod:`dynmec_jax.baselines.optimal`), and
:func:`dynmec_jax.baselines.exact_alloc.set_cost` its value.  The same
allocation (up to float rounding) is ``exhaustive.energy_aware_allocation``.

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
from dynmec_jax.baselines import exact_alloc
from dynmec_jax.system import Scenario, SystemParams

Array = Any

LN2 = math.log(2.0)

#: Raised (as ``ImportError``) when pyscipopt is not installed.
MISSING_EXTRA = "dynmec_jax.baselines.exact needs pyscipopt: pip install -e '.[exact]'"

#: Status values of :class:`ExactResult`.
STATUSES = ("optimal", "time_limit", "stalled")

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


def require_scip():
    """pyscipopt, imported lazily; ``ImportError(MISSING_EXTRA)`` (naming the ``exact``
    extra) if it is absent.  Callers check it before any work."""
    try:
        import pyscipopt
    except ImportError as e:
        raise ImportError(MISSING_EXTRA) from e
    return pyscipopt


# ---------------------------------------------------------------------------
# The outer-approximation loop for one scenario.
# ---------------------------------------------------------------------------
class _Evaluator:
    """Exact costs of offload sets (cached), restricted to the free tasks."""

    def __init__(self, tasks: exact_alloc.Tasks, free: np.ndarray):
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
            b, f = exact_alloc.allocate(self.tasks, x)
            self.cache[key] = (exact_alloc.decision_cost(self.tasks, x, b, f), b, f)
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
        edge = exact_alloc.edge_costs(tasks, evaluate.full(x), b, f)[evaluate.free]
        worse = x & ~(edge < c_local)
        if not worse.any():
            break
        x = x & ~worse
    return x


def _solve_one(tasks: exact_alloc.Tasks, tol: float, time_limit: float, seed: bool, scip) -> dict:
    """Outer approximation for one scenario (module doc); returns the result fields."""
    start = time.perf_counter()
    n = tasks.size.shape[0]
    # Fix local every task whose best possible edge cost is no lower than its local cost.
    pos = tasks.size > 0
    g_whole = np.zeros(n)
    g_whole[pos] = exact_alloc.tx_term(tasks.size[pos], tasks.log_k[pos], tasks.tx_weight[pos],
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
            g, dg = exact_alloc.tx_term(size[ii], log_k[ii], weight[ii], tasks.b_max, y0s)
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
        g_b[x_best] = exact_alloc.tx_term(size[x_best], log_k[x_best], weight[x_best], tasks.b_max,
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
    scip = require_scip()
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
        tasks = exact_alloc.tasks_of(one, sys_params, t_loc[k], t_edge[k])
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
