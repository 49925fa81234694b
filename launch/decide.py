r"""Decisions of a trained pipeline on your own tasks: CSV or JSON in, CSV out.

    python launch/decide.py --in=examples/tasks.csv --out=decisions.csv [--pipeline=DIR]

Input: one row per task with the columns ``scenario`` (any id; the tasks of
one scenario compete for the server), ``size`` [bits], ``workload``
[cycles/bit], ``deadline`` [s], ``distance`` [m] and ``f_local``
[cycles/s].  A ``.csv`` file has a header row; a ``.json`` file holds a list
of objects with the same keys (or ``{"tasks": [...]}``).  Scenarios may have
different numbers of tasks.

Output (written atomically: the file is whole or absent): one row per task,
in input order, with ``scenario``, ``task`` (its index in the scenario),
``offload`` (0/1), ``bandwidth_hz``, ``f_alloc_hz``, the allocator
sub-network ``width`` and ``depth``, and the predicted ``delay_s``
(inference delay of Eq. 34-35 included), ``energy_j`` and ``deadline_miss``
(0/1) of Eq. 1-6.

A bad file (a missing column, text in a number field, a NaN, a negative
size, a zero deadline, ...) prints one line naming the row and the column,
and exits with code 2; nothing is written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib

import jax
import numpy as np
from absl import flags

from dynmec_jax import cli as common
from dynmec_jax import files, pipeline, system

_IN = flags.DEFINE_string("in", None, "input tasks: .csv or .json", required=True)
_OUT = flags.DEFINE_string("out", None, "output decisions (.csv)", required=True)
_PIPELINE = flags.DEFINE_string("pipeline", None,
                                "pipeline directory (default: the shipped one)")

ID = "scenario"
FIELDS = tuple(name for name, _, _ in system.SCENARIO_RULES)
OUTPUT = ("scenario", "task", "offload", "bandwidth_hz", "f_alloc_hz", "width", "depth",
          "delay_s", "energy_j", "deadline_miss")


def read_rows(path: pathlib.Path) -> list[tuple[str, dict]]:
    """``[(where, row)]`` from a CSV or JSON file; ``where`` names the row for errors.

    Raises ``ValueError`` for an unreadable file, a missing column or a row
    that is not an object.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if isinstance(data, dict):
            data = data.get("tasks")
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of tasks or {{\"tasks\": [...]}}")
        rows = []
        for i, r in enumerate(data):
            if not isinstance(r, dict):
                raise ValueError(f"{path} task {i}: expected an object with keys "
                                 f"{(ID,) + FIELDS}")
            rows.append((f"{path} task {i}", r))
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        rows = [(f"{path} row {reader.line_num}", dict(r)) for r in reader]
        for col in (ID,) + FIELDS:
            if col not in header:
                raise ValueError(f"{path}: missing column {col!r} (columns: {header})")
    if not rows:
        raise ValueError(f"{path}: no tasks")
    return rows


def parse(rows: list[tuple[str, dict]]) -> dict[str, tuple[list[str], system.Scenario]]:
    """Groups rows by scenario id (first-seen order) into Scenarios; checks every value.

    Raises ``ValueError`` naming the row and column of the first bad value
    (rules of :func:`dynmec_jax.system.validate_scenario`).
    """
    groups: dict[str, tuple[list[str], dict[str, list[float]]]] = {}
    for where, row in rows:
        for col in (ID,) + FIELDS:
            if col not in row or row[col] in (None, ""):
                raise ValueError(f"{where}, column {col!r}: missing value")
        for name, rule, zero_ok in system.SCENARIO_RULES:
            raw = row[name]
            try:
                v = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{where}, column {name!r}: {raw!r} is not a number") from None
            if not math.isfinite(v) or (v < 0 if zero_ok else v <= 0):
                raise ValueError(f"{where}, column {name!r}: {raw!r}; it must be {rule}")
            row[name] = v
        wheres, cols = groups.setdefault(str(row[ID]), ([], {f: [] for f in FIELDS}))
        wheres.append(where)
        for f in FIELDS:
            cols[f].append(row[f])
    return {sid: (wheres, system.validate_scenario(system.Scenario(
        **{f: np.asarray(v) for f, v in cols.items()})))
        for sid, (wheres, cols) in groups.items()}


def decide_rows(pipe: pipeline.Pipeline, scenarios: dict) -> list[dict]:
    """One output row per task (:data:`OUTPUT`), per scenario in input order."""
    sys_params = pipe.allocator.sys_params
    out = []
    for sid, (_, scn) in scenarios.items():
        d = pipe.decide(scn)
        res = system.task_outcomes(system.as_scenario(scn), d.offload, d.bandwidth, d.f_alloc,
                                   sys_params, infer_edge=d.inference_delay_edge,
                                   infer_local=d.inference_delay_local)
        d, res = jax.device_get((d, res))
        for i in range(scn.size.shape[0]):
            out.append({"scenario": sid, "task": i, "offload": int(d.offload[i]),
                        "bandwidth_hz": float(d.bandwidth[i]), "f_alloc_hz": float(d.f_alloc[i]),
                        "width": int(d.width), "depth": int(d.depth),
                        "delay_s": float(res.delay[i]), "energy_j": float(res.energy[i]),
                        "deadline_miss": int(res.miss[i])})
    return out


def to_csv(rows: list[dict]) -> str:
    """The output rows as CSV text (``repr`` of floats: they read back exactly)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=OUTPUT, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    src = pathlib.Path(_IN.value)
    if not src.is_file():
        common.fail(f"--in: no such file {src}")
    scenarios = common.guard(lambda: parse(read_rows(src)))
    out = pathlib.Path(_OUT.value)
    common.writable_workdir(out.parent if str(out.parent) else ".")
    try:
        pipe = pipeline.load_pipeline(_PIPELINE.value)
    except (FileNotFoundError, ValueError) as e:
        common.fail(f"--pipeline: {e}")
    rows = decide_rows(pipe, scenarios)
    files.atomic_write(out, to_csv(rows))
    n_off = sum(r["offload"] for r in rows)
    print(f"decided {len(scenarios)} scenarios, {len(rows)} tasks ({n_off} offloaded) -> {out}")
    return 0


if __name__ == "__main__":
    common.run(main)
