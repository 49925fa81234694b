"""experiments/any_n.py: the shipped pipeline against greedy + KKT and the certified optimum."""

import numpy as np
import pytest

from dynmec_jax import pipeline
from dynmec_jax.experiments import any_n

pytest.importorskip("pyscipopt")


def test_against_peers_rows_add_up_and_respect_the_bound():
    pipe = pipeline.load_pipeline()
    lines = []
    rows = any_n.against_peers(pipe, [5, 7], batch=12, seed=3, optimum_scenarios=6,
                               progress=lines.append)
    assert [r["n_users"] for r in rows] == [5, 7] and len(lines) == 2
    for r in rows:
        assert r["optimum_scenarios"] == 6
        # The optimum is a bound: no method, charged or not, is below it.
        assert r["gap_to_optimum"] >= -1e-6 and r["greedy_gap_to_optimum"] >= -1e-6
        np.testing.assert_allclose(sum(r["parts"].values()), r["gap_to_optimum"], atol=1e-9)
        assert r["parts"]["inference"] > 0          # PMRL pays its own networks (Eq. 34-35)
        assert r["below_greedy"] == (r["over_greedy"] + r["ci95"] < 0)
        assert np.isfinite([r["pipeline_cost"], r["greedy_cost"], r["ci95"]]).all()
    md = any_n.markdown({"command": "x", "batch": 12, "peers": rows, "pipelines": [],
                         "allocator_gap": []})
    assert "| 5 | " in md and "| 7 | " in md and "above the optimum" in md
