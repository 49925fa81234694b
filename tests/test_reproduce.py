"""The reproduction driver: smoke run end to end, resumability, devices, processes, bad input.

The sweep runs go through ``launch/sweep.py`` in subprocesses (a persistent
compilation cache shared by them keeps each run short); all of them reuse one
set of smoke allocators trained once per module (``--dist=loadfile`` in
pyproject keeps this module on one pytest-xdist worker).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dynmec_jax.configs import reproduce as reproduce_configs
from dynmec_jax.experiments import names, reproduce

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "launch" / "sweep.py"
REPRODUCE = ROOT / "launch" / "reproduce.py"
CONFIG = "--config=" + str(ROOT / "dynmec_jax" / "configs" / "reproduce.py") + ":smoke"
# A smaller smoke sweep: 2 points x 2 seeds on the shared-shape axis, one more N.
SMALL = ("--config.sweeps.workload_avg=(797.5,)", "--config.sweeps.f_server=(2.5e9,)",
         "--config.sweeps.n_users=(3, 4)")


def small_config():
    cfg = reproduce_configs.get_config("smoke")
    cfg.sweeps.workload_avg = (797.5,)
    cfg.sweeps.f_server = (2.5e9,)
    cfg.sweeps.n_users = (3, 4)
    return cfg


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def allocators(tmp_path_factory):
    """Smoke MoE and static allocators, trained once (in process)."""
    d = tmp_path_factory.mktemp("allocators")
    reproduce.train_allocators(small_config(), d, progress=False)
    assert reproduce.allocators_ready(small_config(), d)
    return d


def _workdir(tmp_path, allocators):
    wd = tmp_path / "work"
    for name in ("allocator_moe", "allocator_static"):
        shutil.copytree(allocators / name, wd / name)
    return wd


# The device and process tests check the sharding, not the N path: one N (the default,
# reused from the main sweep) saves them a second compilation of the sweep item.
ONE_N = (*SMALL[:2], "--config.sweeps.n_users=(4,)")


def _sweep_cmd(wd, dump, *extra, small=SMALL):
    return [sys.executable, str(SWEEP), CONFIG, *small, f"--workdir={wd}", f"--dump={dump}",
            *extra]


def _run(cmd, env, timeout=300):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env, allocators):
    """The small smoke sweep, uninterrupted, on one device."""
    tmp = tmp_path_factory.mktemp("reference")
    wd = _workdir(tmp, allocators)
    _run(_sweep_cmd(wd, tmp / "dump.json"), env)
    ref = json.loads((tmp / "dump.json").read_text())
    # 2 points x 2 seeds + 1 N point x 2 seeds, each with many named numbers.
    assert len({k.split("/seed_")[0] + "/seed_" + k.split("/seed_")[1].split("/")[0]
                for k in ref}) == 6
    assert all(np.isfinite(v) for v in ref.values())
    return {"dump": ref, "workdir": wd}


def _assert_same(a: dict, b: dict, rtol=0.0, subset=False):
    if subset:  # a is a run of fewer points: every number it has equals b's
        assert a and set(a) <= set(b)
    else:
        assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=0, err_msg=k)


def test_sigkill_then_rerun_skips_done_and_matches_uninterrupted(tmp_path, env, allocators,
                                                                 reference):
    wd = _workdir(tmp_path, allocators)
    store = wd / "store"
    proc = subprocess.Popen(_sweep_cmd(wd, tmp_path / "killed.json"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if list(store.rglob("seed_*.json")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = {f: f.stat().st_mtime_ns for f in store.rglob("seed_*.json")}
    assert 1 <= len(before) < 6
    _run(_sweep_cmd(wd, tmp_path / "resumed.json"), env)
    # Finished items are skipped (not rewritten); the rest gives the same numbers as the
    # uninterrupted run (same seeds, same numbers).
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())
    assert len(list(store.rglob("seed_*.json"))) == 6
    _assert_same(json.loads((tmp_path / "resumed.json").read_text()), reference["dump"])
    rec = json.loads(next(iter(before)).read_text())
    for field in ("config", "seed", "versions", "wall_time_s", "point"):
        assert field in rec


def test_four_devices_match_one(tmp_path, env, allocators, reference):
    wd = _workdir(tmp_path, allocators)
    env4 = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    _run(_sweep_cmd(wd, tmp_path / "d4.json", small=ONE_N), env4)
    rec = json.loads(next((wd / "store").rglob("seed_*.json")).read_text())
    assert rec["n_devices"] == 4
    _assert_same(json.loads((tmp_path / "d4.json").read_text()), reference["dump"], rtol=1e-5,
                 subset=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, env, allocators, reference):
    wd = _workdir(tmp_path, allocators)
    port = _free_port()
    procs = [subprocess.Popen(
        _sweep_cmd(wd, tmp_path / f"p{pid}.json", f"--coordinator=127.0.0.1:{port}",
                   "--num_processes=2", f"--process_id={pid}", small=ONE_N),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for pid in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-3000:] for x in logs)
    rec = json.loads(next((wd / "store").rglob("seed_*.json")).read_text())
    assert rec["n_processes"] == 2
    _assert_same(json.loads((tmp_path / "p0.json").read_text()), reference["dump"], rtol=1e-5,
                 subset=True)


def test_smoke_reproduction_end_to_end(tmp_path, env, reference):
    """The whole pipeline at smoke size through the launcher: every figure with its
    numbers, the claims and the README (the sweep records of ``reference`` are reused,
    the stages before and after them run)."""
    wd = tmp_path / "work"
    shutil.copytree(reference["workdir"], wd)
    out = tmp_path / "results"
    proc = _launch([CONFIG, *SMALL, f"--workdir={wd}", f"--results={out}"], env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "claims" in proc.stdout
    for name in ("fig04_model_size", "fig05_delay", "fig06_miss_ratio", "fig07_delay_joint",
                 "fig08_miss_ratio_joint", "fig09_energy_joint", "fig10_macs",
                 "fig11_inference_share", "fig12_training_cost"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
        json.loads((out / f"{name}.json").read_text())
    rows = json.loads((out / "claims.json").read_text())["rows"]
    assert len(rows) >= 13
    assert {r["status"] for r in rows} <= {"reproduced", "partly", "not reproduced"}
    assert (out / "claims.md").read_text().count("\n| ") >= 14
    assert "smoke" in (out / "README.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["peak_rss_mb"] > 0 and "fig12_training_cost" in summary["figures"]


def test_axis_sweep_of_any_field_resumes_and_matches_the_main_sweep(tmp_path, env, reference):
    """--axis: one compiled program over the points, stored (a rerun recomputes nothing),
    a figure and CIs; PMRL and Greedy at the default point equal the main sweep's (the
    V.B-only item splits its keys as the full one does)."""
    wd = tmp_path / "work"
    shutil.copytree(reference["workdir"], wd)
    out = tmp_path / "results"
    cmd = [sys.executable, str(SWEEP), CONFIG, *SMALL, f"--workdir={wd}",
           "--axis=f_server", "--values=2.5e9,3.5e9", "--methods=PMRL,Greedy,Local execution",
           f"--results={out}"]
    proc = _run(cmd, env, timeout=600)
    assert "4 records of axis_f_server" in proc.stdout
    data = json.loads((out / "axis_f_server.json").read_text())
    delay = data["metrics"]["delay"]
    assert delay["x"] == [2.5e9, 3.5e9]
    assert set(delay["series"]) == {"PMRL", "Greedy", "Local execution"}
    assert all(n == 2 for s in delay["series"].values() for n in s["n"])
    assert (out / "axis_f_server.png").stat().st_size > 1000
    recs = sorted((wd / "store" / "axis_f_server").rglob("seed_*.json"))
    stamps = [r.stat().st_mtime_ns for r in recs]
    assert len(recs) == 4 and "4 records" in _run(cmd, env).stdout
    assert [r.stat().st_mtime_ns for r in recs] == stamps
    main = reference["dump"]
    for r in recs:
        rec = json.loads(r.read_text())
        if rec["point"]["f_server"] != 2.5e9:
            continue
        default = "sweep_main/f_server=2500000000,size_avg=1000,workload_avg=797.5"
        pre = [k.rsplit("/vb/", 1)[0] for k in main
               if k.startswith(f"{default}/seed_{rec['seed']}/vb/PMRL/delay")]
        assert len(pre) == 1
        for m in ("PMRL", "Greedy", "Local execution"):
            for metric in ("delay", "energy", "cost"):
                np.testing.assert_allclose(rec["result"][f"vb/{m}/{metric}"],
                                           main[f"{pre[0]}/vb/{m}/{metric}"], rtol=1e-5)


def test_axis_sweep_rejects_bad_input_in_one_line(tmp_path, env):
    for args, needle in ((["--axis=gamma", "--values=1"], "unknown SystemParams field"),
                         (["--axis=beta", "--values=1,x"], "'x' is not a number"),
                         (["--axis=beta", "--values=-1"], "beta must be >= 0"),
                         (["--axis=beta", "--values=1", "--methods=PPO"], "unknown method")):
        proc = subprocess.run([sys.executable, str(SWEEP), CONFIG, f"--workdir={tmp_path}",
                               *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert needle in proc.stderr


def _launch(args, env, timeout=120):
    return subprocess.run([sys.executable, str(REPRODUCE), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("flag, needle", [
    ("--config.no_such_field=1", "no_such_field"),
    ("--config.seeds=()", "seeds"),
    ("--config.va.eval_batch=0", "va.eval_batch"),
    ("--config.sweeps.n_users=(0,)", "sweeps.n_users"),
])
def test_bad_config_exits_2_before_compute(tmp_path, env, flag, needle):
    proc = _launch([CONFIG, flag, f"--workdir={tmp_path / 'w'}",
                    f"--results={tmp_path / 'r'}"], env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr
    assert not (tmp_path / "w" / "allocator_moe").exists()


def test_unwritable_workdir_exits_2(tmp_path, env):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _launch([CONFIG, f"--workdir={blocker / 'sub'}", f"--results={tmp_path / 'r'}"], env)
    assert proc.returncode == 2
    assert "cannot write to workdir" in proc.stderr and str(blocker) in proc.stderr


def test_validate_config_names_the_field():
    cfg = reproduce_configs.get_config("smoke")
    cfg.fig12.cases = ("diagonal",)
    with pytest.raises(ValueError, match="fig12.cases"):
        reproduce.validate_config(cfg)
    cfg = reproduce_configs.get_config("smoke")
    cfg.va.ga_batch = 10**6
    with pytest.raises(ValueError, match="ga_batch"):
        reproduce.validate_config(cfg)
    with pytest.raises(ValueError, match="unknown preset"):
        reproduce_configs.get_config("huge")


def test_sweep_points_union_without_duplicates():
    cfg = reproduce_configs.get_config("quick")
    pts = reproduce.sweep_points(cfg)
    keys = [tuple(sorted(p.items())) for p in pts]
    assert len(keys) == len(set(keys))
    n_axes = sum(len(cfg.sweeps[a]) for a in names.AXES)
    assert len(pts) == n_axes - 2  # the default point is shared by the three axes

