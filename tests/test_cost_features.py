"""The set scheduler's per-user cost features (nets/features.cost_features, PipelineSpec)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from dynmec_jax import accounting, cell, evaluation, pipeline, system
from dynmec_jax.nets import features
from dynmec_jax.train import joint
from dynmec_jax.train.config import TrainConfig

SP = system.SystemParams(n_users=6)


def test_first_feature_is_the_stand_alone_cost_ratio():
    sp = SP.replace(path_loss_exp=3.5, beta=0.4)
    scn = system.sample_scenarios(jax.random.key(0), sp, 64)
    u = np.asarray(features.cost_features(scn, sp), np.float64)
    assert u.shape == (64, 6, features.N_COST_FEATURES)
    full = np.full(scn.size.shape, 1.0)
    edge = np.asarray(system.cost_edge(scn, full * sp.bandwidth_max, full * sp.f_server, sp),
                      np.float64)
    loc = np.asarray(system.cost_local(scn, sp), np.float64)
    ratio = np.log(edge / loc)
    inside = np.abs(ratio) < features.COST_CLIP - 1
    assert inside.mean() > 0.5
    np.testing.assert_allclose(u[..., 0][inside] * features.COST_SCALE, ratio[inside],
                               rtol=1e-4, atol=1e-4)
    # Positive exactly where offloading alone costs more than local execution.
    np.testing.assert_array_equal(u[..., 0] > 0, edge > loc)
    # The channel and server parts are each below the whole.
    assert np.all(u[..., 1] <= u[..., 0] + 1e-6) and np.all(u[..., 2] <= u[..., 0] + 1e-6)


def test_channel_part_follows_the_path_loss_exponent_of_far_users():
    scn = system.sample_scenarios(jax.random.key(1), SP, 8)
    far = scn.replace(distance=np.full(scn.size.shape, 450.0, np.float32))
    chan = [np.asarray(features.cost_features(far, SP.replace(path_loss_exp=h)))[..., 1]
            for h in (2.0, 3.0, 4.0)]
    live = np.asarray(scn.size) > 0
    assert np.all(chan[1][live] > chan[0][live]) and np.all(chan[2][live] >= chan[1][live])


def test_empty_and_padded_users_give_finite_features():
    scn = system.sample_scenarios(jax.random.key(2), SP, 4)
    padded, valid = system.pad_users(scn, 10, SP)
    u = np.asarray(features.cost_features(padded, SP))
    assert np.all(np.isfinite(u)) and np.all(np.abs(u) <= features.COST_CLIP / features.COST_SCALE)
    np.testing.assert_array_equal(u[~np.asarray(valid)], 0.0)   # 0 / 0: both costs floored


@pytest.fixture
def make(cell_pipeline):
    """``make(cost, seed=3, text="default")``: a tiny cell pipeline at SP (conftest)."""
    return lambda cost, seed=3, text="default": cell_pipeline(SP, text, seed,
                                                             cost_features=cost)


def test_scheduler_reads_them_after_the_cell_and_counts_their_macs(make):
    with_cost = make(True)
    without = make(False)
    n_cell = len(cell.parse_range("default"))
    assert with_cost.models.scheduler.n_cell == n_cell + features.N_COST_FEATURES
    assert with_cost.models.scheduler_macs == accounting.set_scheduler_macs(
        6, counts=True, n_cell=n_cell + features.N_COST_FEATURES)
    assert with_cost.models.scheduler_macs > without.models.scheduler_macs
    scn = system.sample_scenarios(jax.random.key(3), SP, 5)
    tail = with_cost.models.scheduler_tail(scn, SP)
    assert tail.shape == (5, 6, n_cell + features.N_COST_FEATURES)
    np.testing.assert_allclose(tail[..., :n_cell], np.broadcast_to(
        with_cost.models.cell_features(SP), (5, 6, n_cell)))
    np.testing.assert_allclose(tail[..., n_cell:], features.cost_features(scn, SP))
    assert without.models.scheduler_tail(scn, SP).shape == (n_cell,)
    # Without cell features: the cost features alone.
    alone = make(True, text="")
    assert alone.models.scheduler_tail(scn, SP).shape == (5, 6, features.N_COST_FEATURES)
    with pytest.raises(ValueError, match="cost_features needs"):
        pipeline.PipelineSpec(scheduler="paper", cost_features=True)


def test_warm_start_keeps_decisions_and_cells_decide_one_by_one(make):
    old = make(False)
    new = make(True, seed=9)
    new = new.replace(scheduler_params=joint.warm_start(new.scheduler_params,
                                                        old.scheduler_params),
                      policy_params=old.policy_params)
    scn = system.sample_scenarios(jax.random.key(4), SP, 8)
    np.testing.assert_array_equal(old.decide(scn, SP).offload, new.decide(scn, SP).offload)
    # Per-scenario cells (the cost features then come from each scenario's own cell).
    trained = make(True, seed=5)
    cells = cell.sample_cells(jax.random.key(6), SP, 3, trained.cell_range)
    few = jax.tree.map(lambda a: a[:3], scn)
    both = trained.decide(few, cells)
    for i in range(3):
        one = trained.decide(jax.tree.map(lambda a, i=i: a[i], few),
                             jax.tree.map(lambda a, i=i: a[i], cells))
        np.testing.assert_array_equal(both.offload[i], one.offload)


def test_save_load_and_training_with_cost_features(make, tiny_allocator, tmp_path):
    pipe = make(True)
    pipeline.save_pipeline(pipe, tmp_path / "p")
    back = pipeline.load_pipeline(tmp_path / "p")
    assert back.spec.cost_features
    scn = system.sample_scenarios(jax.random.key(1), SP, 4)
    sp = SP.replace(path_loss_exp=4.0)
    np.testing.assert_array_equal(back.decide(scn, sp).offload, pipe.decide(scn, sp).offload)
    # A pipeline.json written before the field existed loads without cost features.
    old = make(False)
    pipeline.save_pipeline(old, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "pipeline.json").read_text())
    del meta["spec"]["cost_features"]
    (tmp_path / "old" / "pipeline.json").write_text(json.dumps(meta))
    back_old = pipeline.load_pipeline(tmp_path / "old")
    assert not back_old.spec.cost_features
    np.testing.assert_array_equal(back_old.decide(scn, sp).offload, old.decide(scn, sp).offload)
    cfg = TrainConfig(n_users=6, n_users_min=2, batch=4, pretrain_steps=2, episodes=3,
                      cell="default", cost_features=True)
    state, m = joint.train_seeds(cfg, tiny_allocator(SP), SP,
                                 jax.random.split(jax.random.key(0), 1))
    assert np.all(np.isfinite(np.asarray(m["joint"]["cost"])))
    trained = pipeline.make_pipeline(cfg, tiny_allocator(SP), joint.unstack(state, 0))
    assert trained.spec.cost_features


def test_dropping_a_dominated_task_never_costs_more():
    """Under the optimal allocation, keeping a dominated task local never costs more."""
    sp = SP.replace(path_loss_exp=4.0, n_users=6)
    scn = system.sample_scenarios(jax.random.key(7), sp, 256)
    dom = np.asarray(features.dominated(scn, sp))
    assert 0.02 < dom.mean() < 0.9
    np.testing.assert_array_equal(dom, np.asarray(features.cost_features(scn, sp))[..., 0] > 0)
    x = np.asarray(jax.random.bernoulli(jax.random.key(8), 0.7, dom.shape)) | dom
    keep = x & ~dom

    def cost(offload):
        res = evaluation.without_inference(evaluation.optimal(scn, sp, offload))
        return np.asarray(evaluation.scenario_metrics(scn, res, sp).cost, np.float64)

    with_dom, without = cost(x), cost(keep)
    assert np.all(without <= with_dom * (1 + 1e-5))
    has = dom.any(axis=-1)                       # scenarios with a dominated task
    assert has.sum() > 20 and np.mean(without[has] < with_dom[has] * (1 - 1e-3)) > 0.5


def test_skip_dominated_keeps_them_local_and_nothing_else(make):
    pipe = make(True)
    guarded = pipe.replace(spec=dataclasses.replace(pipe.spec, skip_dominated=True))
    sp = SP.replace(path_loss_exp=4.0)
    scn = system.sample_scenarios(jax.random.key(9), sp, 64)
    dom = np.asarray(features.dominated(scn, sp))
    a = np.asarray(pipe.decide(scn, sp).offload)
    b = np.asarray(guarded.decide(scn, sp).offload)
    assert (a & dom).any()                       # the test's scheduler offloads some
    np.testing.assert_array_equal(b, a & ~dom)
    # Per-scenario cells: each scenario's own cell decides which tasks are dominated.
    cells = cell.sample_cells(jax.random.key(10), SP, 64, pipe.cell_range)
    per = np.asarray(guarded.decide(scn, cells).offload)
    dom_per = np.stack([np.asarray(features.dominated(
        jax.tree.map(lambda v, i=i: v[i], scn), jax.tree.map(lambda v, i=i: v[i], cells)))
        for i in range(64)])
    assert not (per & dom_per).any()
    cfg = TrainConfig(n_users=6, n_users_min=2, cell="default", cost_features=True,
                      skip_dominated=True)
    assert pipeline.build_models(cfg, pipe.allocator).skip_dominated
