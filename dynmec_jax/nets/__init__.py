"""Flax networks and their input features: the allocator (MoE and static), scheduler, policy.

Modules: :mod:`~dynmec_jax.nets.features` (Eq. 7 inputs),
:mod:`~dynmec_jax.nets.moe` (Eq. 12-17, 32), :mod:`~dynmec_jax.nets.static`
(Section V.A's static model), :mod:`~dynmec_jax.nets.scheduler` (Eq. 21-22)
and :mod:`~dynmec_jax.nets.policy` (Section IV.C).  Nothing here computes a
cost or trains; see :mod:`dynmec_jax.allocator`, :mod:`dynmec_jax.costs` and
:mod:`dynmec_jax.train`.
"""

from dynmec_jax.nets import features, moe, policy, scheduler, static

__all__ = ["features", "moe", "policy", "scheduler", "static"]
