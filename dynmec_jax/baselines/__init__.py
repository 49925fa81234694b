"""Baselines: the exact (KKT) allocation, the equal share, and greedy offloading."""

from dynmec_jax.baselines.equal import equal_allocation
from dynmec_jax.baselines.greedy import greedy_offloading
from dynmec_jax.baselines.optimal import optimal_allocation, optimal_allocation_ops

__all__ = ["equal_allocation", "greedy_offloading", "optimal_allocation",
           "optimal_allocation_ops"]
