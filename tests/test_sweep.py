"""Tests of dynmec_jax.sweep: result store, resumable sharded sweeps, processes.

The toy workload (tests/sweep_helpers/toy.py) is a real jitted, vmapped JAX
program: 300 minibatch-SGD steps on a tiny regression per (point, seed).

Equality of numbers across runs is checked BITWISE (the JSON records hold the
float32 results exactly).  That is the property the runner is built for: every
item of a vmapped program runs the same per-item operations whatever the
batch size, chunk, padding or device it lands on, and XLA's CPU code for this
program does not reorder per-item reductions with the per-device batch size.
Should a future XLA break that for some program, the right fallback is
``allclose(rtol=1e-6)``, not a looser tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import multihost, sweep
from dynmec_jax import store as store_lib

HELPERS = Path(__file__).parent / "sweep_helpers"
DRIVER = HELPERS / "sweep_driver.py"


def _load_toy():
    """Imports tests/sweep_helpers/toy.py without touching sys.path."""
    spec = importlib.util.spec_from_file_location("sweep_toy", HELPERS / "toy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toy = _load_toy()

# A smaller sweep for the in-process tests: 2 points x 2 seeds.
POINTS = toy.POINTS[:2]
SEEDS = [3, 7]


def _results(records):
    """The numbers of a list of records, keyed by (point_key, seed)."""
    return {(r["point_key"], r["seed"]): r["result"] for r in records}


class Spy:
    """toy.compute plus a record of every computed (lr, noise, seed) in ``seen``.

    ``compute`` is built once, so JAX's jit cache serves every sweep that uses
    the same spy (a new function object would recompile).  It is compiled
    here with ``compiler_options`` (a staged compute, which the runner does
    not wrap in its own ``jit``): those of conftest's ``default_emitters``,
    as real runs compile, since the tests compare chunk sizes bitwise.
    """

    def __init__(self, compiler_options=None):
        """Creates an empty record and the wrapped compute function."""
        self.seen: set = set()

        def record(lr, noise, seed):
            self.seen.update(zip(np.asarray(lr).tolist(), np.asarray(noise).tolist(),
                                 np.asarray(seed).tolist(), strict=True))

        def compute(point_batch, seed_batch):
            jax.debug.callback(record, point_batch["lr"], point_batch["noise"], seed_batch)
            return toy.compute(point_batch, seed_batch)

        self.compute = jax.jit(compute, compiler_options=compiler_options)
        self.compute.staged = True


@pytest.fixture(scope="module")
def spy(default_emitters):
    """One Spy for the module; each test clears ``spy.seen`` itself."""
    return Spy(default_emitters.compiler_options)


def _f32(x):
    """x rounded to float32, as the sweep feeds swept values to JAX."""
    return float(np.float32(x))


# ----------------------------------------------------------------------------
# Store.
# ----------------------------------------------------------------------------


def test_point_key_is_stable_and_safe():
    assert store_lib.point_key({"size_avg": 2000.0}) == "size_avg=2000"
    assert store_lib.point_key({"width": 3, "depth": 2}) == "depth=2,width=3"
    assert store_lib.point_key({"lr": 0.1, "noise": 1e-20}) == "lr=0.1,noise=1e-20"
    assert store_lib.point_key({"flag": True}) == "flag=true"
    assert store_lib.point_key({}) == "base"
    long = store_lib.point_key({f"name_{i}": 1.0 / 3.0 for i in range(20)})
    assert len(long) <= 200 and "/" not in long
    with pytest.raises(ValueError, match="identifiers"):
        store_lib.point_key({"a/b": 1.0})
    with pytest.raises(ValueError, match="real scalar"):
        store_lib.point_key({"a": "text"})


def test_atomic_write_read_round_trip(tmp_path):
    store = store_lib.ResultStore(tmp_path / "store")
    point = {"size_avg": 2000.0}
    result = {"delay": np.float32(0.125), "curve": np.arange(3, dtype=np.float32) / 3,
              "count": np.int32(4)}
    written = store.write("fig05", point, 2, result, config={"n_users": 30, "t": (1, 2)},
                          wall_time_s=1.5)
    path = tmp_path / "store" / "fig05" / "size_avg=2000" / "seed_2.json"
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["seed_2.json"]  # no temp left
    assert store.done("fig05", point, 2) and not store.done("fig05", point, 3)
    read = store.read("fig05", point, 2)
    assert read == written
    assert read["config"] == {"n_users": 30, "t": [1, 2]}
    assert read["seed"] == 2 and read["wall_time_s"] == 1.5
    assert set(read["versions"]) == {"python", "jax", "jaxlib", "flax", "optax", "numpy",
                                     "dynmec_jax"}
    assert read["timestamp_utc"].endswith("+00:00")
    arrays = store_lib.record_arrays(read)
    for name, value in result.items():
        np.testing.assert_array_equal(arrays[name], value)
        assert arrays[name].dtype == np.asarray(value).dtype
    assert store.records("fig05") == [written]
    with pytest.raises(FileNotFoundError):
        store.read("fig05", point, 3)


def test_unwritable_root_fails_before_compute(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    root = blocker / "store"  # mkdir fails here even for root
    store = store_lib.ResultStore(root)
    with pytest.raises(OSError, match=str(root)):
        store.check_writable()

    def compute(point_batch, seed_batch):
        raise AssertionError("compute must not run when the store is unwritable")

    with pytest.raises(OSError, match=str(root)):
        sweep.run_sweep(store, "fig", POINTS, SEEDS, compute, config={}, progress=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permission bits do not stop root")
def test_read_only_root_gives_permission_error(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=str(root)):
            store_lib.ResultStore(root).check_writable()
    finally:
        root.chmod(0o700)


# ----------------------------------------------------------------------------
# Sweeps in this process.
# ----------------------------------------------------------------------------


def test_skips_done_items_and_is_deterministic(tmp_path, spy):
    store = store_lib.ResultStore(tmp_path / "a")
    spy.seen.clear()
    seen = spy.seen
    first = sweep.run_sweep(store, "toy", POINTS, SEEDS, spy.compute,
                            config=toy.CONFIG, progress=False)
    everything = {(_f32(p["lr"]), _f32(p["noise"]), s) for p in POINTS for s in SEEDS}
    assert seen == everything
    assert [(r["point_key"], r["seed"]) for r in first] == [
        (store_lib.point_key(p), s) for p in POINTS for s in SEEDS]

    # Nothing missing: compute is not run at all, and the records come back.
    seen.clear()
    calls = []
    again = sweep.run_sweep(store, "toy", POINTS, SEEDS, spy.compute,
                            config=toy.CONFIG, progress=False, callback=calls.append)
    assert seen == set() and calls == [] and again == first

    # One item deleted: only it is computed, the others keep their files.
    victim = store.path("toy", POINTS[1], SEEDS[0])
    victim.unlink()
    before = {p: p.read_bytes() for p in (tmp_path / "a").rglob("seed_*.json")}
    resumed = sweep.run_sweep(store, "toy", POINTS, SEEDS, spy.compute,
                              config=toy.CONFIG, progress=False, callback=calls.append)
    assert seen == {(_f32(POINTS[1]["lr"]), _f32(POINTS[1]["noise"]), SEEDS[0])}
    assert sum(len(c) for c in calls) == 1
    for path, data in before.items():
        assert path.read_bytes() == data
    assert _results(resumed) == _results(first)

    # Determinism: a fresh store, another chunk size, same numbers bitwise.
    fresh = sweep.run_sweep(store_lib.ResultStore(tmp_path / "b"), "toy", POINTS, SEEDS,
                            spy.compute, config=toy.CONFIG, progress=False, chunk_size=4)
    assert _results(fresh) == _results(first)
    # ... and different seeds really give different numbers.
    other = sweep.run_sweep(store_lib.ResultStore(tmp_path / "c"), "toy", POINTS, [4, 8],
                            spy.compute, config=toy.CONFIG, progress=False)
    assert other[0]["result"]["w"] != first[0]["result"]["w"]


def test_corrupt_records_are_recomputed(tmp_path, spy):
    store = store_lib.ResultStore(tmp_path)
    first = sweep.run_sweep(store, "toy", POINTS, SEEDS, spy.compute,
                            config=toy.CONFIG, progress=False)
    empty = store.path("toy", POINTS[0], SEEDS[1])
    empty.write_text("")
    half = store.path("toy", POINTS[1], SEEDS[0])
    text = half.read_text()
    half.write_text(text[: len(text) // 2])
    (empty.parent / ".seed_3.json.tmp.leftover").write_text('{"half": ')  # stray temp
    with pytest.warns(UserWarning, match="corrupt"):
        assert not store.done("toy", POINTS[0], SEEDS[1])
    with pytest.warns(UserWarning, match="corrupt"):
        assert len(store.records("toy")) == 2
    spy.seen.clear()
    seen = spy.seen
    with pytest.warns(UserWarning, match="corrupt"):
        again = sweep.run_sweep(store, "toy", POINTS, SEEDS, spy.compute,
                                config=toy.CONFIG, progress=False)
    assert seen == {(_f32(POINTS[0]["lr"]), _f32(POINTS[0]["noise"]), SEEDS[1]),
                    (_f32(POINTS[1]["lr"]), _f32(POINTS[1]["noise"]), SEEDS[0])}
    assert _results(again) == _results(first)
    assert store.done("toy", POINTS[0], SEEDS[1]) and store.done("toy", POINTS[1], SEEDS[0])


def test_config_change_is_not_silently_reused(tmp_path, spy):
    store = store_lib.ResultStore(tmp_path)
    sweep.run_sweep(store, "toy", POINTS[:1], SEEDS[:1], spy.compute,
                    config=toy.CONFIG, progress=False)
    changed = dict(toy.CONFIG, name="other")
    with pytest.raises(ValueError, match="different config"):
        sweep.run_sweep(store, "toy", POINTS[:1], SEEDS[:1], spy.compute,
                        config=changed, progress=False)
    kept = sweep.run_sweep(store, "toy", POINTS[:1], SEEDS[:1], spy.compute,
                           config=changed, progress=False, on_config_change="keep")
    assert kept[0]["config"] == toy.CONFIG
    redone = sweep.run_sweep(store, "toy", POINTS[:1], SEEDS[:1], spy.compute,
                             config=changed, progress=False, on_config_change="recompute")
    assert redone[0]["config"] == changed
    assert redone[0]["result"] == kept[0]["result"]


def test_sharded_vmap_pads_and_trims():
    def per_item(x, y):
        return {"s": jnp.sin(x) * y, "v": jnp.stack([x, y])}

    x = np.linspace(0.0, 1.0, 5)  # float64: becomes float32 as in jax.vmap
    y = np.arange(5, dtype=np.float32)
    out = multihost.sharded_vmap(per_item)(x, y)
    ref = jax.vmap(per_item)(x, y)
    assert out["s"].shape == (5,) and out["v"].shape == (5, 2)
    np.testing.assert_array_equal(out["s"], np.asarray(ref["s"]))
    np.testing.assert_array_equal(out["v"], np.asarray(ref["v"]))
    with pytest.raises(ValueError, match="leading axis"):
        multihost.sharded_vmap(lambda b: jnp.sum(b), batched=True)(x)


# ----------------------------------------------------------------------------
# Subprocesses: SIGKILL resume, 4 devices, 2 processes.
# ----------------------------------------------------------------------------


def _driver_cmd(root, out, *extra):
    """The command line that runs the toy sweep driver."""
    return [sys.executable, str(DRIVER), "--root", str(root), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def env(tmp_path_factory, default_emitters):
    """Environment for driver subprocesses: CPU only, no inherited device count,
    XLA's default emitters (conftest ``default_emitters``: the drivers' numbers
    are compared bitwise across device and process counts), and a persistent
    compilation cache shared by them (saves ~2 s of compile per run; a cached
    executable computes exactly what a fresh compile does)."""
    cache = tmp_path_factory.mktemp("jax_cache")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env["XLA_FLAGS"] = " ".join(f for f in default_emitters.xla_flags.split()
                                if "device_count" not in f)   # one device; keep the rest
    return env


def _run_driver(env, root, out, *extra, timeout=120):
    """Runs the driver to completion; returns its output payload."""
    proc = subprocess.run(_driver_cmd(root, out, *extra), env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(Path(out).read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """The toy sweep run uninterrupted on 1 device in a fresh directory."""
    base = tmp_path_factory.mktemp("reference")
    payload = _run_driver(env, base / "store", base / "out.json", "--devices", "1")
    assert payload["n_devices"] == 1
    assert len(payload["records"]) == len(toy.POINTS) * len(toy.SEEDS)
    return _results(payload["records"])


def _all_records_parse(root):
    """Asserts that every record file under root is a whole JSON record."""
    files = list(Path(root).rglob("seed_*.json"))
    for f in files:
        json.loads(f.read_text())
    return len(files)


def _start_and_kill(env, root, out, args, target, delay):
    """Starts the driver, waits for ``target``, sleeps ``delay``, SIGKILLs it.

    ``target`` is a number of finished records, or "temp" for the moment a
    temporary file of an atomic write exists (a write in progress).  Returns
    whether the process was still running when killed.
    """
    proc = subprocess.Popen(_driver_cmd(root, out, *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if target == "temp":
            if any(root.rglob(".seed_*.json.tmp.*")):
                break
        elif len(list(root.rglob("seed_*.json"))) >= target:
            break
        time.sleep(0.002)
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return alive


def test_sigkill_resume_matches_uninterrupted_run(tmp_path, env, reference):
    root, out = tmp_path / "store", tmp_path / "out.json"
    n_items = len(toy.POINTS) * len(toy.SEEDS)
    rng = random.Random(0)
    # Each write pauses 0.1 s between writing its temporary file and renaming it.
    args = ("--devices", "1", "--sleep", "0.1", "--pause-in-write", "0.1")
    # Kill mid-write (retried until a temporary file is left behind: the kill
    # landed inside a write), then twice after random delays.
    mid_write = False
    for _ in range(3):
        assert _start_and_kill(env, root, out, args, "temp", 0.0)
        assert _all_records_parse(root) < n_items  # atomic: no partial record
        if any(root.rglob(".seed_*.json.tmp.*")):
            mid_write = True
            break
    assert mid_write, "no kill landed inside a write"
    for target in (rng.randint(3, 8), rng.randint(9, 14)):
        assert _start_and_kill(env, root, out, args, target, rng.uniform(0.0, 0.3))
        assert _all_records_parse(root) < n_items
    assert not out.exists(), "a killed driver finished"
    payload = _run_driver(env, root, out, *args[:2])
    assert _all_records_parse(root) == n_items
    assert _results(payload["records"]) == reference


def test_four_devices_match_one_device(tmp_path, env, reference):
    payload = _run_driver(env, tmp_path / "store", tmp_path / "out.json",
                          "--devices", "4", "--chunk-size", "5")
    assert payload["n_devices"] == 4
    assert {r["n_devices"] for r in payload["records"]} == {4}
    assert _results(payload["records"]) == reference


def _free_port():
    """A TCP port that was free a moment ago on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path, env, reference):
    root = tmp_path / "store"
    port = _free_port()
    procs = []
    for pid in range(2):
        cmd = _driver_cmd(root, tmp_path / f"out{pid}.json", "--devices", "2",
                          "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                          "--process-id", str(pid))
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=150)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
    for pid in range(2):
        payload = json.loads((tmp_path / f"out{pid}.json").read_text())
        assert payload["n_processes"] == 2 and payload["n_devices"] == 4
        assert payload["n_local_devices"] == 2
        assert _results(payload["records"]) == reference
    assert _all_records_parse(root) == len(toy.POINTS) * len(toy.SEEDS)
