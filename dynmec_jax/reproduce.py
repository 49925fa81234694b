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
5. **Figures** (``results/fig*.png`` + ``.json``), ``results/claims.md`` and
   ``results/summary.json``.

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
    accounting,
    allocation,
    evaluation,
    plotting,
    policy,
    scheduling,
    sweep,
    system,
)
from dynmec_jax.baselines import exhaustive
from dynmec_jax.system import SystemParams

Array = Any

#: Metrics stored per method (see :func:`dynmec_jax.evaluation.scenario_metrics`).
METRICS = ("delay", "miss_ratio", "energy", "allocator_macs", "inference_share",
           "weighted_delay", "offload_fraction", "width", "depth", "cost", "cost_delay",
           "cost_energy")
#: The swept fields of the shared-shape sweep (Figs. 5/6/7/8/9 (a), (b), (d); 10; 11).
AXES = ("size_avg", "workload_avg", "f_server")
#: PMRL trained with the paper's exact scheduler network and estimator (Eq. 21-27).
PMRL_PAPER = "PMRL (paper)"
PAPER_SCHEDULER = {"scheduler": "paper", "advantage": "raw", "estimator": "eq23", "entropy": 0.0,
                   "clip_norm": 0.0, "scheduler_hidden": 32, "scheduler_layers": 1,
                   "scheduler_passes": 1}
VA_METHODS = ("PolicyMoE", "Fix width MoE", "Fix depth MoE", "Fix MoE", "Static model", "GA",
              "Oracle")
VB_METHODS = ("PMRL", PMRL_PAPER, "RL", "Rand", "Local execution", "Greedy", "GA")
#: V.B reference stored only where N <= exhaustive.MAX_USERS (not plotted).
VB_OPTIMUM = "Optimum"
#: Stored references left out of Figs. 5-9: the exhaustive optimum (one N only) and the
#: Eq. 28 label used as the decision ("Oracle"; shown in Fig. 10 as the label's MACs).
NOT_PLOTTED = (VB_OPTIMUM, "Oracle")
#: Fig. 10's name of the Oracle's MACs: those of the per-scenario Eq. 28 label.
LABEL_SERIES = "Eq. 28 label (oracle)"
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
PANEL_ORDER = ("size_avg", "workload_avg", "n_users", "f_server")


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
    nn_methods = ("PolicyMoE", "Fix width MoE", "Fix depth MoE", "Fix MoE", "Static model")
    t10 = _select(tabs["va"]["size_avg"]["allocator_macs"], nn_methods + ("Oracle",))
    t10["series"][LABEL_SERIES] = t10["series"].pop("Oracle")
    plotting.plot_bars(t10, out / "fig10_macs.png", "Allocation model MACs [M]",
                       AXIS_LABELS["size_avg"][0], y_scale=1e-6, x_scale=1e-3)
    plotting.write_json({"metric": "allocator_macs", "unit": "MACs", "table": t10},
                        out / "fig10_macs.json")
    t11 = _select(tabs["va"]["size_avg"]["inference_share"], nn_methods)
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
# Claims of Section V
# ----------------------------------------------------------------------------

#: Reasons printed beside claims that do not reproduce (see docs/reproduction.md).
WHY_GA = ("the GA's delay is modelled like the networks' (its operation count x lambda / "
          "f_ser, Eq. 9), about 10^4 times a network's MACs but only tens of ms; the "
          "paper's seconds match our measured wall time of an uncompiled GA (11-16 s per "
          "scenario), not a model of its operations (docs/reproduction.md, GA section)")
WHY_NN = ("the allocator and the Eq. 28 labels minimise the importance-weighted delay "
          "(w_i ~ 1/d_i); the sub-networks PolicyMoE picks are within a fraction of a percent "
          "of the wider ones on that objective (Fig. 4), but the unweighted mean delay and "
          "miss ratio are dominated by low-importance tasks, whose shares the narrow "
          "sub-networks set worse than Fix width MoE (all K experts, depth chosen by its "
          "policy), which wins here")


def _m(table: dict, method: str) -> np.ndarray:
    return np.asarray(table["series"][method]["mean"], float)


def _status(checks: list[bool]) -> str:
    frac = float(np.mean(checks)) if checks else 0.0
    return "reproduced" if frac == 1.0 else ("partly" if frac >= 0.5 else "not reproduced")


def _fmt(a, scale=1.0, digits=3) -> str:
    return "[" + ", ".join(f"{scale * v:.{digits}g}" for v in np.atleast_1d(a)) + "]"


def _increasing(a) -> bool:
    return bool(np.all(np.diff(a) > 0))


def _decreasing(a) -> bool:
    return bool(np.all(np.diff(a) < 0))


def claims(cfg, tabs: dict, fig04: dict, fig12: dict) -> list[dict]:
    """Every claim of Section V checked against our numbers.

    Returns rows ``{"claim", "figure", "status", "numbers"}``; status is
    "reproduced" (every check holds), "partly" (at least half) or "not
    reproduced".  Checks compare means over seeds.
    """
    rows = []

    def add(figure, claim, checks, numbers, why=""):
        status = _status(checks)
        rows.append({"figure": figure, "claim": claim, "status": status,
                     "numbers": numbers + (f". Why: {why}" if why and status != "reproduced"
                                           else "")})

    va, vb = tabs["va"], tabs["vb"]
    nn = ("PolicyMoE", "Fix width MoE", "Fix depth MoE", "Fix MoE", "Static model")
    moes = nn[:4]

    # Table I (an accounting check at Table I's architecture, whatever the preset's sizes).
    p_dyn = accounting.allocation_model_params(10, 3)["dynamic"]
    m_dyn = accounting.allocation_model_macs(10, 3, 30)["dynamic"]
    m_dyn2 = accounting.allocation_model_macs(10, 3, 30, zeta=2)["dynamic"]
    add("Table I", "Dynamic part of the allocation model: 87.04K parameters, 5.126M MACs "
        "(30 users)", [int(p_dyn) == 87040, abs(float(m_dyn) / 5.126e6 - 1) < 0.01],
        f"ours: {int(p_dyn):,} parameters (exact); {float(m_dyn):,.0f} MACs counting one MAC "
        f"per multiply-accumulate (half the paper's figure); {float(m_dyn2):,.0f} at two "
        "operations per MAC, within 0.4% of the paper's (docs/reproduction.md)")

    # Fig. 4.
    wd = np.asarray(fig04["wd"]["mean"])
    wdi = np.asarray(fig04["wd_infer"]["mean"])
    dec = [wd[k + 1, d] < wd[k, d] for k in range(wd.shape[0] - 1) for d in range(wd.shape[1])]
    dec += [wd[k, d + 1] < wd[k, d] for k in range(wd.shape[0]) for d in range(wd.shape[1] - 1)]
    add("Fig. 4(a)", "The weighted delay (without inference) decreases as width and depth grow",
        dec, f"{sum(dec)}/{len(dec)} unit steps in width or depth lower it; width 1..K at depth "
        f"L: {_fmt(wd[:, -1])}; smallest {wd.min():.4g}, largest net {wd[-1, -1]:.4g}, "
        f"optimum {fig04['optimal_wd']:.4g}")
    k_best, d_best = np.unravel_index(np.argmin(wdi), wdi.shape)
    add("Fig. 4(b)", "With the inference delay, the largest model is not the best",
        [(k_best, d_best) != (wdi.shape[0] - 1, wdi.shape[1] - 1)],
        f"best (width, depth) = ({k_best + 1}, {d_best + 1}) with {wdi.min():.4g}; largest "
        f"({wdi.shape[0]}, {wdi.shape[1]}): {wdi[-1, -1]:.4g}")

    # Fig. 5 / 6.
    for fig, metric, what in (("Fig. 5", "delay", "delay"), ("Fig. 6", "miss_ratio",
                                                             "deadline miss ratio")):
        checks, nums = [], []
        for ax in PANEL_ORDER:
            t = va[ax][metric]
            best = np.min([_m(t, m) for m in nn if m != "PolicyMoE"], axis=0)
            c = _m(t, "PolicyMoE") <= best
            checks += list(c)
            sc = 1e3 if metric == "delay" else 1.0
            nums.append(f"{ax}: PolicyMoE {_fmt(_m(t, 'PolicyMoE'), sc)}"
                        f" vs best other NN {_fmt(best, sc)}")
        unit = " (ms)" if metric == "delay" else ""
        add(fig, f"PolicyMoE has the lowest {what} of the NN schemes at every point", checks,
            f"{sum(checks)}/{len(checks)} points{unit}; " + "; ".join(nums),
            why=WHY_NN)
    checks = []
    for ax in PANEL_ORDER:
        t = va[ax]["delay"]
        checks += [bool(v) for m in moes for v in _m(t, m) < _m(t, "Static model")]
    add("Fig. 5", "Every MoE scheme beats the static model", checks,
        f"{sum(checks)}/{len(checks)} (method, point) pairs; at the default point static "
        f"{1e3 * _m(va['size_avg']['delay'], 'Static model')[1]:.3g} ms vs Fix MoE "
        f"{1e3 * _m(va['size_avg']['delay'], 'Fix MoE')[1]:.3g} ms")
    checks = []
    for ax in PANEL_ORDER:
        t = va[ax]["delay"]
        checks += list(_m(t, "Fix MoE") >= np.max([_m(t, m) for m in moes[:3]], axis=0))
    add("Fig. 5", "Fix MoE is the worst of the MoE schemes (no on-demand computation)", checks,
        f"{sum(checks)}/{len(checks)} points")
    checks, ratios = [], []
    for ax in PANEL_ORDER:
        t = va[ax]["delay"]
        ga, pm = _m(t, "GA"), _m(t, "PolicyMoE")
        checks += [bool(g >= 1.0 and g >= 10 * p) for g, p in zip(ga, pm, strict=False)]
        ratios += list(ga / pm)
    add("Fig. 5", "GA's delay reaches the second level, dozens to hundreds of times the others "
        "(modelled GA delay: lambda x operations / f_ser)", checks,
        f"GA / PolicyMoE delay ratio {min(ratios):.3g}..{max(ratios):.3g}; GA delay "
        f"{_fmt(_m(va['size_avg']['delay'], 'GA'))} s over the data-amount axis",
        why=WHY_GA)
    checks, nums = [], []
    for ax in ("size_avg", "workload_avg"):
        for m in nn:
            checks.append(_increasing(_m(va[ax]["delay"], m)))
        nums.append(f"{ax}: PolicyMoE {_fmt(_m(va[ax]['delay'], 'PolicyMoE'), 1e3)} ms")
    add("Fig. 5(a, b)", "Delay increases with the data amount and the task complexity", checks,
        f"{sum(checks)}/{len(checks)} NN methods monotone; " + "; ".join(nums))

    def adv(t, a="PolicyMoE", b="Fix MoE"):
        return (_m(t, b) - _m(t, a)) / _m(t, b)

    a_s, a_c = adv(va["size_avg"]["delay"]), adv(va["workload_avg"]["delay"])
    add("Fig. 5(a, b)", "PolicyMoE's advantage over Fix MoE shrinks as data amount and "
        "complexity grow", [a_s[-1] < a_s[0], a_c[-1] < a_c[0]],
        f"relative advantage vs data amount {_fmt(100 * a_s)} %, vs complexity "
        f"{_fmt(100 * a_c)} %")
    t = va["n_users"]["delay"]
    a_n = adv(t)
    add("Fig. 5(c)", "Delay increases with the number of tasks, and PolicyMoE's advantage "
        "grows", [_increasing(_m(t, "PolicyMoE")), a_n[-1] > a_n[0]],
        f"PolicyMoE {_fmt(_m(t, 'PolicyMoE'), 1e3)} ms; advantage over Fix MoE "
        f"{_fmt(100 * a_n)} %")
    t = va["f_server"]["delay"]
    a_f = adv(t)
    add("Fig. 5(d)", "Delay decreases with server power, and PolicyMoE's advantage shrinks",
        [_decreasing(_m(t, "PolicyMoE")), a_f[-1] < a_f[0]],
        f"PolicyMoE {_fmt(_m(t, 'PolicyMoE'), 1e3)} ms; advantage over Fix MoE "
        f"{_fmt(100 * a_f)} %")
    ga_miss = np.concatenate([_m(va[ax]["miss_ratio"], "GA") for ax in PANEL_ORDER])
    add("Fig. 6", "GA misses every deadline (miss ratio 100%)", list(ga_miss >= 0.999),
        f"GA miss ratio {_fmt(100 * ga_miss)} %", why=WHY_GA)

    # Fig. 7 / 8 / 9.
    paper_vb = ("RL", "Rand", "Local execution", "GA")
    has_paper = PMRL_PAPER in vb["size_avg"]["cost"]["series"]
    for fig, metric, what, rivals in (
            ("Fig. 7", "delay", "mean delay than Local execution, Rand and RL",
             ("RL", "Rand", "Local execution")),
            ("Fig. 8", "miss_ratio", "deadline miss ratio than the paper's other schemes "
             "(ties count)", paper_vb)):
        checks, nums, fails = [], [], []
        sc = 1e3 if metric == "delay" else 100.0
        for ax in PANEL_ORDER:
            t, tc = vb[ax][metric], vb[ax]["cost"]
            rv = np.array([_m(t, m) for m in rivals])
            ok = (_m(t, "PMRL") < rv.min(axis=0) if metric == "delay"
                  else _m(t, "PMRL") <= rv.min(axis=0))
            checks += list(ok)
            nums.append(f"{ax}: PMRL {_fmt(_m(t, 'PMRL'), sc)}, best of "
                        f"{'/'.join(rivals)} {_fmt(rv.min(axis=0), sc)}, Greedy "
                        f"{_fmt(_m(t, 'Greedy'), sc)}"
                        + (f", {PMRL_PAPER} {_fmt(_m(t, PMRL_PAPER), sc)}" if has_paper else ""))
            for i in np.flatnonzero(~ok):
                win = rivals[int(np.argmin(rv[:, i]))]
                fails.append(f"{ax} = {t['x'][i]:.4g}: {win} {sc * rv.min(axis=0)[i]:.3g} vs PMRL "
                             f"{sc * _m(t, 'PMRL')[i]:.3g}, while PMRL's cost sum_i C_i is "
                             f"{_m(tc, 'PMRL')[i]:.4g} against {win}'s {_m(tc, win)[i]:.4g}")
        unit = "ms" if metric == "delay" else "%"
        add(fig, f"PMRL has a lower {what} at every point", checks,
            f"{sum(checks)}/{len(checks)} points ({unit}); " + "; ".join(nums),
            why=("PMRL minimises sum_i C_i (Eq. 24-25: importance-weighted delay, w_i ~ "
                 "1/d_i, plus beta x energy), not the unweighted mean: " + "; ".join(fails))
            if fails else "")
    checks = []
    for ax in PANEL_ORDER:
        t = vb[ax]["delay"]
        checks += list(_m(t, "RL") < _m(t, "Local execution"))
    t = vb["size_avg"]["delay"]
    to = vb["size_avg"]["offload_fraction"]
    add("Fig. 7", "RL scheduling beats local execution; at low delay Rand is worse than local "
        "execution", checks + [bool(_m(t, "Rand")[0] > _m(t, "Local execution")[0])],
        f"RL < Local at {sum(checks)}/{len(checks)} points; smallest data amount: Rand "
        f"{1e3 * _m(t, 'Rand')[0]:.3g} ms vs Local {1e3 * _m(t, 'Local execution')[0]:.3g} ms",
        why=f"over the data-amount axis RL offloads {_fmt(100 * _m(to, 'RL'))} % of the "
        f"tasks (PMRL {_fmt(100 * _m(to, 'PMRL'))} %) and minimises the importance-weighted "
        "cost, not the mean delay; Rand's offloaded half shares the server among half the "
        "tasks, which beats the slow local CPUs (f_loc ~ U[0.01, 0.15] GHz) at every point")
    checks, nums = [], []
    for ax in PANEL_ORDER:
        t = vb[ax]["cost"]
        best = np.min([_m(t, m) for m in paper_vb], axis=0)
        checks += list(_m(t, "PMRL") <= best)
        nums.append(f"{ax}: PMRL {_fmt(_m(t, 'PMRL'))} vs best other {_fmt(best)}")
    tsa = {k: vb["size_avg"][k] for k in ("cost_delay", "cost_energy")}
    i_def = int(np.argmin(np.abs(np.asarray(vb["size_avg"]["cost"]["x"])
                                 - float(base_params(cfg).size_avg))))
    parts = ", ".join(f"{m} {_m(tsa['cost_delay'], m)[i_def]:.4g} + "
                      f"{_m(tsa['cost_energy'], m)[i_def]:.4g}"
                      for m in ("PMRL", "Greedy", "Local execution", "Rand"))
    add("Fig. 7-8 (objective)", "PMRL has the lowest cost sum_i C_i (Eq. 24-25, what the "
        "scheduler is trained for) of the paper's schemes at every point", checks,
        f"{sum(checks)}/{len(checks)} points; " + "; ".join(nums)
        + f". At the Table II point sum_i C_i = delay term sum alpha w_i T_i + energy term "
        f"sum beta E_i: {parts}")

    # Beyond the paper: the greedy + KKT baseline and the paper's own scheduler.
    checks, nums = [], []
    for ax in PANEL_ORDER:
        t = vb[ax]["cost"]
        ratio = _m(t, "PMRL") / _m(t, "Greedy")
        checks += list(ratio <= 1.0)
        nums.append(f"{ax}: {_fmt(ratio, digits=4)}")
    add("Beyond (V.B)", "PMRL (with its own inference delay and the learned allocator) has a "
        "cost sum_i C_i no higher than greedy offloading with the optimal (KKT) allocation and "
        "no inference delay", checks,
        f"{sum(checks)}/{len(checks)} points; PMRL / Greedy cost: " + "; ".join(nums),
        why="the greedy decides with the exact optimal allocation and pays no inference "
        "delay; PMRL's own inference delay and the learned allocator's gap to the optimum "
        "(Fig. 4) are charged to it")
    checks, nums = [], []
    for ax in PANEL_ORDER if has_paper else ():
        t, to = vb[ax]["cost"], vb[ax]["offload_fraction"]
        best = np.min([_m(t, m) for m in paper_vb], axis=0)
        checks += list(_m(t, PMRL_PAPER) <= best)
        nums.append(f"{ax}: cost {_fmt(_m(t, PMRL_PAPER))} (default PMRL {_fmt(_m(t, 'PMRL'))}),"
                    f" offloaded {_fmt(100 * _m(to, PMRL_PAPER))} %")
    if has_paper:  # vb.paper_scheduler
        add("Beyond (V.B)", "With the paper's own scheduler (5N -> 32 -> N) and estimator (raw "
            "Eq. 23), PMRL has the lowest cost sum_i C_i of the paper's schemes at every point",
            checks, f"{sum(checks)}/{len(checks)} points; " + "; ".join(nums),
            why="the raw Eq. 23 signal is heavy-tailed (w_i ~ 1/d_i) and saturates the sigmoid "
            "at 'offload' within the first updates, and one 32-unit hidden layer shared by "
            "the N outputs cannot represent N per-task decisions (docs/reproduction.md, "
            "scheduler ablation)")
    checks, nums = [], []
    for ax in PANEL_ORDER:
        to = vb[ax]["offload_fraction"]
        pm, gr = _m(to, "PMRL"), _m(to, "Greedy")
        checks += [bool(np.sign(a) == np.sign(b) or (abs(a) < 0.005 and abs(b) < 0.005))
                   for a, b in zip(np.diff(pm), np.diff(gr), strict=True)]
        opt = ""
        if VB_OPTIMUM in to["series"]:
            om = _m(to, VB_OPTIMUM)
            opt = ", optimum " + _fmt(100 * om) + " % (N <= 12 only)"
        nums.append(f"{ax}: PMRL {_fmt(100 * pm)} %, Greedy {_fmt(100 * gr)} %{opt}")
    add("Beyond (V.B)", "PMRL's offloaded share moves with the load as the greedy's does "
        "(the same direction between neighbouring points)", checks,
        f"{sum(checks)}/{len(checks)} steps; " + "; ".join(nums))
    checks, nums = [], []
    for ax in PANEL_ORDER:
        pt = tabs["policy"][ax]["regret"]
        for sec, who in (("va", "PolicyMoE"), ("vb", "PMRL")):
            r = _m(pt, sec)
            checks += list(r < 0.01)
            nums.append(f"{ax} {who}: {_fmt(100 * r, digits=2)} %")
    add("Sec. IV.C (policy)", "The policy's (width, depth) is within 1% of the per-scenario "
        "best sub-network (Eq. 28 objective) at every point", checks,
        f"{sum(checks)}/{len(checks)} (point, method) pairs; regret against the Eq. 28 label: "
        + "; ".join(nums))
    loc_n = _m(vb["n_users"]["delay"], "Local execution")
    loc_f = _m(vb["f_server"]["delay"], "Local execution")
    spread = [np.ptp(loc_n) / np.mean(loc_n), np.ptp(loc_f) / np.mean(loc_f)]
    add("Fig. 7(c, d)", "Local execution's delay does not depend on the number of tasks or "
        "the server power", [s < 0.1 for s in spread],
        f"relative spread {_fmt(100 * np.asarray(spread))} % (vs N, vs f_ser; different "
        "scenarios per point)")
    checks = []
    for ax in PANEL_ORDER:
        t = vb[ax]["miss_ratio"]
        checks += list(_m(t, "Local execution") < _m(t, "Rand"))
    add("Fig. 8", "Local execution has a lower miss ratio than Rand in most cases",
        [np.mean(checks) > 0.5], f"{sum(checks)}/{len(checks)} points",
        why="in our runs a task's local delay c s / f_loc (f_loc ~ U[0.01, 0.15] GHz) is often "
        "longer than its deadline, while Rand's offloaded half shares the server among half "
        "as many tasks; the paper's sampling may give faster local CPUs")
    ga_miss = np.concatenate([_m(vb[ax]["miss_ratio"], "GA") for ax in PANEL_ORDER])
    add("Fig. 8", "GA (joint) misses every deadline", list(ga_miss >= 0.999),
        f"GA miss ratio {_fmt(100 * ga_miss)} %", why=WHY_GA)
    checks = []
    for ax in PANEL_ORDER:
        t = vb[ax]["energy"]
        checks += list(_m(t, "Local execution") >= np.max(
            [_m(t, m) for m in ("PMRL", "RL", "Rand")], axis=0))
    e_n = {m: _m(vb["n_users"]["energy"], m) for m in ("PMRL", "Local execution")}
    add("Fig. 9", "Local execution costs the most user energy; energy grows with the number "
        "of users", checks + [_increasing(e_n["PMRL"]), _increasing(e_n["Local execution"])],
        f"Local largest at {sum(checks)}/{len(checks)} points; vs N: PMRL "
        f"{_fmt(e_n['PMRL'])} J, Local {_fmt(e_n['Local execution'])} J")

    # Fig. 10 / 11.
    t = va["size_avg"]["allocator_macs"]
    pm, fx, lab = _m(t, "PolicyMoE"), _m(t, "Fix MoE"), _m(t, "Oracle")
    pt = tabs["policy"]["size_avg"]
    lw, ld, rg = _m(pt["label_width"], "va"), _m(pt["label_depth"], "va"), _m(pt["regret"], "va")
    follows = [bool(np.sign(a) == np.sign(b)) for a, b in zip(np.diff(pm), np.diff(lab),
                                                              strict=True)]
    add("Fig. 10", "PolicyMoE's MACs grow with the data amount and stay well below Fix MoE's",
        [bool(pm[-1] > pm[0])] + list(pm < 0.8 * fx),
        f"PolicyMoE {_fmt(pm, 1e-6)} M vs Fix MoE {_fmt(fx, 1e-6)} M MACs; the per-scenario "
        f"Eq. 28 label's {_fmt(lab, 1e-6)} M (mean label width {_fmt(lw)}, depth {_fmt(ld)}); "
        f"PolicyMoE moves with the label's MACs at {sum(follows)}/{len(follows)} steps",
        why="the policy regresses the Eq. 28 labels (Eq. 29), which are near-ties: choosing "
        f"its sub-network instead of each scenario's best costs {_fmt(100 * rg, digits=2)} % "
        "of the Eq. 28 objective, so the MACs it settles on need not grow with the data "
        "amount, and the labels' own mean MACs (above) do not grow monotonically either")
    t = va["size_avg"]["inference_share"]
    st, fx, pm = _m(t, "Static model"), _m(t, "Fix MoE"), _m(t, "PolicyMoE")
    add("Fig. 11", "The inference-delay share of the static model and Fix MoE falls with the "
        "data amount; PolicyMoE's is lower and more stable",
        [_decreasing(st), _decreasing(fx), bool(np.all(pm < fx)), np.ptp(pm) < np.ptp(fx)],
        f"static {_fmt(100 * st)} %, Fix MoE {_fmt(100 * fx)} %, PolicyMoE {_fmt(100 * pm)} %")

    # Fig. 12.
    pro, tra = fig12["progressive"]["steps"]["mean"], fig12["traditional"]["steps"]["mean"]
    ratio = {c: t / p for c, p, t in zip(fig12["cases"], pro, tra, strict=False)}
    checks = [ratio.get("full", 10) >= 2, ratio.get("width", 10) >= 2,
              ratio.get("depth", 1) < 2]
    add("Fig. 12", "Progressive shrinking cuts the training cost of fully and width-dynamic "
        "models a lot; little difference for depth-dynamic", checks,
        "traditional / progressive steps: " + ", ".join(f"{c} {r:.3g}x" for c, r in ratio.items())
        + f" (target gap {100 * fig12['target']:.3g}%)")
    return rows


def claims_markdown(rows: list[dict], header: str) -> str:
    """``results/claims.md``: one table row per claim."""
    lines = [header, "", "| # | Figure | Claim (Section V) | Status | Our numbers |",
             "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['figure']} | {r['claim']} | **{r['status']}** | "
                     f"{r['numbers']} |")
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("reproduced", "partly", "not reproduced")}
    lines += ["", "Totals: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + "."]
    return "\n".join(lines) + "\n"


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
    rows = claims(cfg, tabs, fig04, fig12)
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
        "claims": {s: sum(r["status"] == s for r in rows)
                   for s in ("reproduced", "partly", "not reproduced")},
    }
    header = (f"# Claims of Section V, checked against the `{cfg.preset}` run\n\n"
              "Each row is a statement of the paper's Section V (or Table I); status "
              "**reproduced** when every check holds at every swept point (means over seeds), "
              "**partly** when at least half do, else **not reproduced**.  Numbers in the "
              "figures' units (delays in ms unless marked).  Generated by "
              "`dynmec_jax/reproduce.py:claims` from the stored records.")
    sweep.atomic_write_text(results_dir / "claims.md", claims_markdown(rows, header))
    plotting.write_json({"rows": rows}, results_dir / "claims.json")
    plotting.write_json(summary, results_dir / "summary.json")
    sweep.atomic_write_text(results_dir / "config.json",
                            json.dumps(sweep.to_jsonable(cfg.to_dict()), indent=1) + "\n")
    sweep.atomic_write_text(results_dir / "README.md", results_readme(cfg, summary))
    return summary
