"""experiments/plan.py and ``--plan``: compile without running, predict, refuse bad flags."""

import json
import pathlib
import sys

import pytest

from dynmec_jax import typedconfig
from dynmec_jax.configs import reproduce as reproduce_configs
from dynmec_jax.experiments import plan
from dynmec_jax.experiments.config import ReproduceConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _smoke():
    return typedconfig.from_configdict(ReproduceConfig, reproduce_configs.get_config("smoke"))


def test_allocator_plan_at_smoke_size(tmp_path):
    cfg = _smoke()
    p = plan.make_plan(cfg, stages=("allocators",), assume_tflops=1.0, assume_hbm_gb=16,
                       log=lambda m: None)
    progs = p["programs"]
    assert [r["program"] for r in progs] == ["train_chunk_moe", "train_chunk_static"]
    table = cfg.allocator.schedule()
    moe = progs[0]
    assert moe["calls"] == -(-len(table) // cfg.allocator.train.chunk_steps)
    assert moe["compile_s"] > 0 and moe["measured_s"] > 0 and moe["wall_s"] > 0
    assert moe["memory"]["temp"] > 0 and moe["memory"]["argument"] > 0
    # FLOPs: a whole chunk (the scan counted step by step), every call.
    assert moe["flops"] == pytest.approx(moe["flops_per_call"] * moe["calls"])
    st = p["stages"]["allocators"]
    assert st["programs"] == 2 and st["fits_gb"]["16"] and st["fits_assumed"]
    assert st["accelerator_s"] == pytest.approx(st["flops"] / 1e12)
    js, md = plan.write(p, tmp_path)
    assert json.loads(js.read_text())["total"]["programs"] == 2
    text = md.read_text()
    assert "| allocators | 2 |" in text and "train_chunk_static" in text


def test_sweep_programs_do_not_depend_on_the_allocators_values():
    """The sweep's stage programs take the allocators as arguments (reproduce.run_sweeps,
    the plan): the plan's random weights and the run's trained ones give the same program,
    which the compilation cache then serves to the run."""
    import jax
    import jax.numpy as jnp

    from dynmec_jax.experiments import sections
    cfg = _smoke()
    n = cfg.allocator.n_seeds
    pts = {k: jnp.full((2,), v, jnp.float32) for k, v in sections.default_point(cfg).items()}
    seeds = jnp.arange(2, dtype=jnp.int32)
    texts = []
    for shift in (0.0, 1.0):
        moe, static = (jax.tree.map(lambda a, s=shift: a + s if a.dtype == jnp.float32 else a,
                                    plan._random_stack(c, n))
                       for c in (cfg.allocator, cfg.static_allocator()))
        comp = sections.staged_compute(sections.make_stages(cfg, cfg.system.n_users, moe,
                                                            static, n), stacks=(moe, static))
        texts.append(comp.programs["pretrain"].lower(*comp.args(pts, seeds, {})).as_text())
        closed = sections.staged_compute(sections.make_stages(cfg, cfg.system.n_users, moe,
                                                              static, n))
        texts.append(closed.programs["pretrain"].lower(pts, seeds, {}).as_text())
    assert texts[0] == texts[2]            # arguments: the same program
    assert texts[1] != texts[3]            # compiled in as constants: not


def test_evaluation_stage_item_by_item_equals_the_vmapped_one():
    """staged_compute(map_stages=("evaluate",)) runs the evaluation stage with lax.map over
    the items (one item's temporary memory): the same numbers as vmap (the GAs' searches
    may amplify rounding), less temporary memory; an unknown stage name is refused."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dynmec_jax.experiments import sections
    cfg = _smoke()
    n = cfg.allocator.n_seeds
    moe, static = plan._random_stack(cfg.allocator, n), plan._random_stack(
        cfg.static_allocator(), n)
    stages = sections.make_stages(cfg, cfg.system.n_users, moe, static, n)
    pts = {k: jnp.full((3,), v, jnp.float32) for k, v in sections.default_point(cfg).items()}
    seeds = jnp.arange(3, dtype=jnp.int32)
    out, temp = {}, {}
    for kind, mapped in (("vmap", ()), ("map", ("evaluate",))):
        comp = sections.staged_compute(stages, stacks=(moe, static), map_stages=mapped)
        deps = {}
        for name, prog in comp.programs.items():
            args = comp.args(pts, seeds, dict(deps))
            if name == "evaluate":
                compiled = prog.lower(*args).compile()
                temp[kind] = compiled.memory_analysis().temp_size_in_bytes
                out[kind] = compiled(*args)
            else:
                deps[name] = prog(*args)
    assert temp["map"] < temp["vmap"]
    flat = jax.tree_util.tree_flatten_with_path(out["vmap"])[0]
    checked = 0
    for (path, a), b in zip(flat, jax.tree.leaves(out["map"]), strict=True):
        if "GA" not in jax.tree_util.keystr(path):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7,
                                       err_msg=jax.tree_util.keystr(path))
            checked += 1
    assert checked > 50
    with pytest.raises(ValueError, match="names no stage"):
        sections.staged_compute(stages, map_stages=("evaluation",))


def test_while_loops_make_the_flops_a_lower_bound(monkeypatch):
    """A ``while`` loop with a traced trip count is counted once: the program's FLOPs, its
    stage's and the total are marked as lower bounds (">="), a ``scan`` is not."""
    import jax
    import jax.numpy as jnp

    def loop(x, n):
        return jax.lax.fori_loop(0, n, lambda i, y: y * 2.0 + 1.0, x)

    def scan(x):
        return jax.lax.scan(lambda y, _: (y * 2.0 + 1.0, None), x, None, length=4)[0]

    x = jnp.ones((8,))
    assert plan._ops(loop, (x, jnp.int32(4)))["while_loops"] == 1
    counted = plan._ops(scan, (x,))
    assert counted["while_loops"] == 0 and counted["flops_per_call"] == 4 * 2 * 8
    mem = {k: 1000 for k in ("argument", "output", "temp", "alias", "total")}
    records = [{"stage": "allocators", "program": name, "calls": 2, "compile_s": 1.0,
                "memory": mem, "measured_s": 0.5, "wall_s": 1.0, "flops": 2e9,
                "flops_per_call": 1e9, "while_loops": w} for name, w in (("a", 0), ("b", 1))]
    monkeypatch.setattr(plan, "plan_allocators", lambda cfg, log: records)
    p = plan.make_plan(_smoke(), stages=("allocators",), assume_tflops=1.0, log=lambda m: None)
    assert p["stages"]["allocators"]["flops_lower_bound"] and p["total"]["flops_lower_bound"]
    text = plan.markdown(p)
    assert "| a | 2 | 1.0 s | 0.0 / 0.0 / 0.0 MB | 1e+09 |" in text
    assert "| b | 2 | 1.0 s | 0.0 / 0.0 / 0.0 MB | >= 1e+09 |" in text
    assert "| >= 4e+09 |" in text and ">= marks a lower bound" in text
    records[1]["while_loops"] = 0
    assert ">=" not in plan.markdown(plan.make_plan(_smoke(), stages=("allocators",),
                                                    log=lambda m: None))


def test_optimum_plan_times_a_few_scenarios_per_n():
    """The certified optimum's stage: one row per N of the sweeps, its wall the measured
    seconds per scenario times the run's scenarios at that N over the workers."""
    pytest.importorskip("pyscipopt")
    cfg = _smoke()
    p = plan.make_plan(cfg, stages=("optimum",), optimum_workers=2, log=lambda m: None)
    (row,) = p["programs"]   # the smoke preset sweeps N = 4 only
    assert row["program"] == "optimum_n4" and row["stage"] == "certified optimum (host)"
    records = len(plan.reproduce.sweep_points(cfg)) * len(cfg.seeds)
    k = min(4, cfg.vb.optimum_scenarios)
    assert row["calls"] == records and row["measured_scenarios"] == k
    assert row["measured_s"] > 0 and row["flops"] == 0 and row["memory"]["total"] == 0
    assert row["wall_s"] == pytest.approx(
        row["measured_s"] / k * records * cfg.vb.optimum_scenarios / 2)
    st = p["stages"]["certified optimum (host)"]
    assert st["wall_s"] == pytest.approx(row["wall_s"])
    # solves on the host, not compiled programs
    assert row["host"] and st["programs"] == 0 and st["host_solves"] == records
    assert p["total"]["programs"] == 0 and p["total"]["host_solves"] == records
    assert "| certified optimum (host) | (host) |" in plan.markdown(p)
    assert "certified optimum in 2 process(es), timed on" in plan.markdown(p)
    assert "certified optimum not included" in plan.markdown(
        plan.make_plan(cfg, stages=(), log=lambda m: None))


def test_reduced_config_scales_the_steps():
    cfg = _smoke()
    small, scale = plan._reduced(cfg, 0.25)
    assert small.train.pretrain_steps == 5 and small.train.episodes == 5
    assert scale["pretrain"] == 4 and scale["pmrl"] == 4 and scale["evaluate"] == 1


@pytest.mark.parametrize("launcher", ["reproduce", "sweep"])
@pytest.mark.parametrize("flags, message", [
    (["--assume_tflops=10"], "--assume_tflops needs --plan"),
    (["--plan", "--plan_fraction=2"], "plan_fraction"),
])
def test_bad_plan_flags_are_one_line(tmp_path, launch, launcher, flags, message):
    proc = launch([sys.executable, "-m", f"dynmec_jax.cli.{launcher}",
                   "--config=dynmec_jax/configs/reproduce.py:smoke",
                   f"--workdir={tmp_path}", *flags], timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_make_plan_refuses_bad_values():
    with pytest.raises(ValueError, match="assume_tflops"):
        plan.make_plan(_smoke(), stages=(), assume_tflops=0.0)
    with pytest.raises(ValueError, match="step_fraction"):
        plan.make_plan(_smoke(), stages=(), step_fraction=0.0)
