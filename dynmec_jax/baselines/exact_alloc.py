"""The exact allocation of a fixed offloading set, in float64 NumPy (for the certified optimum).

For a set S of offloaded tasks the joint problem (Eq. 24-25 over bandwidth
and CPU shares, Eq. 11h-11k) is convex and separable: the CPU shares have the
closed form f_i = f_ser sqrt(a_i) / sum_S sqrt(a_j) with a_i = alpha w_i c_i
s_i, and the bandwidth shares solve the KKT conditions of sum_S (alpha w_i +
beta p) T_tra_i(b_i) (Eq. 1, 5) by a Newton iteration in float64 (a port of
:func:`dynmec_jax.baselines.optimal_allocation`'s, run to convergence).
:mod:`dynmec_jax.baselines.exact` bounds its MILP with these; the upper
bound of every iteration is :func:`set_cost` of the MILP's set.  Units: SI.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from dynmec_jax.system import Scenario, SystemParams

Array = Any

LN2 = math.log(2.0)
#: Convergence threshold of the bandwidth KKT Newton solve (in log SNR).
NEWTON_TOL = 1e-13
#: Largest number of Newton steps of the bandwidth solve.
NEWTON_MAX = 100


# ---------------------------------------------------------------------------
# Per-task constants and the transmission term of Eq. 1 in float64.
# ---------------------------------------------------------------------------
class Tasks(NamedTuple):
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


def tasks_of(scn: Scenario, sp: SystemParams, infer_local, infer_edge) -> Tasks:
    """The constants of :class:`Tasks` for one scenario (fields ``(N,)``, float64)."""
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
    return Tasks(size=s, log_k=log_k, tx_weight=alpha * w + beta * float(sp.tx_power),
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


def tx_term(size, log_k, weight, b_max: float, share):
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
    tasks = tasks_of(scn, sys_params, 0.0, 0.0)
    x = np.broadcast_to(np.asarray(offload, bool), tasks.size.shape)
    return allocate(tasks, x)


def allocate(tasks: Tasks, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bandwidth [Hz], f_alloc [cycles/s]) of :func:`set_allocation`, from :class:`Tasks`."""
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


def edge_costs(tasks: Tasks, x, bandwidth, f_alloc) -> np.ndarray:
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


def decision_cost(tasks: Tasks, x, bandwidth, f_alloc) -> float:
    """sum_i C_i (Eq. 24-25) of a decision, float64, as ``system.cost_local`` / ``cost_edge``."""
    return float(np.sum(np.where(x, edge_costs(tasks, x, bandwidth, f_alloc),
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
    tasks = tasks_of(scn, sys_params, np.broadcast_to(np.asarray(infer_local, np.float64), (n,)),
                   np.broadcast_to(np.asarray(infer_edge, np.float64), (n,)))
    x = np.broadcast_to(np.asarray(offload, bool), (n,))
    return decision_cost(tasks, x, *allocate(tasks, x))
