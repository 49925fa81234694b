"""The one training loop: jitted chunks, then on the host metrics, curves, checks, checkpoints.

Allocator training (:mod:`dynmec_jax.train.allocator`) and Algorithm 1
(:mod:`dynmec_jax.train.joint`) both run as :func:`run_chunks`: a compiled
chunk of steps (a ``lax.scan``, all seeds ``vmap``-ed), then on the host

1. a finiteness check of the chunk's metrics and of the weights
   (:func:`check_finite`): a non-finite value stops the run with a
   :class:`DivergenceError` naming the step and the quantity, before the
   diverged state is saved, so the last checkpoint stays finite;
2. an optional evaluation (e.g. the gap to the optimum on fixed held-out
   scenarios whose optimum is computed once);
3. the curves (:class:`Curves`): one JSON line per chunk in
   ``WORKDIR/metrics.jsonl`` and TensorBoard event files in
   ``WORKDIR/tensorboard`` (tensorboardX), written before the checkpoint;
4. an orbax checkpoint of the state and the history.

A rerun resumes from the newest checkpoint that restores (a corrupt newest
one is moved aside to ``<step>.unrestorable``, never deleted, with a warning,
and the one before is used), rewrites
``metrics.jsonl`` from the checkpointed history and tells TensorBoard to
purge the events after it (``purge_step``), so the curves continue with no
duplicate step.  :meth:`Curves.close` draws ``WORKDIR/curves.png``.
Steps are optimiser steps (allocator) or pre-training steps and episodes
(Algorithm 1), counted from 1.
"""

from __future__ import annotations

import math
import pathlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from dynmec_jax import files, plotting


class DivergenceError(RuntimeError):
    """Training produced a non-finite value (``step``, ``quantity``); nothing was saved."""

    def __init__(self, step: int, quantity: str):
        super().__init__(f"training diverged at step {step}: {quantity} is not finite; the "
                         "last finite checkpoint is kept (lower the learning rate?)")
        self.step, self.quantity = step, quantity


def check_finite(step: int, metrics: dict, params) -> None:
    """Raises :class:`DivergenceError` naming the first non-finite metric (a dict of arrays)
    or ``"the weights"`` if a parameter of ``params`` (a pytree) is not finite."""
    for name, value in metrics.items():
        if not np.all(np.isfinite(np.asarray(value, np.float64))):
            raise DivergenceError(step, name)
    for leaf in jax.tree.leaves(params):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise DivergenceError(step, "the weights")


def best_seed(costs, usable=None) -> int:
    """Index of the lowest cost among the usable seeds, whatever their order (NaN-safe).

    A seed whose cost is NaN or infinite, or whose ``usable[i]`` is false
    (e.g. its weights are not all finite), is never chosen; ties go to the
    lowest index.  Raises ``ValueError`` if no seed is usable.  (Python's
    ``min`` is not safe: ``min([nan, 1.0])`` is nan, ``min([1.0, nan])`` 1.0.)
    """
    c = np.asarray(costs, np.float64)
    ok = np.isfinite(c) if usable is None else np.isfinite(c) & np.asarray(usable, bool)
    if not ok.any():
        raise ValueError("no seed has finite weights and a finite cost")
    return int(np.argmin(np.where(ok, c, np.inf)))


def worst_over_seeds(values) -> float:
    """The largest value over seeds (and any further axes); NaN if any value is NaN,
    whatever the order (``np.max``; Python's ``max`` depends on where the NaN is)."""
    return float(np.max(np.asarray(values, np.float64)))


def all_finite(tree) -> bool:
    """Whether every leaf of ``tree`` (a pytree of arrays, on the host) is finite."""
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(tree))


def check_export(path, params, name: str, gap, max_gap: float) -> None:
    """The checks before a model is exported over a shipped default (``--export_pretrained``).

    Raises ``ValueError`` naming ``path`` if a weight of ``params`` is not
    finite, or if ``gap`` (the model's recorded relative gap ``name``) is
    missing, not finite or above ``max_gap``.
    """
    if not all_finite(params):
        raise ValueError(f"{path} has non-finite weights; not exported")
    if (gap is None or isinstance(gap, bool) or not isinstance(gap, (int, float))
            or not np.isfinite(gap) or gap > max_gap):
        raise ValueError(f"{path}: {name} {gap} is missing, not finite or above the export "
                         f"threshold {max_gap}; not exported")


def summarize(step: int, metrics: dict) -> dict:
    """A history entry: ``{"step", name: mean over the chunk's steps and the seeds,
    "per_seed": {name: [mean per seed]}}`` of per-step metrics ``(seeds, steps)`` or
    ``(steps,)``."""
    out: dict[str, Any] = {"step": int(step)}
    per_seed = {}
    for name, value in metrics.items():
        a = np.asarray(value, np.float64)
        out[name] = float(np.mean(a)) if a.size else math.nan
        if a.ndim == 2:
            per_seed[name] = a.mean(axis=1).tolist()
    if per_seed:
        out["per_seed"] = per_seed
    return out


class Curves:
    """``metrics.jsonl`` and TensorBoard events of one run, continued on resume.

    ``history``: the entries restored from the checkpoint (empty for a new
    run): ``metrics.jsonl`` is rewritten from them and TensorBoard purges
    the events after their last step.
    """

    def __init__(self, workdir, history: Sequence[dict]):
        self.workdir = pathlib.Path(workdir)
        self.history = list(history)
        self.jsonl = self.workdir / "metrics.jsonl"
        files.atomic_write(self.jsonl, "".join(files.dumps(h) + "\n"
                                               for h in self.history))
        last = self.history[-1]["step"] if self.history else None
        self.writer = SummaryWriter(str(self.workdir / "tensorboard"),
                                    purge_step=None if last is None else last + 1)

    def log(self, entry: dict) -> None:
        """Appends a history entry (:func:`summarize`) to the JSON lines and TensorBoard."""
        self.history.append(entry)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(files.dumps(entry) + "\n")
            f.flush()
        for name, value in entry.items():
            if name in ("step", "per_seed") or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(name, value, entry["step"])
            for i, v in enumerate(entry.get("per_seed", {}).get(name, [])):
                self.writer.add_scalar(f"{name}/seed_{i}", v, entry["step"])
        self.writer.flush()

    def close(self, title: str = "") -> str:
        """Closes the event files and draws ``curves.png``; returns its path."""
        self.writer.close()
        return plotting.plot_curves(self.history, self.workdir / "curves.png", title)


def checkpoint_manager(workdir) -> ocp.CheckpointManager:
    """The orbax manager of ``workdir/checkpoints`` (the two newest kept)."""
    return ocp.CheckpointManager(pathlib.Path(workdir).resolve() / "checkpoints",
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def restore(mngr: ocp.CheckpointManager, template) -> tuple[int, Any, list]:
    """``(step, state, history)`` of the newest checkpoint that restores, or ``(0,
    template, [])``.  A checkpoint that fails to restore (truncated by a crash or a full
    disk, or another run's) is moved aside to ``<step>.unrestorable`` (kept, never
    deleted; orbax ignores it) with a warning, and the previous one is tried."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            r = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template), history=ocp.args.JsonRestore()))
            state = jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(r["state"]))
            return int(step), state, list(r["history"])
        except Exception as e:  # orbax/tensorstore raise various types on corrupt files
            aside = _set_aside(pathlib.Path(mngr.directory), step)
            warnings.warn(f"checkpoint {step} in {mngr.directory} does not restore ({e}); "
                          f"moved to {aside} and trying the one before", stacklevel=2)
            if aside is None:
                mngr.delete(step)
            else:
                mngr.reload()
    return 0, template, []


def _set_aside(directory: pathlib.Path, step: int) -> pathlib.Path | None:
    """Renames checkpoint ``step`` to a free ``<step>.unrestorable[.i]``; None if it is not
    a plain directory named after the step (then the caller deletes it through orbax)."""
    src = directory / str(step)
    if not src.is_dir():
        return None
    for i in range(1000):
        dst = directory / (f"{step}.unrestorable" + (f".{i}" if i else ""))
        if not dst.exists():
            src.rename(dst)
            return dst
    return None


def run_chunks(state, chunk_fn: Callable, bounds: Sequence[tuple[int, int]], workdir, *,
               params_of: Callable = lambda s: s, evaluate: Callable | None = None,
               desc: str = "train", show: str | None = None, progress: bool = True):
    """The loop of the module doc.  Returns ``(state, history)``.

    Args:
      state: the initial (stacked) training state, also the restore template.
      chunk_fn: ``chunk_fn(state, lo, hi) -> (state, metrics)``: steps ``lo+1 .. hi``
        (compiled by the caller), metrics ``{name: (seeds, steps)}``.
      bounds: ``[(lo, hi)]`` of every chunk, in order (resumed chunks are skipped).
      workdir: where ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/`` live.
      params_of: the weights of a state (checked for finiteness).
      evaluate: ``evaluate(state, hi) -> {name: value or per-seed array}``, logged
        with the chunk (e.g. the gap to the optimum).
      desc, show: the progress bar's label and the metric it shows.
    """
    mngr = checkpoint_manager(workdir)
    start, state, history = restore(mngr, state)
    if start:
        logging.info("resumed from step %d (%s)", start, mngr.directory)
    curves = Curves(workdir, history)
    todo = [(lo, hi) for lo, hi in bounds if hi > start]
    bar = tqdm(todo, desc=desc, unit="chunk", disable=not progress)
    try:
        for lo, hi in bar:
            state, metrics = chunk_fn(state, lo, hi)
            metrics = jax.device_get(metrics)
            check_finite(hi, metrics, params_of(state))
            entry = summarize(hi, metrics)
            if evaluate is not None:
                extra = {k: np.asarray(v, np.float64) for k, v in evaluate(state, hi).items()}
                check_finite(hi, extra, ())
                entry.update({k: float(v.mean()) for k, v in extra.items()})
                entry.setdefault("per_seed", {}).update(
                    {k: v.tolist() for k, v in extra.items() if v.ndim == 1})
            curves.log(entry)
            mngr.save(hi, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                history=ocp.args.JsonSave(files.to_jsonable(curves.history, True))))
            if show is not None and show in entry:
                bar.set_postfix({show: f"{entry[show]:.4g}"})
        mngr.wait_until_finished()
    finally:
        mngr.close()
        curves.close(desc)
    return state, curves.history


def chunk_bounds(total: int, chunk: int, start: int = 0) -> list[tuple[int, int]]:
    """``[(lo, hi)]`` covering steps ``start .. total`` in chunks of at most ``chunk``."""
    return [(lo, min(lo + chunk, total)) for lo in range(start, total, chunk)]
