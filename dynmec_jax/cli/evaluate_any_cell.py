r"""One pipeline for any cell: cost against the certified optimum, one field at a time.

    dynmec-evaluate-any-cell [--pipelines=shipped,cell=runs/cell/pipeline] \
        [--fields=bandwidth_max,f_server,...] [--n_users=10,30,60] [--n_random=8] \
        [--batch=32] [--out=results/any_cell]

For each cell (:mod:`dynmec_jax.experiments.any_cell`): Table II at every N,
each of ``--fields`` at the two ends and the middle of the trained range at
every N, and ``--n_random`` cells drawn from the whole range; ``--batch``
held-out scenarios each, their certified optimum (the ``exact`` extra:
pyscipopt) and each pipeline's cost with and without its inference delay.
``--pipelines``: ``NAME=DIR`` entries, ``shipped`` for the shipped pipeline;
``NAME=DIR1+DIR2+DIR3`` for the seeds of one recipe (their gaps averaged, each
seed's listed).  ``--per_cell=FIELD=VALUE:DIR,...``: pipelines trained for
one cell alone, compared on the grid's cells where FIELD = VALUE.
The range: ``--range`` (``name=lo:hi:log|lin,...``; default: the first
pipeline's trained range, else ``dynmec_jax.cell.DEFAULT_RANGE``).  Writes
``OUT.json``, ``OUT.md`` and ``OUT.png``; every number comes from this run.
"""

from __future__ import annotations

import sys

from absl import flags

from dynmec_jax import cell, cli, files, pipeline
from dynmec_jax.baselines import exact
from dynmec_jax.experiments import any_cell

_PIPES = flags.DEFINE_list("pipelines", ["shipped"], "NAME=DIR entries, or 'shipped'")
_FIELDS = flags.DEFINE_list("fields", list(any_cell.FIELDS), "fields varied one at a time")
_N = flags.DEFINE_list("n_users", [str(n) for n in any_cell.N_USERS], "N of each cell")
_N_RANDOM = flags.DEFINE_integer("n_random", 8, "cells drawn from the whole range",
                                 lower_bound=0)
_BATCH = flags.DEFINE_integer("batch", 32, "held-out scenarios per cell", lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 2121, "PRNG seed of the cells and scenarios",
                             lower_bound=0)
_RANGE = flags.DEFINE_string("range", None, "cell range name=lo:hi:log|lin,... (default: the "
                             "first pipeline's)")
_TIME = flags.DEFINE_float("time_limit", 60.0, "solver time limit per scenario [s]",
                           lower_bound=0.1)
_OUT = flags.DEFINE_string("out", "results/any_cell", "output prefix (.json, .md, .png)")
_CACHE = flags.DEFINE_string("cache", None, "directory keeping each cell's optimum (a later run "
                             "with other pipelines reuses it)")


_PER_CELL = flags.DEFINE_list("per_cell", [], "FIELD=VALUE:DIR entries: a pipeline trained "
                              "for that one cell, compared where the grid has FIELD = VALUE")


def _load(flag: str, name: str, path: str | None):
    try:
        return pipeline.load_pipeline(path)
    except (FileNotFoundError, ValueError) as e:
        cli.fail(f"--{flag}: {name}: {e}")


def _pipelines() -> dict:
    out = {}
    for entry in _PIPES.value:
        name, _, path = entry.partition("=")
        if not name or (not path and name != "shipped"):
            cli.fail(f"--pipelines: {entry!r} is not NAME=DIR, NAME=DIR+DIR+... or 'shipped'")
        seeds = [_load("pipelines", name, d) for d in path.split("+")] if path else []
        out[name] = (seeds[0] if len(seeds) == 1 else seeds) if seeds else _load(
            "pipelines", name, None)
    return out


def _per_cell_entries() -> list:
    """``(field, value, dir)`` of each ``--per_cell`` entry; a malformed one fails here,
    before any work."""
    out = []
    for entry in _PER_CELL.value:
        field, _, rest = entry.partition("=")
        value, _, path = rest.partition(":")
        try:
            value = float(value)
        except ValueError:
            value = None
        if not field or value is None or not path:
            cli.fail(f"--per_cell: {entry!r} is not FIELD=VALUE:DIR")
        out.append((field, value, path))
    return out


def _first(p):
    return p[0] if isinstance(p, list) else p


def main(argv):
    cli.start(argv)
    entries = _per_cell_entries()
    ns = cli.guard(lambda: [int(v) for v in _N.value])
    if not ns or min(ns) < 1:
        cli.fail(f"--n_users must be positive integers, got {_N.value}")
    try:
        exact.require_scip()
    except ImportError as e:
        cli.fail(str(e))
    cli.writable_workdir(files.parent_dir(_OUT.value))
    pipes = _pipelines()
    per_cell = [(f, v, _load("per_cell", f"{f}={v}", d)) for f, v, d in entries]
    text = _RANGE.value if _RANGE.value is not None else next(
        (_first(p).spec.cell for p in pipes.values() if _first(p).spec.cell), cell.DEFAULT_RANGE)
    ranges = cli.guard(cell.parse_range, text)
    base = _first(next(iter(pipes.values()))).sys_params
    grid = cli.guard(any_cell.cell_grid, base, ranges, tuple(_FIELDS.value), tuple(ns),
                     _N_RANDOM.value, _SEED.value)
    rows = any_cell.evaluate_cells(pipes, grid, _BATCH.value, _SEED.value, _TIME.value,
                                   cache=_CACHE.value, per_cell=per_cell)
    record = {"command": " ".join(["dynmec-evaluate-any-cell", *sys.argv[1:]]),
              "rows": rows, "summary": any_cell.summary(rows), "batch": _BATCH.value,
              "seed": _SEED.value, "ranges": {k: _first(p).spec.cell or "(one cell: Table II)"
                                              for k, p in pipes.items()},
              "grid_range": cell.format_range(ranges), "versions": files.versions()}
    print(f"wrote {', '.join(any_cell.write(record, _OUT.value))}")
    return 0


run = cli.entry(main, __doc__, __name__)
