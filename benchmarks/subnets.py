"""Cost of evaluating all K x L sub-networks of the MoE allocator (Eq. 12-20, 32).

At paper sizes (B = 256 scenarios, N = 30 users, K = 10 experts, L = 3 layers,
hidden 64) times, jitted and warmed up:

* ``largest``: :func:`dynmec_jax.allocator.allocate` at (width, depth) = (K, L);
* ``all``: :func:`dynmec_jax.allocator.allocate_all`, every (width, depth) in one pass;
* ``vmap``: a plain ``jax.vmap`` of ``allocate`` over all K x L (width, depth).

The three are timed round-robin (one call of each per round) so that a change
in machine load hits all of them alike; each figure is the median over rounds
(wall-clock, ``block_until_ready``).  Prints the ratios ``all / largest`` and
``vmap / largest``; the last line is ``subnets_ratio <all / largest>``.

On CPU much of a call's wall time can be page faults: XLA allocates its large
(~20 MB) temporary buffers per call and glibc maps and unmaps them each time,
which makes timings erratic (medians 2-3x the minimum).  By default the
benchmark raises glibc's mmap/trim thresholds (mallopt, this process only) so
the buffers are reused and the timings show the compute cost;
``--plain-malloc`` leaves malloc alone.  (The same effect for any JAX program:
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483648``.)

Usage: ``python benchmarks/subnets.py [--rounds 20] [--batch 256] [--users 30]
[--plain-malloc]``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cli, system
from dynmec_jax.nets import features, moe


def main() -> None:
    """Runs the benchmark and prints timings [ms] and ratios (dimensionless)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="timed calls of each function")
    ap.add_argument("--batch", type=int, default=256, help="scenarios per call")
    ap.add_argument("--users", type=int, default=30, help="users N per scenario")
    ap.add_argument("--experts", type=int, default=10, help="K")
    ap.add_argument("--layers", type=int, default=3, help="L")
    ap.add_argument("--hidden", type=int, default=64, help="expert layer width")
    ap.add_argument("--plain-malloc", action="store_true",
                    help="leave glibc's malloc settings alone (default: raise its mmap/trim "
                         "thresholds so XLA's per-call temporary buffers are not re-mapped "
                         "and page-faulted on every call)")
    args = ap.parse_args()
    tune_malloc = not args.plain_malloc
    if tune_malloc:
        cli.tune_malloc()

    sys_params = system.SystemParams(n_users=args.users)
    model = moe.MoEAllocator(n_experts=args.experts, n_layers=args.layers, hidden=args.hidden,
                             zero_gate_init=False)
    K, L = model.n_experts, model.n_layers
    k_params, k_scn, k_mask = jax.random.split(jax.random.key(0), 3)
    params = allocator_lib.init_params(k_params, model)
    scn = system.sample_scenarios(k_scn, sys_params, args.batch)
    mask = jax.random.bernoulli(k_mask, 0.8, scn.shape)
    scales = features.FeatureScales.from_params(sys_params)

    allocate = functools.partial(allocator_lib.allocate, model)
    widths = jnp.repeat(jnp.arange(1, K + 1), L)
    depths = jnp.tile(jnp.arange(1, L + 1), K)

    largest = jax.jit(lambda p, s, m: allocate(p, s, m, K, L, sys_params, scales))
    all_at_once = jax.jit(lambda p, s, m: allocator_lib.allocate_all(
        allocator_lib.Allocator(p, scales, sys_params, model), s, m, sys_params))
    vmapped = jax.jit(lambda p, s, m: jax.vmap(
        lambda w, d: allocate(p, s, m, w, d, sys_params, scales))(widths, depths))

    fns = {"largest": largest, "all": all_at_once, "vmap": vmapped}
    for fn in fns.values():  # compile and warm up
        for _ in range(2):
            jax.block_until_ready(fn(params, scn, mask))

    # Sanity: the one-pass result equals the vmap over (width, depth).
    b_all, f_all = fns["all"](params, scn, mask)
    b_vm, f_vm = fns["vmap"](params, scn, mask)
    err = max(float(jnp.max(jnp.abs(b_all.reshape(b_vm.shape) - b_vm)) / sys_params.bandwidth_max),
              float(jnp.max(jnp.abs(f_all.reshape(f_vm.shape) - f_vm)) / sys_params.f_server))

    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, scn, mask))
            times[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(t)) for name, t in times.items()}

    print(f"backend {jax.default_backend()}, devices {jax.device_count()}, B={args.batch}, "
          f"N={args.users}, K={K}, L={L}, hidden={args.hidden}, rounds={args.rounds}, "
          f"tune_malloc={tune_malloc}")
    print(f"max |allocate_all - vmap| / capacity = {err:.2e}")
    for name in fns:
        print(f"{name:8s} median {1e3 * med[name]:9.3f} ms  "
              f"(min {1e3 * min(times[name]):.3f}, max {1e3 * max(times[name]):.3f})")
    print(f"ratio all/largest  {med['all'] / med['largest']:.3f}")
    print(f"ratio vmap/largest {med['vmap'] / med['largest']:.3f}")
    print(f"subnets_ratio {med['all'] / med['largest']:.3f}")


if __name__ == "__main__":
    main()
