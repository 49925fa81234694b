"""The one training loop (dynmec_jax.train.loop) and the chunked run of Algorithm 1
(dynmec_jax.train.joint_run): same numbers as one program, curves, resume, divergence."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct

import chex
import jax
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import files, pipeline, system, typedconfig
from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.configs import joint as joint_configs
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import joint, joint_run, loop
from dynmec_jax.train.config import AllocatorConfig, JointConfig

N = 4


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_allocator) -> JointConfig:
    """A tiny run: N = 4, the tiny allocator saved to disk, 5 pre-training steps and 9
    episodes in chunks of 4 (uneven on purpose)."""
    sp = system.SystemParams(n_users=N)
    path = tmp_path_factory.mktemp("alloc")
    allocator_lib.save_allocator(tiny_allocator(sp), path)
    cd = joint_configs.get_config("smoke")
    cd.allocator = str(path)
    cd.system.n_users = N
    cd.train.update(batch=8, pretrain_steps=5, episodes=9, chunk=4)
    cd.eval.update(batch=16, curve_batch=8)
    return typedconfig.from_configdict(JointConfig, cd)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, config):
    wd = tmp_path_factory.mktemp("run")
    pipe, record = joint_run.train_and_save(config, wd, progress=False)
    return wd, pipe, record


def test_chunks_give_the_numbers_of_one_program(config, finished):
    wd, pipe, record = finished
    alloc = joint_run.load_allocator(config)
    states, _ = joint.train_seeds(config.train, alloc, config.system,
                                  files.seed_keys(config.seed, config.n_seeds))
    best = joint.unstack(states, record["exported_seed"])
    # the same per-step keys; programs fused differently (a chunk vs the whole scan): float
    # rounding apart, the same weights after 14 Adam steps
    chex.assert_trees_all_close((pipe.scheduler_params, pipe.policy_params),
                                (best.scheduler, best.policy), rtol=1e-5, atol=1e-6)
    assert record["validation"][record["exported_seed"]]["cost"] == min(
        r["cost"] for r in record["validation"])
    # every seed is saved too, with its own weights and gap
    for i in range(config.n_seeds):
        seed_pipe = pipeline.load_pipeline(wd / "seeds" / str(i) / "pipeline")
        chex.assert_trees_all_close(seed_pipe.scheduler_params,
                                    joint.unstack(states, i).scheduler, rtol=1e-5, atol=1e-6)
        rec = json.loads(seed_pipe.record)
        assert rec["seed"] == i
        assert rec["gap_to_greedy"] == pytest.approx(
            record["validation"][i]["cost"] / record["greedy_cost"] - 1)


def _history(wd):
    return [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]


def test_curves_are_written_per_chunk(finished):
    wd, _, record = finished
    hist = _history(wd)
    assert [h["step"] for h in hist] == [4, 5, 9, 13, 14]   # 5 pre-training steps, 9 episodes
    assert "pretrain/loss" in hist[0] and "joint/cost" in hist[-1]
    assert {"validation/cost", "validation/gap_to_greedy", "validation/gap_to_optimum",
            "joint/entropy"} <= set(hist[-1])
    assert len(hist[-1]["per_seed"]["joint/cost"]) == 2
    assert hist[-1]["validation/gap_to_optimum"] > -1e-6   # the optimum is a lower bound
    assert (wd / "curves.png").stat().st_size > 1000
    assert _tensorboard(wd)[("joint/cost", 14)] == 1


def _tensorboard(wd) -> dict:
    """``{(tag, step): count}`` of the scalars TensorBoard shows: it reads the event files in
    order, and a file's first event with a ``purge_step`` drops earlier events at or after
    that step (tensorboardX's SessionLog START)."""
    seen: dict = {}
    for f in sorted((wd / "tensorboard").iterdir()):
        data = f.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                seen = {k: v for k, v in seen.items() if k[1] < ev.step}
            for v in ev.summary.value:
                seen[(v.tag, ev.step)] = seen.get((v.tag, ev.step), 0) + 1
    return seen


def test_a_killed_run_with_a_corrupt_newest_checkpoint_resumes_with_the_same_numbers(
        tmp_path, config, finished):
    """The state a kill leaves: curves past the last good checkpoint, the newest checkpoint
    truncated.  The rerun falls back to the checkpoint before (a warning), recomputes, and
    ends with the same model and the same curves, no step twice (JSON lines or
    TensorBoard)."""
    wd0, pipe0, _ = finished
    wd = tmp_path / "run"
    shutil.copytree(wd0, wd)
    shutil.rmtree(wd / "pipeline")
    (wd / "train_joint.json").unlink()
    newest = wd / "checkpoints" / "14"
    for f in newest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with pytest.warns(UserWarning, match="does not restore"):
        pipe, _ = joint_run.train_and_save(config, wd, progress=False)
    chex.assert_trees_all_equal((pipe.scheduler_params, pipe.policy_params),
                                (pipe0.scheduler_params, pipe0.policy_params))
    h0, h1 = _history(wd0), _history(wd)
    assert [h["step"] for h in h1] == [h["step"] for h in h0]
    for a, b in zip(h0, h1, strict=True):
        assert a.keys() == b.keys() and all(np.allclose(a[k], b[k]) for k in a if k != "per_seed")
    counts = _tensorboard(wd)
    assert set(counts.values()) == {1} and ("joint/cost", 14) in counts


def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
    cd = allocator_configs.get_config("smoke")
    cd.train.lr = 10.0
    config = typedconfig.from_configdict(AllocatorConfig, cd)
    with pytest.raises(loop.DivergenceError, match="diverged at step") as e:
        train_allocator.train_and_evaluate(config, tmp_path, progress=False)
    assert e.value.step % config.train.chunk_steps == 0
    assert not (tmp_path / "allocator_eval.json").exists()
    mngr = loop.checkpoint_manager(tmp_path)
    steps = mngr.all_steps()
    assert all(s < e.value.step for s in steps)
    if steps:
        restored = loop.restore(mngr, jax.tree.map(np.asarray, _template(config)))[1]
        assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(restored))
    mngr.close()


def _template(config):
    s = train_allocator.setup(config)
    init = jax.vmap(lambda k: train_allocator.init_state(k, s.model, s.tx))
    return init(files.seed_keys(0, config.n_seeds))


def test_check_finite_names_the_quantity():
    loop.check_finite(3, {"a": np.ones(2)}, {"w": np.ones(3)})
    with pytest.raises(loop.DivergenceError, match="step 7: b is not finite"):
        loop.check_finite(7, {"a": np.ones(2), "b": np.array([1.0, np.nan])}, ())
    with pytest.raises(loop.DivergenceError, match="the weights"):
        loop.check_finite(7, {}, {"w": np.array([np.inf])})


def test_a_collapsed_scheduler_is_reported(tmp_path, config):
    """lr 1e-12: the scheduler stays at p = 0.5 and offloads nothing (p > 0.5 is false);
    in a cell where the greedy offloads about half the tasks, the run warns."""
    cfg = typedconfig.replace_path(config, "train", dataclasses.replace(
        config.train, scheduler_lr=1e-12, pretrain_steps=1, episodes=2))
    cfg = typedconfig.replace_path(cfg, "system", cfg.system.replace(bandwidth_max=0.05e6,
                                                                      f_server=0.25e9))
    _, record = joint_run.train_and_save(cfg, tmp_path, progress=False)
    assert any("collapsed" in w for w in record["warnings"])
    assert pipeline.load_pipeline(tmp_path / "pipeline").spec.n_users == N
