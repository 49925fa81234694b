"""The cell: the fields of :class:`~dynmec_jax.system.SystemParams` a decision depends on.

A pipeline trained "for any cell" samples the cell per training scenario
over a documented range and feeds the networks its normalised fields (the
*cell features*), as mixed-N training feeds them the number of users.

* A range is text, ``"name=lo:hi:scale,..."`` (``scale`` ``log`` or
  ``lin``), so it lives in :class:`~dynmec_jax.pipeline.PipelineSpec` and
  ``pipeline.json``: a saved pipeline knows the cells it was trained on.
  :data:`DEFAULT_RANGE` is the range of docs/reproduction.md ("Any cell");
  :func:`parse_range` reads one.
* :func:`cell_features`: each ranged field mapped to [-1, 1] over its range
  (log scale for rates, powers and the like, linear for the path-loss
  exponent and beta); dimensionless, any leading shape.
* :func:`sample_cells`: ``batch`` cells, each field log-uniform or uniform
  over its range (every float leaf ``(batch,)``).
* :func:`over_scenarios`: runs a function of ``(B, ...)`` scenarios and one
  cell on scenarios that each have their own cell (``vmap``).
* :func:`out_of_range`: the fields of a cell outside the trained range (the
  warnings of ``dynmec-decide``); fields outside the range text must equal the
  reference cell (the allocator's, Table II for the shipped one).

Units: SI in the ranges (Hz, cycles/s, W, W/Hz); features dimensionless.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax.system import SystemParams, params_from_overrides

Array = Any

#: The range of the shipped "any cell" training (docs/reproduction.md, "Any cell"):
#: channel 0.1-5 MHz, server 0.5-20 GHz, lambda (Eq. 9) 0.1-1 cycle/MAC, transmit power
#: 10 dBm-30 dBm, noise -180 to -160 dBm/Hz, g_0 -50 to -30 dB, h 2-4, beta 0-1.
DEFAULT_RANGE = (
    "bandwidth_max=1e5:5e6:log,f_server=5e8:2e10:log,efficiency=0.1:1:log,"
    "tx_power=0.01:1:log,noise_psd=1e-21:1e-19:log,path_loss_const=1e-5:1e-3:log,"
    "path_loss_exp=2:4:lin,beta=0:1:lin")
#: Fields that shape only the *sampling* of tasks (Section V), not the decision for given
#: tasks: never checked against the reference cell.
SAMPLING_ONLY = ("n_users", "deadline_max", "distance_min", "distance_max", "f_local_min",
                 "f_local_max")
SCALES = ("log", "lin")


class FieldRange(NamedTuple):
    """One ranged field: its name, ``[lo, hi]`` (SI) and scale ("log" or "lin")."""

    name: str
    lo: float
    hi: float
    scale: str


def parse_range(text: str) -> tuple[FieldRange, ...]:
    """The ranges of ``"name=lo:hi:scale,..."`` (``"default"``: :data:`DEFAULT_RANGE`;
    ``""``: none).  ``ValueError`` naming the bad entry (unknown field, lo > hi,
    a log range not above 0, unknown scale)."""
    text = DEFAULT_RANGE if text == "default" else text
    out = []
    known = {f.name for f in dataclasses.fields(SystemParams)} - {"n_users"}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        try:
            name, rest = entry.split("=")
            lo, hi, scale = rest.split(":")
            lo, hi = float(lo), float(hi)
        except ValueError as e:
            raise ValueError(f"cell range entry {entry!r} is not name=lo:hi:log|lin") from e
        if name not in known:
            raise ValueError(f"cell range entry {entry!r}: unknown SystemParams field {name!r}")
        if scale not in SCALES or not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ValueError(f"cell range entry {entry!r}: need finite lo < hi and a scale "
                             f"in {SCALES}")
        if scale == "log" and lo <= 0:
            raise ValueError(f"cell range entry {entry!r}: a log range needs lo > 0")
        if name in [r.name for r in out]:
            raise ValueError(f"cell range names {name!r} twice")
        out.append(FieldRange(name, lo, hi, scale))
    return tuple(out)


def format_range(ranges) -> str:
    """The canonical text of ``ranges`` (inverse of :func:`parse_range`)."""
    return ",".join(f"{r.name}={r.lo!r}:{r.hi!r}:{r.scale}" for r in ranges)


def normalize_range(text: str) -> str:
    """``text`` parsed and re-formatted ("default" expanded; "" stays "")."""
    return format_range(parse_range(text)) if text else ""


def _unit(value: Array, r: FieldRange) -> Array:
    """``value`` mapped to [0, 1] over ``r`` (log or linear), dimensionless."""
    v = jnp.asarray(value, jnp.float32)
    if r.scale == "log":
        return (jnp.log(v) - math.log(r.lo)) / (math.log(r.hi) - math.log(r.lo))
    return (v - r.lo) / (r.hi - r.lo)


def cell_features(sys_params: SystemParams, ranges) -> Array:
    """Cell features: each ranged field mapped to [-1, 1] over its range, ``(..., C)``.

    ``C = len(ranges)``; ``...`` is the shape of the fields (scalars: ``(C,)``;
    one cell per scenario: ``(B, C)``).  Log-scaled fields use ``log v``,
    linear ones ``v``; values outside the range extrapolate (beyond +-1).
    Dimensionless.
    """
    vals = [_unit(getattr(sys_params, r.name), r) for r in ranges]
    return 2.0 * jnp.stack(jnp.broadcast_arrays(*vals), axis=-1) - 1.0


def sample_cells(key: Array, base: SystemParams, batch: int, ranges,
                 edge_share: float = 0.0) -> SystemParams:
    """``batch`` cells: ``base`` with each ranged field drawn per cell (log-uniform on a
    "log" range, uniform on a "lin" one); every float leaf has shape ``(batch,)`` (ready
    for :func:`over_scenarios`).  SI units as in :class:`SystemParams`.

    ``edge_share`` (static, in [0, 1]): each field of each cell is, with this
    probability, set to one end of its range instead (either end with equal
    chance), so that the ends, which uniform draws reach with probability 0
    and whose neighbourhood they cover from one side only, are trained on
    too.  0 (the default) draws exactly as without it.
    """
    if not 0.0 <= edge_share <= 1.0:
        raise ValueError(f"edge_share must be in [0, 1], got {edge_share}")
    cells = broadcast_cells(base, batch)
    ks = jax.random.split(key, max(len(ranges), 1))
    draws = {}
    for k, r in zip(ks[:len(ranges)], ranges, strict=True):
        u = jax.random.uniform(k, (batch,))
        if edge_share:
            e = jax.random.uniform(jax.random.fold_in(k, 1), (batch,))
            u = jnp.where(e < edge_share, jnp.where(e < 0.5 * edge_share, 0.0, 1.0), u)
        if r.scale == "log":
            draws[r.name] = jnp.exp(math.log(r.lo) + u * (math.log(r.hi) - math.log(r.lo)))
        else:
            draws[r.name] = r.lo + u * (r.hi - r.lo)
    return cells.replace(**draws)


def broadcast_cells(sys_params: SystemParams, batch: int) -> SystemParams:
    """``sys_params`` with every float leaf broadcast to ``(batch,)`` (one cell per scenario)."""
    return jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.float32), (batch,)),
                        sys_params)


def is_per_scenario(sys_params: SystemParams) -> bool:
    """Whether ``sys_params`` holds one cell per scenario (float leaves of shape ``(B,)``)."""
    return jnp.ndim(sys_params.bandwidth_max) > 0


def over_scenarios(fn, sys_params: SystemParams, *args):
    """``fn(cell, *args)`` where each scenario has its own cell.

    ``sys_params``: float leaves ``(B,)`` (:func:`sample_cells`); ``args``:
    pytrees whose leaves have a leading ``B`` (None allowed).  ``fn`` is
    called (under ``vmap``) with one cell and a batch of one scenario, and
    its outputs get the leading ``B`` back.  With scalar ``sys_params`` it is
    ``fn(sys_params, *args)``.
    """
    if not is_per_scenario(sys_params):
        return fn(sys_params, *args)

    def one(sp, *a):
        out = fn(sp, *jax.tree.map(lambda v: v[None], a))
        return jax.tree.map(lambda v: v[0], out)

    return jax.vmap(one)(sys_params, *args)


def out_of_range(sys_params: SystemParams, ranges, reference: SystemParams) -> list[str]:
    """Host-side: one line per field of ``sys_params`` outside the trained cells.

    A ranged field is outside when any of its values (one per scenario, or
    one) leaves ``[lo, hi]``; any other field (except :data:`SAMPLING_ONLY`)
    when it differs from ``reference`` (rtol 1e-6): the networks were trained
    at that value only.  Each line names the field, the value(s) and the
    range, e.g. ``"f_server = 3e+10 outside the trained range [5e+08, 2e+10]"``.
    """
    ranged = {r.name: r for r in ranges}
    lines = []
    for f in dataclasses.fields(SystemParams):
        if f.name in SAMPLING_ONLY:
            continue
        v = np.asarray(getattr(sys_params, f.name), np.float64)
        if f.name in ranged:
            r = ranged[f.name]
            lo, hi = r.lo, r.hi
            bad = (v < lo * (1 - 1e-6)) | (v > hi * (1 + 1e-6)) if r.scale == "log" else (
                (v < lo - 1e-9 * abs(hi - lo)) | (v > hi + 1e-9 * abs(hi - lo)))
        else:
            lo = hi = float(getattr(reference, f.name))
            bad = ~np.isclose(v, lo, rtol=1e-6, atol=0.0)
        if np.any(bad):
            shown = v[bad].ravel()
            val = f"{shown[0]:.6g}" + (f" (and {shown.size - 1} more)" if shown.size > 1 else "")
            lines.append(f"{f.name} = {val} outside the trained range [{lo:.6g}, {hi:.6g}]")
    return lines


def read_cell(path=None, fields: dict | None = None) -> dict:
    """The cell an engineer states: ``{field: value}`` of the JSON file ``path`` (an
    object of numbers, SystemParams fields in SI units), then ``fields`` (non-None values
    override it), checked by :func:`dynmec_jax.system.params_from_overrides`.
    ``ValueError`` with one line naming the file or field otherwise (``n_users`` is
    refused: N comes from the scenario)."""
    cell: dict = {}
    if path is not None:
        try:
            cell = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"--cell={path}: {e}") from None
        if not isinstance(cell, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in cell.values()):
            raise ValueError(f"--cell={path}: expected a JSON object of numbers, "
                             "{\"field\": value, ...}")
        if "n_users" in cell:
            raise ValueError(f"--cell={path}: n_users is not a cell field (N comes from "
                             "the scenario)")
    cell.update({k: v for k, v in (fields or {}).items() if v is not None})
    try:
        params_from_overrides(cell)
    except ValueError as e:
        raise ValueError(f"cell: {e}") from None
    return cell
