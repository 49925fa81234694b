r"""Trains the allocation model (Section IV.A-B) and evaluates it against the optimum.

    python launch/train_allocator.py --config=dynmec_jax/configs/allocator.py:default \
        --workdir=runs/allocator [--config.train.batch=64] [--export_pretrained]

Writes ``WORKDIR/allocator_eval.json`` (per seed: gap to the optimal weighted
delay for every (width, depth), with all tasks offloaded and with a random 60%
offloaded; Fig. 4 numbers) and ``WORKDIR/allocator`` (the exported model, for
``allocator_lib.load_allocator(WORKDIR/allocator)``).  Interrupted runs resume
from ``WORKDIR/checkpoints``.  ``--export_pretrained`` also copies the model
into the package as the default of ``load_allocator()``.
"""

from __future__ import annotations

import shutil

from absl import flags
from ml_collections import config_flags

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cli as common
from dynmec_jax import files
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import config as train_config

_CONFIG = config_flags.DEFINE_config_file(
    "config", "dynmec_jax/configs/allocator.py:default", "allocator training config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/allocator", "output directory")
_EXPORT = flags.DEFINE_bool("export_pretrained", False,
                            "copy the exported model into dynmec_jax/pretrained/allocator")


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    cfg = _CONFIG.value
    common.guard(train_config.allocator_config, cfg)
    workdir = common.writable_workdir(_WORKDIR.value)
    lock = common.lock_workdir(workdir)   # one run per workdir
    common.guard(files.claim_workdir, cfg, workdir)
    record = train_allocator.train_and_evaluate(cfg, workdir)
    print(f"{record['steps']} steps x {cfg.n_seeds} seeds in {record['train_wall_time_s']:.1f} s; "
          f"largest network gap {100 * record['full_gap_all']:.3f}%, worst sub-network gap "
          f"{100 * record['max_gap_all']:.3f}% (all offloaded), "
          f"{100 * record['max_gap_random']:.3f}% "
          f"(random {cfg.eval.offload_fraction:.0%} offloaded)")
    if _EXPORT.value:
        dst = allocator_lib.PRETRAINED_DIR
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("allocator.json", "params.msgpack"):
            shutil.copyfile(workdir / "allocator" / f, dst / f)
        print(f"exported to {dst}")
    del lock
    return 0


if __name__ == "__main__":
    common.run(main)
