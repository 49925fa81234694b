"""``--export_pretrained`` never ships a broken model over a default.

Each exporter (allocator, joint pipeline, DROO) copies a workdir's model
into a destination only if every weight is finite and its recorded gap is
at most the stated threshold; otherwise ``ValueError`` naming the path
(the launchers turn it into one line and exit 2) and the destination is
left as it was.
"""

import json

import jax
import numpy as np
import pytest

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import pipeline, system
from dynmec_jax.baselines import droo, droo_train
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import joint_run, loop


def _poison(params):
    """``params`` with one NaN weight (the first leaf's first entry)."""
    leaves, tree = jax.tree.flatten(params)
    a = np.array(leaves[0], np.float32)
    a.reshape(-1)[0] = np.nan
    return jax.tree.unflatten(tree, [a, *leaves[1:]])


def _check(export, workdir, dst, ok: bool, match: str = ""):
    if ok:
        assert export(workdir, dst) == dst
        return
    before = sorted(p.name for p in dst.iterdir()) if dst.exists() else None
    with pytest.raises(ValueError, match=match):
        export(workdir, dst)
    assert (sorted(p.name for p in dst.iterdir()) if dst.exists() else None) == before


@pytest.mark.parametrize("record, poison, ok, match", [
    ({"max_gap_all": 0.02}, False, True, ""),
    ({"max_gap_all": 0.02}, True, False, "non-finite weights"),
    ({"max_gap_all": train_allocator.EXPORT_MAX_GAP * 1.01}, False, False, "above the export"),
    ({"max_gap_all": float("nan")}, False, False, "not finite"),
    ({"max_gap_all": float("inf")}, False, False, "not finite"),
    ({}, False, False, "missing"),
])
def test_allocator_export_refuses_nonfinite_weights_and_large_gaps(
        tmp_path, tiny_allocator, record, poison, ok, match):
    alloc = tiny_allocator(system.SystemParams(n_users=3))
    if poison:
        alloc = alloc.replace(params=_poison(alloc.params))
    allocator_lib.save_allocator(alloc, tmp_path / "wd" / "allocator", record)
    _check(train_allocator.export_pretrained, tmp_path / "wd", tmp_path / "dst", ok, match)
    if ok:
        back = allocator_lib.load_allocator(tmp_path / "dst")
        jax.tree.map(np.testing.assert_array_equal, back.params, alloc.params)


@pytest.mark.parametrize("gap, poison, ok", [
    (0.3, False, True), (0.3, True, False), (droo_train.EXPORT_MAX_GAP_TO_GREEDY + 0.1, False,
                                               False), (float("nan"), False, False)])
def test_droo_export_refuses_nonfinite_weights_and_large_gaps(tmp_path, gap, poison, ok):
    cfg = droo.DrooConfig(n_max=3, hidden=(8, 4))
    params = droo.init_params(jax.random.key(0), cfg)
    if poison:
        params = _poison(params)
    record = {"exported_seed": 1, "per_seed": [{"gap_to_greedy": 0.0},
                                               {"gap_to_greedy": gap}]}
    droo.save_droo(params, 2, cfg, tmp_path / "wd" / "droo", record)
    _check(droo_train.export_pretrained, tmp_path / "wd", tmp_path / "dst", ok,
           "non-finite weights" if poison else "gap to greedy")
    if ok:
        assert droo.load_droo(tmp_path / "dst").k == 2


@pytest.fixture(scope="module")
def shipped_pipeline():
    return pipeline.load_pipeline()


@pytest.mark.parametrize("record, poison, ok", [
    ({"gap_to_greedy": -0.01}, False, True),
    ({"gap_to_greedy": -0.01}, True, False),
    ({"gap_to_greedy": joint_run.EXPORT_MAX_GAP_TO_GREEDY + 0.01}, False, False),
    ({}, False, False),                       # a record from before the gap was recorded
])
def test_pipeline_export_refuses_nonfinite_weights_and_large_gaps(
        tmp_path, shipped_pipeline, record, poison, ok):
    pipe = shipped_pipeline.replace(record=json.dumps(record))
    if poison:
        pipe = pipe.replace(policy_params=_poison(pipe.policy_params))
    pipeline.save_pipeline(pipe, tmp_path / "wd" / "pipeline")
    _check(joint_run.export_pretrained, tmp_path / "wd", tmp_path / "dst", ok,
           "non-finite weights" if poison else "gap to greedy")
    if ok:
        assert json.loads(pipeline.load_pipeline(tmp_path / "dst").record) == record


def test_check_export_names_the_path_and_the_threshold():
    with pytest.raises(ValueError, match=r"^/m: gap x 0\.2 is missing, not finite or above "
                                         r"the export threshold 0\.1; not exported$"):
        loop.check_export("/m", {"w": np.ones(2)}, "gap x", 0.2, 0.1)
    with pytest.raises(ValueError, match="not finite or above"):
        loop.check_export("/m", {"w": np.ones(2)}, "gap x", True, 0.1)
    loop.check_export("/m", {"w": np.ones(2)}, "gap x", 0.1, 0.1)
