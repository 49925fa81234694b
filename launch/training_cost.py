r"""Training cost of progressive shrinking versus traditional training (Fig. 12).

    python launch/training_cost.py --config=dynmec_jax/configs/allocator.py:default \
        --seeds=0,1,2 --cases=full,width,depth --target=0.02 --out=runs/fig12.json

For each case (which sub-networks must work: all, widths only, depths only),
method and seed, trains until every sub-network of the case is within
``--target`` of the optimal weighted delay and records the optimiser steps and
the training wall time.  Results are written to ``--out`` as each run ends;
finished runs found there are skipped (rerun to resume).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from dynmec_jax import cli as common
from dynmec_jax import files, system
from dynmec_jax.experiments import fig12
from dynmec_jax.train import config as train_config

_CONFIG = config_flags.DEFINE_config_file(
    "config", "dynmec_jax/configs/allocator.py:default", "allocator training config")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "training seeds")
_CASES = flags.DEFINE_list("cases", ["full", "width", "depth"], "dynamic cases")
_TARGET = flags.DEFINE_float("target", 0.02, "gap every sub-network must reach", lower_bound=0)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 25, "steps between checks", lower_bound=1)
_MAX_STEPS = flags.DEFINE_integer("max_steps", 4000, "cap per stage", lower_bound=1)
_OUT = flags.DEFINE_string("out", "runs/fig12_training_cost.json", "output JSON")


def summarize(runs: list[dict]) -> dict:
    """Mean and 95% CI of steps and wall time per (case, method), and the ratios."""
    out = {}
    for case in sorted({r["case"] for r in runs}):
        row = {}
        for method in ("progressive", "traditional"):
            rs = [r for r in runs if r["case"] == case and r["method"] == method]
            if rs:
                row[method] = {k: sweep_stats([r[k] for r in rs]) for k in ("steps", "wall_time_s")}
                row[method]["all_reached"] = all(r["reached"] for r in rs)
        if len(row) == 2:
            row["step_ratio"] = (row["traditional"]["steps"]["mean"]
                                 / row["progressive"]["steps"]["mean"])
        out[case] = row
    return out


def sweep_stats(xs) -> dict:
    x = np.asarray(xs, float)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0
    return {"mean": float(x.mean()), "ci95": float(half), "n": len(x), "values": x.tolist()}


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    cfg = _CONFIG.value
    config = common.guard(train_config.allocator_config, cfg)
    sys_params = system.params_from_overrides(cfg.system.to_dict())
    for c in _CASES.value:
        if c not in ("full", "width", "depth"):
            common.fail(f"--cases: unknown case {c!r} (full, width, depth)")
    seeds = common.guard(lambda: [int(s) for s in _SEEDS.value])
    out = pathlib.Path(_OUT.value)
    common.writable_workdir(out.parent)
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    done = {(r["case"], r["method"], r["seed"]) for r in runs}
    for case in _CASES.value:
        for seed in seeds:
            for method in ("progressive", "traditional"):
                if (case, method, seed) in done:
                    continue
                r = fig12.training_cost(config, sys_params, case, method, seed,
                                        target=_TARGET.value, eval_every=_EVAL_EVERY.value,
                                        max_steps=_MAX_STEPS.value, eval_seed=int(cfg.eval.seed))
                logging.info("%s %s seed %d: %d steps, %.1f s, reached=%s", case, method, seed,
                             r["steps"], r["wall_time_s"], r["reached"])
                runs.append(r)
                files.atomic_write(out, json.dumps(
                    {"config": files.to_jsonable(cfg), "versions": files.versions(),
                     "runs": runs, "summary": summarize(runs)}, indent=1))
    summary = summarize(runs)
    for case, row in summary.items():
        if "step_ratio" in row:
            p, t = row["progressive"], row["traditional"]
            print(f"{case:>6}: progressive {p['steps']['mean']:.0f} steps / "
                  f"{p['wall_time_s']['mean']:.1f} s, traditional {t['steps']['mean']:.0f} steps / "
                  f"{t['wall_time_s']['mean']:.1f} s -> {row['step_ratio']:.2f}x fewer steps")
    return 0


if __name__ == "__main__":
    common.run(main)
