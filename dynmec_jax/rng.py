"""Random draws of ``jax.random`` drawn flat and reshaped: the same numbers, less compile.

XLA's CPU compiler takes up to about 6x longer to compile the Threefry
random bits of a multi-dimensional shape than of the same number of bits in
one dimension (measured with jax 0.10.2 on 2 cores: ``jit(vmap(uniform))``
over 16 keys, shape ``(60, 10)`` 0.94 s, ``(600,)`` 0.15 s; ``(256, 10)``
0.96 s, ``(2560,)`` 0.16 s).  JAX's Threefry counts the bits in row-major
order whatever the shape (``jax_threefry_partitionable`` on or off), so a
draw of ``(prod(shape),)`` reshaped to ``shape`` is the draw of ``shape``
bit for bit; the samplers here do that and return exactly what the
``jax.random`` function of the same name returns (``tests/test_rng.py``).
In the quick preset's N = 10 sweep family (4 programs) the Threefry kernels
were 40% of the LLVM compile time; drawn flat, the family compiles in about
0.9x the time (``docs/performance.md``).

Units are those of the arguments; shapes are static tuples.  Keys may be
typed (``jax.random.key``) or raw.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array


def _flat(draw, shape):
    """``draw(shape)`` for at most one dimension, else ``draw((prod(shape),))`` reshaped."""
    shape = tuple(shape)
    if len(shape) <= 1:
        return draw(shape)
    return draw((math.prod(shape),)).reshape(shape)


def _bound(value, shape, drawn):
    """``value`` (broadcastable to ``shape``) as a draw of shape ``drawn`` takes it: a
    scalar as it is, an array broadcast to ``shape`` and flattened when drawn flat."""
    if jnp.ndim(value) == 0 or drawn == shape:
        return value
    return jnp.broadcast_to(value, shape).reshape(drawn)


def uniform(key: Array, shape, dtype=jnp.float32, minval=0.0, maxval=1.0) -> Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat (same values).

    ``minval``/``maxval``: scalars or arrays broadcastable to ``shape`` (units
    of the draw).
    """
    shape = tuple(shape)
    return _flat(lambda s: jax.random.uniform(key, s, dtype, _bound(minval, shape, s),
                                              _bound(maxval, shape, s)), shape)


def normal(key: Array, shape, dtype=jnp.float32) -> Array:
    """``jax.random.normal(key, shape, dtype)`` (standard normal), drawn flat (same values)."""
    return _flat(lambda s: jax.random.normal(key, s, dtype), shape)


def bernoulli(key: Array, p, shape) -> Array:
    """``jax.random.bernoulli(key, p, shape)`` for a scalar probability ``p`` in [0, 1],
    drawn flat (same values); bool ``shape``."""
    if jnp.ndim(p) != 0:
        raise ValueError(f"bernoulli: p must be a scalar, got shape {jnp.shape(p)}")
    return _flat(lambda s: jax.random.bernoulli(key, p, s), shape)


def randint(key: Array, shape, minval, maxval, dtype=jnp.int32) -> Array:
    """``jax.random.randint(key, shape, minval, maxval, dtype)`` (integers in
    ``[minval, maxval)``), drawn flat (same values)."""
    shape = tuple(shape)
    return _flat(lambda s: jax.random.randint(key, s, _bound(minval, shape, s),
                                              _bound(maxval, shape, s), dtype), shape)


def categorical(key: Array, logits: Array, shape=None) -> Array:
    """``jax.random.categorical(key, logits, axis=-1, shape=shape)``, drawn flat (same values).

    The Gumbel-max trick as ``jax.random.categorical`` computes it (its
    default mode): the index of the largest ``logits + g`` over the last axis,
    ``g`` standard Gumbel noise of shape ``shape + logits.shape[-1:]``
    (``shape`` defaults to ``logits.shape[:-1]`` and must end with it).
    Returns int indices of shape ``shape``.
    """
    logits = jnp.asarray(logits)
    batch = logits.shape[:-1]
    shape = batch if shape is None else tuple(shape)
    if shape[len(shape) - len(batch):] != batch:
        raise ValueError(f"categorical: shape {shape} must end with the logits' batch shape "
                         f"{batch}")
    g = _flat(lambda s: jax.random.gumbel(key, s, logits.dtype), shape + logits.shape[-1:])
    return jnp.argmax(g + logits, axis=-1)
