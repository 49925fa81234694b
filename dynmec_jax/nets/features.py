"""Input features of every network: log-ratios of the Eq. 7 task features.

The allocator, the scheduler and the policy all see a task through
:func:`normalize_features`: the logarithms of its five features (Eq. 7) over
reference scales fixed at training time (:class:`FeatureScales`).  The
optimal CPU share of the weighted-delay problem is ``f_i ∝ sqrt(w_i c_i
s_i)`` with ``w_i = gamma c_i s_i / d_i`` (Eq. 19), i.e. ``log f_i = log c_i +
log s_i - 0.5 log d_i + const``: linear in these inputs.

The per-user scheduler can also read :func:`cost_features` (beyond the
paper): each task's stand-alone edge cost against its local cost (Eq. 1-2,
24-25) in its cell, log-ratios as well.

Units: the features are dimensionless; scales in SI units.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import struct

from dynmec_jax import system
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


# ----------------------------------------------------------------------------
# Per-user cost features (beyond the paper)
# ----------------------------------------------------------------------------

#: Number of per-user cost features (:func:`cost_features`).
N_COST_FEATURES = 3
#: Each cost feature is a log-ratio clipped to [-COST_CLIP, COST_CLIP], then divided by
#: COST_SCALE (so it lies in [-3, 3]).
COST_CLIP = 12.0
COST_SCALE = 4.0
#: Floor on the costs before the logarithm (a task of size 0 or workload 0 costs 0).
COST_FLOOR = 1e-9


def stand_alone_costs(scn: Scenario, sys_params: SystemParams) -> tuple[Array, Array, Array]:
    """``(channel, server, local)`` costs of each task offloaded alone, ``(..., N)`` each.

    Task i offloaded alone gets the whole channel ``b_max`` and the whole
    server ``f_ser`` (no inference delay): with T_tra of Eq. 1 at b = b_max
    and T_com of Eq. 2 at f = f_ser, its Eq. 25 cost splits into the
    channel's part ``(alpha w + beta p) T_tra`` and the server's part
    ``alpha w T_com``; ``local`` is C_loc of Eq. 24.  ``sys_params``: one cell
    (scalar fields).  Units of Eq. 11a (as the costs).
    """
    sp = sys_params
    s, c = jnp.asarray(scn.size), jnp.asarray(scn.workload)
    w = system.importance_weights(s, c, scn.deadline, sp)
    t_tra = system.transmission_delay(s, jnp.full_like(s, sp.bandwidth_max), scn.distance, sp)
    t_com = system.edge_compute_delay(c, s, jnp.full_like(s, sp.f_server))
    return ((sp.alpha * w + sp.beta * sp.tx_power) * t_tra, sp.alpha * w * t_com,
            system.cost_local(scn, sp))


def dominated(scn: Scenario, sys_params: SystemParams) -> Array:
    """Tasks that offloading can only make dearer, bool ``(..., N)`` (beyond the paper).

    Task i is dominated when its stand-alone edge cost (the whole channel and
    server, :func:`stand_alone_costs`) exceeds its local cost C_loc (Eq. 24).
    Offloaded in any set it then costs more than C_loc (a share of the channel
    and server only lengthens Eq. 1-2, and the inference delay of Eq. 35 is at
    least that of Eq. 34), and keeping it local leaves the others more of
    both; so an optimal decision (with the optimal allocation) never offloads
    it.  ``sys_params``: one cell.
    """
    channel, server, local = stand_alone_costs(scn, sys_params)
    return channel + server > local


def cost_features(scn: Scenario, sys_params: SystemParams) -> Array:
    """Per-user stand-alone cost ratios of one cell, ``(..., N, 3)`` (dimensionless).

    With C_edge^alone = channel + server and C_loc from
    :func:`stand_alone_costs`, the features are

    * ``log(C_edge^alone / C_loc)``: above 0 exactly for a :func:`dominated`
      task;
    * ``log(channel / C_loc)``: the channel's part (it grows as the channel
      is shared);
    * ``log(server / C_loc)``: the server's part,

    each clipped to [-:data:`COST_CLIP`, :data:`COST_CLIP`] and divided by
    :data:`COST_SCALE`, costs floored at :data:`COST_FLOOR` (an empty task:
    0).  They fold the cell (bandwidth, channel, server, beta) into each
    task: the path loss ``g_0 (l_0/l)^h`` is a product of the exponent and
    the log distance, which the log-ratio inputs of :func:`normalize_features`
    and the cell features give an MLP only as a sum.  ``sys_params``: one cell
    (scalar fields); SI units in, dimensionless out.
    """
    channel, server, local = stand_alone_costs(scn, sys_params)
    log_loc = jnp.log(jnp.maximum(local, COST_FLOOR))

    def ratio(x):
        r = jnp.log(jnp.maximum(x, COST_FLOOR)) - log_loc
        return jnp.clip(r, -COST_CLIP, COST_CLIP) / COST_SCALE

    return jnp.stack([ratio(channel + server), ratio(channel), ratio(server)], axis=-1)
