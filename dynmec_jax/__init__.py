"""dynmec_jax: dynamic-MoE resource management for mobile edge computing, in JAX.

Reproduces Ma, Cheng et al., "Dynamic Neural Network-Based Resource Management
for Mobile Edge Computing in 6G Networks".  Modules: ``system`` (Eq. 1-7, 11a,
19, 24-25), ``accounting`` (Eq. 8-10, 30-35), ``nets`` (the Flax networks),
``allocator`` (Eq. 12-20), ``costs`` (Eq. 23-29, 34-35), ``pipeline``,
``train`` (Fig. 2(b), Algorithm 1), ``baselines``, ``evaluation`` and
``experiments`` (Section V); the layout is in docs/layout.md.
"""

from dynmec_jax import accounting, system

__all__ = ["accounting", "system"]
__version__ = "0.1.0"
