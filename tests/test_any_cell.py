"""experiments/any_cell.py at smoke size: the grid, the gaps to the optimum, the files."""

import json

import jax
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
    grid = any_cell.cell_grid(SP, pipe.cell_range, fields=("bandwidth_max",), ns=(4,),
                              n_random=1)
    rows = any_cell.evaluate_cells({"cell": pipe}, grid, batch=2, seed=0, progress=lambda s: 0)
    assert len(rows) == len(grid) == 5
    for r in rows:
        p = r["pipelines"]["cell"]
        assert p["gap"]["mean"] >= -1e-4          # nothing beats the certified optimum
        assert p["gap_with_inference"]["mean"] >= p["gap"]["mean"] - 1e-9
        assert p["warnings"] == []
    record = {"command": "test", "rows": rows, "summary": any_cell.summary(rows), "batch": 2,
              "seed": 0, "ranges": {"cell": pipe.spec.cell}}
    paths = any_cell.write(record, tmp_path / "any_cell")
    assert "| Table II | 4 |" in (tmp_path / "any_cell.md").read_text()
    assert json.loads((tmp_path / "any_cell.json").read_text())["summary"]["cell"]["cells"] == 5
    assert (tmp_path / "any_cell.png").stat().st_size > 1000 and len(paths) == 3


def test_allocator_gaps_cover_the_range_ends(tiny_allocator):
    alloc = tiny_allocator(SP)
    rows = any_cell.allocator_gaps(alloc, cell.parse_range("f_server=1e9:1e10:log,beta=0:1:lin"),
                                   n_users=4, batch=4)
    assert [r["label"] for r in rows] == ["Table II", "f_server = 1e+09", "f_server = 1e+10"]
    assert all(r["worst_gap"] >= r["largest_gap"] - 1e-9 for r in rows)
