"""Sharded, resumable sweeps: a model-agnostic runner and a JSON result store.

A *sweep* evaluates a function for every (point, seed) pair, where a point is a
dict of swept values (``{"size_avg": 2000.0}``) and a seed an ``int``.  The
caller supplies ``compute(point_batch, seed_batch)``: a function that evaluates
a whole batch of pairs as one vmapped program (``point_batch`` is a dict of
arrays of shape ``(B,)``, ``seed_batch`` an ``int32`` array of shape ``(B,)``)
and returns a dict of arrays whose leading axis is the batch.  This module
jits it, shards the batch over the devices of a :class:`jax.sharding.Mesh`, and
writes one JSON record per finished pair, so that an interrupted sweep resumes
where it stopped.

Resuming.  Every finished (figure, point, seed) is one file
``root/<figure>/<point_key>/seed_<k>.json``, written atomically (temporary
file in the same directory, flush, fsync, ``os.replace``, fsync of the
directory), so a file either holds a whole record or does not exist, even if
the process is killed with SIGKILL mid-write.  :func:`run_sweep` skips pairs
whose record exists and computes only the rest, in chunks of a fixed size
(one compile for all chunks), writing each chunk's records as soon as it
finishes: an interruption loses at most one chunk.  A record that does not
parse (which atomic writes rule out, but e.g. a file truncated by a full disk
or a manual edit) counts as not done and is recomputed, with a warning.

Sharding.  The batch of a chunk is padded to a multiple of the mesh size by
repeating its last item, placed with ``NamedSharding(mesh, P("batch"))``, run
through ``jax.jit(compute)``, gathered to the host and trimmed.  Every item of
a vmapped program is computed independently of the others, so the numbers do
not depend on the device count, chunk size, or which chunk an item fell in
(``tests/test_sweep.py`` checks this bitwise on CPU: 1 vs 4 devices, 1 vs 2
processes, interrupted vs uninterrupted runs).

Multiple processes.  After :func:`initialize_distributed` (``jax.distributed``
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
import datetime
import errno as errno_mod
import hashlib
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from dynmec_jax import files

BATCH_AXIS = "batch"
SCHEMA_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEED_FILE_RE = re.compile(r"^seed_(\d+)\.json$")
_MAX_KEY_LEN = 200
_REQUIRED_FIELDS = ("figure", "point", "point_key", "seed", "result")


class CorruptRecordError(ValueError):
    """A record file exists but does not hold a valid record."""


# ----------------------------------------------------------------------------
# Small helpers: names, versions, JSON, atomic writes.
# ----------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    """Formats one swept value for a point key: shortest round-trip repr."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = repr(float(value))
    if text.endswith(".0"):
        text = text[:-2]
    return text


def point_key(point: Mapping[str, Any]) -> str:
    """Returns a stable, filesystem-safe name for a point (a dict of swept values).

    Keys are sorted and joined as ``name=value`` with ``,``; floats use the
    shortest repr that round-trips, without a trailing ``.0``:
    ``{"size_avg": 2000.0}`` -> ``"size_avg=2000"``,
    ``{"width": 3, "depth": 2}`` -> ``"depth=2,width=3"``.  The empty point
    is ``"base"``.  Keys longer than 200 characters are cut and end in a
    hash of the full key so that they stay unique.

    Raises:
      ValueError: a field name is not an identifier, or a value is not a real
        scalar.
    """
    _check_point(point)
    if not point:
        return "base"
    key = ",".join(f"{name}={_format_value(point[name])}" for name in sorted(point))
    if len(key) > _MAX_KEY_LEN:
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        key = f"{key[:_MAX_KEY_LEN - 17]}-{digest}"
    return key


def _check_point(point: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` unless ``point`` maps identifiers to real scalars."""
    if not isinstance(point, Mapping):
        raise ValueError(f"a point must be a dict of swept values, got {type(point).__name__}")
    for name, value in point.items():
        if not isinstance(name, str) or not _FIELD_RE.match(name):
            raise ValueError(f"swept field names must be identifiers, got {name!r}")
        if not isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
            if not (isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0):
                raise ValueError(
                    f"swept value {name}={value!r} must be a real scalar "
                    f"(bool, int or float), got {type(value).__name__}")


def _check_name(kind: str, name: str) -> None:
    """Raises ``ValueError`` unless ``name`` is a safe single path component."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"{kind} must match {_NAME_RE.pattern} (a safe directory name), got {name!r}")


def record_arrays(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Returns the numbers of a record as NumPy arrays of their original dtypes."""
    dtypes = record.get("result_dtypes", {})
    return {name: np.asarray(value, dtype=dtypes.get(name))
            for name, value in record["result"].items()}


def _host_scalar_list(x: np.ndarray) -> Any:
    """Converts one item's output to nested Python lists/scalars for JSON."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        x = x.astype(np.float64)
    return x.tolist()


# ----------------------------------------------------------------------------
# Result store.
# ----------------------------------------------------------------------------


class ResultStore:
    """One JSON file per finished (figure, point, seed) under a root directory.

    Layout: ``root/<figure>/<point_key>/seed_<k>.json`` (see :func:`point_key`).
    A record is a JSON object with the fields ``figure``, ``point``,
    ``point_key``, ``seed``, ``result`` (name -> nested lists),
    ``result_dtypes``, ``config``, ``versions``, ``wall_time_s`` (this item's
    share of its chunk's wall time), ``chunk_wall_time_s``, ``chunk_items``,
    ``n_devices``, ``n_processes``, ``timestamp_utc`` and ``schema``.  Files
    are written atomically (:func:`atomic_write_text`).  One writer per figure
    at a time.
    """

    def __init__(self, root: str | os.PathLike):
        """Creates a store rooted at ``root`` (created lazily on first write)."""
        self.root = Path(root)

    def __repr__(self) -> str:
        """Returns ``ResultStore('<root>')``."""
        return f"ResultStore({str(self.root)!r})"

    def path(self, figure: str, point: Mapping[str, Any], seed: int) -> Path:
        """Returns the file that holds (or will hold) the record of one item."""
        _check_name("figure", figure)
        seed = _check_seed(seed)
        return self.root / figure / point_key(point) / f"seed_{seed}.json"

    def check_writable(self, figure: str | None = None) -> None:
        """Checks that records can be written, before any compute is spent.

        Creates ``root`` (and ``root/figure`` if given) and writes, fsyncs and
        deletes a probe file there.

        Raises:
          OSError: (``PermissionError``, ``NotADirectoryError``, ...) of the
            same type as the underlying failure, with the path in the message.
        """
        directory = self.root if figure is None else self.root / figure
        if figure is not None:
            _check_name("figure", figure)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=directory, prefix=f".probe{files.TMP_MARK}")
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as e:
            raise type(e)(e.errno or errno_mod.EIO,
                          f"result store directory {str(directory)!r} is not writable "
                          f"({e.strerror or e})", str(directory)) from e

    def _load(self, path: Path, figure: str, key: str, seed: int) -> dict:
        """Reads and validates one record file; raises CorruptRecordError."""
        try:
            text = path.read_text(encoding="utf-8")
            record = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptRecordError(f"{path}: not a JSON record ({e})") from e
        if not isinstance(record, dict) or any(f not in record for f in _REQUIRED_FIELDS):
            raise CorruptRecordError(f"{path}: missing fields {_REQUIRED_FIELDS}")
        if (record["figure"] != figure or record["point_key"] != key
                or record["seed"] != seed or not isinstance(record["result"], dict)):
            raise CorruptRecordError(f"{path}: record does not match its location")
        return record

    def read(self, figure: str, point: Mapping[str, Any], seed: int) -> dict:
        """Returns the record of one item.

        Raises:
          FileNotFoundError: the item is not done.
          CorruptRecordError: the file exists but holds no valid record.
        """
        path = self.path(figure, point, seed)
        return self._load(path, figure, point_key(point), int(seed))

    def try_read(self, figure: str, point: Mapping[str, Any], seed: int) -> dict | None:
        """Returns the record of one item, or ``None`` if absent or corrupt.

        A corrupt file gives a ``UserWarning`` naming it (it will be recomputed).
        """
        try:
            return self.read(figure, point, seed)
        except FileNotFoundError:
            return None
        except CorruptRecordError as e:
            warnings.warn(f"ignoring corrupt result record, will recompute: {e}", stacklevel=2)
            return None

    def done(self, figure: str, point: Mapping[str, Any], seed: int) -> bool:
        """Whether a valid record of (figure, point, seed) exists.

        A corrupt or empty file counts as not done (with a ``UserWarning``).
        """
        return self.try_read(figure, point, seed) is not None

    def make_record(self, figure: str, point: Mapping[str, Any], seed: int,
                    result: Mapping[str, Any], *, config: Any, wall_time_s: float,
                    extra: Mapping[str, Any] | None = None,
                    package_versions: Mapping[str, str] | None = None) -> dict:
        """Builds the record of one item, exactly as :meth:`write` stores it.

        Args:
          figure, point, seed: the item.
          result: name -> array-like (one item's numbers).
          config: the run's configuration (anything :func:`to_jsonable` takes).
          wall_time_s: wall time of the work that produced this item [s].
          extra: more JSON-able fields to store (e.g. chunk timing).
          package_versions: package versions (default :func:`versions`).
        """
        _check_name("figure", figure)
        seed = _check_seed(seed)
        record = {
            "schema": SCHEMA_VERSION,
            "figure": figure,
            "point": files.to_jsonable(dict(point), _path="point"),
            "point_key": point_key(point),
            "seed": seed,
            "result": {str(k): _host_scalar_list(v) for k, v in result.items()},
            "result_dtypes": {str(k): str(np.asarray(v).dtype)
                              if np.asarray(v).dtype.kind in "biuf" else "float64"
                              for k, v in result.items()},
            "config": files.to_jsonable(config),
            "versions": dict(package_versions if package_versions is not None
                             else files.versions()),
            "wall_time_s": float(wall_time_s),
            "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        if extra:
            record.update(files.to_jsonable(dict(extra), _path="extra"))
        # Round trip so the in-memory record equals what a later read returns.
        return json.loads(json.dumps(record))

    def write_record(self, record: Mapping[str, Any]) -> Path:
        """Writes a record built by :meth:`make_record` atomically; returns its path."""
        path = self.path(record["figure"], record["point"], record["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
        return path

    def write(self, figure: str, point: Mapping[str, Any], seed: int,
              result: Mapping[str, Any], *, config: Any, wall_time_s: float,
              extra: Mapping[str, Any] | None = None) -> dict:
        """Builds and atomically writes the record of one item; returns it.

        See :meth:`make_record` for the arguments.
        """
        record = self.make_record(figure, point, seed, result, config=config,
                                  wall_time_s=wall_time_s, extra=extra)
        self.write_record(record)
        return record

    def records(self, figure: str) -> list[dict]:
        """All valid records of a figure, sorted by point key then seed.

        Corrupt files are skipped with a ``UserWarning``; temporary files of
        interrupted writes are ignored.
        """
        _check_name("figure", figure)
        out = []
        base = self.root / figure
        if not base.is_dir():
            return out
        for point_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            seed_files = []
            for f in point_dir.iterdir():
                m = _SEED_FILE_RE.match(f.name)
                if m:
                    seed_files.append((int(m.group(1)), f))
            for seed, f in sorted(seed_files):
                try:
                    out.append(self._load(f, figure, point_dir.name, seed))
                except CorruptRecordError as e:
                    warnings.warn(f"ignoring corrupt result record: {e}", stacklevel=2)
        return out

    def clean_temp_files(self, figure: str, older_than_s: float = 600.0) -> int:
        """Deletes temporary files of interrupted writes; returns how many.

        Only files older than ``older_than_s`` seconds are removed, so that a
        write in progress elsewhere is not disturbed.
        """
        _check_name("figure", figure)
        base = self.root / figure
        if not base.is_dir():
            return 0
        now = time.time()
        removed = 0
        for f in base.glob(f"*/.*{files.TMP_MARK}*"):
            try:
                if now - f.stat().st_mtime >= older_than_s:
                    f.unlink()
                    removed += 1
            except OSError:
                pass
        return removed


def _check_seed(seed: Any) -> int:
    """Returns ``seed`` as an int in [0, 2**31); raises ValueError otherwise."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seeds must be integers, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**31:
        raise ValueError(f"seeds must lie in [0, 2**31), got {seed}")
    return seed


# ----------------------------------------------------------------------------
# Devices, meshes and multiple processes.
# ----------------------------------------------------------------------------


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           local_device_ids: Sequence[int] | None = None,
                           initialization_timeout: int = 300,
                           cpu_collectives: str = "gloo") -> bool:
    """Joins a multi-process JAX run; a no-op for a single process.

    Wraps :func:`jax.distributed.initialize`.  Must be called before anything
    touches a JAX backend (``jax.devices()``, any computation).  Sets the CPU
    cross-process collectives (``jax_cpu_collectives_implementation``; "gloo"
    works out of the box on CPU, "mpi" needs an MPI library), which only
    affects the CPU backend.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator (default:
        the ``JAX_COORDINATOR_ADDRESS`` environment variable).
      num_processes: number of processes; ``None`` or 1 means a single
        process and nothing is done.
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: restricts the devices this process uses.
      initialization_timeout: seconds to wait for all processes to connect.
      cpu_collectives: "gloo" or "mpi".

    Returns:
      True if the distributed system is initialized (now or before), False
      for a single-process run.
    """
    if num_processes is None or int(num_processes) == 1:
        return False
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator_address is None or process_id is None:
        raise ValueError("a multi-process run needs coordinator_address (host:port) "
                         "and process_id")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=int(num_processes),
        process_id=int(process_id),
        local_device_ids=local_device_ids,
        cluster_detection_method="deactivate",
        initialization_timeout=initialization_timeout,
    )
    return True


def default_mesh(axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over all devices of all processes, axis ``axis_name``.

    The axis type is ``Auto`` (sharding propagated by the compiler), so code
    written for one device runs unchanged.
    """
    devices = jax.devices()
    return jax.make_mesh((len(devices),), (axis_name,), axis_types=(AxisType.Auto,),
                         devices=devices)


def _gather_to_host(tree: Any) -> Any:
    """Copies a pytree of (possibly multi-process) arrays to NumPy on every process."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def sharded_vmap(fn: Callable[..., Any], mesh: Mesh | None = None, *,
                 batched: bool = False, axis_name: str = BATCH_AXIS
                 ) -> Callable[..., Any]:
    """Runs ``fn`` over a batch sharded along one mesh axis; returns NumPy arrays.

    The returned callable takes pytrees whose leaves all share a leading batch
    axis of size B (NumPy or JAX arrays; in a multi-process run every process
    passes the same full batch).  It pads the batch to a multiple of the mesh
    axis size by repeating the last item (so the padding is valid input, not
    zeros that might divide by zero), places every leaf with
    ``NamedSharding(mesh, P(axis_name))``, runs the jitted function, gathers
    the outputs to the host of every process and trims them back to B.  The
    jitted function is built once: calls with the same shapes do not
    recompile.

    Args:
      fn: the function; per item (wrapped in ``jax.vmap``) unless ``batched``.
      mesh: the mesh (default :func:`default_mesh`).
      batched: whether ``fn`` already maps over the leading axis itself.
      axis_name: the mesh axis that the batch is split over.

    Returns:
      ``call(*args) -> outputs`` with outputs as NumPy arrays of leading size
      B.  Every output leaf must have the (padded) batch as leading axis.
    """
    if mesh is None:
        mesh = default_mesh(axis_name)
    if axis_name not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}, not {axis_name!r}")
    n_shards = mesh.shape[axis_name]
    sharding = NamedSharding(mesh, P(axis_name))
    jitted = jax.jit(fn if batched else jax.vmap(fn))

    def call(*args):
        """Pads, shards, runs and trims; see :func:`sharded_vmap`."""
        leaves, treedef = jax.tree.flatten(args)
        if not leaves:
            raise ValueError("sharded_vmap needs at least one batched array")
        hosts = [np.asarray(x) for x in leaves]
        hosts = [h.astype(jax.dtypes.canonicalize_dtype(h.dtype)) for h in hosts]
        sizes = {h.shape[0] if h.ndim else None for h in hosts}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"all inputs need the same leading batch size, got {sizes}")
        size = sizes.pop()
        if size == 0:
            raise ValueError("empty batch")
        padded = math.ceil(size / n_shards) * n_shards
        placed = []
        for h in hosts:
            if padded > size:
                h = np.concatenate([h, np.repeat(h[-1:], padded - size, axis=0)])
            placed.append(jax.make_array_from_callback(
                h.shape, sharding, lambda idx, h=h: h[idx], dtype=h.dtype))
        out = jitted(*jax.tree.unflatten(treedef, placed))
        for leaf in jax.tree.leaves(out):
            if np.ndim(leaf) == 0 or leaf.shape[0] != padded:
                raise ValueError(
                    "every output of the sharded function needs the batch as its "
                    f"leading axis (size {padded}), got shape {np.shape(leaf)}")
        host = _gather_to_host(out)
        return jax.tree.map(lambda x: np.asarray(x)[:size], host)

    return call


def _broadcast_from_0(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` on every process (identity for one process)."""
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def _broadcast_json(obj: Any) -> Any:
    """Process 0's JSON-able ``obj`` on every process (others pass anything)."""
    if jax.process_count() == 1:
        return obj
    data = (np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)
            if jax.process_index() == 0 else np.zeros(0, np.uint8))
    length = int(_broadcast_from_0(np.array([data.size], np.int32))[0])
    if jax.process_index() != 0:
        data = np.zeros(length, np.uint8)
    data = _broadcast_from_0(data)
    return json.loads(data.tobytes().decode("utf-8"))


# ----------------------------------------------------------------------------
# The sweep runner.
# ----------------------------------------------------------------------------


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
    _check_name("figure", figure)
    points = [dict(p) for p in points]
    seeds = [_check_seed(s) for s in seeds]
    for p in points:
        _check_point(p)
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
    shared = _broadcast_from_0(np.concatenate([[status], missing_mask]).astype(np.int32))
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
    run = sharded_vmap(compute, mesh, batched=True, axis_name=BATCH_AXIS)
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
            if not isinstance(out, Mapping):
                raise TypeError("compute must return a dict of arrays, "
                                f"got {type(out).__name__}")
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
    return _broadcast_json(result)
