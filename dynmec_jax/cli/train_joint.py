r"""Trains the joint scheduler + policy (Algorithm 1) on a fixed allocator.

    dynmec-train-joint [--config=dynmec_jax/configs/joint.py:default] \
        [--workdir=runs/joint] [--config.train.episodes=500] [--export_pretrained]

Trains ``config.n_seeds`` seeds side by side (``jit(vmap(train))``): policy
pre-training with all tasks offloaded, then ``config.train.episodes`` joint
episodes.  Each seed is scored on held-out validation scenarios (mean cost C
of the greedy decisions, Eq. 24-25) and the best one is exported as a
pipeline to ``WORKDIR/pipeline`` (``pipeline.load_pipeline(WORKDIR/pipeline)``);
``WORKDIR/train_joint.json`` holds the per-seed numbers
(:func:`dynmec_jax.train.joint.train_and_save`).  ``--export_pretrained``
also writes it into the package (``dynmec_jax/pretrained/pipeline``, the
default of ``load_pipeline()``), unless a weight is not finite or its
validation cost is more than 10% above greedy + KKT's (one line, exit 2;
:func:`dynmec_jax.train.joint_run.export_pretrained`).  A diverged run stops
with one line and exit 1, keeping the last finite checkpoint.

Mixed N (the shipped pipeline): ``--config.system.n_users=60
--config.train.n_users_min=5`` trains on scenarios of N ~ U{5..60} users,
padded to 60 with a mask; the scheduler then also reads count features
(docs/reproduction.md, "Any number of users").
"""

from __future__ import annotations

from dynmec_jax import cli, pipeline
from dynmec_jax.train import joint_run, loop
from dynmec_jax.train.config import JointConfig

_CONFIG, _WORKDIR, _EXPORT = cli.define_training_flags("joint.py", "pipeline", "pipeline")


def main(argv):
    cli.start(argv)
    config = cli.typed(JointConfig, _CONFIG.value)
    try:
        alloc = joint_run.load_allocator(config)
    except (FileNotFoundError, ValueError) as e:
        cli.fail(str(e))
    cli.guard(pipeline.build_models, config.train, alloc)
    workdir = cli.writable_workdir(_WORKDIR.value)
    with cli.locked(workdir):   # one run per workdir
        try:
            pipe, record = joint_run.train_and_save(config, workdir)
        except loop.DivergenceError as e:
            return cli.diverged(e)
        tc = config.train
        print(f"{tc.pretrain_steps} pre-training steps + {tc.episodes} episodes x "
              f"{config.n_seeds} seeds in {record['train_wall_time_s']:.1f} s")
        for i, r in enumerate(record["validation"]):
            print(f"seed {i}: held-out cost {r['cost']:.3f}, offload {r['offload_fraction']:.3f}, "
                  f"policy accuracy {r['policy_accuracy']:.3f}"
                  + ("  <- exported" if i == record["exported_seed"] else ""))
        if _EXPORT.value:   # refused (exit 2) for a non-finite or poor model
            print(f"exported to {cli.guard(joint_run.export_pretrained, workdir)}")
    return 0


run = cli.entry(main, __doc__, __name__)
