r"""Training cost of progressive shrinking versus traditional training (Fig. 12).

    dynmec-training-cost [--config=dynmec_jax/configs/allocator.py:default] \
        [--seeds=0,1,2] [--cases=full,width,depth] [--target=0.02] [--workdir=runs/fig12]

For each case (which sub-networks must work: all, widths only, depths only),
method and seed, trains until every sub-network of the case is within
``--target`` of the optimal weighted delay and records the optimiser steps and
the training wall time (:func:`dynmec_jax.experiments.fig12.run`).  Each run
is a record of ``WORKDIR/store`` written as it ends (a rerun resumes);
``WORKDIR/fig12_training_cost.json`` holds the means and 95% CIs.
"""

from __future__ import annotations

from absl import flags

from dynmec_jax import cli, files
from dynmec_jax.experiments import fig12
from dynmec_jax.experiments.config import Fig12Config
from dynmec_jax.store import ResultStore
from dynmec_jax.train import loop
from dynmec_jax.train.config import AllocatorConfig

_CONFIG = cli.define_config("allocator.py", "default", "allocator training config")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "training seeds")
_CASES = flags.DEFINE_list("cases", ["full", "width", "depth"], "dynamic cases")
_TARGET = flags.DEFINE_float("target", 0.02, "gap every sub-network must reach")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 25, "steps between checks")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 4000, "cap per stage")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch", 512, "held-out scenarios of the checks")
_WORKDIR = flags.DEFINE_string("workdir", "runs/fig12", "result store and summary")


def main(argv):
    cli.start(argv)
    config = cli.typed(AllocatorConfig, _CONFIG.value)
    f = cli.typed(Fig12Config, {
        "seeds": cli.guard(lambda: tuple(int(s) for s in _SEEDS.value)),
        "cases": tuple(_CASES.value), "target": _TARGET.value, "batch": config.train.batch,
        "eval_every": _EVAL_EVERY.value, "max_steps": _MAX_STEPS.value,
        "eval_batch": _EVAL_BATCH.value})
    workdir = cli.writable_workdir(_WORKDIR.value)
    with cli.locked(workdir):   # one run per workdir
        try:
            data = fig12.data(f, fig12.run(config, f, ResultStore(workdir / "store")))
        except loop.DivergenceError as e:
            return cli.diverged(e)
        files.write_json(data, workdir / "fig12_training_cost.json")
        pro, tra = data["progressive"], data["traditional"]
        for i, case in enumerate(f.cases):
            print(f"{case:>6}: progressive {pro['steps']['mean'][i]:.0f} steps / "
                  f"{pro['seconds']['mean'][i]:.1f} s, traditional {tra['steps']['mean'][i]:.0f} "
                  f"steps / {tra['seconds']['mean'][i]:.1f} s -> "
                  f"{tra['steps']['mean'][i] / pro['steps']['mean'][i]:.2f}x fewer steps")
    return 0


run = cli.entry(main, __doc__, __name__)
