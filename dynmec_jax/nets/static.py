"""Section V.A's static allocation network (the baseline of Figs. 5-6).

A per-user MLP ``5 -> 384 -> 384 -> 384`` with the MoE's two linear heads
(Eq. 18, 20); it has one size, so width and depth do not apply.
Parameters and MACs: :func:`dynmec_jax.accounting.static_model_params` and
:func:`~dynmec_jax.accounting.static_model_macs`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from dynmec_jax import accounting


class StaticAllocator(nn.Module):
    """Section V.A's static model: a per-user MLP 5 -> 384 -> 384 -> 384, heads A/B.

    "A conventional static neural network ... with the same structure as the
    deepest expert module and the number of neurons in the hidden layer is
    384": read as one per-user MLP with ``n_layers`` LeakyReLU layers of
    ``hidden`` units and the same two linear heads (Eq. 18, 20).  Same call
    signature as :class:`~dynmec_jax.nets.moe.MoEAllocator`; width, depth and
    ``layer_rows`` are ignored (it cannot change its size) and the returned "gates" are ones
    ``(..., N, 1)``.  Parameters: :func:`accounting.static_model_params`.
    """

    hidden: int = 384
    n_layers: int = 3
    negative_slope: float = 0.01
    n_features: int = accounting.N_FEATURES

    @property
    def n_experts(self) -> int:
        return 1

    @nn.compact
    def __call__(self, z, width=None, depth=None, noise_key=None, gate_noise=None,
                 layer_rows=None):
        del width, depth, noise_key, gate_noise, layer_rows
        gain = 2.0 / (1.0 + self.negative_slope ** 2)
        init = nn.initializers.variance_scaling(gain, "fan_in", "normal")
        h = z
        for i in range(self.n_layers):
            h = nn.leaky_relu(nn.Dense(self.hidden, kernel_init=init, name=f"layer{i}")(h),
                              self.negative_slope)
        logits = nn.Dense(2, name="heads")(h)
        return logits, jnp.ones(z.shape[:-1] + (1,), z.dtype)
