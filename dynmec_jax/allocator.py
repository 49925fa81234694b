"""The allocator: one path from a trained network to bandwidth and CPU shares (Eq. 12-20).

* :class:`Allocator`: a trained allocation network (the MoE of
  :mod:`dynmec_jax.nets.moe` or the static one of
  :mod:`dynmec_jax.nets.static`) with its feature scales and system
  parameters; a pytree, so it passes through ``jit`` and ``vmap``.
* :func:`allocate`: the one allocation of a sub-network (width, depth), and
  :func:`allocate_all`: all ``K x L`` sub-networks in one pass.  The methods
  :meth:`Allocator.allocate` / :meth:`Allocator.allocate_all` check concrete
  inputs on the host and call them compiled.  One compiled function serves
  every (width, depth): both are traced integers.
* :func:`shares`: Eq. 18 and 20, ``b = b_max softmax_S(A)``, ``f = f_ser
  softmax_S(B)`` over the offloaded set S (:func:`masked_softmax`).  Every
  module that turns logits into resources calls it.
* MACs of a sub-network (Eq. 30-33): :meth:`Allocator.macs`,
  :meth:`Allocator.macs_table`, and :func:`gather_subnet` to pick one
  sub-network per scenario out of a ``(K, L, B, ...)`` table.
* :func:`save_allocator` / :func:`load_allocator` (the pretrained default
  ships in ``dynmec_jax/pretrained/allocator``).

Units: bandwidth in Hz, CPU frequency in cycles/s (SI, as in
:mod:`dynmec_jax.system`); MACs are counts.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, struct

from dynmec_jax import accounting, files, system
from dynmec_jax.nets.features import FeatureScales, normalize_features
from dynmec_jax.nets.moe import MoEAllocator, load_balance_loss, per_user
from dynmec_jax.nets.static import StaticAllocator
from dynmec_jax.system import Scenario, SystemParams

Array = Any

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent / "pretrained" / "allocator"
#: Allocation networks by config name.
KINDS = ("moe", "static")


# ----------------------------------------------------------------------------
# Shares (Eq. 18, 20) and the width/depth inputs
# ----------------------------------------------------------------------------

def masked_softmax(logits: Array, mask: Array, axis: int = -1) -> Array:
    """Softmax of ``logits`` over the entries where ``mask`` holds (Eq. 14, 18, 20).

    Entries outside ``mask`` are exactly 0; if ``mask`` is false everywhere
    along ``axis`` the result is all zeros.  Gradients are finite in every
    case (double-``where``: masked logits never reach ``exp`` and the
    normaliser is replaced by 1 where it is 0).  Dimensionless shares that sum
    to 1 over the masked-in entries.
    """
    logits = jnp.asarray(logits)
    m = jnp.broadcast_to(jnp.asarray(mask).astype(bool), logits.shape)
    top = jnp.max(jnp.where(m, logits, -jnp.inf), axis=axis, keepdims=True)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    e = jnp.where(m, jnp.exp(jnp.where(m, logits - top, 0.0)), 0.0)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def shares(logits: Array, offload: Array, sys_params: SystemParams):
    """Eq. 18 and 20: ``(b [Hz], f [cycles/s])`` from head logits ``(..., N, 2)``.

    ``b = b_max softmax(A)`` and ``f = f_ser softmax(B)`` over the users where
    ``offload`` (bool, broadcastable to ``(..., N)``) holds; the others get
    exactly 0, and a scenario with nothing offloaded gets all zeros.
    """
    bandwidth = sys_params.bandwidth_max * masked_softmax(logits[..., 0], offload)
    f_alloc = sys_params.f_server * masked_softmax(logits[..., 1], offload)
    return bandwidth, f_alloc


def offload_mask(offload: Array | None, shape) -> Array:
    """``offload`` as bool broadcast to ``shape``; None means every user offloads (Section V.A)."""
    if offload is None:
        return jnp.ones(shape, bool)
    return jnp.broadcast_to(jnp.asarray(offload).astype(bool), shape)


def check_range(value, lo: int, hi: int, name: str) -> None:
    """Raises ``ValueError`` for a concrete ``value`` outside [lo, hi] or not integral.

    A no-op for traced values (they are clipped to the range where used).
    """
    if isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    if not np.issubdtype(v.dtype, np.integer):
        if not np.all(np.equal(np.mod(v, 1), 0)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if v.size and (np.min(v) < lo or np.max(v) > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")


# ----------------------------------------------------------------------------
# Building a network
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AllocatorSpec:
    """The shape of an allocation network (Section IV.A, Table II), stored with its weights.

    Attributes:
      kind: "moe" (:class:`MoEAllocator`, Section IV.A) or "static"
        (:class:`StaticAllocator`, Section V.A's baseline).
      n_experts: K (the static model has width 1).
      n_layers: L, layers per expert (the static model's layers).
      hidden: units per expert layer (Table II: 64).
      static_hidden: the static model's units per layer (Section V.A: 384).
      negative_slope: LeakyReLU slope.
    """

    kind: str = "moe"
    n_experts: int = 10             # K
    n_layers: int = 3               # L
    hidden: int = 64
    static_hidden: int = 384        # Section V.A
    negative_slope: float = 0.01

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("n_experts", "n_layers", "hidden", "static_hidden"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def max_width(self) -> int:
        """K of the network (1 for the static model)."""
        return self.n_experts if self.kind == "moe" else 1

    def build(self) -> nn.Module:
        """The Flax network: :class:`MoEAllocator` (K experts of L layers of ``hidden``
        units) or :class:`StaticAllocator` (L layers of ``static_hidden`` units)."""
        if self.kind == "moe":
            return MoEAllocator(n_experts=self.n_experts, n_layers=self.n_layers,
                                hidden=self.hidden, negative_slope=self.negative_slope)
        return StaticAllocator(hidden=self.static_hidden, n_layers=self.n_layers,
                               negative_slope=self.negative_slope)

    @classmethod
    def of(cls, model: nn.Module) -> AllocatorSpec:
        """The spec of a built network (inverse of :meth:`build`)."""
        if isinstance(model, MoEAllocator):
            return cls("moe", model.n_experts, model.n_layers, model.hidden,
                       negative_slope=model.negative_slope)
        return cls("static", 1, model.n_layers, static_hidden=model.hidden,
                   negative_slope=model.negative_slope)


def init_params(key: Array, model: nn.Module) -> dict:
    """Initial weights of an allocation network (a pytree; independent of N).

    Counts: :func:`dynmec_jax.accounting.allocation_model_params` (MoE) or
    :func:`~dynmec_jax.accounting.static_model_params`.
    """
    z = jnp.zeros((1, accounting.N_FEATURES), jnp.float32)
    return model.init(key, z, 1, 1)


# ----------------------------------------------------------------------------
# A trained allocator
# ----------------------------------------------------------------------------

@struct.dataclass
class Allocator:
    """A trained allocation network, ready to allocate (Eq. 12-20).

    A pytree (``params``, ``scales`` and ``sys_params`` are leaves), so it
    can be passed into ``jit``/``vmap``.  ``model`` and ``record`` (a JSON
    string: config and training record) are static.

    Attributes:
      params: the network's weights (a flax variables dict).
      scales: input feature scales fixed at training time.
      sys_params: system parameters used by default for b_max and f_ser.
      model: the Flax module (MoE or static).
      record: JSON text with the training config and record.
    """

    params: Any
    scales: FeatureScales
    sys_params: SystemParams
    model: nn.Module = struct.field(pytree_node=False)
    record: str = struct.field(pytree_node=False, default="{}")

    @property
    def spec(self) -> AllocatorSpec:
        """The network's :class:`AllocatorSpec`."""
        return AllocatorSpec.of(self.model)

    @property
    def is_moe(self) -> bool:
        """Whether the network is the elastic MoE (else the static model)."""
        return isinstance(self.model, MoEAllocator)

    @property
    def n_experts(self) -> int:
        """K, the maximum width (1 for the static model)."""
        return self.model.n_experts if self.is_moe else 1

    @property
    def n_layers(self) -> int:
        """L, the maximum depth."""
        return self.model.n_layers

    def logits(self, scn: Scenario, width, depth, noise_key=None, gate_noise=None,
               layer_rows=None, capacity=None):
        """Per-user head logits ``(..., N, 2)`` and gates ``(..., N, K)`` of sub-network
        (width, depth) (Eq. 12-17; ``noise_key`` or ``gate_noise`` for Eq. 16's noise;
        ``layer_rows``: users sorted by depth, see
        :meth:`~dynmec_jax.nets.moe.MoEAllocator.expert_outputs`; ``capacity``: the
        MoE's capacity dispatch, :meth:`~dynmec_jax.nets.moe.MoEAllocator.__call__`)."""
        z = normalize_features(scn, self.scales)
        lead = z.shape[:-1]
        w = per_user(width, lead, "width")
        d = per_user(depth, lead, "depth")
        extra = {} if capacity is None else {"capacity": capacity}
        return self.model.apply(self.params, z, w, d, noise_key, gate_noise, layer_rows,
                                **extra)

    def logits_all(self, scn: Scenario, noise_key=None):
        """Head logits of every sub-network, ``(K, L, ..., N, 2)`` (one pass)."""
        z = normalize_features(scn, self.scales)
        if self.is_moe:
            return self.model.apply(self.params, z, noise_key, method=MoEAllocator.all_subnets)
        logits, _ = self.model.apply(self.params, z)
        return jnp.broadcast_to(logits, (1, self.n_layers) + logits.shape)

    def allocate(self, scn: Scenario, offload=None, width=None, depth=None,
                 sys_params: SystemParams | None = None):
        """``(bandwidth [Hz], f_alloc [cycles/s])`` of sub-network (width, depth).

        ``scn`` fields ``(..., N)`` (NumPy or JAX); ``offload`` bool
        ``(..., N)`` (None: all offload); width/depth default to the largest
        network and may be ints, traced ints, or per-scenario arrays.
        Concrete out-of-range values raise ``ValueError``.  Offloaded users
        share b_max and f_ser; others get exactly 0.  Compiled (:func:`allocate`).
        """
        width = self.n_experts if width is None else width
        depth = self.n_layers if depth is None else depth
        check_range(width, 1, self.n_experts, "width")
        check_range(depth, 1, self.n_layers, "depth")
        sp = self.sys_params if sys_params is None else sys_params
        return _allocate_jit(self, system.as_scenario(scn), offload, width, depth, sp)

    def allocate_all(self, scn: Scenario, offload=None, sys_params: SystemParams | None = None):
        """Allocations of all sub-networks, each ``(K, L, ..., N)``, in one pass (compiled)."""
        sp = self.sys_params if sys_params is None else sys_params
        return _allocate_all_jit(self, system.as_scenario(scn), offload, sp)

    def macs(self, width, depth, n_served):
        """M_Alloc of one inference at (width, depth) for ``n_served`` users [MACs] (Eq. 30-33).

        Elementwise over broadcast arrays; traced values are fine.  The static
        model ignores width and depth.
        """
        if not self.is_moe:
            return accounting.static_model_macs(n_served, hidden=self.model.hidden,
                                                depth=self.n_layers)
        m = accounting.allocation_model_macs(
            width, depth, n_served, n_experts=self.n_experts, n_layers=self.n_layers,
            hidden=self.model.hidden)
        return m["dynamic"] + m["fixed"]

    def macs_table(self, n_served):
        """M_Alloc of every sub-network, ``(K, L) + shape(n_served)`` [MACs] (Eq. 30-33).

        0 where ``n_served`` is 0 (nothing to allocate).  The static model
        gives ``(1, L, ...)``, the same count everywhere.
        """
        n = jnp.asarray(n_served)
        if not self.is_moe:
            m = self.macs(self.n_experts, self.n_layers, n)
            return jnp.broadcast_to(m, (1, self.n_layers) + n.shape)
        k = jnp.arange(1, self.n_experts + 1)
        d = jnp.arange(1, self.n_layers + 1)
        return self.macs(k.reshape((self.n_experts, 1) + (1,) * n.ndim),
                         d.reshape((1, self.n_layers) + (1,) * n.ndim), n)


def allocate(alloc: Allocator, scn: Scenario, offload: Array | None, width, depth,
             sys_params: SystemParams, noise_key: Array | None = None):
    """Allocation of sub-network (width, depth) (Eq. 12-20, 32): the one path.

    Args:
      alloc: the allocator.
      scn: tasks, fields ``(..., N)`` (SI units).
      offload: x_i, bool ``(..., N)``; None means every user offloads.
      width, depth: k in [1, K] and l in [1, L]: scalar, per scenario
        (``(...)``) or per user (``(..., N)``); traced values are clipped.
      sys_params: b_max [Hz] and f_ser [cycles/s].
      noise_key: Eq. 16's gate noise (training only).
    Returns:
      ``(bandwidth [Hz], f_alloc [cycles/s])``, each ``(..., N)``: they sum to
      b_max and f_ser over the offloaded users and are exactly 0 elsewhere.
    """
    logits, _ = alloc.logits(scn, width, depth, noise_key)
    return shares(logits, offload_mask(offload, logits.shape[:-1]), sys_params)


def allocate_all(alloc: Allocator, scn: Scenario, offload: Array | None,
                 sys_params: SystemParams, noise_key: Array | None = None):
    """Allocations of all K x L sub-networks in one pass, each ``(K, L, ..., N)``.

    Entry ``[k-1, l-1]`` equals :func:`allocate` at (k, l) up to float
    rounding (see :meth:`~dynmec_jax.nets.moe.MoEAllocator.all_subnets`).
    """
    logits = alloc.logits_all(scn, noise_key)
    return shares(logits, offload_mask(offload, logits.shape[2:-1]), sys_params)


def allocate_with_aux(alloc: Allocator, scn: Scenario, offload: Array | None, width, depth,
                      sys_params: SystemParams, noise_key: Array | None = None):
    """:func:`allocate` plus ``(logits (..., N, 2), gates (..., N, K), load_balance)``.

    ``load_balance``: the importance loss (CV^2) of the gates over the
    offloaded users (:func:`dynmec_jax.nets.moe.load_balance_loss`),
    dimensionless.  For training and inspection.
    """
    logits, gates = alloc.logits(scn, width, depth, noise_key)
    mask = offload_mask(offload, logits.shape[:-1])
    bandwidth, f_alloc = shares(logits, mask, sys_params)
    return bandwidth, f_alloc, (logits, gates, load_balance_loss(gates, mask))


_allocate_jit = jax.jit(allocate)
_allocate_all_jit = jax.jit(allocate_all)


def gather_subnet(table: Array, width: Array, depth: Array) -> Array:
    """``table[width-1, depth-1, b, ...]`` per leading index: ``(K, L, B, ...)`` -> ``(B, ...)``.

    ``width``/``depth``: int ``(B,)`` or ``(B, M)`` (1-based); for ``(B, M)``
    the result is ``(B, M, ...)`` with ``table`` ``(K, L, B, ...)`` indexed
    at ``[w[b, m]-1, d[b, m]-1, b]``.  Picks the logits or costs of a traced
    sub-network out of the one-pass tables (units of ``table``).
    """
    t = jnp.moveaxis(table, 2, 0)                           # (B, K, L, ...)
    w = jnp.asarray(width).astype(jnp.int32) - 1
    d = jnp.asarray(depth).astype(jnp.int32) - 1
    K, L = t.shape[1], t.shape[2]
    w = jnp.clip(w, 0, K - 1)
    d = jnp.clip(d, 0, L - 1)
    if w.ndim == 1:
        return jax.vmap(lambda tb, wb, db: tb[wb, db])(t, w, d)
    return jax.vmap(lambda tb, wb, db: jax.vmap(lambda wm, dm: tb[wm, dm])(wb, db))(t, w, d)


# ----------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------

def save_allocator(alloc: Allocator, path, extra: dict | None = None) -> pathlib.Path:
    """Writes ``params.msgpack`` and ``allocator.json`` (the :class:`AllocatorSpec`,
    scales, system parameters, training record ``extra``) under directory
    ``path``, atomically per file (the spec is stored last-read-first: a
    missing ``allocator.json`` means the save did not finish)."""
    path = pathlib.Path(path)
    meta = {
        "model": dataclasses.asdict(alloc.spec),
        "scales": {k: float(v) for k, v in dataclasses.asdict(alloc.scales).items()},
        "sys_params": {k: (float(v) if k != "n_users" else int(v))
                       for k, v in dataclasses.asdict(alloc.sys_params).items()},
        "record": extra or {},
    }
    files.atomic_write(path / "params.msgpack",
                       serialization.to_bytes(jax.tree.map(np.asarray, alloc.params)))
    files.atomic_write(path / "allocator.json", files.dumps(meta, indent=1))
    return path


def load_allocator(path=None) -> Allocator:
    """Loads a saved allocator; ``path=None`` loads the pretrained default.

    The default was trained by ``launch/train_allocator.py`` on the default
    config and ships in ``dynmec_jax/pretrained/allocator``.  Raises
    ``FileNotFoundError`` or ``ValueError`` naming the path if the files are
    missing or corrupt.
    """
    path = PRETRAINED_DIR if path is None else pathlib.Path(path)
    meta_file, params_file = files.model_files(path, "allocator", "allocator.json",
                                               "params.msgpack")
    try:
        meta = json.loads(meta_file.read_text())
        model = AllocatorSpec(**meta["model"]).build()
        # Shapes only (no eager initialisation: that compiles ~100 tiny programs).
        template = jax.eval_shape(lambda: init_params(jax.random.key(0), model))
        params = serialization.from_bytes(template, params_file.read_bytes())
        shapes_ok = jax.tree.all(jax.tree.map(lambda a, b: np.shape(a) == np.shape(b),
                                              template, params))
        if not shapes_ok:
            raise ValueError("parameter shapes do not match the stored model config")
        scales = FeatureScales(**meta["scales"])
        sp = SystemParams(**meta["sys_params"])
    except Exception as e:  # msgpack/flax raise various types on corrupt bytes
        raise ValueError(f"corrupt allocator checkpoint at {path}: {e}") from e
    return Allocator(params=jax.tree.map(jnp.asarray, params), scales=scales, sys_params=sp,
                     model=model, record=json.dumps(meta))
