"""Deciders for an engineer's own tasks: the shipped pipeline and its peers, one interface.

``dynmec-decide --method=...`` (:mod:`dynmec_jax.taskfile`) decides with any
object that has ``decide(scn, sys_params) -> Decision`` for one scenario of N
tasks (fields ``(N,)``, SI units), ``n_users`` (None: any N) and
``sys_params`` (the default system).  :func:`make` builds them:

* ``pmrl``: the shipped (or a given) :class:`~dynmec_jax.pipeline.Pipeline`.
* ``pmrl_search``: that pipeline followed by the one-flip local search
  (:func:`dynmec_jax.evaluation.pipeline_search`), charged the pipeline's and
  the search's operations (Eq. 9).
* ``greedy``: removal-only greedy offloading with the KKT allocation
  (:func:`dynmec_jax.evaluation.greedy`), charged its own operations (Eq. 9).
* ``droo``: the shipped DROO (:mod:`dynmec_jax.baselines.droo`), charged its
  DNN and its K allocations (Eq. 9).
* ``optimum``: the certified optimum (:mod:`dynmec_jax.baselines.exact`,
  needs the ``exact`` extra): a bound, charged no inference delay; a solver
  on the host, much slower than the others (about 0.05 s a scenario at N = 60
  on a CPU, against microseconds).

Every decision is a :class:`~dynmec_jax.pipeline.Decision` with the allocation
[Hz], the sub-network (1, 1 for methods without one) and the inference
delays of Eq. 34-35 [s].
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import checks, evaluation, pipeline, system
from dynmec_jax.baselines import droo, exact
from dynmec_jax.pipeline import Decision
from dynmec_jax.system import Scenario, SystemParams

#: The methods of ``dynmec-decide --method``.
METHODS = ("pmrl", "pmrl_search", "greedy", "droo", "optimum")


def _batched(scn: Scenario) -> Scenario:
    return jax.tree.map(lambda a: jnp.asarray(a)[None], system.as_scenario(scn))


def _first(d: Decision) -> Decision:
    return jax.tree.map(lambda a: a[0], d)


@jax.jit
def _greedy(scn, sp):
    return evaluation.greedy(scn, sp).decision


@dataclasses.dataclass(frozen=True)
class Greedy:
    """Greedy + KKT as a decider (module doc); ``sys_params``: the default system."""

    sys_params: SystemParams = dataclasses.field(default_factory=SystemParams)
    n_users: int | None = None

    def decide(self, scn: Scenario, sys_params: SystemParams | None = None) -> Decision:
        """The greedy decision for one scenario ``(N,)`` (Eq. 24-25, its own Eq. 9 delay)."""
        sp = self.sys_params if sys_params is None else sys_params
        scn = checks.validate_scenario(scn)
        return _first(_greedy(_batched(scn), sp.replace(n_users=scn.size.shape[-1])))


@dataclasses.dataclass(frozen=True)
class PipelineSearch:
    """A pipeline followed by the one-flip search as a decider (module doc)."""

    pipe: pipeline.Pipeline

    @property
    def n_users(self):
        return self.pipe.n_users

    @property
    def sys_params(self) -> SystemParams:
        return self.pipe.sys_params

    def decide(self, scn: Scenario, sys_params: SystemParams | None = None) -> Decision:
        """The pipeline's decision for one scenario ``(N,)`` and one cell, refined by the
        search (its warnings for a cell outside the trained range included)."""
        sp = self.pipe.sys_params if sys_params is None else sys_params
        scn = checks.validate_scenario(scn)
        for line in self.cell_warnings(sp):
            warnings.warn(line, stacklevel=2)
        return _first(_search(self.pipe, _batched(scn), sp.replace(n_users=scn.size.shape[-1])))

    def cell_warnings(self, sys_params: SystemParams) -> list[str]:
        """The pipeline's (:meth:`~dynmec_jax.pipeline.Pipeline.cell_warnings`)."""
        return self.pipe.cell_warnings(sys_params)


@jax.jit
def _search(pipe, scn, sp):
    return evaluation.pipeline_search(pipe, scn, sp).decision


@dataclasses.dataclass(frozen=True)
class Droo:
    """A trained DROO as a decider (module doc): ``model`` from :func:`droo.load_droo`."""

    model: object
    sys_params: SystemParams = dataclasses.field(default_factory=SystemParams)
    n_users: int | None = None

    def decide(self, scn: Scenario, sys_params: SystemParams | None = None) -> Decision:
        """DROO's decision for one scenario ``(N,)``, N <= its N_max (padded)."""
        sp = self.sys_params if sys_params is None else sys_params
        scn = checks.validate_scenario(scn)
        res = _droo(self.model.params, self.model.k, _batched(scn), sp)
        return _first(res)


@jax.jit
def _droo(params, k, scn, sp):
    return evaluation.droo(params, k, scn, sp).decision


@dataclasses.dataclass(frozen=True)
class Optimum:
    """The certified optimum as a decider (module doc; a bound: no inference delay)."""

    sys_params: SystemParams = dataclasses.field(default_factory=SystemParams)
    n_users: int | None = None
    time_limit: float = 60.0

    def decide(self, scn: Scenario, sys_params: SystemParams | None = None) -> Decision:
        """The optimum of one scenario ``(N,)``; ``ValueError`` if the solver stops at its
        time limit without proving it (the decision would not be the optimum)."""
        sp = self.sys_params if sys_params is None else sys_params
        scn = checks.validate_scenario(scn)
        res = exact.exact_optimum(scn, sp.replace(n_users=scn.size.shape[-1]),
                                  time_limit=self.time_limit)
        if str(res.status) != "optimal":
            raise ValueError(f"the solver stopped ({res.status}) with a gap of "
                             f"{float(res.gap):.2e}: no certified optimum")
        f32 = np.float32
        return Decision(np.asarray(res.offload, bool), np.int32(1), np.int32(1),
                        np.asarray(res.bandwidth, f32), np.asarray(res.f_alloc, f32),
                        f32(0.0), f32(0.0), np.bool_(True))


def make(method: str, pipeline_path=None, droo_path=None):
    """The decider of ``method`` (:data:`METHODS`); ``pipeline_path``/``droo_path`` give
    a trained model (None: the shipped one).  ``ValueError`` for an unknown method;
    ``FileNotFoundError``/``ValueError`` from the loaders; ``ImportError`` naming the
    extra for ``optimum`` without pyscipopt (raised when it decides)."""
    if method == "pmrl":
        return pipeline.load_pipeline(pipeline_path)
    if method == "pmrl_search":
        return PipelineSearch(pipeline.load_pipeline(pipeline_path))
    sp = SystemParams()
    if method == "greedy":
        return Greedy(sp)
    if method == "droo":
        return Droo(droo.load_droo(droo_path), sp)
    if method == "optimum":
        exact.require_scip()
        return Optimum(sp)
    raise ValueError(f"--method must be one of {METHODS}, got {method!r}")
