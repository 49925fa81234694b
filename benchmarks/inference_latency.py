"""Measured inference latency of every (width, depth) versus the Eq. 9 model; lambda fit.

Issue 6, target 6.  One scenario of N = 30 users, all offloaded (so the
allocator serves 30 users), the pretrained allocator
(:func:`dynmec_jax.allocator.load_allocator`, K = 10, L = 3, hidden 64) and
the policy MLP of Section IV.C (:class:`dynmec_jax.nets.policy.Policy`,
10 -> 32 -> 2, freshly initialised: its cost does not depend on its weights).
Each timed call is: policy features + policy MLP forward, then the
allocator at (width, depth) and the two share softmaxes (Eq. 12-20).  Two
implementations, labelled in the output:

* ``masked``: ONE compiled function for all (width, depth) (traced ints),
  as the library runs it: every expert and layer is computed and masked
  (the masks of :mod:`dynmec_jax.nets.moe`), so its latency should be flat across (width, depth).
* ``sliced``: one compiled function PER (width, depth), a physically smaller
  network: :class:`~dynmec_jax.nets.moe.MoEAllocator` with ``n_experts=width``,
  ``n_layers=depth`` and the stacked weights sliced to the first ``width``
  experts and ``depth`` layers.  A cost proxy: its MACs are those of Eq.
  30-33 for (width, depth) (the gate is ``5 x width`` instead of ``5 x K``:
  at most 45 MACs per user fewer), its outputs are not the gated model's.

Times are wall clock per jitted call from Python (dispatch included),
``block_until_ready``, medians over ``--rounds`` rounds that visit every
(width, depth) and both implementations in turn.  Next to them: the Eq. 9
delay ``lambda M / f_ser`` with Table II's lambda = 1 and f_ser = 2.5 GHz, M =
:func:`dynmec_jax.accounting.allocation_model_macs` (dynamic + fixed, 30
served users) + :func:`dynmec_jax.nets.policy.policy_macs`.  Then a least-squares
fit ``t = t0 + lambda_fit * M / f_ser`` over the 30 sub-networks for each
implementation: ``lambda_fit`` is this CPU's effective cycles-per-MAC at
f_ser (what Eq. 9 needs to match the measured slope), ``t0`` the fixed
overhead (dispatch, features, softmaxes).

Usage: ``python benchmarks/inference_latency.py [--rounds 200] [--quick]``.
Last line: ``lambda_fit <sliced lambda> t0_us <sliced intercept> (masked <lambda>)``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import accounting, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.nets import features, moe
from dynmec_jax.nets import policy as policy_net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="20 rounds")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 20

    alloc = allocator_lib.load_allocator()
    if not alloc.is_moe:
        raise SystemExit("the pretrained allocator is not the MoE model")
    K, L, H = alloc.n_experts, alloc.n_layers, alloc.model.hidden
    sp = system.SystemParams(n_users=args.users)
    scn = jax.tree.map(lambda a: a[0], system.sample_scenarios(jax.random.PRNGKey(0), sp, 1))
    offload = jnp.ones((args.users,), bool)

    try:   # the policy MLP of Section IV.C (module may be in flux)
        pol = policy_net.Policy(n_experts=K, n_layers=L)
        pol_params = policy_net.init_policy(jax.random.PRNGKey(1), pol)
        pol_macs = int(accounting.policy_macs())

        def policy_out(scn, x):
            f = policy_net.policy_features(scn, x, alloc.scales, alloc.sys_params, alloc.sys_params)
            return pol.apply(pol_params, f)
        policy_label = f"policy MLP {policy_net.N_POLICY_INPUTS} -> {pol.hidden} -> 2"
    except Exception as e:   # noqa: BLE001
        pol_macs = 0
        policy_out = lambda scn, x: jnp.zeros((2,))
        policy_label = f"policy MLP not measured ({type(e).__name__}: {e})"

    def shares(logits, x):
        return allocator_lib.shares(logits, x, alloc.sys_params)

    @jax.jit
    def masked(variables, scn, x, width, depth):
        out = policy_out(scn, x)
        a = allocator_lib.Allocator(variables, alloc.scales, alloc.sys_params, alloc.model)
        logits, _ = a.logits(scn, width, depth)
        return out, shares(logits, x)

    def make_sliced(w, d):
        small = moe.MoEAllocator(n_experts=w, n_layers=d, hidden=H,
                                 negative_slope=alloc.model.negative_slope)

        p = alloc.params["params"]   # sliced once, outside (as a deployment stores them)
        q = {"params": {"w_gate": p["w_gate"][:, :w], "w_noise": p["w_noise"][:, :w],
                        "w_in": p["w_in"][:w], "b_in": p["b_in"][:w],
                        "w_hidden": p["w_hidden"][:d - 1, :w],
                        "b_hidden": p["b_hidden"][:d - 1, :w],
                        "w_heads": p["w_heads"], "b_heads": p["b_heads"]}}
        q = jax.tree.map(lambda a: jnp.array(a, copy=True), q)

        @jax.jit
        def sliced(q, scn, x):
            out = policy_out(scn, x)
            z = features.normalize_features(scn, alloc.scales)
            logits, _ = small.apply(q, z, w, d)
            return out, shares(logits, x)
        return functools.partial(sliced, q)

    subnets = [(w, d) for w in range(1, K + 1) for d in range(1, L + 1)]
    sliced = {s: make_sliced(*s) for s in subnets}
    v = alloc.params
    args_wd = {s: (jnp.int32(s[0]), jnp.int32(s[1])) for s in subnets}
    for s in subnets:   # compile and warm up
        for _ in range(3):
            jax.block_until_ready(masked(v, scn, offload, *args_wd[s]))
            jax.block_until_ready(sliced[s](scn, offload))
    noop = jax.jit(lambda scn, x: x)   # dispatch floor: same arguments, no work
    jax.block_until_ready(noop(scn, offload))
    t_noop = []
    t_m = {s: [] for s in subnets}
    t_s = {s: [] for s in subnets}
    pc = time.perf_counter
    for _ in range(args.rounds):
        for s in subnets:
            t0 = pc()
            jax.block_until_ready(masked(v, scn, offload, *args_wd[s]))
            t1 = pc()
            jax.block_until_ready(sliced[s](scn, offload))
            t2 = pc()
            t_m[s].append(t1 - t0)
            t_s[s].append(t2 - t1)
        t0 = pc()
        jax.block_until_ready(noop(scn, offload))
        t_noop.append(pc() - t0)
    med_m = np.array([statistics.median(t_m[s]) for s in subnets])
    med_s = np.array([statistics.median(t_s[s]) for s in subnets])
    macs = np.array([sum(accounting.allocation_model_macs(w, d, args.users, n_experts=K,
                                                          n_layers=L, hidden=H).values())
                     for w, d in subnets], float) + pol_macs
    f = float(sp.f_server)
    model_s = float(sp.efficiency) * macs / f

    def fit(t):
        A = np.stack([np.ones_like(macs), macs / f], 1)
        (t0, lam), *_ = np.linalg.lstsq(A, t, rcond=None)
        pred = A @ np.array([t0, lam])
        r2 = 1 - np.sum((t - pred) ** 2) / np.sum((t - t.mean()) ** 2)
        return t0, lam, r2

    print(f"backend {jax.default_backend()}, N={args.users} users (all offloaded), K={K}, L={L}, "
          f"hidden={H}, rounds={args.rounds}; {policy_label}")
    print("latency per jitted call [us] (Python dispatch included); Eq. 9 model with "
          f"lambda={float(sp.efficiency):g}, f_ser={f / 1e9:g} GHz")
    print(f"{'width':>5} {'depth':>5} {'MACs':>10} {'Eq.9 [us]':>10} {'masked [us]':>12} "
          f"{'sliced [us]':>12}")
    for i, (w, d) in enumerate(subnets):
        print(f"{w:5d} {d:5d} {int(macs[i]):10d} {1e6 * model_s[i]:10.1f} "
              f"{1e6 * med_m[i]:12.1f} {1e6 * med_s[i]:12.1f}")
    print(f"dispatch floor (a jitted identity on the same scenario): "
          f"{1e6 * statistics.median(t_noop):.1f} us")
    fits = {}
    for name, t in (("masked", med_m), ("sliced", med_s)):
        t0, lam, r2 = fit(t)
        fits[name] = (t0, lam)
        print(f"{name}: t = {1e6 * t0:.1f} us + lambda {lam:.4f} * M / f_ser  (R^2 {r2:.3f}); "
              f"i.e. {lam / f * 1e12:.3f} ps/MAC, {1 / (lam / f) / 1e9:.1f} GMAC/s marginal; "
              f"range {1e6 * t.min():.1f}-{1e6 * t.max():.1f} us")
    print(f"lambda_fit {fits['sliced'][1]:.4f} t0_us {1e6 * fits['sliced'][0]:.1f} "
          f"(masked {fits['masked'][1]:.4f})")


if __name__ == "__main__":
    main()
