"""Writing decisions for a task file: the output path, the CSV, the whole ``decide`` flow.

The reading side is :mod:`dynmec_jax.taskfile` (its module doc has the rules
for input); here:

* :func:`check_output_path`: an ``--out`` that is empty, a directory, the
  input file, a FIFO, a device or a socket, a dangling symlink, or in a
  missing or unwritable directory is refused (:class:`~dynmec_jax.taskfile.InputError`);
  a symlink to a regular file has its target replaced.
* :func:`write_decisions`: the CSV, atomically, re-checked just before the
  rename (only an absent path or a regular file is ever replaced).
* :func:`decide_table` / :func:`decide_file`: a decider (the pipeline or a
  peer, :mod:`dynmec_jax.deciders`) on every scenario of a file, every output
  value checked finite (Eq. 1-6, 12-20, 22, 34-35).
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import stat
import warnings
from collections.abc import Callable, Sequence

import jax
import numpy as np

from dynmec_jax import files, pipeline, system
from dynmec_jax.taskfile import (
    OUTPUT_COLUMNS,
    InputError,
    TaskTable,
    clip,
    file_kind,
    read_tasks,
    show_path,
)

# ----------------------------------------------------------------------------
# Output path
# ----------------------------------------------------------------------------

def _stat_or_none(stat_fn, path, shown: str):
    """``stat_fn(path)``, None if nothing is there; any other OS error is an InputError."""
    try:
        return stat_fn(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"output {shown}: {e.strerror or e}") from None


def check_output_path(out, inputs: Sequence = ()) -> pathlib.Path:
    """The file to write the decisions to: ``out``, or the target of a symlink ``out``.

    Refuses (:class:`InputError`, one line) an empty path; a path ending in a
    separator or naming an existing directory; a dangling or looping symlink; an
    existing file that is not a regular file (FIFO, device, socket: left alone); one of
    the ``inputs`` (``os.path.samefile``: hard and symbolic links included); a parent
    directory that does not exist or is not writable.  Nothing is created.  Returns the
    resolved path (``os.path.realpath``) that :func:`write_decisions` replaces.
    """
    if out is None:
        raise InputError("output path is empty; name the .csv file to write")
    text = os.fsdecode(os.fspath(out))
    if text == "":
        raise InputError("output path is empty; name the .csv file to write")
    shown = show_path(text)
    if "\x00" in text:
        raise InputError(f"output {shown}: a path cannot contain a NUL character")
    if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", ".."):
        raise InputError(f"output {shown} names a directory; name a file to write")
    link = _stat_or_none(os.lstat, text, shown)
    if link is not None and stat.S_ISLNK(link.st_mode) and not os.path.exists(text):
        raise InputError(f"output {shown} is a dangling or looping symlink (to "
                         f"{clip(os.readlink(text))}); it is left alone: name a file")
    target = pathlib.Path(os.path.realpath(text))
    st = _stat_or_none(os.stat, target, shown)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"output {shown} is a directory; name a file to write")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"output {shown} is a {file_kind(st.st_mode)}, not a regular file; "
                             "it is left alone: name a regular file")
        for inp in inputs:
            try:
                same = os.path.samefile(target, os.fsdecode(os.fspath(inp)))
            except (OSError, TypeError, ValueError):
                same = False
            if same:
                raise InputError(f"output {shown} is the input file {show_path(inp)}; name "
                                 "another file")
    parent = target.parent
    if not parent.is_dir():
        raise InputError(f"output {shown}: directory {show_path(str(parent))} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output {shown}: directory {show_path(str(parent))} is not writable")
    return target


def _still_replaceable(target: pathlib.Path, shown: str) -> None:
    """Just before the rename: the target must be absent or a regular file (not a link)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"output {shown} became a {file_kind(st.st_mode)} while deciding; it is "
                         "left alone and nothing was written")


# ----------------------------------------------------------------------------
# Deciding and writing
# ----------------------------------------------------------------------------

def to_csv(rows: Sequence[dict]) -> str:
    """The output rows as CSV text: :data:`OUTPUT_COLUMNS` (bandwidth and CPU shares of
    Eq. 18, 20 [Hz], delay [s] and energy [J] of Eq. 1-6), ``repr`` of floats (they
    read back exactly)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=OUTPUT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_decisions(out, rows: Sequence[dict], inputs: Sequence = ()) -> pathlib.Path:
    """Writes decision rows (:data:`OUTPUT_COLUMNS`) to ``out`` as CSV, atomically.

    ``out`` is checked by :func:`check_output_path` (``inputs``: files it must not
    be); the file is written by :func:`dynmec_jax.files.atomic_write`, which re-checks
    just before its rename that the target is still absent or a regular file, so the
    rename only ever replaces a regular file.  Every float must be finite (delays [s],
    energies [J], bandwidths and CPU shares [Hz] of Eq. 1-6, 18, 20).  Returns the
    path written (the target of a symlink ``out``).

    Raises:
      InputError: a refused path, a non-finite value, or an OS error while writing;
        nothing is written then.
    """
    target = check_output_path(out, inputs)
    shown = show_path(os.fsdecode(os.fspath(out)))
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and not np.isfinite(v):
                raise InputError(f"output {shown}: {k} of scenario {clip(r.get('scenario'))} "
                                 f"task {r.get('task')} is {v!r}; nothing was written")
    try:
        files.atomic_write(target, to_csv(rows),
                           before_replace=lambda: _still_replaceable(target, shown))
    except OSError as e:
        raise InputError(f"output {shown}: cannot write it ({e.strerror or e})") from None
    return target


def scenario_cell(pipe, table: TaskTable, sid: str, base: system.SystemParams,
                  strict: bool = False) -> tuple[system.SystemParams, list[str]]:
    """``(cell, warnings)`` of scenario ``sid``: ``base`` with the scenario's cell columns
    (:attr:`TaskTable.cells`), validated, and one warning line per field outside the cells
    ``pipe`` was trained on (:meth:`~dynmec_jax.pipeline.Pipeline.cell_warnings`; none for
    deciders without it).  ``strict``: the first such line raises :class:`InputError`."""
    at = f"scenario {clip(sid)}"
    try:
        sp = system.validate(base.replace(**table.cells.get(sid, {})))
    except (TypeError, ValueError) as e:
        raise InputError(f"{at}: {e}") from None
    lines = pipe.cell_warnings(sp) if hasattr(pipe, "cell_warnings") else []
    if strict and lines:
        raise InputError(f"{at}: {lines[0]} (--strict)")
    return sp, [f"{at}: {line}" for line in lines]


def decide_table(pipe: pipeline.Pipeline, table: TaskTable,
                 sys_params: system.SystemParams | None = None, strict: bool = False,
                 warned: list | None = None) -> list[dict]:
    """One output row per input task (:data:`OUTPUT_COLUMNS`), in input order.

    Per scenario: ``pipe.decide`` (offloading of Eq. 22, sub-network, the allocation
    of Eq. 12-20 [Hz], the inference delays of Eq. 34-35 [s]) and
    :func:`dynmec_jax.system.task_outcomes` (delay [s] and energy [J] of Eq. 1-6, the
    deadline miss).  ``pipe``: a pipeline or any decider of :mod:`dynmec_jax.deciders`;
    ``sys_params`` (the cell) defaults to its own (Table II for the shipped ones); a
    scenario's cell columns override it (:func:`scenario_cell`).  Fields outside the
    pipeline's trained range append a line to ``warned`` (``strict``: raise instead).

    Raises:
      InputError: a scenario whose decision or outcome is not finite (naming it and
        its first row), a scenario size the pipeline cannot take, or bad ``sys_params``
        (or, with ``strict``, a cell outside the trained range).
    """
    sp0 = pipe.sys_params if sys_params is None else sys_params
    try:
        system.validate(sp0)
    except (TypeError, ValueError) as e:
        raise InputError(f"sys_params: {e}") from None
    first = {}
    for sid, _, where in table.order:
        first.setdefault(sid, where)
    results = {}
    for sid, scn in table.scenarios.items():
        n = int(scn.size.shape[0])
        at = f"{first[sid]}: scenario {clip(sid)}"
        if pipe.n_users is not None and n != pipe.n_users:
            raise InputError(f"{at} has {n} tasks, but this pipeline's scheduler takes "
                             f"exactly {pipe.n_users}")
        sp, lines = scenario_cell(pipe, table, sid, sp0, strict)
        if warned is not None:
            warned.extend(lines)
        try:
            with warnings.catch_warnings():   # reported once per scenario through ``warned``
                warnings.simplefilter("ignore", UserWarning)
                d = pipe.decide(scn, sp)
        except ValueError as e:
            raise InputError(f"{at}: {e}") from None
        res = system.task_outcomes(system.as_scenario(scn), d.offload, d.bandwidth, d.f_alloc,
                                   sp, infer_edge=d.inference_delay_edge,
                                   infer_local=d.inference_delay_local)
        d, res = jax.device_get((d, res))
        checks = {"bandwidth_hz": d.bandwidth, "f_alloc_hz": d.f_alloc, "delay_s": res.delay,
                  "energy_j": res.energy,
                  "inference delay": np.stack([np.broadcast_to(d.inference_delay_edge, (n,)),
                                               np.broadcast_to(d.inference_delay_local, (n,))])}
        for name, a in checks.items():
            bad = ~np.isfinite(np.asarray(a, dtype=np.float64))
            if bad.any():
                task = int(np.argwhere(bad)[0][-1])
                raise InputError(f"{table.where(sid, task)}: scenario {clip(sid)}, task "
                                 f"{task}: {name} is {float(np.asarray(a)[bad][0])!r}; the "
                                 "decision is not finite, nothing was written")
        results[sid] = (d, res)
    rows = []
    for sid, i, _ in table.order:
        d, res = results[sid]
        rows.append({"scenario": sid, "task": i, "offload": int(d.offload[i]),
                     "bandwidth_hz": float(d.bandwidth[i]), "f_alloc_hz": float(d.f_alloc[i]),
                     "width": int(d.width), "depth": int(d.depth),
                     "delay_s": float(res.delay[i]), "energy_j": float(res.energy[i]),
                     "deadline_miss": int(res.miss[i])})
    return rows


def decide_file(pipe: pipeline.Pipeline | Callable[[], pipeline.Pipeline], in_path, out_path,
                sys_params: system.SystemParams | None = None, cell: dict | None = None,
                strict: bool = False) -> dict:
    """Reads tasks from ``in_path``, decides, writes one decision per task to ``out_path``.

    The whole flow, in this order: :func:`check_output_path` (before anything else),
    :func:`read_tasks`, :func:`decide_table` (Eq. 1-6, 12-20, 22, 34-35; every output
    value checked finite), :func:`write_decisions` (atomic, re-checked).  ``pipe``: a
    :class:`~dynmec_jax.pipeline.Pipeline` or any decider with its ``decide``,
    ``sys_params`` and ``n_users`` (:mod:`dynmec_jax.deciders`), or a function
    returning one, called only once the file has been read and checked (so a bad
    file is refused before a model is loaded).  The cell: ``sys_params`` (default:
    the decider's), with the fields of ``cell`` (``{field: value}``, SI) replaced,
    then each scenario's cell columns; ``strict``: a cell outside the pipeline's
    trained range is refused (else a warning line per scenario and field).

    Returns:
      ``{"scenarios": int, "tasks": int, "offloaded": int, "out": str, "warnings":
      [str]}`` (``out`` the file written: the target of a symlink).

    Raises:
      InputError: any refusal (one line naming the file, row and column, or the
        scenario); nothing is written then.
    """
    check_output_path(out_path, inputs=(in_path,))
    table = read_tasks(in_path)
    if not hasattr(pipe, "decide"):
        pipe = pipe()
    base = pipe.sys_params if sys_params is None else sys_params
    if cell:
        try:
            base = system.params_from_overrides(cell, base)
        except (TypeError, ValueError) as e:
            raise InputError(f"cell: {e}") from None
    warned: list[str] = []
    rows = decide_table(pipe, table, base, strict, warned)
    target = write_decisions(out_path, rows, inputs=(in_path,))
    return {"scenarios": len(table.scenarios), "tasks": len(rows),
            "offloaded": sum(r["offload"] for r in rows), "out": str(target),
            "warnings": warned}
