r"""Decisions of a trained pipeline on your own tasks: CSV or JSON in, CSV out.

    dynmec-decide --in=examples/tasks.csv --out=decisions.csv [--pipeline=DIR]
    dynmec-decide --in=... --out=... --method=greedy|droo|optimum [--droo=DIR]

(or ``python launch/decide.py ...``).

``--method`` (:mod:`dynmec_jax.deciders`): ``pmrl`` (default: the shipped or
``--pipeline`` pipeline), ``pmrl_search`` (that pipeline, then a one-flip
local search over its offloading set with the optimal allocation,
:mod:`dynmec_jax.baselines.local_search`, charged its operations by Eq. 9),
``greedy`` (greedy offloading + the optimal KKT
allocation, charged its own operations), ``droo`` (the shipped or ``--droo``
DROO model, any N up to its N_max) and ``optimum`` (the certified optimum of
sum_i C_i, Eq. 24-25, from ``baselines/exact.py``: a bound, charged no
inference delay; it needs the ``exact`` extra and runs a solver per
scenario, much slower than the others).

The cell (the system the tasks run in; default: the decider's, Table II for the
shipped ones): ``--cell=cell.json`` (a JSON object ``{"bandwidth_max": 2e6,
"f_server": 1e10, ...}``), then any ``SystemParams`` field as a flag
(``--bandwidth_max=2e6 --f_server=1e10 --beta=0.5``, SI units), then optional
per-scenario cell columns of the same names in the task file.  N comes from
the scenario (``n_users`` is not a cell field).  A field outside the range
the pipeline was trained on (``pipeline.json``'s ``spec.cell``; a pipeline
without cell features was trained at one cell) prints ``warning: ...``
naming the scenario, the field, its value and the range; ``--strict`` makes
it one line ``error: ...`` and exit code 2.

Input: one row per task with the columns ``scenario`` (an id; the tasks of
one scenario compete for the server), ``size`` [bits], ``workload``
[cycles/bit], ``deadline`` [s], ``distance`` [m] and ``f_local``
[cycles/s].  A ``.csv`` file (UTF-8, a byte-order mark allowed) has a header
row; a ``.json`` file holds a list of objects with the same keys (or
``{"tasks": [...]}``).  Scenarios may have different numbers of tasks, and
the rows of a scenario may be anywhere in the file.

Output (written atomically: the file is whole or absent): one row per task,
in input order, with ``scenario``, ``task`` (its index in the scenario, in
input order), ``offload`` (0/1), ``bandwidth_hz``, ``f_alloc_hz``, the
allocator sub-network ``width`` and ``depth``, and the predicted
``delay_s`` (inference delay of Eq. 34-35 included), ``energy_j`` and
``deadline_miss`` (0/1) of Eq. 1-6.

Bad input prints one line ``error: ...`` naming the file, the row and the
column, exits with code 2, and writes nothing: a missing, unknown or
duplicate column; a value that is not a plain ASCII decimal number (``abc``,
``nan``, ``inf``, ``1_200``, ``+5``, non-ASCII digits; in JSON also
``true``, ``"1200"``, ``null``); a value outside its physical bound, or a
task whose cycles, importance weight (Eq. 19) or local energy (Eq. 6) is
(the bounds that keep the float32 maths finite:
``dynmec_jax.checks.SCENARIO_BOUNDS``, e.g. a size above 1e10 bits or a
zero deadline); a file that is not UTF-8; a scenario id with surrounding
whitespace or control characters (ids are text: JSON ``1`` and ``"1"`` are
the same scenario).  So does an ``--out`` that is empty, a directory, the
input file, a FIFO, a device or a socket (left alone), a dangling symlink,
or in a missing or unwritable directory (a symlink to a regular file has its
target replaced).  The rules: ``dynmec_jax/taskfile.py``.
"""

from __future__ import annotations

import sys

from absl import flags

from dynmec_jax import cell as cell_lib
from dynmec_jax import cli, deciders, decisionfile, taskfile

_IN = flags.DEFINE_string("in", None, "input tasks: .csv or .json", required=True)
_OUT = flags.DEFINE_string("out", None, "output decisions (.csv)", required=True)
_METHOD = flags.DEFINE_enum(
    "method", "pmrl", deciders.METHODS,
    "who decides: pmrl (the pipeline), pmrl_search (the pipeline, then a one-flip local "
    "search with the optimal allocation, charged its operations), greedy (greedy + KKT), "
    "droo (DROO), optimum "
    "(the certified optimum: a bound with no inference delay, needs the 'exact' extra, "
    "a solver per scenario: much slower)")
_PIPELINE = flags.DEFINE_string("pipeline", None,
                                "pipeline directory for --method=pmrl or pmrl_search (default: "
                                "the shipped one)")
_DROO = flags.DEFINE_string("droo", None,
                            "DROO model directory for --method=droo (default: the shipped one)")

_CELL = flags.DEFINE_string("cell", None, "JSON file {field: value} of the cell (SystemParams "
                            "fields, SI units); the field flags override it")
_STRICT = flags.DEFINE_bool("strict", False, "refuse (exit 2) a cell outside the pipeline's "
                            "trained range instead of warning")
_FIELDS = {name: flags.DEFINE_float(name, None, f"the cell's SystemParams.{name} (SI units)")
           for name in taskfile.CELL_FIELDS}


def _load_decider():
    """The decider of ``--method`` (loaded once the input file has been checked)."""
    flag = {"pmrl": "--pipeline", "pmrl_search": "--pipeline",
            "droo": "--droo"}.get(_METHOD.value, "--method")
    try:
        return deciders.make(_METHOD.value, _PIPELINE.value, _DROO.value)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise taskfile.InputError(f"{flag}: {e}") from None


def main(argv):
    cli.start(argv)
    if _PIPELINE.value is not None and _METHOD.value not in ("pmrl", "pmrl_search"):
        cli.fail(f"--pipeline is for --method=pmrl or pmrl_search, not --method={_METHOD.value}")
    if _DROO.value is not None and _METHOD.value != "droo":
        cli.fail(f"--droo is for --method=droo, not --method={_METHOD.value}")
    cell = cli.guard(cell_lib.read_cell, _CELL.value,
                     {k: f.value for k, f in _FIELDS.items()})
    try:
        summary = decisionfile.decide_file(_load_decider, _IN.value, _OUT.value, cell=cell,
                                           strict=_STRICT.value)
    except (taskfile.InputError, ImportError) as e:
        cli.fail(str(e))
    for line in summary["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    print(f"{_METHOD.value} decided {summary['scenarios']} scenarios, {summary['tasks']} tasks "
          f"({summary['offloaded']} offloaded) -> {_OUT.value}")
    return 0


run = cli.entry(main, __doc__, __name__)
