"""Genetic-algorithm baseline of Section V.A (allocation) and V.B (joint).

The paper's GA: each individual holds the resources allocated to every user;
its fitness is the objective of Eq. 11a; individuals are chosen by roulette
("rotation") selection, new ones come from uniform crossover (rate 0.2, halved
every 25 iterations) and mutation (rate 0.1, quartered every 25 iterations);
the population is 6 times the number of tasks.  In the joint case (Section
V.B) the GA also decides offloading and the decay interval is 40.

Choices this module makes where the paper is silent (docs/reproduction.md):

* **Genes.**  An individual is ``2N`` continuous genes in ``[0, 1]`` (``N``
  bandwidth genes, then ``N`` CPU genes), plus, in joint mode, ``N`` offload
  bits.  They decode to shares of the budgets over the *offloaded* users:
  ``b_i = b_max g_i / sum_{j offloaded} g_j`` and likewise for
  ``f_i`` with ``f_ser``, exactly 0 for users kept local, so both budgets are
  always met with equality (up to float rounding).  If every offloaded gene is
  0 the shares fall back to equal.
* **Offloading.**  Allocation mode (``joint=False``): ``offload_mask`` is the
  fixed decision (Section V.A offloads every task).  Joint mode: every
  individual carries its own bits and is decoded with them; ``offload_mask`` is
  only an initial guess, given to individual 0 when ``seed_equal`` is set.
* **Initial population.**  Genes ~ U[0, 1), bits ~ Bernoulli(1/2).  With
  ``seed_equal=True`` (default) individual 0 is the equal-share allocation
  (all genes 1) with ``offload_mask`` as its bits, so with elitism the GA never
  returns anything worse than equal allocation of that decision.
* **Fitness and selection.**  Roulette needs a positive fitness to maximise;
  fitness is ``1 / J`` with ``J`` the Eq. 11a objective (no inference-delay
  term: the GA cannot know its own run time while it runs).  Selection
  probabilities ``(1/J_i) / sum_j (1/J_j)`` are computed as ``r_i / sum r`` with
  ``r_i = J_min / J_i`` in ``[0, 1]``, which is exact, overflow-free, and gives
  an infinite ``J`` (a user with data and no bandwidth) probability 0, never
  NaN.  If some ``J = 0`` those individuals share the probability; if every
  ``J`` is infinite selection is uniform.
* **Generation.**  The ``n_elite`` best individuals (default 1) are copied
  unchanged; every other slot gets a child: two parents drawn by roulette
  (inverse-CDF, i.e. a binary search of the cumulative fitness), with
  probability ``crossover_rate`` a uniform crossover (each gene from either
  parent with probability 1/2) else a copy of the first parent, then each gene
  independently mutates with probability ``mutation_rate`` (continuous gene:
  redrawn from U[0, 1); bit: flipped).  The best objective is therefore
  non-increasing over iterations.
* **Rates.**  ``rate_t = rate_0 decay^floor(t / decay_interval)`` with ``t``
  the 0-based iteration.
* **Iterations.**  Not given; 200 by default (a constructor setting).

Everything is pure and jit/vmap-able: shapes (``n_users``, population,
iterations, mode) are constructor settings, the hyperparameters are a
``GAParams`` pytree of traced leaves (vmap over a stacked ``GAParams`` sweeps
them without recompiling).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from dynmec_jax import rng, system

Array = Any


@struct.dataclass
class GAParams:
    """Tunable GA hyperparameters (Section V.A / V.B); every field is a traced leaf.

    Attributes:
      crossover_rate: probability [1] that a child is a uniform crossover of its
        two parents (else a copy of the first), at iteration 0 (paper: 0.2).
      crossover_decay: factor [1] applied every ``decay_interval`` iterations
        (paper: 1/2).
      mutation_rate: per-gene mutation probability [1] at iteration 0
        (paper: 0.1).
      mutation_decay: factor [1] applied every ``decay_interval`` iterations
        (paper: 1/4).
      decay_interval: iterations [count] between decays (paper: 25 for
        allocation, 40 for joint allocation and offloading).
      n_elite: best individuals [count] copied unchanged into the next
        generation (not given; 1).  Must be >= 1 for the population's best to
        be kept (the returned best-so-far is kept regardless).
    """

    crossover_rate: float = 0.2     # paper: 0.2
    crossover_decay: float = 0.5
    mutation_rate: float = 0.1      # paper: 0.1
    mutation_decay: float = 0.25
    decay_interval: int = 25        # paper: 25 (allocation), 40 (joint)
    n_elite: int = 1


def default_params(joint: bool = False) -> GAParams:
    """The paper's GA hyperparameters: decay interval 25 (Sec. V.A) or 40 (joint, Sec. V.B)."""
    return GAParams(decay_interval=40 if joint else 25)


@struct.dataclass
class GAState:
    """Population and best-so-far of a GA run on one scenario.

    Attributes:
      genes: ``(P, 2N)`` continuous genes in [0, 1]: bandwidth genes then CPU
        genes (dimensionless weights, decoded by :func:`decode`).
      offload: ``(P, N)`` bool offload bits (allocation mode: the fixed mask).
      objective: ``(P,)`` Eq. 11a objective of each individual (s, J and
        misses weighted by alpha, beta, delta; see ``system.objective``).
      best_genes, best_offload: ``(2N,)`` and ``(N,)``, best individual so far.
      best_objective: ``()`` its objective (same units).
      iteration: ``()`` int32, iterations done.
    """

    genes: Array
    offload: Array
    objective: Array
    best_genes: Array
    best_offload: Array
    best_objective: Array
    iteration: Array


@struct.dataclass
class GAResult:
    """Decision found by the GA for one scenario (or a batch, with leading axes).

    Attributes:
      offload: ``(N,)`` bool, x_i of Eq. 11b (allocation mode: the given mask).
      bandwidth: ``(N,)`` b_i [Hz], sums to b_max over offloaded users, 0 else.
      f_alloc: ``(N,)`` f_i^ser [cycles/s], sums to f_ser over offloaded
        users, 0 else.
      objective: ``()`` Eq. 11a objective of the decision without inference
        delay (alpha s + beta J + delta misses).
      best_objective_history: ``(n_iters + 1,)`` best objective after the
        initial population (index 0) and after each iteration; non-increasing.
    """

    offload: Array
    bandwidth: Array
    f_alloc: Array
    objective: Array
    best_objective_history: Array


def decode(genes: Array, offload: Array, sys_params: system.SystemParams):
    """Genes -> (bandwidth [Hz], f_alloc [cycles/s]) for Eq. 1-2 (budgets of Eq. 11a).

    Args:
      genes: ``(..., 2N)`` non-negative weights: bandwidth genes, then CPU genes.
      offload: ``(..., N)`` bool offload bits.
      sys_params: system parameters (``bandwidth_max`` [Hz], ``f_server`` [Hz]).
    Returns ``(bandwidth, f_alloc)``, each ``(..., N)``: shares of ``b_max`` and
    ``f_ser`` proportional to the genes over offloaded users, exactly 0 for the
    others; equal shares if all offloaded genes are 0.
    """
    x = jnp.asarray(offload).astype(bool)
    n = x.shape[-1]
    n_off = jnp.sum(x, axis=-1, keepdims=True).astype(genes.dtype)
    equal = jnp.where(x, 1.0, 0.0) / jnp.maximum(n_off, 1.0)

    def shares(g):
        g = jnp.where(x, jnp.maximum(g, 0.0), 0.0)
        total = jnp.sum(g, axis=-1, keepdims=True)
        ok = total > 0
        return jnp.where(ok, g / jnp.where(ok, total, 1.0), equal)

    bandwidth = sys_params.bandwidth_max * shares(genes[..., :n])
    f_alloc = sys_params.f_server * shares(genes[..., n:])
    return bandwidth, f_alloc


def evaluate(genes: Array, offload: Array, scn: system.Scenario,
             sys_params: system.SystemParams) -> Array:
    """Eq. 11a objective (no inference delay) of each individual, shape ``(...)``.

    ``genes`` ``(..., 2N)`` and ``offload`` ``(..., N)`` broadcast against the
    scenario's ``(N,)`` fields.  Units: alpha s + beta J + delta misses.  An
    offloaded user with data and zero bandwidth or CPU gives ``inf``.
    """
    bandwidth, f_alloc = decode(genes, offload, sys_params)
    out = system.task_outcomes(scn, offload, bandwidth, f_alloc, sys_params)
    return system.objective(out, sys_params)


def selection_probabilities(objective: Array) -> Array:
    """Roulette probabilities p_i = (1/J_i) / sum_j (1/J_j) of fitness 1/J (Eq. 11a J).

    Computed as ``r_i / sum r`` with ``r_i = J_min / J_i``: no overflow, an
    infinite J gets 0, J = 0 individuals share all the probability, all-infinite
    gives uniform.  Never NaN for J >= 0 (J may be ``inf``).  Dimensionless.
    """
    obj = jnp.asarray(objective)
    jmin = jnp.min(obj)
    pos = obj > 0
    r = jnp.where(jmin > 0, jmin / jnp.where(pos, obj, 1.0), jnp.where(pos, 0.0, 1.0))
    r = jnp.where(jnp.isfinite(obj), r, 0.0)
    r = jnp.where(jnp.isfinite(jmin), r, 1.0)
    return r / jnp.sum(r)


def roulette(key: Array, objective: Array, n: int) -> Array:
    """Draws ``n`` indices with probability proportional to fitness 1/J (roulette wheel).

    Inverse-CDF sampling: ``n`` uniforms located by binary search in the
    cumulative selection probabilities.  Returns int32 ``(n,)`` indices.
    """
    cdf = jnp.cumsum(selection_probabilities(objective))
    u = jax.random.uniform(key, (n,), dtype=cdf.dtype) * cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    return jnp.minimum(idx, objective.shape[-1] - 1).astype(jnp.int32)


def _decayed(rate, decay, interval, iteration):
    """rate decay^floor(t / interval) [1], the schedule of Section V.A."""
    steps = (iteration // jnp.maximum(interval, 1)).astype(jnp.float32)
    return rate * jnp.power(decay, steps)


class GeneticAlgorithm:
    """The GA baseline of Section V.A (``joint=False``) and V.B (``joint=True``).

    Shape settings are constructor arguments; hyperparameters are a
    :class:`GAParams` passed to the (jit- and vmap-able) methods, evosax style.
    One scenario is a ``system.Scenario`` with ``(N,)`` fields; use
    :meth:`run_batch` (or ``jax.vmap(ga.run)``) for ``(B, N)``.

    Args:
      n_users: N, tasks per scenario.
      pop_factor: population size / N (paper: 6).
      n_iters: iterations (generations) after the initial population (not
        given in the paper; 200).
      joint: also evolve the offload bits (Section V.B).
      seed_equal: individual 0 of the initial population is the equal-share
        allocation with ``offload_mask`` as its bits.

    Each fitness evaluation is one Eq. 1-6 + 11a evaluation of all N users; a
    run makes ``pop_size (n_iters + 1)`` of them (see :func:`ga_ops`).
    """

    def __init__(self, n_users: int, pop_factor: int = 6, n_iters: int = 200,
                 joint: bool = False, seed_equal: bool = True):
        if int(n_users) < 1:
            raise ValueError(f"n_users must be >= 1, got {n_users}")
        if int(pop_factor) < 1:
            raise ValueError(f"pop_factor must be >= 1, got {pop_factor}")
        if int(n_iters) < 0:
            raise ValueError(f"n_iters must be >= 0, got {n_iters}")
        self.n_users = int(n_users)
        self.pop_factor = int(pop_factor)
        self.pop_size = self.pop_factor * self.n_users
        self.n_iters = int(n_iters)
        self.joint = bool(joint)
        self.seed_equal = bool(seed_equal)
        self.n_genes = 2 * self.n_users

    def default_params(self, joint: bool | None = None) -> GAParams:
        """The paper's hyperparameters for this mode (decay interval 25, or 40 if joint)."""
        return default_params(self.joint if joint is None else joint)

    def _check(self, scn: system.Scenario):
        n = jnp.shape(scn.size)[-1]
        if n != self.n_users:
            raise ValueError(f"scenario has {n} users, GA was built for {self.n_users}")

    def init(self, key: Array, scn: system.Scenario, offload_mask: Array,
             sys_params: system.SystemParams, ga_params: GAParams) -> GAState:
        """Random initial population (genes U[0,1), joint bits Bernoulli(1/2)), evaluated.

        ``offload_mask`` ``(N,)``: the fixed decision (allocation mode) or the
        initial guess of individual 0 (joint mode with ``seed_equal``).
        ``ga_params`` is unused here (kept for a uniform signature).
        """
        del ga_params
        self._check(scn)
        p, n = self.pop_size, self.n_users
        mask = jnp.asarray(offload_mask).astype(bool)
        k_genes, k_bits = jax.random.split(key)
        genes = rng.uniform(k_genes, (p, self.n_genes))
        if self.joint:
            bits = rng.bernoulli(k_bits, 0.5, (p, n))
        else:
            bits = jnp.broadcast_to(mask, (p, n))
        if self.seed_equal:
            genes = genes.at[0].set(1.0)
            bits = bits.at[0].set(mask)
        obj = evaluate(genes, bits, scn, sys_params)
        best = jnp.argmin(obj)
        return GAState(genes=genes, offload=bits, objective=obj,
                       best_genes=genes[best], best_offload=bits[best],
                       best_objective=obj[best], iteration=jnp.zeros((), jnp.int32))

    def ask(self, key: Array, state: GAState, ga_params: GAParams):
        """Next generation: elites + roulette, uniform crossover and mutation (Sec. V.A).

        Returns genes ``(P, 2N)`` in [0, 1] and offload bits ``(P, N)``.
        Rates at iteration t: ``rate_0 decay^floor(t / decay_interval)`` [1].
        """
        p, n = self.pop_size, self.n_users
        t = state.iteration
        pc = _decayed(ga_params.crossover_rate, ga_params.crossover_decay,
                      ga_params.decay_interval, t)
        pm = _decayed(ga_params.mutation_rate, ga_params.mutation_decay,
                      ga_params.decay_interval, t)
        ks = jax.random.split(key, 8)
        parents = roulette(ks[0], state.objective, 2 * p)
        pa, pb = parents[:p], parents[p:]
        cross = rng.uniform(ks[1], (p, 1)) < pc

        take_b = cross & rng.bernoulli(ks[2], 0.5, (p, self.n_genes))
        genes = jnp.where(take_b, state.genes[pb], state.genes[pa])
        mutate = rng.uniform(ks[3], (p, self.n_genes)) < pm
        genes = jnp.where(mutate, rng.uniform(ks[4], (p, self.n_genes)), genes)

        if self.joint:
            take_b = cross & rng.bernoulli(ks[5], 0.5, (p, n))
            bits = jnp.where(take_b, state.offload[pb], state.offload[pa])
            flip = rng.uniform(ks[6], (p, n)) < pm
            bits = bits ^ flip
        else:
            bits = state.offload

        order = jnp.argsort(state.objective)
        elite = (jnp.arange(p) < ga_params.n_elite)[:, None]
        genes = jnp.where(elite, state.genes[order], genes)
        bits = jnp.where(elite, state.offload[order], bits)
        return genes, bits

    def tell(self, genes: Array, offload: Array, objective: Array, state: GAState,
             ga_params: GAParams) -> GAState:
        """Replaces the population by the evaluated ``genes``/``offload`` and updates the best.

        ``objective`` ``(P,)``: Eq. 11a of each individual.  ``ga_params`` unused.
        """
        del ga_params
        i = jnp.argmin(objective)
        better = objective[i] < state.best_objective
        return GAState(
            genes=genes, offload=offload, objective=objective,
            best_genes=jnp.where(better, genes[i], state.best_genes),
            best_offload=jnp.where(better, offload[i], state.best_offload),
            best_objective=jnp.where(better, objective[i], state.best_objective),
            iteration=state.iteration + 1)

    def step(self, key: Array, state: GAState, scn: system.Scenario,
             sys_params: system.SystemParams, ga_params: GAParams) -> GAState:
        """One GA iteration: ask, evaluate Eq. 11a for the P individuals, tell."""
        genes, bits = self.ask(key, state, ga_params)
        return self.tell(genes, bits, evaluate(genes, bits, scn, sys_params), state,
                         ga_params)

    def run(self, key: Array, scn: system.Scenario, offload_mask: Array,
            sys_params: system.SystemParams, ga_params: GAParams) -> GAResult:
        """Full GA on one scenario (``(N,)`` fields): ``lax.scan`` over ``n_iters`` iterations.

        Returns the best decision found (bandwidth [Hz], f_alloc [cycles/s],
        offload bits) and its Eq. 11a objective per iteration.  jit- and
        vmap-able; the same key gives the same result.
        """
        k_init, k_iter = jax.random.split(key)
        state = self.init(k_init, scn, offload_mask, sys_params, ga_params)

        def body(st, k):
            st = self.step(k, st, scn, sys_params, ga_params)
            return st, st.best_objective

        first = state.best_objective
        state, hist = jax.lax.scan(body, state, jax.random.split(k_iter, self.n_iters))
        bandwidth, f_alloc = decode(state.best_genes, state.best_offload, sys_params)
        return GAResult(offload=state.best_offload, bandwidth=bandwidth, f_alloc=f_alloc,
                        objective=state.best_objective,
                        best_objective_history=jnp.concatenate([first[None], hist]))

    def run_batch(self, key: Array, scn: system.Scenario, offload_mask: Array,
                  sys_params: system.SystemParams, ga_params: GAParams) -> GAResult:
        """:meth:`run` vmapped over ``B`` scenarios (``(B, N)`` fields, one key split B ways).

        Result fields gain a leading ``B`` axis.  Not jitted itself: wrap in
        ``jax.jit`` for speed.
        """
        b = jnp.shape(scn.size)[0]
        keys = jax.random.split(key, b)
        mask = jnp.broadcast_to(jnp.asarray(offload_mask), jnp.shape(scn.size))
        return jax.vmap(self.run, in_axes=(0, 0, 0, None, None))(
            keys, scn, mask, sys_params, ga_params)


# Elementary operations of one fitness evaluation (`evaluate`: decode +
# system.task_outcomes + system.objective), counted from its jaxpr
# (benchmarks/ga.py re-derives them; A = add/sub/mul/div/compare/select/max/
# abs/reduce element, T = log/exp/log1p).  Per user: 76 A (13 mul, 9 add,
# 4 sub, 7 div, 8 compares, 24 selects of the double-where pattern, 4 reduce
# elements, ...) and 4 T (log of the distance in the SNR coefficient, log b,
# exp and log1p of the softplus in Eq. 1).  Both the edge and the local branch
# (Eq. 4, 6) are computed for every user, as jnp.where does, and the
# loop-invariant terms (log distance, c s, Eq. 4, 6) are counted in every
# evaluation because the implementation recomputes them.  Per individual: 5 A
# (share normalisation, user count) and 4 T (logs of scalar parameters).
_EVAL_ARITH_PER_USER = 76
_EVAL_TRANSCENDENTAL_PER_USER = 4
_EVAL_ARITH_PER_INDIVIDUAL = 5
_EVAL_TRANSCENDENTAL_PER_INDIVIDUAL = 4


_TRANSCENDENTAL = frozenset({"log", "exp", "log1p", "expm1", "pow", "exp2", "tanh",
                             "logistic", "sqrt", "rsqrt", "erf", "sin", "cos"})
_FREE = frozenset({"broadcast_in_dim", "reshape", "convert_element_type", "squeeze",
                   "slice", "dynamic_slice", "concatenate", "copy", "copy_p", "gather",
                   "iota", "expand_dims", "transpose", "stop_gradient"})


def _count_jaxpr(jaxpr, counts: dict) -> None:
    """Adds the elementwise operation counts of ``jaxpr`` (and its sub-jaxprs) to ``counts``."""
    for eqn in jaxpr.eqns:
        subs = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
        if subs:
            for sub in subs:
                _count_jaxpr(sub.jaxpr if hasattr(sub, "jaxpr") else sub, counts)
            continue
        name = eqn.primitive.name
        if name in _FREE:
            continue
        sizes = [math.prod(v.aval.shape) for v in list(eqn.invars) + list(eqn.outvars)
                 if hasattr(v, "aval") and hasattr(v.aval, "shape")]
        kind = "transcendental" if name in _TRANSCENDENTAL else "arith"
        counts[kind] += max(sizes, default=1)


def evaluation_ops(n_users: int, sys_params: system.SystemParams | None = None) -> dict:
    """Operations of one fitness evaluation (decode, Eq. 1-6, Eq. 11a), counted from its jaxpr.

    Traces :func:`evaluate` for one individual of ``n_users`` users and counts
    one operation per output element of every arithmetic primitive (per input
    element for reductions), split into ``"arith"`` and ``"transcendental"``
    (log, exp, log1p, ...); data movement (broadcast, slice, convert) is free.
    Host side; used to check the constants of :func:`ga_ops` [operations].
    """
    n = int(n_users)
    sys_params = system.SystemParams(n_users=n) if sys_params is None else sys_params
    scn = system.Scenario(*(jnp.ones((n,)) for _ in range(5)))
    closed = jax.make_jaxpr(lambda g, x: evaluate(g, x, scn, sys_params))(
        jnp.ones((2 * n,)), jnp.ones((n,), bool))
    counts = {"arith": 0, "transcendental": 0}
    _count_jaxpr(closed.jaxpr, counts)
    return counts


def ga_ops(n_users: int, pop_factor: int = 6, n_iters: int = 200, joint: bool = False,
           *, transcendental_cost: float = 1.0,
           random_cost: float = 1.0) -> dict:
    """Operation count of one GA run as implemented, for Eq. 9's ``M`` (host side).

    Counts scalar operations (each add, multiply, divide, compare, select = 1;
    a multiply-add counts 2, so this is at least the MAC count), transcendental
    functions (log, exp, log1p) and 32-bit random draws separately; memory
    moves (gathers of parents, copies of elites) are not counted, like Eq. 8.

    * Fitness evaluations: ``P (n_iters + 1)`` with ``P = pop_factor N`` (the
      initial population and every individual of every generation, elites
      included, as implemented), each costing
      ``N (76 arith + 4 transcendental) + 5 arith + 4 transcendental`` (decode,
      Eq. 1-6, Eq. 11a; counted from the jaxpr of :func:`evaluate`).
    * Selection, per generation: fitness transform ``1/J`` as ``J_min/J``
      (min, compares, divisions, selects, normalisation: ~10 P), cumulative
      sum (P), ``2P`` random draws each placed by a binary
      search of ``ceil(log2 P)`` compares.
    * Crossover: P draws + compares (crossover or copy), ``G`` coin draws,
      AND and select per gene; mutation: 2 draws (decision, new value),
      compare and select per gene (a bit: one draw, compare, XOR).  ``G = 2N``
      continuous genes, plus N bits in joint mode.
    * Elitism: an argsort of P objectives (``P ceil(log2 P)`` compares), a
      select per gene of every individual; best update: argmin (P) and a select
      per gene.
    * Initial population: one draw per gene (and per bit in joint mode).

    Returns a dict of counts ``{"evaluations", "arith", "transcendental",
    "random", "total"}`` where ``total = arith + transcendental_cost *
    transcendental + random_cost * random`` [operations]; feed ``total`` to
    ``accounting.inference_delay`` (Eq. 9, ``T = lambda M / f_ser`` [s]).
    The default costs of 1 make ``total`` a lower bound (one cycle per
    elementary operation at lambda = 1).
    """
    n, p, t = int(n_users), int(pop_factor) * int(n_users), int(n_iters)
    g = 2 * n
    bits = n if joint else 0
    logp = max(1, math.ceil(math.log2(max(p, 2))))
    evals = p * (t + 1)
    arith = evals * (n * _EVAL_ARITH_PER_USER + _EVAL_ARITH_PER_INDIVIDUAL)
    transc = evals * (n * _EVAL_TRANSCENDENTAL_PER_USER + _EVAL_TRANSCENDENTAL_PER_INDIVIDUAL)
    random = p * (g + bits)  # initial population
    per_gen_arith = (
        11 * p                      # selection probabilities + cumsum
        + 2 * p * (logp + 1)        # roulette: scale + binary search
        + p                         # crossover decision compare
        + (g + bits) * p * 3        # coin compare, AND, select
        + g * p * 2 + bits * p * 2  # mutation compare + select / XOR
        + p * logp                  # argsort for elites
        + (g + bits) * p            # elite selects
        + p + (g + bits)            # argmin + best update selects
        + 8                         # rate schedule
    )
    per_gen_random = 2 * p + p + (g + bits) * p + g * p * 2 + bits * p
    arith += t * per_gen_arith
    random += t * per_gen_random
    total = arith + transcendental_cost * transc + random_cost * random
    return {"evaluations": evals, "arith": arith, "transcendental": transc,
            "random": random, "total": total}
