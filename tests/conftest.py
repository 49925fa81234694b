"""Shared test fixtures: the tiny models the tests of several modules use.

Compilation.  The tests run programs at tiny sizes, so XLA's compile time,
not the run time, is most of the suite's cost.  Three things keep it down;
none changes what a test computes or asserts:

* XLA:CPU compiles for speed of compiling, not of running
  (``TEST_XLA_FLAGS``) in the suite and in the launchers it starts, which
  inherit the environment: LLVM's backend optimisation off (measured: 0.6x
  the CPU time of the greedy and cost tests), and fusions emitted by the
  older elemental emitter instead of the newer fusion emitters (measured on
  top of that, idle 2-core machine: compiling the evaluation and PMRL
  programs of the quick preset 0.52x the CPU time; five test files with 84
  tests 0.70x the CPU and wall time).  The programs and their semantics are
  the same; only the machine code differs, which the tests' tolerances do
  not see.  (Neither flag suits a real run: level 0 makes training 3-6x
  slower to run, and at the default level the older emitter compiles
  slower: docs/performance.md.)  One difference is seen: with the older
  emitter at level 0, two programs of different shapes computing the same
  numbers (another chunk size, a batch split over devices, a ``lax.switch``
  around the same step) may round differently.  The tests of that bitwise
  sameness compile with XLA's default emitters (fixture
  ``default_emitters``), as every real run does.  Set
  ``DYNMEC_JAX_TEST_OPTIMIZED=1`` to test with the default compiler
  settings.
* One persistent compilation cache per session, shared by both xdist
  workers, the test drivers and the launchers (every program, however short
  its compile): the many tests that build the same program (the same HLO:
  a fixture's training step, the greedy and KKT programs at the same shapes,
  a rerun of a resumed run) compile it once.  A cached executable is the
  executable a fresh compile makes, so the numbers are the same bit for bit
  (what it saves: docs/measurements.md, "Test suite").
* Launchers run in a fresh process forked from a server that has already
  imported the library (fixture ``launch``, ``tests/forkserver.py``), not in a
  new interpreter that imports it again (about 4 s of CPU a run).
"""

import json
import os
import subprocess
import sys
import threading
import types

#: The flag of ``TEST_XLA_FLAGS`` under which programs of different shapes may round differently.
_OLD_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
#: XLA flags of the test session (module doc); set before JAX initialises a backend.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                  + _OLD_EMITTERS)
if not os.environ.get("DYNMEC_JAX_TEST_OPTIMIZED"):
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)

# The session's compilation cache (module doc): the launchers' (read by
# dynmec_jax.cli.enable_compilation_cache), not the user's.
_OWN_CACHE = None   # the directory made here (removed when the session ends), if any
if not os.environ.get("DYNMEC_JAX_CACHE_DIR"):
    import tempfile
    _OWN_CACHE = os.environ["DYNMEC_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="dynmec-test-cache-")

import jax  # noqa: E402

# ... and the test processes' (module doc), for every program.
jax.config.update("jax_compilation_cache_dir", os.environ["DYNMEC_JAX_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
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


def make_cell_pipeline(sp, text="default", seed=3, **spec):
    """A set-scheduler pipeline on :func:`make_tiny_allocator` at ``sp`` (N = 6, mixed N
    from 2), reading the cells of ``text``, with random (nonzero) scheduler output layers;
    ``spec``: more :class:`~dynmec_jax.pipeline.PipelineSpec` fields."""
    from dynmec_jax import pipeline
    from dynmec_jax.nets import policy as policy_net
    from dynmec_jax.nets import scheduler as scheduler_net
    alloc = make_tiny_allocator(sp)
    spec = pipeline.PipelineSpec(n_users=6, n_users_min=2, cell=text, **spec)
    m = pipeline.build_models(spec, alloc)
    s = scheduler_net.init_scheduler(jax.random.key(seed), m.scheduler, 6)
    s = jax.tree_util.tree_map_with_path(
        lambda p, a: jax.random.normal(jax.random.key(len(str(p))), a.shape)
        if "out" in str(p) and "kernel" in str(p) else a, s)
    p = policy_net.init_policy(jax.random.key(seed + 1), m.policy, len(m.cell))
    return pipeline.Pipeline(scheduler_params=s, policy_params=p, allocator=alloc, spec=spec)


@pytest.fixture(scope="session")
def cell_pipeline():
    """:func:`make_cell_pipeline`, the factory."""
    return make_cell_pipeline


@pytest.fixture(scope="session")
def default_emitters():
    """How a test compiles with XLA's default fusion emitters despite ``TEST_XLA_FLAGS``
    (module doc): ``compiler_options`` for its own ``jax.jit``, ``xla_flags`` for the
    ``XLA_FLAGS`` of a process it starts."""
    return types.SimpleNamespace(
        compiler_options={"xla_cpu_use_fusion_emitters": True},
        xla_flags=" ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                           if f != _OLD_EMITTERS))


def pytest_sessionfinish(session):
    """Removes the session's compilation cache (made by the process that made it)."""
    if _OWN_CACHE is not None:
        import shutil
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def _read_and_remove(path: str) -> str:
    """The text of a file the fork server wrote (closed at once), which is then removed."""
    with open(path) as f:
        text = f.read()
    os.unlink(path)
    return text


class _ForkServer:
    """Runs launchers as ``python`` would, through ``tests/forkserver.py`` (its doc).

    Call it like ``subprocess.run(cmd, cwd=..., env=..., timeout=...)`` with
    ``cmd = [sys.executable, "-m", module, ...]`` or ``[sys.executable, script, ...]``;
    returns a ``subprocess.CompletedProcess`` with text stdout and stderr.  A
    command it cannot serve the same way (another executable, or ``JAX_*``
    environment variables other than the server's, which JAX reads at import)
    runs as a plain subprocess.
    """

    def __init__(self):
        self._proc = None
        self._lock = threading.Lock()
        self._jax_env = self._jax_vars(os.environ)

    @staticmethod
    def _jax_vars(env):
        """The ``JAX_*`` variables of ``env``; ``JAX_PLATFORMS=cpu`` counts as unset on a
        machine whose only devices are CPUs (it then selects what the default does)."""
        out = {k: v for k, v in env.items() if k.startswith("JAX_")}
        if out.get("JAX_PLATFORMS") == "cpu" and jax.default_backend() == "cpu":
            del out["JAX_PLATFORMS"]
        return out

    def _server(self):
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, os.path.join(os.path.dirname(__file__), "forkserver.py")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
            assert json.loads(self._proc.stdout.readline()) == {"ready": True}
        return self._proc

    def __call__(self, cmd, *, cwd=None, env=None, timeout=600):
        cmd = [str(c) for c in cmd]
        env = dict(os.environ if env is None else env)
        if (cmd[0] != sys.executable or len(cmd) < 2
                or self._jax_vars(env) != self._jax_env):
            return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        req = {"argv": cmd[1:], "cwd": str(cwd or os.getcwd()), "env": env, "timeout": timeout}
        with self._lock:
            server = self._server()
            server.stdin.write(json.dumps(req) + "\n")
            server.stdin.flush()
            reply = json.loads(server.stdout.readline())
        out, err = (_read_and_remove(reply[k]) for k in ("stdout", "stderr"))
        return subprocess.CompletedProcess(cmd, reply["returncode"], out, err)

    def close(self):
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)


@pytest.fixture(scope="session")
def launch():
    """Runs a launcher command in a fresh process, forked from a server that has already
    imported the library (:class:`_ForkServer`): the ``subprocess.run`` of the tests,
    without paying the imports on every run."""
    server = _ForkServer()
    yield server
    server.close()


@pytest.fixture
def decide_cli(launch):
    """Runs ``launch/decide.py`` with the given flags from the checkout's root (a fresh
    process: :func:`launch`)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return lambda *args: launch([sys.executable, os.path.join(root, "launch", "decide.py"),
                                 *args], cwd=root, timeout=600)


@pytest.fixture(scope="session")
def tiny_allocator():
    """:func:`make_tiny_allocator`, the factory (call it with a ``SystemParams``)."""
    return make_tiny_allocator
