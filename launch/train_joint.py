r"""Trains the joint scheduler + policy (Algorithm 1) on a fixed allocator.

    python launch/train_joint.py --config=dynmec_jax/configs/joint.py:default \
        --workdir=runs/joint [--config.train.episodes=500] [--export_pretrained]

Trains ``config.n_seeds`` seeds side by side (``jit(vmap(train))``): policy
pre-training with all tasks offloaded, then ``config.train.episodes`` joint
episodes.  Each seed is scored on held-out validation scenarios (mean cost C
of the greedy decisions, Eq. 24-25) and the best one is exported as a
pipeline to ``WORKDIR/pipeline`` (``pipeline.load_pipeline(WORKDIR/pipeline)``);
``WORKDIR/train_joint.json`` holds the per-seed numbers.
``--export_pretrained`` also writes it into the package
(``dynmec_jax/pretrained/pipeline``, the default of ``load_pipeline()``).

Mixed N (the shipped pipeline): ``--config.system.n_users=60
--config.train.n_users_min=5`` trains on scenarios of N ~ U{5..60} users,
padded to 60 with a mask; the scheduler then also reads count features
(docs/reproduction.md, "Any number of users").
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cli as common
from dynmec_jax import files, pipeline, system
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

_CONFIG = config_flags.DEFINE_config_file(
    "config", "dynmec_jax/configs/joint.py:default", "joint training config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/joint", "output directory")
_EXPORT = flags.DEFINE_bool("export_pretrained", False,
                            "also write the pipeline into dynmec_jax/pretrained/pipeline")

#: Validation scenarios used to pick the exported seed (disjoint from eval.seed).
VALIDATION_OFFSET = 1


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    cfg = _CONFIG.value
    common.guard(train_config.joint_config, cfg)
    try:
        alloc = allocator_lib.load_allocator(cfg.get("allocator", "") or None)
    except (FileNotFoundError, ValueError) as e:
        common.fail(str(e))
    workdir = common.writable_workdir(_WORKDIR.value)
    sp = common.guard(system.params_from_overrides, cfg.system.to_dict(), alloc.sys_params)
    tc = train_config.joint_config(cfg)
    common.guard(pipeline.build_models, tc, alloc)

    keys = files.seed_keys(int(cfg.seed), int(cfg.n_seeds))
    t0 = time.time()
    states, metrics, per_seed, best = train_joint.train_and_select(
        tc, alloc, sp, keys, jax.random.key(int(cfg.eval.seed) + VALIDATION_OFFSET),
        int(cfg.eval.batch))
    wall = time.time() - t0
    joint = {k: np.asarray(v) for k, v in metrics["joint"].items()}
    tail = max(1, tc.episodes // 10)
    record = {
        "train_wall_time_s": wall, "n_seeds": int(cfg.n_seeds), "exported_seed": best,
        "validation": per_seed,
        "joint_first_tenth": {k: joint[k][:, :tail].mean(1).tolist() for k in joint},
        "joint_last_tenth": {k: joint[k][:, -tail:].mean(1).tolist() for k in joint},
        "config": json.loads(cfg.to_json()), "jax": jax.__version__,
    }
    pipe = pipeline.make_pipeline(tc, alloc, train_joint.unstack(states, best), record)
    pipeline.save_pipeline(pipe, workdir / "pipeline")
    files.atomic_write(workdir / "train_joint.json", json.dumps(record, indent=1))
    print(f"{tc.pretrain_steps} pre-training steps + {tc.episodes} episodes x {cfg.n_seeds} "
          f"seeds in {wall:.1f} s")
    for i, r in enumerate(per_seed):
        print(f"seed {i}: held-out cost {r['cost']:.3f}, offload {r['offload_fraction']:.3f}, "
              f"policy accuracy {r['policy_accuracy']:.3f}" + ("  <- exported" if i == best
                                                               else ""))
    if _EXPORT.value:
        pipeline.save_pipeline(pipe, pipeline.PRETRAINED_DIR)
        print(f"exported to {pipeline.PRETRAINED_DIR}")
    return 0


if __name__ == "__main__":
    common.run(main)
