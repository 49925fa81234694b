"""Tests of dynmec_jax/cell.py and of pipelines conditioned on the cell (tiny sizes)."""

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import cell, pipeline, system
from dynmec_jax.nets import scheduler as scheduler_net
from dynmec_jax.train import joint
from dynmec_jax.train.config import TrainConfig

SP = system.SystemParams(n_users=6)


def test_range_text_round_trips_and_default_expands():
    r = cell.parse_range("default")
    assert [f.name for f in r][:2] == ["bandwidth_max", "f_server"]
    assert cell.parse_range(cell.format_range(r)) == r
    assert cell.normalize_range("") == ""
    spec = pipeline.PipelineSpec(cell="default")
    assert spec.cell == cell.format_range(r) and spec.cell_ranges == r


@pytest.mark.parametrize("text", ["foo=1:2:log", "beta=1:0:lin", "beta=0:1:sqrt",
                                  "bandwidth_max=0:1:log", "beta=0:1", "beta=0:1:lin,beta=0:1:lin"])
def test_bad_range_raises_naming_the_entry(text):
    with pytest.raises(ValueError, match="cell range"):
        cell.parse_range(text)
    with pytest.raises(ValueError, match="train.cell"):
        pipeline.PipelineSpec(cell=text)


def test_features_map_the_range_to_minus_one_one():
    r = cell.parse_range("bandwidth_max=1e5:5e6:log,beta=0:1:lin")
    lo = cell.cell_features(SP.replace(bandwidth_max=1e5, beta=0.0), r)
    hi = cell.cell_features(SP.replace(bandwidth_max=5e6, beta=1.0), r)
    np.testing.assert_allclose(lo, [-1, -1], atol=1e-5)
    np.testing.assert_allclose(hi, [1, 1], atol=1e-5)
    cells = cell.sample_cells(jax.random.key(0), SP, 100, r)
    f = np.asarray(cell.cell_features(cells, r))
    assert f.shape == (100, 2) and np.all(np.abs(f) <= 1 + 1e-5)
    assert np.asarray(cells.f_server).shape == (100,)
    np.testing.assert_allclose(cells.f_server, SP.f_server)   # unranged: the base value


def test_edge_share_puts_fields_at_the_ends_of_their_range():
    r = cell.parse_range("f_server=5e8:2e10:log,beta=0:1:lin")
    key = jax.random.key(3)
    plain = cell.sample_cells(key, SP, 4000, r)
    # 0 draws exactly as without the argument
    np.testing.assert_array_equal(cell.sample_cells(key, SP, 4000, r, 0.0).beta, plain.beta)
    edged = cell.sample_cells(key, SP, 4000, r, 0.2)
    for name, lo, hi in (("f_server", 5e8, 2e10), ("beta", 0.0, 1.0)):
        v = np.asarray(getattr(edged, name), np.float64)
        at_lo, at_hi = np.isclose(v, lo, rtol=1e-5), np.isclose(v, hi, rtol=1e-5)
        assert 0.08 < at_lo.mean() < 0.12 and 0.08 < at_hi.mean() < 0.12, name
        assert np.all((v >= lo * (1 - 1e-5)) & (v <= hi * (1 + 1e-5)))
        # the others keep their uniform draw
        inner = ~(at_lo | at_hi)
        np.testing.assert_array_equal(v[inner], np.asarray(getattr(plain, name))[inner])
    with pytest.raises(ValueError, match="edge_share"):
        cell.sample_cells(key, SP, 4, r, 1.5)
    with pytest.raises(ValueError, match="cell_edge_share"):
        TrainConfig(cell_edge_share=-0.1)


def test_out_of_range_names_field_value_and_range():
    r = cell.parse_range("default")
    assert cell.out_of_range(SP, r, SP) == []
    lines = cell.out_of_range(SP.replace(f_server=3e10, alpha=2.0, distance_max=900.0), r, SP)
    assert len(lines) == 2
    assert lines[0].startswith("f_server = 3e+10 outside the trained range [5e+08, 2e+10]")
    assert lines[1].startswith("alpha = 2 outside the trained range [1, 1]")
    # A pipeline trained at one cell: every decision field must be that cell's.
    assert cell.out_of_range(SP.replace(f_server=3e9), (), SP)[0].startswith("f_server = 3e+09")


@pytest.fixture
def make(cell_pipeline):
    """``make(text="default", seed=3)``: a tiny cell pipeline at SP (conftest)."""
    return lambda text="default", seed=3: cell_pipeline(SP, text, seed)


def test_decisions_change_with_the_cell(make):
    pipe = make()
    scn = system.sample_scenarios(jax.random.key(1), SP, 16)
    cells = [SP, SP.replace(bandwidth_max=5e6), SP.replace(f_server=20e9),
             SP.replace(beta=1.0), SP.replace(efficiency=0.1)]
    m = pipe.models
    probs = [np.asarray(scheduler_net.offload_probabilities(
        m.scheduler, pipe.scheduler_params, scn, pipe.allocator.scales, None,
        m.cell_features(c))) for c in cells]
    for p in probs[1:]:
        assert np.abs(p - probs[0]).max() > 1e-3
    offs = [np.asarray(pipe.decide(scn, c).offload) for c in cells]
    assert any((o != offs[0]).any() for o in offs[1:])
    # A pipeline without cell features: the scheduler ignores the cell.
    old = make("")
    np.testing.assert_array_equal(old.decide(scn, cells[2]).offload, old.decide(scn, SP).offload)


def test_per_scenario_cells_decide_as_one_cell_each(make):
    pipe = make()
    scn = system.sample_scenarios(jax.random.key(2), SP, 3)
    cells = cell.sample_cells(jax.random.key(5), SP, 3, pipe.cell_range)
    both = pipe.decide(scn, cells)
    for i in range(3):
        one = pipe.decide(jax.tree.map(lambda a, i=i: a[i], scn),
                          jax.tree.map(lambda a, i=i: a[i], cells))
        np.testing.assert_array_equal(both.offload[i], one.offload)
        np.testing.assert_allclose(both.bandwidth[i], one.bandwidth, rtol=1e-5)
        np.testing.assert_allclose(both.inference_delay_edge[i], one.inference_delay_edge,
                                   rtol=1e-5)


def test_outside_the_range_warns(make):
    pipe = make()
    scn = system.sample_scenarios(jax.random.key(1), SP, 2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pipe.decide(scn, SP.replace(f_server=50e9))
    assert any("f_server = 5e+10 outside the trained range" in str(x.message) for x in w)


def test_range_round_trips_through_save_and_load(make, tmp_path):
    pipe = make("f_server=1e9:1e10:log,beta=0:0.5:lin")
    pipeline.save_pipeline(pipe, tmp_path / "p")
    back = pipeline.load_pipeline(tmp_path / "p")
    assert back.spec == pipe.spec and back.cell_range == pipe.cell_range
    scn = system.sample_scenarios(jax.random.key(1), SP, 4)
    sp = SP.replace(f_server=5e9, beta=0.3)
    np.testing.assert_array_equal(back.decide(scn, sp).offload, pipe.decide(scn, sp).offload)


def test_pipeline_json_without_cell_loads(make, tmp_path):
    pipe = make("")
    pipeline.save_pipeline(pipe, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "pipeline.json").read_text())
    del meta["spec"]["cell"]                     # a file written before cells existed
    (tmp_path / "old" / "pipeline.json").write_text(json.dumps(meta))
    back = pipeline.load_pipeline(tmp_path / "old")
    assert back.spec.cell == "" and back.cell_range == ()


def test_warm_start_keeps_the_old_decisions(make):
    old = make("")
    new = make("default", seed=9)
    new = new.replace(
        scheduler_params=joint.warm_start(new.scheduler_params, old.scheduler_params),
        policy_params=joint.warm_start(new.policy_params, old.policy_params))
    scn = system.sample_scenarios(jax.random.key(4), SP, 8)
    a, b = old.decide(scn, SP), new.decide(scn, SP)
    np.testing.assert_array_equal(a.offload, b.offload)
    np.testing.assert_array_equal(a.width, b.width)
    with pytest.raises(ValueError, match="warm-start"):
        joint.warm_start({"k": jnp.zeros((2, 3))}, {"k": jnp.zeros((2, 4))})
    with pytest.raises(ValueError, match="layers .'b'. the new one lacks"):
        joint.warm_start({"a": {"k": jnp.zeros(2)}}, {"a": {"k": jnp.zeros(2)}, "b": {}})


def test_warm_start_adds_passes_with_the_same_logits(make):
    two = make()
    spec3 = dataclasses.replace(two.spec, scheduler_passes=3)
    m3 = pipeline.build_models(spec3, two.allocator)
    fresh = scheduler_net.init_scheduler(jax.random.key(11), m3.scheduler, 6)
    three = two.replace(spec=spec3,
                        scheduler_params=joint.warm_start(fresh, two.scheduler_params))
    assert set(three.scheduler_params["params"]) > set(two.scheduler_params["params"])
    scn = system.sample_scenarios(jax.random.key(12), SP, 8)
    logits = [scheduler_net.offload_logits(p.models.scheduler, p.scheduler_params, scn,
                                           p.allocator.scales, None, p.models.cell_features(SP))
              for p in (two, three)]
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-6, atol=1e-6)
    assert three.models.scheduler_macs > two.models.scheduler_macs


def test_cell_training_runs_and_samples_cells(tiny_allocator):
    alloc = tiny_allocator(SP)
    cfg = TrainConfig(n_users=6, n_users_min=2, batch=4, pretrain_steps=2, episodes=2,
                      cell="default")
    cells = joint.sample_training_cells(cfg, jax.random.key(0), SP)
    assert np.unique(np.asarray(cells.f_server)).size == 4
    assert joint.sample_training_cells(dataclasses.replace(cfg, cell=""), None, SP) is SP
    mixed = joint.sample_training_cells(
        dataclasses.replace(cfg, batch=64, cell_base_share=0.5), jax.random.key(1), SP)
    at_base = np.asarray(mixed.f_server) == np.float32(SP.f_server)
    assert 10 < at_base.sum() < 54
    np.testing.assert_array_equal(np.asarray(mixed.beta)[at_base], np.float32(SP.beta))
    ends = joint.sample_training_cells(dataclasses.replace(cfg, batch=64, cell_edge_share=1.0),
                                       jax.random.key(2), SP)
    assert set(np.unique(np.asarray(ends.beta)).tolist()) == {0.0, 1.0}
    state, m = joint.train_seeds(cfg, alloc, SP, jax.random.split(jax.random.key(0), 1))
    assert np.all(np.isfinite(np.asarray(m["joint"]["cost"])))
    pipe = pipeline.make_pipeline(cfg, alloc, joint.unstack(state, 0))
    assert pipe.models.policy_macs > pipeline.build_models(
        dataclasses.replace(cfg, cell=""), alloc).policy_macs
