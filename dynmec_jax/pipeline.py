"""The joint pipeline of Section IV: scheduler, policy and allocator deciding together.

* :class:`Pipeline` (scheduler weights, policy weights, the fixed
  :class:`~dynmec_jax.allocator.Allocator` and the static :class:`Models`)
  with ``.decide(scn)``: the greedy offloading decision (p > 0.5, Eq. 22),
  the policy's (width, depth), the allocation (Eq. 12-20) and the inference
  delays of Eq. 34-35.  :func:`decide_body` is the same as a jit-able
  function (the evaluation of every Section V method calls it).
* :func:`save_pipeline` / :func:`load_pipeline` (the shipped default lives in
  ``dynmec_jax/pretrained/pipeline``, made by ``launch/train_joint.py
  --export_pretrained``).

Training is in :mod:`dynmec_jax.train.joint`.  Units: SI (Hz, cycles/s, s).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import warnings
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, struct

from dynmec_jax import accounting, checks, costs, files, system
from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cell as cell_lib
from dynmec_jax.nets import features
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.system import Scenario, SystemParams

Array = Any

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent / "pretrained" / "pipeline"


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """The shape of a joint model (scheduler and policy), saved with its weights.

    The one definition of these settings: :class:`dynmec_jax.train.config.TrainConfig`
    extends it with the training fields, and :func:`save_pipeline` /
    :func:`load_pipeline` store and rebuild it field by field (generically).

    Attributes:
      n_users: N the scheduler was trained for (the paper's scheduler takes
        exactly N users; the per-user "set" scheduler any N, and N sets its
        reference M_Sced); with ``n_users_min``, the largest N.
      n_users_min: None, or the smallest N of mixed-N training (the set
        scheduler then reads count features, :class:`SetScheduler`).
      scheduler: "set" (per-user, the default) or "paper" (Eq. 21-22's ``5N -> 32 -> N``).
      scheduler_hidden, scheduler_layers, scheduler_passes: the scheduler's
        hidden units (Section V: 32), hidden layers per pass and passes ("set" only).
      policy_hidden: the policy's hidden units (Section V: 32).
      negative_slope: LeakyReLU slope of both networks.
      variant: "full", "fix_width", "fix_depth" or "fixed" (:mod:`dynmec_jax.nets.policy`).
      fixed_width, fixed_depth: the sub-network of variant "fixed" (None: the largest).
      cell: "" (the networks do not see the cell: trained at one SystemParams), or
        the range of cells it was trained over, ``"name=lo:hi:log|lin,..."``
        (:func:`dynmec_jax.cell.parse_range`; "default" expands to
        :data:`dynmec_jax.cell.DEFAULT_RANGE`): the scheduler and the policy then
        read the cell features (:func:`dynmec_jax.cell.cell_features`) and
        training samples one cell per scenario.  Stored expanded.
      cost_features: the set scheduler also reads each task's stand-alone cost
        ratios in its cell (:func:`dynmec_jax.nets.features.cost_features`,
        beyond the paper), after the cell features.
      skip_dominated: the decisions keep local every task that offloading can
        only make dearer (:func:`dynmec_jax.nets.features.dominated`, beyond
        the paper), whatever the scheduler says.
      scheduler_gate: 0, or the early exit of the set scheduler's last pass
        (:class:`SetScheduler`, beyond the paper): only the users whose logit
        after the earlier passes is within +-``scheduler_gate`` run it, and
        M_Sced (Eq. 34-35) counts them only.  Needs ``scheduler_passes`` >= 2.
        Chosen after training (``dynmec-tune-gate``, :mod:`dynmec_jax.train.gate`);
        a training run with it set charges every pass in its rewards.
    """

    n_users: int = 30
    n_users_min: int | None = None
    scheduler: str = "set"
    scheduler_hidden: int = scheduler_net.HIDDEN
    scheduler_layers: int = 2
    scheduler_passes: int = 2
    policy_hidden: int = scheduler_net.HIDDEN
    negative_slope: float = scheduler_net.NEGATIVE_SLOPE
    variant: str = "full"
    fixed_width: int | None = None
    fixed_depth: int | None = None
    cell: str = ""
    cost_features: bool = False
    skip_dominated: bool = False
    scheduler_gate: float = 0.0

    def __post_init__(self):
        try:
            object.__setattr__(self, "cell", cell_lib.normalize_range(self.cell))
        except ValueError as e:
            raise ValueError(f"train.cell: {e}") from None
        if self.cell and self.scheduler != "set":
            raise ValueError("train.cell (cell features) needs train.scheduler='set'")
        if self.cost_features and self.scheduler != "set":
            raise ValueError("train.cost_features needs train.scheduler='set'")
        if not self.scheduler_gate >= 0:
            raise ValueError(f"train.scheduler_gate must be >= 0, got {self.scheduler_gate}")
        if self.scheduler_gate and (self.scheduler != "set" or self.scheduler_passes < 2):
            raise ValueError("train.scheduler_gate (early exit of the last pass) needs "
                             "train.scheduler='set' and train.scheduler_passes >= 2")
        for name in ("n_users", "scheduler_hidden", "policy_hidden", "scheduler_layers",
                     "scheduler_passes"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.scheduler not in scheduler_net.SCHEDULERS:
            raise ValueError(f"train.scheduler must be one of {scheduler_net.SCHEDULERS}, "
                             f"got {self.scheduler!r}")
        if self.variant not in policy_net.VARIANTS:
            raise ValueError(f"train.variant must be one of {policy_net.VARIANTS}, "
                             f"got {self.variant!r}")
        for name in ("fixed_width", "fixed_depth"):
            if getattr(self, name) is not None and not getattr(self, name) >= 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_users_min is not None:
            if not 1 <= self.n_users_min <= self.n_users:
                raise ValueError(f"train.n_users_min must be in [1, n_users={self.n_users}], "
                                 f"got {self.n_users_min}")
            if self.scheduler != "set":
                raise ValueError("train.n_users_min (mixed N) needs train.scheduler='set'")

    @classmethod
    def of(cls, config) -> PipelineSpec:
        """The spec part of ``config`` (any object with these fields, e.g. a ``TrainConfig``)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def fixed(self, n_experts: int, n_layers: int):
        """(width, depth) of variant "fixed" (defaults: K, L)."""
        return (n_experts if self.fixed_width is None else self.fixed_width,
                n_layers if self.fixed_depth is None else self.fixed_depth)

    @property
    def cell_ranges(self) -> tuple:
        """The parsed :attr:`cell` (:class:`dynmec_jax.cell.FieldRange` each; () if none)."""
        return cell_lib.parse_range(self.cell)


class Models(NamedTuple):
    """The static parts of a joint model: modules, sizes and MAC counts."""

    scheduler: nn.Module
    policy: policy_net.Policy
    n_experts: int
    n_layers: int
    variant: str
    fixed: tuple
    scheduler_macs: int
    policy_macs: int
    cell: tuple = ()
    cost_features: bool = False
    skip_dominated: bool = False

    def cell_features(self, sys_params: SystemParams):
        """The cell features ``(C,)`` of one cell (:func:`dynmec_jax.cell.cell_features`),
        or None when the networks read none."""
        return cell_lib.cell_features(sys_params, self.cell) if self.cell else None

    def scheduler_tail(self, scn: Scenario, sys_params: SystemParams):
        """What the set scheduler reads after the task features: the cell features ``(C,)``
        (or ``(B, C)``, one cell per scenario), then, with :attr:`cost_features`, each
        task's cost ratios (:func:`dynmec_jax.nets.features.cost_features`), together
        ``(..., N, C + 3)``; None when it reads neither.  ``scn`` fields ``(..., N)``
        (``(B, N)`` with per-scenario cells)."""
        if not self.cost_features:
            return self.cell_features(sys_params)

        def one(sp, s):
            u = features.cost_features(s, sp)
            cf = self.cell_features(sp)
            if cf is None:
                return u
            return jnp.concatenate([jnp.broadcast_to(cf, u.shape[:-1] + cf.shape), u], -1)

        return cell_lib.over_scenarios(one, sys_params, system.as_scenario(scn))

    def greedy_offload(self, params, scn: Scenario, sys_params: SystemParams, scales,
                       valid: Array | None = None):
        """``(logits, x, M_Sced)``: the scheduler's offloading logits (p_i =
        sigmoid(logit_i), Eq. 22; ``params`` its weights, ``scales`` the allocator's
        feature scales), its greedy decision x = [p > 0.5], with :attr:`skip_dominated`
        the dominated tasks (:func:`dynmec_jax.nets.features.dominated`) kept local, and
        what the scheduler
        cost per scenario [MACs] (Eq. 34-35; the real users only, and with an early
        exit the users that ran the last pass,
        :func:`dynmec_jax.nets.scheduler.offload_logits_and_macs`).  ``sys_params``:
        one cell or one per scenario; ``valid``: the real users of padded scenarios
        (the caller masks x with it)."""
        logits, macs = scheduler_net.offload_logits_and_macs(
            self.scheduler, params, scn, scales, valid, self.scheduler_tail(scn, sys_params))
        x = scheduler_net.greedy_actions(jax.nn.sigmoid(logits))
        if self.skip_dominated:
            x = x & ~cell_lib.over_scenarios(lambda sp, s: features.dominated(s, sp),
                                             sys_params, system.as_scenario(scn))
        return logits, x, macs


def build_models(spec: PipelineSpec, allocator) -> Models:
    """Modules and MAC counts (M_Sced at ``spec.n_users`` users, M_Poli of Eq. 34-35) of
    ``spec`` (a :class:`PipelineSpec` or a config extending it) on ``allocator``.

    M_Poli is 0 for variant "fixed" (no policy runs).
    """
    K, L = allocator.n_experts, allocator.n_layers
    fixed = spec.fixed(K, L)
    if not (1 <= fixed[0] <= K and 1 <= fixed[1] <= L):
        raise ValueError(f"fixed sub-network {fixed} outside [1, {K}] x [1, {L}]")
    # Mixed-N training gives the set scheduler the count features it needs to tell N apart.
    ranges = cell_lib.parse_range(getattr(spec, "cell", ""))
    cost = bool(getattr(spec, "cost_features", False))
    n_cost = features.N_COST_FEATURES if cost else 0
    sched, sched_macs = scheduler_net.build_scheduler(spec.scheduler, spec.n_users,
                                                      spec.scheduler_hidden,
                                                      spec.scheduler_layers,
                                                      spec.scheduler_passes,
                                                      counts=spec.n_users_min is not None,
                                                      negative_slope=spec.negative_slope,
                                                      n_cell=len(ranges) + n_cost,
                                                      gate=float(getattr(spec, "scheduler_gate",
                                                                         0.0)))
    policy_macs = 0 if spec.variant == "fixed" else accounting.policy_macs(
        spec.policy_hidden, accounting.N_POLICY_INPUTS + len(ranges))
    return Models(scheduler=sched,
                  policy=policy_net.Policy(K, L, spec.policy_hidden, spec.negative_slope),
                  n_experts=K, n_layers=L, variant=spec.variant, fixed=fixed,
                  scheduler_macs=sched_macs, policy_macs=policy_macs, cell=ranges,
                  cost_features=cost,
                  skip_dominated=bool(getattr(spec, "skip_dominated", False)))


def decide_subnet(models: Models, policy_params, allocator, scn: Scenario, offload: Array,
                  sys_params: SystemParams):
    """The policy's (width, depth) for offload set(s) ``offload`` (``(B, N)`` or ``(B, M, N)``).

    Greedy (rounded) choice; int32 of the mask's leading shape.  ``sys_params``: one
    cell (scalar fields; per-scenario cells go through :func:`dynmec_jax.cell.over_scenarios`).
    """
    feats = policy_net.policy_features(scn, offload, allocator.scales, sys_params,
                                       allocator.sys_params, models.cell_features(sys_params))
    out = models.policy.apply(policy_params, feats)
    return policy_net.choose(out, models.n_experts, models.n_layers, models.variant, models.fixed)


class Decision(NamedTuple):
    """The pipeline's decision for a scenario or a batch (leading shape ``(...)``).

    Attributes:
      offload: x_i, bool ``(..., N)``.
      width, depth: the allocator sub-network, int32 ``(...)``.
      bandwidth: b_i [Hz], ``(..., N)`` (0 for local tasks; sums to b_max
        over offloaded ones).
      f_alloc: f_i^ser [cycles/s], ``(..., N)`` (likewise with f_ser).
      inference_delay_local: T_l^infer of Eq. 34 [s], ``(...)``.
      inference_delay_edge: T_e^infer of Eq. 35 [s], ``(...)`` (with
        M_Alloc for the number actually offloaded).
      input_ok: bool ``(...)``: the scenario's tasks passed the value checks
        (:func:`dynmec_jax.checks.tasks_ok`: finite, in their physical
        bounds).  Set by :func:`decide_body`, so jitted callers, which cannot
        raise, see which scenarios were invalid (their decision means
        nothing); None where no check ran (the baselines).
    """

    offload: Array
    width: Array
    depth: Array
    bandwidth: Array
    f_alloc: Array
    inference_delay_local: Array
    inference_delay_edge: Array
    input_ok: Array | None = None


@struct.dataclass
class Pipeline:
    """Scheduler + policy + allocator (Section IV), a pytree usable inside ``jit``.

    Attributes:
      scheduler_params, policy_params: trained parameters (``policy_params``
        unused for variant "fixed").
      allocator: the fixed :class:`~dynmec_jax.allocator.Allocator`.
      spec: :class:`PipelineSpec` (static): the networks' shapes and variant;
        :attr:`models` builds the modules and MAC counts from it.
      record: JSON text (training config and record), static.
    """

    scheduler_params: Any
    policy_params: Any
    allocator: Any
    spec: PipelineSpec = struct.field(pytree_node=False)
    record: str = struct.field(pytree_node=False, default="{}")

    @property
    def models(self) -> Models:
        """The modules and MAC counts of :attr:`spec` on :attr:`allocator` (build_models)."""
        return build_models(self.spec, self.allocator)

    def with_allocator(self, allocator) -> Pipeline:
        """This pipeline's scheduler and policy on another allocator, checked.

        The policy chooses among the allocator's K x L sub-networks and both
        networks read the features through the allocator's scales; a
        different K or L, or different feature scales, raise ``ValueError``
        saying what must be retrained (``launch/train_joint.py`` with
        ``--config.allocator=DIR``).
        """
        old = self.allocator
        if (allocator.n_experts, allocator.n_layers) != (old.n_experts, old.n_layers):
            raise ValueError(
                f"the policy chooses among K x L = {old.n_experts} x {old.n_layers} "
                f"sub-networks, the new allocator has {allocator.n_experts} x "
                f"{allocator.n_layers}: retrain the scheduler and policy on it "
                "(launch/train_joint.py --config.allocator=DIR)")
        same = jax.tree.all(jax.tree.map(lambda a, b: bool(np.allclose(a, b, rtol=1e-6)),
                                         old.scales, allocator.scales))
        if not same:
            raise ValueError(
                f"the scheduler and policy read features scaled by {old.scales}, the new "
                f"allocator by {allocator.scales}: retrain them on it "
                "(launch/train_joint.py --config.allocator=DIR)")
        return self.replace(allocator=allocator)

    @property
    def sys_params(self) -> SystemParams:
        """The default system of :meth:`decide`: the allocator's (Table II for the shipped one)."""
        return self.allocator.sys_params

    @property
    def n_users(self) -> int | None:
        """N the scheduler was built for; None for a per-user scheduler (any N)."""
        return self.spec.n_users if self.spec.scheduler == "paper" else None

    def decide(self, scn: Scenario, sys_params: SystemParams | None = None) -> Decision:
        """Greedy joint decision: offload (p > 0.5), (width, depth), allocation, delays.

        ``scn`` fields ``(N,)`` or ``(B, N)`` (NumPy or JAX), checked by
        :func:`dynmec_jax.checks.validate_scenario` (``ValueError`` naming the
        field and index of a bad value, including one outside
        :data:`dynmec_jax.checks.SCENARIO_BOUNDS`: the decision runs in
        float32, where e.g. a size of 1e39 bits is inf; inside ``jit`` use
        :func:`decide_body`, unchecked, or ``checks.check_scenario`` under
        ``checkify``);
        ``sys_params`` defaults to the allocator's; it is the cell (any
        field of :class:`~dynmec_jax.system.SystemParams`), one for all
        scenarios, or one per scenario (float fields of shape ``(B,)``,
        :func:`dynmec_jax.cell.broadcast_cells`).  A pipeline with cell
        features (``spec.cell``) decides for that cell; one without was
        trained at one cell.  Fields outside the trained range
        (:meth:`cell_warnings`) raise a ``UserWarning`` naming field, value
        and range.  N comes from the scenario, whatever
        ``sys_params.n_users`` says.  Returns a :class:`Decision` of the
        same leading shape.

        Any N: with the per-user scheduler, scenarios are padded to
        :func:`padded_users` (64 up to N = 64, then the next power of two)
        with a mask (:func:`dynmec_jax.system.pad_users`), so one compiled
        program serves every N up to 64; the padding is cut from the result.
        """
        sp = self.allocator.sys_params if sys_params is None else sys_params
        if not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((scn, sp))):
            scn = checks.validate_scenario(scn)
            for line in self.cell_warnings(sp):
                warnings.warn(line, stacklevel=2)
        scn = system.as_scenario(scn)
        single = jnp.ndim(scn.size) == 1
        if single:
            scn = jax.tree.map(lambda a: a[None], scn)
        n = scn.shape[-1]
        if cell_lib.is_per_scenario(sp) and jnp.shape(sp.bandwidth_max) != scn.shape[:1]:
            raise ValueError(f"one cell per scenario needs fields of shape {scn.shape[:1]}, "
                             f"got {jnp.shape(sp.bandwidth_max)}")
        if self.n_users is None:
            # Padded users only need finite features: the reference cell's sampling ranges.
            padded, valid = system.pad_users(scn, padded_users(n), self.allocator.sys_params)
            d = jax.tree.map(lambda a: a[..., :n] if a.ndim == 2 else a,
                             _decide_jit(self, padded, sp, None, valid))
        else:
            d = _decide_jit(self, scn, sp)
        return jax.tree.map(lambda a: a[0], d) if single else d


    @property
    def cell_range(self) -> tuple:
        """The trained cell range (:class:`dynmec_jax.cell.FieldRange` each; () for a
        pipeline trained at the one cell :attr:`sys_params`)."""
        return self.spec.cell_ranges

    def cell_warnings(self, sys_params: SystemParams) -> list[str]:
        """One line per field of ``sys_params`` outside the cells this pipeline was trained
        on (:func:`dynmec_jax.cell.out_of_range`; host-side)."""
        return cell_lib.out_of_range(sys_params, self.cell_range, self.allocator.sys_params)


def padded_users(n: int, smallest: int = 64) -> int:
    """The padded N of :meth:`Pipeline.decide`: ``smallest`` up to it, else the next power of 2."""
    return max(smallest, 1 << (int(n) - 1).bit_length())


def decide_body(pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                offload: Array | None = None, valid: Array | None = None) -> Decision:
    """:meth:`Pipeline.decide` for ``(B, N)`` scenarios (jit-able, unchecked).

    ``offload``: override the scheduler (e.g. the Rand baseline); None uses
    the greedy scheduler (with ``spec.skip_dominated``, dominated tasks then
    stay local).  ``valid``: the real users of padded scenarios
    (padded users never offload; M_Sced counts the real ones).  Inference
    delays follow Eq. 34-35 with the pipeline's M_Sced and M_Poli.
    Unchecked (it cannot raise on traced values), but the decision's
    ``input_ok`` says per scenario whether its tasks passed the value checks.
    ``sys_params``: one cell, or one per scenario (float fields ``(B,)``; then
    each scenario is decided for its own, :func:`dynmec_jax.cell.over_scenarios`).
    """
    return cell_lib.over_scenarios(
        lambda sp, s, o, v: _decide_cell(pipe, s, sp, o, v), sys_params, scn, offload, valid)


def _decide_cell(pipe: Pipeline, scn: Scenario, sys_params: SystemParams,
                 offload: Array | None, valid: Array | None) -> Decision:
    """:func:`decide_body` for one cell."""
    m = pipe.models
    if offload is None:
        _, offload, sched_macs = m.greedy_offload(pipe.scheduler_params, scn, sys_params,
                                                  pipe.allocator.scales, valid)
    else:
        sched_macs = scheduler_net.module_macs(
            m.scheduler, scn.size.shape[-1] if valid is None else jnp.sum(valid, axis=-1))
    x = jnp.asarray(offload).astype(bool)
    if valid is not None:
        x = x & valid
    width, depth = decide_subnet(m, pipe.policy_params, pipe.allocator, scn, x, sys_params)
    bandwidth, f_alloc = allocator_lib.allocate(pipe.allocator, scn, x, width, depth, sys_params)
    n = jnp.sum(x, axis=-1)
    t_loc, t_edge = costs.inference_delays(
        sys_params, sched_macs, m.policy_macs,
        pipe.allocator.macs(width, depth, n))
    shape = n.shape
    ok = checks.tasks_ok(scn)
    if valid is not None:
        ok = ok | ~valid
    return Decision(x, width, depth, bandwidth, f_alloc, jnp.broadcast_to(t_loc, shape),
                    jnp.broadcast_to(t_edge, shape), jnp.all(ok, axis=-1))


_decide_jit = jax.jit(decide_body)


def make_pipeline(spec: PipelineSpec, allocator, state, record: dict | None = None) -> Pipeline:
    """A :class:`Pipeline` from trained weights.

    ``spec``: a :class:`PipelineSpec` or a config extending it (a
    ``TrainConfig``; its training fields go into the record); ``state`` has
    ``scheduler`` and ``policy`` fields (a ``JointState`` of one seed, not
    vmapped).
    """
    rec = dict(record or {})
    if type(spec) is not PipelineSpec:
        rec.setdefault("train_config", files.to_jsonable(spec))
    return Pipeline(scheduler_params=state.scheduler, policy_params=state.policy,
                    allocator=allocator, spec=PipelineSpec.of(spec), record=json.dumps(rec))


#: Format of ``pipeline.json`` (:func:`save_pipeline`).
FORMAT = 2


def save_pipeline(pipe: Pipeline, path) -> pathlib.Path:
    """Writes a pipeline under directory ``path``.

    Files: ``scheduler.msgpack``, ``policy.msgpack`` (flax msgpack),
    ``pipeline.json`` (``{"format", "spec": the PipelineSpec's fields,
    "record"}``) and ``allocator/`` (:func:`dynmec_jax.allocator.save_allocator`).
    """
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "spec": dataclasses.asdict(pipe.spec),
            "record": json.loads(pipe.record or "{}")}
    allocator_lib.save_allocator(pipe.allocator, path / "allocator",
                                 extra=json.loads(pipe.allocator.record or "{}").get("record"))
    files.atomic_write(path / "scheduler.msgpack",
                       serialization.to_bytes(jax.tree.map(np.asarray, pipe.scheduler_params)))
    files.atomic_write(path / "policy.msgpack",
                       serialization.to_bytes(jax.tree.map(np.asarray, pipe.policy_params)))
    files.atomic_write(path / "pipeline.json", files.dumps(meta, indent=1))
    return path


def load_pipeline(path=None) -> Pipeline:
    """Loads a saved pipeline; ``path=None`` loads the shipped default.

    The default lives in ``dynmec_jax/pretrained/pipeline`` (made by
    ``launch/train_joint.py --export_pretrained``).

    Raises ``FileNotFoundError`` naming the missing file (e.g. when the
    default has not been produced yet) and ``ValueError`` naming the path if
    the files are corrupt.
    """
    path = PRETRAINED_DIR if path is None else pathlib.Path(path)
    paths = files.model_files(path, "pipeline", "pipeline.json", "scheduler.msgpack",
                              "policy.msgpack")
    allocator = allocator_lib.load_allocator(path / "allocator")
    try:
        meta = json.loads(paths[0].read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown pipeline.json format {meta.get('format')!r} "
                             f"(this version reads format {FORMAT})")
        spec = PipelineSpec(**meta["spec"])
        models = build_models(spec, allocator)
        # Shapes only (no eager initialisation: that compiles ~100 tiny programs).
        s_tmpl = jax.eval_shape(lambda: scheduler_net.init_scheduler(
            jax.random.key(0), models.scheduler, spec.n_users))
        p_tmpl = jax.eval_shape(lambda: policy_net.init_policy(jax.random.key(0), models.policy,
                                                               len(models.cell)))
        s_params = serialization.from_bytes(s_tmpl, paths[1].read_bytes())
        p_params = serialization.from_bytes(p_tmpl, paths[2].read_bytes())
        for t, v in ((s_tmpl, s_params), (p_tmpl, p_params)):
            if not jax.tree.all(jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), t, v)):
                raise ValueError("parameter shapes do not match the stored spec")
    except Exception as e:  # msgpack/flax raise various types on corrupt bytes
        raise ValueError(f"corrupt pipeline checkpoint at {path}: {e}") from e
    return Pipeline(scheduler_params=jax.tree.map(jnp.asarray, s_params),
                    policy_params=jax.tree.map(jnp.asarray, p_params), allocator=allocator,
                    spec=spec, record=json.dumps(meta.get("record", {})))
