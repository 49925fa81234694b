"""Time of one allocator training step at paper size (Fig. 2(b), both updates).

Batch 256 scenarios, N = 30, K = 10, L = 3, progressive shrinking's last
phase (every sub-network allowed).  Three ways of running the same step,
jitted, warmed up, ``block_until_ready``, timed round-robin:

* ``driver``: the library's default training path, the one
  :func:`dynmec_jax.train.allocator.train_and_evaluate` runs: the step inside
  a ``lax.scan`` chunk of ``--chunk`` steps (time per step), with the strata
  of the schedule (``table_strata``: each hidden layer runs only on the
  scenarios deep enough to use it) and the config's default ``micro_batch``
  and ``capacity_factor`` (capacity dispatch: each expert computes only the
  users its gate picked; the dropped share is printed);
* ``single``: the same step, one jitted call per step (Python dispatch
  included);
* ``masked``: ``strata=None``, no capacity dispatch (every expert and layer
  computed and masked, i.i.d. uniform sub-networks: the path before depth
  strata);
* ``no_capacity``: the driver's path without capacity dispatch (every expert
  computed, the width a mask: the default before it).

The last line is ``train_step_ms <median>`` of ``driver``.

    python benchmarks/train_step.py [--batch 256] [--rounds 10] [--chunk 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynmec_jax import cli, system
from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.nets import features, moe
from dynmec_jax.train import allocator as train_allocator


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n_users", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=10, help="steps per lax.scan chunk")
    ap.add_argument("--plain-malloc", action="store_true", help="leave glibc malloc alone")
    args = ap.parse_args()
    if not args.plain_malloc:
        cli.tune_malloc()

    sp = system.SystemParams(n_users=args.n_users)
    scales = features.FeatureScales.from_params(sp)
    model = moe.MoEAllocator()
    K, L = model.n_experts, model.n_layers
    tx = optax.adam(1e-3)
    train = allocator_configs.get_config("default").train
    micro, cf = train.micro_batch, float(train.capacity_factor) or None
    table = jnp.ones((args.chunk, K, L), bool)
    strata = train_allocator.table_strata(table, widths=bool(cf))
    dropped = []

    def chunk_fn(strata, cf, record=False):
        step = train_allocator.make_train_step(model, tx, args.batch, micro_batch=micro,
                                               capacity_factor=cf)

        def run(st, k):
            st, m = train_allocator.train_chunk(step, st, k, sp, scales, table, strata)
            return st, m.get("dropped", jnp.zeros(()))

        jitted = jax.jit(run, donate_argnums=0)

        def fn(st, k):
            st, d = jitted(st, k)
            if record:
                dropped.append(d)
            return st

        return fn

    step = train_allocator.make_train_step(model, tx, args.batch, micro_batch=micro,
                                           capacity_factor=cf)
    single = jax.jit(lambda st, k: step(st, k, sp, scales, table[0], strata)[0],
                     donate_argnums=0)
    runs = {"driver": [chunk_fn(strata, cf, record=True), args.chunk], "single": [single, 1],
            "masked": [chunk_fn(None, None), args.chunk]}
    if cf:
        runs["no_capacity"] = [chunk_fn(train_allocator.table_strata(table), None), args.chunk]
    states = {name: train_allocator.init_state(jax.random.PRNGKey(0), model, tx) for name in runs}
    key = jax.random.PRNGKey(1)
    for name, (fn, _) in runs.items():   # compile and warm up
        for i in range(2):
            states[name] = jax.block_until_ready(fn(states[name], jax.random.fold_in(key, i)))
    times = {name: [] for name in runs}
    for r in range(args.rounds):
        k = jax.random.fold_in(key, 100 + r)
        for name, (fn, steps) in runs.items():
            t0 = time.perf_counter()
            states[name] = jax.block_until_ready(fn(states[name], k))
            times[name].append((time.perf_counter() - t0) / steps)
    med = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    print(f"devices: {jax.devices()}; batch {args.batch}, N {args.n_users}, K {K}, L {L}, "
          f"micro_batch {micro}, capacity_factor {cf}, strata {strata}, rounds {args.rounds}")
    for name, v in times.items():
        print(f"{name:7s} median {med[name]:8.2f} ms/step (min {1e3 * min(v):.2f}, "
              f"max {1e3 * max(v):.2f}); / driver {med[name] / med['driver']:.3f}")
    if cf:
        d = np.concatenate([np.asarray(x).reshape(-1) for x in dropped])
        print(f"capacity factor {cf}: dropped (user, expert) pairs "
              f"{100 * d.mean():.2f}% (max {100 * d.max():.2f}%) of the picked ones")
    print(f"train_step_ms {med['driver']:.3f}")


if __name__ == "__main__":
    main()
