r"""Runs the batched, sharded sweeps of Figs. 5-11 (no figures) into a result store.

    python launch/sweep.py --config=dynmec_jax/configs/reproduce.py:smoke \
        --workdir=runs/sweep [--config.seeds=[0,1,2]] \
        [--coordinator=localhost:12345 --num_processes=2 --process_id=0]

The allocators are taken from ``WORKDIR/allocator_moe`` and
``WORKDIR/allocator_static`` and trained first when missing (single process
only).  Every (point, seed) is one JSON record under ``WORKDIR/store``; a
rerun skips finished ones.  ``--dump=FILE`` writes every stored number (sorted
names) as one JSON object, for comparing runs.  Items are vmapped over points
and seeds and sharded over all devices of all processes; with several
processes, process 0 writes.

Any field of ``SystemParams``:

    python launch/sweep.py --config=dynmec_jax/configs/reproduce.py:quick \
        --workdir=runs/reproduce --axis=beta --values=0,0.001,0.01,0.1,1,10 \
        [--methods=PMRL,Greedy,Rand,"Local execution"] [--results=results]

sweeps that field (the others at the config's defaults) for the chosen
Section V.B methods, as one compiled program over points and seeds, stored in
the same result store (resumable), and writes ``RESULTS/axis_<field>.png``
and ``.json`` (means and 95% CIs over the config's seeds).  An unknown field,
a method that does not exist or a bad value: one line, exit 2.
"""

from __future__ import annotations

import json
import pathlib

import jax
from absl import flags
from ml_collections import config_flags

from dynmec_jax import cli as common
from dynmec_jax import files, sweep
from dynmec_jax.experiments import axis, reproduce, sections

_CONFIG = config_flags.DEFINE_config_file(
    "config", "dynmec_jax/configs/reproduce.py:smoke", "reproduction config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/sweep", "allocators and result store")
_DUMP = flags.DEFINE_string("dump", None, "write all results as one JSON file here")
_AXIS = flags.DEFINE_string("axis", None, "sweep this SystemParams field instead of Figs. 5-11")
_VALUES = flags.DEFINE_list("values", [], "the values of --axis (SI units)")
_METHODS = flags.DEFINE_list("methods", list(axis.DEFAULT_METHODS),
                             "Section V.B methods of an --axis sweep")
_RESULTS = flags.DEFINE_string("results", "results", "where an --axis figure and JSON go")
_COORD = flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process)")
_NPROC = flags.DEFINE_integer("num_processes", None, "number of processes (multi-process)")
_PID = flags.DEFINE_integer("process_id", None, "this process's index (multi-process)")


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    cfg = _CONFIG.value
    common.guard(reproduce.validate_config, cfg)
    if _AXIS.value is not None:
        values = common.guard(axis.check_axis, _AXIS.value, _VALUES.value,
                              sections.base_params(cfg))
        methods = common.guard(axis.check_methods, _METHODS.value)
        results = common.writable_workdir(_RESULTS.value)
    workdir = common.writable_workdir(_WORKDIR.value)
    multi = sweep.initialize_distributed(_COORD.value, _NPROC.value, _PID.value)
    lock = common.lock_workdir(workdir)   # one run per workdir (all processes of this one)
    common.guard(reproduce.claim_allocator_workdirs, cfg, workdir)
    if multi and not reproduce.allocators_ready(cfg, workdir):
        common.fail(f"no trained allocators under {workdir}; run this once with one process "
                    "(or launch/reproduce.py) first")
    allocs = reproduce.train_allocators(cfg, workdir)
    store = sweep.ResultStore(workdir / "store")
    if _AXIS.value is not None:
        records = axis.run_axis(cfg, store, allocs, _AXIS.value, values, methods)
        if jax.process_index() == 0:
            tables = axis.axis_table(records, _AXIS.value, methods)
            written = axis.write_axis(tables, _AXIS.value, results)
            print(f"{len(records)} records of axis_{_AXIS.value}; wrote {', '.join(written)}")
        del lock
        return 0
    sweeps = reproduce.run_sweeps(cfg, store, allocs)
    n = sum(len(v) for v in sweeps.values())
    if _DUMP.value is not None:
        if jax.process_index() == 0:
            flat = {f"{r['figure']}/{r['point_key']}/seed_{r['seed']}/{k}": v
                    for recs in sweeps.values() for r in recs for k, v in r["result"].items()}
            path = pathlib.Path(_DUMP.value)
            files.atomic_write(path, json.dumps(flat, sort_keys=True, indent=0))
    print(f"{n} sweep records in {store.root}")
    del lock
    return 0


if __name__ == "__main__":
    common.run(main)
