"""Allocator training step: JAX versus eager PyTorch, and versus the machine's matmul peak.

Issue 6, targets 1 and 2.  At paper size (batch B = 256 scenarios, N = 30
users, K = 10 experts, L = 3 layers, hidden 64) one training step of Fig. 2(b)
is: sample the scenarios, offload masks and one (width, depth) per scenario
(progressive shrinking over all K x L sub-networks), then the bandwidth
update (forward, backward, Adam) and the CPU update (forward at the updated
parameters, backward, its own Adam), with the noisy top-k gate of Eq. 16.

* ``jax``: :func:`dynmec_jax.train_allocator.make_train_step`, jitted, one call
  per step (Python dispatch included), parameters and optimiser states donated.
* ``jax_scan``: the same step inside :func:`dynmec_jax.train_allocator.train_chunk`
  (``lax.scan`` over ``--chunk`` steps, the path the training driver runs),
  time per step.
* ``jax_scan_mb``: as ``jax_scan`` with ``make_train_step(...,
  micro_batch=--micro_batch)``: each update's gradient summed over slices of
  that many scenarios (same gradient up to float summation order; opt-in,
  off by default in the library), so the activations stay in cache.
* ``torch``: the same model, losses and two Adam updates written eagerly in
  PyTorch (``torch.bmm`` over the stacked experts, the same masked compute,
  the same rank-based top-k gate), same shapes, same FLOPs.
* ``matmul``: a large float32 matmul (``--matmul`` square), jitted JAX and
  torch; the better of the two is the peak the step is compared with.

The four are timed round-robin (one call of each per round) so that load from
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

Usage: ``python benchmarks/compare_pytorch.py [--rounds 20] [--quick]``.
Last two lines: ``gflops_fraction <best step GFLOP/s / best matmul GFLOP/s>``
and ``torch_ratio <jax step time / torch step time>`` (the faster of the
``jax`` and ``jax_scan`` paths, library defaults).
"""

from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynmec_jax import system
from dynmec_jax.nets import features, moe
from dynmec_jax.train import allocator as train_allocator


def tune_malloc() -> None:
    """Raises glibc's mmap/trim thresholds so big temporaries are reused, not re-mapped."""
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(-3, 1 << 30) and libc.mallopt(-1, 1 << 31) and libc.mallopt(-2, 1 << 28)):
        raise RuntimeError("mallopt failed")


def step_flops(B: int, N: int, K: int, L: int, H: int, F: int = 5) -> tuple[int, list[str]]:
    """FLOPs of one training step (both updates) and the lines of their derivation."""
    M = B * N
    parts = [("experts layer 1", K * 2 * M * F * H),
             (f"experts layers 2..{L}", (L - 1) * K * 2 * M * H * H),
             ("gate W_g, W_noise", 2 * 2 * M * F * K),
             ("gated sum", 2 * M * K * H),
             ("heads A, B", 2 * M * H * 2)]
    fwd = sum(p for _, p in parts)
    lines = [f"M = B*N = {B}*{N} = {M} users per batch; all K={K} experts and L={L} layers "
             f"computed (masked compute costs full FLOPs)"]
    lines += [f"  forward {name:22s} {p / 1e6:10.1f} MFLOP" for name, p in parts]
    lines.append(f"  forward total {fwd / 1e9:.4f} GFLOP; x3 (forward + backward) x2 updates "
                 f"= {6 * fwd / 1e9:.4f} GFLOP per step")
    return 6 * fwd, lines


# ----------------------------------------------------------------------------
# PyTorch: the same step, eagerly
# ----------------------------------------------------------------------------

def make_torch_step(jax_variables, B, sp, lr=1e-3, loss_scale=1e-3, slope=0.01,
                    offload_all_fraction=0.5):
    """Eager PyTorch version of :func:`dynmec_jax.train_allocator.make_train_step`.

    Same parameters (copied from the JAX initialisation), same gate (Eq. 16,
    rank-based top-k with masks), same masked depth, same losses, two Adam
    optimisers.  Returns ``step() -> (tra, com)``.
    """
    import torch  # deferred: an optional, heavy dependency of this benchmark only

    p = {k: torch.tensor(np.asarray(v), requires_grad=True)
         for k, v in jax_variables["params"].items()}
    params = list(p.values())
    opt_b = torch.optim.Adam(params, lr=lr)
    opt_f = torch.optim.Adam(params, lr=lr)
    K = p["w_in"].shape[0]
    L = p["w_hidden"].shape[0] + 1
    N = sp.n_users
    ln2 = math.log(2.0)
    log_k_const = (math.log(sp.path_loss_const) + sp.path_loss_exp * math.log(sp.ref_distance)
                   + math.log(sp.tx_power) - math.log(sp.noise_psd))
    idx = torch.arange(K)
    tie = idx[None, :] < idx[:, None]

    def leaky(x):
        return torch.where(x >= 0, x, slope * x)

    def masked_softmax(x, m):
        top = torch.where(m, x, torch.full_like(x, -torch.inf)).amax(-1, keepdim=True).detach()
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        e = torch.where(m, torch.exp(torch.where(m, x - top, torch.zeros_like(x))),
                        torch.zeros_like(x))
        tot = e.sum(-1, keepdim=True)
        return e / torch.where(tot > 0, tot, torch.ones_like(tot))

    def sample():
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, N)
        scn = dict(size=u(0.0, 2 * sp.size_avg), workload=u(0.0, 2 * sp.workload_avg),
                   deadline=torch.clamp(u(0.0, sp.deadline_max), min=sp.deadline_min),
                   distance=u(sp.distance_min, sp.distance_max),
                   f_local=u(sp.f_local_min, sp.f_local_max))
        everyone = torch.rand(B, 1) < offload_all_fraction
        prob = 0.2 + 0.8 * torch.rand(B, 1)
        mask = everyone | (torch.rand(B, N) < prob)
        sub = torch.randint(0, K * L, (B,))
        width, depth = sub // L + 1, sub % L + 1
        return scn, mask, width, depth

    def forward(scn, mask, width, depth, eps, z):
        M = z.shape[0]
        logits = z @ p["w_gate"] + eps * torch.nn.functional.softplus(z @ p["w_noise"])
        other, me = logits[:, None, :], logits[:, :, None]
        ranks = ((other > me) | ((other == me) & tie)).sum(-1)
        w = width.repeat_interleave(N)[:, None]
        keep = ranks < w
        top = logits.amax(-1, keepdim=True).detach()
        e = torch.where(keep, torch.clamp(torch.exp(torch.where(keep, logits - top, 0.0)),
                                          min=4 * K * 1.1754944e-38), 0.0)
        gates = e / e.sum(-1, keepdim=True)                                       # (M, K)
        d = depth.repeat_interleave(N)[None, :, None]
        h = leaky(torch.bmm(z.expand(K, M, z.shape[1]), p["w_in"]) + p["b_in"][:, None, :])
        for i in range(L - 1):
            nxt = leaky(torch.bmm(h, p["w_hidden"][i]) + p["b_hidden"][i][:, None, :])
            h = torch.where(i + 1 < d, nxt, h)
        y = gates[:, 0, None] * h[0]
        for k in range(1, K):
            y = y + gates[:, k, None] * h[k]
        out = (y @ p["w_heads"] + p["b_heads"]).reshape(B, N, 2)
        bw = sp.bandwidth_max * masked_softmax(out[..., 0], mask)
        fa = sp.f_server * masked_softmax(out[..., 1], mask)
        # weighted_parts: Eq. 19 weights, Eq. 1-2 delays of offloaded users.
        wgt = (sp.importance_scale * (scn["workload"] / sp.workload_avg)
               * (scn["size"] / sp.size_avg) / scn["deadline"])
        active = mask & (wgt > 0)
        b = torch.where(mask, bw, 1.0)
        logk = log_k_const - sp.path_loss_exp * torch.log(scn["distance"])
        rate = b * torch.nn.functional.softplus(logk - torch.log(b)) / ln2
        t_tra = torch.where(mask, scn["size"] / rate, 0.0)
        t_com = torch.where(mask, scn["workload"] * scn["size"] / torch.where(mask, fa, 1.0), 0.0)
        tra = torch.where(active, wgt * torch.where(active, t_tra, 0.0), 0.0).sum(-1)
        com = torch.where(active, wgt * torch.where(active, t_com, 0.0), 0.0).sum(-1)
        return tra, com

    def step():
        with torch.no_grad():
            scn, mask, width, depth = sample()
            eps = torch.randn(B * N, K)
            f = lambda x, ref: torch.log(torch.clamp(x / ref, min=1e-4))
            z = torch.stack([f(scn["size"], sp.size_avg), f(scn["workload"], sp.workload_avg),
                             f(scn["deadline"], sp.deadline_max),
                             f(scn["distance"], sp.distance_max),
                             f(scn["f_local"], sp.f_local_max)], -1).reshape(B * N, 5)
        opt_b.zero_grad(set_to_none=True)
        tra, com = forward(scn, mask, width, depth, eps, z)
        (tra.mean() * loss_scale).backward()
        opt_b.step()
        opt_f.zero_grad(set_to_none=True)
        tra1, com1 = forward(scn, mask, width, depth, eps, z)
        (com1.mean() * loss_scale).backward()
        opt_f.step()
        return float(tra.detach().mean()), float(com1.detach().mean())

    return step


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
                    help="scenarios per gradient slice of the jax_scan_mb path")
    ap.add_argument("--quick", action="store_true", help="batch 64, 5 rounds (smoke test)")
    ap.add_argument("--plain-malloc", action="store_true", help="leave glibc malloc alone")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.rounds, args.chunk, args.matmul = 64, 5, 4, 1024
        args.micro_batch = 16
    if not args.plain_malloc:
        tune_malloc()

    import torch  # deferred: an optional, heavy dependency of this benchmark only

    sp = system.SystemParams(n_users=args.users)
    scales = features.FeatureScales.from_params(sp)
    model = moe.MoEAllocator()
    K, L, H = model.n_experts, model.n_layers, model.hidden
    tx = optax.adam(1e-3)
    step = train_allocator.make_train_step(model, tx, args.batch)
    allowed = jnp.ones((K, L), bool)

    # JAX, one dispatch per step (state donated).
    step_jit = jax.jit(lambda st, k: step(st, k, sp, scales, allowed)[0], donate_argnums=0)
    state = train_allocator.init_state(jax.random.PRNGKey(0), model, tx)
    torch_step = make_torch_step(jax.device_get(state.params), args.batch, sp)
    # JAX, a lax.scan chunk of steps (the training driver's path).
    table = jnp.ones((args.chunk, K, L), bool)
    chunk_jit = jax.jit(lambda st, k: train_allocator.train_chunk(step, st, k, sp, scales,
                                                                  table)[0],
                        donate_argnums=0)
    state_c = train_allocator.init_state(jax.random.PRNGKey(0), model, tx)
    step_mb = train_allocator.make_train_step(model, tx, args.batch, micro_batch=args.micro_batch)
    chunk_mb = jax.jit(lambda st, k: train_allocator.train_chunk(step_mb, st, k, sp, scales,
                                                                 table)[0], donate_argnums=0)
    state_m = train_allocator.init_state(jax.random.PRNGKey(0), model, tx)
    n = args.matmul
    a = jax.random.normal(jax.random.PRNGKey(3), (n, n), jnp.float32)
    mm_jax = jax.jit(lambda x: x @ x)
    a_t = torch.randn(n, n)

    key = jax.random.PRNGKey(1)
    for i in range(3):   # compile and warm up
        state = jax.block_until_ready(step_jit(state, jax.random.fold_in(key, i)))
        state_c = jax.block_until_ready(chunk_jit(state_c, jax.random.fold_in(key, i)))
        state_m = jax.block_until_ready(chunk_mb(state_m, jax.random.fold_in(key, i)))
        torch_step()
        jax.block_until_ready(mm_jax(a))
        a_t @ a_t

    t = {"jax": [], "jax_scan": [], "jax_scan_mb": [], "torch": [], "matmul_jax": [],
         "matmul_torch": []}
    for r in range(args.rounds):
        k = jax.random.fold_in(key, 100 + r)
        t0 = time.perf_counter()
        state = jax.block_until_ready(step_jit(state, k))
        t["jax"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        state_c = jax.block_until_ready(chunk_jit(state_c, k))
        t["jax_scan"].append((time.perf_counter() - t0) / args.chunk)
        t0 = time.perf_counter()
        state_m = jax.block_until_ready(chunk_mb(state_m, k))
        t["jax_scan_mb"].append((time.perf_counter() - t0) / args.chunk)
        t0 = time.perf_counter()
        torch_step()
        t["torch"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(mm_jax(a))
        t["matmul_jax"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a_t @ a_t
        t["matmul_torch"].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in t.items()}

    flops, lines = step_flops(args.batch, args.users, K, L, H)
    mm_gflops = {s: 2 * n ** 3 / med[f"matmul_{s}"] / 1e9 for s in ("jax", "torch")}
    peak = max(mm_gflops.values())
    best_jax = min(med["jax"], med["jax_scan"])           # library defaults
    best_any = min(best_jax, med["jax_scan_mb"])           # with the opt-in micro_batch
    print(f"backend {jax.default_backend()}, jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), B={args.batch}, N={args.users}, K={K}, L={L}, "
          f"H={H}, rounds={args.rounds}, tune_malloc={not args.plain_malloc}")
    print("FLOP count of one training step:")
    for line in lines:
        print(line)
    for name in ("jax", "jax_scan", "jax_scan_mb", "torch"):
        print(f"{name:9s} median {1e3 * med[name]:8.2f} ms/step (min {1e3 * min(t[name]):.2f}, "
              f"max {1e3 * max(t[name]):.2f})  {flops / med[name] / 1e9:6.1f} GFLOP/s")
    for s in ("jax", "torch"):
        print(f"matmul {n}x{n} f32 ({s}): median {1e3 * med[f'matmul_{s}']:.2f} ms, "
              f"{mm_gflops[s]:.1f} GFLOP/s")
    print(f"ratio jax/torch {med['jax'] / med['torch']:.3f}, jax_scan/torch "
          f"{med['jax_scan'] / med['torch']:.3f}, jax_scan_mb/torch "
          f"{med['jax_scan_mb'] / med['torch']:.3f} (micro_batch {args.micro_batch})")
    print(f"step GFLOP/s: library defaults {flops / best_jax / 1e9:.1f}, with micro_batch "
          f"{flops / best_any / 1e9:.1f}; matmul peak {peak:.1f} (jax {mm_gflops['jax']:.1f})")
    print(f"gflops_fraction of XLA's own matmul {flops / best_any / 1e9 / mm_gflops['jax']:.3f}")
    print(f"gflops_fraction {flops / best_any / 1e9 / peak:.3f}")
    print(f"torch_ratio {best_jax / med['torch']:.3f}")


if __name__ == "__main__":
    main()
