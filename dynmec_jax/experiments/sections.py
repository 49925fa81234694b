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


def make_stages(cfg: ReproduceConfig, n_users: int, moe_stack, static_stack, n_alloc: int,
                chosen: tuple[str, ...] | None = None) -> dict:
    """The stages of one sweep item, ``{name: stage(point, seed, deps) -> outputs}``, in order.

    One stage per method family: ``"pretrain"`` (the policy variants of
    Section V.A, Algorithm 1 lines 2-6), ``"pmrl"`` (Algorithm 1's episodes
    of PMRL from the pre-trained full policy and, as the chosen methods need
    them, of PMRL (paper) from the same policy and of RL from its own
    initialisation, all in one scan on the same training scenarios:
    :func:`~dynmec_jax.train.joint.make_joint_group`; outputs ``{name:
    {"state", "train"}}``), ``"droo"`` when DROO is chosen, and last
    ``"evaluate"`` (Sections V.A and V.B on the held-out scenarios), which
    returns the :class:`ItemResult`.
    ``deps`` maps the names of the earlier stages to their outputs; a
    stage's optional fourth argument ``stacks`` = ``(moe_stack, static_stack)``
    replaces the ones given here (:func:`staged_compute` passes them as
    arguments of its programs, so that a program does not depend on the
    allocators' values).  Each
    stage derives its PRNG keys from ``seed`` as :func:`make_item` does, so
    composing the stages in one program (:func:`make_item`) or running each
    as its own compiled program (:func:`staged_compute`: a smaller program
    compiles in less than its share of the monolith) computes the same
    numbers.  Arguments as :func:`make_item`.
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
    tail = max(1, cfg.train.episodes // 10)

    def common(point: dict, seed: Array, stacks):
        """The item's system, allocator index, allocator and keys (every stage alike)."""
        sp = base.replace(**point)
        idx = seed % n_alloc
        alloc = jax.tree.map(lambda a: a[idx], moe_stack if stacks is None else stacks[0])
        key = jax.random.fold_in(jax.random.PRNGKey(1), seed)
        return sp, idx, alloc, key, jax.random.split(key, 6)

    def pretrain(point, seed, deps, stacks=None):
        sp, _, alloc, _, ks = common(point, seed, stacks)
        pre = train_joint.make_pretrain({v: tcs[v] for v in variants}, alloc)(ks[0], sp)
        return {"pols": {v: (p, o) for v, (p, o, _) in pre.items()},
                "train": {v: {"pretrain_accuracy": jnp.mean(m["accuracy"][-20:])}
                          for v, (_, _, m) in pre.items()}}

    # PMRL, and as the chosen methods need them RL and PMRL (paper), train in one scan on
    # the same episodes' scenarios (train_joint.make_joint_group): the frozen allocator's
    # sub-networks are computed once per episode for all of them.
    group = ("pmrl",) + tuple(n for n in ("rl", "pmrl_paper") if n in need)

    def pmrl(point, seed, deps, stacks=None):
        sp, _, alloc, _, ks = common(point, seed, stacks)
        pol = deps["pretrain"]["pols"]["full"]
        k_sched, k_eps = jax.random.split(ks[1])      # as make_joint(tcs["pmrl"]) splits it
        states = {}
        for name in group:
            if name == "rl":   # its own initialisation (no pre-training), PMRL's episodes
                states[name] = train_joint.make_start(tcs[name], alloc)(ks[2], sp)[0]
            else:              # from the pre-trained full policy
                states[name] = train_joint.joint_parts(tcs[name], alloc)[0](k_sched, *pol)
        states, m = train_joint.make_joint_group({n: tcs[n] for n in group}, alloc)(
            states, k_eps, sp)
        out = {n: {"state": states[n], "train": {"cost": jnp.mean(m[n]["cost"][-tail:])}}
               for n in group}
        out["pmrl"]["train"]["reward"] = jnp.mean(m["pmrl"]["reward"][-tail:])
        return out

    def droo(point, seed, deps, stacks=None):
        sp, _, _, key, _ = common(point, seed, stacks)
        d_state, d_m = droo_train.make_train(droo_config(cfg, n_users))(
            jax.random.fold_in(key, DROO_STREAM), sp)
        tail_d = max(1, d_m["cost"].shape[0] // 10)
        return {"state": d_state, "train": {"cost": jnp.mean(d_m["cost"][-tail_d:]),
                                            "k": d_state.k.astype(jnp.float32)}}

    def evaluate(point, seed, deps, stacks=None) -> ItemResult:
        sp, idx, alloc, _, ks = common(point, seed, stacks)
        k_vb, k_ga = ks[4], ks[5]
        k_eval = jax.random.fold_in(jax.random.PRNGKey(cfg.eval_seed), seed)
        keys = {"rand": jax.random.split(k_vb)[0], "ga_va": k_ga,
                "ga_vb": jax.random.fold_in(k_ga, 1)}
        pols = deps["pretrain"]["pols"]
        train: dict = dict(deps["pretrain"]["train"])
        joint = deps["pmrl"]
        train["pmrl"] = joint["pmrl"]["train"]
        policy: dict = {}
        state = joint["pmrl"]["state"]
        pmrl_pipe = pipeline.make_pipeline(tcs["pmrl"], alloc, state)
        inputs = methods.Inputs(allocator=alloc, policies={v: p for v, (p, _) in pols.items()},
                                pmrl=pmrl_pipe, keys=keys, ga_iters=cfg.va.ga_iters,
                                ga_pop_factor=cfg.va.ga_pop_factor)
        if "rl" in need:
            inputs = inputs._replace(rl=pipeline.make_pipeline(tcs["rl"], alloc,
                                                               joint["rl"]["state"]))
            train["rl"] = joint["rl"]["train"]
        if "pmrl_paper" in need:
            inputs = inputs._replace(pmrl_paper=pipeline.make_pipeline(
                tcs["pmrl_paper"], alloc, joint["pmrl_paper"]["state"]))
        if "static" in need:
            inputs = inputs._replace(static=jax.tree.map(
                lambda a: a[idx], static_stack if stacks is None else stacks[1]))
        if "droo" in need:
            inputs = inputs._replace(droo=deps["droo"]["state"])
            train["droo"] = deps["droo"]["train"]

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
        x_b = pipeline.decide_body(pmrl_pipe, scn_b, sp).offload
        policy["vb"] = evaluation.policy_regret(pmrl_pipe.models, state.policy, alloc, scn_b,
                                                x_b, sp)
        policy = {sec: {k: jnp.mean(v) for k, v in reg.items()} for sec, reg in policy.items()}
        return ItemResult(va=_means(res_va), vb=_means(res_vb), policy=policy, train=train,
                          subsample=sub)

    stages = {"pretrain": pretrain, "pmrl": pmrl}
    if "droo" in need:
        stages["droo"] = droo
    stages["evaluate"] = evaluate
    return stages


def make_item(cfg: ReproduceConfig, n_users: int, moe_stack, static_stack, n_alloc: int,
              chosen: tuple[str, ...] | None = None):
    """``item(point, seed) -> ItemResult``: one sweep item (a pure, vmap-able program).

    ``point``: ``{field: scalar}`` overrides of :class:`SystemParams` (traced);
    ``seed``: int32 (traced).  ``chosen``: None computes every figure method
    of Sections V.A and V.B (:func:`figure_methods`); a tuple of Section V.B
    method names computes only those and what they need (PMRL's pipeline
    always: the policy regret reads it).  The keys are split the same way
    either way, so a method's numbers do not depend on which others run.
    The stages of :func:`make_stages` composed in one function.
    """
    stages = make_stages(cfg, n_users, moe_stack, static_stack, n_alloc, chosen)

    def item(point: dict, seed: Array) -> ItemResult:
        deps: dict = {}
        for name, stage in stages.items():
            deps[name] = stage(point, seed, deps)
        return deps["evaluate"]

    return item


def staged_compute(stages: dict, drop: tuple[str, ...] = (), stacks=None,
                   map_stages: tuple[str, ...] = ()):
    """``compute(point_batch, seed_batch)`` for :func:`dynmec_jax.sweep.run_sweep` that runs
    each stage of :func:`make_stages` as its own ``jit(vmap(stage))`` program.

    The stages' outputs stay on the devices (sharded as the inputs) between
    programs.  ``drop``: point names removed before the stages see the point
    (the N sweep's label).  ``stacks``: ``(moe_stack, static_stack)`` passed to
    every program as an argument (not vmapped) instead of the stages' own,
    which would be compiled in as constants: the programs then depend on the
    allocators' shapes only, so the persistent compilation cache serves a
    run whose allocators were retrained, or the run after a plan
    (:mod:`~dynmec_jax.experiments.plan`, random weights).  The function
    carries ``staged = True`` (the sweep runner then does not wrap it in one
    more ``jit``), ``programs``, the jitted stages by name (for lowering them
    apart, e.g. the plan), and ``args(points, seeds, deps)``, the arguments
    of a program (``stacks`` appended when given).

    ``map_stages``: names of stages that run item by item (``lax.map`` over
    the chunk's items) instead of ``vmap``-ped: their temporary memory is
    one item's, not the chunk's, for about the same run time (the
    evaluation stage of the quick preset at N = 30, 5 items: 193 MB instead
    of 954 MB, 2.73 s against 2.66 s, and it compiles in 11 s instead of
    17 s; docs/performance.md).  The values are the vmapped ones up to
    float32 rounding, except where a method's search amplifies rounding
    (the GAs).  For one device:
    a scan over the items does not shard (:func:`map_on_one_device`).
    """
    def program(name, stage):
        if name in map_stages:
            def mapped(points, seeds, deps, *shared):
                return jax.lax.map(lambda x: stage(*x, *shared), (points, seeds, deps))
            return jax.jit(mapped)
        return jax.jit(jax.vmap(stage, in_axes=(0, 0, 0) + ((None,) if stacks is not None
                                                              else ())))

    unknown = set(map_stages) - set(stages)
    if unknown:
        raise ValueError(f"map_stages names no stage: {sorted(unknown)} (stages: {list(stages)})")
    programs = {name: program(name, stage) for name, stage in stages.items()}

    def args(point_batch, seed_batch, deps):
        return (point_batch, seed_batch, deps) + (() if stacks is None else (stacks,))

    def compute(point_batch, seed_batch):
        point_batch = {k: v for k, v in point_batch.items() if k not in drop}
        deps: dict = {}
        for name, prog in programs.items():
            deps[name] = prog(*args(point_batch, seed_batch, deps))
        return deps["evaluate"]

    compute.staged = True
    compute.programs = programs
    compute.args = args
    return compute


def map_on_one_device(mesh=None) -> tuple[str, ...]:
    """The stages :func:`staged_compute` runs item by item: the evaluation stage when the
    chunk is on one device (``mesh`` None and one device, or a one-device mesh), none
    otherwise (a ``vmap`` shards over the devices, a scan over the items would not)."""
    n = jax.device_count() if mesh is None else mesh.devices.size
    return ("evaluate",) if n == 1 else ()


def default_point(cfg: ReproduceConfig) -> dict:
    """The Table II point of the shared-shape sweep: ``{axis: value}`` of the run's system."""
    return {a: float(getattr(cfg.system, a)) for a in AXES}
