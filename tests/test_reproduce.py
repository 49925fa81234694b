"""The reproduction driver: one smoke run end to end, its resume, the axis sweep, bad input.

The invariances of the sharded, resumable runner (a kill and a rerun, 1 vs 4
devices, 1 vs 2 processes) are proven on a toy program in
``tests/test_sweep.py``; here the real program runs once, through the
launcher, and the rest reuses its workdir in process.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dynmec_jax import cli, typedconfig
from dynmec_jax.configs import reproduce as reproduce_configs
from dynmec_jax.experiments import axis, names, optimum, reproduce
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "--config=" + str(ROOT / "dynmec_jax" / "configs" / "reproduce.py") + ":smoke"
# A smaller smoke sweep: 2 points x 2 seeds on the shared-shape axis, and N = 4 (the
# default N: one compiled program; a second N would only add a second compilation).
SMALL = ("--config.sweeps.workload_avg=(797.5,)", "--config.sweeps.f_server=(2.5e9,)",
         "--config.sweeps.n_users=(4,)")
FIGURES = ("fig04_model_size", "fig05_delay", "fig06_miss_ratio", "fig07_delay_joint",
           "fig08_miss_ratio_joint", "fig09_energy_joint", "fig10_macs",
           "fig11_inference_share", "fig12_training_cost", "gap_to_optimum")


def small_config() -> ReproduceConfig:
    cfg = reproduce_configs.get_config("smoke")
    cfg.sweeps.workload_avg = (797.5,)
    cfg.sweeps.f_server = (2.5e9,)
    cfg.sweeps.n_users = (4,)
    return typedconfig.from_configdict(ReproduceConfig, cfg)


@pytest.fixture(scope="module")
def env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "device_count" not in f)   # one device; keep the rest
    return env


@pytest.fixture(scope="module")
def run(tmp_path_factory, env, launch):
    """The smoke reproduction through the launcher (a fresh process: conftest ``launch``),
    started from outside the checkout."""
    tmp = tmp_path_factory.mktemp("reproduce")
    wd, out = tmp / "work", tmp / "results"
    proc = launch([sys.executable, ROOT / "launch" / "reproduce.py", CONFIG, *SMALL,
                   f"--workdir={wd}", f"--results={out}"], env=env, cwd=tmp, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"workdir": wd, "results": out, "stdout": proc.stdout}


def test_smoke_reproduction_end_to_end(run):
    """Every figure with its numbers, the claims and the README; every stored record
    finite and complete."""
    out = run["results"]
    assert "claims" in run["stdout"]
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 1000, name
        json.loads((out / f"{name}.json").read_text())
    rows = json.loads((out / "claims.json").read_text())["rows"]
    assert len(rows) >= 13
    assert {r["status"] for r in rows} <= {"reproduced", "partly", "not reproduced"}
    assert (out / "claims.md").read_text().count("\n| ") >= 14
    assert "smoke" in (out / "README.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["peak_rss_mb"] > 0 and "fig12_training_cost" in summary["figures"]
    recs = ResultStore(run["workdir"] / "store").records("sweep_main")
    assert len(recs) == 2 * 2   # 2 points x 2 seeds
    for r in recs:
        assert all(np.all(np.isfinite(v)) for v in r["result"].values())
        for field in ("config", "seed", "versions", "wall_time_s", "point"):
            assert field in r
    # the certified optimum of every item's first scenarios: a bound on every method there
    opts = {(o["point_key"], o["seed"]): o
            for o in ResultStore(run["workdir"] / "store").records("optimum_sweep_main")}
    assert len(opts) == len(recs)
    for r in recs:
        opt = np.asarray(opts[(r["point_key"], r["seed"])]["result"]["subsample/Optimum/cost"])
        assert opt.shape == (small_config().vb.optimum_scenarios,)
        subs = {k: v for k, v in r["result"].items() if k.startswith("subsample/")}
        assert {"subsample/DROO/cost", "subsample/PMRL/cost", "subsample/GA/cost"} <= set(subs)
        for k, v in subs.items():
            assert np.all(np.asarray(v) >= opt * (1 - 1e-5)), k
    gap = json.loads((out / "gap_to_optimum.json").read_text())["panels"][0]["table"]
    assert {"PMRL", "DROO", "Greedy"} <= set(gap["series"])
    series = json.loads((out / "fig07_delay_joint.json").read_text())["panels"][0]["table"]
    assert {"DROO", "Optimum"} <= set(series["series"])
    assert "weighted_delay_panels" in json.loads((out / "fig05_delay.json").read_text())


def test_rerun_reuses_everything_and_heals_a_corrupt_timings_file(run, tmp_path):
    """A rerun on a finished workdir recomputes nothing (no record is rewritten) and a
    truncated bookkeeping file is rebuilt, not fatal."""
    wd = tmp_path / "work"
    shutil.copytree(run["workdir"], wd)
    stamps = {f: f.stat().st_mtime_ns for f in (wd / "store").rglob("seed_*.json")}
    (wd / "timings.json").write_text('{"invocations": 1, "wall_')
    with pytest.warns(UserWarning, match="timings.json is corrupt"):
        summary = reproduce.run(small_config(), wd, tmp_path / "results", progress=False)
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps
    assert summary["all_invocations"]["invocations"] == 1
    assert summary["claims"] == json.loads((run["results"] / "summary.json")
                                           .read_text())["claims"]


def test_certified_optimum_in_worker_processes_equals_one_process_and_resumes(run, tmp_path,
                                                                               monkeypatch):
    """The optimum solved in 2 worker processes gives the launcher's records bit for bit; a
    rerun after one record is lost solves only that one (in this process: the one-process
    path) and gives it again; where no worker can start, the solves run here."""
    wd = tmp_path / "work"
    shutil.copytree(run["workdir"] / "store", wd / "store",
                    ignore=shutil.ignore_patterns("optimum_*"))
    store = ResultStore(wd / "store")
    cfg = small_config()
    sweeps = {"main": store.records("sweep_main")}
    with pytest.raises(ValueError, match="workers"):
        optimum.solve_records(cfg, store, sweeps, progress=False, workers=0)
    out = optimum.solve_records(cfg, store, sweeps, progress=False, workers=2)
    ref = {(o["point_key"], o["seed"]): o["result"]
           for o in ResultStore(run["workdir"] / "store").records("optimum_sweep_main")}
    assert {k: v["result"] for k, v in out["sweep_main"].items()} == ref
    recs = sorted((wd / "store" / "optimum_sweep_main").rglob("seed_*.json"))
    assert len(recs) == len(ref)
    recs[0].unlink()
    stamps = {f: f.stat().st_mtime_ns for f in recs[1:]}
    again = optimum.solve_records(cfg, store, sweeps, progress=False, workers=2)
    assert {k: v["result"] for k, v in again["sweep_main"].items()} == ref
    assert {f: f.stat().st_mtime_ns for f in recs[1:]} == stamps and recs[0].is_file()
    # where the workers cannot start: a warning, and the solves run in this process
    shutil.rmtree(wd / "store" / "optimum_sweep_main")

    class NoProcesses(concurrent.futures.ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            raise concurrent.futures.process.BrokenProcessPool("no processes here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", NoProcesses)
    with pytest.warns(UserWarning, match="worker processes failed"):
        fallback = optimum.solve_records(cfg, store, sweeps, progress=False, workers=2)
    assert {k: v["result"] for k, v in fallback["sweep_main"].items()} == ref


def test_axis_sweep_of_any_field_resumes_and_matches_the_main_sweep(run, tmp_path):
    """An axis study: one compiled program over the points, stored (a rerun recomputes
    nothing), a figure and CIs; PMRL and Greedy at the default point equal the main sweep's
    (the V.B-only item splits its keys as the full one does)."""
    wd = tmp_path / "work"
    shutil.copytree(run["workdir"], wd)
    cfg = small_config()
    chosen = ("PMRL", "Greedy", "Local execution", "Optimum")
    n, written = axis.run_study(cfg, wd, "f_server", [2.5e9, 3.5e9], chosen, tmp_path / "res")
    assert n == 4 and len(written) == 2
    data = json.loads((tmp_path / "res" / "axis_f_server.json").read_text())
    delay = data["metrics"]["delay"]
    assert delay["x"] == [2.5e9, 3.5e9] and set(delay["series"]) == set(chosen)
    assert set(data["metrics"]["gap"]["series"]) == set(chosen) - {"Optimum"}
    assert all(k == 2 for s in delay["series"].values() for k in s["n"])
    recs = sorted((wd / "store" / "axis_f_server").rglob("seed_*.json"))
    stamps = [r.stat().st_mtime_ns for r in recs]
    assert axis.run_study(cfg, wd, "f_server", [2.5e9, 3.5e9], chosen, tmp_path / "res")[0] == 4
    assert [r.stat().st_mtime_ns for r in recs] == stamps
    main = {(r["point"]["f_server"], r["seed"]): r["result"]
            for r in ResultStore(wd / "store").records("sweep_main")
            if r["point"]["size_avg"] == 1000.0}
    for r in recs:
        rec = json.loads(r.read_text())
        if rec["point"]["f_server"] != 2.5e9:
            continue
        ref = main[(2.5e9, rec["seed"])]
        for m in chosen[:3]:
            for metric in ("delay", "energy", "cost"):
                np.testing.assert_allclose(rec["result"][f"vb/{m}/{metric}"],
                                           ref[f"vb/{m}/{metric}"], rtol=1e-5)


def test_sweep_points_union_without_duplicates():
    cfg = typedconfig.from_configdict(ReproduceConfig, reproduce_configs.get_config("quick"))
    pts = reproduce.sweep_points(cfg)
    keys = [tuple(sorted(p.items())) for p in pts]
    assert len(keys) == len(set(keys))
    n_axes = sum(len(getattr(cfg.sweeps, a)) for a in names.AXES)
    assert len(pts) == n_axes - 2  # the default point is shared by the three axes


def test_bad_axis_input_is_refused_in_one_line():
    cfg = small_config()
    for args, needle in ((("gamma", ["1"]), "unknown SystemParams field"),
                         (("beta", ["1", "x"]), "'x' is not a number"),
                         (("beta", ["-1"]), "beta must be >= 0"),
                         (("beta", ["nan"]), "not finite")):
        with pytest.raises(ValueError, match=needle):
            axis.check_axis(*args, cfg.system)
    with pytest.raises(ValueError, match="unknown method 'PPO'"):
        axis.check_methods(["PMRL", "PPO"])


def test_unwritable_workdir_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as e:
        cli.writable_workdir(blocker / "sub")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "cannot write to workdir" in err and str(blocker) in err


@pytest.mark.parametrize("cmd, needle", [
    # absl's own flag parser refuses an unknown config key: one line, exit 2.
    ([sys.executable, str(ROOT / "launch" / "reproduce.py"), "--config.no_such_field=1"],
     "no_such_field"),
    # the typed config refuses a bad value, from another directory, default config.
    ([sys.executable, str(ROOT / "launch" / "train_allocator.py"), "--config.train.batch=0"],
     "train.batch must be >= 1"),
    # the console script (installed by pip) finds its default config from anywhere.
    (["dynmec-sweep", "--axis=gamma", "--values=1"], "unknown SystemParams field"),
    (["dynmec-reproduce", "--num_processes=2"], "needs --coordinator"),
])
def test_launchers_fail_in_one_line_from_another_directory(tmp_path, env, launch, cmd, needle):
    if cmd[0].startswith("dynmec-"):   # installed next to this interpreter by pip: a real
        cmd = [str(Path(sys.executable).parent / cmd[0]), *cmd[1:]]   # subprocess (launch)
    proc = launch([*cmd, f"--workdir={tmp_path / 'w'}"], env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert not (tmp_path / "w" / "allocator_moe").exists()
