"""Input features of every network: log-ratios of the Eq. 7 task features.

The allocator, the scheduler and the policy all see a task through
:func:`normalize_features`: the logarithms of its five features (Eq. 7) over
reference scales fixed at training time (:class:`FeatureScales`).  The
optimal CPU share of the weighted-delay problem is ``f_i ∝ sqrt(w_i c_i
s_i)`` with ``w_i = gamma c_i s_i / d_i`` (Eq. 19), i.e. ``log f_i = log c_i +
log s_i - 0.5 log d_i + const``: linear in these inputs.

Units: the features are dimensionless; scales in SI units.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import struct

from dynmec_jax.system import Scenario, SystemParams

Array = Any

# Smallest ratio (feature / reference scale) fed to the logarithm: size 0 and
# workload 0 (both possible under U[0, 2 avg]) map to log(1e-4) ~ -9.2.
FEATURE_FLOOR = 1e-4


# ----------------------------------------------------------------------------
# Input features
# ----------------------------------------------------------------------------

@struct.dataclass
class FeatureScales:
    """Reference scales of the five input features (Eq. 7), SI units.

    A frozen pytree (may be traced).  Each feature ``u`` enters the model as
    ``log(max(u / scale, FEATURE_FLOOR))``, see :func:`normalize_features`.

    Attributes:
      size: s_ref [bits] (default s_avg = 1 kbit).
      workload: c_ref [cycles/bit] (default c_avg = 797.5).
      deadline: d_ref [s] (default d_max = 160 ms).
      distance: l_ref [m] (default l_max = 500 m).
      f_local: f_ref [cycles/s] (default f_loc,max = 0.15 GHz).
    """

    size: Array
    workload: Array
    deadline: Array
    distance: Array
    f_local: Array

    @classmethod
    def from_params(cls, sys_params: SystemParams) -> FeatureScales:
        """Scales from the sampling ranges of Section V: s_avg [bits], c_avg
        [cycles/bit], d_max [s], l_max [m] and f_loc,max [cycles/s]."""
        return cls(size=sys_params.size_avg, workload=sys_params.workload_avg,
                   deadline=sys_params.deadline_max, distance=sys_params.distance_max,
                   f_local=sys_params.f_local_max)


def normalize_features(scn: Scenario, scales: FeatureScales,
                       floor: float = FEATURE_FLOOR) -> Array:
    """Per-user model input: log-ratios of the Eq. 7 features, ``(..., N, 5)``.

    ``z = [log(s/s_ref), log(c/c_ref), log(d/d_ref), log(l/l_ref),
    log(f_loc/f_ref)]`` (dimensionless), each ratio floored at ``floor`` so
    that size 0 or workload 0 stays finite.  In these coordinates the optimal
    log CPU share ``log c + log s - 0.5 log d + const`` (from Eq. 19 and the
    KKT conditions of the weighted delay) is linear.

    Args:
      scn: tasks with fields ``(..., N)`` in SI units.
      scales: reference scales, e.g. ``FeatureScales.from_params(sys_params)``.
      floor: smallest ratio passed to the logarithm.
    """
    def f(x, ref):
        x = jnp.asarray(x)
        return jnp.log(jnp.maximum(x / ref, floor))

    return jnp.stack([f(scn.size, scales.size), f(scn.workload, scales.workload),
                      f(scn.deadline, scales.deadline), f(scn.distance, scales.distance),
                      f(scn.f_local, scales.f_local)], axis=-1)
