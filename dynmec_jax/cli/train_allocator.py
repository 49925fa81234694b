r"""Trains the allocation model (Section IV.A-B) and evaluates it against the optimum.

    dynmec-train-allocator [--config=dynmec_jax/configs/allocator.py:default] \
        [--workdir=runs/allocator] [--config.train.batch=64] [--export_pretrained]

Writes ``WORKDIR/allocator_eval.json`` (per seed: gap to the optimal weighted
delay for every (width, depth), with all tasks offloaded and with a random 60%
offloaded; Fig. 4 numbers) and ``WORKDIR/allocator`` (the exported model, for
``allocator.load_allocator(WORKDIR/allocator)``).  Interrupted runs resume
from ``WORKDIR/checkpoints``.  ``--export_pretrained`` also copies the model
into the package as the default of ``load_allocator()``, unless a weight is
not finite or a sub-network's gap to the optimum is above 5% (one line,
exit 2; :func:`dynmec_jax.train.allocator.export_pretrained`).  A diverged
run stops with one line and exit 1, keeping the last finite checkpoint.
"""

from __future__ import annotations

from dynmec_jax import cli, files
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import loop
from dynmec_jax.train.config import AllocatorConfig

_CONFIG, _WORKDIR, _EXPORT = cli.define_training_flags("allocator.py", "allocator", "allocator")


def main(argv):
    cli.start(argv)
    config = cli.typed(AllocatorConfig, _CONFIG.value)
    workdir = cli.writable_workdir(_WORKDIR.value)
    with cli.locked(workdir):   # one run per workdir
        cli.guard(files.claim_workdir, config, workdir)
        try:
            record = train_allocator.train_and_evaluate(config, workdir)
        except loop.DivergenceError as e:
            return cli.diverged(e)
        print(f"{record['steps']} steps x {config.n_seeds} seeds in "
              f"{record['train_wall_time_s']:.1f} s; largest network gap "
              f"{100 * record['full_gap_all']:.3f}%, worst sub-network gap "
              f"{100 * record['max_gap_all']:.3f}% (all offloaded), "
              f"{100 * record['max_gap_random']:.3f}% "
              f"(random {config.eval.offload_fraction:.0%} offloaded)")
        if _EXPORT.value:
            print(f"exported to {cli.guard(train_allocator.export_pretrained, workdir)}")
    return 0


run = cli.entry(main, __doc__, __name__)
