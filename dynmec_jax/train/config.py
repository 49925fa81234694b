"""Typed training configs: frozen dataclasses, the one place each setting is defined.

Each dataclass is a section of an ``ml_collections`` preset in
``dynmec_jax/configs/`` (built from its defaults by
:func:`dynmec_jax.typedconfig.to_configdict`); the launchers convert the
preset back with :func:`dynmec_jax.typedconfig.from_configdict` once, at the
top, and the library takes only these typed values.  A bad value raises
``ValueError`` naming the field (the launchers print one line, exit 2).
Being frozen and hashable, a config can key a cache (e.g. the compiled
functions of Fig. 12).

* :class:`AllocatorConfig` (``configs/allocator.py``): the allocation
  network (:class:`~dynmec_jax.allocator.AllocatorSpec`), its training
  (:class:`AllocatorTrain`, Section IV.A-B, Table II) and evaluation.
* :class:`TrainConfig`: Algorithm 1 (scheduler and policy, Section IV.C);
  it extends the :class:`~dynmec_jax.pipeline.PipelineSpec` (the networks'
  shapes, saved with a trained pipeline) with the training settings.
* :class:`JointConfig` (``configs/joint.py``): a run of Algorithm 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dynmec_jax import costs, system
from dynmec_jax.allocator import AllocatorSpec
from dynmec_jax.pipeline import PipelineSpec
from dynmec_jax.system import SystemParams

#: Table II: learning rate of the scheduling model.
SCHEDULER_LR = 2e-3
#: Table II: learning rate of the policy model.
POLICY_LR = 1e-4
#: Optimisers the scheduler and policy may use.
OPTIMIZERS = ("adam", "sgd")
#: Sub-network sets a dynamic allocator may be trained for (:func:`subnet_set`).
CASES = ("full", "width", "depth", "largest")
#: Seeds are PRNG seeds of ``jax.random.key`` and sweep store names: ``[0, 2**31)``.
SEED_LIMIT = 2 ** 31


def _at_least(name: str, value, lo) -> None:
    if not value >= lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def check_seed(name: str, seed: int) -> None:
    """``ValueError`` unless ``seed`` is an integer in ``[0, 2**31)`` (:data:`SEED_LIMIT`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
            0 <= seed < SEED_LIMIT):
        raise ValueError(f"{name} must be an integer in [0, 2**31), got {seed!r}")


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


@dataclasses.dataclass(frozen=True)
class AllocatorTrain:
    """Training of the allocation network (Fig. 2(b), Section IV.B).

    Attributes:
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
      capacity_factor: capacity dispatch of the MoE's experts (0 = off: every
        expert computed, the width a mask): an expert takes at most this factor
        times its expected share of a depth group's users and computes only
        those (:func:`dynmec_jax.nets.moe.expert_capacity`).  1.25 (Switch's
        training value) drops 0.3-0.9% of the picked (user, expert) pairs in
        the last phase and leaves Fig. 4's gaps within their CIs
        (docs/performance.md, "Width sparsity").
    """

    batch: int = 128
    lr: float = 1e-3
    case: str = "full"
    phase_steps: tuple[int, ...] = (200, 300, 300, 600)
    chunk_steps: int = 100
    offload_all_fraction: float = 0.5
    load_balance_weight: float = 0.0
    micro_batch: int | None = None
    capacity_factor: float = 1.25

    def __post_init__(self):
        _at_least("train.capacity_factor", self.capacity_factor, 0)
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
        _one_of("train.case", self.case, CASES)
        if any(s < 0 for s in self.phase_steps) or sum(self.phase_steps) < 1:
            raise ValueError("train.phase_steps must be non-negative with a positive sum, "
                             f"got {self.phase_steps}")


@dataclasses.dataclass(frozen=True)
class AllocatorEval:
    """Held-out evaluation of trained allocators against the optimum (Fig. 4).

    Attributes:
      batch: held-out scenarios; seed: their PRNG seed (disjoint from training);
      offload_fraction: the share offloaded in the "random" evaluation.
      curve_batch: the first held-out scenarios of the training curves' gap to the
        optimum, evaluated after every chunk.
    """

    batch: int = 1024
    seed: int = 12345
    offload_fraction: float = 0.6
    curve_batch: int = 128

    def __post_init__(self):
        _at_least("eval.batch", self.batch, 1)
        _at_least("eval.curve_batch", self.curve_batch, 1)
        check_seed("eval.seed", self.seed)
        if not 0 < self.offload_fraction <= 1:
            raise ValueError(f"eval.offload_fraction must be in (0, 1], got "
                             f"{self.offload_fraction}")


@dataclasses.dataclass(frozen=True)
class AllocatorConfig:
    """A run of allocator training (``configs/allocator.py``, ``launch/train_allocator.py``).

    Attributes:
      preset: the preset's name (recorded).
      seed: base PRNG seed; seed i of the run uses ``fold_in(key(seed), i)``.
      n_seeds: allocators trained side by side (``vmap``).
      export_seed: the seed exported as ``WORKDIR/allocator``.
      system: the system trained on (Table II defaults, SI units).
      model: the network (:class:`~dynmec_jax.allocator.AllocatorSpec`).
      train: its training (:class:`AllocatorTrain`).
      eval: its held-out evaluation (:class:`AllocatorEval`).
    """

    preset: str = "default"
    seed: int = 0
    n_seeds: int = 3                # trained side by side
    export_seed: int = 0
    system: SystemParams = dataclasses.field(default_factory=SystemParams)
    model: AllocatorSpec = dataclasses.field(default_factory=AllocatorSpec)
    train: AllocatorTrain = dataclasses.field(default_factory=AllocatorTrain)
    eval: AllocatorEval = dataclasses.field(default_factory=AllocatorEval)

    def __post_init__(self):
        check_seed("seed", self.seed)
        _at_least("n_seeds", self.n_seeds, 1)
        if not 0 <= self.export_seed < self.n_seeds:
            raise ValueError(f"export_seed must be in [0, n_seeds={self.n_seeds}), "
                             f"got {self.export_seed}")
        try:
            system.validate(self.system)
        except ValueError as e:
            raise ValueError(f"system.{e}") from None
        phases = self.phases()
        steps = self._steps(phases)
        if len(steps) != len(phases):
            raise ValueError(
                f"train.phase_steps must give one step count per phase "
                f"{[p[0] for p in phases]} of case {self.subnet_case!r}, "
                f"got {tuple(self.train.phase_steps)}")

    @property
    def subnet_case(self) -> str:
        """The sub-networks trained: ``train.case``, or "largest" for the static model."""
        return self.train.case if self.model.kind == "moe" else "largest"

    def phases(self) -> list[tuple[str, np.ndarray]]:
        """The progressive-shrinking phases (:func:`progressive_phases`)."""
        return progressive_phases(self.subnet_case, self.model.max_width, self.model.n_layers)

    def _steps(self, phases) -> list[int]:
        steps = list(self.train.phase_steps)
        if self.model.kind == "static":
            return [sum(steps)][:len(phases)]
        return steps

    def schedule(self) -> np.ndarray:
        """The per-step allowed table ``(T, K, L)`` (:func:`schedule_table`)."""
        phases = self.phases()
        return schedule_table(phases, self._steps(phases))


# ----------------------------------------------------------------------------
# Algorithm 1
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig(PipelineSpec):
    """Algorithm 1: the networks (:class:`~dynmec_jax.pipeline.PipelineSpec`) and their training.

    Attributes (beyond the spec's):
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
      advantage: "relative" (default) or "raw" (Eq. 23 as printed); see
        :func:`~dynmec_jax.costs.advantages`.
      entropy: weight of an entropy bonus on the offloading probabilities at
        the first episode, decaying linearly to 0 at the last (0 = none).
      clip_norm: global-norm clip of the scheduler's gradient (0 = none).
      chunk: steps (pre-training steps or episodes) per compiled chunk of a run
        from the command line (:mod:`dynmec_jax.train.joint_run`): the interval
        of its curves and checkpoints.
      init_from: "" (fresh networks), "pretrained" (the shipped pipeline) or a
        pipeline directory whose scheduler and policy start the run (a warm
        start, :func:`dynmec_jax.train.joint.warm_start`: inputs the old
        networks lacked, e.g. the cell features, start with zero weights, so
        the run starts from the old decisions).
      cell_base_share: with ``cell``, the share of training scenarios kept at the
        base cell (the run's ``system``, Table II by default) instead of a drawn
        one: the paper's cell is measured most, so it is seen more often.
      cell_edge_share: with ``cell``, the probability that a field of a drawn
        cell is set to one end of its range (:func:`dynmec_jax.cell.sample_cells`):
        the ends are where one network trained on uniform draws missed most
        (docs/reproduction.md, "Any cell").
    """

    batch: int = 64
    pretrain_steps: int = 3000
    episodes: int = 2000
    scheduler_lr: float = SCHEDULER_LR
    policy_lr: float = POLICY_LR
    scheduler_optimizer: str = "adam"
    policy_optimizer: str = "adam"
    estimator: str = "marginal"
    advantage: str = "relative"
    entropy: float = 0.0
    clip_norm: float = 0.0
    chunk: int = 100
    init_from: str = ""
    cell_base_share: float = 0.0
    cell_edge_share: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        for name in ("cell_base_share", "cell_edge_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"train.{name} must be in [0, 1], got {getattr(self, name)}")
        _at_least("train.batch", self.batch, 1)
        _at_least("train.chunk", self.chunk, 1)
        for name in ("pretrain_steps", "episodes", "entropy", "clip_norm"):
            _at_least(f"train.{name}", getattr(self, name), 0)
        for name in ("scheduler_lr", "policy_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be > 0, got {getattr(self, name)}")
        for name in ("scheduler_optimizer", "policy_optimizer"):
            _one_of(f"train.{name}", getattr(self, name), OPTIMIZERS)
        _one_of("train.estimator", self.estimator, costs.ESTIMATORS)
        _one_of("train.advantage", self.advantage, costs.ADVANTAGES)


@dataclasses.dataclass(frozen=True)
class JointEval:
    """Held-out evaluation of a run of Algorithm 1 (``launch/evaluate_joint.py``).

    Attributes:
      batch: held-out scenarios; seed: their PRNG seed (disjoint from training).
      ga_iters, ga_batch: the joint GA's iterations and scenarios (it is slow).
      optimum_batch: the first held-out scenarios whose certified optimum
        ``dynmec-evaluate-joint`` solves (every method's gap is measured on them).
      droo: also train and evaluate DROO in ``dynmec-evaluate-joint``.
      curve_batch: validation scenarios scored after every chunk of a run (the
        curves' gap to the optimum, computed once for them).
    """

    batch: int = 1024       # scenarios
    seed: int = 777
    ga_iters: int = 100
    ga_batch: int = 64
    curve_batch: int = 64   # scenarios per chunk's validation
    optimum_batch: int = 256
    droo: bool = True

    def __post_init__(self):
        check_seed("eval.seed", self.seed)
        for name in ("batch", "ga_batch", "curve_batch", "optimum_batch"):
            _at_least(f"eval.{name}", getattr(self, name), 1)
        _at_least("eval.ga_iters", self.ga_iters, 0)
        if self.optimum_batch > self.batch:
            raise ValueError(f"eval.optimum_batch must not exceed eval.batch={self.batch}")


@dataclasses.dataclass(frozen=True)
class JointConfig:
    """A run of Algorithm 1 (``configs/joint.py``: ``launch/train_joint.py``, the evaluators).

    Attributes:
      preset: the preset's name (recorded).
      seed, n_seeds: seed i of the run uses ``fold_in(key(seed), i)``; seeds
        train side by side (``jit(vmap(train))``).
      allocator: directory of the (fixed) allocator; "" = the shipped default.
      system: the system trained on (Table II defaults); ``system.n_users``
        is the N of training (it sets ``train.n_users``).
      train: Algorithm 1 (:class:`TrainConfig`; its ``n_users`` is taken
        from ``system.n_users``).
      eval: :class:`JointEval`.
    """

    preset: str = "default"
    seed: int = 0
    n_seeds: int = 3                # trained side by side
    allocator: str = ""             # "": the shipped allocator
    system: SystemParams = dataclasses.field(default_factory=SystemParams)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: JointEval = dataclasses.field(default_factory=JointEval)

    def __post_init__(self):
        check_seed("seed", self.seed)
        _at_least("n_seeds", self.n_seeds, 1)
        try:
            system.validate(self.system)
        except ValueError as e:
            raise ValueError(f"system.{e}") from None
        _at_least("train.episodes", self.train.episodes, 1)
        if self.train.n_users != self.system.n_users:   # N comes from the system section
            object.__setattr__(self, "train", dataclasses.replace(
                self.train, n_users=self.system.n_users))
