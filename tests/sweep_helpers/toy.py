"""A toy but real sweep workload for the sweep tests: SGD on a tiny regression.

Each (point, seed) item draws a random linear-regression problem from its
seed, runs ``N_STEPS`` minibatch SGD steps in a ``lax.scan`` with the point's
learning rate and label noise, and reports the final loss, the weights and a
loss trace.  Items are independent, so the numbers must not depend on how the
items are batched, chunked or sharded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

N_STEPS = 300
N_DATA = 64
N_FEATURES = 4
BATCH = 8
TRACE_EVERY = 50

POINTS = [{"lr": lr, "noise": noise} for lr in (0.01, 0.03, 0.1) for noise in (0.0, 0.5)]
SEEDS = [0, 1, 2]
CONFIG = {"name": "toy_sgd", "n_steps": N_STEPS, "n_data": N_DATA,
          "n_features": N_FEATURES, "batch": BATCH}


def one_item(lr, noise, seed):
    """Runs SGD for one (point, seed); returns final loss, weights and a trace."""
    key = jax.random.key(seed)
    k_x, k_w, k_eps, k_steps = jax.random.split(key, 4)
    x = jax.random.normal(k_x, (N_DATA, N_FEATURES))
    w_true = jax.random.normal(k_w, (N_FEATURES,))
    y = x @ w_true + noise * jax.random.normal(k_eps, (N_DATA,))

    def loss_fn(w, xb, yb):
        return jnp.mean((xb @ w - yb) ** 2)

    def step(w, k):
        idx = jax.random.randint(k, (BATCH,), 0, N_DATA)
        g = jax.grad(loss_fn)(w, x[idx], y[idx])
        w = w - lr * g
        return w, loss_fn(w, x, y)

    w, losses = jax.lax.scan(step, jnp.zeros(N_FEATURES), jax.random.split(k_steps, N_STEPS))
    return {"loss": losses[-1], "w": w, "trace": losses[TRACE_EVERY - 1::TRACE_EVERY]}


def compute(point_batch, seed_batch):
    """The batched sweep function: vmaps :func:`one_item` over the batch."""
    return jax.vmap(one_item)(point_batch["lr"], point_batch["noise"], seed_batch)
