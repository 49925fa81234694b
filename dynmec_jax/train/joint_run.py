"""A run of Algorithm 1 from the command line: chunked, with curves, resumable.

:func:`train_and_save` (``dynmec-train-joint``) trains ``config.n_seeds``
seeds side by side through the one training loop of
:mod:`dynmec_jax.train.loop`: policy pre-training (Algorithm 1, lines 2-6)
then the episodes (lines 7-16), in compiled chunks of ``train.chunk``
steps, each followed on the host by the finiteness check, the curves
(``WORKDIR/metrics.jsonl``, TensorBoard events, ``curves.png``) and an orbax
checkpoint.  The chunks give the numbers of the one-program
:func:`dynmec_jax.train.joint.make_train` up to float rounding (the per-step
keys are the same slices; the compiled chunks fuse differently), and a
resumed run gives exactly those of an uninterrupted one.  After every episode
chunk the seeds are scored on fixed validation scenarios: the mean cost C
of their greedy decisions (Eq. 24-25, inference delay included), its gap to
the optimum of those scenarios (certified, :mod:`dynmec_jax.baselines.exact`,
computed once; the exhaustive one at N <= 12 when pyscipopt is missing) and
to greedy + KKT.  The seed with the lowest validation cost is saved as the
pipeline (``WORKDIR/pipeline``); with more than one seed, every seed is also
saved as ``WORKDIR/seeds/<i>/pipeline`` (its record's ``seed`` and
``gap_to_greedy`` its own), for the spread across seeds.  Units: SI; costs as in Eq. 24-25.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import evaluation, files, pipeline
from dynmec_jax.baselines import exact, exhaustive
from dynmec_jax.train import joint, loop
from dynmec_jax.train.config import JointConfig

#: Validation scenarios that pick the exported seed: ``key(eval.seed + VALIDATION_OFFSET)``
#: (disjoint from the held-out evaluation of ``eval.seed``).
VALIDATION_OFFSET = 1
#: A scheduler that offloads (nearly) nothing or everything has collapsed, if the greedy
#: offloads a share inside this range (the warning of :func:`train_and_save`).
COLLAPSE_RANGE = (0.1, 0.9)
#: ``--export_pretrained`` refuses a pipeline whose validation cost (Eq. 24-25) is more than
#: this fraction above greedy + KKT's on the same scenarios (a model this far behind the
#: heuristic it should match has not learnt to schedule).
EXPORT_MAX_GAP_TO_GREEDY = 0.10


def load_allocator(config: JointConfig):
    """The run's fixed allocator: ``config.allocator`` ("" = the shipped default)."""
    return allocator_lib.load_allocator(config.allocator or None)


def validation(config: JointConfig, batch: int):
    """``(scn, valid)``: ``batch`` validation scenarios of the training distribution (mixed N
    padded, ``valid`` marks the real users; None at one N)."""
    tc = dataclasses.replace(config.train, batch=batch)
    return joint.sample_training_scenarios(
        tc, jax.random.key(config.eval.seed + VALIDATION_OFFSET), config.system)


def reference_costs(config: JointConfig, scn, valid) -> dict:
    """Total sum_i C_i over the curve scenarios of the optimum (a bound: no inference delay)
    and of greedy + KKT (its own operations charged), computed once; ``{"optimum": None}``
    when no optimum can be computed (N > 12 without pyscipopt)."""
    sp = config.system.replace(n_users=scn.shape[-1])
    sc = evaluation.score_result(scn, evaluation.greedy(scn, sp), sp)
    real = jnp.ones(scn.shape, bool) if valid is None else valid   # padded users cost 0
    out = {"greedy": float(jnp.sum(jnp.where(real, sc.cost, 0.0))), "optimum": None}
    try:
        out["optimum"] = float(np.sum(exact.exact_optimum(scn, sp).cost))
    except ImportError:   # pyscipopt (the "exact" extra) is missing
        if scn.shape[-1] <= exhaustive.MAX_USERS:
            out["optimum"] = float(jnp.sum(exhaustive.exhaustive_optimum(
                scn, sp, objective="cost", allocation="energy_aware").value))
    return out


def _program(config: JointConfig, alloc):
    """``(init(key) -> state, keys(key) -> (pre_keys, ep_keys), chunk(state, keys, lo, hi))``
    of one seed: the parts of :func:`dynmec_jax.train.joint.make_train`."""
    tc = config.train
    pretrain = joint.make_pretrain(tc, alloc)
    start, run = joint.joint_parts(tc, alloc)
    n_pre = tc.pretrain_steps if tc.variant != "fixed" else 0

    warm = None
    if tc.init_from:
        warm = pipeline.load_pipeline(None if tc.init_from == "pretrained" else tc.init_from)

    def init(key):
        k_pre, k_sched, _ = jax.random.split(key, 3)
        params, opts = pretrain.init(jax.random.split(k_pre)[0])
        pol, pol_opt = params["policy"], opts["policy"]
        if warm is not None:
            pol = joint.warm_start(pol, warm.policy_params)
            pol_opt = joint.policy_optimizer(tc).init(pol)
        state = start(k_sched, pol, pol_opt)
        if warm is not None:
            s = joint.warm_start(state.scheduler, warm.scheduler_params)
            state = state._replace(scheduler=s, scheduler_opt=joint.scheduler_optimizer(tc).init(s))
        return state

    def keys(key):
        k_pre, _, k_eps = jax.random.split(key, 3)
        pre = jax.random.split(jax.random.split(k_pre)[1], max(n_pre, 1))
        return pre, jax.random.split(k_eps, tc.episodes)

    def pre_chunk(state, pre_keys):
        (p, o), m = pretrain.run(({"policy": state.policy}, {"policy": state.policy_opt}),
                                 pre_keys, config.system)
        m = {f"pretrain/{k}": v for k, v in m["policy"].items()}
        return state._replace(policy=p["policy"], policy_opt=o["policy"]), m

    def ep_chunk(state, ep_keys):
        state, m = run.keys(state, ep_keys, config.system)
        return state, {f"joint/{k}": v for k, v in m.items()}

    return init, keys, pre_chunk, ep_chunk, n_pre


def train_and_save(config: JointConfig, workdir, progress: bool = True
                   ) -> tuple[pipeline.Pipeline, dict]:
    """The run of the module doc; returns ``(pipeline, record)`` and writes
    ``workdir/pipeline``, ``workdir/train_joint.json`` and the curves."""
    workdir = pathlib.Path(workdir)
    files.claim_workdir(config, workdir)
    alloc = load_allocator(config)
    tc = config.train
    pipeline.build_models(tc, alloc)   # a fixed sub-network outside the allocator raises here
    seeds = files.seed_keys(config.seed, config.n_seeds)
    init, keys_of, pre_chunk, ep_chunk, n_pre = _program(config, alloc)
    pre_keys, ep_keys = jax.vmap(keys_of)(seeds)
    run_pre = jax.jit(jax.vmap(pre_chunk))
    run_ep = jax.jit(jax.vmap(ep_chunk))
    timing = {"train_s": 0.0}

    def chunk_fn(state, lo, hi):
        t0 = time.perf_counter()
        if hi <= n_pre:
            out = run_pre(state, pre_keys[:, lo:hi])
        else:
            out = run_ep(state, ep_keys[:, lo - n_pre:hi - n_pre])
        jax.block_until_ready(out)
        timing["train_s"] += time.perf_counter() - t0
        return out

    curve_scn, curve_valid = validation(config, config.eval.curve_batch)
    ref = reference_costs(config, curve_scn, curve_valid)
    n_real = float(np.sum(curve_valid)) if curve_valid is not None else curve_scn.size.size
    score = _seed_scores(config, alloc, curve_scn, curve_valid)

    def evaluate(state, hi):
        if hi <= n_pre:
            return {}
        ev = score(state)
        total = np.asarray(ev["cost"], np.float64) * n_real   # sum_i C_i over the scenarios
        out = {"validation/cost": ev["cost"], "validation/offload_fraction":
               ev["offload_fraction"], "validation/gap_to_greedy": total / ref["greedy"] - 1}
        if ref["optimum"] is not None:
            out["validation/gap_to_optimum"] = total / ref["optimum"] - 1
        return out

    bounds = (loop.chunk_bounds(n_pre, tc.chunk)
              + [(n_pre + lo, n_pre + hi) for lo, hi in loop.chunk_bounds(tc.episodes, tc.chunk)])
    state, history = loop.run_chunks(
        jax.jit(jax.vmap(init))(seeds), chunk_fn, bounds, workdir,
        params_of=lambda st: (st.scheduler, st.policy), evaluate=evaluate,
        desc=f"Algorithm 1 x{config.n_seeds} seeds",
        show="validation/gap_to_optimum" if ref["optimum"] is not None else "joint/cost",
        progress=progress)
    return _select_and_save(config, alloc, state, history, timing["train_s"], ref, workdir)


def _seed_scores(config, alloc, scn, valid):
    """:func:`joint.evaluate_state` of every seed of a stacked state on ``scn``, as one
    compiled program (run op by op, each of its hundreds of operations compiles alone).
    The scenarios are arguments of that program, not constants captured by it: as
    constants, XLA folds the allocator's layers over them at compile time (measured:
    8-9 s per layer, with slow-operation warnings)."""
    run = jax.jit(jax.vmap(lambda st, x, v: joint.evaluate_state(config.train, alloc, st, x,
                                                                 config.system, v),
                           in_axes=(0, None, None)))
    return lambda state: run(state, scn, valid)


def _select_and_save(config, alloc, state, history, wall, ref, workdir):
    tc = config.train
    val, valid = validation(config, config.eval.batch)
    ev = _seed_scores(config, alloc, val, valid)(state)
    per_seed = [{k: float(v[i]) for k, v in ev.items()} for i in range(config.n_seeds)]
    try:   # NaN-safe: a seed with a non-finite score or weights is never picked
        best = loop.best_seed([r["cost"] for r in per_seed],
                              [loop.all_finite(joint.unstack(state, i))
                               for i in range(config.n_seeds)])
    except ValueError:
        raise loop.DivergenceError(tc.pretrain_steps + tc.episodes, "the validation cost") \
            from None
    sp = config.system.replace(n_users=val.shape[-1])
    g = jax.jit(evaluation.greedy)(val, sp)
    real = np.ones(val.shape, bool) if valid is None else np.asarray(valid)
    g_share = float(np.asarray(g.decision.offload)[real].mean())
    g_cost = float(np.asarray(jax.jit(evaluation.score_result)(val, g, sp).cost,
                              np.float64)[real].mean())
    warnings = []
    share = per_seed[best]["offload_fraction"]
    if (share <= 1e-3 or share >= 1 - 1e-3) and COLLAPSE_RANGE[0] <= g_share <= COLLAPSE_RANGE[1]:
        warnings.append(f"the scheduler collapsed: it offloads {100 * share:.1f}% of the "
                        f"validation tasks where greedy + KKT offloads {100 * g_share:.1f}%; "
                        "check the learning rates and the budget")
        logging.warning(warnings[-1])
    last = {k: v for k, v in history[-1].items() if k != "per_seed"} if history else {}
    record = {"train_wall_time_s": wall, "n_seeds": config.n_seeds, "exported_seed": best,
              "validation": per_seed, "greedy_offload_fraction": g_share,
              "greedy_cost": g_cost, "gap_to_greedy": per_seed[best]["cost"] / g_cost - 1,
              "curve_references": ref, "last_chunk": last, "warnings": warnings,
              "config": files.to_jsonable(config), "versions": files.versions()}
    pipe = pipeline.make_pipeline(tc, alloc, joint.unstack(state, best), record)
    pipeline.save_pipeline(pipe, workdir / "pipeline")
    if config.n_seeds > 1:   # every seed, for the spread across seeds (workdir/seeds/i/pipeline)
        for i in range(config.n_seeds):
            rec = dict(record, seed=i, gap_to_greedy=per_seed[i]["cost"] / g_cost - 1)
            pipeline.save_pipeline(pipeline.make_pipeline(tc, alloc, joint.unstack(state, i), rec),
                                   workdir / "seeds" / str(i) / "pipeline")
    files.write_json(record, workdir / "train_joint.json", indent=1)
    return pipe, record


def export_pretrained(workdir, dst=None) -> pathlib.Path:
    """Copies ``workdir/pipeline`` over the shipped default (``dst``, default
    :data:`dynmec_jax.pipeline.PRETRAINED_DIR`) after checking it.

    Refused (``ValueError`` naming the path) if a weight (scheduler, policy or
    allocator) is not finite, or if the record's ``gap_to_greedy`` (the
    exported seed's validation cost over greedy + KKT's, minus 1) is missing,
    not finite or above :data:`EXPORT_MAX_GAP_TO_GREEDY`.  Returns ``dst``.
    """
    src = pathlib.Path(workdir) / "pipeline"
    pipe = pipeline.load_pipeline(src)
    gap = json.loads(pipe.record or "{}").get("gap_to_greedy")
    loop.check_export(src, (pipe.scheduler_params, pipe.policy_params, pipe.allocator.params),
                      "validation gap to greedy + KKT (gap_to_greedy)", gap,
                      EXPORT_MAX_GAP_TO_GREEDY)
    dst = pipeline.PRETRAINED_DIR if dst is None else pathlib.Path(dst)
    pipeline.save_pipeline(pipe, dst)
    return dst
