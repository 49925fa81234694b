"""The early exit of the set scheduler's last pass (SetScheduler.gate, train/gate.py)."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from dynmec_jax import accounting, evaluation, pipeline, system
from dynmec_jax.nets import features
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.train import gate, joint
from dynmec_jax.train.config import TrainConfig

SP = system.SystemParams(n_users=6)
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def pipe(cell_pipeline):
    """A tiny 3-pass cell pipeline (conftest) with random nonzero output layers."""
    return cell_pipeline(SP, "default", 5, scheduler_passes=3, cost_features=True)


def _logits(p, scn, sp, valid=None):
    m = p.models
    return scheduler_net.offload_logits_and_macs(m.scheduler, p.scheduler_params, scn,
                                                 p.allocator.scales, valid,
                                                 m.scheduler_tail(scn, sp))


def _earlier_logits(p, scn, sp):
    """Logits of the same weights without the last pass."""
    m = p.models
    two = m.scheduler.clone(passes=m.scheduler.passes - 1, gate=0.0)
    z = features.normalize_features(scn, p.allocator.scales)
    return np.asarray(two.apply(p.scheduler_params, z, None, m.scheduler_tail(scn, sp)))


def test_gated_macs_span_the_passes():
    kw = dict(hidden=8, n_layers=2, passes=3, counts=True, n_cell=4)
    full = accounting.set_scheduler_macs(10, **kw)
    two = accounting.set_scheduler_macs(10, **dict(kw, passes=2))
    assert accounting.gated_scheduler_macs(10, 10, **kw) == full
    assert accounting.gated_scheduler_macs(10, 0, **kw) == two
    m = np.asarray(accounting.gated_scheduler_macs(10, np.array([0, 3, 10]), **kw))
    np.testing.assert_allclose(m, [two, two + 0.3 * (full - two), full])


def test_the_last_pass_runs_for_the_undecided_users_only(pipe):
    scn = system.sample_scenarios(jax.random.key(0), SP, 32)
    full, m_full = _logits(pipe, scn, SP)
    before = _earlier_logits(pipe, scn, SP)
    tau = float(np.median(np.abs(before)))
    gated, m_gated = _logits(gate.with_gate(pipe, tau), scn, SP)
    run = np.abs(before) < tau
    assert 0.2 < run.mean() < 0.8
    np.testing.assert_allclose(np.asarray(gated)[run], np.asarray(full)[run], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(gated)[~run], before[~run], rtol=1e-5, atol=1e-5)
    s = pipe.models.scheduler
    want = accounting.gated_scheduler_macs(6, run.sum(-1), s.hidden, s.n_layers, s.passes,
                                           counts=s.counts, n_cell=s.n_cell)
    np.testing.assert_allclose(np.asarray(m_gated), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m_full), pipe.models.scheduler_macs * np.ones(32))
    assert np.all(np.asarray(m_gated) <= np.asarray(m_full))
    assert np.asarray(m_gated).sum() < 0.9 * np.asarray(m_full).sum()


def test_padded_users_never_run_the_last_pass(pipe):
    scn = system.sample_scenarios(jax.random.key(1), SP.replace(n_users=4), 8)
    padded, valid = system.pad_users(scn, 6, SP)
    _, m = _logits(gate.with_gate(pipe, 1e9), padded, SP, valid)
    _, m4 = _logits(gate.with_gate(pipe, 1e9), scn, SP)
    np.testing.assert_allclose(np.asarray(m), np.asarray(m4), rtol=1e-6)


def test_decide_charges_the_gated_scheduler(pipe):
    scn = system.sample_scenarios(jax.random.key(2), SP, 16)
    tau = float(np.median(np.abs(_earlier_logits(pipe, scn, SP))))
    g = gate.with_gate(pipe, tau)
    d = g.decide(scn, SP)
    _, macs = _logits(g, scn, SP)
    np.testing.assert_allclose(np.asarray(d.inference_delay_local),
                               np.asarray(accounting.inference_delay(macs, SP)), rtol=1e-5)
    # the edge tasks wait for the same scheduler, then the policy and the allocator
    res = evaluation.pipeline_method(g, scn, SP)
    t_edge = accounting.inference_delay(macs + g.models.policy_macs + res.allocator_macs, SP)
    np.testing.assert_allclose(np.asarray(d.inference_delay_edge), np.asarray(t_edge), rtol=1e-5)
    # an early exit that every user takes is the scheduler without its last pass
    none = gate.with_gate(pipe, 1e-30).decide(scn, SP)
    before = _earlier_logits(pipe, scn, SP)
    want = (before > 0) & ~np.asarray(features.dominated(scn, SP))
    np.testing.assert_array_equal(np.asarray(none.offload), want)


def test_gate_zero_is_the_scheduler_without_early_exit(pipe):
    scn = system.sample_scenarios(jax.random.key(3), SP, 16)
    a, b = pipe.decide(scn, SP), gate.with_gate(pipe, 0.0).decide(scn, SP)
    np.testing.assert_array_equal(np.asarray(a.offload), np.asarray(b.offload))
    np.testing.assert_allclose(np.asarray(a.inference_delay_local),
                               np.asarray(accounting.inference_delay(
                                   pipe.models.scheduler_macs, SP)) * np.ones(16), rtol=1e-6)


@pytest.mark.parametrize("bad", [dict(scheduler_gate=-1.0),
                                 dict(scheduler_gate=2.0, scheduler_passes=1),
                                 dict(scheduler_gate=2.0, scheduler="paper")])
def test_bad_gate_raises(bad):
    with pytest.raises(ValueError, match="scheduler_gate"):
        pipeline.PipelineSpec(**bad)


def test_gate_round_trips_and_old_files_load_without(pipe, tmp_path):
    g = gate.with_gate(pipe, 2.5)
    pipeline.save_pipeline(g, tmp_path / "g")
    assert pipeline.load_pipeline(tmp_path / "g").spec.scheduler_gate == 2.5
    meta = json.loads((tmp_path / "g" / "pipeline.json").read_text())
    del meta["spec"]["scheduler_gate"]          # a file written before the early exit
    (tmp_path / "g" / "pipeline.json").write_text(json.dumps(meta))
    assert pipeline.load_pipeline(tmp_path / "g").spec.scheduler_gate == 0.0


def test_tune_gate_picks_the_cheapest_candidate(pipe):
    tuned, rec = gate.tune_gate(pipe, gates=(1.0, 1e9), batch=64, seed=1)
    table = {r["gate"]: r for r in rec["table"]}
    assert set(table) == {0.0, 1.0, 1e9}
    assert table[0.0]["relative_cost"] == 1.0 and table[0.0]["last_pass_share"] == 1.0
    # gate 1e9 runs the last pass for everyone: the same decisions and MACs as gate 0
    assert table[1e9]["relative_cost"] == pytest.approx(1.0, abs=1e-6)
    assert table[1e9]["last_pass_share"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < table[1.0]["last_pass_share"] < 1.0
    best = min(rec["table"], key=lambda r: r["relative_cost"])["gate"]
    assert rec["gate"] == best == tuned.spec.scheduler_gate
    assert json.loads(tuned.record)["scheduler_gate_tuning"]["gate"] == best
    with pytest.raises(ValueError, match="gates must be >= 0"):
        gate.tune_gate(pipe, gates=(-1.0,), batch=8)


def test_validation_set_draws_the_trained_cells_and_n(pipe):
    scn, valid, cells = gate.validation_set(pipe, 256, 0)
    n = np.asarray(valid).sum(-1)
    assert n.min() >= pipe.spec.n_users_min and n.max() <= pipe.spec.n_users
    assert len(set(n.tolist())) > 2
    for r in pipe.spec.cell_ranges:
        v = np.asarray(getattr(cells, r.name))
        assert v.min() >= r.lo * (1 - 1e-6) and v.max() <= r.hi * (1 + 1e-6)
        assert np.ptp(v) > 0


def test_cli_writes_the_tuned_pipeline(pipe, tmp_path, launch):
    pipeline.save_pipeline(pipe, tmp_path / "in")
    r = launch([sys.executable, ROOT / "launch" / "tune_gate.py", f"--pipeline={tmp_path / 'in'}",
                "--gates=0.5,1e9", "--batch=32", f"--workdir={tmp_path / 'out'}"],
               cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert rec["gate"] in (0.0, 0.5, 1e9) and "<- chosen" in r.stdout
    back = pipeline.load_pipeline(tmp_path / "out" / "pipeline")
    assert back.spec.scheduler_gate == rec["gate"]
    np.testing.assert_array_equal(
        np.asarray(jax.tree.leaves(back.scheduler_params)[0]),
        np.asarray(jax.tree.leaves(pipe.scheduler_params)[0]))
    for gates in ("x", "-1", "nan"):
        bad = launch([sys.executable, ROOT / "launch" / "tune_gate.py",
                      f"--pipeline={tmp_path / 'in'}", f"--gates={gates}",
                      f"--workdir={tmp_path / 'o2'}"], cwd=ROOT, timeout=600)
        assert bad.returncode == 2 and "error" in bad.stderr.lower(), (gates, bad.stderr)
        assert not (tmp_path / "o2").exists()   # nothing written


def test_one_pass_pipeline_cannot_exit_early(cell_pipeline):
    one = cell_pipeline(SP, "default", 5, scheduler_passes=1)
    with pytest.raises(ValueError, match="scheduler_passes >= 2"):
        gate.with_gate(one, 1.0)


def test_training_with_a_gate_runs_and_decides_with_fewer_macs(tiny_allocator):
    alloc = tiny_allocator(SP)
    cfg = TrainConfig(n_users=6, n_users_min=2, batch=8, pretrain_steps=2, episodes=3,
                      cell="default", scheduler_passes=2, scheduler_gate=1.0)
    state, m = joint.train_seeds(cfg, alloc, SP, jax.random.split(jax.random.key(0), 1))
    assert np.all(np.isfinite(np.asarray(m["joint"]["cost"])))
    one = joint.unstack(state, 0)
    scn, valid = system.sample_mixed_scenarios(jax.random.key(1), SP, 32, 2)
    assert np.isfinite(float(joint.evaluate_state(cfg, alloc, one, scn, SP, valid)["cost"]))
    pipe = pipeline.make_pipeline(cfg, alloc, one)
    assert pipe.spec.scheduler_gate == 1.0
    # a gate that half the users pass (3 episodes leave the logits near 0)
    tau = float(np.median(np.abs(_earlier_logits(pipe, scn, SP))))
    gated = np.asarray(pipeline.decide_body(gate.with_gate(pipe, tau), scn, SP,
                                            valid=valid).inference_delay_local)
    full = np.asarray(pipeline.decide_body(gate.with_gate(pipe, 1e9), scn, SP,
                                           valid=valid).inference_delay_local)
    assert np.all(gated <= full * (1 + 1e-6)) and gated.sum() < full.sum()
