"""Sections V.A and V.B per sweep item: what one (point, seed) trains and measures.

:func:`make_item` returns ``item(point, seed)``, a pure program that ``vmap``
and the sharded sweep runner take whole: it pre-trains the three policy
variants of Section V.A together (Algorithm 1, lines 2-6), evaluates the V.A
methods with every task offloaded, trains PMRL (Algorithm 1 from the
pre-trained policy), "PMRL (paper)" and RL, and evaluates the V.B methods
(with the greedy, the GA and, for N <= 12, the exhaustive optimum) on the
same held-out scenarios.  Units: SI (the metrics of
:func:`dynmec_jax.evaluation.scenario_metrics`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from dynmec_jax import evaluation, pipeline, system
from dynmec_jax.baselines import exhaustive
from dynmec_jax.experiments.names import (
    AXES,
    METRICS,
    PMRL_PAPER,
    VA_METHODS,
    VB_METHODS,
    VB_OPTIMUM,
)
from dynmec_jax.system import SystemParams
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

Array = Any


#: The paper's scheduler network and estimator (Eq. 21-27), trained as PMRL_PAPER.
PAPER_SCHEDULER = {"scheduler": "paper", "advantage": "raw", "estimator": "eq23", "entropy": 0.0,
                   "clip_norm": 0.0, "scheduler_hidden": 32, "scheduler_layers": 1,
                   "scheduler_passes": 1}


#: Section V.A method -> its policy variant (dynmec_jax.nets.policy).
VARIANTS = {"PolicyMoE": "full", "Fix width MoE": "fix_width", "Fix depth MoE": "fix_depth"}


def base_params(cfg) -> SystemParams:
    """The default system of the run (Table II with ``cfg.allocator.system`` overrides)."""
    return system.params_from_overrides(cfg.allocator.system.to_dict())


def train_configs(cfg, n_users: int) -> dict:
    va, vb = cfg.va, cfg.vb
    common = dict(n_users=n_users, policy_lr=float(va.policy_lr),
                  scheduler_lr=float(vb.scheduler_lr), estimator=str(vb.estimator),
                  scheduler=str(vb.scheduler), scheduler_hidden=int(vb.scheduler_hidden),
                  scheduler_layers=int(vb.scheduler_layers),
                  scheduler_passes=int(vb.scheduler_passes), advantage=str(vb.advantage),
                  entropy=float(vb.entropy), clip_norm=float(vb.clip_norm))
    out = {v: train_config.TrainConfig(batch=int(va.batch), pretrain_steps=int(va.pretrain_steps),
                                       episodes=0, variant=v, **common)
           for v in VARIANTS.values()}
    # Scheduler updates see vb.batch x N_default tasks per episode whatever N (fewer users,
    # more scenarios): at N = 10 a batch of 32 scenarios holds a third of the tasks and the
    # scheduler stays undertrained in the quick budget (docs/reproduction.md).
    n_default = base_params(cfg).n_users
    vb_batch = max(int(vb.batch), math.ceil(int(vb.batch) * n_default / n_users))
    out["pmrl"] = train_config.TrainConfig(batch=vb_batch, pretrain_steps=int(va.pretrain_steps),
                                           episodes=int(vb.episodes), variant="full", **common)
    out["rl"] = train_config.TrainConfig(batch=vb_batch, pretrain_steps=0,
                                         episodes=int(vb.episodes), variant="fixed", **common)
    # The paper's own scheduler and estimator (5N -> 32 -> N, raw Eq. 23), from the same
    # pre-trained policy: shown beside the default (PMRL (paper) in the figures and claims).
    out["pmrl_paper"] = dataclasses.replace(out["pmrl"], **PAPER_SCHEDULER)
    return out


def _mean_metrics(prefix: str, per_method: dict, out: dict) -> None:
    for name, m in per_method.items():
        for k in METRICS:
            out[f"{prefix}/{name}/{k}"] = jnp.mean(m[k])


#: Section V.B methods a sweep over any field can compute (:func:`make_item`'s ``methods``).
VB_CHOICES = VB_METHODS + ("Fix MoE", VB_OPTIMUM)


def make_item(cfg, n_users: int, moe_stack, static_stack, n_alloc: int,
              methods: tuple[str, ...] | None = None):
    """``item(point, seed) -> {name: scalar}``: one sweep item (a pure, vmap-able program).

    ``point``: ``{field: scalar}`` overrides of :class:`SystemParams` (traced);
    ``seed``: int32 (traced).  See the module doc for what an item does.
    Result names: ``va/<method>/<metric>``, ``vb/<method>/<metric>``,
    ``policy/...`` (regret against the Eq. 28 label) and ``train/...`` (policy
    accuracy after pre-training, the last episodes' mean reward and cost).

    ``methods``: None computes every method of Sections V.A and V.B (the
    figures); a tuple of :data:`VB_CHOICES` computes only Section V.B and
    only what those methods need (PMRL's pipeline always: Rand and Fix MoE
    use it).  The keys are split the same way either way, so a method's
    numbers do not depend on which others are computed.
    """
    tcs = train_configs(cfg, n_users)
    base = base_params(cfg).replace(n_users=n_users)
    va, vb = cfg.va, cfg.vb
    if methods is not None:
        unknown = [m for m in methods if m not in VB_CHOICES]
        if unknown:
            raise ValueError(f"methods {unknown} are not among {VB_CHOICES}")
    want = set(VB_CHOICES if methods is None else methods)
    all_sections = methods is None
    paper = PMRL_PAPER in want and bool(vb.paper_scheduler or not all_sections)

    def item(point: dict, seed: Array) -> dict:
        sp = base.replace(**point)
        idx = seed % n_alloc
        alloc = jax.tree.map(lambda a: a[idx], moe_stack)
        key = jax.random.fold_in(jax.random.PRNGKey(1), seed)
        k_pre, k_pmrl, k_rl, k_va, k_vb, k_ga = jax.random.split(key, 6)
        k_eval = jax.random.fold_in(jax.random.PRNGKey(int(cfg.eval_seed)), seed)
        out = {}

        # The three policy variants of Section V.A, pre-trained together (Algorithm 1, 2-6);
        # Section V.B alone needs only the full one (the first: the same stream).
        names = VARIANTS.values() if all_sections else ("full",)
        pre = train_joint.make_pretrain({v: tcs[v] for v in names}, alloc)(k_pre, sp)
        pols = {v: (p, o) for v, (p, o, _) in pre.items()}
        for v, (_, _, m) in pre.items():
            out[f"train/{v}/pretrain_accuracy"] = jnp.mean(m["accuracy"][-20:])

        if all_sections:
            # Section V.A: every task offloaded.
            static = jax.tree.map(lambda a: a[idx], static_stack)
            scn = system.sample_scenarios(k_eval, sp, int(va.eval_batch))
            res = evaluation.section_va(k_va, scn, sp, alloc, pols["full"][0], static,
                                        pols["fix_width"][0], pols["fix_depth"][0],
                                        ga_iters=None)
            sub = jax.tree.map(lambda a: a[: int(va.ga_batch)], scn)
            ga = evaluation.genetic(k_ga, sub, sp, joint=False, n_iters=int(va.ga_iters),
                                    pop_factor=int(va.ga_pop_factor))
            res["GA"] = evaluation.scenario_metrics(sub, ga, sp)
            _mean_metrics("va", {k: res[k] for k in VA_METHODS}, out)

        # Section V.B: users have computing power; Algorithm 1.
        state, joint = train_joint.make_joint(tcs["pmrl"], alloc)(k_pmrl, sp, *pols["full"])
        pmrl = pipeline.make_pipeline(tcs["pmrl"], alloc, state)
        tail = max(1, int(vb.episodes) // 10)
        out["train/pmrl/reward"] = jnp.mean(joint["reward"][-tail:])
        out["train/pmrl/cost"] = jnp.mean(joint["cost"][-tail:])
        rl = None
        if "RL" in want:
            rl_state, rl_m = train_joint.make_train(tcs["rl"], alloc)(k_rl, sp)
            rl = pipeline.make_pipeline(tcs["rl"], alloc, rl_state)
            out["train/rl/cost"] = jnp.mean(rl_m["joint"]["cost"][-tail:])
        scn_b = system.sample_scenarios(jax.random.fold_in(k_eval, 1), sp, int(vb.eval_batch))
        res_b = evaluation.section_vb(k_vb, scn_b, sp, pmrl, rl, ga_iters=None)
        if paper:
            p_state, _ = train_joint.make_joint(tcs["pmrl_paper"], alloc)(k_pmrl, sp,
                                                                          *pols["full"])
            pmrl_paper = pipeline.make_pipeline(tcs["pmrl_paper"], alloc, p_state)
            res_b[PMRL_PAPER] = evaluation.scenario_metrics(
                scn_b, evaluation.pipeline_method(pmrl_paper, scn_b, sp), sp)
        if "GA" in want:
            sub_b = jax.tree.map(lambda a: a[: int(va.ga_batch)], scn_b)
            ga_b = evaluation.genetic(jax.random.fold_in(k_ga, 1), sub_b, sp, joint=True,
                                      n_iters=int(va.ga_iters),
                                      pop_factor=int(va.ga_pop_factor))
            res_b["GA"] = evaluation.scenario_metrics(sub_b, ga_b, sp)
        if VB_OPTIMUM in want and n_users <= exhaustive.MAX_USERS:
            res_b[VB_OPTIMUM] = evaluation.scenario_metrics(
                scn_b, evaluation.exhaustive(scn_b, sp), sp)
        shown = VB_METHODS + (VB_OPTIMUM,) if all_sections else tuple(methods)
        _mean_metrics("vb", {k: res_b[k] for k in shown if k in res_b}, out)

        # The policy against the per-scenario best sub-network (Eq. 28), on the offload
        # sets it serves: all tasks (V.A, PolicyMoE) and PMRL's (V.B).
        regrets = {}
        if all_sections:
            m_va = pipeline.build_models(tcs["full"], alloc)
            regrets["va"] = evaluation.policy_regret(m_va, pols["full"][0], alloc, scn,
                                                     jnp.ones(scn.shape, bool), sp)
        x_b = pipeline.decide_body(pmrl, scn_b, sp).offload
        regrets["vb"] = evaluation.policy_regret(pmrl.models, state.policy, alloc, scn_b, x_b,
                                                 sp)
        for sec, reg in regrets.items():
            for k, v in reg.items():
                out[f"policy/{sec}/{k}"] = jnp.mean(v)
        return out

    return item


def default_point(cfg) -> dict:
    sp = base_params(cfg)
    return {a: float(getattr(sp, a)) for a in AXES}
