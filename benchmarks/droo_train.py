"""DROO's training: frame by frame against blocks of frames with bounded scoring.

``droo_train.make_train`` decides the frames of each DNN-update interval as
one batch and scores only the candidates the adaptive K can reach
(``droo_train.make_block``, ``droo.candidate_costs``).  This script times it
against the same training run one frame at a time
(``droo_train.make_train_frame_by_frame``, the reference order, as
``make_train`` ran before issue 22's last change) and against blocks that
score all K_max candidates,
all three compiled first, then run round-robin (``--rounds``), warmed up,
``block_until_ready``; the items are vmapped as a sweep chunk vmaps them.
Checks that the three give the same decisions (winning indices, K, memory).

    python benchmarks/droo_train.py [--n_users 30] [--scenarios 9600] [--items 5] \\
        [--rounds 3] [--json out.json]

Defaults: a sweep item of the quick preset at N = 30 (9,600 frames, one
scenario each; 5 items per chunk).  The last line is ``ratio <blocks /
frame by frame, medians>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from dynmec_jax import system
from dynmec_jax.baselines import droo, droo_train


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_users", type=int, default=30)
    ap.add_argument("--scenarios", type=int, default=9600)
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cfg = droo.DrooConfig(n_max=args.n_users, n_scenarios=args.scenarios)
    sp = system.SystemParams(n_users=args.n_users)
    keys = jax.random.split(jax.random.key(3), args.items)

    def unbounded(scn, cands, usable, sys_params, bound, chunk=4):
        return droo.score_candidates(scn, cands, usable, sys_params).cost

    builders = {"frame_by_frame": lambda: droo_train.make_train_frame_by_frame(cfg),
                "blocks_all_candidates": lambda: droo_train.make_train(cfg),
                "blocks_bounded (default)": lambda: droo_train.make_train(cfg)}
    progs, compile_s = {}, {}
    for name, build in builders.items():
        orig = droo.candidate_costs
        if name == "blocks_all_candidates":   # the same blocks, every candidate scored
            droo.candidate_costs = unbounded
        try:
            t0 = time.perf_counter()
            progs[name] = jax.jit(jax.vmap(build(), in_axes=(0, None))).lower(
                keys, sp).compile()
            compile_s[name] = time.perf_counter() - t0
        finally:
            droo.candidate_costs = orig
    times = {k: [] for k in progs}
    outs = {}
    for name, p in progs.items():          # warm-up
        outs[name] = jax.block_until_ready(p(keys, sp))
    for _ in range(args.rounds):
        for name, p in progs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(p(keys, sp))
            times[name].append(time.perf_counter() - t0)
    ref_state, ref_m = outs["frame_by_frame"]
    res = {"n_users": args.n_users, "scenarios": args.scenarios, "items": args.items,
           "device": str(jax.devices()[0]), "programs": {}}
    for name in progs:
        state, m = outs[name]
        same = (all(np.array_equal(np.asarray(ref_m[f]), np.asarray(m[f]))
                    for f in ("best_index", "k", "trained"))
                and np.array_equal(np.asarray(ref_state.memory.labels),
                                   np.asarray(state.memory.labels)))
        med = statistics.median(times[name])
        res["programs"][name] = {"run_s": times[name], "median_s": med,
                                 "compile_s": compile_s[name], "same_decisions": bool(same),
                                 "mean_k": float(np.mean(np.asarray(m["k"])))}
        print(f"{name:26s} median {med:6.2f} s  (runs {', '.join(f'{t:.2f}' for t in times[name])};"
              f" compile {compile_s[name]:.1f} s)  same decisions: {same}")
    base = res["programs"]["frame_by_frame"]["median_s"]
    for r in res["programs"].values():
        r["ratio"] = r["median_s"] / base
    res["ratio"] = res["programs"]["blocks_bounded (default)"]["ratio"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(f"mean K {res['programs']['frame_by_frame']['mean_k']:.1f} of {args.n_users}")
    print(f"ratio {res['ratio']:.3f}")


if __name__ == "__main__":
    main()
