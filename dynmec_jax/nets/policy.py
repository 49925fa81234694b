"""The policy network of Section IV.C: which sub-network (width, depth) serves a request.

* :class:`Policy`: a Flax MLP (one hidden layer of 32 LeakyReLU units, as in
  Section V) from a permutation-invariant summary of the offloaded tasks
  (:func:`policy_features`) to real-valued ``(width, depth)``, rounded and
  clipped to ``[1, K] x [1, L]`` by :func:`choose`.
* Variants (Section V.A): ``"full"`` (policy picks width and depth),
  ``"fix_width"`` (width = K, policy picks depth), ``"fix_depth"`` (depth = L,
  policy picks width), and ``"fixed"`` (no policy: a given (width, depth),
  e.g. the RL baseline of Section V.B with the largest network).
  :func:`allowed_subnets` is each variant's action set.

Policy inputs (a choice: the paper does not list them).  The label of Eq. 28
trades the allocator's quality against its inference delay, which is
lambda M_Alloc(k, l, n) / f_ser with M_Alloc linear in the number n of served
users.  The summary therefore holds, for the offloaded set S
(:data:`POLICY_INPUTS`, 10 numbers): log n (0 if S is empty); the means over
S of the five normalised log features of
:func:`~dynmec_jax.nets.features.normalize_features` (what the allocator
sees); log of the summed normalised importance weights ``sum_S w_i d_ref /
gamma`` (Eq. 19, dimensionless); and log(f_ser / f_ref), log(b_max / b_ref),
log(lambda / lambda_ref) with the reference being the allocator's training
system, so one policy can serve sweeps of the server.  It is invariant to the
order of users and defined for any N.  Size: 10 -> 32 -> 2, 418 parameters
and 384 MACs (Eq. 8 with zeta = 1; the O(N) sums of the summary are not
counted, as bias adds and activations are not).

Outputs: the last layer's output is offset by the centre ``((K+1)/2,
(L+1)/2)`` of the action box, so an untrained policy starts mid-range.
The labels (Eq. 28) and loss (Eq. 29) are in :mod:`dynmec_jax.costs`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dynmec_jax import accounting, system
from dynmec_jax.nets import features, scheduler
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: Names of the policy inputs (:func:`policy_features`), in order.
POLICY_INPUTS = ("log_n_served", "mean_log_size", "mean_log_workload", "mean_log_deadline",
                 "mean_log_distance", "mean_log_f_local", "log_sum_importance",
                 "log_f_server_ratio", "log_bandwidth_ratio", "log_efficiency_ratio")
N_POLICY_INPUTS = accounting.N_POLICY_INPUTS
assert len(POLICY_INPUTS) == N_POLICY_INPUTS
#: Policy variants of Section V.A-B (module doc).
VARIANTS = ("full", "fix_width", "fix_depth", "fixed")


def _safe_log(x: Array, ok: Array) -> Array:
    return jnp.where(ok, jnp.log(jnp.where(ok, x, 1.0)), 0.0)


def policy_features(scn: Scenario, offload: Array, scales: features.FeatureScales,
                    sys_params: SystemParams, ref_sys_params: SystemParams,
                    cell: Array | None = None) -> Array:
    """Permutation-invariant summary of the offloaded tasks, ``(..., 10)`` (dimensionless).

    See the module doc and :data:`POLICY_INPUTS`.  ``scn`` fields ``(B, N)``
    (or ``(N,)``); ``offload`` bool ``(B, N)`` or a stack of masks
    ``(B, M, N)`` (then the scenario is broadcast over M).  An empty set gives
    zeros for the set statistics (finite values and gradients).
    ``ref_sys_params``: the reference system (the allocator's training one).
    ``cell``: None, or cell features ``(C,)`` of one cell
    (:func:`dynmec_jax.cell.cell_features`), appended: ``(..., 10 + C)``.
    """
    x = jnp.asarray(offload).astype(bool)
    z = features.normalize_features(scn, scales)                         # (..., N, 5)
    w = system.importance_weights(scn.size, scn.workload, scn.deadline, sys_params)
    w = w * scales.deadline / sys_params.importance_scale            # dimensionless
    extra = x.ndim - jnp.ndim(scn.size)
    for _ in range(extra):
        z = jnp.expand_dims(z, -3)
        w = jnp.expand_dims(w, -2)
    n = jnp.sum(x, axis=-1)
    nf = n.astype(z.dtype)
    has = n > 0
    sums = jnp.sum(jnp.where(x[..., None], z, 0.0), axis=-2)
    means = jnp.where(has[..., None], sums / jnp.where(has, nf, 1.0)[..., None], 0.0)
    wsum = jnp.sum(jnp.where(x, w, 0.0), axis=-1)
    server = jnp.stack([jnp.log(sys_params.f_server / ref_sys_params.f_server),
                        jnp.log(sys_params.bandwidth_max / ref_sys_params.bandwidth_max),
                        jnp.log(sys_params.efficiency / ref_sys_params.efficiency)])
    server = jnp.broadcast_to(server.astype(z.dtype), n.shape + (3,))
    parts = [_safe_log(nf, has)[..., None], means, _safe_log(wsum, wsum > 0)[..., None], server]
    if cell is not None:
        c = jnp.asarray(cell, z.dtype)
        parts.append(jnp.broadcast_to(c, n.shape + c.shape[-1:]))
    return jnp.concatenate(parts, axis=-1)


class Policy(nn.Module):
    """Policy MLP of Section IV.C: ``10 -> hidden (LeakyReLU) -> 2`` = (width, depth).

    The output is ``Dense(2)(h) + ((K+1)/2, (L+1)/2)`` in units of experts
    and layers (real-valued; :func:`choose` rounds and clips).  Parameters:
    ``10 hidden + hidden + 2 hidden + 2`` = 418 at hidden = 32; MACs
    :func:`dynmec_jax.accounting.policy_macs` (384).

    Attributes:
      n_experts: K; n_layers: L (set the output offset).
      hidden: hidden units (Section V: 32).
      negative_slope: LeakyReLU slope.
    """

    n_experts: int = 10
    n_layers: int = 3
    hidden: int = scheduler.HIDDEN
    negative_slope: float = scheduler.NEGATIVE_SLOPE

    @nn.compact
    def __call__(self, features: Array) -> Array:
        h = nn.leaky_relu(nn.Dense(self.hidden, name="hidden")(features), self.negative_slope)
        centre = jnp.array([(self.n_experts + 1) / 2, (self.n_layers + 1) / 2], h.dtype)
        return nn.Dense(2, name="out")(h) + centre


def policy_params_count(hidden: int = scheduler.HIDDEN) -> int:
    """Trainable parameters of :class:`Policy` [count]."""
    return accounting.mlp_params(accounting.policy_dims(N_POLICY_INPUTS, hidden))


def init_policy(key: Array, model: Policy, n_cell: int = 0) -> dict:
    """Initial parameters of ``model`` reading :data:`N_POLICY_INPUTS` + ``n_cell`` inputs."""
    return model.init(key, jnp.zeros((N_POLICY_INPUTS + n_cell,), jnp.float32))


def check_variant(variant: str) -> None:
    """Raises ``ValueError`` unless ``variant`` is one of :data:`VARIANTS`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def choose(out: Array, n_experts: int, n_layers: int, variant: str = "full",
           fixed: tuple | None = None):
    """Rounds and clips the policy output ``(..., 2)`` to ints (width, depth), each ``(...)``.

    ``variant``: "full" uses both outputs; "fix_width" sets width = K;
    "fix_depth" sets depth = L; "fixed" returns ``fixed`` = (width, depth)
    (default (K, L)) and ignores ``out``.  int32, in ``[1, K] x [1, L]``.
    """
    check_variant(variant)
    shape = out.shape[:-1]
    r = jnp.round(out).astype(jnp.int32)
    width = jnp.clip(r[..., 0], 1, n_experts)
    depth = jnp.clip(r[..., 1], 1, n_layers)
    if variant in ("fix_width", "fixed"):
        width = jnp.full(shape, n_experts if variant == "fix_width" or fixed is None
                         else fixed[0], jnp.int32)
    if variant in ("fix_depth", "fixed"):
        depth = jnp.full(shape, n_layers if variant == "fix_depth" or fixed is None
                         else fixed[1], jnp.int32)
    return width, depth


def allowed_subnets(n_experts: int, n_layers: int, variant: str = "full",
                    fixed: tuple | None = None) -> np.ndarray:
    """Bool ``(K, L)``: the sub-networks a variant may choose (Eq. 28 restricted)."""
    check_variant(variant)
    a = np.zeros((n_experts, n_layers), bool)
    if variant == "full":
        a[:] = True
    elif variant == "fix_width":
        a[n_experts - 1, :] = True
    elif variant == "fix_depth":
        a[:, n_layers - 1] = True
    else:
        k, d = (n_experts, n_layers) if fixed is None else fixed
        a[k - 1, d - 1] = True
    return a
