"""Width sparsity of the MoE allocator (issue 22, item 4): capacity dispatch against masks.

The allocator's experts (Eq. 12, 32) run on every user and the width is a
mask on the gates (``nets/moe.py``): a user with width k pays for all K
experts.  This measures what computing only the picked experts would gain
on this machine, on the part of the training step it touches: the gate
(Eq. 13-17), the K experts of L layers and the gated sum (Eq. 12) and the
heads (Eq. 18, 20), forward and backward (gradient of every weight), at the
paper's training size (M = 256 x 30 users, K = 10, L = 3, H = 64), widths
uniform over 1..K (mean 5.5: the last phase of progressive shrinking),
every user at depth L.

* ``masked``: :class:`dynmec_jax.nets.moe.MoEAllocator` as the library runs it.
* ``capacity cf``: Switch/vmoe-style dispatch: each expert takes at most
  ``C = ceil(cf * M * mean_width / K)`` users (in user order; the others
  lose that expert's term, counted as dropped), gathered into a ``(K, C, F)``
  buffer, the experts run batched on it, their outputs scattered back
  (``.at[].add``) with the gates.  ``cf = K / mean_width`` can hold every
  user (no drop); the expert FLOPs are ``C / M`` of the masked path's.

Timed round-robin, warmed up, ``block_until_ready``, medians; the ratios are
of the same run.  The last line is ``width_dispatch_ratio <best capacity /
masked>``.

    python benchmarks/width_dispatch.py [--users 7680] [--rounds 20]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import cli
from dynmec_jax.nets import moe


def capacity_apply(params: dict, z, width, eps, capacity: int, slope: float = 0.01):
    """The gated expert mixture and heads with capacity dispatch: ``(logits (M, 2),
    dropped share)``; the same gates (Eq. 13-17) and layers as ``MoEAllocator``."""
    p = params["params"]
    M, K = z.shape[0], p["w_gate"].shape[1]
    logits = z @ p["w_gate"] + eps * jax.nn.softplus(z @ p["w_noise"])
    ranks = moe.expert_ranks(logits)
    gates = moe.gates_from_logits(logits, ranks, width)                  # (M, K)
    sel = ranks < jnp.clip(width, 1, K)[:, None]
    pos = jnp.cumsum(sel, axis=0, dtype=jnp.int32) - 1                   # slot of each user
    keep = sel & (pos < capacity)
    slot = jnp.where(keep, pos, capacity)                                # capacity = overflow
    users = jnp.broadcast_to(jnp.arange(M, dtype=jnp.int32)[:, None], (M, K))
    experts = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32)[None, :], (M, K))
    table = jnp.full((K, capacity + 1), M, jnp.int32).at[experts, slot].set(users)[:, :capacity]
    zpad = jnp.concatenate([z, jnp.zeros((1, z.shape[1]), z.dtype)])
    gpad = jnp.concatenate([gates, jnp.zeros((1, K), gates.dtype)])
    x = zpad[table]                                                      # (K, C, F)
    g = jnp.take_along_axis(gpad[table], jnp.arange(K)[:, None, None], axis=2)[..., 0]
    h = jnp.einsum("kcf,kfh->kch", x, p["w_in"]) + p["b_in"][:, None]
    h = jnp.where(h >= 0, h, slope * h)
    for i in range(p["w_hidden"].shape[0]):
        h = jnp.einsum("kch,khg->kcg", h, p["w_hidden"][i]) + p["b_hidden"][i][:, None]
        h = jnp.where(h >= 0, h, slope * h)
    y = jnp.zeros((M + 1, h.shape[-1]), h.dtype).at[table].add(g[..., None] * h)[:M]
    dropped = 1.0 - jnp.sum(keep) / jnp.sum(sel)
    return y @ p["w_heads"] + p["b_heads"], dropped


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=256 * 30, help="M: users in the batch")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cf", type=float, nargs="*", default=[1.0, 1.25],
                    help="capacity factors (K / mean width = no drop is added)")
    args = ap.parse_args()
    cli.tune_malloc()
    model = moe.MoEAllocator(zero_gate_init=False)
    K, L = model.n_experts, model.n_layers
    key = jax.random.key(0)
    z = jax.random.normal(jax.random.fold_in(key, 1), (args.users, model.n_features))
    width = jax.random.randint(jax.random.fold_in(key, 2), (args.users,), 1, K + 1)
    eps = jax.random.normal(jax.random.fold_in(key, 3), (args.users, K))
    params = model.init(jax.random.fold_in(key, 4), z[:2], 1, 1)
    mean_width = float(np.mean(np.asarray(width)))

    def masked(prm):
        return model.apply(prm, z, width, L, gate_noise=eps,
                           layer_rows=(args.users,) * (L - 1))[0]

    def loss_of(apply):
        return jax.jit(jax.value_and_grad(lambda prm: jnp.mean(jnp.square(apply(prm)))))

    runs = {"masked": (loss_of(masked), 1.0)}
    cfs = sorted(set(args.cf) | {K / mean_width})
    drops = {}
    for cf in cfs:
        cap = min(args.users, math.ceil(cf * args.users * mean_width / K))
        runs[f"capacity {cf:.2f}"] = (loss_of(
            lambda prm, c=cap: capacity_apply(prm, z, width, eps, c)[0]), cap / args.users)
        drops[f"capacity {cf:.2f}"] = float(capacity_apply(params, z, width, eps, cap)[1])
    for fn, _ in runs.values():
        for _ in range(2):
            jax.block_until_ready(fn(params))
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (fn, _) in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params))
            times[name].append(time.perf_counter() - t0)
    med = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    print(f"M {args.users}, K {K}, L {L}, H {model.hidden}, mean width {mean_width:.2f}, "
          f"rounds {args.rounds}")
    for name, (_, share) in runs.items():
        extra = f", dropped {100 * drops[name]:.2f}% of (user, expert) pairs" if name in drops \
            else ""
        print(f"{name:14s} median {med[name]:8.2f} ms (fwd + bwd), expert rows {share:.2f} "
              f"of masked; / masked {med[name] / med['masked']:.3f}{extra}")
    best = min(v for k, v in med.items() if k != "masked")
    print(f"width_dispatch_ratio {best / med['masked']:.3f}")


if __name__ == "__main__":
    main()
