"""PyTorch peers of the allocator training step, for ``benchmarks/compare_pytorch.py``.

Each peer is the step of :func:`dynmec_jax.train.allocator.make_train_step`
written in PyTorch: sample B scenarios of N users, their offload masks and
one (width, depth) per scenario, then the bandwidth update (forward,
backward, Adam) and the CPU update (forward at the updated weights,
backward, a second Adam), with the noisy top-k gate of Eq. 16.  All peers
share the sampling (:func:`sample_batch`), the features (:func:`features`)
and the losses (:func:`scenario_losses`), start from the same JAX
initialisation, and differ only in how the network is computed:

* ``a``: eager PyTorch the way a PyTorch user writes it
  (:class:`MoEModule`): an ``nn.ModuleList`` of K experts, each three
  ``nn.Linear`` + ``nn.LeakyReLU``, looped in Python; the gate with
  ``torch.topk`` and a softmax over the kept logits scattered to (M, K);
  depth by masking (every layer computed), every expert computed densely.
* ``b``: the same module, the loss function (model + losses, forward and
  the backward AOTAutograd derives from it) under ``torch.compile``
  (default mode, ``dynamic=False``); Adam stays eager.
* ``b_max``: as ``b`` with ``mode="max-autotune-no-cudagraphs"``.
* ``c``: the stacked-expert version (``torch.bmm`` over the K experts, the
  rank-based top-k gate of :func:`dynmec_jax.nets.moe.expert_ranks`,
  masked depth): the original peer of ``compare_pytorch.py``.
* ``d``: sparse eager: the same :class:`MoEModule`, but each expert computes
  only the users whose top-``width`` set contains it (``nonzero`` +
  ``index_select``), and each hidden layer only the rows whose depth reaches
  it; combined with ``index_copy``/``index_add_``, so the output equals the
  dense one.  Fewer FLOPs than the others (its GFLOP/s are quoted against
  the dense count).
* ``d_compiled``: ``d`` under ``torch.compile(dynamic=True)`` (the row
  counts change every step); kept only if it does not recompile after
  warm-up.

Adam: ``torch.optim.Adam(params, lr)`` with its defaults (on CPU, the
per-tensor loop), two instances over the same parameters, as the JAX step
has two optax states.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PEERS = ("a", "b", "b_max", "c", "d", "d_compiled")
DENSE_PEERS = ("a", "b", "b_max", "c")
PEER_LABELS = {
    "a": "eager nn.Module (ModuleList of experts, dense, masked depth)",
    "b": "torch.compile(a), default mode",
    "b_max": "torch.compile(a), max-autotune-no-cudagraphs",
    "c": "eager bmm over stacked experts (masked, rank gate)",
    "d": "eager sparse (selected experts and layers only)",
    "d_compiled": "torch.compile(d, dynamic=True)",
}


def set_threads(n: int | None = None) -> int:
    """Sets torch's intra-op threads to ``n`` (default: the cores this process may use)."""
    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return torch.get_num_threads()


# ----------------------------------------------------------------------------
# Shared: constants, sampling, features, losses
# ----------------------------------------------------------------------------

class Consts(NamedTuple):
    """The system parameters the step uses, as plain floats (constants to ``torch.compile``)."""

    n_users: int
    bandwidth_max: float
    f_server: float
    importance_scale: float
    size_avg: float
    workload_avg: float
    deadline_min: float
    deadline_max: float
    distance_min: float
    distance_max: float
    f_local_min: float
    f_local_max: float
    path_loss_exp: float
    log_k_const: float   # log(g0 l0^h p / sigma_0): the SNR is exp(this - h log l) / b

    @classmethod
    def from_params(cls, sp) -> Consts:
        """From a :class:`dynmec_jax.system.SystemParams`."""
        f = lambda name: float(getattr(sp, name))
        log_k = (math.log(f("path_loss_const")) + f("path_loss_exp") * math.log(f("ref_distance"))
                 + math.log(f("tx_power")) - math.log(f("noise_psd")))
        return cls(int(sp.n_users), *(f(n) for n in cls._fields[1:-1]), log_k)


class Batch(NamedTuple):
    """One training batch: scenarios, masks, sub-networks, features and gate noise."""

    scn: dict          # size, workload, deadline, distance, f_local: (B, N) each
    mask: torch.Tensor      # (B, N) bool, offloaded users
    width: torch.Tensor     # (B,) int64 in 1..K
    depth: torch.Tensor     # (B,) int64 in 1..L
    z: torch.Tensor         # (B*N, 5) normalised features
    width_u: torch.Tensor   # (B*N,) width of each user's scenario
    depth_u: torch.Tensor   # (B*N,) depth of each user's scenario
    eps: torch.Tensor       # (B*N, K) gate noise of Eq. 16


def subnets_uniform(B: int, K: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One (width, depth) per scenario, uniform over all K x L sub-networks."""
    sub = torch.randint(0, K * L, (B,))
    return sub // L + 1, sub % L + 1


def subnets_stratified(B: int, K: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each depth 1..L given to B/L scenarios (contiguous blocks; sizes differ by <= 1
    when L does not divide B), widths uniform on 1..K.  Scenarios are i.i.d., so
    which scenarios get which depth does not matter."""
    depth = torch.arange(B) * L // B + 1
    return torch.randint(1, K + 1, (B,)), depth


SUBNET_SAMPLERS: dict[str, Callable] = {"uniform": subnets_uniform,
                                        "stratified": subnets_stratified}


def features(scn: dict, c: Consts, floor: float = 1e-4) -> torch.Tensor:
    """The five log-ratio features of :func:`dynmec_jax.nets.features.normalize_features`,
    ``(B*N, 5)``."""
    f = lambda x, ref: torch.log(torch.clamp(x / ref, min=floor))
    z = torch.stack([f(scn["size"], c.size_avg), f(scn["workload"], c.workload_avg),
                     f(scn["deadline"], c.deadline_max), f(scn["distance"], c.distance_max),
                     f(scn["f_local"], c.f_local_max)], -1)
    return z.reshape(-1, z.shape[-1])


@torch.no_grad()
def sample_batch(B: int, c: Consts, K: int, L: int, subnet_sampler: Callable = subnets_uniform,
                 offload_all_fraction: float = 0.5, p_min: float = 0.2) -> Batch:
    """Scenarios (:func:`dynmec_jax.system.sample_scenarios`), offload masks
    (:func:`dynmec_jax.train.allocator.sample_offload`), one (width, depth) per
    scenario from ``subnet_sampler(B, K, L)``, features and gate noise."""
    N = c.n_users
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, N)
    scn = dict(size=u(0.0, 2 * c.size_avg), workload=u(0.0, 2 * c.workload_avg),
               deadline=torch.clamp(u(0.0, c.deadline_max), min=c.deadline_min),
               distance=u(c.distance_min, c.distance_max),
               f_local=u(c.f_local_min, c.f_local_max))
    everyone = torch.rand(B, 1) < offload_all_fraction
    prob = p_min + (1.0 - p_min) * torch.rand(B, 1)
    mask = everyone | (torch.rand(B, N) < prob)
    width, depth = subnet_sampler(B, K, L)
    return Batch(scn, mask, width, depth, features(scn, c), width.repeat_interleave(N),
                 depth.repeat_interleave(N), torch.randn(B * N, K))


def masked_softmax(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Softmax of ``x`` over the last axis where ``m``; exactly 0 elsewhere, all 0 if none."""
    top = torch.where(m, x, torch.full_like(x, -torch.inf)).amax(-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.where(m, torch.exp(torch.where(m, x - top, torch.zeros_like(x))),
                    torch.zeros_like(x))
    tot = e.sum(-1, keepdim=True)
    return e / torch.where(tot > 0, tot, torch.ones_like(tot))


def scenario_losses(out: torch.Tensor, scn: dict, mask: torch.Tensor,
                    c: Consts) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-scenario weighted T_tra and T_com sums ``(B,)`` from head logits ``(B*N, 2)``.

    Shares of Eq. 18 and 20 (:func:`dynmec_jax.allocator.shares`), then
    :func:`dynmec_jax.costs.weighted_parts` (Eq. 19 weights, Eq. 1-2 delays of
    the offloaded users).
    """
    out = out.reshape(mask.shape + (2,))
    bw = c.bandwidth_max * masked_softmax(out[..., 0], mask)
    fa = c.f_server * masked_softmax(out[..., 1], mask)
    wgt = (c.importance_scale * (scn["workload"] / c.workload_avg)
           * (scn["size"] / c.size_avg) / scn["deadline"])
    active = mask & (wgt > 0)
    b = torch.where(mask, bw, 1.0)
    logk = c.log_k_const - c.path_loss_exp * torch.log(scn["distance"])
    rate = b * F.softplus(logk - torch.log(b)) / math.log(2.0)
    t_tra = torch.where(mask, scn["size"] / rate, 0.0)
    t_com = torch.where(mask, scn["workload"] * scn["size"] / torch.where(mask, fa, 1.0), 0.0)
    tra = torch.where(active, wgt * torch.where(active, t_tra, 0.0), 0.0).sum(-1)
    com = torch.where(active, wgt * torch.where(active, t_com, 0.0), 0.0).sum(-1)
    return tra, com


# ----------------------------------------------------------------------------
# Peers a, b, d: an nn.Module written the usual way
# ----------------------------------------------------------------------------

class Expert(nn.Module):
    """One expert: ``n_layers`` ``nn.Linear`` layers (F -> H -> ... -> H), LeakyReLU each."""

    def __init__(self, n_features: int, hidden: int, n_layers: int, slope: float):
        """Layers ``n_features -> hidden``, then ``n_layers - 1`` times ``hidden -> hidden``."""
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(n_features, hidden)]
            + [nn.Linear(hidden, hidden) for _ in range(n_layers - 1)])
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Dense: every layer on every row, layer i (0-based) kept where ``i < depth``."""
        h = self.act(self.layers[0](x))
        for i, layer in enumerate(self.layers[1:], start=1):
            h = torch.where((depth > i)[:, None], self.act(layer(h)), h)
        return h

    def forward_sparse(self, x: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Sparse: layer i only on the rows whose depth exceeds i, the others copied."""
        h = self.act(self.layers[0](x))
        for i, layer in enumerate(self.layers[1:], start=1):
            rows = (depth > i).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            h = h.index_copy(0, rows, self.act(layer(h.index_select(0, rows))))
        return h


class MoEModule(nn.Module):
    """The elastic MoE of :class:`dynmec_jax.nets.moe.MoEAllocator`, idiomatic PyTorch.

    Noisy top-k gate (Eq. 16: ``w_gate``, ``w_noise``, no bias), K experts
    (:class:`Expert`), their gated sum, and one ``nn.Linear(H, 2)`` for heads
    A (bandwidth) and B (CPU).  Inputs are flattened users: ``z (M, F)``,
    per-user ``width``, ``depth (M,)`` and the gate noise ``eps (M, K)``.
    """

    def __init__(self, n_features: int = 5, n_experts: int = 10, n_layers: int = 3,
                 hidden: int = 64, slope: float = 0.01, sparse: bool = False):
        """Shapes as in :class:`~dynmec_jax.nets.moe.MoEAllocator`; ``sparse`` selects
        :meth:`forward_sparse` as ``forward``."""
        super().__init__()
        self.n_experts, self.n_layers, self.sparse = n_experts, n_layers, sparse
        self.w_gate = nn.Linear(n_features, n_experts, bias=False)
        self.w_noise = nn.Linear(n_features, n_experts, bias=False)
        self.experts = nn.ModuleList(
            [Expert(n_features, hidden, n_layers, slope) for _ in range(n_experts)])
        self.heads = nn.Linear(hidden, 2)

    def gate(self, z: torch.Tensor, width: torch.Tensor,
             eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gates ``(M, K)`` (softmax over each row's top-``width`` logits, 0 elsewhere)
        and the kept-expert mask ``(M, K)``."""
        logits = self.w_gate(z) + eps * F.softplus(self.w_noise(z))
        vals, idx = torch.topk(logits, self.n_experts, dim=-1)       # all K, sorted
        kept = torch.arange(self.n_experts, device=z.device) < width[:, None]
        top = torch.softmax(vals.masked_fill(~kept, -torch.inf), dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, idx, top)
        keep = torch.zeros_like(kept).scatter(-1, idx, kept)
        return gates, keep

    def forward(self, z: torch.Tensor, width: torch.Tensor, depth: torch.Tensor,
                eps: torch.Tensor) -> torch.Tensor:
        """Head logits ``(M, 2)``: dense (every expert, every layer) or sparse."""
        if self.sparse:
            return self.forward_sparse(z, width, depth, eps)
        gates, _ = self.gate(z, width, eps)
        y = 0.0
        for k, expert in enumerate(self.experts):
            y = y + gates[:, k:k + 1] * expert(z, depth)
        return self.heads(y)

    def forward_sparse(self, z: torch.Tensor, width: torch.Tensor, depth: torch.Tensor,
                       eps: torch.Tensor) -> torch.Tensor:
        """Head logits ``(M, 2)``, computing each expert only on the users that keep it."""
        gates, keep = self.gate(z, width, eps)
        y = z.new_zeros(z.shape[0], self.heads.in_features)
        for k, expert in enumerate(self.experts):
            idx = keep[:, k].nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            h = expert.forward_sparse(z.index_select(0, idx), depth.index_select(0, idx))
            y.index_add_(0, idx, gates[:, k].index_select(0, idx)[:, None] * h)
        return self.heads(y)

    def parameter_map(self) -> dict[str, list]:
        """The parameters grouped by JAX name: ``name -> [(tensor, index, transpose)]``."""
        K, L = self.n_experts, self.n_layers
        m = {"w_gate": [(self.w_gate.weight, None, True)],
             "w_noise": [(self.w_noise.weight, None, True)],
             "w_heads": [(self.heads.weight, None, True)],
             "b_heads": [(self.heads.bias, None, False)],
             "w_in": [(self.experts[k].layers[0].weight, (k,), True) for k in range(K)],
             "b_in": [(self.experts[k].layers[0].bias, (k,), False) for k in range(K)],
             "w_hidden": [(self.experts[k].layers[i + 1].weight, (i, k), True)
                          for i in range(L - 1) for k in range(K)],
             "b_hidden": [(self.experts[k].layers[i + 1].bias, (i, k), False)
                          for i in range(L - 1) for k in range(K)]}
        return m

    @torch.no_grad()
    def load_jax(self, params: dict) -> MoEModule:
        """Copies the JAX parameters (``variables["params"]``) in; returns self."""
        for name, entries in self.parameter_map().items():
            src = np.asarray(params[name])
            for t, index, transpose in entries:
                v = torch.from_numpy(np.array(src[index] if index else src))
                t.copy_(v.T if transpose else v)
        return self

    def to_jax_layout(self, grad: bool = False) -> dict[str, np.ndarray]:
        """Parameters (or their gradients) as NumPy arrays in the JAX layout."""
        out = {}
        for name, entries in self.parameter_map().items():
            parts = []
            for t, _, transpose in entries:
                v = (t.grad if grad else t).detach()
                parts.append((v.T if transpose else v).numpy().copy())
            if name in ("w_in", "b_in"):
                out[name] = np.stack(parts)
            elif name in ("w_hidden", "b_hidden"):
                K = self.n_experts
                out[name] = np.stack(parts).reshape((self.n_layers - 1, K) + parts[0].shape)
            else:
                out[name] = parts[0]
        return out


# ----------------------------------------------------------------------------
# Peer c: stacked experts, torch.bmm (the original peer)
# ----------------------------------------------------------------------------

class StackedMoE:
    """The MoE on stacked parameters in the JAX layout: ``torch.bmm`` over the K
    experts, the rank-based top-k gate of :func:`dynmec_jax.nets.moe.expert_ranks`
    and :func:`~dynmec_jax.nets.moe.gates_from_logits`, masked depth."""

    def __init__(self, params: dict, slope: float = 0.01):
        """Leaf tensors (``requires_grad``) copied from the JAX ``params``."""
        self.p = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
        self.slope = slope
        self.K = self.p["w_in"].shape[0]
        idx = torch.arange(self.K)
        self.tie = idx[None, :] < idx[:, None]

    def parameters(self) -> list:
        """The leaf tensors, for the optimisers."""
        return list(self.p.values())

    def __call__(self, z: torch.Tensor, width: torch.Tensor, depth: torch.Tensor,
                 eps: torch.Tensor) -> torch.Tensor:
        """Head logits ``(M, 2)`` from per-user ``width``, ``depth`` ``(M,)``."""
        p, K, L = self.p, self.K, self.p["w_hidden"].shape[0] + 1
        leaky = lambda x: torch.where(x >= 0, x, self.slope * x)
        M = z.shape[0]
        logits = z @ p["w_gate"] + eps * F.softplus(z @ p["w_noise"])
        other, me = logits[:, None, :], logits[:, :, None]
        ranks = ((other > me) | ((other == me) & self.tie)).sum(-1)
        keep = ranks < width[:, None]
        top = logits.amax(-1, keepdim=True).detach()
        e = torch.where(keep, torch.clamp(torch.exp(torch.where(keep, logits - top, 0.0)),
                                          min=4 * K * 1.1754944e-38), 0.0)
        gates = e / e.sum(-1, keepdim=True)                                       # (M, K)
        d = depth[None, :, None]
        h = leaky(torch.bmm(z.expand(K, M, z.shape[1]), p["w_in"]) + p["b_in"][:, None, :])
        for i in range(L - 1):
            nxt = leaky(torch.bmm(h, p["w_hidden"][i]) + p["b_hidden"][i][:, None, :])
            h = torch.where(i + 1 < d, nxt, h)
        y = gates[:, 0, None] * h[0]
        for k in range(1, K):
            y = y + gates[:, k, None] * h[k]
        return y @ p["w_heads"] + p["b_heads"]

    def to_jax_layout(self, grad: bool = False) -> dict[str, np.ndarray]:
        """Parameters (or their gradients) as NumPy arrays."""
        return {k: (v.grad if grad else v).detach().numpy().copy() for k, v in self.p.items()}


# ----------------------------------------------------------------------------
# The step, and the peers
# ----------------------------------------------------------------------------

class Peer(NamedTuple):
    """A torch peer: ``step() -> (tra, com)`` (one training step on a fresh batch),
    ``loss(batch) -> (tra (B,), com (B,))``, ``forward(batch) -> (M, 2)`` head
    logits, and ``model`` (with ``to_jax_layout(grad)``)."""

    name: str
    step: Callable[[], tuple[float, float]]
    loss: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]
    forward: Callable[[Batch], torch.Tensor]
    model: Any


def make_step(loss: Callable, params: list, B: int, c: Consts, K: int, L: int,
              subnet_sampler: Callable = subnets_uniform, lr: float = 1e-3,
              loss_scale: float = 1e-3, offload_all_fraction: float = 0.5) -> Callable:
    """The two updates of :func:`~dynmec_jax.train.allocator.make_train_step` on one
    sampled batch, with two ``torch.optim.Adam`` over ``params``.  Returns
    ``step() -> (tra, com)``: weighted T_tra before the first update and weighted
    T_com before the second, batch means."""
    opt_b = torch.optim.Adam(params, lr=lr)
    opt_f = torch.optim.Adam(params, lr=lr)

    def step():
        """One training step: bandwidth update, then CPU update."""
        batch = sample_batch(B, c, K, L, subnet_sampler, offload_all_fraction)
        opt_b.zero_grad(set_to_none=True)
        tra, _ = loss(batch)
        (tra.mean() * loss_scale).backward()
        opt_b.step()
        opt_f.zero_grad(set_to_none=True)
        _, com1 = loss(batch)
        (com1.mean() * loss_scale).backward()
        opt_f.step()
        return float(tra.detach().mean()), float(com1.detach().mean())

    return step


def make_peer(name: str, jax_params: dict, B: int, sp, subnet_sampling: str | Callable = "uniform",
              lr: float = 1e-3, loss_scale: float = 1e-3, slope: float = 0.01,
              offload_all_fraction: float = 0.5) -> Peer:
    """Peer ``name`` (one of :data:`PEERS`) with parameters copied from ``jax_params``
    (``variables["params"]`` of :class:`~dynmec_jax.nets.moe.MoEAllocator`).
    ``subnet_sampling``: a name in :data:`SUBNET_SAMPLERS` or a function
    ``(B, K, L) -> (width, depth)``.  Compiled peers compile on their first call."""
    c = Consts.from_params(sp)
    K, F_in, H = np.shape(jax_params["w_in"])
    L = np.shape(jax_params["w_hidden"])[0] + 1
    if name == "c":
        model = StackedMoE(jax_params, slope)
    else:
        model = MoEModule(F_in, K, L, H, slope, sparse=name.startswith("d")).load_jax(jax_params)

    def forward(batch: Batch) -> torch.Tensor:
        """Head logits ``(M, 2)`` of ``batch``."""
        return model(batch.z, batch.width_u, batch.depth_u, batch.eps)

    def loss_fn(z, width_u, depth_u, eps, scn, mask):
        """Model and losses on tensors only (what ``torch.compile`` sees)."""
        return scenario_losses(model(z, width_u, depth_u, eps), scn, mask, c)

    if name in ("b", "b_max"):
        loss_fn = torch.compile(loss_fn, dynamic=False,
                                mode="max-autotune-no-cudagraphs" if name == "b_max" else None)
    elif name == "d_compiled":
        loss_fn = torch.compile(loss_fn, dynamic=True)
    elif name not in ("a", "c", "d"):
        raise ValueError(f"unknown peer {name!r}; known: {PEERS}")

    def loss(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tra, com)`` per scenario of ``batch``."""
        return loss_fn(batch.z, batch.width_u, batch.depth_u, batch.eps, batch.scn, batch.mask)

    sampler = (SUBNET_SAMPLERS[subnet_sampling] if isinstance(subnet_sampling, str)
               else subnet_sampling)
    step = make_step(loss, list(model.parameters()), B, c, K, L, sampler, lr, loss_scale,
                     offload_all_fraction)
    return Peer(name, step, loss, forward, model)


def make_torch_step(jax_variables, B, sp, lr=1e-3, loss_scale=1e-3, slope=0.01,
                    offload_all_fraction=0.5):
    """Peer ``c`` (eager ``torch.bmm`` over stacked experts): ``step() -> (tra, com)``."""
    return make_peer("c", jax_variables["params"], B, sp, "uniform", lr, loss_scale, slope,
                     offload_all_fraction).step


def _check_names(names) -> None:
    """Raises ``ValueError`` for a name not in :data:`PEERS`."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown torch peers {unknown}; known: {', '.join(PEERS)}")


def _graph_count() -> int:
    """Graphs Dynamo has compiled so far in this process (grows on every recompilation)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def build_peers(names, jax_params: dict, B: int, sp, subnet_sampling: str | Callable = "uniform",
                warmup: int = 2, probe: int = 3, log: Callable = print) -> dict[str, Peer]:
    """The peers ``names`` (in :data:`PEERS` order), each warmed up by ``warmup`` steps.

    A compiled peer that fails to compile is skipped with one line on ``log``; one
    that compiles again during ``probe`` more steps after warm-up (recompilation
    per step) is skipped too; an eager peer that fails raises.  The compile time
    (first call minus an ordinary step) of each compiled peer is logged.
    """
    _check_names(names)
    peers = {}
    for name in [n for n in PEERS if n in names]:
        compiled = name in ("b", "b_max", "d_compiled")
        try:
            peer = make_peer(name, jax_params, B, sp, subnet_sampling)
            t0 = time.perf_counter()
            peer.step()
            first = time.perf_counter() - t0
            for _ in range(warmup - 1):
                peer.step()
            if compiled:
                before = _graph_count()
                t0 = time.perf_counter()
                for _ in range(probe):
                    peer.step()
                per_step = (time.perf_counter() - t0) / probe
                grew = _graph_count() - before
                if grew:
                    log(f"torch peer {name}: skipped, {grew} graph(s) recompiled in {probe} "
                        f"steps after warm-up")
                    continue
                log(f"torch peer {name}: compiled in {first - per_step:.1f} s "
                    f"(first step {first:.1f} s), no recompilation in {probe} more steps")
        except Exception as e:   # noqa: BLE001 -- any compile failure skips the peer
            if not compiled:
                raise
            log(f"torch peer {name}: skipped, {type(e).__name__}: {str(e).splitlines()[0]}")
            continue
        peers[name] = peer
    return peers


# ----------------------------------------------------------------------------
# Agreement check
# ----------------------------------------------------------------------------

def _assert_close(name: str, got, want, rtol: float = 1e-4, scale: float = 0.0) -> float:
    """Raises if ``got`` differs from ``want`` by more than ``rtol`` of ``max|want|``
    (or of ``scale`` if larger); returns that relative difference."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.max(np.abs(want))), scale, 1e-30)
    err = float(np.max(np.abs(got - want))) / scale
    if not err <= rtol:
        raise AssertionError(f"{name}: max |diff| / max |ref| = {err:.2e} > {rtol:.0e}")
    return err


def check_peers_agree(jax_variables, sp, names=PEERS, B: int = 30, seed: int = 0,
                      log: Callable = print) -> None:
    """Checks that the peers ``names`` compute the same thing, and the same as JAX.

    On one batch of ``B`` scenarios whose (width, depth) run through all K x L
    sub-networks: the head logits, the per-scenario losses and the gradient of
    the bandwidth loss of every peer against peer ``a`` (and ``a``'s logits and
    losses against :class:`~dynmec_jax.nets.moe.MoEAllocator` with the JAX
    losses); then one full training step from the same torch seed: the metrics
    and the parameter updates.  (The logits of a compiled peer come from its
    eager module; its losses, gradients and step are the compiled ones.)
    Raises ``AssertionError`` on a mismatch.
    """
    import jax.numpy as jnp

    from dynmec_jax import allocator as allocator_lib
    from dynmec_jax import costs
    from dynmec_jax.nets import moe
    from dynmec_jax.system import Scenario

    params = jax_variables["params"]
    K = np.shape(params["w_in"])[0]
    L = np.shape(params["w_hidden"])[0] + 1
    c = Consts.from_params(sp)
    N = c.n_users
    _check_names(names)
    names = ["a"] + [n for n in PEERS if n in names and n != "a"]
    peers = {n: make_peer(n, params, B, sp) for n in names}

    torch.manual_seed(seed)
    sub = torch.arange(B) % (K * L)
    batch = sample_batch(B, c, K, L, lambda *_: (sub // L + 1, sub % L + 1))
    ref = {}
    for n, peer in peers.items():
        for t in peer.model.parameters():
            t.grad = None
        with torch.no_grad():
            out = peer.forward(batch)
        tra, com = peer.loss(batch)
        tra.mean().backward()
        res = dict(out=out.numpy(), tra=tra.detach().numpy(), com=com.detach().numpy(),
                   grad=peer.model.to_jax_layout(grad=True))
        if n == "a":
            ref = res
            # Against JAX: the Flax model on the same features and noise, JAX losses.
            jz = jnp.asarray(batch.z.numpy()).reshape(B, N, -1)
            model = moe.MoEAllocator(n_experts=K, n_layers=L, hidden=np.shape(params["w_in"])[2])
            logits, _ = model.apply(
                jax_variables, jz, jnp.asarray(batch.width.numpy())[:, None],
                jnp.asarray(batch.depth.numpy())[:, None],
                gate_noise=jnp.asarray(batch.eps.numpy()).reshape(B, N, K))
            mask = jnp.asarray(batch.mask.numpy())
            b, f = allocator_lib.shares(logits, mask, sp)
            scn = Scenario(**{k: jnp.asarray(v.numpy()) for k, v in batch.scn.items()})
            jtra, jcom = costs.weighted_parts(scn, mask, b, f, sp)
            jout = np.asarray(logits).reshape(-1, 2)
            errs = [_assert_close("a vs jax logits", out.numpy(), jout),
                    _assert_close("a vs jax tra", res["tra"], jtra),
                    _assert_close("a vs jax com", res["com"], jcom)]
            log(f"check a vs jax (Flax model + JAX losses): logits, tra, com agree "
                f"(max rel diff {max(errs):.1e})")
            continue
        errs = [_assert_close(f"{n} vs a {k}", res[k], ref[k]) for k in ("out", "tra", "com")]
        # Relative to the largest gradient entry: some are float noise around 0 (the
        # heads' bias, by the softmax's shift invariance).
        g_scale = max(float(np.max(np.abs(g))) for g in ref["grad"].values())
        errs += [_assert_close(f"{n} vs a grad {k}", res["grad"][k], ref["grad"][k], 1e-4, g_scale)
                 for k in ref["grad"]]
        log(f"check {n} vs a: logits, tra, com, bandwidth-loss gradients agree "
            f"(max rel diff {max(errs):.1e})")

    # One full step (sampling, two updates, two Adams) from the same seed: compare the
    # parameter updates (after minus before, up to 2 lr per entry; entries with gradients
    # near Adam's epsilon amplify float differences, hence 3e-3 of the largest update).
    after = {}
    for n, peer in peers.items():
        before = peer.model.to_jax_layout()
        torch.manual_seed(seed + 1)
        metrics = peer.step()
        after[n] = (metrics, {k: v - before[k] for k, v in peer.model.to_jax_layout().items()})
    for n in names[1:]:
        errs = [_assert_close(f"{n} vs a step metrics", after[n][0], after["a"][0])]
        # Not b_heads: its gradients are 0 up to rounding (a softmax over users does not
        # see a bias shared by all), and Adam moves it by +-lr by the sign of that
        # rounding noise, in JAX as well.
        errs += [_assert_close(f"{n} vs a update of {k}", v, after["a"][1][k], 3e-3)
                 for k, v in after[n][1].items() if k != "b_heads"]
        log(f"check {n} vs a: one training step, metrics and parameter updates agree "
            f"(max rel diff {max(errs):.1e})")
    log(f"check passed: {', '.join(names)} agree with each other, and a with JAX")
