"""Shared test helper: an untrained MoE allocator at tiny sizes."""

import json

import jax

from dynmec_jax import allocation, moe


def tiny_allocator(sp, n_experts=3, n_layers=2, hidden=8, seed=0):
    """An untrained MoE allocator at tiny sizes (the tests only need a fixed map)."""
    model = moe.MoEAllocator(n_experts=n_experts, n_layers=n_layers, hidden=hidden)
    variables = allocation.init_variables(jax.random.PRNGKey(seed), model)
    rec = {"model": {"kind": "moe", "n_experts": n_experts, "n_layers": n_layers,
                     "hidden": hidden, "static_hidden": 16, "negative_slope": 0.01}}
    return allocation.Allocator(variables=variables, scales=moe.FeatureScales.from_params(sp),
                                sys_params=sp, model=model, record=json.dumps(rec))
