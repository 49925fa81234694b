"""Operation and parameter counts (Eq. 8-10, 30-35) and the inference-delay model.

Conventions (docs/reproduction.md, "MAC counting"):

* One MAC is one multiply-accumulate.  A dense layer ``D_in -> D_out`` costs
  ``M = zeta D_in D_out + iota`` MACs per input vector (Eq. 8) with
  ``zeta = 1`` and ``iota = 0`` by default: the bias add and the activation are
  not counted (the usual "thop" convention).  Both are arguments, so the
  paper's apparent "2 operations per MAC" convention is ``zeta=2``.
* The allocation model runs per user: every served (offloaded) user's 5
  features pass through the gate and its active experts, so the model's MACs
  scale with the number of served users.  Table I's parameter count (87,040
  dynamic parameters for ten 5 -> 64 -> 64 -> 64 experts) only works out this
  way.
* "dynamic" counts what changes with (width, depth): the active experts'
  layers (Eq. 30-33) plus the gate-weighted combination of their outputs
  (``width * hidden`` MACs per user).  "fixed" counts the rest: gate logits
  (noise is off at inference) and the two output heads.
* The inference delay of Eq. 9 is ``T = lambda M / f`` with ``f = f_ser``: the
  models run on the server.

All counts are plain Python ints (host side).  Functions that take ``width``
or ``depth`` also accept integer arrays and then return arrays, so they can be
used inside ``jit`` (e.g. on a policy's traced choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from dynmec_jax.system import SystemParams

N_FEATURES = 5  # |u_i| of Eq. 7: size, workload, deadline, distance, f_local.
#: Inputs of the policy network (:data:`dynmec_jax.nets.policy.POLICY_INPUTS`).
N_POLICY_INPUTS = 10


def layer_macs(d_in: int, d_out: int, zeta: float = 1, iota: float = 0):
    """Eq. 8: M = zeta D_in D_out + iota, MACs of one dense layer per input vector."""
    return zeta * d_in * d_out + iota


def layer_params(d_in: int, d_out: int, bias: bool = True) -> int:
    """Trainable parameters of a dense layer ``d_in -> d_out`` (weights + bias)."""
    return d_in * d_out + (d_out if bias else 0)


def mlp_macs(dims: Sequence[int], zeta: float = 1, iota: float = 0):
    """MACs of an MLP with layer sizes ``dims`` (Eq. 8 summed, Eq. 9 with eta = 1)."""
    return sum(layer_macs(a, b, zeta, iota) for a, b in zip(dims[:-1], dims[1:], strict=False))


def mlp_params(dims: Sequence[int], bias: bool = True) -> int:
    """Parameters of an MLP with layer sizes ``dims``."""
    return sum(layer_params(a, b, bias) for a, b in zip(dims[:-1], dims[1:], strict=False))


def expert_dims(depth: int, hidden: int = 64, n_features: int = N_FEATURES) -> list[int]:
    """Layer sizes of one expert truncated to its first ``depth`` layers (Eq. 32)."""
    return [n_features] + [hidden] * int(depth)


def _expert_layer_cost(depth, first, rest):
    """first + (depth - 1) rest, valid for ints and integer arrays (depth >= 1)."""
    return first + (depth - 1) * rest


def expert_macs(depth, hidden: int = 64, n_features: int = N_FEATURES,
                zeta: float = 1, iota: float = 0):
    """Eq. 33: MACs of one expert's first ``depth`` layers, per user."""
    return _expert_layer_cost(depth, layer_macs(n_features, hidden, zeta, iota),
                              layer_macs(hidden, hidden, zeta, iota))


def expert_params(depth, hidden: int = 64, n_features: int = N_FEATURES):
    """Parameters of one expert's first ``depth`` layers (with biases)."""
    return _expert_layer_cost(depth, layer_params(n_features, hidden),
                              layer_params(hidden, hidden))


def _check_size(width, depth, n_experts, n_layers):
    if isinstance(width, int) and not 1 <= width <= n_experts:
        raise ValueError(f"width must be in [1, {n_experts}], got {width}")
    if isinstance(depth, int) and not 1 <= depth <= n_layers:
        raise ValueError(f"depth must be in [1, {n_layers}], got {depth}")


def allocation_model_params(width, depth, *, n_experts: int = 10, n_layers: int = 3,
                            hidden: int = 64, n_features: int = N_FEATURES) -> dict:
    """Parameters of the MoE allocation model used at (width, depth) (Table I).

    Returns ``{"dynamic": ..., "fixed": ...}``: ``dynamic`` = the ``width``
    active experts' first ``depth`` layers (10 x 8,704 = 87,040 at (10, 3));
    ``fixed`` = gate ``W_g`` and ``W_noise`` (``n_features x n_experts`` each,
    no bias, as in Shazeer et al.) plus heads A and B (``hidden -> 1`` with
    bias).  Parameters do not depend on the number of users.
    """
    _check_size(width, depth, n_experts, n_layers)
    dynamic = width * expert_params(depth, hidden, n_features)
    fixed = 2 * n_features * n_experts + 2 * layer_params(hidden, 1)
    return {"dynamic": dynamic, "fixed": fixed}


def allocation_model_macs(width, depth, n_served, *, n_experts: int = 10,
                          n_layers: int = 3, hidden: int = 64,
                          n_features: int = N_FEATURES, zeta: float = 1,
                          iota: float = 0) -> dict:
    """MACs of one inference of the allocation model (Eq. 30-33 plus M_out).

    Args:
      width: k, active experts; depth: l, layers per expert.
      n_served: number of offloaded users the model is applied to.
    Returns ``{"dynamic": n_served (k M_ept(l) + k hidden), "fixed":
    n_served (n_features n_experts + 2 hidden)}``: experts and their gated
    combination, versus gate logits and the two heads.
    """
    _check_size(width, depth, n_experts, n_layers)
    per_user_dyn = width * (expert_macs(depth, hidden, n_features, zeta, iota)
                            + zeta * hidden)
    per_user_fix = (layer_macs(n_features, n_experts, zeta, iota)
                    + 2 * layer_macs(hidden, 1, zeta, iota))
    return {"dynamic": n_served * per_user_dyn, "fixed": n_served * per_user_fix}


def static_model_dims(hidden: int = 384, depth: int = 3,
                      n_features: int = N_FEATURES) -> list[int]:
    """Layer sizes of Section V.A's static model: 5 -> 384 -> 384 -> 384."""
    return expert_dims(depth, hidden, n_features)


def static_model_params(hidden: int = 384, depth: int = 3,
                        n_features: int = N_FEATURES) -> int:
    """Parameters of the static per-user MLP with its two heads."""
    return mlp_params(static_model_dims(hidden, depth, n_features)) + 2 * layer_params(hidden, 1)


def static_model_macs(n_served, hidden: int = 384, depth: int = 3,
                      n_features: int = N_FEATURES, zeta: float = 1, iota: float = 0):
    """MACs of the static model applied to ``n_served`` users (trunk + two heads)."""
    per_user = (mlp_macs(static_model_dims(hidden, depth, n_features), zeta, iota)
                + 2 * layer_macs(hidden, 1, zeta, iota))
    return n_served * per_user


def scheduler_dims(n_users: int, hidden: int = 32,
                   n_features: int = N_FEATURES) -> list[int]:
    """Scheduling MLP of Eq. 21-22: all users' features -> hidden -> N probabilities."""
    return [n_features * n_users, hidden, n_users]


def scheduler_macs(n_users: int, hidden: int = 32, zeta: float = 1, iota: float = 0):
    """M_Sced of Eq. 34-35."""
    return mlp_macs(scheduler_dims(n_users, hidden), zeta, iota)


def set_scheduler_dims(hidden: int = 32, n_layers: int = 2, passes: int = 2,
                       n_features: int = N_FEATURES, counts: bool = False,
                       n_cell: int = 0) -> list[list[int]]:
    """Per-user layers of the set scheduler, one list per pass.

    Pass 1: ``[u_i, mean u] -> hidden x n_layers -> 1``; every later pass
    also reads the probability-weighted mean of u and the offloaded share:
    ``[u_i, mean u, weighted mean u, share] -> hidden x n_layers -> 1``.
    ``counts``: every pass also reads log N, later passes also log(1 + the
    expected number offloaded) (one and two more inputs).  ``n_cell``: every
    pass also reads that many cell features (:mod:`dynmec_jax.cell`).
    """
    first = [2 * n_features + counts + n_cell] + [hidden] * n_layers + [1]
    later = [3 * n_features + 1 + 2 * counts + n_cell] + [hidden] * n_layers + [1]
    return [first] + [later] * (passes - 1)


def set_scheduler_pass_macs(hidden: int = 32, n_layers: int = 2, passes: int = 2,
                            zeta: float = 1, iota: float = 0, counts: bool = False,
                            n_cell: int = 0) -> list:
    """Per-user MACs of each pass of the set scheduler (Eq. 8 over
    :func:`set_scheduler_dims`), one entry per pass."""
    return [mlp_macs(d, zeta, iota)
            for d in set_scheduler_dims(hidden, n_layers, passes, counts=counts, n_cell=n_cell)]


def set_scheduler_macs(n_users, hidden: int = 32, n_layers: int = 2, passes: int = 2,
                       zeta: float = 1, iota: float = 0, counts: bool = False,
                       n_cell: int = 0):
    """M_Sced of Eq. 34-35 for the per-user set scheduler applied to ``n_users`` users.

    The shared per-user MLPs (:func:`set_scheduler_dims`) run once per user
    and pass; the means over users (O(N) additions) are not counted, as bias
    adds and activations are not (Eq. 8 with iota = 0).
    """
    return n_users * sum(set_scheduler_pass_macs(hidden, n_layers, passes, zeta, iota,
                                                 counts, n_cell))


def gated_scheduler_macs(n_users, last_pass_users, hidden: int = 32, n_layers: int = 2,
                         passes: int = 2, zeta: float = 1, iota: float = 0,
                         counts: bool = False, n_cell: int = 0):
    """M_Sced of Eq. 34-35 for a set scheduler whose last pass runs for only
    ``last_pass_users`` of the ``n_users`` users (the early exit of
    :class:`dynmec_jax.nets.scheduler.SetScheduler` with ``gate`` > 0): every user
    through the earlier passes, ``last_pass_users`` through the last one [MACs].
    Arrays (e.g. one count per scenario) broadcast; with ``last_pass_users`` =
    ``n_users`` it is :func:`set_scheduler_macs`.
    """
    per_pass = set_scheduler_pass_macs(hidden, n_layers, passes, zeta, iota, counts, n_cell)
    return n_users * sum(per_pass[:-1]) + last_pass_users * per_pass[-1]


def policy_dims(n_inputs: int, hidden: int = 32) -> list[int]:
    """Policy MLP of Section IV.C: ``n_inputs`` -> hidden -> 2 (width, depth)."""
    return [n_inputs, hidden, 2]


def policy_macs(hidden: int = 32, n_inputs: int = N_POLICY_INPUTS, zeta: float = 1,
                iota: float = 0):
    """M_Poli of Eq. 35 [MACs]: the policy MLP ``n_inputs -> hidden -> 2`` (Eq. 8)."""
    return mlp_macs(policy_dims(n_inputs, hidden), zeta, iota)


def inference_delay(macs, sys_params: SystemParams):
    """Eq. 9: T = lambda M / f [s], with f = f_ser (the models run on the server).

    ``macs`` may be a Python number or an array (e.g. per scenario); traced
    ``sys_params`` are fine.
    """
    macs = jnp.asarray(macs, dtype=jnp.result_type(float))
    return sys_params.efficiency * macs / sys_params.f_server
