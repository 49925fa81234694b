"""The early exit of the set scheduler's last pass: its threshold, chosen on validation.

A set scheduler with ``gate`` > 0 (:class:`dynmec_jax.nets.scheduler.SetScheduler`,
beyond the paper) runs its last pass only for the users whose logit after the
earlier passes is within +-gate of 0.  Every task waits for the scheduler
(Eq. 34-35), so the users that exit early cut every task's inference delay,
while the undecided ones, where the last pass changes decisions, still get
it.  The gate changes decisions and M_Sced, not the weights: it is chosen
after training.

* :func:`validation_set`: held-out scenarios drawn as the pipeline was trained
  (N over its mixed range, one cell per scenario over its trained range).
* :func:`gate_costs`: per candidate gate, the mean cost with the pipeline's own
  inference delay relative to the cost with no early exit (gate 0), and the
  share of users that ran the last pass.
* :func:`tune_gate`: the candidate with the lowest mean relative cost, and the
  pipeline with it.

Units: costs as Eq. 24-25 (dimensionless ratios here); the gate is in logits.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import accounting, evaluation, pipeline, system
from dynmec_jax import cell as cell_lib

Array = Any

#: Candidate gates [logits] of ``dynmec-tune-gate`` (0: no early exit).
DEFAULT_GATES = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def with_gate(pipe: pipeline.Pipeline, gate: float) -> pipeline.Pipeline:
    """``pipe`` with the early exit ``gate`` [logits] (0: none); the weights unchanged.
    ``ValueError`` if its scheduler has fewer than 2 passes or is not the set scheduler."""
    return pipe.replace(spec=dataclasses.replace(pipe.spec, scheduler_gate=float(gate)))


def validation_set(pipe: pipeline.Pipeline, batch: int, seed: int):
    """``(scn, valid, cells)``: ``batch`` held-out scenarios of Section V's task distribution,
    N ~ U{n_users_min, ..., n_users} padded to ``spec.n_users`` (``valid`` the real
    users; all real without mixed N), each in its own cell drawn uniformly over the
    pipeline's trained range (log-uniform on a log range; the pipeline's own
    ``sys_params`` when it was trained at one cell)."""
    spec = pipe.spec
    k_scn, k_cell = jax.random.split(jax.random.key(seed))
    sp = pipe.sys_params.replace(n_users=spec.n_users)
    if spec.n_users_min is None:
        scn = system.sample_scenarios(k_scn, sp, batch)
        valid = jnp.ones(scn.size.shape, bool)
    else:
        scn, valid = system.sample_mixed_scenarios(k_scn, sp, batch, spec.n_users_min)
    cells = (cell_lib.sample_cells(k_cell, sp, batch, spec.cell_ranges) if spec.cell
             else cell_lib.broadcast_cells(sp, batch))
    return scn, valid, cells


@jax.jit
def _costs(pipe, scn, valid, cells):
    """Per scenario: sum_i C_i with the pipeline's inference delays (Eq. 24-25, 34-35),
    and M_Sced [MACs] (from the local inference delay lambda M_Sced / f_ser, Eq. 34)."""
    d = pipeline.decide_body(pipe, scn, cells, valid=valid)
    res = evaluation.MethodResult(d, pipe.allocator.macs(d.width, d.depth,
                                                         jnp.sum(d.offload, -1)))
    cost = cell_lib.over_scenarios(lambda sp, s, r: evaluation.scenario_metrics(s, r, sp).cost,
                                   cells, scn, res)
    return cost, d.inference_delay_local * cells.f_server / cells.efficiency


def gate_costs(pipe: pipeline.Pipeline, gates: Sequence[float], scn, valid, cells) -> list[dict]:
    """Per gate of ``gates`` [logits]: ``{"gate", "relative_cost", "ci", "last_pass_share"}``:
    the mean over the scenarios of sum_i C_i (with the pipeline's own inference delay,
    Eq. 34-35) over that with no early exit (gate 0), its 95% CI half-width, and the
    share of the real users whose last scheduler pass ran (from M_Sced,
    :func:`dynmec_jax.accounting.gated_scheduler_macs`)."""
    ref, m_full = (np.asarray(a, np.float64) for a in _costs(with_gate(pipe, 0.0), scn,
                                                             valid, cells))
    n = np.asarray(jnp.sum(valid, -1), np.float64)
    s = pipe.models.scheduler
    last = accounting.set_scheduler_pass_macs(s.hidden, s.n_layers, s.passes, counts=s.counts,
                                              n_cell=s.n_cell)[-1]
    out = []
    for g in gates:
        cost, macs = (np.asarray(a, np.float64) for a in _costs(with_gate(pipe, g), scn,
                                                                valid, cells))
        skipped = (m_full - macs) / last      # users that exited before the last pass
        r = cost / ref
        out.append({"gate": float(g), "relative_cost": float(np.mean(r)),
                    "ci": float(1.96 * np.std(r, ddof=1) / np.sqrt(r.size)),
                    "last_pass_share": float(np.sum(n - skipped) / np.sum(n))})
    return out


def tune_gate(pipe: pipeline.Pipeline, gates: Sequence[float] = DEFAULT_GATES,
              batch: int = 4096, seed: int = 4242) -> tuple[pipeline.Pipeline, dict]:
    """``(pipe with the best gate, record)``: the gate of ``gates`` whose mean relative cost
    (:func:`gate_costs` on :func:`validation_set`) is lowest; ``record`` = ``{"gate",
    "table", "batch", "seed"}`` (also stored in the pipeline's record under
    ``"scheduler_gate_tuning"``).  ``ValueError`` for a pipeline whose scheduler cannot
    exit early (fewer than 2 passes, or the paper's scheduler), or for a negative gate."""
    gates = sorted({float(g) for g in gates} | {0.0})
    if not all(g >= 0 for g in gates):     # NaN too
        raise ValueError(f"gates must be >= 0, got {gates}")
    with_gate(pipe, 1.0)   # raises for a scheduler without a last pass to skip
    scn, valid, cells = validation_set(pipe, batch, seed)
    table = gate_costs(pipe, gates, scn, valid, cells)
    best = min(table, key=lambda r: r["relative_cost"])
    record = {"gate": best["gate"], "table": table, "batch": batch, "seed": seed}
    rec = json.loads(pipe.record or "{}")
    rec["scheduler_gate_tuning"] = record
    return with_gate(pipe, best["gate"]).replace(record=json.dumps(rec)), record
