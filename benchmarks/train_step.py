"""Time of one allocator training step at paper size (Fig. 2(b), both updates).

Batch 256 scenarios, N = 30, K = 10, L = 3, progressive-shrinking sampling over
all sub-networks.  Jitted, warmed up, ``block_until_ready``; prints the median
of --repeats single-step calls and, for comparison, the per-step time of a
``lax.scan`` chunk of 20 steps (no Python dispatch between steps).  The last
line is ``train_step_ms <median>``.

    python benchmarks/train_step.py [--batch 256] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynmec_jax import system
from dynmec_jax.nets import features, moe
from dynmec_jax.train import allocator as train_allocator


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n_users", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()

    sp = system.SystemParams(n_users=args.n_users)
    scales = features.FeatureScales.from_params(sp)
    model = moe.MoEAllocator()
    tx = optax.adam(1e-3)
    step = train_allocator.make_train_step(model, tx, args.batch)
    state = train_allocator.init_state(jax.random.PRNGKey(0), model, tx)
    allowed = jnp.ones((model.n_experts, model.n_layers), bool)
    step_jit = jax.jit(step)
    key = jax.random.PRNGKey(1)
    for _ in range(3):
        state, _ = step_jit(state, key, sp, scales, allowed)
    jax.block_until_ready(state)
    times = []
    for i in range(args.repeats):
        k = jax.random.fold_in(key, i)
        t0 = time.perf_counter()
        state, m = step_jit(state, k, sp, scales, allowed)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    med = 1e3 * statistics.median(times)

    chunk = jax.jit(lambda st, k, tab: train_allocator.train_chunk(step, st, k, sp, scales, tab))
    table = jnp.asarray(np.broadcast_to(np.asarray(allowed), (20,) + allowed.shape))
    jax.block_until_ready(chunk(state, key, table))
    ctimes = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(chunk(state, key, table))
        ctimes.append((time.perf_counter() - t0) / 20)
    print(f"devices: {jax.devices()}")
    print(f"batch {args.batch}, N {args.n_users}, K {model.n_experts}, L {model.n_layers}: "
          f"single step min {1e3 * min(times):.2f} / median {med:.2f} / max {1e3 * max(times):.2f} ms "
          f"over {args.repeats}; inside a 20-step lax.scan chunk: median "
          f"{1e3 * statistics.median(ctimes):.2f} ms/step")
    print(f"train_step_ms {med:.3f}")


if __name__ == "__main__":
    main()
