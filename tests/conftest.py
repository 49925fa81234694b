"""Shared test fixtures: the tiny models the tests of several modules use."""

import json

import jax
import pytest

from dynmec_jax import allocator as allocator_lib
from dynmec_jax.nets import features, moe


def make_tiny_allocator(sp, n_experts=3, n_layers=2, hidden=8, seed=0):
    """An untrained MoE allocator at tiny sizes (the tests only need a fixed map)."""
    model = moe.MoEAllocator(n_experts=n_experts, n_layers=n_layers, hidden=hidden)
    params = allocator_lib.init_params(jax.random.PRNGKey(seed), model)
    rec = {"model": {"kind": "moe", "n_experts": n_experts, "n_layers": n_layers,
                     "hidden": hidden, "static_hidden": 16, "negative_slope": 0.01}}
    return allocator_lib.Allocator(params=params, scales=features.FeatureScales.from_params(sp),
                                   sys_params=sp, model=model, record=json.dumps(rec))


@pytest.fixture(scope="session")
def tiny_allocator():
    """:func:`make_tiny_allocator`, the factory (call it with a ``SystemParams``)."""
    return make_tiny_allocator
