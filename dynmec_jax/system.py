"""The MEC system model of Section III: channel, delay, energy and importance.

Everything here is a pure function of arrays and a :class:`SystemParams`
pytree, so it can be ``jit``-ed, ``vmap``-ed over scenarios and ``vmap``-ed over
parameter values (a stacked ``SystemParams`` is a sweep).  Units are SI
throughout: bits, cycles/bit, seconds, metres, Hz, W, J, W/Hz.

Numerics.  Eq. 1 divides by ``b log2(1 + K/b)`` which is 0
at ``b = 0``; a task that is not offloaded gets ``b = 0`` and must contribute
exactly 0 with finite gradients.  Every division therefore uses the
double-``jnp.where`` pattern (a safe denominator inside, the masked value
outside), never ``x * mask`` around an ``inf``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dynmec_jax import rng

Array = Any

LN2 = math.log(2.0)


@struct.dataclass
class SystemParams:
    """Simulation parameters of Table II and Section V, in SI units.

    A pytree: every float field is a leaf, so ``jax.vmap`` over a stacked
    ``SystemParams`` sweeps them.  ``n_users`` sets array shapes and is static.

    Attributes:
      n_users: N, number of users (tasks) per scenario.
      bandwidth_max: b_max, total uplink bandwidth [Hz] (Table II: 0.5 MHz).
      f_server: f_ser, server CPU frequency [cycles/s] (Table II: 2.5 GHz).
      efficiency: lambda of Eq. 9, cycles per MAC (Table II: 1).
      tx_power: p, transmit power [W] (Table II: 0.1 W).
      noise_psd: sigma_0, noise power spectral density [W/Hz]
        (Table II: -174 dBm/Hz = 10^-20.4 W/Hz).
      path_loss_const: g_0, path-loss constant (Table II: -40 dB = 1e-4).
      path_loss_exp: h, path-loss exponent (Table II: 2.8).
      ref_distance: l_0, reference distance [m] (not given; 1 m, see
        docs/reproduction.md).
      energy_coeff: mu of Eq. 6, effective switched capacitance [J s^2/cycle^3]
        (Table II: 1e-20).
      importance_scale: gamma of Eq. 19 (Table II: 60).
      alpha: weight of delay in Eq. 11a and Eq. 24-25 (Section V: 1).
      beta: weight of energy in Eq. 11a and Eq. 24-25 (Section V: 0.1).
      delta: weight of a deadline miss in Eq. 11a (not given; 0.01, i.e. a
        miss costs as much as 10 ms of delay; see docs/reproduction.md).
      size_avg: s_avg [bits]; sizes ~ U[0, 2 s_avg] (Section V: 1 kbit).
      workload_avg: c_avg [cycles/bit]; workloads ~ U[0, 2 c_avg]
        (Section V: 797.5).
      deadline_max: deadlines ~ U[0, deadline_max] [s] (Section V: 160 ms).
      deadline_min: d_min, floor on deadlines [s] (not given; 1 ms) because
        Eq. 19 divides by the deadline.
      distance_min, distance_max: l_i ~ U[distance_min, distance_max] [m]
        (Table II: [5, 500] m).
      f_local_min, f_local_max: f_loc ~ U[f_local_min, f_local_max]
        [cycles/s] (Section V: [0.01, 0.15] GHz).
    """

    n_users: int = struct.field(pytree_node=False, default=30)
    bandwidth_max: float = 0.5e6           # b_max [Hz]
    f_server: float = 2.5e9                # f_ser [cycles/s]
    efficiency: float = 1.0                # lambda of Eq. 9
    tx_power: float = 0.1                  # p [W]
    noise_psd: float = 10.0 ** -20.4       # sigma_0 [W/Hz]
    path_loss_const: float = 1e-4
    path_loss_exp: float = 2.8
    ref_distance: float = 1.0              # l_0 [m]
    energy_coeff: float = 1e-20            # mu of Eq. 6
    importance_scale: float = 60.0         # gamma of Eq. 19
    alpha: float = 1.0
    beta: float = 0.1
    delta: float = 0.01                    # Eq. 11a
    size_avg: float = 1000.0               # s_avg [bits]
    workload_avg: float = 797.5            # c_avg [cycles/bit]
    deadline_max: float = 0.160
    deadline_min: float = 1e-3             # d_min [s]
    distance_min: float = 5.0
    distance_max: float = 500.0            # [m]
    f_local_min: float = 0.01e9
    f_local_max: float = 0.15e9            # [cycles/s]


# Fields that must be > 0 (a zero would divide by zero or make no physical sense).
_POSITIVE = (
    "bandwidth_max", "f_server", "efficiency", "tx_power", "noise_psd",
    "path_loss_const", "path_loss_exp", "ref_distance", "energy_coeff",
    "importance_scale", "size_avg", "workload_avg", "deadline_max",
    "deadline_min", "distance_min", "distance_max", "f_local_min", "f_local_max",
)
# Fields that must be >= 0 (weights of the objective).
_NON_NEGATIVE = ("alpha", "beta", "delta")
# (low, high) pairs that must satisfy low <= high.
_ORDERED = (
    ("deadline_min", "deadline_max"),
    ("distance_min", "distance_max"),
    ("f_local_min", "f_local_max"),
)


def validate(sys_params: SystemParams) -> SystemParams:
    """Checks that every field of ``sys_params`` is physical; returns ``sys_params``.

    Raises ``ValueError`` naming the first bad field.  Works on a stacked
    (swept) ``SystemParams`` too: every entry must be valid.  Host-side only:
    never call it inside ``jit``.
    """
    if not isinstance(sys_params, SystemParams):
        raise TypeError(f"expected SystemParams, got {type(sys_params).__name__}")
    n = sys_params.n_users
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n_users must be an integer >= 1, got {n!r}")

    def values(name):
        try:
            v = np.asarray(getattr(sys_params, name), dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a real number, "
                             f"got {getattr(sys_params, name)!r}") from e
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {getattr(sys_params, name)!r}")
        return v

    for name in _POSITIVE:
        if np.any(values(name) <= 0):
            raise ValueError(f"{name} must be > 0, got {getattr(sys_params, name)!r}")
    for name in _NON_NEGATIVE:
        if np.any(values(name) < 0):
            raise ValueError(f"{name} must be >= 0, got {getattr(sys_params, name)!r}")
    for lo, hi in _ORDERED:
        if np.any(values(lo) > values(hi)):
            raise ValueError(
                f"{lo} ({getattr(sys_params, lo)!r}) must not exceed "
                f"{hi} ({getattr(sys_params, hi)!r})")
    return sys_params


def params_from_overrides(overrides=None, base: SystemParams | None = None) -> SystemParams:
    """``SystemParams`` with the fields in ``overrides`` (a mapping) replaced, validated.

    Unknown field names raise ``ValueError`` naming them; values are checked
    by :func:`validate`.  Host-side only.
    """
    base = SystemParams() if base is None else base
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(SystemParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown SystemParams field(s) {unknown}; known: {sorted(known)}")
    if "n_users" in overrides:
        n = overrides["n_users"]
        if isinstance(n, float) and n.is_integer():
            overrides["n_users"] = int(n)
    return validate(dataclasses.replace(base, **overrides))


@struct.dataclass
class Scenario:
    """Task features of Eq. 7, each of shape ``(..., N)``.

    Attributes:
      size: s_i, task size [bits].
      workload: c_i, task complexity [cycles/bit].
      deadline: d_i [s].
      distance: l_i, user-server distance [m].
      f_local: f_i^loc, local CPU frequency [cycles/s].
    """

    size: Array
    workload: Array
    deadline: Array
    distance: Array
    f_local: Array

    @property
    def shape(self) -> tuple[int, ...]:
        """The fields' shape ``(..., N)``: the batch shape, then N tasks (every field has it)."""
        return jnp.shape(self.size)

    def features(self) -> Array:
        """The raw feature vectors u_i of Eq. 7, shape ``(..., N, 5)``, SI units."""
        return jnp.stack(
            [self.size, self.workload, self.deadline, self.distance, self.f_local], axis=-1)


def as_scenario(scn: Scenario) -> Scenario:
    """Converts the fields of ``scn`` (NumPy or JAX arrays) to JAX arrays."""
    return jax.tree.map(jnp.asarray, scn)


def sample_scenarios(key: Array, sys_params: SystemParams, batch: int) -> Scenario:
    """Samples ``batch`` scenarios of ``sys_params.n_users`` tasks (Section V).

    s ~ U[0, 2 s_avg] bits, c ~ U[0, 2 c_avg] cycles/bit,
    d ~ U[0, d_max] s floored at d_min, l ~ U[l_min, l_max] m,
    f_loc ~ U[f_min, f_max] cycles/s.  Each field has shape ``(batch, N)``.
    Every float field of ``sys_params`` may be traced (vmap over a sweep).

    Precision: the draws are in JAX's default float dtype, so the same key
    samples *different* scenarios with ``jax_enable_x64`` on (float64 uniforms
    consume the random bits differently): seeded results depend on the
    precision, and a result is reproduced only at the precision it was made
    at (float32, the default, everywhere in this project).
    """
    shape = (batch, sys_params.n_users)
    ks = jax.random.split(key, 5)

    def u(k, lo, hi):
        return rng.uniform(k, shape, minval=lo, maxval=hi)

    deadline = jnp.maximum(u(ks[2], 0.0, sys_params.deadline_max), sys_params.deadline_min)
    return Scenario(
        size=u(ks[0], 0.0, 2.0 * sys_params.size_avg),
        workload=u(ks[1], 0.0, 2.0 * sys_params.workload_avg),
        deadline=deadline,
        distance=u(ks[3], sys_params.distance_min, sys_params.distance_max),
        f_local=u(ks[4], sys_params.f_local_min, sys_params.f_local_max),
    )


def mask_padding(scn: Scenario, valid: Array, sys_params: SystemParams) -> Scenario:
    """Scenarios padded to a common N: users outside ``valid`` become empty tasks.

    A padded user has size 0 and workload 0 (so kept local it costs exactly
    0: no delay, no energy, importance 0, Eq. 1-6, 19, 24), the largest
    deadline, distance and local CPU of ``sys_params`` (finite features).
    ``valid``: bool, broadcastable to the fields' ``(..., N)``.
    """
    v = jnp.asarray(valid, bool)

    def fill(x, value):
        return jnp.where(v, x, jnp.asarray(value, jnp.result_type(x)))

    return Scenario(size=fill(scn.size, 0.0), workload=fill(scn.workload, 0.0),
                    deadline=fill(scn.deadline, sys_params.deadline_max),
                    distance=fill(scn.distance, sys_params.distance_max),
                    f_local=fill(scn.f_local, sys_params.f_local_max))


def pad_users(scn: Scenario, n_max: int, sys_params: SystemParams):
    """``(scenario, valid)``: fields ``(..., N)`` padded to ``(..., n_max)`` with empty tasks
    (:func:`mask_padding`); ``valid`` bool ``(..., n_max)`` marks the real users."""
    n = jnp.shape(scn.size)[-1]
    if n > n_max:
        raise ValueError(f"{n} users do not fit in {n_max}")
    pad = [(0, 0)] * (jnp.ndim(scn.size) - 1) + [(0, n_max - n)]
    padded = jax.tree.map(lambda a: jnp.pad(jnp.asarray(a), pad), scn)
    valid = jnp.broadcast_to(jnp.arange(n_max) < n, jnp.shape(padded.size))
    return mask_padding(padded, valid, sys_params), valid


def sample_mixed_scenarios(key: Array, sys_params: SystemParams, batch: int, n_min: int):
    """``batch`` scenarios of N ~ U{n_min, ..., sys_params.n_users} users each (Section V's
    task distribution), padded to ``sys_params.n_users``: returns ``(scenario, valid)``.

    The first N users of a scenario are real (``valid``); the rest are empty
    tasks (:func:`mask_padding`).  Shapes are static, so one compiled program
    trains or evaluates every N in the range.
    """
    k_scn, k_n = jax.random.split(key)
    scn = sample_scenarios(k_scn, sys_params, batch)
    n = rng.randint(k_n, (batch, 1), n_min, sys_params.n_users + 1)
    valid = jnp.arange(sys_params.n_users) < n
    return mask_padding(scn, valid, sys_params), valid


def _safe_ratio(num: Array, den: Array) -> Array:
    """num / den with 0/0 -> 0 and x/0 -> inf (x > 0), and finite gradients.

    The double-where pattern: the inner ``where`` keeps the division away from
    zero so no NaN enters the backward pass; the outer one selects the value.
    """
    ok = den > 0
    safe = num / jnp.where(ok, den, 1.0)
    return jnp.where(ok, safe, jnp.where(num > 0, jnp.inf, 0.0))


def log_snr_coeff(distance: Array, sys_params: SystemParams) -> Array:
    """log K_i with K_i = g_0 (l_0/l_i)^h p / sigma_0 [Hz], the Eq. 1 numerator.

    The received SNR with bandwidth b is K_i / b.  Computed in log space so
    that float32 never sees sigma_0 ~ 4e-21 next to products of order 1e13.
    """
    return (jnp.log(sys_params.path_loss_const) + sys_params.path_loss_exp
            * (jnp.log(sys_params.ref_distance) - jnp.log(distance))
            + jnp.log(sys_params.tx_power) - jnp.log(sys_params.noise_psd))


def uplink_rate(bandwidth: Array, distance: Array, sys_params: SystemParams) -> Array:
    """Shannon rate b log2(1 + K/b) of Eq. 1 [bit/s]; exactly 0 at b = 0.

    ``log2(1 + K/b)`` is evaluated as ``softplus(log K - log b) / ln 2``, which
    is accurate in float32 for SNRs from 1e-30 to 1e30 and has finite gradients.
    """
    ok = bandwidth > 0
    b = jnp.where(ok, bandwidth, 1.0)
    rate = b * jax.nn.softplus(log_snr_coeff(distance, sys_params) - jnp.log(b)) / LN2
    return jnp.where(ok, rate, 0.0)


def transmission_delay(size: Array, bandwidth: Array, distance: Array,
                       sys_params: SystemParams) -> Array:
    """Eq. 1: T_tra = s / (b log2(1 + g_0 (l_0/l)^h p / (b sigma_0))) [s].

    Args:
      size: s [bits]; bandwidth: b [Hz]; distance: l [m].
    Size 0 gives exactly 0; bandwidth 0 with size > 0 gives ``inf``.
    """
    return _safe_ratio(size, uplink_rate(bandwidth, distance, sys_params))


def edge_compute_delay(workload: Array, size: Array, f_alloc: Array) -> Array:
    """Eq. 2: T_com = c s / f^ser_i [s].

    Args:
      workload: c [cycles/bit]; size: s [bits]; f_alloc: server CPU share [Hz].
    Zero work gives exactly 0; no CPU with work > 0 gives ``inf``.
    """
    return _safe_ratio(workload * size, f_alloc)


def edge_delay(size: Array, workload: Array, distance: Array, bandwidth: Array,
               f_alloc: Array, sys_params: SystemParams) -> Array:
    """Eq. 3: T_edge = T_tra + T_com [s] for an offloaded task."""
    return (transmission_delay(size, bandwidth, distance, sys_params)
            + edge_compute_delay(workload, size, f_alloc))


def local_delay(workload: Array, size: Array, f_local: Array) -> Array:
    """Eq. 4: T_loc = c s / f_loc [s]."""
    return _safe_ratio(workload * size, f_local)


def edge_energy(t_tra: Array, sys_params: SystemParams) -> Array:
    """Eq. 5: E_edge = p T_tra [J] (user-side transmission energy)."""
    return sys_params.tx_power * t_tra


def local_energy(workload: Array, size: Array, f_local: Array,
                 sys_params: SystemParams) -> Array:
    """Eq. 6: E_loc = mu c s f_loc^2 [J]."""
    return sys_params.energy_coeff * workload * size * jnp.square(f_local)


def importance_weights(size: Array, workload: Array, deadline: Array,
                       sys_params: SystemParams) -> Array:
    """Eq. 19: w_i = gamma c_i^nu s_i^nu / d_i [1/s].

    Normalised workload and size are c/c_avg and s/s_avg (dimensionless); the
    deadline is floored at ``sys_params.deadline_min``.  Units: 1/s, so w T is
    dimensionless.
    """
    # where, not maximum: at an exact tie maximum splits the gradient in two.
    d = jnp.where(deadline > sys_params.deadline_min, deadline, sys_params.deadline_min)
    return (sys_params.importance_scale * (workload / sys_params.workload_avg)
            * (size / sys_params.size_avg) / d)


def _where_offload(offload: Array, edge: Array, local: Array) -> Array:
    return jnp.where(offload, edge, local)


@struct.dataclass
class Outcome:
    """Per-task results of a decision, each ``(..., N)``.

    Attributes:
      delay: service delay, inference delay included [s] (the bracket of the
        first and third terms of Eq. 11a).
      energy: user-side energy [J] (Eq. 5 or 6).
      miss: 1.0 where the service delay exceeds the deadline, else 0.0.
      t_tra, t_com: Eq. 1 and Eq. 2 for offloaded tasks, 0 for local ones [s].
      t_loc: Eq. 4 for local tasks, 0 for offloaded ones [s].
    """

    delay: Array
    energy: Array
    miss: Array
    t_tra: Array
    t_com: Array
    t_loc: Array


def task_outcomes(scn: Scenario, offload: Array, bandwidth: Array, f_alloc: Array,
                  sys_params: SystemParams, infer_edge: Array = 0.0,
                  infer_local: Array = 0.0) -> Outcome:
    """Per-task service delay, energy and deadline miss of Eq. 11a.

    Args:
      scn: the tasks, fields ``(..., N)``.
      offload: x_i (bool or 0/1), ``(..., N)``.
      bandwidth, f_alloc: the allocation [Hz], ``(..., N)``; ignored where
        ``offload`` is false.
      infer_edge: inference delay paid by an offloaded task [s] (T_e^infer of
        Eq. 35), broadcastable to ``(..., N)``.
      infer_local: inference delay paid by a local task [s] (T_l^infer of
        Eq. 34; 0 when no scheduler runs, e.g. "Local execution").
    """
    x = jnp.asarray(offload).astype(bool)
    t_tra = jnp.where(x, transmission_delay(scn.size, jnp.where(x, bandwidth, 1.0),
                                            scn.distance, sys_params), 0.0)
    t_com = jnp.where(x, edge_compute_delay(scn.workload, scn.size,
                                            jnp.where(x, f_alloc, 1.0)), 0.0)
    t_loc = jnp.where(x, 0.0, local_delay(scn.workload, scn.size, scn.f_local))
    delay = _where_offload(x, infer_edge + t_tra + t_com, infer_local + t_loc)
    energy = _where_offload(x, edge_energy(t_tra, sys_params),
                            local_energy(scn.workload, scn.size, scn.f_local, sys_params))
    miss = (delay > scn.deadline).astype(delay.dtype)
    return Outcome(delay=delay, energy=energy, miss=miss, t_tra=t_tra, t_com=t_com,
                   t_loc=t_loc)


def objective(outcome: Outcome, sys_params: SystemParams) -> Array:
    """Eq. 11a summed over tasks: sum_i alpha delay_i + beta E_i + delta miss_i.

    Returns shape ``(...)`` (the task axis summed).  Units mix s, J and counts
    as the paper does; alpha, beta, delta convert them.
    """
    per_task = (sys_params.alpha * outcome.delay + sys_params.beta * outcome.energy
                + sys_params.delta * outcome.miss)
    return jnp.sum(per_task, axis=-1)


def weighted_delay(scn: Scenario, offload: Array, bandwidth: Array, f_alloc: Array,
                   sys_params: SystemParams, infer_edge: Array = 0.0) -> Array:
    """sum_i w_i (T_infer + T_tra + T_com) over offloaded tasks (Eq. 18-20 losses).

    The allocation objective of Section IV.A (``infer_edge = 0``) and of
    Fig. 4(b) (with the allocator's inference delay).  Dimensionless; shape
    ``(...)``.  Tasks with w_i = 0 contribute exactly 0 even if their delay is
    infinite.
    """
    x = jnp.asarray(offload).astype(bool)
    w = importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    out = task_outcomes(scn, x, bandwidth, f_alloc, sys_params, infer_edge=infer_edge)
    active = x & (w > 0)
    term = jnp.where(active, w * jnp.where(active, out.delay, 0.0), 0.0)
    return jnp.sum(term, axis=-1)


def cost_local(scn: Scenario, sys_params: SystemParams, infer_local: Array = 0.0) -> Array:
    """Eq. 24: C_loc = alpha w_i (T_l^infer + T_loc) + beta E_loc, per task.

    ``infer_local`` is the scheduler's inference delay [s] (Eq. 34).
    """
    w = importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    t = infer_local + local_delay(scn.workload, scn.size, scn.f_local)
    return (sys_params.alpha * w * t
            + sys_params.beta * local_energy(scn.workload, scn.size, scn.f_local, sys_params))


def cost_edge(scn: Scenario, bandwidth: Array, f_alloc: Array, sys_params: SystemParams,
              infer_edge: Array = 0.0) -> Array:
    """Eq. 25: C_edge = alpha w_i (T_e^infer + T_edge) + beta E_edge, per task.

    ``infer_edge`` is the scheduler + policy + allocator inference delay [s]
    (Eq. 35).  Tasks with w_i = 0 have a 0 delay term; a task with no
    bandwidth and size > 0 has infinite energy (and hence cost), as it should.
    """
    w = importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    t_tra = transmission_delay(scn.size, bandwidth, scn.distance, sys_params)
    t = infer_edge + t_tra + edge_compute_delay(scn.workload, scn.size, f_alloc)
    delay_term = jnp.where(w > 0, w * jnp.where(w > 0, t, 0.0), 0.0)
    return sys_params.alpha * delay_term + sys_params.beta * edge_energy(t_tra, sys_params)
