"""Shared test fixtures: the tiny models the tests of several modules use.

Compilation.  The tests run programs at tiny sizes, so XLA's compile time,
not the run time, is most of the suite's cost; the suite (and the launchers
it starts in subprocesses, which inherit the environment) therefore compiles
with LLVM's backend optimisation off (``TEST_XLA_FLAGS``, measured: 0.6x the
CPU time of the greedy and cost tests).  The programs and their semantics
are the same; only machine-code optimisation differs, which the tests'
tolerances do not see.  Set ``DYNMEC_JAX_TEST_OPTIMIZED=1`` to test with the
default compiler settings.
"""

import json
import os

#: XLA flags of the test session (module doc); set before JAX initialises a backend.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if not os.environ.get("DYNMEC_JAX_TEST_OPTIMIZED"):
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)

# The launchers started by the tests keep their compiled programs in a cache of the
# session, not in the user's (dynmec_jax.cli.enable_compilation_cache).
if not os.environ.get("DYNMEC_JAX_CACHE_DIR"):
    import tempfile
    os.environ["DYNMEC_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="dynmec-test-cache-")

import jax  # noqa: E402
import pytest  # noqa: E402

from dynmec_jax import allocator as allocator_lib  # noqa: E402
from dynmec_jax.nets import features, moe  # noqa: E402


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
