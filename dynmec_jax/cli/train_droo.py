r"""Trains DROO (Huang, Bi, Zhang, IEEE TMC 2020) and saves it as a loadable model.

    dynmec-train-droo [--config=dynmec_jax/configs/droo.py:default] \
        [--workdir=runs/droo] [--config.droo.n_scenarios=48000] [--export_pretrained]

Trains ``config.n_seeds`` seeds side by side (``jit(vmap(make_train))``),
``config.droo.n_scenarios`` scenarios each, one per frame, as DROO does
(:mod:`dynmec_jax.baselines.droo_train`).  Each seed is scored on
``config.eval_batch`` held-out scenarios of the training distribution (mean
sum_i C_i, Eq. 24-25, no inference delay, next to greedy + KKT on the same
scenarios); the best is saved to ``WORKDIR/droo``
(``droo.load_droo(WORKDIR/droo)``) and ``WORKDIR/train_droo.json`` holds the
per-seed numbers (:func:`dynmec_jax.baselines.droo_train.train_and_select`).
``--export_pretrained`` also writes it into the package
(``dynmec_jax/pretrained/droo``, the default of ``droo.load_droo()``),
unless a weight is not finite or its held-out cost is more than twice
greedy + KKT's (one line, exit 2).

The default preset is the shipped DROO: N_max = 64 with N ~ U{5..64} users
per training scenario (mixed N, padded), so one DNN decides for any N up to
64.  Exit codes: 0 done, 1 no seed finite (nothing saved), 2 bad input.
"""

from __future__ import annotations

from dynmec_jax import cli, files
from dynmec_jax.baselines import droo_train
from dynmec_jax.train import loop

_CONFIG, _WORKDIR, _EXPORT = cli.define_training_flags("droo.py", "DROO model", "droo")


def main(argv):
    cli.start(argv)
    run = cli.typed(droo_train.DrooRunConfig, _CONFIG.value)
    workdir = cli.writable_workdir(_WORKDIR.value)
    with cli.locked(workdir):   # one run per workdir
        cli.guard(files.claim_workdir, run, workdir)   # another run's workdir: exit 2
        try:
            model, record = droo_train.train_and_select(run, workdir)
        except loop.DivergenceError as e:
            return cli.diverged(e)
        print(f"DROO: {run.droo.n_scenarios} scenarios x {run.n_seeds} seeds in "
              f"{record['train_wall_time_s']:.1f} s; held-out greedy + KKT "
              f"{record['greedy_cost']:.3f}")
        for i, r in enumerate(record["per_seed"]):
            print(f"seed {i}: held-out cost {r['cost']:.3f} ({100 * r['gap_to_greedy']:+.1f}% "
                  f"vs greedy), offload {r['offload_fraction']:.3f}, K = {r['k']}"
                  + ("  <- exported" if i == record["exported_seed"] else ""))
        print(f"saved to {workdir / 'droo'}")
        if _EXPORT.value:   # refused (exit 2) for a non-finite or broken model
            print(f"exported to {cli.guard(droo_train.export_pretrained, workdir)}")
    return 0


run = cli.entry(main, __doc__, __name__)
