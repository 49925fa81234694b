r"""Runs the batched, sharded sweeps of Figs. 5-11 (no figures), or a sweep of any field.

    dynmec-sweep --config=dynmec_jax/configs/reproduce.py:smoke --workdir=runs/sweep \
        [--dump=FILE] [--coordinator=localhost:12345 --num_processes=2 --process_id=0]

The allocators are taken from ``WORKDIR/allocator_moe`` and
``WORKDIR/allocator_static`` and trained first when missing (single process
only).  Every (point, seed) is one JSON record under ``WORKDIR/store``; a
rerun skips finished ones.  ``--dump=FILE`` writes every stored number (sorted
names) as one JSON object, for comparing runs.  Items are vmapped over points
and seeds and sharded over all devices of all processes; with several
processes, process 0 writes.

Any field of ``SystemParams`` (:mod:`dynmec_jax.experiments.axis`):

    dynmec-sweep --config=dynmec_jax/configs/reproduce.py:quick --workdir=runs/reproduce \
        --axis=beta --values=0,0.001,0.01,0.1,1,10 \
        [--methods=PMRL,Greedy,Rand,"Local execution"] [--results=results]

sweeps that field (the others at the config's defaults) for the chosen
Section V.B methods, stored in the same result store (resumable), and writes
``RESULTS/axis_<field>.png`` and ``.json`` (means and 95% CIs over the
config's seeds).  With "Optimum" among the methods, the certified optimum is
solved in ``--optimum_workers`` processes (default one per CPU core).  An
unknown field, a method that does not exist or a bad value: one line, exit 2.

``--plan`` compiles the allocators' and the sweeps' programs and predicts
their memory and time without running them (as ``dynmec-reproduce --plan``).
"""

from __future__ import annotations

import jax
from absl import flags

from dynmec_jax import cli, methods
from dynmec_jax.experiments import axis, reproduce
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.train import loop

_CONFIG = cli.define_config("reproduce.py", "smoke", "reproduction config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/sweep", "allocators and result store")
_DUMP = flags.DEFINE_string("dump", None, "write all results as one JSON file here")
_AXIS = flags.DEFINE_string("axis", None, "sweep this SystemParams field instead of Figs. 5-11")
_VALUES = flags.DEFINE_list("values", [], "the values of --axis (SI units)")
_METHODS = flags.DEFINE_list(
    "methods", list(axis.DEFAULT_METHODS),
    "Section V.B methods of an --axis sweep: " + ", ".join(m.name for m in methods.section("vb")))
_RESULTS = flags.DEFINE_string("results", "results", "where an --axis figure and JSON go")
_OPT_WORKERS = cli.define_optimum_workers_flag()
_PROCESSES = cli.define_process_flags()
_PLAN = cli.define_plan_flags()


def main(argv):
    cli.start(argv)
    cfg = cli.typed(ReproduceConfig, _CONFIG.value)
    _PROCESSES.check()   # before anything is written
    _PLAN.check()
    if _PLAN.plan.value:
        return _PLAN.run(cfg, cli.writable_workdir(_WORKDIR.value), ("allocators", "sweeps"))
    study = None
    if _AXIS.value is not None:
        study = (_AXIS.value, cli.guard(axis.check_axis, _AXIS.value, _VALUES.value, cfg.system),
                 cli.guard(axis.check_methods, _METHODS.value),
                 cli.writable_workdir(_RESULTS.value))
    workdir = cli.writable_workdir(_WORKDIR.value)
    multi = _PROCESSES.init()
    with cli.locked(workdir):   # one run per workdir (all processes of this one)
        cli.guard(reproduce.claim_allocator_workdirs, cfg, workdir)
        if multi and not reproduce.allocators_ready(cfg, workdir):
            cli.fail(f"no trained allocators under {workdir}; run this once with one process "
                     "(or dynmec-reproduce) first")
        try:
            if study is None:
                n = reproduce.run_sweeps_in(cfg, workdir, _DUMP.value)
                print(f"{n} sweep records in {workdir / 'store'}")
            else:
                field, values, chosen, results = study
                n, written = axis.run_study(cfg, workdir, field, values, chosen, results,
                                            cli.optimum_workers(_OPT_WORKERS))
                if jax.process_index() == 0:
                    print(f"{n} records of axis_{field}; wrote {', '.join(written)}")
        except loop.DivergenceError as e:   # the allocators' training diverged: exit 1
            return cli.diverged(e)
    return 0


run = cli.entry(main, __doc__, __name__)
