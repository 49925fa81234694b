r"""PPO on the offloading environments of :mod:`dynmec_jax.env`, in the style of purejaxrl.

    python examples/ppo_offloading.py --total_timesteps=1000000 --seeds=2 --out=results

(needs the ``rl`` extra: ``pip install -e '.[rl]'``).  ``make_train(config)``
returns a pure ``train(rng)`` (rollouts of vectorised environments with
``jax.vmap(env.step)``, GAE, the clipped PPO objective, minibatch epochs, all
inside one ``lax.scan``), so ``jax.jit(jax.vmap(train))`` trains several
seeds in one compiled program (``--vmap_seeds``).  By default the seeds run
one after another through one ``jax.jit(train)``: on XLA:CPU (JAX 0.10.2,
2 cores) the vmapped program hangs at 200,000 timesteps and more (every
thread waiting, no CPU used; 20,000 run), while one seed at a time runs.
The default is :class:`OneShotOffloading` at N = 10 with the exact
(energy-aware) allocation of the offloaded set; ``--env=sequential`` trains
on :class:`SequentialOffloading` instead.

The agent.  An actor-critic of Flax MLPs applied to every user (weights
shared across users, so the policy is permutation-equivariant) with a
mean-pooled context of all users: per-user logits l_i; the one-shot policy
is a Bernoulli per user (x_i ~ Bernoulli(sigmoid(l_i)), log-probabilities
summed over users), the sequential one a Bernoulli on the logit of the
user the step decides (``next`` channel).  The critic pools the users and
outputs the value.  Rewards enter the losses multiplied by ``REWARD_SCALE``
(a linear rescaling: the objective is unchanged).

Evaluation.  After training, the deterministic policy (x_i = [l_i > 0])
decides on held-out scenarios (a fixed key, not used in training), and
every method's decision is scored by ``evaluation.score`` WITHOUT any
inference delay (the environments charge none; a deployed method's own
compute, Eq. 9, is left out for every method alike): PPO, random
offloading (p = 0.5), all-local, greedy + KKT (``methods.GREEDY``, its
decision through ``evaluation.without_inference``), the shipped PMRL
pipeline (likewise; with its own learned allocation, and again with the
exact allocation of its offloading set), and the certified optimum
(``baselines.exact.exact_optimum``, any N; needs the ``exact`` extra).
Table: mean sum_i C_i (Eq. 24-25) over the held-out scenarios with a 95%
Student-t CI (``stats.mean_ci``), and the paired gap to the optimum
(``stats.relative_gap``).  ``--out`` gets ``ppo_offloading.json`` and
``ppo_offloading.md``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState
from gymnax.wrappers.purerl import LogWrapper

from dynmec_jax import evaluation, methods, pipeline, stats, system
from dynmec_jax.baselines import exact
from dynmec_jax.env import EnvState, OneShotOffloading, SequentialOffloading

#: Defaults of :func:`make_train` (purejaxrl's names).  TOTAL_TIMESTEPS counts
#: environment steps: scenarios for the one-shot env, user decisions for the
#: sequential one.
DEFAULT_CONFIG = {
    "ENV": "oneshot",            # "oneshot" | "sequential"
    "N_USERS": 10,
    "ALLOCATION": "optimal",     # the env's allocation: "optimal" | "learned"
    "LR": 1e-3,
    "NUM_ENVS": 64,
    "NUM_STEPS": 8,
    "TOTAL_TIMESTEPS": 1_000_000,
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 1.0,                # finite episodes, terminal reward: no discount
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.0,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "HIDDEN": 64,
    "ANNEAL_LR": True,
    "REWARD_SCALE": 0.01,        # rewards (sum C_i ~ 1e2 at N = 10) times this in the losses
}


def make_env(config):
    """The environment of ``config["ENV"]`` at N = ``config["N_USERS"]``."""
    cls = {"oneshot": OneShotOffloading, "sequential": SequentialOffloading}[config["ENV"]]
    return cls(config["N_USERS"], allocation=config["ALLOCATION"])


SQRT2 = float(np.sqrt(2.0))
#: Row name of the certified optimum (the reference of every gap).
OPTIMUM = "Optimum (certified)"
#: Key of the held-out evaluation scenarios (training draws from other keys).
EVAL_SEED = 20250


class ActorCritic(nn.Module):
    """Per-user actor logits ``(..., N)`` (or the next user's ``(...)``) and a value ``(...)``.

    ``obs``: ``(..., N, F)`` (the env's observation).  Both towers apply
    the same MLP to every user; the actor adds a mean-pooled context of all
    users to each user's embedding, the critic pools and reads out.
    """

    hidden: int = 64
    sequential: bool = False

    @nn.compact
    def __call__(self, obs):
        def dense(n, scale=SQRT2):
            return nn.Dense(n, kernel_init=orthogonal(scale), bias_init=constant(0.0))

        h = nn.tanh(dense(self.hidden)(obs))
        h = nn.tanh(dense(self.hidden)(h))
        ctx = nn.tanh(dense(self.hidden)(jnp.mean(h, -2, keepdims=True)))
        z = jnp.concatenate([h, jnp.broadcast_to(ctx, h.shape)], -1)
        z = nn.tanh(dense(self.hidden)(z))
        logits = dense(1, 0.01)(z)[..., 0]                       # (..., N)
        if self.sequential:                                       # the user this step decides
            logits = jnp.sum(logits * obs[..., -1], -1)
        v = nn.tanh(dense(self.hidden)(obs))
        v = nn.tanh(dense(self.hidden)(v))
        v = nn.tanh(dense(self.hidden)(jnp.mean(v, -2)))
        value = dense(1, 1.0)(v)[..., 0]
        return logits, value


def bernoulli_log_prob(logits, action, event_dims: int):
    """log P(action) of independent Bernoullis with ``logits``, summed over the last
    ``event_dims`` axes (1 for the one-shot env's N users, 0 for one decision)."""
    a = action.astype(logits.dtype)
    lp = a * jax.nn.log_sigmoid(logits) + (1.0 - a) * jax.nn.log_sigmoid(-logits)
    return jnp.sum(lp, axis=tuple(range(-event_dims, 0))) if event_dims else lp


def bernoulli_entropy(logits, event_dims: int):
    """Entropy of independent Bernoullis [nats], summed like :func:`bernoulli_log_prob`."""
    p = jax.nn.sigmoid(logits)
    ent = -(p * jax.nn.log_sigmoid(logits) + (1.0 - p) * jax.nn.log_sigmoid(-logits))
    return jnp.sum(ent, axis=tuple(range(-event_dims, 0))) if event_dims else ent


class Transition(NamedTuple):
    done: jnp.ndarray
    action: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    log_prob: jnp.ndarray
    obs: jnp.ndarray
    info: Any


def make_train(config):
    """A pure ``train(rng) -> {"runner_state", "metrics"}`` for ``config``
    (:data:`DEFAULT_CONFIG` keys; missing ones take the defaults).

    ``metrics``: per update, ``episode_return`` (mean return of the episodes
    that ended in the rollout: -sum C_i, or -sum C_i / N for the sequential
    env), ``value_loss``, ``actor_loss``, ``entropy`` and ``offload_fraction``.
    """
    config = {**DEFAULT_CONFIG, **config}
    config["NUM_UPDATES"] = int(config["TOTAL_TIMESTEPS"]) // config["NUM_STEPS"] // config[
        "NUM_ENVS"]
    config["MINIBATCH_SIZE"] = config["NUM_ENVS"] * config["NUM_STEPS"] // config[
        "NUM_MINIBATCHES"]
    if config["NUM_UPDATES"] < 1:
        raise ValueError("TOTAL_TIMESTEPS must be at least NUM_ENVS * NUM_STEPS")
    base_env = make_env(config)
    env_params = base_env.default_params
    env = LogWrapper(base_env)
    sequential = config["ENV"] == "sequential"
    event_dims = 0 if sequential else 1

    def linear_schedule(count):
        frac = 1.0 - (count // (config["NUM_MINIBATCHES"] * config["UPDATE_EPOCHS"])) / config[
            "NUM_UPDATES"]
        return config["LR"] * frac

    def train(rng):
        network = ActorCritic(config["HIDDEN"], sequential)
        rng, _rng = jax.random.split(rng)
        init_x = jnp.zeros(env.observation_space(env_params).shape)
        network_params = network.init(_rng, init_x)
        lr = linear_schedule if config["ANNEAL_LR"] else config["LR"]
        tx = optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]),
                         optax.adam(learning_rate=lr, eps=1e-5))
        train_state = TrainState.create(apply_fn=network.apply, params=network_params, tx=tx)

        rng, _rng = jax.random.split(rng)
        reset_rng = jax.random.split(_rng, config["NUM_ENVS"])
        obsv, env_state = jax.vmap(env.reset, in_axes=(0, None))(reset_rng, env_params)

        def _update_step(runner_state, unused):
            def _env_step(runner_state, unused):
                train_state, env_state, last_obs, rng = runner_state
                rng, _rng = jax.random.split(rng)
                logits, value = network.apply(train_state.params, last_obs)
                action = jax.random.bernoulli(_rng, jax.nn.sigmoid(logits)).astype(jnp.int32)
                log_prob = bernoulli_log_prob(logits, action, event_dims)
                rng, _rng = jax.random.split(rng)
                rng_step = jax.random.split(_rng, config["NUM_ENVS"])
                obsv, env_state, reward, terminated, truncated, info = jax.vmap(
                    env.step, in_axes=(0, 0, 0, None))(rng_step, env_state, action, env_params)
                done = jnp.logical_or(terminated, truncated)
                info = {"returned_episode_returns": info["returned_episode_returns"],
                        "returned_episode": info["returned_episode"]}
                transition = Transition(done, action, value,
                                        reward * config["REWARD_SCALE"], log_prob, last_obs,
                                        info)
                return (train_state, env_state, obsv, rng), transition

            runner_state, traj_batch = jax.lax.scan(_env_step, runner_state, None,
                                                    config["NUM_STEPS"])

            train_state, env_state, last_obs, rng = runner_state
            _, last_val = network.apply(train_state.params, last_obs)

            def _calculate_gae(traj_batch, last_val):
                def _get_advantages(gae_and_next_value, transition):
                    gae, next_value = gae_and_next_value
                    done, value, reward = transition.done, transition.value, transition.reward
                    delta = reward + config["GAMMA"] * next_value * (1 - done) - value
                    gae = delta + config["GAMMA"] * config["GAE_LAMBDA"] * (1 - done) * gae
                    return (gae, value), gae

                _, advantages = jax.lax.scan(_get_advantages,
                                             (jnp.zeros_like(last_val), last_val),
                                             traj_batch, reverse=True)
                return advantages, advantages + traj_batch.value

            advantages, targets = _calculate_gae(traj_batch, last_val)

            def _update_epoch(update_state, unused):
                def _update_minbatch(train_state, batch_info):
                    traj_batch, advantages, targets = batch_info

                    def _loss_fn(params, traj_batch, gae, targets):
                        logits, value = network.apply(params, traj_batch.obs)
                        log_prob = bernoulli_log_prob(logits, traj_batch.action, event_dims)
                        value_pred_clipped = traj_batch.value + (
                            value - traj_batch.value).clip(-config["CLIP_EPS"],
                                                           config["CLIP_EPS"])
                        value_losses = jnp.square(value - targets)
                        value_losses_clipped = jnp.square(value_pred_clipped - targets)
                        value_loss = 0.5 * jnp.maximum(value_losses,
                                                       value_losses_clipped).mean()
                        ratio = jnp.exp(log_prob - traj_batch.log_prob)
                        gae = (gae - gae.mean()) / (gae.std() + 1e-8)
                        loss_actor1 = ratio * gae
                        loss_actor2 = jnp.clip(ratio, 1.0 - config["CLIP_EPS"],
                                               1.0 + config["CLIP_EPS"]) * gae
                        loss_actor = -jnp.minimum(loss_actor1, loss_actor2).mean()
                        entropy = bernoulli_entropy(logits, event_dims).mean()
                        total_loss = (loss_actor + config["VF_COEF"] * value_loss
                                      - config["ENT_COEF"] * entropy)
                        return total_loss, (value_loss, loss_actor, entropy)

                    grad_fn = jax.value_and_grad(_loss_fn, has_aux=True)
                    total_loss, grads = grad_fn(train_state.params, traj_batch, advantages,
                                                targets)
                    train_state = train_state.apply_gradients(grads=grads)
                    return train_state, total_loss

                train_state, traj_batch, advantages, targets, rng = update_state
                rng, _rng = jax.random.split(rng)
                batch_size = config["MINIBATCH_SIZE"] * config["NUM_MINIBATCHES"]
                assert batch_size == config["NUM_STEPS"] * config["NUM_ENVS"], \
                    "batch size must be equal to number of steps * number of envs"
                permutation = jax.random.permutation(_rng, batch_size)
                batch = (traj_batch, advantages, targets)
                batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), batch)
                shuffled = jax.tree.map(lambda x: jnp.take(x, permutation, axis=0), batch)
                minibatches = jax.tree.map(
                    lambda x: jnp.reshape(x, [config["NUM_MINIBATCHES"], -1] + list(x.shape[1:])),
                    shuffled)
                train_state, total_loss = jax.lax.scan(_update_minbatch, train_state,
                                                       minibatches)
                return (train_state, traj_batch, advantages, targets, rng), total_loss

            update_state = (train_state, traj_batch, advantages, targets, rng)
            update_state, loss_info = jax.lax.scan(_update_epoch, update_state, None,
                                                   config["UPDATE_EPOCHS"])
            train_state, rng = update_state[0], update_state[-1]
            ended = traj_batch.info["returned_episode"]
            n_ended = jnp.sum(ended)
            _, (value_loss, actor_loss, entropy) = loss_info
            metric = {
                "episode_return": jnp.sum(jnp.where(
                    ended, traj_batch.info["returned_episode_returns"], 0.0))
                / jnp.maximum(n_ended, 1),
                "value_loss": value_loss.mean(), "actor_loss": actor_loss.mean(),
                "entropy": entropy.mean(),
                "offload_fraction": traj_batch.action.astype(jnp.float32).mean(),
            }
            return (train_state, env_state, last_obs, rng), metric

        rng, _rng = jax.random.split(rng)
        runner_state = (train_state, env_state, obsv, _rng)
        runner_state, metric = jax.lax.scan(_update_step, runner_state, None,
                                            config["NUM_UPDATES"])
        return {"runner_state": runner_state, "metrics": metric}

    return train


def greedy_decisions(config, network_params, scn: system.Scenario):
    """The deterministic policy's offloading ``(B, N)`` (x_i = [logit_i > 0]) on scenarios
    ``scn`` (fields ``(B, N)``), through the env's own observations and steps."""
    env = make_env(config)
    params = env.default_params
    network = ActorCritic(config["HIDDEN"], config["ENV"] == "sequential")
    zeros = jnp.zeros(scn.shape, bool)
    state = jax.vmap(lambda s, x: _initial_state(s, x))(scn, zeros)

    def act(state):
        logits, _ = network.apply(network_params, jax.vmap(env.get_obs, (0, None))(state,
                                                                                    params))
        return (logits > 0).astype(jnp.int32)

    key = jax.random.PRNGKey(0)                           # step_env ignores its key
    step = jax.vmap(env.step_env, in_axes=(None, 0, 0, None))
    for _ in range(env.default_params.max_steps_in_episode):
        _, state, _, _, _ = step(key, state, act(state), params)
    return state.offload


def _initial_state(scn, offload):
    return EnvState(scenario=scn, offload=offload, time=jnp.zeros((), jnp.int32))


def evaluate_methods(config, seed_params, n_scenarios: int, seed: int = EVAL_SEED):
    """Per-scenario sum_i C_i (no inference delay) of every method on ``n_scenarios``
    held-out scenarios: ``({name: (n_scenarios,) array}, extras)``."""
    n = config["N_USERS"]
    key = jax.random.PRNGKey(seed)
    sp = system.SystemParams(n_users=n)
    scn = system.sample_scenarios(key, sp, n_scenarios)
    env = make_env(config)

    @jax.jit
    def env_cost(x):
        return jnp.sum(env.score(scn, x, env.default_params).cost, -1)

    def no_inference(method, inputs):
        res = jax.jit(lambda s: method.run(inputs, s, sp))(scn)
        free = evaluation.scenario_metrics(scn, evaluation.without_inference(res), sp).cost
        charged = evaluation.scenario_metrics(scn, res, sp).cost
        return res, np.asarray(free), np.asarray(charged)

    out, extras = {}, {}
    decide = jax.jit(lambda p: greedy_decisions(config, p, scn))
    for s, p in enumerate(seed_params):
        out[f"PPO seed {s}"] = np.asarray(env_cost(decide(p)))
    out["Random (p = 0.5)"] = np.asarray(env_cost(
        jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, scn.shape)))
    out["All local"] = np.asarray(env_cost(jnp.zeros(scn.shape, bool)))
    inputs = methods.Inputs()
    _, out["Greedy + KKT"], extras["Greedy + KKT, own inference delay charged"] = no_inference(
        methods.GREEDY, inputs)
    pipe = pipeline.load_pipeline()
    res, out["PMRL (shipped)"], extras["PMRL (shipped), own inference delay charged"] = (
        no_inference(methods.PMRL, methods.Inputs(pmrl=pipe)))
    out["PMRL offloading, env allocation"] = np.asarray(env_cost(res.decision.offload))
    try:     # the certified optimum (baselines/exact.py, extra "exact"): any N
        out[OPTIMUM] = exact.exact_optimum(jax.tree.map(np.asarray, scn), sp).cost
    except ImportError as e:
        print(f"no optimum row: {e}")
    return out, extras


def run(args) -> dict:
    config = {**DEFAULT_CONFIG, "ENV": args.env, "N_USERS": args.n_users,
              "ALLOCATION": args.allocation, "TOTAL_TIMESTEPS": args.total_timesteps,
              "NUM_ENVS": args.num_envs, "NUM_STEPS": args.num_steps, "LR": args.lr}
    t0 = time.time()
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    if args.vmap_seeds:
        out = jax.block_until_ready(jax.jit(jax.vmap(make_train(config)))(keys))
    else:     # one compiled program, called per seed (module doc: the vmap hang)
        train = jax.jit(make_train(config))
        outs = [jax.block_until_ready(train(k)) for k in keys]
        out = jax.tree.map(lambda *a: jnp.stack(a), *outs)
    train_s = time.time() - t0
    params = out["runner_state"][0].params
    seed_params = [jax.tree.map(lambda a, s=s: a[s], params) for s in range(args.seeds)]
    t1 = time.time()
    costs, extras = evaluate_methods(config, seed_params, args.eval_scenarios)
    eval_s = time.time() - t1

    ref = costs.get(OPTIMUM)
    ppo_names = [k for k in costs if k.startswith("PPO seed")]
    rows = []
    seed_means = [float(np.mean(costs[k])) for k in ppo_names]
    pooled = stats.mean_ci(seed_means)
    rows.append({"method": f"PPO (mean over {len(ppo_names)} seeds; CI over seeds)",
                 **pooled,
                 "gap_to_optimum": (None if ref is None else
                                    stats.relative_gap(np.mean([costs[k] for k in ppo_names],
                                                               0), ref))})
    for name, v in costs.items():
        rows.append({"method": name, **stats.mean_ci(v),
                     "gap_to_optimum": None if ref is None else stats.relative_gap(v, ref)})
    m = out["metrics"]
    curve_idx = np.unique(np.linspace(0, m["episode_return"].shape[1] - 1, 50).astype(int))
    result = {
        "command": "python examples/ppo_offloading.py " + " ".join(
            shlex.quote(a) for a in sys.argv[1:]),
        "config": {**config, "SEEDS": args.seeds, "SEED": args.seed, "VMAP_SEEDS": args.vmap_seeds,
                   "EVAL_SCENARIOS": args.eval_scenarios},
        "what": ("mean sum_i C_i (Eq. 24-25, no inference delay for any method) over held-out "
                 "scenarios, 95% Student-t CI over scenarios (PPO pooled row: over seeds); "
                 "gap_to_optimum: paired relative gap to the certified optimum"),
        "rows": rows,
        "with_own_inference_delay": {k: stats.mean_ci(v) for k, v in extras.items()},
        "training_curve": {"update": curve_idx.tolist(),
                           "timesteps": ((curve_idx + 1) * config["NUM_ENVS"]
                                         * config["NUM_STEPS"]).tolist(),
                           **{k: np.asarray(v)[:, curve_idx].tolist() for k, v in m.items()}},
        "final_train_episode_return": np.asarray(m["episode_return"][:, -1]).tolist(),
        "wall_time_s": {"train": train_s, "eval": eval_s},
        "machine": {"backend": jax.default_backend(), "devices": len(jax.devices())},
        "versions": {"jax": jax.__version__},
    }
    if args.out:
        write(result, pathlib.Path(args.out))
    print(markdown(result))
    return result


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [f"# PPO on {c['ENV']} offloading, N = {c['N_USERS']}", "",
             f"Made by `{result['command']}`", "",
             f"Training {result['wall_time_s']['train']:.0f} s (compile included, "
             f"{c['SEEDS']} seeds " + ("in one `jit(vmap(train))`" if c.get("VMAP_SEEDS") else
                                    "one after another through one `jit(train)`") + "), evaluation "
             f"{result['wall_time_s']['eval']:.0f} s, on {result['machine']['backend']} "
             f"(JAX {result['versions']['jax']}).", "",
             result["what"] + ".", "",
             "| method | mean sum C_i | 95% CI | n | gap to optimum |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        g = r["gap_to_optimum"]
        gap = "" if g is None else f"{100 * g['mean']:+.2f}% +- {100 * g['ci']:.2f}%"
        lines.append(f"| {r['method']} | {r['mean']:.2f} | +- {r['ci']:.2f} | {r['n']} | {gap} |")
    lines += ["", "For reference, with each deployed method's own inference delay charged "
              "(Eq. 9; not comparable with the rows above):", ""]
    for k, v in result["with_own_inference_delay"].items():
        lines.append(f"* {k}: {v['mean']:.2f} +- {v['ci']:.2f}")
    lines += ["", "Config:", "", "```json", json.dumps(c, indent=1), "```", ""]
    return "\n".join(lines)


def write(result: dict, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ppo_offloading.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "ppo_offloading.md").write_text(markdown(result))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", choices=("oneshot", "sequential"), default="oneshot")
    p.add_argument("--n_users", type=int, default=DEFAULT_CONFIG["N_USERS"])
    p.add_argument("--allocation", choices=("optimal", "learned"), default="optimal")
    p.add_argument("--total_timesteps", type=int, default=DEFAULT_CONFIG["TOTAL_TIMESTEPS"])
    p.add_argument("--num_envs", type=int, default=DEFAULT_CONFIG["NUM_ENVS"])
    p.add_argument("--num_steps", type=int, default=DEFAULT_CONFIG["NUM_STEPS"])
    p.add_argument("--lr", type=float, default=DEFAULT_CONFIG["LR"])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--vmap_seeds", action="store_true",
                   help="train the seeds in one jit(vmap(train)) (hangs on XLA:CPU at large "
                        "budgets, module doc)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_scenarios", type=int, default=1000)
    p.add_argument("--out", default=None, help="directory for ppo_offloading.{json,md}")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
