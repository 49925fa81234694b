"""The registry of Section V's methods: each method written down once.

A :class:`Method` holds a method's legend name, section, figure style, what
must be trained for it (:attr:`Method.needs`), how its inference time is
charged (a deployed method pays its own compute through Eq. 9; a bound pays
nothing: :mod:`dynmec_jax.evaluation`'s rule), which scenarios it is
evaluated on, and ``run``: the jit-able function that decides for a batch of
scenarios.  The figures, the claims, the sweeps, ``--methods`` flags and the
launchers read :data:`REGISTRY`; adding a method is one entry here (and its
function in :mod:`dynmec_jax.evaluation` or :mod:`dynmec_jax.baselines`).

Every method's decision is scored by the one public scorer,
:func:`dynmec_jax.evaluation.score` (:func:`evaluate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

from dynmec_jax import evaluation
from dynmec_jax.evaluation import MethodResult, Metrics
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: Sections of the paper's evaluation: V.A (every task offloaded), V.B (joint).
SECTIONS = ("va", "vb")
#: What a method can need trained or computed first (:attr:`Method.needs`).
NEEDS = ("policies", "static", "pmrl", "pmrl_paper", "rl", "droo")
#: How a method's inference time is charged (:attr:`Method.charge`).
CHARGES = ("deployed", "bound")


class Inputs(NamedTuple):
    """What the methods of one sweep item read (entries a run does not need are None).

    Attributes:
      allocator: the MoE :class:`~dynmec_jax.allocator.Allocator`.
      static: the static model (an ``Allocator``), Section V.A.
      policies: ``{variant: policy params}`` pre-trained with every task
        offloaded ("full", "fix_width", "fix_depth").
      pmrl, pmrl_paper, rl: trained :class:`~dynmec_jax.pipeline.Pipeline` s.
      droo: DROO's trained state (``baselines.droo_train.DrooState``) or a
        ``baselines.droo.DrooModel`` (both have ``params`` and ``k``).
      keys: ``{"rand", "ga_va", "ga_vb"}`` PRNG keys of the random methods.
      ga_iters, ga_pop_factor: the GA's budget (static ints).
    """

    allocator: Any = None
    static: Any = None
    policies: Mapping | None = None
    pmrl: Any = None
    pmrl_paper: Any = None
    rl: Any = None
    droo: Any = None
    keys: Mapping | None = None
    ga_iters: int = 100
    ga_pop_factor: int = 6


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of Section V.

    Attributes:
      name: the legend name (Figs. 5-12; unique within a section).
      section: "va" or "vb".
      style: ``(colour, marker, linestyle)`` in every figure.
      needs: what must be trained first (:data:`NEEDS`).
      charge: "deployed" (pays its own compute through Eq. 9) or "bound"
        (pays nothing; labelled a bound in figures and claims).
      charged: how, in words (the docs' table).
      run: ``run(inputs, scn, sys_params) -> MethodResult`` (jit-able).
      in_figures: computed by the Section V sweeps and plotted in Figs. 5-9.
      plotted: drawn in the figures (else stored only, e.g. the Oracle).
      right_axis: drawn on a right axis (the GA: seconds next to milliseconds).
      subsample: "ga" to evaluate on the first ``va.ga_batch`` scenarios only.
      max_users: largest N it is computed for (None: any).
      host: computed on the host, outside the compiled programs, on a
        subsample of the scenarios (the certified optimum: a solver);
        :func:`evaluate` does not run it (``run`` is None).
    """

    name: str
    section: str
    style: tuple[str, str, str]
    needs: tuple[str, ...]
    charge: str
    charged: str
    run: Callable[..., MethodResult] | None
    in_figures: bool = True
    plotted: bool = True
    right_axis: bool = False
    subsample: str | None = None
    max_users: int | None = None
    host: bool = False

    def __post_init__(self):
        assert self.section in SECTIONS and self.charge in CHARGES
        assert set(self.needs) <= set(NEEDS), self.needs

    @property
    def label(self) -> str:
        """The name as shown in figures: bounds say so."""
        return f"{self.name} (bound)" if self.charge == "bound" else self.name

    def applies(self, n_users: int) -> bool:
        """Whether the method is computed at N = ``n_users``."""
        return self.max_users is None or n_users <= self.max_users


def _ga(joint: bool):
    def run(inp: Inputs, scn, sp):
        key = inp.keys["ga_vb" if joint else "ga_va"]
        return evaluation.genetic(key, scn, sp, joint=joint, n_iters=inp.ga_iters,
                                  pop_factor=inp.ga_pop_factor)
    return run


def _policy(variant: str):
    def run(inp: Inputs, scn, sp):
        return evaluation.policy_moe(inp.allocator, inp.policies[variant], scn, sp, variant)
    return run


def _pipeline(field: str):
    def run(inp: Inputs, scn, sp):
        return evaluation.pipeline_method(getattr(inp, field), scn, sp)
    return run


_OPT = "edge: M_Poli + M_Alloc"
# ---------------------------------------------------------------------------- Section V.A
POLICY_MOE = Method("PolicyMoE", "va", ("#d62728", "*", "-"), ("policies",), "deployed",
                    f"{_OPT}(k, l, N), (k, l) from the policy", _policy("full"))
FIX_WIDTH_MOE = Method("Fix width MoE", "va", ("#1f77b4", "s", "-"), ("policies",), "deployed",
                       f"{_OPT}(K, l, N)", _policy("fix_width"))
FIX_DEPTH_MOE = Method("Fix depth MoE", "va", ("#2ca02c", "^", "-"), ("policies",), "deployed",
                       f"{_OPT}(k, L, N)", _policy("fix_depth"))
FIX_MOE = Method("Fix MoE", "va", ("#9467bd", "D", "-"), (), "deployed",
                 "edge: M_Alloc(K, L, N)",
                 lambda inp, scn, sp: evaluation.fixed_subnet(inp.allocator, scn, sp))
STATIC = Method("Static model", "va", ("#8c564b", "v", "-"), ("static",), "deployed",
                "edge: the static model's MACs for N users",
                lambda inp, scn, sp: evaluation.static_model(inp.static, scn, sp))
GA_VA = Method("GA", "va", ("#ff7f0e", "o", "--"), (), "deployed",
               "edge: the GA's modelled operation count", _ga(False), right_axis=True,
               subsample="ga")
ORACLE = Method("Oracle", "va", ("#000000", "P", ":"), (), "bound",
                "none (the Eq. 28 label used directly)",
                lambda inp, scn, sp: evaluation.oracle(inp.allocator, scn, sp), plotted=False)
# ---------------------------------------------------------------------------- Section V.B
PMRL = Method("PMRL", "vb", ("#e377c2", "*", "-"), ("pmrl",), "deployed",
              "local: M_Sced; edge: M_Sced + M_Poli + M_Alloc(k, l, n)", _pipeline("pmrl"))
PMRL_PAPER = Method("PMRL (paper)", "vb", ("#e377c2", "*", ":"), ("pmrl_paper",), "deployed",
                    "as PMRL, with the paper's scheduler (5N -> 32 -> N)",
                    _pipeline("pmrl_paper"))
RL = Method("RL", "vb", ("#17becf", "h", "-"), ("rl",), "deployed",
            "local: M_Sced; edge: M_Sced + M_Alloc(K, L, n)", _pipeline("rl"))
RAND = Method("Rand", "vb", ("#bcbd22", "d", "-"), ("pmrl",), "deployed",
              "local: 0; edge: M_Poli + M_Alloc(k, l, n)",
              lambda inp, scn, sp: evaluation.random_offload(inp.keys["rand"], inp.pmrl, scn, sp))
LOCAL = Method("Local execution", "vb", ("#393b79", "<", "-."), (), "deployed",
               "none (nothing runs)", lambda inp, scn, sp: evaluation.local_execution(scn, sp))
GREEDY = Method("Greedy", "vb", ("#000000", "x", "--"), (), "deployed",
                "local and edge: the greedy's traced operations (rounds run + 1, final KKT)",
                lambda inp, scn, sp: evaluation.greedy(scn, sp))
GA_VB = Method("GA", "vb", ("#ff7f0e", "o", "--"), (), "deployed",
               "local and edge: the joint GA's modelled operation count", _ga(True),
               right_axis=True, subsample="ga")
FIX_MOE_VB = Method("Fix MoE", "vb", ("#9467bd", "D", "-"), ("pmrl",), "deployed",
                    "local: M_Sced; edge: M_Sced + M_Alloc(K, L, n)",
                    lambda inp, scn, sp: evaluation.fixed_with_scheduler(inp.pmrl, scn, sp),
                    in_figures=False)
DROO = Method("DROO", "vb", ("#8c564b", "p", "-"), ("droo",), "deployed",
              "local and edge: M_DNN + K x the operations of one exact allocation",
              lambda inp, scn, sp: evaluation.droo(inp.droo.params, inp.droo.k, scn, sp))
OPTIMUM = Method("Optimum", "vb", ("#7f7f7f", "X", ":"), (), "bound",
                 "none (the certified best offloading set and allocation, "
                 "baselines/exact.py)", None, host=True)

#: Every method, in legend order per section.
REGISTRY: tuple[Method, ...] = (POLICY_MOE, FIX_WIDTH_MOE, FIX_DEPTH_MOE, FIX_MOE, STATIC, GA_VA,
                                ORACLE, PMRL, PMRL_PAPER, RL, RAND, LOCAL, GREEDY, GA_VB,
                                DROO, FIX_MOE_VB, OPTIMUM)
#: Styles of series that are not methods (Fig. 10's label series).
EXTRA_STYLES = {"Eq. 28 label (oracle)": ("#7f7f7f", "P", ":")}


def section(name: str) -> tuple[Method, ...]:
    """The methods of section ``name`` ("va" or "vb"), in legend order."""
    if name not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {name!r}")
    return tuple(m for m in REGISTRY if m.section == name)


def get(section_name: str, name: str) -> Method:
    """The method ``name`` of a section; ``ValueError`` listing the known ones."""
    for m in section(section_name):
        if m.name == name:
            return m
    raise ValueError(f"unknown method {name!r} (choose among "
                     f"{', '.join(m.name for m in section(section_name))})")


def names(methods) -> tuple[str, ...]:
    """The names of ``methods``."""
    return tuple(m.name for m in methods)


def styles() -> dict[str, tuple[str, str, str]]:
    """``{name: (colour, marker, linestyle)}`` of every method and extra series."""
    out = dict(EXTRA_STYLES)
    for m in REGISTRY:
        out.setdefault(m.name, m.style)
    return out


def needs(methods) -> set[str]:
    """What the methods need trained (:data:`NEEDS`), together."""
    return set().union(*(m.needs for m in methods)) if methods else set()


def evaluate(methods, inputs: Inputs, scn: Scenario, sys_params: SystemParams,
             subsample: Mapping[str, int] | None = None) -> dict[str, Metrics]:
    """``{name: per-scenario Metrics}`` of ``methods`` on the same scenarios (jit-able).

    Each method decides (:attr:`Method.run`) and is scored by
    :func:`dynmec_jax.evaluation.score`.  ``subsample`` maps a method's
    :attr:`Method.subsample` tag to the number of leading scenarios it sees
    (a tag it does not map: every scenario).
    """
    out = {}
    for m in methods:
        if m.host:
            raise ValueError(f"{m.name} runs on the host (a solver), not in a program: see "
                             "dynmec_jax.experiments.optimum")
        s = scn
        if m.subsample is not None and subsample and m.subsample in subsample:
            s = jax.tree.map(lambda a, k=int(subsample[m.subsample]): a[:k], scn)
        out[m.name] = evaluation.scenario_metrics(s, m.run(inputs, s, sys_params), sys_params)
    return out
