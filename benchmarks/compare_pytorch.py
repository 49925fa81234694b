"""Allocator training step: JAX versus eager PyTorch, and versus the machine's matmul peak.

Issue 6, targets 1 and 2.  At paper size (batch B = 256 scenarios, N = 30
users, K = 10 experts, L = 3 layers, hidden 64) one training step of Fig. 2(b)
is: sample the scenarios, offload masks and one (width, depth) per scenario
(progressive shrinking over all K x L sub-networks), then the bandwidth
update (forward, backward, Adam) and the CPU update (forward at the updated
parameters, backward, its own Adam), with the noisy top-k gate of Eq. 16.

* ``jax``: the library's default training path, the program
  :func:`dynmec_jax.train.allocator.train_and_evaluate` runs: the step of
  :func:`~dynmec_jax.train.allocator.make_train_step` inside
  :func:`~dynmec_jax.train.allocator.train_chunk` (``lax.scan`` over
  ``--chunk`` steps; time per step) with the depth strata of the schedule
  (hidden layers run only on the scenarios deep enough to use them; widths
  still masked) and the default config's ``micro_batch`` and
  ``capacity_factor`` (capacity dispatch: only the experts a user's gate
  picked are computed, :func:`dynmec_jax.nets.moe.expert_capacity`).
* ``jax_no_capacity``: ``jax`` without capacity dispatch (every expert
  computed, the width a mask on the gates: the default before it).
* ``jax_mb``: the same with ``micro_batch=--micro_batch`` (each update's
  gradient summed over slices of that many scenarios, so the activations
  stay in cache; the same gradient up to float summation order).
* ``jax_single``: ``jax``'s step as one jitted call per step (Python
  dispatch included), parameters and optimiser states donated.
* ``jax_masked``: ``jax`` with ``strata=None``: every expert and layer
  computed and masked, (width, depth) i.i.d. uniform (the path before depth
  strata; the same FLOPs as the dense torch peers).
* ``torch_<peer>``: the same model, losses, sampling and two Adam updates in
  PyTorch (``benchmarks/torch_peers.py``, ``--peers``): ``a`` eager
  ``nn.Module`` written the usual way (``ModuleList`` of experts, dense,
  masked depth), ``b`` / ``b_max`` that under ``torch.compile`` (default /
  ``max-autotune-no-cudagraphs``), ``c`` eager ``torch.bmm`` over the
  stacked experts (same masked compute, same rank-based top-k gate, same
  FLOPs), ``d`` eager and sparse (only the selected experts and layers
  computed: fewer FLOPs, its GFLOP/s are against the dense count),
  ``d_compiled`` that under ``torch.compile(dynamic=True)``.  ``--check``
  checks that they agree with each other and with JAX, and exits.
* ``matmul``: a large float32 matmul (``--matmul`` square), jitted JAX and
  torch; the better of the two is the peak the step is compared with.

All are timed round-robin (one call of each per round) so that load from
other processes hits them alike; figures are medians over ``--rounds``
(wall clock, ``block_until_ready``), after warm-up.

FLOPs of one step (printed with their derivation): for every dense layer of
every expert that is *computed* (all K experts, all L layers: masked compute
costs full FLOPs), ``2 * B * N * in * out`` forward, times 3 for forward plus
backward (the input gradient of the first layer is not needed, counted
anyway, as the convention), plus the gate (two 5 -> K products), the gated
sum (``2 B N K H``) and the heads (``H -> 2``), all x3, times 2 updates.
Elementwise work, sampling and Adam are not counted.

On CPU XLA's temporary buffers (tens of MB) are mmap-ed and page-faulted per
call by glibc unless its mmap/trim thresholds are raised; this script raises
them (``mallopt``, this process only, helps both sides) unless
``--plain-malloc``.  The same for any JAX program:
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483648``.

Needs the ``bench`` extra (``pip install -e .[bench]``: torch 2.13.0, CPU).

The torch peers draw (width, depth) i.i.d. (``--subnet_sampling``); the
sparse peer ``d`` then computes only the selected experts and layers, the
saving the JAX path takes in depth, in its natural PyTorch form.

Usage: ``python benchmarks/compare_pytorch.py [--rounds 20] [--quick]``.
Last lines: ``gflops_fraction <best step GFLOP/s (dense-equivalent) / best
matmul GFLOP/s>``, ``sparse_ratio <jax / fastest torch peer of all>`` and
``torch_ratio <jax step time / fastest dense torch peer's>`` (``jax`` is the
library's default path).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from dynmec_jax import cli, system
from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.nets import features, moe
from dynmec_jax.train import allocator as train_allocator


def step_flops(B: int, N: int, K: int, L: int, H: int, F: int = 5,
               hidden_rows: tuple[int, ...] | None = None) -> tuple[int, list[str]]:
    """FLOPs of one training step (both updates) and the lines of their derivation.

    ``hidden_rows``: users each hidden layer runs on (the depth strata's
    ``layer_rows``); None: every layer on all ``B N`` users (dense count).
    """
    M = B * N
    rows = [M] * (L - 1) if hidden_rows is None else list(hidden_rows)
    parts = [("experts layer 1", K * 2 * M * F * H),
             (f"experts layers 2..{L}", sum(K * 2 * r * H * H for r in rows)),
             ("gate W_g, W_noise", 2 * 2 * M * F * K),
             ("gated sum", 2 * M * K * H),
             ("heads A, B", 2 * M * H * 2)]
    fwd = sum(p for _, p in parts)
    what = ("all K={K} experts and L={L} layers computed (masked compute costs full FLOPs)"
            if hidden_rows is None else
            f"all K={K} experts; hidden layers on {rows} of the {M} users (depth strata)")
    lines = [f"M = B*N = {B}*{N} = {M} users per batch; " + what.format(K=K, L=L)]
    lines += [f"  forward {name:22s} {p / 1e6:10.1f} MFLOP" for name, p in parts]
    lines.append(f"  forward total {fwd / 1e9:.4f} GFLOP; x3 (forward + backward) x2 updates "
                 f"= {6 * fwd / 1e9:.4f} GFLOP per step")
    return 6 * fwd, lines


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (>= 20 for the issue)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--chunk", type=int, default=10, help="steps per lax.scan chunk")
    ap.add_argument("--matmul", type=int, default=2048, help="square matmul size for the peak")
    ap.add_argument("--micro_batch", type=int, default=64,
                    help="scenarios per gradient slice of the jax_mb path")
    ap.add_argument("--quick", action="store_true", help="batch 64, 5 rounds (smoke test)")
    ap.add_argument("--plain-malloc", action="store_true", help="leave glibc malloc alone")
    ap.add_argument("--peers", default="all",
                    help="torch peers, comma-separated from a,b,b_max,c,d,d_compiled "
                         "(benchmarks/torch_peers.py), or all")
    ap.add_argument("--subnet_sampling", choices=("uniform", "stratified"), default="uniform",
                    help="(width, depth) sampling of the torch peers")
    ap.add_argument("--check", action="store_true",
                    help="check that the torch peers agree with each other and JAX, then exit")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.rounds, args.chunk, args.matmul = 64, 5, 4, 1024
        args.micro_batch = 16
    if not args.plain_malloc:
        cli.tune_malloc()

    import torch  # deferred: an optional, heavy dependency of this benchmark only
    import torch_peers  # torch is optional: its peers are imported only here (benchmarks/)

    n_threads = torch_peers.set_threads()   # explicitly: all the cores this process may use
    peer_names = torch_peers.PEERS if args.peers == "all" else args.peers.split(",")

    sp = system.SystemParams(n_users=args.users)
    scales = features.FeatureScales.from_params(sp)
    model = moe.MoEAllocator()
    K, L, H = model.n_experts, model.n_layers, model.hidden
    tx = optax.adam(1e-3)
    table = jnp.ones((args.chunk, K, L), bool)   # the last phase: every sub-network
    default_train = allocator_configs.get_config("default").train
    default_mb = default_train.micro_batch
    default_cf = float(default_train.capacity_factor) or None
    strata = train_allocator.table_strata(table, widths=bool(default_cf))
    plain_strata = train_allocator.table_strata(table)

    state0 = train_allocator.init_state(jax.random.PRNGKey(0), model, tx)
    if args.check:
        torch_peers.check_peers_agree(jax.device_get(state0.params), sp, peer_names)
        return
    peers = torch_peers.build_peers(peer_names, jax.device_get(state0.params)["params"],
                                    args.batch, sp, args.subnet_sampling)

    def chunk(micro_batch, strata, cf=default_cf):
        step = train_allocator.make_train_step(model, tx, args.batch, micro_batch=micro_batch,
                                               capacity_factor=cf)
        return jax.jit(lambda st, k: train_allocator.train_chunk(step, st, k, sp, scales, table,
                                                                 strata)[0],
                       donate_argnums=0), args.chunk

    step = train_allocator.make_train_step(model, tx, args.batch, micro_batch=default_mb,
                                           capacity_factor=default_cf)
    single = jax.jit(lambda st, k: step(st, k, sp, scales, table[0], strata)[0],
                     donate_argnums=0)
    jax_paths = {"jax": chunk(default_mb, strata), "jax_mb": chunk(args.micro_batch, strata),
                 "jax_single": (single, 1), "jax_masked": chunk(default_mb, None, None)}
    if default_cf:
        jax_paths["jax_no_capacity"] = chunk(default_mb, plain_strata, None)
    states = {name: train_allocator.init_state(jax.random.PRNGKey(0), model, tx)
              for name in jax_paths}
    n = args.matmul
    a = jax.random.normal(jax.random.PRNGKey(3), (n, n), jnp.float32)
    mm_jax = jax.jit(lambda x: x @ x)
    a_t = torch.randn(n, n)

    key = jax.random.PRNGKey(1)
    for i in range(3):   # compile and warm up
        for name, (fn, _) in jax_paths.items():
            states[name] = jax.block_until_ready(fn(states[name], jax.random.fold_in(key, i)))
        for peer in peers.values():
            peer.step()
        jax.block_until_ready(mm_jax(a))
        a_t @ a_t

    t = {name: [] for name in jax_paths}
    t.update({"matmul_jax": [], "matmul_torch": []})
    t.update({f"torch_{name}": [] for name in peers})
    for r in range(args.rounds):
        k = jax.random.fold_in(key, 100 + r)
        for name, (fn, steps) in jax_paths.items():
            t0 = time.perf_counter()
            states[name] = jax.block_until_ready(fn(states[name], k))
            t[name].append((time.perf_counter() - t0) / steps)
        for name, peer in peers.items():
            t0 = time.perf_counter()
            peer.step()
            t[f"torch_{name}"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(mm_jax(a))
        t["matmul_jax"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a_t @ a_t
        t["matmul_torch"].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in t.items()}
    fastest = lambda names: min(names, key=lambda p: med[f"torch_{p}"]) if names else None
    fastest_dense = fastest([p for p in peers if p in torch_peers.DENSE_PEERS])
    fastest_all = fastest(list(peers))

    flops, lines = step_flops(args.batch, args.users, K, L, H)
    counts = train_allocator.depth_counts(strata[0][:L], args.batch)
    rows = train_allocator.layer_rows(counts, args.users)
    flops_strata, lines_strata = step_flops(args.batch, args.users, K, L, H, hidden_rows=rows)
    mm_gflops = {s: 2 * n ** 3 / med[f"matmul_{s}"] / 1e9 for s in ("jax", "torch")}
    peak = max(mm_gflops.values())
    best = min(med["jax"], med["jax_mb"])
    print(f"backend {jax.default_backend()}, jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), B={args.batch}, N={args.users}, K={K}, L={L}, "
          f"H={H}, rounds={args.rounds}, tune_malloc={not args.plain_malloc}; library default "
          f"micro_batch {default_mb}, capacity_factor {default_cf}, strata {strata} -> "
          f"{counts} scenarios per depth")
    print("FLOP count of one training step (dense):")
    for line in lines:
        print(line)
    print("FLOPs computed by the depth-strata path:")
    for line in lines_strata:
        print(line)
    print("GFLOP/s below are dense-equivalent (dense FLOP count / time); the strata paths "
          f"compute {flops_strata / flops:.3f} of it")
    for name in jax_paths:
        print(f"{name:16s} median {1e3 * med[name]:8.2f} ms/step (min {1e3 * min(t[name]):.2f}, "
              f"max {1e3 * max(t[name]):.2f})  {flops / med[name] / 1e9:6.1f} GFLOP/s")
    print(f"torch peers: {n_threads} threads (set), {args.subnet_sampling} (width, depth) "
          f"sampling")
    for p in peers:
        v = t[f"torch_{p}"]
        print(f"torch_{p:10s} median {1e3 * med[f'torch_{p}']:8.2f} ms/step (min "
              f"{1e3 * min(v):.2f}, max {1e3 * max(v):.2f})  "
              f"{flops / med[f'torch_{p}'] / 1e9:6.1f} GFLOP/s  {torch_peers.PEER_LABELS[p]}")
    for s in ("jax", "torch"):
        print(f"matmul {n}x{n} f32 ({s}): median {1e3 * med[f'matmul_{s}']:.2f} ms, "
              f"{mm_gflops[s]:.1f} GFLOP/s")
    for what, p in (("dense (a, b, b_max, c)", fastest_dense),
                    ("of all (incl. sparse d)", fastest_all)):
        if p:
            ref = med[f"torch_{p}"]
            print(f"fastest torch peer {what}: {p}, {1e3 * ref:.2f} ms/step "
                  f"({torch_peers.PEER_LABELS[p]}); ratios " + ", ".join(
                      f"{name}/{p} {med[name] / ref:.3f}" for name in jax_paths))
    print(f"step GFLOP/s (dense-equivalent): library default {flops / med['jax'] / 1e9:.1f}, "
          f"best {flops / best / 1e9:.1f}; computed {flops_strata / best / 1e9:.1f}; matmul "
          f"peak {peak:.1f} (jax {mm_gflops['jax']:.1f})")
    print(f"gflops_fraction {flops / best / 1e9 / peak:.3f}")
    if fastest_all:
        print(f"sparse_ratio {med['jax'] / med[f'torch_{fastest_all}']:.3f}")
    if fastest_dense:
        print(f"torch_ratio {med['jax'] / med[f'torch_{fastest_dense}']:.3f}")


if __name__ == "__main__":
    main()
