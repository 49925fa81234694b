"""The gymnax environments (dynmec_jax.env) and the PPO example on them."""

import importlib
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")

from dynmec_jax import allocator as allocator_lib  # noqa: E402
from dynmec_jax import env as env_lib  # noqa: E402
from dynmec_jax import evaluation, system  # noqa: E402
from dynmec_jax.env import EnvParams, OneShotOffloading, SequentialOffloading  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 4
RTOL = 2e-5          # jit/vmap vs eager float32 rounding of the same scorer


def _keys(n, seed=0):
    return jax.random.split(jax.random.PRNGKey(seed), n)


def _scorer_cost(scn, x, sp, bandwidth=None, f_alloc=None):
    return np.asarray(evaluation.score(scn, x, bandwidth, f_alloc, sys_params=sp,
                                       allocation="cost").cost.sum(-1))


@pytest.fixture(scope="module")
def oneshot():
    return OneShotOffloading(N)


def test_reset_step_under_jit_vmap_over_keys(oneshot):
    env, params = oneshot, oneshot.default_params
    keys = _keys(3)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    assert obs.shape == (3, N, 5) and obs.dtype == jnp.float32
    assert np.all(np.asarray(state.time) == 0) and not np.any(state.offload)
    # three keys, three different scenarios
    assert len({float(s) for s in state.scenario.size[:, 0]}) == 3
    actions = jnp.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], jnp.float32)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    obs2, state2, reward, terminated, truncated, info = step(_keys(3, 1), state, actions, params)
    assert reward.shape == (3,) and np.all(terminated) and np.all(truncated)
    want = -_scorer_cost(state.scenario, actions > 0.5, params.sys_params)
    np.testing.assert_allclose(reward, want, rtol=RTOL)
    np.testing.assert_allclose(info["cost"], -want, rtol=RTOL)
    np.testing.assert_array_equal(info["offload"], actions > 0.5)


def test_vmap_over_stacked_env_params(oneshot):
    env, base = oneshot, oneshot.default_params
    wide = base.replace(sys_params=base.sys_params.replace(bandwidth_max=4e6))
    stacked = jax.tree.map(lambda *v: jnp.stack(v), base, wide)
    key = jax.random.PRNGKey(3)
    keys = jnp.stack([key, key])
    obs, state = jax.jit(jax.vmap(env.reset))(keys, stacked)
    np.testing.assert_array_equal(obs[0], obs[1])            # same scenario, same features
    action = jnp.ones((2, N))
    _, _, reward, *_ = jax.jit(jax.vmap(env.step))(keys, state, action, stacked)
    scn = jax.tree.map(lambda a: a[0], state.scenario)
    for i, p in enumerate((base, wide)):
        np.testing.assert_allclose(reward[i], -_scorer_cost(scn, jnp.ones(N, bool),
                                                            p.sys_params), rtol=RTOL)
    assert reward[1] > reward[0]                              # more bandwidth, lower cost


def test_auto_reset_after_terminal_step(oneshot):
    env, params = oneshot, oneshot.default_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    key = jax.random.PRNGKey(7)
    obs2, state2, _, terminated, _, info = env.step(key, state, jnp.ones(N), params)
    assert bool(terminated)
    fresh_obs, fresh = env.reset(jax.random.split(key)[1], params)   # gymnax's reset key
    np.testing.assert_array_equal(obs2, fresh_obs)
    for a, b in zip(jax.tree.leaves(state2), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(state2.time) == 0 and not np.any(state2.offload)
    assert not np.allclose(state2.scenario.size, state.scenario.size)
    np.testing.assert_allclose(info["final_observation"], obs, rtol=1e-6)  # the old scenario

    seq = SequentialOffloading(N)
    sp = seq.default_params
    obs, s = seq.reset(jax.random.PRNGKey(1), sp)
    first = s.scenario
    for t in range(N):
        obs, s, *_ = seq.step(jax.random.PRNGKey(10 + t), s, 1, sp)
    assert int(s.time) == 0 and not np.any(s.offload)
    assert not np.allclose(s.scenario.size, first.size)
    np.testing.assert_array_equal(obs[:, 7], np.arange(N) == 0)       # next: user 0 again


@pytest.mark.parametrize("allocation", ["optimal", "learned"])
def test_oneshot_reward_is_minus_the_scorer_cost(allocation, tiny_allocator):
    sp = system.SystemParams(n_users=N)
    alloc = tiny_allocator(sp) if allocation == "learned" else None
    env = OneShotOffloading(N, allocation=allocation, allocator=alloc)
    params = env.default_params
    keys = _keys(4, 2)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    actions = jax.vmap(env.action_space(params).sample)(_keys(4, 3))
    _, _, reward, *_ = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))(
        keys, state, actions, params)
    x = actions > 0.5
    if allocation == "optimal":
        want = _scorer_cost(state.scenario, x, sp)
    else:
        b, f = allocator_lib.allocate(alloc, state.scenario, x, alloc.n_experts,
                                      alloc.n_layers, sp)
        want = _scorer_cost(state.scenario, x, sp, b, f)
    np.testing.assert_allclose(reward, -want, rtol=RTOL)


def test_learned_defaults_to_the_shipped_allocator_and_arguments_are_checked():
    env = OneShotOffloading(N, allocation="learned")
    assert isinstance(env.allocator, allocator_lib.Allocator)
    with pytest.raises(ValueError, match="allocation must be one of"):
        OneShotOffloading(N, allocation="equal")
    with pytest.raises(ValueError, match="only used with allocation='learned'"):
        OneShotOffloading(N, allocator=env.allocator)
    with pytest.raises(ValueError, match="n_users"):
        OneShotOffloading(N).reset(jax.random.PRNGKey(0),
                                   EnvParams(sys_params=system.SystemParams(n_users=N + 1)))


def test_sequential_reward_is_terminal_minus_mean_cost():
    env = SequentialOffloading(N)
    params = env.default_params
    actions = jnp.array([1, 0, 1, 1])
    obs, state = env.reset(jax.random.PRNGKey(5), params)
    scn = state.scenario
    step = jax.jit(env.step)
    for t in range(N):
        np.testing.assert_array_equal(obs[:, 5], np.arange(N) < t)             # decided
        np.testing.assert_array_equal(obs[:, 6], (np.arange(N) < t) & (actions > 0))
        np.testing.assert_array_equal(obs[:, 7], np.arange(N) == t)            # next
        obs, state, reward, terminated, truncated, info = step(
            jax.random.PRNGKey(t), state, actions[t], params)
        if t < N - 1:
            assert float(reward) == 0.0 and not bool(terminated) and not bool(truncated)
    assert bool(terminated)
    want = _scorer_cost(scn, actions > 0, params.sys_params)
    np.testing.assert_allclose(reward, -want / N, rtol=RTOL)
    np.testing.assert_allclose(info["cost"], want, rtol=RTOL)
    np.testing.assert_array_equal(info["offload"], actions > 0)


def test_spaces_contain_their_samples_and_the_observations():
    for env in (OneShotOffloading(N), SequentialOffloading(N)):
        params = env.default_params
        keys = _keys(8, 4)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
        assert obs.shape[1:] == env.observation_space(params).shape
        assert np.all(jax.vmap(env.observation_space(params).contains)(obs))
        actions = jax.vmap(env.action_space(params).sample)(keys)
        assert np.all(jax.vmap(env.action_space(params).contains)(actions))
        obs2, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, actions, params)
        assert np.all(jax.vmap(env.observation_space(params).contains)(obs2))
    assert OneShotOffloading(N).num_actions == N and SequentialOffloading(N).num_actions == 2


def test_missing_gymnax_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "gymnax" or m.startswith("gymnax.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "dynmec_jax.env")
    with pytest.raises(ImportError) as err:
        importlib.import_module("dynmec_jax.env")
    assert str(err.value) == "dynmec_jax.env needs gymnax: pip install -e '.[rl]'"
    assert env_lib.OneShotOffloading is OneShotOffloading      # the real module untouched


def _example():
    spec = importlib.util.spec_from_file_location("ppo_offloading",
                                                  ROOT / "examples" / "ppo_offloading.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                 # flax modules' dataclasses look it up
    spec.loader.exec_module(mod)
    return mod


def test_ppo_make_train_tiny_budget_two_seeds():
    ppo = _example()
    config = {"N_USERS": N, "NUM_ENVS": 8, "NUM_STEPS": 2, "TOTAL_TIMESTEPS": 32,
              "NUM_MINIBATCHES": 2, "UPDATE_EPOCHS": 1, "HIDDEN": 8}
    out = jax.jit(jax.vmap(ppo.make_train(config)))(_keys(2))
    metrics = out["metrics"]
    assert metrics["episode_return"].shape == (2, 2)
    for k, v in metrics.items():
        assert np.all(np.isfinite(v)), k
    assert np.all(metrics["episode_return"] < 0)                # -sum C_i
    params = out["runner_state"][0].params
    env = OneShotOffloading(N)
    scn = system.sample_scenarios(jax.random.PRNGKey(9), env.default_params.sys_params, 5)
    full = {**ppo.DEFAULT_CONFIG, **config}
    for s in range(2):
        p = jax.tree.map(lambda a, s=s: a[s], params)
        x = ppo.greedy_decisions(full, p, scn)
        assert x.shape == (5, N) and x.dtype == jnp.bool_
        assert np.all(jax.vmap(env.action_space(env.default_params).contains)(
            x.astype(jnp.float32)))
    # The example's evaluation: every method's per-scenario cost, none below the certified
    # optimum (a bound on the same scenarios, no inference delay on either side).
    pytest.importorskip("pyscipopt")
    costs, extras = ppo.evaluate_methods(full, [p], n_scenarios=6)
    ref = np.asarray(costs[ppo.OPTIMUM])
    assert set(costs) >= {"PPO seed 0", "Greedy + KKT", "PMRL (shipped)", "All local", ppo.OPTIMUM}
    for name, v in costs.items():
        assert np.asarray(v).shape == (6,)
        assert np.all(np.asarray(v) >= ref * (1 - 1e-5)), name
    assert all(np.all(np.asarray(v) >= np.asarray(costs[k.split(",")[0]]) * (1 - 1e-5))
               for k, v in extras.items())            # charging inference never lowers a cost
