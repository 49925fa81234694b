"""Files: atomic writes, JSON, versions, seeds and a workdir's config (one of each).

Every file this package writes goes through :func:`atomic_write`: a
temporary file in the same directory, flushed and fsynced, renamed over the
target with ``os.replace`` and the directory fsynced, so a file is whole or
absent even after SIGKILL.  Temporary names are ``.<name>.tmp.*`` (the
result store of :mod:`dynmec_jax.sweep` cleans stray ones).

* :func:`to_jsonable`: one conversion to plain JSON types for configs,
  records and figure data (NumPy/JAX arrays, dataclasses such as
  ``SystemParams``, ``ConfigDict``, paths).  Non-finite floats stay floats
  (JSON's ``NaN`` extension, what the result store has always written) unless
  ``nonfinite_as_null``.
* :func:`dumps` / :func:`write_json`: the one way this package writes JSON
  files: strict JSON (``allow_nan=False``), never a bare ``NaN`` or
  ``Infinity``; a non-finite float becomes ``null`` and, in a top-level
  object, its path and the value it stood for are listed under
  :data:`NONFINITE_KEY` (the reason for the null).  Only the result store
  (:mod:`dynmec_jax.store`) keeps its documented ``NaN`` for undefined metrics.
* :func:`seed_keys`: per-seed PRNG keys of a run (``fold_in(key(seed), i)``).
* :func:`claim_workdir`: a workdir remembers its config; a different config
  is refused instead of mixing two runs.
* :func:`lock_workdir`: one run at a time per workdir (an ``flock`` on
  ``WORKDIR/.lock``, released by the kernel when the process ends, even on
  SIGKILL, so a lock is never stale).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: Marks the temporary files of :func:`atomic_write` (``.<name>.tmp.<random>``).
TMP_MARK = ".tmp."
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "dynmec_jax")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on.

    Keys: ``python``, ``jax``, ``jaxlib``, ``flax``, ``optax``, ``numpy``,
    ``dynmec_jax``; a package that is not installed reads ``"not installed"``.
    """
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def to_jsonable(obj: Any, nonfinite_as_null: bool = False, _path: str = "value",
                _found: list | None = None) -> Any:
    """Plain-JSON copy of ``obj`` (dict, list, str, numbers, bool, None).

    Handles mappings (keys become str), lists/tuples/sets, NumPy and JAX
    arrays and scalars, dataclasses (e.g. ``SystemParams``), objects with a
    ``to_dict()`` method (e.g. ``ml_collections.ConfigDict``) and paths.
    ``nonfinite_as_null``: NaN and +-inf become ``None`` (strict JSON);
    otherwise they stay floats.

    Raises:
      TypeError: naming the path of a value that has no JSON form.
    """
    def rec(v, path):
        return to_jsonable(v, nonfinite_as_null, path, _found)

    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if nonfinite_as_null and not math.isfinite(f):
            if _found is not None:
                _found.append((_path, json.dumps(f)))
            return None
        return f
    if isinstance(obj, (np.ndarray, jax.Array)):
        return rec(np.asarray(obj).tolist(), _path)
    if isinstance(obj, Mapping):
        return {str(k): rec(v, f"{_path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [rec(v, f"{_path}[{i}]") for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: rec(getattr(obj, f.name), f"{_path}.{f.name}")
                for f in dataclasses.fields(obj)}
    if callable(getattr(obj, "to_dict", None)):
        return rec(obj.to_dict(), _path)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{_path} has no JSON form: {type(obj).__name__} {obj!r}")


def _fsync_dir(directory: pathlib.Path) -> None:
    """Flushes a directory entry to disk (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: str | bytes,
                 before_replace: Callable[[], None] | None = None) -> pathlib.Path:
    """Writes ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path.

    A temporary file in the same directory (so ``os.replace`` is a rename
    within one file system) is written, flushed and fsynced, renamed over
    ``path``, and the directory is fsynced.  A crash at any point leaves the
    old file or the new one, plus at worst a stray ``.<name>.tmp.*`` file.
    Parent directories are created.  ``before_replace`` (optional) is called
    just before the rename; if it raises, the temporary file is removed,
    ``path`` is left as it was and the exception propagates (e.g. a check that
    ``path`` is still absent or a regular file, :mod:`dynmec_jax.taskfile`).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def parent_dir(path: str | os.PathLike) -> pathlib.Path:
    """The directory an output ``path`` goes into (``.`` for a bare file name)."""
    return pathlib.Path(path).parent


#: Key of a top-level JSON object that lists its non-finite floats written as ``null``
#: (:func:`dumps`): ``{"<path>": "NaN" | "Infinity" | "-Infinity"}``, paths as
#: ``value.per_seed[0].gap``.
NONFINITE_KEY = "nonfinite_as_null"
#: At most this many paths are listed under :data:`NONFINITE_KEY` (then a count).
_NONFINITE_LISTED = 50


def dumps(data: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of ``data`` (anything :func:`to_jsonable` takes); never ``NaN``.

    Non-finite floats become ``null`` (``json.dumps(..., allow_nan=False)``
    guarantees no bare ``NaN``/``Infinity`` gets through).  If ``data`` is a
    mapping, the reason for each such ``null`` is recorded beside the data: key
    :data:`NONFINITE_KEY` maps the value's path to the value it replaced
    (``"NaN"``, ``"Infinity"`` or ``"-Infinity"``; the first 50, then
    ``"...": count``).  A mapping that has no non-finite value is written
    unchanged.
    """
    found: list = []
    obj = to_jsonable(data, nonfinite_as_null=True, _found=found)
    if found and isinstance(obj, dict):
        if NONFINITE_KEY in obj:
            raise ValueError(f"data already has a key {NONFINITE_KEY!r}")
        listed = dict(found[:_NONFINITE_LISTED])
        if len(found) > _NONFINITE_LISTED:
            listed["..."] = f"{len(found) - _NONFINITE_LISTED} more"
        obj[NONFINITE_KEY] = listed
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(data: Any, path: str | os.PathLike, indent: int = 2) -> str:
    """Writes ``data`` as strict, indented JSON (:func:`dumps`), atomically.

    NaN/inf become ``null`` with their reason under :data:`NONFINITE_KEY`.
    Accepts anything :func:`to_jsonable` takes.  Returns ``str(path)``.
    """
    return str(atomic_write(path, dumps(data, indent=indent) + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file (``null`` comes back as ``None``)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def model_files(path: str | os.PathLike, what: str, *names: str) -> list[pathlib.Path]:
    """``path / name`` for each of a saved model's ``names``; ``FileNotFoundError``
    naming ``what`` and the first one missing."""
    out = [pathlib.Path(path) / n for n in names]
    for f in out:
        if not f.is_file():
            raise FileNotFoundError(f"{what} checkpoint file missing: {f}")
    return out


def seed_keys(seed: int, n: int) -> jax.Array:
    """Typed PRNG keys ``(n,)`` of a run's seeds: seed i uses ``fold_in(key(seed), i)``.

    The same bits as the raw ``fold_in(PRNGKey(seed), i)`` keys.
    """
    base = jax.random.key(int(seed))
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))


def config_json(cfg) -> str:
    """Canonical JSON text of a config (sorted keys): what :func:`claim_workdir` compares."""
    return json.dumps(to_jsonable(cfg), sort_keys=True)


def claim_workdir(cfg, workdir) -> pathlib.Path:
    """Creates ``workdir`` and records ``cfg`` in ``workdir/config.json``.

    Raises ``ValueError`` if the directory already holds a run with a
    different config (resuming it would mix two runs).  A ``config.json``
    that is not a JSON object (truncated by a full disk, edited by hand) is
    bookkeeping, not a different run: it is rewritten with a warning (the
    checkpoints' shapes and the "done" checks still guard what is reused).
    """
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    text = config_json(cfg)
    cfg_file = workdir / "config.json"
    if cfg_file.exists():
        try:
            old = cfg_file.read_text(encoding="utf-8")
            readable = isinstance(json.loads(old), dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            readable = False
        if not readable:
            warnings.warn(f"{cfg_file} is corrupt; rewriting it with this run's config",
                          stacklevel=2)
        elif old != text:
            raise ValueError(f"{workdir} holds a run with a different config ({cfg_file}); "
                             "use another --workdir or delete it")
    atomic_write(cfg_file, text)
    return workdir


class WorkdirBusy(ValueError):
    """Another process holds the workdir's lock (:func:`lock_workdir`)."""


def lock_workdir(workdir):
    """Takes the workdir's lock for this process; returns the open lock file (keep it).

    Non-blocking: raises :class:`WorkdirBusy` naming the holder (pid, host,
    start time) if another process has it.  The lock lasts until the
    returned file is closed or the process ends.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    f = open(workdir / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise WorkdirBusy(f"workdir {workdir} is in use by another run ({holder}); wait for "
                          "it to finish or use another --workdir") from None
    f.seek(0)
    f.truncate()
    start = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    f.write(f"pid {os.getpid()} on {platform.node()} since {start}\n")
    f.flush()
    return f
