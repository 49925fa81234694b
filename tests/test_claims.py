"""The claims of Section V as data: statuses, rows and their numbers on made-up tables."""

from __future__ import annotations

import numpy as np
import pytest

from dynmec_jax import methods as M
from dynmec_jax import typedconfig
from dynmec_jax.configs import reproduce as reproduce_configs
from dynmec_jax.evaluation import METRICS
from dynmec_jax.experiments import claim_checks, claims, names
from dynmec_jax.experiments.config import ReproduceConfig


def _series(vals):
    return {"mean": list(vals), "ci": [0.0, 0.0], "n": [2, 2], "std": [0.0, 0.0]}


def _fake_tables(pmrl_cost_ratio: float, share_step: float, paper: bool = True) -> dict:
    """Tables in :func:`dynmec_jax.experiments.figures.tables` form, all means 1 except what
    the V.B rows read.

    ``paper=False`` leaves out "PMRL (paper)" (a run without ``vb.paper_scheduler``).
    """
    xs = [1.0, 2.0]
    tabs = {}
    for sec in M.SECTIONS:
        shown = [m.name for m in M.section(sec) if m.in_figures
                 and (paper or m is not M.PMRL_PAPER)]
        tabs[sec] = {ax: {k: {"x": xs, "series": {m: _series([1.0, 1.0]) for m in shown}}
                          for k in METRICS} for ax in names.PANEL_ORDER}
    for ax in names.PANEL_ORDER:
        vb = tabs["vb"][ax]
        vb["cost"]["series"]["Greedy"] = _series([100.0, 120.0])
        vb["cost"]["series"]["PMRL"] = _series([100.0 * pmrl_cost_ratio, 120.0 * pmrl_cost_ratio])
        vb["offload_fraction"]["series"]["Greedy"] = _series([0.5, 0.6])
        vb["offload_fraction"]["series"]["PMRL"] = _series([0.4, 0.4 + share_step])
    gap_series = {m.name: _series([0.005, 0.008]) for m in M.section("vb")
                  if m.in_figures and not m.host}
    tabs["gap"] = {ax: {"x": xs, "series": gap_series} for ax in names.PANEL_ORDER}
    tabs["policy"] = {ax: {k: {"x": xs, "series": {"va": _series([0.001, 0.002]),
                                                   "vb": _series([0.004, 0.03])}}
                           for k in ("regret", "label_width", "label_depth", "label_macs")}
                      for ax in names.PANEL_ORDER}
    return tabs


def _figs():
    fig04 = {"wd": {"mean": np.ones((3, 2)).tolist()},
             "wd_infer": {"mean": np.ones((3, 2)).tolist()}, "optimal_wd": 1.0}
    fig12 = {"cases": ["full"], "target": 0.1, "progressive": {"steps": {"mean": [1.0]}},
             "traditional": {"steps": {"mean": [3.0]}}}
    return fig04, fig12


@pytest.mark.parametrize("ratio, step, expect", [
    (0.98, 0.1, ("reproduced", "reproduced")),
    (1.02, -0.1, ("not reproduced", "not reproduced")),
])
def test_claims_rows_for_greedy_share_and_policy_regret(ratio, step, expect):
    cfg = typedconfig.from_configdict(ReproduceConfig, reproduce_configs.get_config("smoke"))
    rows = claims.evaluate(cfg, _fake_tables(ratio, step), *_figs())
    by = {r["claim"]: r for r in rows}
    greedy = next(r for c, r in by.items() if "greedy offloading with the optimal" in c)
    share = next(r for c, r in by.items() if "offloaded share moves with the load" in c)
    regret = next(r for c, r in by.items() if "within 1% of the per-scenario best" in c)
    assert (greedy["status"], share["status"]) == expect
    assert f"{ratio:.4g}" in greedy["numbers"]
    assert ("Why: the greedy decides" in greedy["numbers"]) == (expect[0] != "reproduced")
    assert "optimum" in share["numbers"]
    # PMRL's regret is 3% at the second point of every axis: 12 of 16 pairs hold.
    assert regret["status"] == "partly" and "3] %" in regret["numbers"]
    assert regret["numbers"].startswith("12/16")
    paper = next(r for c, r in by.items() if "paper's own scheduler" in c)
    assert M.PMRL_PAPER.name not in paper["claim"] and "offloaded" in paper["numbers"]


@pytest.mark.parametrize("paper", [True, False])
def test_one_row_per_claim_in_table_order(paper):
    cfg = typedconfig.from_configdict(ReproduceConfig, reproduce_configs.get_config("smoke"))
    rows = claims.evaluate(cfg, _fake_tables(0.98, 0.1, paper=paper), *_figs())
    expected = [c for c in claims.CLAIMS if paper or "paper's own scheduler" not in c.claim]
    assert len(rows) == len(claims.CLAIMS) - (not paper)
    assert [(r["figure"], r["claim"]) for r in rows] == [(c.figure, c.claim) for c in expected]
    assert all(list(r) == ["figure", "claim", "status", "numbers"] for r in rows)
    assert {r["status"] for r in rows} <= set(claims.STATUSES)
    assert all(("PMRL (paper)" in r["numbers"]) == paper for r in rows
               if r["claim"].startswith("PMRL has a lower mean delay"))


def test_claims_are_distinct_rows():
    keys = [(c.figure, c.claim) for c in claims.CLAIMS]
    assert len(set(keys)) == len(keys)
    assert all(callable(c.check) and c.claim and c.figure for c in claims.CLAIMS)


@pytest.mark.parametrize("checks, status", [
    ([True, True], "reproduced"),
    ([True, False], "partly"),
    ([True, False, False], "not reproduced"),
    ([], "not reproduced"),
])
def test_status_thresholds(checks, status):
    assert claim_checks.status(checks) == status


def test_markdown_counts_statuses():
    rows = [{"figure": "Fig. 5", "claim": "a", "status": "reproduced", "numbers": "1"},
            {"figure": "Fig. 6", "claim": "b", "status": "not reproduced", "numbers": "2"}]
    md = claims.markdown(rows, "# Header")
    assert md.startswith("# Header\n\n| # | Figure |")
    assert "| 2 | Fig. 6 | b | **not reproduced** | 2 |" in md
    assert md.endswith("Totals: 1 reproduced, 0 partly, 1 not reproduced.\n")
