"""The exact (KKT) optimum of the weighted-delay allocation problem.

Given an offloading decision x, the resource-allocation part of Eq. 11 with
the importance weights of Eq. 19 is the convex problem

    min_{b, f}  sum_{i: x_i}  w_i (T_tra_i(b_i) + T_com_i(f_i))
    s.t.        sum_i b_i <= b_max,  sum_i f_i <= f_ser,  b, f >= 0,

with T_tra from Eq. 1 and T_com from Eq. 2.  It separates into a CPU problem
and a bandwidth problem.

CPU (Eq. 2).  min sum w_i c_i s_i / f_i, sum f_i = f_ser has the closed form
f_i = f_ser sqrt(w_i c_i s_i) / sum_j sqrt(w_j c_j s_j) (Lagrange condition
w_i c_i s_i / f_i^2 = const; Tran & Pompili, IEEE TVT 2019).

Bandwidth (Eq. 1).  With a_i = w_i s_i and the rate r_i(b) = b log2(1 + K_i/b),
K_i = g_0 (l_0/l_i)^h p / sigma_0, 1/r_i is convex and decreasing, so the KKT
conditions are a_i r_i'(b_i) / r_i(b_i)^2 = nu for every served user and
sum b_i = b_max.  In terms of the SNR x = K/b:
r = K log2(1+x)/x, r'(b) = (ln(1+x) - x/(1+x)) / ln 2, and the condition reads

    phi(x_i) = nu K_i^2 / a_i,   phi(x) = x^2 (ln(1+x) - x/(1+x)) ln 2 / ln(1+x)^2.

Everything is solved in log space: t_i = log x_i, lam = log nu, beta_i =
log K_i, c_i = 2 beta_i - log a_i, psi(t) = log phi(e^t).  The unknowns satisfy

    psi(t_i) = lam + c_i  (one per served user),
    log sum_i exp(beta_i - t_i) = log b_max,

and b_i = exp(beta_i - t_i).  We solve this system with a joint Newton method
(see :func:`_newton_step`), which reaches machine precision in a small fixed
number of steps (``NEWTON_ITERS``) because the system is nearly linear:
psi'(t) lies in [1.79, 2] for every real t (2 at both ends) and
|psi''| < 0.066.

Gradients are implicit: the iterations run on ``stop_gradient``-ed inputs and
one final Newton step is taken with the problem data differentiable, which
gives exactly the implicit-function-theorem derivative at the solution.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from dynmec_jax import system
from dynmec_jax.system import Scenario, SystemParams

Array = Any

LN2 = math.log(2.0)
LOG_LN2 = math.log(LN2)

#: Floor on the bandwidth-problem weight of an offloaded user, relative to
#: the mean offloaded weight (see :func:`optimal_allocation`).
EPS_WEIGHT = 1e-6

#: Joint Newton steps of the solve; one more (the implicit-gradient step) always
#: follows, so the solution has had NEWTON_ITERS + 1 Newton updates.
#: Why 3: the initial guess (:func:`_solve`) linearises psi(t) ~ 2 t + m around
#: the equal share; since psi(t) - 2t stays in [-4.5, -1.06] for x = e^t in
#: [e^-50, e^60], the start is within ~3.4 of the solution in t (observed: 1.4).
#: Newton's quadratic constant here is about |psi''| / (2 psi') < 0.02 plus the
#: log-sum-exp curvature (observed <= 0.03), so the error goes 3.4 -> 0.35 ->
#: 4e-3 -> 4e-7 -> 5e-15 in 4 updates; and far from the solution each update
#: still contracts by >= 8x, because psi' only varies within [1.79, 2], so it
#: cannot diverge.  Measured with this code in float64 against 12 steps (N in
#: {1, 2, 3, 30, 500}, a_i = w_i s_i over 22 decades, 5 m / 500 m, weight-0
#: users, b_max from 1 Hz to 1e15 Hz), max relative error of b after
#: newton_iters = 0, 1, 2, 3: 2.6e-3, 2.0e-6, 5.7e-14, 1.4e-14 (rounding).
#: float32 reaches its rounding floor (~1e-5 over such ranges, ~1e-6 for
#: Table II scenarios) at newton_iters = 1.  3 therefore leaves a margin of one
#: full quadratic step for both float32 and ``jax_enable_x64`` (~1e-14).
NEWTON_ITERS = 3

# psi(t) switches to a series below u = sigmoid(t) = 1/20, i.e. x < 1/19:
# ln(1+x) - x/(1+x) = -ln(1-u) - u = sum_{k>=2} u^k / k has no cancellation.
_U_SMALL = 0.05
_T_SMALL = math.log(_U_SMALL / (1.0 - _U_SMALL))
# Terms of s1(u) = sum_{k=2}^{13} u^(k-2)/k; the dropped tail at u = 1/20 is
# below 0.05^12 * 2/14 = 3.5e-17 relative, below float64 rounding.
_SERIES_TERMS = 12
_SERIES_COEFFS = tuple(1.0 / k for k in range(2, 2 + _SERIES_TERMS))


def _psi(t: Array) -> tuple[Array, Array]:
    """psi(t) = log phi(e^t) and psi'(t), phi the KKT function of Eq. 1 (see module doc).

    Args:
      t: log SNR, log(K_i / b_i) (dimensionless), any shape and float dtype.
    Returns:
      (psi, dpsi), same shape.  Accurate to a few ulps for every real ``t``:
      below x = 1/19 the series form is used (no cancellation), above it
      ln(1+x) = softplus(t) and x/(1+x) = sigmoid(t) are taken from
      e = exp(-|t|), which neither overflows nor underflows harmfully.
    """
    e = jnp.exp(-jnp.abs(t))
    r = 1.0 / (1.0 + e)
    u = jnp.where(t >= 0, r, e * r)
    log1px = jnp.maximum(t, 0.0) + jnp.log1p(e)
    small = t < _T_SMALL

    # Small x: ln(1+x) - x/(1+x) = u^2 s1(u), ln(1+x) = u s2(u), s2 = 1 + u s1:
    # psi = 2t + ln ln 2 + ln s1 - 2 ln s2, psi' = 2 + 1/s1 - 2/s2.
    us = jnp.where(small, u, 0.0)
    s1 = jnp.full_like(us, _SERIES_COEFFS[-1])
    for coeff in _SERIES_COEFFS[-2::-1]:
        s1 = coeff + us * s1                                # Horner
    s2 = 1.0 + us * s1
    # Large x: g = ln(1+x) - x/(1+x) (at most ~5 bits of cancellation here), L = ln(1+x):
    # psi = 2t + ln ln 2 + ln g - 2 ln L, psi' = 2 + u^2/g - 2u/L.
    # The two forms share their shape, so the branch is chosen before the logs and
    # divisions (the same values as evaluating both and selecting, half the work).
    num = jnp.where(small, s1, log1px - u)
    den = jnp.where(small, s2, log1px)
    one = jnp.ones_like(u)
    psi = 2.0 * t + LOG_LN2 + jnp.log(num) - 2.0 * jnp.log(den)
    dpsi = 2.0 + jnp.where(small, one, u * u) / num - 2.0 * jnp.where(small, one, u) / den
    return psi, dpsi


def _masked_lse(z: Array, active: Array) -> Array:
    """log sum_{active} exp(z) over the last axis (keepdims); 0 if none active.

    Inactive entries never enter the arithmetic (no inf - inf, finite gradients).
    """
    any_active = jnp.any(active, axis=-1, keepdims=True)
    zmax = jax.lax.stop_gradient(
        jnp.max(jnp.where(active, z, -jnp.inf), axis=-1, keepdims=True))
    zmax = jnp.where(any_active, zmax, 0.0)
    ez = jnp.where(active, jnp.exp(jnp.where(active, z - zmax, 0.0)), 0.0)
    total = jnp.sum(ez, axis=-1, keepdims=True)
    return jnp.where(any_active, zmax + jnp.log(jnp.where(any_active, total, 1.0)), 0.0)


def _newton_step(t, lam, beta, c, log_bmax, active, psi_dpsi=None):
    """One joint Newton step on the log-space KKT system of Eq. 1 (module doc).

    Residuals: R_i = psi(t_i) - lam - c_i, G = log sum_i exp(beta_i - t_i) -
    log b_max.  Linearising, dt_i = (dlam - R_i) / psi'_i and
    -sum_i p_i dt_i = -G with p_i = b_i / sum_j b_j, hence
    dlam = (G + sum_i p_i R_i / psi'_i) / sum_i p_i / psi'_i.  The arrow-shaped
    Jacobian is solved in O(N).

    Args:
      t: log SNR per user, (..., N); lam: log nu, (..., 1); beta: log K_i;
      c: 2 beta - log a; log_bmax: log b_max [log Hz]; active: served users.
      psi_dpsi: optionally (psi, psi') at ``t`` (treated as constants).
    Returns:
      (t_new, lam_new); inactive users' t is 0.
    """
    psi, dpsi = _psi(t) if psi_dpsi is None else psi_dpsi
    resid = jnp.where(active, psi - lam - c, 0.0)
    z = jnp.where(active, beta - t, 0.0)
    lse = _masked_lse(z, active)
    p = jax.lax.stop_gradient(jnp.where(active, jnp.exp(z - lse), 0.0))
    p_over = p / dpsi
    num = (lse - log_bmax) + jnp.sum(p_over * resid, axis=-1, keepdims=True)
    den = jnp.sum(p_over, axis=-1, keepdims=True)
    any_active = den > 0
    dlam = jnp.where(any_active, num / jnp.where(any_active, den, 1.0), 0.0)
    t_new = jnp.where(active, t + (dlam - resid) / dpsi, 0.0)
    return t_new, lam + dlam


def _safe_log(x: Array, ok: Array) -> Array:
    """log(x) where ``ok`` (x > 0 there), 0 elsewhere; finite gradients."""
    return jnp.where(ok, jnp.log(jnp.where(ok, x, 1.0)), 0.0)


def _log_share(log_q: Array, ok: Array) -> Array:
    """softmax of ``log_q`` over the entries where ``ok``, 0 elsewhere (last axis)."""
    log_tot = _masked_lse(log_q, ok)
    return jnp.where(ok, jnp.exp(jnp.where(ok, log_q - log_tot, 0.0)), 0.0)


def optimal_allocation(scn: Scenario, offload_mask: Array, sys_params: SystemParams, *,
                       newton_iters: int = NEWTON_ITERS,
                       eps_weight: float = EPS_WEIGHT) -> tuple[Array, Array]:
    """Exact minimiser of sum_{offloaded} w_i (T_tra_i + T_com_i) (Eq. 1, 2, 11h-11k, 19).

    Args:
      scn: the tasks (fields ``(..., N)``, any leading shape incl. none; NumPy
        or JAX arrays), SI units.
      offload_mask: x_i, bool or 0/1, broadcastable to ``(..., N)``.
      sys_params: the system; traced fields are fine (``vmap`` over a stacked
        ``SystemParams``).
      newton_iters: joint Newton steps of the bandwidth solve (a Python int;
        static under ``jit``); the default is converged to float32 and
        float64 precision (see ``NEWTON_ITERS``).
      eps_weight: relative weight floor of the bandwidth problem (below).

    Returns:
      ``(bandwidth [Hz], f_alloc [cycles/s])``, each ``(..., N)``, with
      ``sum bandwidth = b_max`` and ``sum f_alloc = f_ser`` (up to rounding)
      when some offloaded user needs the resource.

    * CPU: f_i = f_ser sqrt(w_i c_i s_i) / sum_j sqrt(w_j c_j s_j) over
      offloaded users (closed form; Tran & Pompili 2019).
    * Bandwidth: the KKT system a_i r_i'(b_i) / r_i(b_i)^2 = nu, sum b_i =
      b_max (a_i = w_i s_i, r_i the Eq. 1 rate) solved in log space by a joint
      Newton method (module doc); users with size 0 need and get none.
    * Importance 0 (workload 0, or weights that underflow) with size > 0: the
      data must still be sent, but weight 0 would give it no bandwidth and an
      infinite delay.  In the bandwidth problem only, every offloaded weight
      is raised to at least ``eps_weight * mean_offloaded(w)`` (default 1e-6),
      so such users get a small positive bandwidth.  Scenarios whose weights
      all exceed that floor are solved exactly.  The effect is not 1e-6:
      at high SNR b_i grows like sqrt(w_i), so a floored user gets about
      sqrt(1e-6) = 1e-3 of a typical share (its transmission delay is ~1e3
      times typical, seconds at Table II values), and the others' weighted
      delay rises by roughly 1e-3 / N relative per floored user (measured:
      +2.4e-5 mean, +4.3e-5 max, N = 30 with 3 workload-0 users).  If every
      offloaded weight is 0, the bandwidth problem uses w_i = 1 (minimum sum
      of transmission delays).
    * Users not offloaded get exactly 0 of both; no offloaded user -> all 0.
    * Gradients (w.r.t. the scenario and ``sys_params``) are the implicit
      derivatives at the optimum and are finite everywhere: every division
      and log uses the double-``jnp.where`` pattern.
    """
    scn = system.as_scenario(scn)
    size, workload, distance = scn.size, scn.workload, scn.distance
    served = jnp.broadcast_to(jnp.asarray(offload_mask).astype(bool), jnp.shape(size))
    w = system.importance_weights(size, workload, scn.deadline, sys_params)

    # ---- CPU: closed form, in log space (no overflow of w c s). -------------
    need_cpu = served & (w > 0) & (workload > 0) & (size > 0)
    log_w = _safe_log(w, need_cpu)
    log_c = _safe_log(workload, need_cpu)
    log_s = _safe_log(size, served & (size > 0))
    cpu_share = _log_share(0.5 * (log_w + log_c + log_s), need_cpu)
    f_alloc = sys_params.f_server * cpu_share

    # ---- Bandwidth: joint Newton on the log-space KKT system. ---------------
    active = served & (size > 0)
    n_served = jnp.sum(served, axis=-1, keepdims=True)
    w_mean = (jnp.sum(jnp.where(served, w, 0.0), axis=-1, keepdims=True)
              / jnp.maximum(n_served, 1))
    has_weight = w_mean > 0
    w_floor = eps_weight * w_mean
    w_eff = jnp.where(has_weight, jnp.maximum(w, w_floor), 1.0)
    log_a = _safe_log(w_eff, active) + log_s
    beta = jnp.where(active, system.log_snr_coeff(distance, sys_params), 0.0)
    c = 2.0 * beta - log_a
    log_bmax = jnp.log(sys_params.bandwidth_max)
    n_active = jnp.sum(active, axis=-1, keepdims=True)

    t, lam = _solve(jax.lax.stop_gradient(beta), jax.lax.stop_gradient(c),
                    jax.lax.stop_gradient(log_bmax), active,
                    jax.lax.stop_gradient(n_active), newton_iters)
    # Implicit gradient: one more Newton step from the (constant) solution
    # with the problem data (beta, c, log b_max) differentiable.
    t, lam = jax.lax.stop_gradient((t, lam))
    psi_dpsi = jax.lax.stop_gradient(_psi(t))
    t, _ = _newton_step(t, lam, beta, c, log_bmax, active, psi_dpsi)
    # b_i = exp(beta_i - t_i), normalised so that sum b = b_max exactly.
    bandwidth = sys_params.bandwidth_max * _log_share(beta - t, active)
    return bandwidth, f_alloc


def _solve(beta, c, log_bmax, active, n_active, newton_iters):
    """Fixed-count joint Newton solve of the log-space KKT system (module doc).

    Initial guess: linearise psi(t) ~ 2 t + m_i around the equal share
    t_eq = beta - log(b_max / n), m_i = psi(t_eq) - 2 t_eq, which makes the
    budget equation explicit: lam0 = 2 (LSE_i(beta_i - (c_i - m_i)/2) - log b_max),
    t_i = (lam0 + c_i - m_i) / 2.
    """
    log_n = jnp.log(jnp.maximum(n_active, 1).astype(beta.dtype))
    t_eq = jnp.where(active, beta - (log_bmax - log_n), 0.0)
    psi_eq, _ = _psi(t_eq)
    m = psi_eq - 2.0 * t_eq
    lam = 2.0 * (_masked_lse(beta - 0.5 * (c - m), active) - log_bmax)
    t = jnp.where(active, 0.5 * (lam + c - m), 0.0)
    for _ in range(newton_iters):
        t, lam = _newton_step(t, lam, beta, c, log_bmax, active)
    return t, lam


# ---------------------------------------------------------------------------
# Operation counting, from the traced program itself (so it cannot drift from
# the implementation).
# ---------------------------------------------------------------------------
#: Primitives costing ``special_cost`` MAC-equivalents per output element.
SPECIAL_PRIMITIVES = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "div", "rem", "sqrt", "rsqrt", "pow",
    "logistic", "tanh", "erf", "sin", "cos"})
#: Primitives that only move or relabel data (free).
FREE_PRIMITIVES = frozenset({
    "broadcast_in_dim", "convert_element_type", "reshape", "squeeze",
    "expand_dims", "stop_gradient", "copy", "copy_p", "transpose", "slice",
    "concatenate", "iota"})
#: Reductions: one op per input element.
REDUCE_PRIMITIVES = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_or", "reduce_and", "argmax",
    "argmin", "reduce_prod"})
#: Elementwise arithmetic, compare, logic and select: one op per output element.
ARITH_PRIMITIVES = frozenset({
    "add", "sub", "mul", "neg", "abs", "max", "min", "sign", "select_n",
    "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not", "integer_pow",
    "square", "floor", "ceil", "round", "clamp"})


def _size(aval) -> int:
    return int(math.prod(aval.shape))


def dead_code_eliminated(closed):
    """The jaxpr of ``closed`` without the equations its outputs do not need (what XLA
    runs), for :func:`count_jaxpr_ops` of programs that compute values they discard.

    Uses JAX's internal ``dce_jaxpr``; if it is unavailable the jaxpr is
    returned whole (an over-count of the MAC-equivalents of Eq. 9).
    """
    try:
        from jax._src.interpreters import partial_eval as pe
        jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
        return jaxpr
    except Exception:  # pragma: no cover - depends on JAX internals
        return closed.jaxpr


def count_jaxpr_ops(jaxpr, special_cost: float = 1.0) -> float:
    """MAC-equivalents of a (closed) jaxpr: the counting rule of :func:`optimal_allocation_ops`.

    Elementwise arithmetic / compare / select: 1 per output element;
    reductions: 1 per input element; ``SPECIAL_PRIMITIVES``: ``special_cost``
    per output element; data movement: 0; nested ``jit`` calls are entered.
    Raises ``NotImplementedError`` on any other primitive, so a change of the
    algorithm cannot silently go uncounted.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        subs = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
        if subs:
            if name not in ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call"):
                raise NotImplementedError(f"cannot count control-flow primitive {name!r}")
            total += sum(count_jaxpr_ops(s, special_cost) for s in subs)
        elif name in FREE_PRIMITIVES:
            continue
        elif name in SPECIAL_PRIMITIVES:
            total += special_cost * sum(_size(v.aval) for v in eqn.outvars)
        elif name in REDUCE_PRIMITIVES:
            total += sum(_size(v.aval) for v in eqn.invars)
        elif name in ARITH_PRIMITIVES:
            total += sum(_size(v.aval) for v in eqn.outvars)
        else:
            raise NotImplementedError(f"no op count for primitive {name!r}")
    return total


@functools.lru_cache(maxsize=256)
def optimal_allocation_ops(n_served: int, newton_iters: int = NEWTON_ITERS,
                           special_cost: float = 1.0) -> float:
    """Operations of one :func:`optimal_allocation` call, in MAC-equivalents (for Eq. 9).

    Counted on the traced program for one scenario of ``n_served`` users, all
    offloaded, i.e. the algorithm exactly as implemented (importance weights
    and log K from the raw features, the CPU closed form, the initial guess,
    ``newton_iters`` Newton steps, the implicit-gradient step and the output
    normalisation).  Counting rule (:func:`count_jaxpr_ops`): each add,
    multiply, max, compare or select counts 1 per element (one MAC-equivalent,
    as Eq. 8 counts a multiply-accumulate as 1); each exp, log, log1p or
    divide counts ``special_cost`` per element: default 1, a lower bound that
    favours this baseline (a vectorised exp or log costs ~10-20 FMAs and a
    divide ~4-10, so ``special_cost=15`` is a pessimistic estimate);
    reductions count 1 per input element; broadcasts and casts are free.  Both
    branches of every ``jnp.where`` are counted, as both are computed.  The
    count grows linearly: about ``a + b n_served`` (see the benchmark).

    Args:
      n_served: number of offloaded users the problem is solved for (>= 0).
      newton_iters: as in :func:`optimal_allocation`.
      special_cost: MAC-equivalents per exp/log/log1p/divide.
    Returns:
      the count (float); ``accounting.inference_delay(ops, params)`` gives the
      Eq. 9 inference delay [s] (lambda ops / f_ser).
    """
    if newton_iters < 0:
        raise ValueError("n_served and newton_iters must be >= 0")
    return all_offloaded_ops(
        lambda s, off, p: optimal_allocation(s, off, p, newton_iters=newton_iters),
        n_served, special_cost)


def counting_inputs(n_users: int) -> tuple[SystemParams, Scenario]:
    """The system (Table II with N = ``n_users``) and a scenario of ones ``(N,)`` on which
    the op counters trace a program (the counts do not depend on the values)."""
    ones = jnp.ones((n_users,), jnp.float32)
    return SystemParams(n_users=n_users), Scenario(size=ones, workload=ones, deadline=ones,
                                                   distance=ones, f_local=ones)


def all_offloaded_ops(allocate, n_users: int, special_cost: float = 1.0,
                      eliminate_dead_code: bool = False) -> float:
    """MAC-equivalents of ``allocate(scn, offload, sys_params)`` for one scenario of
    ``n_users`` users, all offloaded (:func:`count_jaxpr_ops` of its traced program;
    with ``eliminate_dead_code``, of what XLA runs: :func:`dead_code_eliminated`).
    0 for no users; ``ValueError`` for a negative count."""
    if n_users < 0:
        raise ValueError(f"n_users must be >= 0, got {n_users}")
    if n_users == 0:
        return 0.0
    params, scn = counting_inputs(n_users)
    closed = jax.make_jaxpr(lambda s: allocate(s, jnp.ones((n_users,), bool), params))(scn)
    jaxpr = dead_code_eliminated(closed) if eliminate_dead_code else closed
    return float(count_jaxpr_ops(jaxpr, special_cost))
