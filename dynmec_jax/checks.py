"""Checks of user-given tasks (Eq. 7): signs, finiteness and physical bounds.

The maths runs in float32; a value that passes a float64 check can still
overflow there (a size of 1e39 bits is inf in float32).  :data:`SCENARIO_BOUNDS`
bounds every feature and the products Eq. 1-6 and 19 form from them so that
nothing overflows, and:

* :func:`validate_scenario`: the host-side check (``ValueError`` naming the
  field and the first bad index), used by ``Pipeline.decide``, the deciders
  and the task-file reader;
* :func:`check_scenario`: the same rules as ``checkify`` checks, for traced
  callers;
* :func:`tasks_ok`: the same rules as data (bool per task), jit-able; a
  decision's ``input_ok`` flag.

Units: SI (bits, cycles/bit, s, m, cycles/s).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from dynmec_jax.system import (
    Scenario,
    SystemParams,
    validate,
)

Array = Any


#: Field checks of :func:`validate_scenario`: (field, lower bound, whether 0 is allowed).
SCENARIO_RULES = (("size", "finite and >= 0 [bits]", True),
                  ("workload", "finite and >= 0 [cycles/bit]", True),
                  ("deadline", "finite and > 0 [s]", False),
                  ("distance", "finite and > 0 [m]", False),
                  ("f_local", "finite and > 0 [cycles/s]", False))


#: Physical bounds of user-given tasks, checked by :func:`check_bounds` (and so by
#: :func:`validate_scenario` and ``Pipeline.decide``): ``(name, low, high, unit, reason)``, both
#: ends inclusive.  The first five rows bound the Eq. 7 features; the last three the products the
#: maths forms from them (computed with Table II's gamma, c_avg, s_avg, d_min and mu), so a later
#: widening of one field cannot silently widen a product.
#:
#: Why these values.  The maths runs in float32 (largest finite value 3.4e38): a size of 1e39 bits
#: is inf there, and 1e300 passes every float64 check.  Inside these bounds the products of Eq.
#: 1-6 and 19 are small (c s <= 1e16 cycles, Eq. 4's c s / f_loc <= 1e16 s, f_loc^2 <= 1e24, E_loc
#: <= 1e20 J, w <= 7.5e14 /s), and the networks' log-features (``nets.features``) stay within 16.1
#: (size 1e10 against 1 kbit) of their training scales (below, they are floored at log 1e-4: a CPU
#: under 15 kHz or a deadline under 16 us looks the same to them).  What can still overflow is a
#: delay: a task given a share of bandwidth or CPU that float32 flushes to 0 has an infinite delay
#: (Eq. 1-3).  Measured with the shipped pipeline on scenarios of 1 to 1,024 tasks with every
#: field at its bounds in every combination, and log-uniform in between: decisions and outcomes
#: finite; smallest share of an offloaded task 3e-24 of the total (a flush needs ~1e-38); largest
#: delay 5e15 s, energy 5e13 J, w T (Eq. 24-25) 1e25; float32 within 5e-6 of float64.  With size
#: up to 1e14 bits, workload 1e8, f_loc 1e15 (and deadline and distance 100x wider) the smallest
#: share was already 1e-33, and at 1e20, 1e10 and 1e18 shares flushed to 0.
#: ``tests/test_taskfile.py`` repeats the corner cases.
SCENARIO_BOUNDS = (
    ("size", 0.0, 1e10, "bits",
     "1.25 GB, beyond any offloadable task; keeps c s <= 1e16 cycles (Eq. 1-6)"),
    ("workload", 0.0, 1e6, "cycles/bit",
     "about 1000x the heaviest MEC workloads; keeps c s <= 1e16 cycles (Eq. 2, 4, 6)"),
    ("deadline", 1e-6, 1e4, "s",
     "1 us is below the pipeline's own inference delay (Eq. 34-35); 1e4 s is 2.8 h"),
    ("distance", 1e-2, 1e5, "m",
     "1 cm to 100 km (the SNR coefficient of Eq. 1 is then ~25 Hz, the rate <= 36 bit/s)"),
    ("f_local", 1.0, 1e12, "cycles/s",
     "1 cycle/s to 1 THz; keeps f_loc^2 <= 1e24 (Eq. 6) and c s / f_loc <= 1e16 s (Eq. 4)"),
    ("size*workload", 0.0, 1e16, "cycles",
     "the cycles c s of Eq. 2, 4 and 6; 1e16 at the field bounds"),
    ("importance", 0.0, 1e15, "1/s",
     "w = gamma (c/c_avg)(s/s_avg)/max(d, d_min) of Eq. 19 (Table II); 7.5e14 at the field "
     "bounds, so w T of Eq. 24-25 and the sum of w over a scenario stay finite"),
    ("local_energy", 0.0, 1e20, "J",
     "E_loc = mu c s f_loc^2 of Eq. 6 (Table II mu = 1e-20); 1e20 at the field bounds"),
)


_FIELD_NAMES = tuple(name for name, _, _ in SCENARIO_RULES)


def bound_values(fields, xp=np) -> dict:
    """Every quantity of :data:`SCENARIO_BOUNDS` for tasks ``fields`` (a mapping or a
    :class:`Scenario`; arrays of one shape, SI units), by name.

    The products use Table II's gamma, c_avg, s_avg, d_min (Eq. 19) and mu (Eq. 6), in the
    same order of operations as :func:`importance_weights` and :func:`local_energy`.
    ``xp``: ``numpy`` (host, float64) or ``jax.numpy`` (traced).
    """
    get = fields.__getitem__ if isinstance(fields, dict) else lambda k: getattr(fields, k)
    s, c, d, f = get("size"), get("workload"), get("deadline"), get("f_local")
    sp = SystemParams()
    d_floor = xp.where(d > sp.deadline_min, d, sp.deadline_min)
    return {"size": s, "workload": c, "deadline": d, "distance": get("distance"), "f_local": f,
            "size*workload": c * s,
            "importance": (sp.importance_scale * (c / sp.workload_avg) * (s / sp.size_avg)
                           / d_floor),
            "local_energy": sp.energy_coeff * c * s * (f * f)}


def check_bounds(scn) -> None:
    """Raises ``ValueError`` if a task of ``scn`` is outside :data:`SCENARIO_BOUNDS`.

    ``scn``: a :class:`Scenario` (or mapping) of finite float64 arrays, e.g. after the sign
    checks of :func:`validate_scenario`.  The message names the quantity, the first bad
    index, the bound, its unit and its reason, e.g. ``scenario field 'size' at index 3 is
    1e+39; it must be in [0, 1e+10] bits (1.25 GB, ...)``.  These bounds keep Eq. 1-6, 19
    and 24-25 finite in float32 (see :data:`SCENARIO_BOUNDS`).
    """
    with np.errstate(all="ignore"):   # an overflowing product is inf, and refused
        values = {k: np.asarray(v, dtype=np.float64) for k, v in bound_values(scn).items()}
    for name, lo, hi, unit, reason in SCENARIO_BOUNDS:
        a = values[name]
        with np.errstate(invalid="ignore"):
            bad = ~((a >= lo) & (a <= hi))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            at = idx[0] if len(idx) == 1 else idx
            rule = f"it must be in [{lo:g}, {hi:g}] {unit}: {reason}"
            if name in _FIELD_NAMES:
                raise ValueError(f"scenario field {name!r} at index {at} is "
                                 f"{float(a[idx])!r}; {rule}")
            raise ValueError(f"scenario task at index {at}: {name} is {float(a[idx])!r} "
                             f"{unit}; {rule}")


def validate_scenario(scn: Scenario, sys_params: SystemParams | None = None) -> Scenario:
    """Host-side check of user-given tasks (Eq. 7); returns them as float64 NumPy arrays.

    Every field must be a real array of the same shape ``(N,)`` or ``(B, N)``
    with N >= 1; sizes and workloads finite and >= 0; deadlines, distances and
    local CPUs finite and > 0; and every task within :data:`SCENARIO_BOUNDS`
    (:func:`check_bounds`: the values and products that keep Eq. 1-6 and 19 finite in
    float32, the dtype the networks and the outcomes run in).  ``sys_params``
    (optional) is checked with :func:`validate` too.  Raises ``ValueError``
    naming the field (or product) and the first bad index, e.g. ``scenario
    field 'size' at index (0, 3) is nan; it must be finite and >= 0 [bits]``.

    Jitted code does not call this (it cannot raise on traced values); a
    traced caller that wants the check inside ``jit`` wraps its function with
    ``jax.experimental.checkify.checkify`` and calls :func:`check_scenario`.
    """
    if sys_params is not None:
        validate(sys_params)
    arrays = {}
    for name, _, _ in SCENARIO_RULES:
        if not hasattr(scn, name):
            raise ValueError(f"scenario lacks field {name!r}")
        try:
            a = np.asarray(getattr(scn, name), dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"scenario field {name!r} is not numeric: {e}") from e
        if a.ndim not in (1, 2) or a.shape[-1] < 1:
            raise ValueError(f"scenario field {name!r} must have shape (N,) or (B, N) with "
                             f"N >= 1, got {a.shape}")
        arrays[name] = a
    shape = arrays["size"].shape
    for name, a in arrays.items():
        if a.shape != shape:
            raise ValueError(f"scenario field {name!r} has shape {a.shape}, but 'size' has "
                             f"{shape}")
    for name, rule, zero_ok in SCENARIO_RULES:
        a = arrays[name]
        bad = ~np.isfinite(a) | ((a < 0) if zero_ok else (a <= 0))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            at = idx[0] if len(idx) == 1 else idx
            raise ValueError(f"scenario field {name!r} at index {at} is {float(a[idx])!r}; "
                             f"it must be {rule}")
    check_bounds(arrays)
    return Scenario(**arrays)


def tasks_ok(scn: Scenario) -> Array:
    """Bool ``(..., N)``: each task passes :func:`validate_scenario`'s rules (finite, signs)
    and :data:`SCENARIO_BOUNDS`, computed in the input's dtype with a slack of a few
    rounding errors; jit-able (what :func:`check_scenario` checks, as data)."""
    ok = jnp.ones(jnp.shape(scn.size), bool)
    for name, _, zero_ok in SCENARIO_RULES:
        a = jnp.asarray(getattr(scn, name))
        ok = ok & jnp.isfinite(a) & ((a >= 0) if zero_ok else (a > 0))
    values = bound_values(scn, jnp)
    for name, lo, hi, _, _ in SCENARIO_BOUNDS:
        a = values[name]
        slack = 8 * jnp.finfo(a.dtype).eps
        ok = ok & (a >= lo * (1 - slack)) & (a <= hi * (1 + slack))
    return ok


def check_scenario(scn: Scenario) -> None:
    """:func:`validate_scenario`'s value rules as ``checkify`` checks, for traced callers.

    Use inside a function transformed by ``jax.experimental.checkify.checkify``
    (errors are returned, not raised, until ``err.throw()``).  The bounds of
    :data:`SCENARIO_BOUNDS` are checked too, in the input's dtype with a slack of a
    few rounding errors (a product that overflows float32 is inf, and fails).
    """
    for name, rule, zero_ok in SCENARIO_RULES:
        a = jnp.asarray(getattr(scn, name))
        ok = jnp.isfinite(a) & ((a >= 0) if zero_ok else (a > 0))
        checkify.check(jnp.all(ok), f"scenario field {name!r} must be {rule}")
    values = bound_values(jax.tree.map(jnp.asarray, scn), xp=jnp)
    for name, lo, hi, unit, _ in SCENARIO_BOUNDS:
        a = values[name]
        slack = 8 * jnp.finfo(a.dtype).eps       # the products' rounding in the input dtype
        checkify.check(jnp.all((a >= lo * (1 - slack)) & (a <= hi * (1 + slack))),
                       f"scenario {name!r} must be in [{lo:g}, {hi:g}] {unit}")
