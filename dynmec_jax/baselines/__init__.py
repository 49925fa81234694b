"""Allocation baselines: the exact (KKT) optimum and the equal share."""

from dynmec_jax.baselines.equal import equal_allocation
from dynmec_jax.baselines.optimal import optimal_allocation, optimal_allocation_ops

__all__ = ["equal_allocation", "optimal_allocation", "optimal_allocation_ops"]
