r"""gymnax environments over the MEC system model: learn who offloads (Eq. 11b).

Two environments pose the scheduling half of the paper's joint problem
(Section III, Eq. 11) as reinforcement learning, with the allocation half
solved for the agent:

* :class:`OneShotOffloading`: each episode is one scenario of N tasks
  (Section V's distribution, :func:`dynmec_jax.system.sample_scenarios`);
  the agent decides every x_i at once and the episode ends after that one
  step, with reward -sum_i C_i.
* :class:`SequentialOffloading`: the same scenario, one user decided per
  step (users in index order, N steps); the reward is 0 until the last
  user, then -sum_i C_i / N (a terminal reward).

**Reward = the project's scorer.**  C_i is Eq. 24 for a local task
(alpha w_i T_i^loc + beta E_i^loc, Eq. 4, 6, 19) and Eq. 25 for an
offloaded one (alpha w_i (T_i^tra + T_i^com) + beta E_i^edge, Eq. 1-3, 5,
19), computed by :func:`dynmec_jax.evaluation.score`, the one scorer every
method of the project goes through; so an episode's return is exactly
minus what the scorer reports for the same scenario and decision (over N
for the sequential env).  The offloaded tasks share the uplink bandwidth
b_max [Hz] and the server CPU f_ser [cycles/s] by one of two rules
(constructor argument ``allocation``):

* ``"optimal"``: the exact minimiser of sum_i C_i^edge over the
  offloaded set, energy term included (``evaluation.score(...,
  allocation="cost")``, i.e.
  :func:`~dynmec_jax.baselines.exhaustive.energy_aware_allocation`, the
  KKT optimum of Eq. 11h-11k).  The return is then the best any allocation
  can do for that offloading set.
* ``"learned"``: the learned MoE allocator (Eq. 12-20) at its largest
  sub-network (K, L) (:func:`dynmec_jax.allocator.allocate`); ``allocator``
  defaults to the shipped one (:func:`~dynmec_jax.allocator.load_allocator`).

**No inference delay** is charged by the environments (T^infer = 0 in
Eq. 24-25): how long the agent itself takes to decide is the agent's
business (Eq. 9, T = lambda M / f_ser for M operations), to be charged by
whoever deploys it, as :mod:`dynmec_jax.evaluation` does for the methods
of Section V.

**Units.**  The system is in SI units (:class:`~dynmec_jax.system.SystemParams`):
bits, cycles/bit, seconds, metres, Hz, cycles/s, W, J.  Rewards are in the
paper's cost units (alpha w T with w [1/s] and T [s] is dimensionless;
beta E with E [J]).  At Table II's values and N = 10, sum_i C_i is about
70 when every task is offloaded and about 780 when every task runs
locally (heavy-tailed: a single large local task can cost thousands).

**Observations** (float32; the five task features of Eq. 7 enter as
:func:`dynmec_jax.nets.features.normalize_features` with
``FeatureScales.from_params(params.sys_params)``: ``log(max(u / u_ref,
1e-4))`` for size, workload, deadline, distance and local CPU):

* one-shot: shape ``(N, 5)``, one row per user (wrap with gymnax's
  ``FlattenObservationWrapper`` for a flat ``(5 N,)`` vector);
* sequential: shape ``(N, 8)``: the five features, then ``decided``
  (1.0 for users already decided), ``offloaded`` (1.0 for users decided
  to offload) and ``next`` (1.0 for the user this step decides, one-hot;
  all 0 after the last user).

**Actions.**

* one-shot: ``spaces.Box(0, 1, (N,))``; user i offloads iff
  ``action[i] > 0.5`` (0/1 integers and booleans work too; a uniform
  sample of the Box is a fair coin per user);
* sequential: ``spaces.Discrete(2)``: 1 offloads the next user, 0 keeps
  it local.

**Parameters.**  :class:`EnvParams` holds a
:class:`~dynmec_jax.system.SystemParams` (``sys_params``, whose
``n_users`` must be the environment's N) and ``max_steps_in_episode`` (1
for the one-shot env, N for the sequential one).  Every float field of
``sys_params`` is a pytree leaf, so a stacked ``EnvParams`` (e.g. two
values of ``bandwidth_max``) is ``vmap``-ed like any other input.  The
agent does not observe ``sys_params`` (b_max and f_ser do not enter the
features).

Usage (gymnax 1.0.1's API: ``step`` returns ``(obs, state, reward,
terminated, truncated, info)`` and resets automatically when the episode
ends)::

    import jax, jax.numpy as jnp
    from dynmec_jax.env import OneShotOffloading

    env = OneShotOffloading(n_users=10)              # allocation="optimal"
    params = env.default_params
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    action = jnp.ones((64, 10))                      # offload everything
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    obs, state, reward, terminated, truncated, info = step(keys, state, action, params)
    # reward[j] == -evaluation.score(scenario_j, action[j] > 0.5,
    #                                 sys_params=params.sys_params).cost.sum()

    # vmap over systems: a stacked EnvParams
    two = jax.tree.map(lambda *v: jnp.stack(v),
                       params, params.replace(sys_params=params.sys_params.replace(
                           bandwidth_max=1e6)))
    obs, state = jax.vmap(env.reset)(keys[:2], two)

gymnax is an optional dependency: ``pip install -e '.[rl]'``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

try:
    from gymnax.environments import environment, spaces
except ImportError as e:  # gymnax (and six, which gymnax 1.0.1 imports) are the rl extra
    raise ImportError("dynmec_jax.env needs gymnax: pip install -e '.[rl]'") from e

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import evaluation, system
from dynmec_jax.nets.features import FEATURE_FLOOR, FeatureScales, normalize_features
from dynmec_jax.system import Scenario, SystemParams

Array = Any

#: Allocation rules of the offloaded set (constructor argument ``allocation``).
ALLOCATIONS = ("optimal", "learned")
#: Feature channels of the observations: the Eq. 7 features (both envs), then
#: the sequential env's decision channels.
FEATURES = ("size", "workload", "deadline", "distance", "f_local")
SEQUENTIAL_CHANNELS = FEATURES + ("decided", "offloaded", "next")

_LOG_FLOOR = math.log(FEATURE_FLOOR)
# Largest normalised feature under Section V's sampling: s < 2 s_avg, c < 2 c_avg,
# d <= d_max, l <= l_max, f_loc <= f_loc,max (plus float32 rounding slack).
_FEATURE_HIGH = (math.log(2.0), math.log(2.0), 0.0, 0.0, 0.0)
_SLACK = 1e-5


@struct.dataclass
class EnvState(environment.EnvState):
    """The state of an episode (both environments).

    Attributes:
      scenario: the N tasks of Eq. 7, each field ``(N,)`` in SI units
        (bits, cycles/bit, s, m, cycles/s).
      offload: x_i decided so far, bool ``(N,)`` (False for undecided
        users; the one-shot env holds the decision after its step).
      time: steps taken in this episode (int32; the sequential env's next user).
    """

    scenario: Scenario
    offload: Array
    time: int


@struct.dataclass
class EnvParams(environment.EnvParams):
    """Environment parameters: the system and the episode length.

    Attributes:
      sys_params: the MEC system (Table II), SI units; its ``n_users`` must
        be the environment's N.  Float fields are leaves: ``vmap`` over a
        stacked ``EnvParams`` sweeps them.
      max_steps_in_episode: gymnax's time limit (1 for the one-shot env, N
        for the sequential one: episodes end by termination at that step).
    """

    sys_params: SystemParams = struct.field(default_factory=SystemParams)
    max_steps_in_episode: int = 1


class _Offloading(environment.Environment[EnvState, EnvParams]):
    """What both environments share: the scenario, the allocation rule, the scorer."""

    def __init__(self, n_users: int, allocation: str = "optimal", allocator=None):
        super().__init__()
        if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1:
            raise ValueError(f"n_users must be an integer >= 1, got {n_users!r}")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
        if allocation == "optimal" and allocator is not None:
            raise ValueError("an allocator is only used with allocation='learned'")
        if allocation == "learned" and allocator is None:
            allocator = allocator_lib.load_allocator()
        self.n_users = n_users
        self.allocation = allocation
        self.allocator = allocator

    def _check(self, params: EnvParams) -> SystemParams:
        sp = params.sys_params
        if sp.n_users != self.n_users:
            raise ValueError(f"params.sys_params.n_users is {sp.n_users}, the environment "
                             f"has {self.n_users} users")
        return sp

    def score(self, scenario: Scenario, offload: Array,
              params: EnvParams) -> evaluation.Score:
        """The scorer's per-task outcome of ``offload`` with this env's allocation.

        ``evaluation.score`` (Eq. 1-6, 19, 24-25) with no inference delay;
        ``"optimal"``: the exact energy-aware allocation (``allocation="cost"``),
        ``"learned"``: the allocator at (K, L) (Eq. 12-20).  ``scenario``
        fields and ``offload`` (bool) ``(..., N)``; ``Score.cost`` is C_i.
        """
        sp = self._check(params)
        x = jnp.asarray(offload).astype(bool)
        if self.allocation == "optimal":
            return evaluation.score(scenario, x, sys_params=sp, allocation="cost")
        alloc = self.allocator
        b, f = allocator_lib.allocate(alloc, scenario, x, alloc.n_experts, alloc.n_layers, sp)
        return evaluation.score(scenario, x, b, f, sys_params=sp)

    def features(self, scenario: Scenario, params: EnvParams) -> Array:
        """The normalised Eq. 7 features ``(N, 5)`` (dimensionless, float32)."""
        scales = FeatureScales.from_params(params.sys_params)
        return normalize_features(scenario, scales).astype(jnp.float32)

    def sample_scenario(self, key: Array, params: EnvParams) -> Scenario:
        """One scenario of Section V's distribution, fields ``(N,)`` in SI units."""
        sp = self._check(params)
        return jax.tree.map(lambda a: a[0], system.sample_scenarios(key, sp, 1))

    def reset_env(self, key: Array, params: EnvParams) -> tuple[Array, EnvState]:
        """A fresh scenario; nothing decided yet (``time = 0``)."""
        scn = self.sample_scenario(key, params)
        state = EnvState(scenario=scn, offload=jnp.zeros((self.n_users,), bool),
                         time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def is_terminal(self, state: EnvState, params: EnvParams) -> Array:
        """Whether the episode is over (every user decided); as :meth:`is_terminated`."""
        return self.is_terminated(state, params)

    def state_space(self, params: EnvParams):
        raise NotImplementedError("the state holds SI-unit task features; see EnvState")


class OneShotOffloading(_Offloading):
    """Decide every user's x_i at once; one step per episode, reward -sum_i C_i.

    Args:
      n_users: N, tasks per scenario.
      allocation: ``"optimal"`` (the exact allocation minimising sum_i
        C_i^edge, Eq. 25, energy included) or ``"learned"`` (the MoE
        allocator at its largest sub-network, Eq. 12-20).
      allocator: the :class:`~dynmec_jax.allocator.Allocator` of
        ``"learned"`` (default: the shipped one); must be None for
        ``"optimal"``.

    Observation ``(N, 5)`` float32 (normalised Eq. 7 features); action
    ``Box(0, 1, (N,))`` thresholded at 0.5 (x_i = action_i > 0.5); reward
    -sum_i C_i (Eq. 24-25, no inference delay) as
    ``evaluation.score``; ``terminated`` is True after the step.  ``info``:
    ``cost`` (sum_i C_i) and ``offload`` (the decision, bool ``(N,)``).
    """

    @property
    def default_params(self) -> EnvParams:
        """Table II's system with N users; one step per episode."""
        return EnvParams(sys_params=SystemParams(n_users=self.n_users), max_steps_in_episode=1)

    def step_env(self, key: Array, state: EnvState, action: Array, params: EnvParams):
        """Scores ``action`` (x_i = action_i > 0.5) on the episode's scenario."""
        del key
        x = jnp.broadcast_to(jnp.asarray(action) > 0.5, (self.n_users,))
        cost = jnp.sum(self.score(state.scenario, x, params).cost, -1)
        state = state.replace(offload=x, time=state.time + 1)
        reward = (-cost).astype(jnp.float32)
        return (jax.lax.stop_gradient(self.get_obs(state, params)),
                jax.lax.stop_gradient(state), reward, self.is_terminated(state, params),
                {"cost": cost, "offload": x})

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> Array:
        """The users' normalised features, ``(N, 5)`` float32."""
        params = self.default_params if params is None else params
        return self.features(state.scenario, params)

    def is_terminated(self, state: EnvState, params: EnvParams) -> Array:
        """True once the decision is made (after the one step)."""
        return state.time >= 1

    @property
    def name(self) -> str:
        """``OneShotOffloading-N<n>``."""
        return f"OneShotOffloading-N{self.n_users}"

    @property
    def num_actions(self) -> int:
        """N, the length of the action vector (one binary decision per user)."""
        return self.n_users

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        """``Box(0, 1, (N,))``: x_i = action_i > 0.5 (a sample is a fair coin per user)."""
        return spaces.Box(0.0, 1.0, (self.n_users,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        """``Box((N, 5))`` of the normalised features: each in [log 1e-4, its maximum]
        under Section V's sampling (log 2 for size and workload, 0 for the others)."""
        high = jnp.asarray(_FEATURE_HIGH, jnp.float32) + _SLACK
        return spaces.Box(jnp.float32(_LOG_FLOOR - _SLACK), high, (self.n_users, 5),
                          jnp.float32)


class SequentialOffloading(_Offloading):
    """Decide one user per step (index order); terminal reward -sum_i C_i / N.

    Args: as :class:`OneShotOffloading`.

    Observation ``(N, 8)`` float32: the normalised Eq. 7 features, then
    ``decided``, ``offloaded`` and ``next`` (one-hot of the user this
    step decides) per user.  Action ``Discrete(2)`` (1 offloads the next
    user).  Reward 0 for the first N - 1 steps; at step N, -sum_i C_i / N
    (Eq. 24-25, the scorer's, no inference delay) of the completed
    decision.  ``terminated`` is True at step N (so is gymnax's
    ``truncated``, with the default ``max_steps_in_episode = N``).
    ``info``: ``cost`` (sum_i C_i at the last step, 0 before) and
    ``offload`` (the decisions so far).
    """

    @property
    def default_params(self) -> EnvParams:
        """Table II's system with N users; N steps per episode."""
        return EnvParams(sys_params=SystemParams(n_users=self.n_users),
                         max_steps_in_episode=self.n_users)

    def step_env(self, key: Array, state: EnvState, action: Array, params: EnvParams):
        """Records x_t = action > 0.5 for user ``t = state.time``; scores at the last user."""
        del key
        i = state.time
        x = state.offload.at[i].set(jnp.asarray(action).reshape(()) > 0.5)
        state = state.replace(offload=x, time=i + 1)
        done = self.is_terminated(state, params)
        cost = jnp.sum(self.score(state.scenario, x, params).cost, -1)
        reward = jnp.where(done, -cost / self.n_users, 0.0).astype(jnp.float32)
        return (jax.lax.stop_gradient(self.get_obs(state, params)),
                jax.lax.stop_gradient(state), reward, done,
                {"cost": jnp.where(done, cost, 0.0), "offload": x})

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> Array:
        """Features and decision channels, ``(N, 8)`` float32 (:data:`SEQUENTIAL_CHANNELS`)."""
        params = self.default_params if params is None else params
        idx = jnp.arange(self.n_users)
        decided = idx < state.time
        channels = jnp.stack([decided, state.offload & decided, idx == state.time], -1)
        return jnp.concatenate([self.features(state.scenario, params),
                                channels.astype(jnp.float32)], -1)

    def is_terminated(self, state: EnvState, params: EnvParams) -> Array:
        """True once all N users are decided."""
        return state.time >= self.n_users

    @property
    def name(self) -> str:
        """``SequentialOffloading-N<n>``."""
        return f"SequentialOffloading-N{self.n_users}"

    @property
    def num_actions(self) -> int:
        """2 (keep the next user local, or offload it)."""
        return 2

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        """``Discrete(2)``: 1 offloads the next user, 0 keeps it local."""
        return spaces.Discrete(2)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        """``Box((N, 8))``: the features' bounds (as the one-shot env), then [0, 1]."""
        low = jnp.asarray([_LOG_FLOOR] * 5 + [0.0] * 3, jnp.float32) - _SLACK
        high = jnp.asarray(_FEATURE_HIGH + (1.0, 1.0, 1.0), jnp.float32) + _SLACK
        return spaces.Box(low, high, (self.n_users, 8), jnp.float32)
