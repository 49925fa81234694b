"""Training several seeds as one vmapped program versus one seed (issue 6, target 4).

Runs the program :func:`dynmec_jax.train.allocator.train_and_evaluate` runs per
chunk, ``jit(vmap(train_chunk))`` over stacked train states and seed keys
(the allowed-sub-network table shared), at paper size (batch 256, N = 30,
K = 10, L = 3, both updates, all sub-networks allowed), for 1 seed and for
``--seeds`` seeds.  The two are timed round-robin (one chunk of each per
round, each chunk a different slice of a progressive-shrinking schedule, so
the table's values change between calls); figures are medians over rounds,
after a warm-up call.

Throughput is scenario updates per second: ``seeds * steps * batch / time``.
Each jitted program counts its traces; a retrace (recompile) after the
warm-up fails the benchmark.

Usage: ``python benchmarks/seeds.py [--seeds 8] [--rounds 5] [--quick]``.
Last line: ``seeds_throughput_ratio <throughput(seeds) / throughput(1)>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from dynmec_jax import cli, files, system
from dynmec_jax.nets import features, moe
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import config as train_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--chunk", type=int, default=5, help="steps per lax.scan chunk")
    ap.add_argument("--micro_batch", type=int, default=None,
                    help="make_train_step's micro_batch (default: off, as train_and_evaluate)")
    ap.add_argument("--quick", action="store_true", help="batch 32, 2 rounds, 2 steps")
    ap.add_argument("--plain-malloc", action="store_true", help="leave glibc malloc alone")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.rounds, args.chunk = 32, 2, 2
    if not args.plain_malloc:
        cli.tune_malloc()

    sp = system.SystemParams(n_users=args.users)
    scales = features.FeatureScales.from_params(sp)
    model = moe.MoEAllocator()
    K, L = model.n_experts, model.n_layers
    tx = optax.adam(1e-3)
    step = train_allocator.make_train_step(model, tx, args.batch, micro_batch=args.micro_batch)
    phases = train_config.progressive_phases("full", K, L)
    table = train_config.schedule_table(phases, [args.chunk * (args.rounds + 1)] * len(phases))

    strata = train_allocator.table_strata(table)   # as train_and_evaluate
    traces = {}

    def make(n):
        traces[n] = 0

        def chunk(st, k, allowed):
            traces[n] += 1   # runs only when jax traces (compiles) the program
            return train_allocator.train_chunk(step, st, k, sp, scales, allowed, strata)

        fn = jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)), donate_argnums=0)
        keys = files.seed_keys(0, n)
        init = jax.jit(jax.vmap(lambda k: train_allocator.init_state(jax.random.fold_in(k, 10 ** 6),
                                                                     model, tx)))
        return fn, keys, init(keys)

    runs = {n: make(n) for n in (1, args.seeds)}
    states = {n: r[2] for n, r in runs.items()}
    slices = [table[i * args.chunk:(i + 1) * args.chunk]
              for i in range(len(table) // args.chunk)]
    for n, (fn, keys, _) in runs.items():   # compile and warm up
        states[n], _ = jax.block_until_ready(fn(states[n], keys, jnp.asarray(slices[0])))
    times = {n: [] for n in runs}
    for r in range(args.rounds):
        tab = jnp.asarray(slices[(r + 1) % len(slices)])
        for n, (fn, keys, _) in runs.items():
            t0 = time.perf_counter()
            states[n], m = jax.block_until_ready(fn(states[n], keys, tab))
            times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    thr = {n: n * args.chunk * args.batch / med[n] for n in runs}
    print(f"backend {jax.default_backend()}, devices {jax.device_count()}, B={args.batch}, "
          f"N={args.users}, K={K}, L={L}, chunk={args.chunk} steps, rounds={args.rounds}, "
          f"micro_batch={args.micro_batch}")
    for n in runs:
        print(f"{n:3d} seed(s): median {med[n]:.3f} s/chunk (min {min(times[n]):.3f}), "
              f"{thr[n]:9.0f} scenario-updates/s, traces {traces[n]}")
    if any(v != 1 for v in traces.values()):
        raise SystemExit(f"recompiled: traces {traces}")
    print("no recompiles (each program traced once)")
    print(f"seeds_throughput_ratio {thr[args.seeds] / thr[1]:.3f}")


if __name__ == "__main__":
    main()
