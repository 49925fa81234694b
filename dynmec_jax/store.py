"""The JSON result store of the sweeps: one file per finished (figure, point, seed).

Layout: ``root/<figure>/<point_key>/seed_<k>.json`` (:func:`point_key`).  Every
file is written atomically (:func:`dynmec_jax.files.atomic_write`: a
temporary file in the same directory, flushed, fsynced, renamed), so a
record is whole or absent, even after SIGKILL.  A record that does not parse
(a file truncated by a full disk or a manual edit) counts as not done and is
recomputed, with a warning.  Results are nested pytrees (dicts and
NamedTuples of numbers); :func:`flatten_result` stores them under
``"a/b/c"`` names, the one place where that format is written.
"""

from __future__ import annotations

import datetime
import errno as errno_mod
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dynmec_jax import files

SCHEMA_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEED_FILE_RE = re.compile(r"^seed_(\d+)\.json$")
_MAX_KEY_LEN = 200
_REQUIRED_FIELDS = ("figure", "point", "point_key", "seed", "result")


class CorruptRecordError(ValueError):
    """A record file exists but does not hold a valid record."""


def flatten_result(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a/b/c": leaf}`` of a nested result (mappings and NamedTuples of array leaves).

    The inverse reading is the owner's (e.g.
    :meth:`dynmec_jax.experiments.sections.ItemResult.from_flat`).
    """
    if isinstance(tree, Mapping):
        items = ((str(k), v) for k, v in tree.items())
    elif isinstance(tree, tuple) and hasattr(tree, "_fields"):
        items = zip(tree._fields, tree, strict=True)
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten_result(v, f"{prefix}/{k}" if prefix else k))
    return out


# ----------------------------------------------------------------------------
# Names of points, figures and seeds.
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
    check_point(point)
    if not point:
        return "base"
    key = ",".join(f"{name}={_format_value(point[name])}" for name in sorted(point))
    if len(key) > _MAX_KEY_LEN:
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        key = f"{key[:_MAX_KEY_LEN - 17]}-{digest}"
    return key


def check_point(point: Mapping[str, Any]) -> None:
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


def check_name(kind: str, name: str) -> None:
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
    are written atomically (:func:`dynmec_jax.files.atomic_write`).  One writer per figure
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
        check_name("figure", figure)
        seed = check_seed(seed)
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
            check_name("figure", figure)
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
        check_name("figure", figure)
        seed = check_seed(seed)
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
        check_name("figure", figure)
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
        check_name("figure", figure)
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


def check_seed(seed: Any) -> int:
    """Returns ``seed`` as an int in [0, 2**31); raises ValueError otherwise."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seeds must be integers, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**31:
        raise ValueError(f"seeds must lie in [0, 2**31), got {seed}")
    return seed
