"""The reproduction of Section V (Figs. 4-12, Table I) as one resumable program.

:func:`run` does, in order, each stage skipping work already stored under
``workdir``:

1. **Allocators** (Section IV.A-B): ``cfg.allocator.n_seeds`` MoE allocators
   trained side by side with progressive shrinking on the default system
   (:func:`dynmec_jax.allocation.train_and_evaluate`, orbax-resumable), and
   as many static models (Section V.A).  Sweep seed ``s`` uses allocator seed
   ``s % n_seeds``: the allocator is trained once, on the default
   distribution, and shared by every sweep point (the paper trains one
   allocation model and deploys it under every condition).
2. **Fig. 4** from the allocators' evaluation against the optimum.
3. **Fig. 12**: :func:`dynmec_jax.allocation.training_cost` per (case,
   method, seed), one result record each.
4. **Sweeps** (Figs. 5-11): one :func:`dynmec_jax.sweep.run_sweep` over the
   union of the data-amount, task-complexity and server-power axes (same
   shapes: one compiled program, ``vmap`` over points x seeds, sharded over
   the devices), and one per number of users N (a new shape each).  Every
   item (point, seed) pre-trains the three policies of Section V.A (full,
   fix width, fix depth; Algorithm 1, lines 2-6), evaluates the V.A methods
   with every task offloaded, then trains PMRL (Algorithm 1 from the
   pre-trained policy) and RL (the scheduler with the largest fixed
   allocator) and evaluates the V.B methods on scenarios where users have
   computing power.  All methods of an item see the same held-out scenarios.
5. **Figures** (``results/fig*.png`` + ``.json``), ``results/claims.md`` (the
   claims of :mod:`dynmec_jax.experiments.claims`) and ``results/summary.json``.

Units: SI inside; figures show ms, kbit, GHz, MMACs (labelled).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dynmec_jax import (
    allocation,
    evaluation,
    plotting,
    policy,
    scheduling,
    sweep,
    system,
)
from dynmec_jax.baselines import exhaustive
from dynmec_jax.experiments import claims
from dynmec_jax.experiments.names import (
    AXES,
    LABEL_SERIES,
    METRICS,
    NN_METHODS,
    NOT_PLOTTED,
    PANEL_ORDER,
    PMRL_PAPER,
    VA_METHODS,
    VB_METHODS,
    VB_OPTIMUM,
)
from dynmec_jax.system import SystemParams

Array = Any

#: The paper's scheduler network and estimator (Eq. 21-27), trained as PMRL_PAPER.
PAPER_SCHEDULER = {"scheduler": "paper", "advantage": "raw", "estimator": "eq23", "entropy": 0.0,
                   "clip_norm": 0.0, "scheduler_hidden": 32, "scheduler_layers": 1,
                   "scheduler_passes": 1}
VARIANTS = {"PolicyMoE": "full", "Fix width MoE": "fix_width", "Fix depth MoE": "fix_depth"}


# ----------------------------------------------------------------------------
# Config checks
# ----------------------------------------------------------------------------

def validate_config(cfg) -> None:
    """Host-side checks of a reproduction config; ``ValueError`` naming the field."""
    allocation.validate_config(cfg.allocator)
    seeds = list(cfg.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(int(s) < 0 for s in seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
    for name in AXES + ("n_users",):
        vals = list(cfg.sweeps[name])
        if not vals or any(not v > 0 for v in vals):
            raise ValueError(f"sweeps.{name} must be a non-empty list of positive values, "
                             f"got {vals}")
    if any(int(n) != n or n < 1 for n in cfg.sweeps.n_users):
        raise ValueError("sweeps.n_users must be positive integers, got "
                         f"{list(cfg.sweeps.n_users)}")
    for sec, fields in (("va", ("pretrain_steps", "batch", "eval_batch", "ga_batch",
                                "ga_iters", "ga_pop_factor")),
                        ("vb", ("episodes", "batch", "eval_batch"))):
        for f in fields:
            if int(cfg[sec][f]) < 1:
                raise ValueError(f"{sec}.{f} must be >= 1, got {cfg[sec][f]}")
    if cfg.va.ga_batch > cfg.va.eval_batch or cfg.va.ga_batch > cfg.vb.eval_batch:
        raise ValueError("va.ga_batch must not exceed va.eval_batch and vb.eval_batch")
    if not cfg.va.policy_lr > 0 or not cfg.vb.scheduler_lr > 0:
        raise ValueError("va.policy_lr and vb.scheduler_lr must be > 0")
    for name, allowed in (("estimator", scheduling.ESTIMATORS),
                          ("scheduler", scheduling.SCHEDULERS),
                          ("advantage", scheduling.ADVANTAGES)):
        if cfg.vb[name] not in allowed:
            raise ValueError(f"vb.{name} must be one of {allowed}, got {cfg.vb[name]!r}")
    if not cfg.vb.entropy >= 0 or not cfg.vb.clip_norm >= 0:
        raise ValueError("vb.entropy and vb.clip_norm must be >= 0")
    for f in ("scheduler_hidden", "scheduler_layers", "scheduler_passes"):
        if int(cfg.vb[f]) < 1:
            raise ValueError(f"vb.{f} must be >= 1, got {cfg.vb[f]}")
    if int(cfg.static.steps) < 1:
        raise ValueError(f"static.steps must be >= 1, got {cfg.static.steps}")
    f12 = cfg.fig12
    for c in f12.cases:
        if c not in ("full", "width", "depth"):
            raise ValueError(f"fig12.cases must be among full/width/depth, got {c!r}")
    if not 0 < f12.target < 1 or int(f12.eval_every) < 1 or int(f12.batch) < 1:
        raise ValueError("fig12.target must be in (0, 1); fig12.eval_every, batch >= 1")
    if int(cfg.chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {cfg.chunk_size}")
    system.validate(system.params_from_overrides(cfg.allocator.system.to_dict()))


def base_params(cfg) -> SystemParams:
    """The default system of the run (Table II with ``cfg.allocator.system`` overrides)."""
    return system.params_from_overrides(cfg.allocator.system.to_dict())


# ----------------------------------------------------------------------------
# Stage 1: allocators
# ----------------------------------------------------------------------------

def static_config(cfg):
    """The allocator config of the static model (Section V.A): ``model.kind = "static"``."""
    c = copy.deepcopy(cfg.allocator)
    c.model.kind = "static"
    c.train.phase_steps = (int(cfg.static.steps), 0, 0, 0)
    return c


def _load_seeds(workdir: pathlib.Path, n: int) -> list:
    return [allocation.load_allocator(workdir / "seeds" / f"seed_{i}") for i in range(n)]


def allocators_ready(cfg, workdir) -> bool:
    """Whether the MoE and static allocators of ``cfg`` are trained under ``workdir``."""
    workdir = pathlib.Path(workdir)
    return all((workdir / f"allocator_{name}" / "allocator_eval.json").is_file()
               and all((workdir / f"allocator_{name}" / "seeds" / f"seed_{i}" / "params.msgpack")
                       .is_file() for i in range(int(c.n_seeds)))
               for name, c in (("moe", cfg.allocator), ("static", static_config(cfg))))


def train_allocators(cfg, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Trains (or resumes) the MoE and static allocators; returns their records and models.

    Returns ``{"moe": record, "static": record, "moe_models": [...],
    "static_models": [...], "moe_wall_s", "static_wall_s"}``.
    """
    out = {}
    for name, c in (("moe", cfg.allocator), ("static", static_config(cfg))):
        wd = workdir / f"allocator_{name}"
        done = wd / "allocator_eval.json"
        n = int(c.n_seeds)
        allocation.claim_workdir(c, wd)  # a different config in wd raises ValueError
        if done.is_file() and all((wd / "seeds" / f"seed_{i}" / "params.msgpack").is_file()
                                  for i in range(n)):
            rec = json.loads(done.read_text())
            logging.info("allocators %s: reusing %s", name, wd)
        else:
            t0 = time.perf_counter()
            rec = allocation.train_and_evaluate(c, wd, progress=progress)
            logging.info("allocators %s: %.1f s", name, time.perf_counter() - t0)
        out[name] = rec
        out[f"{name}_models"] = _load_seeds(wd, n)
    return out


def stack_allocators(models: list):
    """Stacks allocators of one architecture along a new leading axis (a pytree).

    The static ``record`` (JSON text) of the first is kept for all.
    """
    models = [m.replace(record=models[0].record) for m in models]
    return jax.tree.map(lambda *a: jnp.stack(a), *models)


# ----------------------------------------------------------------------------
# Stage 2: Fig. 4
# ----------------------------------------------------------------------------

def fig04_data(moe_record: dict) -> dict:
    """Fig. 4 numbers from the allocator evaluation record (all tasks offloaded).

    ``wd``: importance-weighted delay sum (Eq. 18-20 objective, dimensionless)
    per (width, depth), mean and 95% CI over allocator seeds; ``wd_infer``:
    the same with the inference delay lambda M_Alloc / f_ser added to every
    task's delay (Fig. 4(b)); ``optimal_wd``: the KKT optimum's.
    """
    per = moe_record["per_seed"]
    wd = np.asarray([r["all"]["weighted_delay"] for r in per])        # (S, K, L)
    wdi = np.asarray([r["all"]["weighted_delay_infer"] for r in per])
    gap = np.asarray([r["all"]["gap"] for r in per])
    opt = [r["all"]["optimal_weighted_delay"] for r in per]

    def agg(a):
        cells = [[plotting.aggregate(a[:, k, d]) for d in range(a.shape[2])]
                 for k in range(a.shape[1])]
        return {"mean": [[c["mean"] for c in row] for row in cells],
                "ci": [[c["ci"] for c in row] for row in cells]}

    K, L = wd.shape[1:]
    return {"width": list(range(1, K + 1)), "depth": list(range(1, L + 1)),
            "wd": agg(wd), "wd_infer": agg(wdi), "gap": agg(gap),
            "optimal_wd": float(np.mean(opt)), "n_seeds": len(per),
            "inference_delay_s": per[0]["all"]["inference_delay_s"]}


# ----------------------------------------------------------------------------
# Stage 3: Fig. 12
# ----------------------------------------------------------------------------

def fig12_config(cfg):
    """The allocator config used for the training-cost runs (``fig12.batch``)."""
    c = copy.deepcopy(cfg.allocator)
    c.train.batch = int(cfg.fig12.batch)
    return c


def run_fig12(cfg, store: sweep.ResultStore, progress: bool = True) -> list[dict]:
    """Training cost (Fig. 12) per (case, method, seed); each a stored record."""
    from tqdm.auto import tqdm

    f = cfg.fig12
    c = fig12_config(cfg)
    conf = {"allocator": c.to_dict(), "fig12": f.to_dict()}
    items = [(ci, mi, s) for ci in range(len(f.cases)) for mi in range(2) for s in f.seeds]
    records = []
    for ci, mi, s in tqdm(items, desc="Fig. 12 training cost", unit="run", disable=not progress):
        point = {"case": ci, "method": mi}
        rec = store.try_read("fig12", point, s)
        if rec is None or rec.get("config") != sweep.to_jsonable(conf):
            t0 = time.perf_counter()
            r = allocation.training_cost(c, f.cases[ci], ("progressive", "traditional")[mi], s,
                                         target=f.target, eval_every=f.eval_every,
                                         max_steps=f.max_steps, eval_batch=f.eval_batch)
            rec = store.write("fig12", point, s,
                              {"steps": r["steps"], "wall_time_s": r["wall_time_s"],
                               "reached": float(r["reached"]),
                               "final_max_gap": r["final_max_gap"]},
                              config=conf, wall_time_s=time.perf_counter() - t0,
                              extra={"stages": r["stages"]})
            logging.info("Fig. 12 %s %s seed %d: %d steps, %.1f s", f.cases[ci],
                         ("progressive", "traditional")[mi], s, r["steps"], r["wall_time_s"])
        records.append(rec)
    return records


def fig12_data(cfg, records: list[dict]) -> dict:
    """Fig. 12 numbers: steps and wall time per case and method, mean and 95% CI over seeds."""
    f = cfg.fig12
    out = {"cases": list(f.cases), "target": f.target, "seeds": list(f.seeds)}
    for mi, method in enumerate(("progressive", "traditional")):
        d = {}
        for field, name in (("steps", "steps"), ("wall_time_s", "seconds")):
            cells = [plotting.aggregate([r["result"][field] for r in records
                                         if r["point"] == {"case": ci, "method": mi}])
                     for ci in range(len(f.cases))]
            d[name] = {"mean": [c["mean"] for c in cells], "ci": [c["ci"] for c in cells]}
        d["reached"] = [all(r["result"]["reached"] for r in records
                            if r["point"] == {"case": ci, "method": mi})
                        for ci in range(len(f.cases))]
        out[method] = d
    return out


# ----------------------------------------------------------------------------
# Stage 4: the sweeps (Figs. 5-11)
# ----------------------------------------------------------------------------

def _train_configs(cfg, n_users: int) -> dict:
    va, vb = cfg.va, cfg.vb
    common = dict(n_users=n_users, policy_lr=float(va.policy_lr),
                  scheduler_lr=float(vb.scheduler_lr), estimator=str(vb.estimator),
                  scheduler=str(vb.scheduler), scheduler_hidden=int(vb.scheduler_hidden),
                  scheduler_layers=int(vb.scheduler_layers),
                  scheduler_passes=int(vb.scheduler_passes), advantage=str(vb.advantage),
                  entropy=float(vb.entropy), clip_norm=float(vb.clip_norm))
    out = {v: policy.TrainConfig(batch=int(va.batch), pretrain_steps=int(va.pretrain_steps),
                                 episodes=0, variant=v, **common)
           for v in VARIANTS.values()}
    # Scheduler updates see vb.batch x N_default tasks per episode whatever N (fewer users,
    # more scenarios): at N = 10 a batch of 32 scenarios holds a third of the tasks and the
    # scheduler stays undertrained in the quick budget (docs/reproduction.md).
    n_default = base_params(cfg).n_users
    vb_batch = max(int(vb.batch), math.ceil(int(vb.batch) * n_default / n_users))
    out["pmrl"] = policy.TrainConfig(batch=vb_batch, pretrain_steps=int(va.pretrain_steps),
                                     episodes=int(vb.episodes), variant="full", **common)
    out["rl"] = policy.TrainConfig(batch=vb_batch, pretrain_steps=0,
                                   episodes=int(vb.episodes), variant="fixed", **common)
    # The paper's own scheduler and estimator (5N -> 32 -> N, raw Eq. 23), from the same
    # pre-trained policy: shown beside the default (PMRL (paper) in the figures and claims).
    out["pmrl_paper"] = dataclasses.replace(out["pmrl"], **PAPER_SCHEDULER)
    return out


def pretrain_variants(tcs: dict, alloc, key, sp: SystemParams) -> dict:
    """Algorithm 1, lines 2-6, for the three policy variants of Section V.A at once.

    Same computation as :func:`dynmec_jax.policy.make_pretrain` for each of
    "full", "fix_width" and "fix_depth" (each its own initialisation,
    optimiser and Eq. 28 labels restricted to its variant), but the three
    share each step's scenarios and the one-pass ``logits_all`` of the
    allocator, the dominant cost.  Returns ``{variant: (params, opt_state,
    accuracy per step)}``.
    """
    variants = tuple(VARIANTS.values())
    tc0 = tcs[variants[0]]
    models = {v: policy.build_models(tcs[v], alloc) for v in variants}
    txs = {v: scheduling.make_optimizer(tcs[v].policy_lr, tcs[v].policy_optimizer)
           for v in variants}
    k_init, k_steps = jax.random.split(key)
    params = {v: policy.init_policy(jax.random.fold_in(k_init, i), models[v].policy)
              for i, v in enumerate(variants)}
    opts = {v: txs[v].init(params[v]) for v in variants}
    sp_n = sp.replace(n_users=tc0.n_users)

    def step(carry, k):
        params, opts = carry
        scn = system.sample_scenarios(k, sp_n, tc0.batch)
        x = jnp.ones(scn.shape, bool)
        la = alloc.logits_all(scn)
        feats = policy.policy_features(scn, x, alloc.scales, sp, alloc.sys_params)
        valid = jnp.ones(scn.shape[:1], bool)
        new_p, new_o, acc = {}, {}, {}
        for v in variants:
            m = models[v]
            lw, ld, _ = policy.labels(alloc, la, scn, x, sp, m.scheduler_macs, m.policy_macs,
                                      m.variant, m.fixed)

            def loss_fn(p, m=m, lw=lw, ld=ld):
                out = m.policy.apply(p, feats)
                return policy.policy_loss(out, lw, ld, valid, m.variant), out

            (_, out), g = jax.value_and_grad(loss_fn, has_aux=True)(params[v])
            upd, new_o[v] = txs[v].update(g, opts[v], params[v])
            new_p[v] = optax.apply_updates(params[v], upd)
            w, d = policy.choose(out, m.n_experts, m.n_layers, m.variant, m.fixed)
            acc[v] = jnp.mean((w == lw) & (d == ld))
        return (new_p, new_o), acc

    keys = jax.random.split(k_steps, tc0.pretrain_steps)
    (params, opts), acc = jax.lax.scan(step, (params, opts), keys)
    return {v: (params[v], opts[v], acc[v]) for v in variants}


def _joint_from_policy(tc: policy.TrainConfig, alloc, key, sp, policy_params, policy_opt):
    """Algorithm 1, lines 7-16, from an already pre-trained policy (lines 2-6)."""
    models = policy.build_models(tc, alloc)
    tx_s = scheduling.make_optimizer(tc.scheduler_lr, tc.scheduler_optimizer)
    episode = policy.make_episode(tc, alloc)
    k_init, k_eps = jax.random.split(key)
    s_params = scheduling.init_scheduler(k_init, models.scheduler)
    state = policy.TrainState(s_params, tx_s.init(s_params), policy_params, policy_opt,
                              jnp.zeros((), jnp.int32))
    keys = jax.random.split(k_eps, tc.episodes)
    return jax.lax.scan(lambda s, k: episode(s, k, sp), state, keys)


def _mean_metrics(prefix: str, per_method: dict, out: dict) -> None:
    for name, m in per_method.items():
        for k in METRICS:
            out[f"{prefix}/{name}/{k}"] = jnp.mean(m[k])


def make_item(cfg, n_users: int, moe_stack, static_stack, n_alloc: int):
    """``item(point, seed) -> {name: scalar}``: one sweep item (a pure, vmap-able program).

    ``point``: ``{field: scalar}`` overrides of :class:`SystemParams` (traced);
    ``seed``: int32 (traced).  See the module doc for what an item does.
    Result names: ``va/<method>/<metric>``, ``vb/<method>/<metric>`` and
    ``train/...`` (policy accuracy after pre-training, the last episodes' mean
    reward and cost).
    """
    tcs = _train_configs(cfg, n_users)
    base = base_params(cfg).replace(n_users=n_users)
    va, vb = cfg.va, cfg.vb

    def item(point: dict, seed: Array) -> dict:
        sp = base.replace(**point)
        idx = seed % n_alloc
        alloc = jax.tree.map(lambda a: a[idx], moe_stack)
        static = jax.tree.map(lambda a: a[idx], static_stack)
        key = jax.random.fold_in(jax.random.PRNGKey(1), seed)
        k_pre, k_pmrl, k_rl, k_va, k_vb, k_ga = jax.random.split(key, 6)
        k_eval = jax.random.fold_in(jax.random.PRNGKey(int(cfg.eval_seed)), seed)
        out = {}

        pre = pretrain_variants(tcs, alloc, k_pre, sp)
        pols = {v: (p, o) for v, (p, o, _) in pre.items()}
        for v, (_, _, acc) in pre.items():
            out[f"train/{v}/pretrain_accuracy"] = jnp.mean(acc[-20:])

        # Section V.A: every task offloaded.
        scn = system.sample_scenarios(k_eval, sp, int(va.eval_batch))
        res = evaluation.section_va(k_va, scn, sp, alloc, pols["full"][0], static,
                                    pols["fix_width"][0], pols["fix_depth"][0], ga_iters=None)
        sub = jax.tree.map(lambda a: a[: int(va.ga_batch)], scn)
        ga = evaluation.genetic(k_ga, sub, sp, joint=False, n_iters=int(va.ga_iters),
                                pop_factor=int(va.ga_pop_factor))
        res["GA"] = evaluation.scenario_metrics(sub, ga, sp)
        _mean_metrics("va", {k: res[k] for k in VA_METHODS}, out)

        # Section V.B: users have computing power; Algorithm 1.
        state, joint = _joint_from_policy(tcs["pmrl"], alloc, k_pmrl, sp, *pols["full"])
        pmrl = policy.make_pipeline(tcs["pmrl"], alloc, state)
        rl_state, rl_m = policy.make_train(tcs["rl"], alloc)(k_rl, sp)
        rl = policy.make_pipeline(tcs["rl"], alloc, rl_state)
        tail = max(1, int(vb.episodes) // 10)
        out["train/pmrl/reward"] = jnp.mean(joint["reward"][-tail:])
        out["train/pmrl/cost"] = jnp.mean(joint["cost"][-tail:])
        out["train/rl/cost"] = jnp.mean(rl_m["joint"]["cost"][-tail:])
        scn_b = system.sample_scenarios(jax.random.fold_in(k_eval, 1), sp, int(vb.eval_batch))
        res_b = evaluation.section_vb(k_vb, scn_b, sp, pmrl, rl, ga_iters=None)
        if bool(vb.paper_scheduler):
            p_state, _ = _joint_from_policy(tcs["pmrl_paper"], alloc, k_pmrl, sp,
                                            *pols["full"])
            pmrl_paper = policy.make_pipeline(tcs["pmrl_paper"], alloc, p_state)
            res_b[PMRL_PAPER] = evaluation.scenario_metrics(
                scn_b, evaluation.pipeline_method(pmrl_paper, scn_b, sp), sp)
        sub_b = jax.tree.map(lambda a: a[: int(va.ga_batch)], scn_b)
        ga_b = evaluation.genetic(jax.random.fold_in(k_ga, 1), sub_b, sp, joint=True,
                                  n_iters=int(va.ga_iters), pop_factor=int(va.ga_pop_factor))
        res_b["GA"] = evaluation.scenario_metrics(sub_b, ga_b, sp)
        if n_users <= exhaustive.MAX_USERS:
            res_b[VB_OPTIMUM] = evaluation.scenario_metrics(
                scn_b, evaluation.exhaustive(scn_b, sp), sp)
        _mean_metrics("vb", {k: res_b[k] for k in VB_METHODS + (VB_OPTIMUM,) if k in res_b},
                      out)

        # The policy against the per-scenario best sub-network (Eq. 28), on the offload
        # sets it serves: all tasks (V.A, PolicyMoE) and PMRL's (V.B).
        m_va = policy.build_models(tcs["full"], alloc)
        reg_va = evaluation.policy_regret(m_va, pols["full"][0], alloc, scn,
                                          jnp.ones(scn.shape, bool), sp)
        x_b = policy.decide_body(pmrl, scn_b, sp).offload
        reg_vb = evaluation.policy_regret(pmrl.models, state.policy, alloc, scn_b, x_b, sp)
        for sec, reg in (("va", reg_va), ("vb", reg_vb)):
            for k, v in reg.items():
                out[f"policy/{sec}/{k}"] = jnp.mean(v)
        return out

    return item


def _default_point(cfg) -> dict:
    sp = base_params(cfg)
    return {a: float(getattr(sp, a)) for a in AXES}


def sweep_points(cfg) -> list[dict]:
    """The distinct points of the shared-shape sweep (the union of the three axes)."""
    default = _default_point(cfg)
    points = []
    for a in AXES:
        for v in cfg.sweeps[a]:
            p = dict(default, **{a: float(v)})
            if p not in points:
                points.append(p)
    return points


def run_sweeps(cfg, store: sweep.ResultStore, allocs: dict, progress: bool = True,
               mesh=None) -> dict:
    """Runs (or resumes) the sweeps of Figs. 5-11; returns ``{"main": records, n: records}``."""
    conf = sweep.to_jsonable(cfg.to_dict())
    moe_stack = stack_allocators(allocs["moe_models"])
    static_stack = stack_allocators(allocs["static_models"])
    n_alloc = len(allocs["moe_models"])
    seeds = [int(s) for s in cfg.seeds]
    n_default = base_params(cfg).n_users

    def compute_for(n):
        item = make_item(cfg, n, moe_stack, static_stack, n_alloc)
        return jax.vmap(item)

    out = {"main": sweep.run_sweep(store, "sweep_main", sweep_points(cfg), seeds,
                                   compute_for(n_default), config=conf, mesh=mesh,
                                   chunk_size=int(cfg.chunk_size), progress=progress)}
    default_recs = [r for r in out["main"] if r["point"] == _default_point(cfg)]
    for n in cfg.sweeps.n_users:
        n = int(n)
        if n == n_default:  # the Table II point of the main sweep (same program, same item)
            out[n] = default_recs
            continue
        out[n] = sweep.run_sweep(store, f"sweep_n{n}", [{"n_users_point": float(n)}], seeds,
                                 _drop_point(compute_for(n)), config=conf, mesh=mesh,
                                 chunk_size=int(cfg.chunk_size), progress=progress)
    return out


def _drop_point(fn):
    """Adapts a compute function to the N sweep, whose point only labels N (no override)."""
    def compute(point_batch, seed_batch):
        return fn({k: v for k, v in point_batch.items() if k != "n_users_point"}, seed_batch)
    return compute


# ----------------------------------------------------------------------------
# Stage 5: tables, figures and claims
# ----------------------------------------------------------------------------

#: Axis display: label, scale from SI to the plotted unit.
AXIS_LABELS = {"size_avg": ("Average data amount s_avg [kbit]", 1e-3),
               "workload_avg": ("Average task complexity c_avg [cycles/bit]", 1.0),
               "n_users": ("Number of tasks N", 1.0),
               "f_server": ("Server computing power f_ser [GHz]", 1e-9)}


def _axis_points(cfg, sweeps: dict, axis: str) -> list[tuple[float, dict]]:
    """``[(x, record)]`` of one x-axis (x in SI), every seed's record."""
    if axis == "n_users":
        return [(float(n), r) for n in cfg.sweeps.n_users for r in sweeps[int(n)]]
    sp = base_params(cfg)
    default = {a: float(getattr(sp, a)) for a in AXES}
    return [(r["point"][axis], r) for r in sweeps["main"]
            if all(math.isclose(r["point"][a], default[a], rel_tol=1e-9)
                   for a in AXES if a != axis)]


def axis_records(cfg, sweeps: dict, section: str, axis: str) -> list[dict]:
    """Records of one x-axis in :func:`dynmec_jax.plotting.sweep_table` form.

    ``section``: "va" or "vb"; ``axis``: a field of :data:`AXES` or
    "n_users".  Returns ``[{"method", "x", "seed", "metrics"}]`` with x in SI.
    Methods stored only at some points (the V.B exhaustive "Optimum", N <=
    12) appear where they were stored.
    """
    methods = VA_METHODS if section == "va" else VB_METHODS + (VB_OPTIMUM,)
    out = []
    for x, r in _axis_points(cfg, sweeps, axis):
        res = r["result"]
        for m in methods:
            if f"{section}/{m}/{METRICS[0]}" not in res:
                continue
            out.append({"method": m, "x": x, "seed": r["seed"],
                        "metrics": {k: res[f"{section}/{m}/{k}"] for k in METRICS}})
    return out


def policy_table(cfg, sweeps: dict, axis: str) -> dict:
    """The policy's Eq. 28 regret and labels along one axis, in ``sweep_table`` form.

    Series ``va`` (PolicyMoE, all tasks offloaded) and ``vb`` (PMRL's
    offload sets); metrics ``regret``, ``label_width``, ``label_depth``,
    ``label_macs`` (:func:`dynmec_jax.evaluation.policy_regret`).
    """
    recs = []
    for x, r in _axis_points(cfg, sweeps, axis):
        for sec in ("va", "vb"):
            recs.append({"method": sec, "x": x, "seed": r["seed"],
                         "metrics": {k: r["result"][f"policy/{sec}/{k}"]
                                     for k in ("regret", "label_width", "label_depth",
                                               "label_macs")}})
    return {k: plotting.sweep_table(recs, k)
            for k in ("regret", "label_width", "label_depth", "label_macs")}


def tables(cfg, sweeps: dict) -> dict:
    """``{section: {axis: {metric: sweep_table}}}`` for sections "va", "vb", and "policy"
    (``{axis: policy_table}``)."""
    out = {sec: {ax: {k: plotting.sweep_table(axis_records(cfg, sweeps, sec, ax), k)
                      for k in METRICS}
                 for ax in PANEL_ORDER}
           for sec in ("va", "vb")}
    out["policy"] = {ax: policy_table(cfg, sweeps, ax) for ax in PANEL_ORDER}
    return out


def _panels(tab: dict, metric: str, y_scale: float) -> list[dict]:
    """Figure panels of Figs. 5-9; the references in :data:`NOT_PLOTTED` are left out."""
    return [{"xlabel": AXIS_LABELS[ax][0], "x_scale": AXIS_LABELS[ax][1], "y_scale": y_scale,
             "letter": "abcd"[i],
             "table": _select(tab[ax][metric], [m for m in tab[ax][metric]["series"]
                                                if m not in NOT_PLOTTED])}
            for i, ax in enumerate(PANEL_ORDER)]


def _select(table: dict, methods) -> dict:
    return {"x": table["x"], "series": {m: table["series"][m] for m in methods
                                        if m in table["series"]}}


FIGURES = {
    # name: (section, metric, ylabel, y_scale, yscale, GA on a right axis)
    "fig05_delay": ("va", "delay", "Average service delay [ms]", 1e3, "linear", True),
    "fig06_miss_ratio": ("va", "miss_ratio", "Deadline miss ratio", 1.0, "linear", True),
    "fig07_delay_joint": ("vb", "delay", "Average service delay [ms]", 1e3, "linear", True),
    "fig08_miss_ratio_joint": ("vb", "miss_ratio", "Deadline miss ratio", 1.0, "linear", True),
    "fig09_energy_joint": ("vb", "energy", "User-side energy per scenario [J]", 1.0, "log",
                           False),
}


def write_figures(cfg, tabs: dict, fig04: dict, fig12: dict, out: pathlib.Path) -> list[str]:
    """Writes every figure (PNG) with its numbers (JSON) into ``out``; returns the names."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    plotting.plot_fig04(fig04, out / "fig04_model_size.png")
    plotting.write_json(fig04, out / "fig04_model_size.json")
    names.append("fig04_model_size")
    for name, (sec, metric, ylabel, ys, scale, right) in FIGURES.items():
        panels = _panels(tabs[sec], metric, ys)
        plotting.plot_sweep(panels, out / f"{name}.png", ylabel,
                            right_axis_methods=("GA",) if right else (), yscale=scale)
        plotting.write_json({"metric": metric, "unit_scale": ys, "ylabel": ylabel,
                             "panels": [{k: v for k, v in p.items()} for p in panels]},
                            out / f"{name}.json")
        names.append(name)
    t10 = _select(tabs["va"]["size_avg"]["allocator_macs"], NN_METHODS + ("Oracle",))
    t10["series"][LABEL_SERIES] = t10["series"].pop("Oracle")
    plotting.plot_bars(t10, out / "fig10_macs.png", "Allocation model MACs [M]",
                       AXIS_LABELS["size_avg"][0], y_scale=1e-6, x_scale=1e-3)
    plotting.write_json({"metric": "allocator_macs", "unit": "MACs", "table": t10},
                        out / "fig10_macs.json")
    t11 = _select(tabs["va"]["size_avg"]["inference_share"], NN_METHODS)
    plotting.plot_bars(t11, out / "fig11_inference_share.png", "Inference delay share [%]",
                       AXIS_LABELS["size_avg"][0], y_scale=100.0, x_scale=1e-3)
    plotting.write_json({"metric": "inference_share", "unit": "fraction", "table": t11},
                        out / "fig11_inference_share.json")
    names += ["fig10_macs", "fig11_inference_share"]
    plotting.plot_fig12(fig12, out / "fig12_training_cost.png")
    plotting.write_json(fig12, out / "fig12_training_cost.json")
    names.append("fig12_training_cost")
    return names


# ----------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------

def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devs = jax.devices()
    return (f"{cpu}; {os.cpu_count()} logical CPUs visible; JAX backend "
            f"{jax.default_backend()} with {len(devs)} device(s) ({devs[0].device_kind})")


def results_readme(cfg, summary: dict) -> str:
    """``results/README.md``: how the results were made (preset, seeds, times, machine)."""
    tot = summary["all_invocations"]
    st = tot["stage_wall_time_s"]
    lines = [
        "# Results of the reproduction (Section V)",
        "",
        f"Made by `python launch/reproduce.py --config=dynmec_jax/configs/reproduce.py:"
        f"{cfg.preset} --workdir=WORKDIR --results=results` (the README's main command).",
        "",
        f"* Preset: `{cfg.preset}`; sweep seeds {list(cfg.seeds)}; allocator seeds "
        f"{int(cfg.allocator.n_seeds)} (sweep seed s uses allocator s mod "
        f"{int(cfg.allocator.n_seeds)}); Fig. 12 seeds {list(cfg.fig12.seeds)}.",
        f"* Machine: {summary['machine']}.",
        f"* Wall time: {tot['wall_time_s']:.0f} s over {tot['invocations']} invocation(s) "
        f"of the command on this workdir (allocators {st['allocators']:.0f} s, Fig. 12 "
        f"{st['fig12']:.0f} s, sweeps {st['sweeps']:.0f} s, figures and claims "
        f"{st['figures']:.0f} s); the last invocation took {summary['wall_time_s']:.0f} s.  "
        f"Peak resident memory {tot['peak_rss_mb']:.0f} MB.  Finished stages are reused on a "
        "rerun, so a rerun adds only what it recomputes.",
        f"* Package versions: {summary['versions']}.",
        "* Every number comes from `WORKDIR/store` (one JSON record per (figure, point, "
        "seed) with its config, seed, versions and wall time) and the allocators' "
        "`allocator_eval.json`; figures show means with 95% Student-t confidence intervals "
        "over seeds.",
        "* Budgets of the preset (training steps, batches, evaluation scenarios, GA "
        "iterations): `dynmec_jax/configs/reproduce.py` and `config.json` here.",
        "",
        "| Figure | File | What |",
        "|---|---|---|",
        "| 4 | fig04_model_size.png | weighted delay per (width, depth), without (a) and "
        "with (b) inference delay |",
        "| 5, 6 | fig05_delay.png, fig06_miss_ratio.png | Section V.A (all tasks offloaded) |",
        "| 7, 8, 9 | fig07_delay_joint.png, fig08_miss_ratio_joint.png, "
        "fig09_energy_joint.png | Section V.B (users with computing power) |",
        "| 10, 11 | fig10_macs.png, fig11_inference_share.png | allocation MACs and "
        "inference-delay share vs data amount |",
        "| 12 | fig12_training_cost.png | progressive shrinking vs traditional training |",
        "",
        "Claims of Section V, checked one by one: [claims.md](claims.md).",
    ]
    return "\n".join(lines) + "\n"


def run(cfg, workdir, results_dir, progress: bool = True, mesh=None) -> dict:
    """Runs (or resumes) the whole reproduction; writes figures, claims and README.

    ``workdir`` holds the resumable state (allocator checkpoints, the result
    store); ``results_dir`` receives ``fig*.png``/``.json``, ``claims.md``,
    ``summary.json``, ``config.json`` and ``README.md``.  Returns the summary.
    """
    validate_config(cfg)
    t_start = time.perf_counter()
    workdir = pathlib.Path(workdir)
    results_dir = pathlib.Path(results_dir)
    store = sweep.ResultStore(workdir / "store")
    store.check_writable()
    results_dir.mkdir(parents=True, exist_ok=True)
    times = {}

    t0 = time.perf_counter()
    allocs = train_allocators(cfg, workdir, progress)
    times["allocators"] = time.perf_counter() - t0
    fig04 = fig04_data(allocs["moe"])

    t0 = time.perf_counter()
    fig12 = fig12_data(cfg, run_fig12(cfg, store, progress))
    times["fig12"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sweeps = run_sweeps(cfg, store, allocs, progress, mesh)
    times["sweeps"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tabs = tables(cfg, sweeps)
    names = write_figures(cfg, tabs, fig04, fig12, results_dir)
    rows = claims.evaluate(cfg, tabs, fig04, fig12)
    times["figures"] = time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    # Times summed over every invocation that built this workdir (a rerun after a kill,
    # or one that only redraws the figures, adds to them), so they stay true on reuse.
    tfile = workdir / "timings.json"
    prev = json.loads(tfile.read_text()) if tfile.is_file() else {
        "invocations": 0, "wall_time_s": 0.0, "peak_rss_mb": 0.0,
        "stage_wall_time_s": {k: 0.0 for k in times}}
    total = {"invocations": prev["invocations"] + 1,
             "wall_time_s": prev["wall_time_s"] + wall,
             "peak_rss_mb": max(prev["peak_rss_mb"], _peak_rss_mb()),
             "stage_wall_time_s": {k: prev["stage_wall_time_s"].get(k, 0.0) + v
                                   for k, v in times.items()}}
    sweep.atomic_write_text(tfile, json.dumps(total, indent=1))
    summary = {
        "preset": cfg.preset, "seeds": list(cfg.seeds), "figures": names,
        "stage_wall_time_s": times, "wall_time_s": wall, "all_invocations": total,
        "peak_rss_mb": _peak_rss_mb(), "machine": _machine(), "versions": sweep.versions(),
        "allocator": {k: allocs["moe"][k] for k in ("max_gap_all", "max_gap_random",
                                                    "full_gap_all", "steps")},
        "static_allocator": {k: allocs["static"][k] for k in ("full_gap_all", "steps")},
        "claims": {s: sum(r["status"] == s for r in rows) for s in claims.STATUSES},
    }
    header = (f"# Claims of Section V, checked against the `{cfg.preset}` run\n\n"
              "Each row is a statement of the paper's Section V (or Table I); status "
              "**reproduced** when every check holds at every swept point (means over seeds), "
              "**partly** when at least half do, else **not reproduced**.  Numbers in the "
              "figures' units (delays in ms unless marked).  Generated by "
              "`dynmec_jax/experiments/claims.py` from the stored records.")
    sweep.atomic_write_text(results_dir / "claims.md", claims.markdown(rows, header))
    plotting.write_json({"rows": rows}, results_dir / "claims.json")
    plotting.write_json(summary, results_dir / "summary.json")
    sweep.atomic_write_text(results_dir / "config.json",
                            json.dumps(sweep.to_jsonable(cfg.to_dict()), indent=1) + "\n")
    sweep.atomic_write_text(results_dir / "README.md", results_readme(cfg, summary))
    return summary
