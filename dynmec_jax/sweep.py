"""Sharded, resumable sweeps: a model-agnostic runner and a JSON result store.

A *sweep* evaluates a function for every (point, seed) pair, where a point is a
dict of swept values (``{"size_avg": 2000.0}``) and a seed an ``int``.  The
caller supplies ``compute(point_batch, seed_batch)``: a function that evaluates
a whole batch of pairs as one vmapped program (``point_batch`` is a dict of
arrays of shape ``(B,)``, ``seed_batch`` an ``int32`` array of shape ``(B,)``)
and returns a pytree (dicts and NamedTuples) of arrays whose leading axis is
the batch, stored flat (:func:`dynmec_jax.store.flatten_result`).  This module
jits it, shards the batch over the devices of a :class:`jax.sharding.Mesh`, and
writes one JSON record per finished pair, so that an interrupted sweep resumes
where it stopped.

Resuming.  Every finished (figure, point, seed) is one record of the
:class:`~dynmec_jax.store.ResultStore`, written atomically.  :func:`run_sweep` skips pairs
whose record exists and computes only the rest, in chunks of a fixed size
(one compile for all chunks), writing each chunk's records as soon as it
finishes: an interruption loses at most one chunk.  A record that does not
parse (which atomic writes rule out, but e.g. a file truncated by a full disk
or a manual edit) counts as not done and is recomputed, with a warning.

Sharding (:func:`dynmec_jax.multihost.sharded_vmap`).  Every item of
a vmapped program is computed independently of the others, so the numbers do
not depend on the device count, chunk size, or which chunk an item fell in
(``tests/test_sweep.py`` checks this bitwise on CPU: 1 vs 4 devices, 1 vs 2
processes, interrupted vs uninterrupted runs).

Multiple processes.  After :func:`dynmec_jax.multihost.initialize_distributed` (``jax.distributed``
with gloo collectives on CPU), the mesh spans the devices of all processes;
every process must call :func:`run_sweep` with the same arguments.  Process 0
alone reads and writes the store: it decides which items are missing and
broadcasts that to the others, all processes compute their shards of each
chunk, the outputs are all-gathered, process 0 writes the records, and at the
end process 0 broadcasts the full list of records, so every process returns
the same records even without a shared file system.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from dynmec_jax import files
from dynmec_jax.multihost import (
    BATCH_AXIS,
    broadcast_from_0,
    broadcast_json,
    default_mesh,
    sharded_vmap,
)
from dynmec_jax.store import (
    ResultStore,
    check_name,
    check_point,
    check_seed,
    flatten_result,
    point_key,
)


def _canonical(obj: Any) -> str:
    """A canonical JSON text of ``obj`` (sorted keys), for equality tests."""
    return json.dumps(obj, sort_keys=True)


def _stack_points(points: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Stacks point dicts into name -> array, in JAX's default dtypes."""
    names = sorted(points[0])
    out = {}
    for name in names:
        values = np.asarray([np.asarray(p[name]).item() for p in points])
        dtype = jax.dtypes.canonicalize_dtype(values.dtype)
        if values.dtype.kind in "iu" and values.size:
            info = np.iinfo(dtype)
            if values.min() < info.min or values.max() > info.max:
                raise ValueError(f"swept value {name} does not fit in {dtype}")
        out[name] = values.astype(dtype)
    return out


def run_sweep(store: ResultStore, figure: str, points: Sequence[Mapping[str, Any]],
              seeds: Sequence[int], compute: Callable[[dict, Any], dict], *,
              config: Any, mesh: Mesh | None = None, chunk_size: int | None = None,
              progress: bool = True, on_config_change: str = "error",
              callback: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Computes the missing (point, seed) items of a sweep and stores them.

    Three steps: :func:`plan_sweep` (what is missing), :func:`run_plan` (compute
    and store it), :func:`collect` (every record, stored or new).

    Args:
      store: where records live.
      figure: the sweep's name (a directory under the store root).
      points: dicts of swept values, all with the same keys (real scalars).
      seeds: integer seeds in ``[0, 2**31)``; every point runs every seed.
      compute: ``compute(point_batch, seed_batch) -> dict of arrays``, one
        vmapped program over a batch: ``point_batch`` maps each swept name to
        an array of shape ``(B,)``, ``seed_batch`` is ``int32 (B,)``, and each
        output has leading axis B.  It is jitted and sharded here; items must
        not interact (padding repeats the last item of a chunk).
      config: the run's configuration, stored in every record (anything
        :func:`to_jsonable` takes).
      mesh: devices to shard over (default: all devices, 1-D axis "batch").
      chunk_size: items per compiled call (default: the number of seeds,
        i.e. about one point per chunk), capped at the number of missing
        items and rounded up to a multiple of the number of shards.  Every
        chunk is padded to this size, so the program compiles once per call.
        Records are written after each chunk, so a kill loses at most one.
      progress: show a tqdm bar over chunks (process 0 only).
      on_config_change: what to do with a stored record whose config differs
        from ``config``: "error" (raise ``ValueError``), "recompute" or "keep".
      callback: called with each chunk's new records after they are written
        (e.g. for logging).

    Returns:
      The records of all ``points`` x ``seeds`` (stored before or computed
      now), in point order then seed order; the same on every process.

    Raises:
      OSError: the store is not writable (before any compute).
      ValueError: bad points/seeds/figure, or a config change with "error".
    """
    plan = plan_sweep(store, figure, points, seeds, config, on_config_change)
    new_records = run_plan(plan, store, compute, mesh=mesh, chunk_size=chunk_size,
                           progress=progress, callback=callback)
    return collect(plan, store, new_records)


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """What a sweep must compute: its items and which of them are missing.

    Attributes:
      figure: the sweep's name.
      points, seeds: the validated points and seeds.
      items: ``(point index, seed)`` of every pair, in point then seed order.
      missing: the items to compute (the same on every process).
      config: the run's configuration as JSON types (stored in every record).
    """

    figure: str
    points: list
    seeds: list
    items: list
    missing: list
    config: Any


def plan_sweep(store: ResultStore, figure: str, points: Sequence[Mapping[str, Any]],
               seeds: Sequence[int], config: Any,
               on_config_change: str = "error") -> SweepPlan:
    """Validates a sweep and finds its missing items (step 1 of :func:`run_sweep`).

    Process 0 checks that the store is writable, removes stale temporary
    files and reads the stored records; the list of missing items is
    broadcast to every process.  Raises as :func:`run_sweep` does.
    """
    if on_config_change not in ("error", "recompute", "keep"):
        raise ValueError(f"on_config_change must be error/recompute/keep, got {on_config_change!r}")
    check_name("figure", figure)
    points = [dict(p) for p in points]
    seeds = [check_seed(s) for s in seeds]
    for p in points:
        check_point(p)
        if set(p) != set(points[0]):
            raise ValueError(f"all points need the same keys: {sorted(points[0])} vs {sorted(p)}")
    keys = [point_key(p) for p in points]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate points in the sweep")
    if len(set(seeds)) != len(seeds):
        raise ValueError("duplicate seeds in the sweep")
    config_json = files.to_jsonable(config)
    config_text = _canonical(config_json)
    items = [(i, s) for i in range(len(points)) for s in seeds]
    if not items:
        return SweepPlan(figure, points, seeds, items, [], config_json)

    is_writer = jax.process_index() == 0
    # Process 0 checks the store and decides what is missing; status codes:
    # 0 ok, 1 store not writable, 2 config changed.
    status, message, missing_mask = 0, "", np.zeros(len(items), np.int32)
    if is_writer:
        try:
            store.check_writable(figure)
        except OSError as e:
            status, message, error = 1, str(e), e
        if status == 0:
            store.clean_temp_files(figure)
            for j, (i, s) in enumerate(items):
                record = store.try_read(figure, points[i], s)
                if record is not None and _canonical(record.get("config")) != config_text:
                    if on_config_change == "error":
                        status = 2
                        message = (f"{store.path(figure, points[i], s)} was computed with a "
                                   "different config; pass on_config_change='recompute' or "
                                   "'keep', or use another store root")
                        break
                    if on_config_change == "recompute":
                        record = None
                missing_mask[j] = record is None
    shared = broadcast_from_0(np.concatenate([[status], missing_mask]).astype(np.int32))
    status, missing_mask = int(shared[0]), shared[1:]
    if status:
        if is_writer:
            if status == 1:
                raise error
            raise ValueError(message)
        raise RuntimeError(f"process 0 could not run sweep {figure!r} (status {status}); "
                           "see its log")
    missing = [items[j] for j in np.flatnonzero(missing_mask)]
    return SweepPlan(figure, points, seeds, items, missing, config_json)


def run_plan(plan: SweepPlan, store: ResultStore, compute: Callable[[dict, Any], dict], *,
             mesh: Mesh | None = None, chunk_size: int | None = None, progress: bool = True,
             callback: Callable[[list[dict]], None] | None = None) -> dict:
    """Computes the plan's missing items in padded, sharded chunks (step 2 of :func:`run_sweep`).

    Process 0 writes each chunk's records as soon as it finishes.  Returns
    ``{(point index, seed): record}`` of the new records (every process).
    """
    missing, figure, points = plan.missing, plan.figure, plan.points
    new_records: dict[tuple[int, int], dict] = {}
    if not missing:
        return new_records
    is_writer = jax.process_index() == 0
    mesh = mesh if mesh is not None else default_mesh()
    if BATCH_AXIS not in mesh.axis_names:
        raise ValueError(f"the mesh needs an axis named {BATCH_AXIS!r}, has {mesh.axis_names}")
    n_shards = mesh.shape[BATCH_AXIS]
    size = chunk_size if chunk_size is not None else len(plan.seeds)
    if size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {size}")
    size = min(size, len(missing))
    size = math.ceil(size / n_shards) * n_shards
    chunks = [missing[k:k + size] for k in range(0, len(missing), size)]
    # A staged compute (e.g. experiments.sections.staged_compute) runs its own programs.
    run = sharded_vmap(compute, mesh, batched=True, axis_name=BATCH_AXIS,
                       jit=not getattr(compute, "staged", False))
    vers = files.versions()
    stacked = _stack_points(points)
    bar = None
    if progress and is_writer:
        bar = tqdm(total=len(chunks), desc=f"sweep {figure}", unit="chunk")
    try:
        for chunk in chunks:
            padded = chunk + [chunk[-1]] * (size - len(chunk))
            index = np.asarray([i for i, _ in padded])
            point_batch = {name: v[index] for name, v in stacked.items()}
            seed_batch = np.asarray([s for _, s in padded], np.int32)
            start = time.perf_counter()
            out = run(point_batch, seed_batch)
            wall = time.perf_counter() - start
            out = flatten_result(out)
            extra = {"chunk_wall_time_s": wall, "chunk_items": len(chunk),
                     "n_devices": int(mesh.devices.size),
                     "n_processes": jax.process_count()}
            fresh = []
            for j, (i, s) in enumerate(chunk):
                record = store.make_record(
                    figure, points[i], s, {k: v[j] for k, v in out.items()},
                    config=plan.config, wall_time_s=wall / len(chunk), extra=extra,
                    package_versions=vers)
                if is_writer:
                    store.write_record(record)
                new_records[(i, s)] = record
                fresh.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(items=f"{len(new_records)}/{len(missing)}")
            if callback is not None:
                callback(fresh)
    finally:
        if bar is not None:
            bar.close()
    return new_records


def collect(plan: SweepPlan, store: ResultStore, new_records: Mapping) -> list[dict]:
    """Every record of the plan, new or stored, in point then seed order (step 3 of
    :func:`run_sweep`); read by process 0 and broadcast, so the same on every process."""
    result = None
    if jax.process_index() == 0:
        result = []
        for i, s in plan.items:
            record = new_records.get((i, s))
            if record is None:
                record = store.read(plan.figure, plan.points[i], s)
            result.append(record)
    return broadcast_json(result)
