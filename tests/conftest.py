"""Shared test fixtures: the tiny models the tests of several modules use.

The session shares one XLA persistent compilation cache (a temporary
directory, removed at the end) between the xdist workers and the launcher
subprocesses the tests start: many of them compile the same smoke-size
programs, and a program compiled once is then loaded, not recompiled.
The cache is keyed by the program, the flags and the jax version, so it
changes no result.
"""

import json
import os
import shutil
import tempfile

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


_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """The controller (or a run without xdist) creates the cache before workers start;
    workers and subprocesses inherit it through the environment (read by jax at import)."""
    if hasattr(config, "workerinput") or os.environ.get(_CACHE_ENV):
        return
    path = tempfile.mkdtemp(prefix="dynmec_jax_xla_cache_")
    os.environ[_CACHE_ENV] = path
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    config._dynmec_cache_dir = path
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_unconfigure(config):
    path = getattr(config, "_dynmec_cache_dir", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
