"""The elastic MoE allocation network of Section IV.A-B and IV.D (Eq. 12-20, 30-33).

One set of weights serves every sub-network (width k = active experts,
depth l = layers per expert), and one compiled function serves every
(width, depth): both are *traced* integers.

* **Features**: each user's five task features (Eq. 7) enter as the
  log-ratios of :func:`dynmec_jax.nets.features.normalize_features`.
* **Per-user experts.**  The gate and every expert see one user's 5 features,
  so the model works for any number of users N and the allocation is
  permutation-equivariant in users; the two heads (Eq. 18, 20) give one logit
  per user and a softmax over a scenario's offloaded users turns them into
  shares.  This is the reading under which Table I's 87,040 dynamic
  parameters (ten 5 -> 64 -> 64 -> 64 experts) work out.
* **Width by masks** (Eq. 13-17).  Every expert gets its rank in gate order
  (:func:`expert_ranks`: the inverse of the permutation that
  ``lax.top_k(logits, K)`` returns, from K x K comparisons, ~20x faster than
  ``top_k`` on CPU and no scatter back to expert order); experts of rank
  ``>= width`` are dropped before the softmax, so exactly ``width`` gates
  are non-zero and they sum to 1.  Eq. 14 as printed (``z_i / sum_c
  exp(z_c)``) is not a softmax; the standard softmax ``exp(z_i) / sum_c
  exp(z_c)`` is used.  At equal logits the lower expert index ranks first
  (as in ``top_k``), so ties still give exactly ``width`` experts.
* **Depth by masks** (Eq. 32).  All ``L`` layers run; layer ``i`` (0-based)
  is kept where ``i < depth`` and skipped (identity) otherwise.  Training
  orders its users by depth instead and runs each layer only on the users
  that need it (``layer_rows``, static slices; same values).
* **All sub-networks in one pass** (:meth:`MoEAllocator.all_subnets`).  The depth-``l``
  expert outputs are the intermediate activations of the deepest pass.  The
  heads are linear, so ``head(sum_k G_k E_k) = sum_k G_k head(E_k)``; with the
  experts in gate order, prefix sums of ``exp(z_r - z_max) head(E_r)`` and of
  ``exp(z_r - z_max)`` over the ranks r give the logits of every width.
  All ``K x L`` sub-networks cost about as much as the largest alone.

Masked compute costs full FLOPs; the inference-delay model
(:mod:`dynmec_jax.accounting`) counts only the active experts and layers.
The shares of Eq. 18 and 20 and the allocation itself are in
:mod:`dynmec_jax.allocator`.

Units: bandwidth in Hz, CPU frequency in cycles/s (SI, as in
:mod:`dynmec_jax.system`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynmec_jax import rng
from dynmec_jax.accounting import N_FEATURES

Array = Any


# ----------------------------------------------------------------------------
# Gates
# ----------------------------------------------------------------------------

def load_balance_loss(gates: Array, mask: Array | None = None) -> Array:
    """Shazeer et al.'s importance loss: CV^2 of the per-expert summed gates.

    ``importance_k = sum_users mask * G_k`` (gates of Eq. 13, ``(..., K)``),
    loss ``= var(importance) / mean(importance)^2`` (dimensionless, >= 0).
    Computed as var/mean^2, not via std, so the gradient is finite at perfect
    balance; 0 when no user is masked in.
    """
    gates = jnp.asarray(gates)
    flat = gates.reshape(-1, gates.shape[-1])
    if mask is None:
        w = jnp.ones(flat.shape[:1], flat.dtype)
    else:
        w = jnp.broadcast_to(jnp.asarray(mask), gates.shape[:-1]).reshape(-1).astype(flat.dtype)
    importance = w @ flat
    mean = jnp.mean(importance)
    var = jnp.mean(jnp.square(importance - mean))
    ok = mean > 0
    return jnp.where(ok, var / jnp.where(ok, jnp.square(mean), 1.0), 0.0)


def _leaky_relu(x, slope):
    return jnp.where(x >= 0, x, slope * x)


def expert_ranks(logits: Array) -> Array:
    """Rank of each expert in gate order (Eq. 15), ``(..., K)`` int32.

    Rank 0 is the largest logit; at equal logits the lower expert index ranks
    first, the same order as ``jax.lax.top_k(logits, K)`` (whose indices are
    the inverse permutation of these ranks).  Computed from the K x K pairwise
    comparisons, which on CPU is ~20x faster than ``top_k``/sort for K = 10;
    the ranks are always a permutation of ``0..K-1``.
    """
    K = logits.shape[-1]
    idx = jnp.arange(K)
    other, me = logits[..., None, :], logits[..., :, None]
    beats = (other > me) | ((other == me) & (idx[None, :] < idx[:, None]))
    return jnp.sum(beats, axis=-1, dtype=jnp.int32)


def _gate_order(ranks: Array) -> Array:
    """Inverse of :func:`expert_ranks`: ``order[..., r]`` is the expert of rank r.

    Equal to the indices of ``jax.lax.top_k(logits, K)`` (a one-hot sum over
    K x K entries; on CPU much cheaper than ``top_k``).
    """
    K = ranks.shape[-1]
    experts = jnp.arange(K, dtype=jnp.int32)
    hit = ranks[..., :, None] == experts  # [..., j, r]: expert j has rank r
    return jnp.sum(jnp.where(hit, experts[:, None], 0), axis=-2, dtype=jnp.int32)


def _gate_exp(shifted: Array) -> Array:
    """exp of logits minus their maximum (<= 0, ``(..., K)``), floored at 4K times
    the smallest normal float, so that a gate (this over a sum <= K) stays a
    normal, non-zero float (CPUs flush denormals to 0)."""
    floor = 4 * shifted.shape[-1] * jnp.finfo(jnp.result_type(shifted)).tiny
    return jnp.maximum(jnp.exp(shifted), floor)


def gates_from_logits(logits: Array, ranks: Array, width: Array) -> Array:
    """Eq. 13-15 with the standard softmax: gates ``(..., K)``, dimensionless.

    Experts of rank ``>= width`` (``ranks`` from :func:`expert_ranks`) get
    exactly 0; the ``width`` kept ones share 1 by a softmax of their logits.
    ``width`` (int, broadcastable to ``logits.shape[:-1]``, may be traced) is
    clipped to ``[1, K]``.  No ``-inf`` is formed and ``exp`` never overflows
    (logits minus their maximum, which is always kept), so gradients are finite.
    A kept expert whose logit is more than ~87 below the maximum (where
    float32 ``exp`` underflows) still gets a tiny normal float (~1e-37), so
    the count of non-zero gates is exactly ``width`` in every case.
    """
    K = logits.shape[-1]
    width = jnp.clip(jnp.asarray(width), 1, K)
    keep = ranks < width[..., None]
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    e = jnp.where(keep, _gate_exp(jnp.where(keep, logits - top, 0.0)), 0.0)
    return e / jnp.sum(e, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------

def per_user(value: Array, user_shape: tuple, name: str) -> Array:
    """A width/depth as int32 per user, ``user_shape = (..., N)``.

    ``value`` is a scalar, one per scenario (rank of the batch shape ``(...)``,
    e.g. ``(B,)``; broadcast over the N users) or one per user (rank of
    ``(..., N)``, e.g. ``(B, N)`` or ``(B, 1)``).  The rank decides, never the
    sizes, so a per-scenario ``(B,)`` is not taken for per-user values when
    B = N.  Any other shape raises ``ValueError`` naming ``name`` and both shapes.
    """
    v = jnp.asarray(value).astype(jnp.int32)
    n_batch = len(user_shape) - 1
    if v.ndim <= n_batch:
        v = v[..., None]
    elif v.ndim != n_batch + 1:
        raise ValueError(f"{name} of shape {v.shape} does not fit scenarios of shape "
                         f"{tuple(user_shape)}: give a scalar, one per scenario "
                         f"{tuple(user_shape[:-1])} or one per user {tuple(user_shape)}")
    try:
        return jnp.broadcast_to(v, user_shape)
    except ValueError:
        raise ValueError(f"{name} of shape {v.shape[:-1] if v.shape[-1] == 1 else v.shape} "
                         f"does not fit scenarios of shape {tuple(user_shape)}: give a "
                         f"scalar, one per scenario {tuple(user_shape[:-1])} or one per user "
                         f"{tuple(user_shape)}") from None


def expert_capacity(n_users: int, mean_width: float, n_experts: int, factor: float) -> int:
    """Users each expert takes in capacity dispatch (static): ``ceil(factor * n_users *
    mean_width / K)``, at most ``n_users`` (``factor = K / mean_width``: every user).

    ``n_users * mean_width / K`` is an expert's expected load when the gates
    spread the users evenly (Switch Transformer's capacity, Fedus et al.)."""
    if not factor > 0:
        raise ValueError(f"capacity factor must be > 0, got {factor}")
    return int(min(n_users, math.ceil(factor * n_users * mean_width / n_experts - 1e-9)))


def depth_groups(n_users: int, layer_rows: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """``(start, stop, depth)`` of the users of each depth, users sorted deepest first
    (``layer_rows`` as in :meth:`MoEAllocator.expert_outputs`); empty groups left out."""
    at_least = (n_users,) + tuple(layer_rows) + (0,)       # users of depth >= 1, ..., L + 1
    return [(at_least[d], at_least[d - 1], d) for d in range(len(at_least) - 1, 0, -1)
            if at_least[d - 1] > at_least[d]]


def _dispatch(sel: Array, capacity: int, offset: int, n_total: int):
    """Capacity dispatch of one depth group: ``sel (n, K)`` (user picked expert), slots in
    user order.  Returns ``table (K, capacity)`` of user indices (``offset`` added; the
    padding index ``n_total`` in unused slots) and ``keep (n, K)`` (pairs given a slot)."""
    n, K = sel.shape
    pos = jnp.cumsum(sel, axis=0, dtype=jnp.int32) - 1
    keep = sel & (pos < capacity)
    slot = jnp.where(keep, pos, capacity)                          # capacity: the overflow
    users = jnp.broadcast_to(offset + jnp.arange(n, dtype=jnp.int32)[:, None], (n, K))
    experts = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32)[None, :], (n, K))
    table = jnp.full((K, capacity + 1), n_total, jnp.int32).at[experts, slot].set(users)
    return table[:, :capacity], keep


def dropped_pairs(gates: Array, layer_rows: tuple[int, ...], capacity: tuple[int, ...]) -> Array:
    """(user, expert) pairs with a non-zero gate (Eq. 13) that capacity dispatch drops,
    as a share of all such pairs (dimensionless); ``gates (M, K)`` in the users' order."""
    sel = gates > 0
    dropped = 0
    for lo, hi, d in depth_groups(sel.shape[0], layer_rows):
        _, keep = _dispatch(sel[lo:hi], capacity[d - 1], lo, sel.shape[0])
        dropped = dropped + jnp.sum(sel[lo:hi] & ~keep)
    return dropped / jnp.maximum(jnp.sum(sel), 1)


class MoEAllocator(nn.Module):
    """Elastic MoE allocation model of Fig. 2(a) (Eq. 12-20, 32).

    Per user: a noisy top-k gate (Eq. 13-17) over ``n_experts`` MLP experts
    ``n_features -> hidden -> ... -> hidden`` (``n_layers`` LeakyReLU layers),
    their gated sum ``y`` (Eq. 12), and two linear heads A and B (Eq. 18, 20)
    giving one bandwidth logit and one CPU logit per user (dimensionless).

    Parameters (stacked, one array per role):
      ``w_gate``, ``w_noise``: ``(F, K)`` gate and noise matrices of Eq. 16
      (no bias, as in Shazeer et al.; zero-initialised by default, as there).
      ``w_in (K, F, H)``, ``b_in (K, H)``: the experts' first layers.
      ``w_hidden (L-1, K, H, H)``, ``b_hidden (L-1, K, H)``: their other layers.
      ``w_heads (H, 2)``, ``b_heads (2,)``: heads A (column 0) and B (column 1).
    Counts match :func:`dynmec_jax.accounting.allocation_model_params`
    (87,040 dynamic + 230 fixed at K=10, L=3, H=64).

    Attributes (shape settings, static):
      n_experts: K, the maximum width (Table II: 10).
      n_layers: L, the maximum depth (Table II: 3).
      hidden: expert layer width (Section V: 64).
      negative_slope: LeakyReLU slope (0.01).
      n_features: inputs per user (Eq. 7: 5).
      zero_gate_init: initialise ``w_gate`` and ``w_noise`` to zeros
        (Shazeer et al.); otherwise small normal values.

    Inputs are normalised features ``(..., N, F)`` (:func:`normalize_features`);
    ``width``/``depth`` are per-user int arrays ``(..., N)`` (the API functions
    :func:`allocate` and :func:`allocate_all` broadcast them).
    """

    n_experts: int = 10
    n_layers: int = 3
    hidden: int = 64
    negative_slope: float = 0.01
    n_features: int = N_FEATURES
    zero_gate_init: bool = True

    def setup(self):
        K, L, H, F = self.n_experts, self.n_layers, self.hidden, self.n_features
        if K < 1 or L < 1 or H < 1 or F < 1:
            raise ValueError("n_experts, n_layers, hidden and n_features must be >= 1")
        gain = 2.0 / (1.0 + self.negative_slope ** 2)  # He init for LeakyReLU.
        gate_init = (nn.initializers.zeros if self.zero_gate_init
                     else nn.initializers.normal(0.1))
        self.w_gate = self.param("w_gate", gate_init, (F, K))
        self.w_noise = self.param("w_noise", gate_init, (F, K))
        self.w_in = self.param(
            "w_in", nn.initializers.variance_scaling(gain, "fan_in", "truncated_normal",
                                                     in_axis=-2, out_axis=-1, batch_axis=(0,)),
            (K, F, H))
        self.b_in = self.param("b_in", nn.initializers.zeros, (K, H))
        hidden_init = (nn.initializers.variance_scaling(gain, "fan_in", "truncated_normal",
                                                        in_axis=-2, out_axis=-1,
                                                        batch_axis=(0, 1))
                       if L > 1 else nn.initializers.zeros)  # (0, K, H, H) when L = 1
        self.w_hidden = self.param("w_hidden", hidden_init, (L - 1, K, H, H))
        self.b_hidden = self.param("b_hidden", nn.initializers.zeros, (L - 1, K, H))
        self.w_heads = self.param("w_heads", nn.initializers.lecun_normal(), (H, 2))
        self.b_heads = self.param("b_heads", nn.initializers.zeros, (2,))

    # -- gate (Eq. 13-17) ------------------------------------------------------

    def gate_logits(self, z: Array, noise_key: Array | None = None,
                    gate_noise: Array | None = None) -> Array:
        """Eq. 16: H(x) = x W_g + eps * softplus(x W_noise), ``(..., K)``.

        ``eps ~ N(0, 1)`` is drawn from ``noise_key`` only when one is given
        (training); without it the gate is deterministic (inference).
        ``gate_noise`` (``(..., K)``, the same shape as the logits) gives
        ``eps`` directly instead (it takes precedence over ``noise_key``):
        ``jax.random.normal(noise_key, logits.shape)`` drawn outside and
        sliced, as the micro-batched training step does.
        """
        logits = z @ self.w_gate
        if gate_noise is not None:
            eps = jnp.asarray(gate_noise, logits.dtype).reshape(logits.shape)
            logits = logits + eps * jax.nn.softplus(z @ self.w_noise)
        elif noise_key is not None:
            eps = rng.normal(noise_key, logits.shape, logits.dtype)
            logits = logits + eps * jax.nn.softplus(z @ self.w_noise)
        return logits

    def gates(self, z: Array, width: Array, noise_key: Array | None = None,
              gate_noise: Array | None = None) -> Array:
        """Eq. 13-15: G = softmax(TopK(H(x), width)), ``(..., K)``, dimensionless.

        ``width`` (int, broadcastable to ``z.shape[:-1]``, traced) is clipped to
        ``[1, K]``.  Exactly ``width`` entries are non-zero (0 for the others,
        exactly) and they sum to 1.  The softmax is the standard one (Eq. 14
        as printed is a typo).
        """
        logits = self.gate_logits(z, noise_key, gate_noise)
        return gates_from_logits(logits, expert_ranks(logits), width)

    # -- experts (Eq. 12, 32-33) ----------------------------------------------

    def _first_layer(self, zf):
        """Experts' first layer on flattened users ``(M, F)`` -> ``(K, M, H)``."""
        zk = jnp.broadcast_to(zf, (self.n_experts,) + zf.shape)   # batched dot: fast on CPU
        h = jnp.einsum("kmf,kfh->kmh", zk, self.w_in) + self.b_in[:, None, :]
        return _leaky_relu(h, self.negative_slope)

    def _hidden_layer(self, h, i):
        """Hidden layer ``i`` (0-based among the L-1) of every expert, ``(K, M, H)``."""
        h = jnp.einsum("kmh,khg->kmg", h, self.w_hidden[i]) + self.b_hidden[i][:, None, :]
        return _leaky_relu(h, self.negative_slope)

    def expert_outputs(self, zf: Array, depth: Array,
                       layer_rows: tuple[int, ...] | None = None) -> Array:
        """E_k(x) of every expert truncated to ``depth`` layers (Eq. 32), ``(K, M, H)``.

        ``zf`` is ``(M, F)`` (users flattened); ``depth`` ``(M,)`` int, traced,
        clipped to ``[1, L]``.  Layer ``i`` (1-based) runs where ``i <= depth``
        and is the identity elsewhere.

        ``layer_rows`` (static, one count per hidden layer, non-increasing)
        says that the users are sorted by depth, deepest first, and that
        hidden layer ``i`` (0-based among the L-1) is needed by the first
        ``layer_rows[i]`` of them only: it then runs on those rows alone
        (static slices, no masked FLOPs).  ``depth`` must agree with it
        (:func:`dynmec_jax.train.allocator.layer_rows`); the values are the
        same as the masked pass's.  None: every layer runs on every user and
        is masked by ``depth`` (masked FLOPs; any order, traced depths).
        """
        h = self._first_layer(zf)
        if layer_rows is None:
            depth = jnp.clip(depth, 1, self.n_layers)[None, :, None]
            for i in range(self.n_layers - 1):
                h = jnp.where(i + 1 < depth, self._hidden_layer(h, i), h)
            return h
        if len(layer_rows) != self.n_layers - 1:
            raise ValueError(f"layer_rows needs {self.n_layers - 1} entries, got {layer_rows}")
        for i, rows in enumerate(layer_rows):
            if rows >= h.shape[1]:
                h = self._hidden_layer(h, i)
            elif rows > 0:
                h = jnp.concatenate([self._hidden_layer(h[:, :rows], i), h[:, rows:]], axis=1)
        return h

    def all_depth_outputs(self, zf: Array) -> list:
        """Expert outputs at every depth 1..L: a list of L arrays ``(K, M, H)``."""
        h = self._first_layer(zf)
        outs = [h]
        for i in range(self.n_layers - 1):
            h = self._hidden_layer(h, i)
            outs.append(h)
        return outs

    def dispatched_mixture(self, zf: Array, gates: Array, layer_rows: tuple[int, ...],
                           capacity: tuple[int, ...]) -> Array:
        """y = sum_k G_k E_k (Eq. 12, 32) computing only the experts each user's gate
        picked, ``(M, H)``.

        Users are sorted by depth, deepest first (``layer_rows``, static).  In
        each depth group, expert k takes the first ``capacity[d - 1]`` (static)
        of the group's users whose gate k is non-zero (user order), gathered
        into a ``(K, C, F)`` buffer that the experts' ``d`` layers run on,
        batched; their outputs times the gates are scattered back.  A user
        beyond an expert's capacity loses that expert's term (its other
        gates are not renormalised; Switch Transformer's dropped tokens,
        :func:`dropped_pairs` counts them).  With every capacity at the group
        size nothing is dropped and the result equals the masked pass's.
        """
        M, K = gates.shape
        zpad = jnp.concatenate([zf, jnp.zeros((1, zf.shape[1]), zf.dtype)])
        gflat = jnp.concatenate([gates, jnp.zeros((1, K), gates.dtype)]).reshape(-1)
        y = jnp.zeros((M + 1, self.hidden), zf.dtype)
        for lo, hi, d in depth_groups(M, layer_rows):
            cap = capacity[d - 1]
            if cap <= 0:
                continue
            table, _ = _dispatch(gates[lo:hi] > 0, cap, lo, M)            # (K, C)
            x = zpad[table]                                                # (K, C, F)
            g = gflat[table * K + jnp.arange(K, dtype=jnp.int32)[:, None]]  # (K, C)
            h = jnp.einsum("kcf,kfh->kch", x, self.w_in) + self.b_in[:, None, :]
            h = _leaky_relu(h, self.negative_slope)
            for i in range(d - 1):
                h = self._hidden_layer(h, i)
            y = y.at[table].add(g[..., None] * h)
        return y[:M]

    # -- forward passes --------------------------------------------------------

    def __call__(self, z: Array, width: Array, depth: Array,
                 noise_key: Array | None = None, gate_noise: Array | None = None,
                 layer_rows: tuple[int, ...] | None = None,
                 capacity: tuple[int, ...] | None = None):
        """One sub-network (Eq. 12-18, 20): per-user head logits and gates.

        Args:
          z: normalised features ``(..., N, F)``.
          width, depth: traced ints, clipped to ``[1, K]`` and ``[1, L]``: a
            scalar, one per scenario (the batch shape ``(...)``, e.g. ``(B,)``) or
            one per user (``(..., N)``): :func:`per_user`, which tells them
            apart by rank (so a ``(B,)`` width is per scenario even when B = N)
            and raises ``ValueError`` on a shape that fits neither.
          noise_key: PRNG key for the gate noise of Eq. 16 (training), or None.
          gate_noise: the gate noise ``eps`` itself, ``(..., N, K)`` (instead
            of ``noise_key``), see :meth:`gate_logits`.
          layer_rows: static; users (flattened in row-major order) sorted by
            depth, deepest first, and hidden layer i computed on the first
            ``layer_rows[i]`` only (:meth:`expert_outputs`).  None: masked.
          capacity: static, with ``layer_rows``: users per expert in each depth
            group 1..L; only the experts a user's gate picked are computed
            (:meth:`dispatched_mixture`; pairs beyond capacity are dropped).
            None: every expert computed, the width a mask on the gates.
        Returns:
          ``(logits, gates)``: ``logits (..., N, 2)`` (head A = bandwidth,
          head B = CPU; dimensionless) and ``gates (..., N, K)``.
        """
        lead = z.shape[:-1]
        zf = z.reshape(-1, z.shape[-1])
        width = per_user(width, lead, "width").reshape(-1)
        depth = per_user(depth, lead, "depth").reshape(-1)
        if gate_noise is not None:
            gate_noise = jnp.reshape(gate_noise, (zf.shape[0], self.n_experts))
        gates = self.gates(zf, width, noise_key, gate_noise)           # (M, K)
        if capacity is not None:
            if layer_rows is None or len(capacity) != self.n_layers:
                raise ValueError(f"capacity needs layer_rows and {self.n_layers} entries, "
                                 f"got {capacity} with layer_rows {layer_rows}")
            y = self.dispatched_mixture(zf, gates, layer_rows, capacity)
            logits = y @ self.w_heads + self.b_heads                   # Eq. 18, 20
            return logits.reshape(lead + (2,)), gates.reshape(lead + (self.n_experts,))
        experts = self.expert_outputs(zf, depth, layer_rows)           # (K, M, H)
        # Eq. 12, y = sum_k G_k E_k, unrolled over the static K: on CPU this
        # fuses into one elementwise pass (an einsum/reduce over k is ~2x slower).
        # The experts come from one split, not K slices: the gradient of a
        # slice is a zero-padded (K, M, H) buffer per expert, summed (K full
        # passes over memory, ~40% of a training step); that of a split is
        # one concatenate.  Same values either way.
        expert = [e[0] for e in jnp.split(experts, self.n_experts, axis=0)]
        y = gates[:, 0, None] * expert[0]
        for k in range(1, self.n_experts):
            y = y + gates[:, k, None] * expert[k]
        logits = y @ self.w_heads + self.b_heads                       # Eq. 18, 20
        return logits.reshape(lead + (2,)), gates.reshape(lead + (self.n_experts,))

    def all_subnets(self, z: Array, noise_key: Array | None = None) -> Array:
        """Head logits of every sub-network in one pass, ``(K, L, ..., N, 2)``.

        Entry ``[k-1, l-1]`` equals ``self(z, width=k, depth=l)[0]`` (up to
        float rounding).  Uses the depth-``l`` activations of the deepest pass
        and, since the heads are linear, prefix sums over the experts in gate
        order r: ``logit(k) = sum_{r<k} e_r head(E_r) / sum_{r<k} e_r + bias``
        with ``e_r = exp(z_r - z_max)`` (Eq. 12-18, 20).
        """
        K, L = self.n_experts, self.n_layers
        lead = z.shape[:-1]
        zf = z.reshape(-1, z.shape[-1])
        logits = self.gate_logits(zf, noise_key)                              # (M, K)
        order = _gate_order(expert_ranks(logits))                             # (M, K)
        e = _gate_exp(logits - jnp.max(logits, axis=-1, keepdims=True))      # (M, K), <= 1
        # Head projections of every expert at every depth: (M, K, 2L).
        proj = jnp.concatenate([jnp.transpose(h @ self.w_heads, (1, 0, 2))
                                for h in self.all_depth_outputs(zf)], axis=-1)
        x = jnp.concatenate([e[..., None] * proj, e[..., None]], axis=-1)    # (M, K, 2L+1)
        # Experts in gate order (a gather: exact), then prefix sums over ranks.
        x = jnp.cumsum(jnp.take_along_axis(x, order[..., None], axis=1), axis=1)
        num = x[..., :-1].reshape(x.shape[:2] + (L, 2))                       # (M, K, L, 2)
        out = num / x[..., -1:, None] + self.b_heads
        out = jnp.transpose(out, (1, 2, 0, 3))                                # (K, L, M, 2)
        return out.reshape((K, L) + lead + (2,))
