"""Sections V.A and V.B per sweep item: what one (point, seed) trains and measures.

:func:`make_item` returns ``item(point, seed)``, a pure program that ``vmap``
and the sharded sweep runner take whole.  It trains what the chosen methods
need (:attr:`dynmec_jax.methods.Method.needs`): the three policy variants of
Section V.A pre-trained together (Algorithm 1, lines 2-6), PMRL (Algorithm 1
from the pre-trained policy), "PMRL (paper)" and RL; then evaluates the
Section V.A methods with every task offloaded and the V.B methods on the
same held-out scenarios (:func:`dynmec_jax.methods.evaluate`).  It returns an
:class:`ItemResult` of typed records (:class:`~dynmec_jax.evaluation.Metrics`
means per method).  Units: SI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynmec_jax import evaluation, methods, pipeline, system
from dynmec_jax.baselines import droo as droo_lib
from dynmec_jax.baselines import droo_train
from dynmec_jax.evaluation import Metrics
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.experiments.names import AXES
from dynmec_jax.train import joint as train_joint
from dynmec_jax.train.config import TrainConfig

Array = Any

#: The paper's scheduler network and estimator (Eq. 21-27), trained as "PMRL (paper)".
PAPER_SCHEDULER = {"scheduler": "paper", "advantage": "raw", "estimator": "eq23", "entropy": 0.0,
                   "clip_norm": 0.0, "scheduler_hidden": 32, "scheduler_layers": 1,
                   "scheduler_passes": 1}
#: Section V.A method -> its policy variant (dynmec_jax.nets.policy), in pre-training order.
VARIANTS = {methods.POLICY_MOE.name: "full", methods.FIX_WIDTH_MOE.name: "fix_width",
            methods.FIX_DEPTH_MOE.name: "fix_depth"}
#: DROO's keys: ``fold_in(item key, DROO_STREAM)`` (a stream of its own: adding DROO leaves
#: every other method's keys, and numbers, as they were).
DROO_STREAM = 7
#: The policy-regret quantities stored per section (:func:`evaluation.policy_regret`).
REGRET = ("regret", "label_width", "label_depth", "label_macs")


class ItemResult(NamedTuple):
    """What one sweep item stores (means over its held-out scenarios).

    Attributes:
      va, vb: ``{method name: Metrics}`` of Sections V.A and V.B.
      policy: ``{"va" | "vb": {REGRET name: value}}``: the policy against the
        Eq. 28 label on the offload sets it serves.
      train: ``{variant | "pmrl" | "rl" | "droo": {name: value}}``: training summaries.
      subsample: ``{method name: {"cost": (S,)}}``: sum_i C_i of each Section V.B
        method on the first S = ``vb.optimum_scenarios`` held-out scenarios, the
        ones the certified optimum is solved for on the host
        (:mod:`dynmec_jax.experiments.optimum`).
    """

    va: dict
    vb: dict
    policy: dict
    train: dict
    subsample: dict

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> ItemResult:
        """The typed result of a stored record's ``result`` (``"vb/PMRL/cost"`` keys)."""
        groups: dict[str, dict] = {f: {} for f in cls._fields}
        for key, value in flat.items():
            head, name, leaf = key.split("/", 2)
            groups[head].setdefault(name, {})[leaf] = value
        for sec in ("va", "vb"):
            groups[sec] = {m: Metrics(**v) for m, v in groups[sec].items()
                           if set(v) == set(Metrics._fields)}
        return cls(**groups)


def train_configs(cfg: ReproduceConfig, n_users: int) -> dict[str, TrainConfig]:
    """Algorithm 1's configs of one item at N = ``n_users``: the three pre-trained policy
    variants, PMRL, RL (variant "fixed", no pre-training) and PMRL (paper)."""
    tc = dataclasses.replace(cfg.train, n_users=n_users)
    out = {v: dataclasses.replace(tc, episodes=0, variant=v) for v in VARIANTS.values()}
    # Scheduler updates see train.batch x N_default tasks per episode whatever N (fewer
    # users, more scenarios): at N = 10 a batch of 32 scenarios holds a third of the tasks
    # and the scheduler stays undertrained in the quick budget (docs/reproduction.md).
    n_default = cfg.system.n_users
    vb_batch = max(tc.batch, math.ceil(tc.batch * n_default / n_users))
    out["pmrl"] = dataclasses.replace(tc, batch=vb_batch, variant="full")
    out["rl"] = dataclasses.replace(tc, batch=vb_batch, pretrain_steps=0, variant="fixed")
    # The paper's own scheduler and estimator (5N -> 32 -> N, raw Eq. 23), from the same
    # pre-trained policy: shown beside the default.
    out["pmrl_paper"] = dataclasses.replace(out["pmrl"], **PAPER_SCHEDULER)
    return out


def figure_methods(cfg: ReproduceConfig, n_users: int) -> tuple:
    """The methods the Section V figures compute at N = ``n_users`` (both sections)."""
    return tuple(m for m in methods.REGISTRY if m.in_figures and m.applies(n_users)
                 and (m is not methods.PMRL_PAPER or cfg.vb.paper_scheduler)
                 and (m is not methods.DROO or cfg.vb.droo))


def droo_config(cfg: ReproduceConfig, n_users: int) -> droo_lib.DrooConfig:
    """DROO of a sweep item at N = ``n_users``: the reference settings, a DNN for N users,
    trained on as many scenarios as PMRL's scheduler sees (episodes x batch)."""
    pmrl = train_configs(cfg, n_users)["pmrl"]
    return droo_lib.DrooConfig(n_max=n_users, n_scenarios=pmrl.episodes * pmrl.batch)


def _means(per_method: dict) -> dict:
    return {name: jax.tree.map(jnp.mean, m) for name, m in per_method.items()}


def make_item(cfg: ReproduceConfig, n_users: int, moe_stack, static_stack, n_alloc: int,
              chosen: tuple[str, ...] | None = None):
    """``item(point, seed) -> ItemResult``: one sweep item (a pure, vmap-able program).

    ``point``: ``{field: scalar}`` overrides of :class:`SystemParams` (traced);
    ``seed``: int32 (traced).  ``chosen``: None computes every figure method
    of Sections V.A and V.B (:func:`figure_methods`); a tuple of Section V.B
    method names computes only those and what they need (PMRL's pipeline
    always: the policy regret reads it).  The keys are split the same way
    either way, so a method's numbers do not depend on which others run.
    """
    tcs = train_configs(cfg, n_users)
    base = cfg.system.replace(n_users=n_users)
    if chosen is None:
        chosen_methods = figure_methods(cfg, n_users)
    else:
        chosen_methods = tuple(m for m in (methods.get("vb", c) for c in chosen)
                               if m.applies(n_users))
    va = tuple(m for m in chosen_methods if m.section == "va" and not m.host)
    vb = tuple(m for m in chosen_methods if m.section == "vb" and not m.host)
    n_sub = cfg.vb.optimum_scenarios
    need = methods.needs(chosen_methods) | {"pmrl"}
    # The three variants pre-train together when V.A needs them; V.B alone needs the
    # full one only (the first of the three: the same stream).
    variants = tuple(VARIANTS.values()) if "policies" in need else ("full",)
    subsample = {"ga": cfg.va.ga_batch}

    def item(point: dict, seed: Array) -> ItemResult:
        sp = base.replace(**point)
        idx = seed % n_alloc
        alloc = jax.tree.map(lambda a: a[idx], moe_stack)
        key = jax.random.fold_in(jax.random.PRNGKey(1), seed)
        k_pre, k_pmrl, k_rl, _, k_vb, k_ga = jax.random.split(key, 6)
        k_eval = jax.random.fold_in(jax.random.PRNGKey(cfg.eval_seed), seed)
        keys = {"rand": jax.random.split(k_vb)[0], "ga_va": k_ga,
                "ga_vb": jax.random.fold_in(k_ga, 1)}
        train: dict = {}
        policy: dict = {}

        pre = train_joint.make_pretrain({v: tcs[v] for v in variants}, alloc)(k_pre, sp)
        pols = {v: (p, o) for v, (p, o, _) in pre.items()}
        for v, (_, _, m) in pre.items():
            train[v] = {"pretrain_accuracy": jnp.mean(m["accuracy"][-20:])}

        state, joint = train_joint.make_joint(tcs["pmrl"], alloc)(k_pmrl, sp, *pols["full"])
        pmrl = pipeline.make_pipeline(tcs["pmrl"], alloc, state)
        tail = max(1, cfg.train.episodes // 10)
        train["pmrl"] = {"reward": jnp.mean(joint["reward"][-tail:]),
                         "cost": jnp.mean(joint["cost"][-tail:])}
        inputs = methods.Inputs(allocator=alloc, policies={v: p for v, (p, _) in pols.items()},
                                pmrl=pmrl, keys=keys, ga_iters=cfg.va.ga_iters,
                                ga_pop_factor=cfg.va.ga_pop_factor)
        if "rl" in need:
            rl_state, rl_m = train_joint.make_train(tcs["rl"], alloc)(k_rl, sp)
            inputs = inputs._replace(rl=pipeline.make_pipeline(tcs["rl"], alloc, rl_state))
            train["rl"] = {"cost": jnp.mean(rl_m["joint"]["cost"][-tail:])}
        if "pmrl_paper" in need:
            p_state, _ = train_joint.make_joint(tcs["pmrl_paper"], alloc)(k_pmrl, sp,
                                                                          *pols["full"])
            inputs = inputs._replace(
                pmrl_paper=pipeline.make_pipeline(tcs["pmrl_paper"], alloc, p_state))
        if "static" in need:
            inputs = inputs._replace(static=jax.tree.map(lambda a: a[idx], static_stack))
        if "droo" in need:
            d_state, d_m = droo_train.make_train(droo_config(cfg, n_users))(
                jax.random.fold_in(key, DROO_STREAM), sp)
            inputs = inputs._replace(droo=d_state)
            train["droo"] = {"cost": jnp.mean(d_m["cost"][-max(1, d_m["cost"].shape[0] // 10):]),
                             "k": d_state.k.astype(jnp.float32)}

        res_va = {}
        if va:   # Section V.A: every task offloaded
            scn = system.sample_scenarios(k_eval, sp, cfg.va.eval_batch)
            res_va = methods.evaluate(va, inputs, scn, sp, subsample)
            m_va = pipeline.build_models(tcs["full"], alloc)
            policy["va"] = evaluation.policy_regret(m_va, pols["full"][0], alloc, scn,
                                                    jnp.ones(scn.shape, bool), sp)
        # Section V.B: users have computing power.
        scn_b = system.sample_scenarios(jax.random.fold_in(k_eval, 1), sp, cfg.vb.eval_batch)
        res_vb = methods.evaluate(vb, inputs, scn_b, sp, subsample)
        sub = {name: {"cost": m.cost[:n_sub]} for name, m in res_vb.items()}
        # The policy against the per-scenario best sub-network (Eq. 28) on PMRL's sets.
        x_b = pipeline.decide_body(pmrl, scn_b, sp).offload
        policy["vb"] = evaluation.policy_regret(pmrl.models, state.policy, alloc, scn_b, x_b,
                                                sp)
        policy = {sec: {k: jnp.mean(v) for k, v in reg.items()} for sec, reg in policy.items()}
        return ItemResult(va=_means(res_va), vb=_means(res_vb), policy=policy, train=train,
                          subsample=sub)

    return item


def default_point(cfg: ReproduceConfig) -> dict:
    """The Table II point of the shared-shape sweep: ``{axis: value}`` of the run's system."""
    return {a: float(getattr(cfg.system, a)) for a in AXES}
