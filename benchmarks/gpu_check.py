"""The timed part of ``benchmarks/gpu_check.sh``: paper-shape programs on this machine's
accelerator, against the CPU plan.

Times, at the ``paper`` preset's shapes (:mod:`dynmec_jax.experiments.plan`):
the allocator training chunks (MoE and static, a few steps each) and one
chunk of the shared-shape sweep (every stage: Algorithm 1's training at
``--fraction`` of its steps, the evaluation whole), and prints per program
the accelerator's seconds, the CPU plan's seconds (``--cpu_plan``, the
committed ``docs/plan_paper.json``) and their ratio, and the predicted
wall time of the whole preset on this machine.

    python benchmarks/gpu_check.py [--cpu_plan docs/plan_paper.json] [--out gpu_plan.json]

The last line is ``gpu_cpu_ratio <median over the timed programs>``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax

from dynmec_jax import typedconfig
from dynmec_jax.configs import reproduce as reproduce_configs
from dynmec_jax.experiments import plan
from dynmec_jax.experiments.config import ReproduceConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu_plan", default=str(ROOT / "docs" / "plan_paper.json"))
    ap.add_argument("--fraction", type=float, default=0.02)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = typedconfig.from_configdict(ReproduceConfig,
                                      reproduce_configs.get_config(args.preset))
    t0 = time.perf_counter()
    progs = plan.plan_allocators(cfg)
    progs += plan.plan_sweeps(cfg, args.fraction, n_users=(), full_programs=False)
    cpu = {}
    path = pathlib.Path(args.cpu_plan)
    if path.is_file():
        cpu = {p["program"]: p for p in json.loads(path.read_text())["programs"]}
    else:
        print(f"no CPU plan at {path}: ratios skipped")
    ratios = []
    print(f"\ndevice: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(f"{'program':28s} {'accel s':>9s} {'cpu s':>9s} {'ratio':>7s} {'pred. wall':>11s}")
    for p in progs:
        c = cpu.get(p["program"])
        r = p["measured_s"] / c["measured_s"] if c and c.get("measured_s") else None
        if r is not None:
            ratios.append(r)
        print(f"{p['program']:28s} {p['measured_s']:9.3f} "
              f"{(c or {}).get('measured_s', float('nan')):9.3f} "
              f"{r if r is not None else float('nan'):7.3f} {p['wall_s'] / 3600:9.2f} h")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(
            {"device": str(jax.devices()[0]), "programs": progs,
             "wall_s": time.perf_counter() - t0}, indent=1))
    print(f"gpu_cpu_ratio {statistics.median(ratios) if ratios else float('nan'):.4f}")


if __name__ == "__main__":
    main()
