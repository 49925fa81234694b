"""The typed config of the reproduction of Section V (``configs/reproduce.py``).

:class:`ReproduceConfig` is the schema, the defaults and the checks of every
field of a reproduction (``launch/reproduce.py``, ``launch/sweep.py``); the
presets of ``dynmec_jax/configs/reproduce.py`` only override values.
Algorithm 1's settings are one :class:`~dynmec_jax.train.config.TrainConfig`
(``train``), specialised per sweep item (N, policy variant) by
:func:`dynmec_jax.experiments.sections.train_configs`.
"""

from __future__ import annotations

import dataclasses

from dynmec_jax import system
from dynmec_jax.train.config import AllocatorConfig, TrainConfig, check_seed

#: The cases Fig. 12 can measure.
FIG12_CASES = ("full", "width", "depth")


def _positive(name: str, value) -> None:
    if not value >= 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class StaticConfig:
    """The static model of Section V.A: ``steps`` training steps of its one network."""

    steps: int = 400

    def __post_init__(self):
        _positive("static.steps", self.steps)


@dataclasses.dataclass(frozen=True)
class Fig12Config:
    """Fig. 12's training-cost runs (:func:`dynmec_jax.experiments.fig12.training_cost`).

    Attributes:
      seeds: training seeds; cases: among "full", "width", "depth";
      target: the gap every sub-network must reach (relative, in (0, 1));
      batch: scenarios per step; eval_every: steps between checks;
      max_steps: cap per stage; eval_batch: held-out scenarios of the checks.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    cases: tuple[str, ...] = FIG12_CASES
    target: float = 0.05            # relative gap
    batch: int = 32
    eval_every: int = 25            # steps
    max_steps: int = 2000
    eval_batch: int = 256

    def __post_init__(self):
        for s in self.seeds:
            check_seed("fig12.seeds", s)
        for c in self.cases:
            if c not in FIG12_CASES:
                raise ValueError(f"fig12.cases must be among {FIG12_CASES}, got {c!r}")
        if not 0 < self.target < 1:
            raise ValueError(f"fig12.target must be in (0, 1), got {self.target}")
        for name in ("batch", "eval_every", "max_steps", "eval_batch"):
            _positive(f"fig12.{name}", getattr(self, name))


@dataclasses.dataclass(frozen=True)
class SweepsConfig:
    """The x-axis values of Figs. 5-11 (SI units); one field varies, the others at Table II.

    Attributes: ``size_avg`` [bit], ``workload_avg`` [cycles/bit], ``f_server``
    [cycles/s], ``n_users`` (Fig. 7(c); a new program shape each).
    """

    size_avg: tuple[float, ...] = (500.0, 1000.0, 1500.0, 2000.0)
    workload_avg: tuple[float, ...] = (400.0, 797.5, 1200.0, 1600.0)
    f_server: tuple[float, ...] = (1.5e9, 2.5e9, 3.5e9, 4.5e9)
    n_users: tuple[int, ...] = (10, 20, 30, 40)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            vals = getattr(self, f.name)
            if not vals or any(not v > 0 for v in vals):
                raise ValueError(f"sweeps.{f.name} must be a non-empty list of positive "
                                 f"values, got {list(vals)}")
            if len(set(vals)) != len(vals):
                raise ValueError(f"sweeps.{f.name} has duplicate values: {list(vals)}")


@dataclasses.dataclass(frozen=True)
class VAConfig:
    """Section V.A's evaluation (every task offloaded).

    Attributes: ``eval_batch`` held-out scenarios per item; the GA's
    ``ga_batch`` scenarios (the first of them), ``ga_iters`` iterations and
    population ``ga_pop_factor`` x N.
    """

    eval_batch: int = 256
    ga_batch: int = 16
    ga_iters: int = 100
    ga_pop_factor: int = 6

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _positive(f"va.{f.name}", getattr(self, f.name))


@dataclasses.dataclass(frozen=True)
class VBConfig:
    """Section V.B's evaluation (users with computing power).

    Attributes:
      eval_batch: held-out scenarios per item.
      paper_scheduler: also train PMRL with the paper's scheduler network and
        Eq. 23 ("PMRL (paper)").
      droo: also train and evaluate DROO (``baselines/droo.py``).
      optimum_scenarios: S, the first held-out scenarios of each item for which
        the certified optimum is solved on the host (every method's gap to it is
        measured on them; at most ``va.ga_batch`` and ``eval_batch``).
    """

    eval_batch: int = 256
    paper_scheduler: bool = True
    droo: bool = True
    optimum_scenarios: int = 16

    def __post_init__(self):
        _positive("vb.eval_batch", self.eval_batch)
        _positive("vb.optimum_scenarios", self.optimum_scenarios)


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """A reproduction of Section V (Figs. 4-12, Table I).

    Attributes:
      preset: the preset's name (recorded).
      seeds: sweep seeds (each point runs every seed; >= 5 for the figures).
      eval_seed: held-out scenarios: ``fold_in(key(eval_seed), seed)``.
      allocator: the MoE allocator (trained once per allocator seed on the
        default system, shared by all sweep points; sweep seed s uses
        allocator seed ``s % allocator.n_seeds``).
      static: the static model's budget (Section V.A).
      fig12: the training-cost runs.
      sweeps: the x-axis values of Figs. 5-11.
      train: Algorithm 1 for every sweep item (its ``n_users`` and
        ``variant`` are set per item; ``pretrain_steps`` and ``batch`` also
        serve Section V.A's policy pre-training).
      va, vb: the evaluations of Sections V.A and V.B.
      chunk_size: sweep items per compiled call.
    """

    preset: str = "quick"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    eval_seed: int = 777
    allocator: AllocatorConfig = dataclasses.field(default_factory=AllocatorConfig)
    static: StaticConfig = dataclasses.field(default_factory=StaticConfig)
    fig12: Fig12Config = dataclasses.field(default_factory=Fig12Config)
    sweeps: SweepsConfig = dataclasses.field(default_factory=SweepsConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    va: VAConfig = dataclasses.field(default_factory=VAConfig)
    vb: VBConfig = dataclasses.field(default_factory=VBConfig)
    chunk_size: int = 5

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, got {list(self.seeds)}")
        for s in self.seeds:
            check_seed("seeds", s)
        check_seed("eval_seed", self.eval_seed)
        _positive("chunk_size", self.chunk_size)
        _positive("train.episodes", self.train.episodes)
        _positive("train.pretrain_steps", self.train.pretrain_steps)
        if self.va.ga_batch > min(self.va.eval_batch, self.vb.eval_batch):
            raise ValueError("va.ga_batch must not exceed va.eval_batch and vb.eval_batch")
        if self.vb.optimum_scenarios > self.va.ga_batch:
            raise ValueError("vb.optimum_scenarios must not exceed va.ga_batch (every method, "
                             "the GA too, is scored on them)")
        for n in self.sweeps.n_users:   # Algorithm 1 at every N of the sweep
            try:
                dataclasses.replace(self.train, n_users=n)
            except ValueError as e:
                raise ValueError(f"{e} (at sweeps.n_users={n})") from None

    @property
    def system(self) -> system.SystemParams:
        """The default system of the run (the allocator's: Table II unless overridden)."""
        return self.allocator.system

    def static_allocator(self) -> AllocatorConfig:
        """The static model's allocator config: ``model.kind = "static"``, ``static.steps``."""
        return dataclasses.replace(
            self.allocator, model=dataclasses.replace(self.allocator.model, kind="static"),
            train=dataclasses.replace(self.allocator.train,
                                      phase_steps=(self.static.steps, 0, 0, 0)))

    def fig12_allocator(self) -> AllocatorConfig:
        """The allocator config of the training-cost runs (batch ``fig12.batch``).

        Without capacity dispatch (``capacity_factor=0``): its static
        capacities depend on the widths trained, so Fig. 12 would compile one
        program per sub-network and phase (33 at the quick preset, 94 s of
        compile against 12 s for its 4 depth strata, measured on 2 cores)
        for runs that stop after a few hundred steps.  Both methods of Fig. 12
        train with the same step, so their ratio does not depend on it.
        """
        return dataclasses.replace(
            self.allocator, train=dataclasses.replace(self.allocator.train,
                                                      batch=self.fig12.batch,
                                                      capacity_factor=0.0))
