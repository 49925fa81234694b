"""dynmec_jax.rng: every flat draw equals the jax.random draw of the same shape, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import rng

SHAPES = [(), (7,), (4, 5), (2, 3, 7), (3, 1, 2, 5)]


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("partitionable", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_samplers_equal_jax_random(shape, partitionable):
    key = jax.random.key(11)
    lo = jnp.linspace(-2.0, 1.0, shape[-1]) if shape else -2.0
    with jax.threefry_partitionable(partitionable):
        _same(rng.uniform(key, shape), jax.random.uniform(key, shape))
        _same(rng.uniform(key, shape, minval=lo, maxval=3.5),
              jax.random.uniform(key, shape, minval=lo, maxval=3.5))
        _same(rng.normal(key, shape), jax.random.normal(key, shape))
        _same(rng.bernoulli(key, 0.3, shape), jax.random.bernoulli(key, 0.3, shape))
        _same(rng.randint(key, shape, 2, 9), jax.random.randint(key, shape, 2, 9))
        if shape:
            logits = jnp.log(jnp.arange(1.0, 1.0 + np.prod(shape)).reshape(shape))
            _same(rng.categorical(key, logits), jax.random.categorical(key, logits))
            pre = (6,) + shape[:-1]
            _same(rng.categorical(key, logits, shape=pre),
                  jax.random.categorical(key, logits, shape=pre))


def test_compiled_vmapped_and_raw_keys():
    """Inside jit and vmap (as the sweep programs draw), with raw uint32 keys too."""
    keys = jax.random.split(jax.random.key(5), 3)
    lo = jnp.arange(4.0)
    ours = jax.jit(jax.vmap(lambda k: rng.uniform(k, (2, 4), minval=lo, maxval=9.0)))(keys)
    ref = jax.jit(jax.vmap(lambda k: jax.random.uniform(k, (2, 4), minval=lo, maxval=9.0)))(keys)
    _same(ours, ref)
    raw = jax.random.PRNGKey(2)
    _same(jax.jit(lambda k: rng.normal(k, (3, 6)))(raw), jax.random.normal(raw, (3, 6)))
    masked = jnp.where(jnp.arange(5) < 3, 0.0, -jnp.inf)   # as sample_subnets draws
    _same(jax.jit(lambda k: rng.categorical(k, masked, shape=(40,)))(raw),
          jax.random.categorical(raw, masked, shape=(40,)))
    assert int(rng.categorical(raw, masked, shape=(40,)).max()) < 3


def test_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="scalar"):
        rng.bernoulli(key, jnp.full((2, 3), 0.5), (2, 3))
    with pytest.raises(ValueError, match="batch shape"):
        rng.categorical(key, jnp.zeros((3, 4)), shape=(5, 2))
