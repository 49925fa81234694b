"""Equal-share baseline: b_max and f_ser split equally among offloaded users."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from dynmec_jax import system
from dynmec_jax.system import Scenario, SystemParams

Array = Any


def equal_allocation(scn: Scenario, offload_mask: Array,
                     sys_params: SystemParams) -> tuple[Array, Array]:
    """Equal split of the budgets of Eq. 11i and 11k among offloaded users.

    b_i = b_max / n and f_i = f_ser / n for the n offloaded users, 0 for the
    others (and all 0 when none is offloaded).  Feasible for Eq. 11h-11k.

    Args:
      scn: the tasks, fields ``(..., N)`` (only the shape is used).
      offload_mask: x_i, bool or 0/1, broadcastable to ``(..., N)``.
      sys_params: the system (``bandwidth_max`` [Hz], ``f_server`` [cycles/s]).
    Returns:
      ``(bandwidth [Hz], f_alloc [cycles/s])``, each ``(..., N)``.
    """
    size = system.as_scenario(scn).size
    served = jnp.broadcast_to(jnp.asarray(offload_mask).astype(bool), jnp.shape(size))
    n = jnp.sum(served, axis=-1, keepdims=True)
    share = jnp.where(served, 1.0 / jnp.maximum(n, 1).astype(size.dtype), 0.0)
    return sys_params.bandwidth_max * share, sys_params.f_server * share
