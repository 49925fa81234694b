"""Typed training configs: frozen dataclasses, validated once when built.

The launchers read ``ml_collections`` configs (``dynmec_jax/configs/``) and
turn them into these at the top (:func:`allocator_config`,
:func:`joint_config`); the library below takes only typed values.  A bad
value raises ``ValueError`` naming the field, which the launchers print as
one line with exit code 2.  Being frozen and hashable, a config can key a
cache (e.g. the compiled functions of Fig. 12).

* :class:`AllocatorConfig`: the allocation network and its training
  (Section IV.A-B, Table II).
* :class:`TrainConfig`: Algorithm 1 (scheduler and policy, Section IV.C).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import costs, system
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net

#: Table II: learning rate of the scheduling model.
SCHEDULER_LR = 2e-3
#: Table II: learning rate of the policy model.
POLICY_LR = 1e-4
#: Optimisers the scheduler and policy may use.
OPTIMIZERS = ("adam", "sgd")
#: Sub-network sets a dynamic allocator may be trained for (:func:`subnet_set`).
CASES = ("full", "width", "depth", "largest")


def _at_least(name: str, value, lo) -> None:
    if not value >= lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


# ----------------------------------------------------------------------------
# Progressive shrinking (Section IV.B, Fig. 3) as data
# ----------------------------------------------------------------------------

def subnet_set(case: str, K: int, L: int) -> np.ndarray:
    """Boolean ``(K, L)``: the sub-networks a dynamic model must support.

    ``case``: "full" (width and depth dynamic: all K x L), "width" (width
    dynamic at depth L), "depth" (depth dynamic at width K), "largest".
    """
    s = np.zeros((K, L), bool)
    if case == "full":
        s[:] = True
    elif case == "width":
        s[:, L - 1] = True
    elif case == "depth":
        s[K - 1, :] = True
    elif case == "largest":
        s[K - 1, L - 1] = True
    else:
        raise ValueError(f"unknown sub-network case {case!r}")
    return s


def progressive_phases(case: str, K: int, L: int) -> list[tuple[str, np.ndarray]]:
    """Phases of progressive shrinking for ``case``: (name, allowed (K, L)).

    Full network first; then elastic width (all widths at depth L), then
    elastic depth (all depths at width K), then both (every sub-network), each
    restricted to the case's sub-networks.  Phases that add nothing new are
    dropped (e.g. "depth" for the width-only case).
    """
    target = subnet_set(case, K, L)
    phases = [("largest", subnet_set("largest", K, L))]
    seen = phases[0][1].copy()
    for name in ("width", "depth", "full"):
        allowed = subnet_set(name, K, L) & target
        if (allowed & ~seen).any():
            phases.append((name if name != "full" else "both", allowed))
            seen |= allowed
    return phases


def schedule_table(phases: list[tuple[str, np.ndarray]], steps: list[int]) -> np.ndarray:
    """Per-step allowed table ``(sum(steps), K, L)`` from phases and their step counts."""
    if len(phases) != len(steps):
        raise ValueError(f"{len(phases)} phases but {len(steps)} step counts")
    return np.concatenate([np.broadcast_to(a, (n,) + a.shape)
                           for (_, a), n in zip(phases, steps, strict=True)])


# ----------------------------------------------------------------------------
# The allocator
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AllocatorConfig:
    """The allocation network and its training (Fig. 2(b), Section IV.B).

    Attributes:
      kind: "moe" (Section IV.A) or "static" (Section V.A's baseline).
      n_experts, n_layers: K and L (the static model has L layers).
      hidden: units per expert layer; static_hidden: the static model's.
      negative_slope: LeakyReLU slope.
      batch: scenarios per step; lr: Adam's learning rate (Table II: 1e-3).
      case: the sub-networks to support (:data:`CASES`).
      phase_steps: steps per progressive-shrinking phase
        (:func:`progressive_phases`; the static model trains
        ``sum(phase_steps)`` steps of its one network).
      chunk_steps: steps per compiled ``lax.scan`` chunk (checkpoint interval).
      offload_all_fraction: share of training scenarios that offload every task.
      load_balance_weight: weight of the importance loss (0 = off).
      micro_batch: scenarios per gradient slice (None = the whole batch);
        see :func:`dynmec_jax.train.allocator.make_train_step`.
    """

    kind: str = "moe"
    n_experts: int = 10
    n_layers: int = 3
    hidden: int = 64
    static_hidden: int = 384
    negative_slope: float = 0.01
    batch: int = 128
    lr: float = 1e-3
    case: str = "full"
    phase_steps: tuple = (200, 300, 300, 600)
    chunk_steps: int = 100
    offload_all_fraction: float = 0.5
    load_balance_weight: float = 0.0
    micro_batch: int | None = None

    def __post_init__(self):
        _one_of("model.kind", self.kind, allocator_lib.KINDS)
        for name in ("n_experts", "n_layers", "hidden", "static_hidden"):
            _at_least(f"model.{name}", getattr(self, name), 1)
        for name in ("batch", "chunk_steps"):
            _at_least(f"train.{name}", getattr(self, name), 1)
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.offload_all_fraction <= 1:
            raise ValueError("train.offload_all_fraction must be in [0, 1], got "
                             f"{self.offload_all_fraction}")
        _at_least("train.load_balance_weight", self.load_balance_weight, 0)
        if self.micro_batch is not None and (self.micro_batch < 1
                                             or self.batch % self.micro_batch):
            raise ValueError(f"train.micro_batch must divide train.batch={self.batch}, "
                             f"got {self.micro_batch}")
        if self.kind == "moe":
            _one_of("train.case", self.case, CASES)
        phases = self.phases()
        steps = self._steps(phases)
        if len(steps) != len(phases) or any(s < 0 for s in steps) or sum(steps) < 1:
            raise ValueError(
                f"train.phase_steps must give one non-negative step count per phase "
                f"{[p[0] for p in phases]} of case {self.subnet_case!r}, "
                f"got {tuple(self.phase_steps)}")

    @property
    def subnet_case(self) -> str:
        """The sub-networks trained: ``case``, or "largest" for the static model."""
        return self.case if self.kind == "moe" else "largest"

    @property
    def max_width(self) -> int:
        """K of the network (1 for the static model)."""
        return self.n_experts if self.kind == "moe" else 1

    def phases(self) -> list[tuple[str, np.ndarray]]:
        """The progressive-shrinking phases (:func:`progressive_phases`)."""
        return progressive_phases(self.subnet_case, self.max_width, self.n_layers)

    def _steps(self, phases) -> list[int]:
        steps = [int(s) for s in self.phase_steps]
        return steps[:len(phases)] if self.kind == "static" else steps

    def schedule(self) -> np.ndarray:
        """The per-step allowed table ``(T, K, L)`` (:func:`schedule_table`)."""
        phases = self.phases()
        if self.kind == "static":
            return schedule_table(phases, [sum(int(s) for s in self.phase_steps)])
        return schedule_table(phases, self._steps(phases))

    def model(self):
        """The Flax network (:func:`dynmec_jax.allocator.build_model`)."""
        return allocator_lib.build_model(self.kind, self.n_experts, self.n_layers, self.hidden,
                                         self.static_hidden, self.negative_slope)

    def model_dict(self) -> dict:
        """The model fields, as stored in a checkpoint's ``allocator.json``."""
        return {k: getattr(self, k) for k in ("kind", "n_experts", "n_layers", "hidden",
                                              "static_hidden", "negative_slope")}


def allocator_config(cfg) -> AllocatorConfig:
    """The :class:`AllocatorConfig` of a ``configs/allocator.py`` config, with its run fields
    (seeds, export seed, evaluation, system) checked too.  ``ValueError`` names the field."""
    m, t = cfg.model, cfg.train
    if int(cfg.n_seeds) < 1:
        raise ValueError(f"n_seeds must be >= 1, got {cfg.n_seeds}")
    if not 0 <= int(cfg.export_seed) < int(cfg.n_seeds):
        raise ValueError(f"export_seed must be in [0, n_seeds), got {cfg.export_seed}")
    if not 0 < cfg.eval.offload_fraction <= 1 or int(cfg.eval.batch) < 1:
        raise ValueError("eval.offload_fraction must be in (0, 1] and eval.batch >= 1")
    system.params_from_overrides(cfg.system.to_dict())
    micro = t.get("micro_batch", None)
    return AllocatorConfig(
        kind=str(m.kind), n_experts=int(m.n_experts), n_layers=int(m.n_layers),
        hidden=int(m.hidden), static_hidden=int(m.static_hidden),
        negative_slope=float(m.negative_slope), batch=int(t.batch), lr=float(t.lr),
        case=str(t.case), phase_steps=tuple(int(s) for s in t.phase_steps),
        chunk_steps=int(t.chunk_steps), offload_all_fraction=float(t.offload_all_fraction),
        load_balance_weight=float(t.load_balance_weight),
        micro_batch=None if micro is None else int(micro))


# ----------------------------------------------------------------------------
# Algorithm 1
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static settings of Algorithm 1 (shapes, step counts, optimiser choices).

    Attributes:
      n_users: N of the training scenarios (the paper's scheduler is built
        for it; the set scheduler serves any N); with ``n_users_min``, the
        largest N.
      n_users_min: None (every scenario has ``n_users`` users) or the
        smallest N of mixed-N training: each scenario has N ~ U{n_users_min,
        ..., n_users} users, padded to ``n_users`` with a mask
        (:func:`dynmec_jax.system.sample_mixed_scenarios`; "set" scheduler
        only).
      batch: scenarios per step (pre-training and episodes).
      pretrain_steps: policy pre-training steps with all tasks offloaded
        (Algorithm 1, lines 2-6).
      episodes: E_max of Algorithm 1 (one batch and one update of each model
        per episode).
      scheduler_lr, policy_lr: Table II: 2e-3 and 1e-4.
      scheduler_optimizer, policy_optimizer: "adam" or "sgd".
      estimator: "marginal" (the default; beyond the paper: Eq. 23's update on
        the system-level counterfactual costs of
        :func:`~dynmec_jax.costs.marginal_costs`), "eq23" (Eq. 23 with
        the task's own costs held fixed) or "reinforce".
      variant: "full", "fix_width", "fix_depth" or "fixed"
        (:mod:`dynmec_jax.nets.policy`).
      fixed_width, fixed_depth: the sub-network of variant "fixed" (None:
        the largest, K and L).
      scheduler_hidden, policy_hidden: hidden units (Section V: 32).
      scheduler: the scheduler network, "set" (per-user
        :class:`~dynmec_jax.nets.scheduler.SetScheduler`, parameters
        independent of N; the default) or "paper" (Eq. 21-22's ``5N -> 32 -> N``).
      scheduler_layers: hidden layers per pass of the "set" scheduler (the
        paper's has one).
      scheduler_passes: passes of the "set" scheduler (2: a second pass that
        also sees the tasks the first pass would offload).
      advantage: "relative" (default) or "raw" (Eq. 23 as printed); see
        :func:`~dynmec_jax.costs.advantages`.
      entropy: weight of an entropy bonus on the offloading probabilities at
        the first episode, decaying linearly to 0 at the last (0 = none).
      clip_norm: global-norm clip of the scheduler's gradient (0 = none).
    """

    n_users: int = 30
    batch: int = 64
    pretrain_steps: int = 3000
    episodes: int = 2000
    scheduler_lr: float = SCHEDULER_LR
    policy_lr: float = POLICY_LR
    scheduler_optimizer: str = "adam"
    policy_optimizer: str = "adam"
    estimator: str = "marginal"
    variant: str = "full"
    fixed_width: int | None = None
    fixed_depth: int | None = None
    scheduler_hidden: int = scheduler_net.HIDDEN
    policy_hidden: int = scheduler_net.HIDDEN
    scheduler: str = "set"
    scheduler_layers: int = 2
    scheduler_passes: int = 2
    advantage: str = "relative"
    entropy: float = 0.0
    clip_norm: float = 0.0
    n_users_min: int | None = None

    def __post_init__(self):
        for name in ("n_users", "batch", "scheduler_hidden", "policy_hidden",
                     "scheduler_layers", "scheduler_passes"):
            _at_least(f"train.{name}", getattr(self, name), 1)
        for name in ("pretrain_steps", "episodes", "entropy", "clip_norm"):
            _at_least(f"train.{name}", getattr(self, name), 0)
        for name in ("scheduler_lr", "policy_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be > 0, got {getattr(self, name)}")
        for name in ("scheduler_optimizer", "policy_optimizer"):
            _one_of(f"train.{name}", getattr(self, name), OPTIMIZERS)
        _one_of("train.estimator", self.estimator, costs.ESTIMATORS)
        _one_of("train.variant", self.variant, policy_net.VARIANTS)
        _one_of("train.scheduler", self.scheduler, scheduler_net.SCHEDULERS)
        _one_of("train.advantage", self.advantage, costs.ADVANTAGES)
        for name in ("fixed_width", "fixed_depth"):
            if getattr(self, name) is not None:
                _at_least(f"train.{name}", getattr(self, name), 1)
        if self.n_users_min is not None:
            if not 1 <= self.n_users_min <= self.n_users:
                raise ValueError(f"train.n_users_min must be in [1, n_users={self.n_users}], "
                                 f"got {self.n_users_min}")
            if self.scheduler != "set":
                raise ValueError("train.n_users_min (mixed N) needs train.scheduler='set'")

    def fixed(self, n_experts: int, n_layers: int):
        """(width, depth) of variant "fixed" (defaults: K, L)."""
        return (n_experts if self.fixed_width is None else self.fixed_width,
                n_layers if self.fixed_depth is None else self.fixed_depth)


#: The ``train`` fields of a ``configs/joint.py`` config, read by :func:`joint_config`.
JOINT_FIELDS = ("batch", "pretrain_steps", "episodes", "scheduler_lr", "policy_lr",
                "scheduler_optimizer", "policy_optimizer", "estimator", "variant",
                "scheduler", "scheduler_hidden", "scheduler_layers", "scheduler_passes",
                "advantage", "entropy", "clip_norm")


def joint_config(cfg, variant: str | None = None, n_users: int | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a ``configs/joint.py`` config (``variant``/``n_users``
    override it), with its run fields checked too.  ``ValueError`` names the field."""
    for name in ("seed", "n_seeds"):
        if name not in cfg:
            raise ValueError(f"config lacks field {name!r}")
    if int(cfg.n_seeds) < 1:
        raise ValueError(f"n_seeds must be >= 1, got {cfg.n_seeds}")
    system.params_from_overrides(cfg.system.to_dict())
    t = cfg.train
    for name in JOINT_FIELDS:
        if name not in t:
            raise ValueError(f"config.train lacks field {name!r}")
    for name in ("batch", "episodes"):
        if int(t[name]) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {t[name]}")
    kw = {name: type(getattr(TrainConfig, name))(t[name]) for name in JOINT_FIELDS}
    if variant is not None:
        kw["variant"] = variant
    if t.get("n_users_min", None) is not None:
        kw["n_users_min"] = int(t.n_users_min)
    return TrainConfig(n_users=int(cfg.system.n_users if n_users is None else n_users), **kw)
