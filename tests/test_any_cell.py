"""experiments/any_cell.py at smoke size: the grid, the gaps to the optimum, the files."""

import json

import jax
import numpy as np
import pytest

from dynmec_jax import cell, pipeline, system
from dynmec_jax.experiments import any_cell
from dynmec_jax.nets import policy as policy_net
from dynmec_jax.nets import scheduler as scheduler_net

pytest.importorskip("pyscipopt")
SP = system.SystemParams(n_users=4)


def test_grid_covers_range_ends_middle_and_random_cells():
    r = cell.parse_range("default")
    g = any_cell.cell_grid(SP, r, fields=("f_server", "beta"), ns=(10, 30), n_random=3)
    assert len(g) == 2 + 2 * 3 * 2 + 3
    fs = sorted({x["value"] for x in g if x["field"] == "f_server"})
    assert fs == pytest.approx([5e8, (5e8 * 2e10) ** 0.5, 2e10])   # log-middle
    assert all(x["cell"].n_users == x["n_users"] for x in g)
    rand = [x for x in g if x["field"] == "random"]
    assert all(cell.out_of_range(x["cell"], r, SP) == [] for x in rand)
    with pytest.raises(ValueError, match="not in the trained range"):
        any_cell.cell_grid(SP, cell.parse_range("beta=0:1:lin"), fields=("f_server",))


def test_smoke_evaluation_writes_markdown_json_and_figure(tiny_allocator, tmp_path):
    alloc = tiny_allocator(SP)
    spec = pipeline.PipelineSpec(n_users=4, n_users_min=2, cell="default")
    m = pipeline.build_models(spec, alloc)
    pipe = pipeline.Pipeline(
        scheduler_params=scheduler_net.init_scheduler(jax.random.key(0), m.scheduler, 4),
        policy_params=policy_net.init_policy(jax.random.key(1), m.policy, len(m.cell)),
        allocator=alloc, spec=spec)
    other = pipe.replace(scheduler_params=scheduler_net.init_scheduler(
        jax.random.key(2), m.scheduler, 4))
    grid = any_cell.cell_grid(SP, pipe.cell_range, fields=("bandwidth_max",), ns=(4,),
                              n_random=1)
    lo = pipe.cell_range[0].lo
    rows = any_cell.evaluate_cells({"cell": pipe, "seeds": [pipe, other]}, grid, batch=2,
                                   seed=0, progress=lambda s: 0,
                                   per_cell=[("bandwidth_max", lo, other)])
    assert len(rows) == len(grid) == 5
    for r in rows:
        p = r["pipelines"]["cell"]
        assert p["gap"]["mean"] >= -1e-4          # nothing beats the certified optimum
        assert p["gap_with_inference"]["mean"] >= p["gap"]["mean"] - 1e-9
        assert p["warnings"] == []
        # seeds: the gap of the mean cost is the mean of the seeds' gaps
        q = r["pipelines"]["seeds"]
        assert q["seed_gaps"][0] == pytest.approx(p["gap"]["mean"], abs=1e-9)
        assert q["gap"]["mean"] == pytest.approx(np.mean(q["seed_gaps"]), abs=1e-9)
        # the optimal allocation of its own set: no worse than its allocator, no better
        # than the optimum
        assert -1e-4 <= p["gap_set_kkt"]["mean"] <= p["gap"]["mean"] + 1e-4
        assert 0.0 <= p["top5_share"] <= 1.0 + 1e-9
        # the one-flip search from its set does not beat the optimum either
        assert p["gap_search"]["mean"] >= -1e-4
        assert p["gap_search_with_inference"]["mean"] >= p["gap_search"]["mean"] - 1e-9
    spec = [r for r in rows if "per_cell" in r]
    assert [(r["field"], r["value"]) for r in spec] == [("bandwidth_max", lo)]
    s = spec[0]
    assert s["per_cell"]["gap"]["mean"] == pytest.approx(
        s["pipelines"]["seeds"]["seed_gaps"][1], abs=1e-9)
    assert s["per_cell"]["vs"]["cell"]["mean"] == pytest.approx(
        s["pipelines"]["cell"]["gap"]["mean"] - s["per_cell"]["gap"]["mean"], abs=1e-9)
    summary = any_cell.summary(rows)
    assert summary["seeds"]["seeds"] == 2 and "seeds" not in summary["cell"]
    assert summary["seeds"]["worst_seed_gap"] >= summary["seeds"]["worst_gap"] - 1e-12
    record = {"command": "test", "rows": rows, "summary": summary, "batch": 2,
              "seed": 0, "ranges": {"cell": pipe.spec.cell, "seeds": pipe.spec.cell}}
    paths = any_cell.write(record, tmp_path / "any_cell")
    md = (tmp_path / "any_cell.md").read_text()
    assert "| Table II | 4 |" in md and "vs per-cell" in md and "(seeds " in md
    assert "set + KKT" in md and "search with inf." in md   # an untrained pipeline misses
    assert "With the one-flip search" in md
    assert 0 <= summary["cell"]["search_helps_with_inference"] <= 5
    assert json.loads((tmp_path / "any_cell.json").read_text())["summary"]["cell"]["cells"] == 5
    assert (tmp_path / "any_cell.png").stat().st_size > 1000 and len(paths) == 3


def test_allocator_gaps_cover_the_range_ends(tiny_allocator):
    alloc = tiny_allocator(SP)
    rows = any_cell.allocator_gaps(alloc, cell.parse_range("f_server=1e9:1e10:log,beta=0:1:lin"),
                                   n_users=4, batch=4)
    assert [r["label"] for r in rows] == ["Table II", "f_server = 1e+09", "f_server = 1e+10"]
    assert all(r["worst_gap"] >= r["largest_gap"] - 1e-9 for r in rows)
