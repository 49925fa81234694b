r"""Regenerates every figure of Section V (Figs. 4-12), with claims and numbers.

    dynmec-reproduce [--config=dynmec_jax/configs/reproduce.py:quick] \
        [--workdir=runs/reproduce] [--results=results] [--config.seeds='(0,1,2,3,4)']

(or ``python launch/reproduce.py ...``).  Trains the allocators (MoE and
static), measures the training cost (Fig. 12), runs the sweeps of Figs. 5-11
(vmapped over points and seeds, sharded over all devices) and writes
``RESULTS/fig*.png`` with the numbers beside each (``.json``),
``RESULTS/claims.md``, ``summary.json`` and ``README.md``
(:func:`dynmec_jax.experiments.reproduce.run`).  Everything finished is
stored under ``WORKDIR``; a rerun (also after a kill) skips it.  Bad config
values or an unwritable directory: one line, exit 2.  One run per workdir: a
second one started on it exits 2 (``WORKDIR/.lock``).  The certified optimum
is solved on the host in ``--optimum_workers`` processes (default one per
CPU core).  Multi-process: pass
``--coordinator=host:port --num_processes=P --process_id=I`` (runs on CPUs
too, gloo collectives).

``--plan`` runs nothing: it compiles every program of the config and writes
``WORKDIR/plan/plan.json`` and ``plan.md`` (programs, compile seconds,
memory per program, FLOPs, one timed execution at a reduced step count and
the predicted wall time, the certified optimum's from a few scenarios solved
per N; ``--assume_tflops=X --assume_hbm_gb=Y`` add an accelerator estimate;
:mod:`dynmec_jax.experiments.plan`).
"""

from __future__ import annotations

from absl import flags, logging

from dynmec_jax import cli
from dynmec_jax.experiments import reproduce
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.train import loop

_CONFIG = cli.define_config("reproduce.py", "quick", "reproduction config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/reproduce", "resumable state (store, checkpoints)")
_RESULTS = flags.DEFINE_string("results", "results", "where figures and claims are written")
_OPT_WORKERS = cli.define_optimum_workers_flag()
_PROCESSES = cli.define_process_flags()
_PLAN = cli.define_plan_flags()


def main(argv):
    cli.start(argv)
    cfg = cli.typed(ReproduceConfig, _CONFIG.value)
    _PROCESSES.check()   # before anything is written
    _PLAN.check()
    workdir = cli.writable_workdir(_WORKDIR.value)
    if _PLAN.plan.value:
        return _PLAN.run(cfg, workdir, ("allocators", "fig12", "sweeps", "optimum"),
                         cli.optimum_workers(_OPT_WORKERS))
    results = cli.writable_workdir(_RESULTS.value)
    _PROCESSES.init()
    with cli.locked(workdir):   # one run per workdir (all processes of this one)
        cli.guard(reproduce.claim_allocator_workdirs, cfg, workdir)
        try:
            summary = reproduce.run(cfg, workdir, results,
                                     optimum_workers=cli.optimum_workers(_OPT_WORKERS))
        except loop.DivergenceError as e:   # a training run diverged: one line, exit 1
            return cli.diverged(e)
    logging.info("done in %.0f s", summary["wall_time_s"])
    print(f"reproduction ({cfg.preset}) finished in {summary['wall_time_s']:.0f} s, peak RSS "
          f"{summary['peak_rss_mb']:.0f} MB; claims: {summary['claims']}; see {results}/claims.md")
    return 0


run = cli.entry(main, __doc__, __name__)
