"""Tests of dynmec_jax.baselines.droo and droo_train: DROO (Huang, Bi, Zhang, IEEE TMC 2020)."""

import dataclasses
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import accounting, system
from dynmec_jax.baselines import droo, droo_train, exhaustive

N = 6


def knm_reference(m, k):
    """DROO's reference ``knm`` (the PyTorch version), transcribed to NumPy as is."""
    m_list = [1 * (m > 0.5)]
    if k > 1:
        m_abs = abs(m - 0.5)
        idx_list = np.argsort(m_abs)[:k - 1]
        for i in range(k - 1):
            if m[idx_list[i]] > 0.5:
                m_list.append(1 * (m - m[idx_list[i]] > 0))
            else:
                m_list.append(1 * (m - m[idx_list[i]] >= 0))
    return m_list


def k_his_reference(k_idx, n, delta):
    """K of every frame under the reference main loop's adaptive-K rule (K = N at first)."""
    k, k_his, k_idx_his = n, [], []
    for i, best in enumerate(k_idx):
        if i > 0 and i % delta == 0:
            max_k = max(k_idx_his[-delta:-1]) + 1 if delta > 1 else k_idx_his[-1] + 1
            k = min(max_k + 1, n)
        k_his.append(k)
        k_idx_his.append(min(best, k - 1))      # a winning index is always < K
    return k_his, k_idx_his


def test_op_quantisation_matches_reference():
    rng = np.random.default_rng(0)
    vectors = [rng.uniform(size=N) for _ in range(20)]
    vectors.append(np.array([0.9, 0.1, 0.56, 0.47, 0.7, 0.2]))
    vectors.append(np.array([0.5, 0.8, 0.3, 0.52, 0.49, 0.99]))   # an entry exactly at 0.5
    # (No ties in |m - 0.5|: the reference breaks them by NumPy's unstable quicksort,
    # op_candidates by index.)
    for m in vectors:
        assert len(set(np.abs(m.astype(np.float32) - 0.5).tolist())) == N
        m32 = m.astype(np.float32)
        logits = np.log(m32) - np.log1p(-m32)
        for k in range(1, N + 1):
            ref = np.stack(knm_reference(m32, k)).astype(bool)
            cands, usable = droo.op_candidates(jnp.asarray(m32), k)
            np.testing.assert_array_equal(np.asarray(usable), np.arange(N) < k)
            np.testing.assert_array_equal(np.asarray(cands)[:k], ref)
            # The first candidate is the 0.5 threshold.
            np.testing.assert_array_equal(np.asarray(cands)[0], m32 > 0.5)
            # On logits with threshold 0 the candidates are the same (as used in training).
            c_log, _ = droo.op_candidates(jnp.asarray(logits), k, threshold=0.0)
            if not np.any(m32 == 0.5):
                np.testing.assert_array_equal(np.asarray(c_log), np.asarray(cands))


def test_op_quantisation_padding_and_masking():
    m = np.array([0.9, 0.1, 0.56, 0.47, 0.7, 0.2], np.float32)
    # Padded users (the last two) leave the ordering and never offload.
    valid = np.array([True, True, True, True, False, False])
    cands, usable = droo.op_candidates(jnp.asarray(m), 6, jnp.asarray(valid))
    assert not np.any(np.asarray(cands)[:, ~valid])
    np.testing.assert_array_equal(np.asarray(usable), np.arange(N) < 4)
    ref = np.stack(knm_reference(m[:4], 4)).astype(bool)
    np.testing.assert_array_equal(np.asarray(cands)[:4, :4], ref)
    # A batch with K per scenario: candidates at or beyond K are masked out.
    batch = jnp.stack([jnp.asarray(m)] * 3)
    _, usable = droo.op_candidates(batch, jnp.array([1, 3, 9]))
    np.testing.assert_array_equal(np.asarray(usable),
                                  np.arange(N)[None] < np.array([[1], [3], [6]]))
    # Masked candidates get cost +inf and are never chosen.
    sp = system.SystemParams(n_users=N)
    scn = system.sample_scenarios(jax.random.key(0), sp, 3)
    cands, usable = droo.op_candidates(batch, jnp.array([1, 3, 9]))
    scores = droo.score_candidates(scn, cands, usable, sp)
    assert np.all(np.isinf(np.asarray(scores.cost))[~np.asarray(usable)])
    assert np.all(np.isfinite(np.asarray(scores.cost))[np.asarray(usable)])


def test_replay_memory_wraps_and_keeps_newest():
    cfg = droo.DrooConfig(n_max=3, memory_size=8, batch=4, n_scenarios=10)
    mem = droo_train.init_state(jax.random.key(0), cfg).memory
    assert mem.labels.shape == (8, 3) and int(mem.count) == 0
    entry = 0
    for b in (3, 3, 3, 2):                          # 11 entries, in chunks
        ids = np.arange(entry, entry + b, dtype=np.float32)
        feats = jnp.broadcast_to(jnp.asarray(ids)[:, None, None], (b, 3, 5))
        labels = jnp.broadcast_to(jnp.asarray(ids)[:, None], (b, 3))
        mem = droo_train.memory_push(mem, feats, labels, jnp.ones((b, 3), bool))
        entry += b
        if entry == 3:
            # Before the memory fills, only written entries are sampled.
            f, lab, v = droo_train.memory_sample(mem, jax.random.key(1), 64)
            assert set(np.asarray(lab)[:, 0].tolist()) <= {0.0, 1.0, 2.0}
            assert f.shape == (64, 3, 5) and bool(jnp.all(v))
    assert int(mem.count) == 11
    stored = np.asarray(mem.labels)[:, 0]
    # Entry j sits in slot j % 8; the oldest three (0, 1, 2) were overwritten.
    np.testing.assert_array_equal(stored, [8, 9, 10, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(np.asarray(mem.features)[:, 1, 2], stored)
    _, lab, _ = droo_train.memory_sample(mem, jax.random.key(2), 256)
    assert set(np.asarray(lab)[:, 0].tolist()) == set(range(3, 11))


@pytest.mark.parametrize("delta", [1, 2, 5, 32])
def test_adaptive_k_follows_reference_rule(delta):
    n = 10
    rng = np.random.default_rng(delta)
    # Mostly small winning indices, with occasional large ones.
    raw = np.where(rng.uniform(size=300) < 0.1, rng.integers(0, n, 300),
                   rng.integers(0, 3, 300))
    k_his, k_idx = k_his_reference(raw.tolist(), n, delta)

    def step(carry, x):
        k, window = carry
        frame, best = x
        k, window = droo_train.adaptive_k_start(k, window, frame, delta, n)
        window = droo_train.adaptive_k_record(window, frame, best, delta)
        return (k, window), k

    init = (jnp.asarray(n, jnp.int32), jnp.asarray(-1, jnp.int32))
    _, ks = jax.lax.scan(step, init, (jnp.arange(300), jnp.asarray(k_idx, jnp.int32)))
    np.testing.assert_array_equal(np.asarray(ks), k_his)
    assert k_his[0] == n and min(k_his) < n        # starts at N, then adapts


@pytest.fixture(scope="module")
def trained():
    """Two seeds of DROO at N = 6 trained side by side (jit(vmap)), traced once."""
    cfg = droo.DrooConfig(n_max=N, n_scenarios=2000)
    sp = system.SystemParams(n_users=N)
    chex.clear_trace_counter()
    train = jax.jit(jax.vmap(chex.assert_max_traces(droo_train.make_train(cfg), n=1),
                             in_axes=(0, None)))
    states, metrics = train(jax.random.split(jax.random.key(0), 2), sp)
    # A second call (other seeds) does not trace again.
    states2, _ = train(jax.random.split(jax.random.key(1), 2), sp)
    return cfg, sp, states, metrics, states2


def test_make_train_vmaps_over_seeds(trained):
    cfg, _, states, metrics, states2 = trained
    for name, value in metrics.items():
        assert value.shape == (2, cfg.n_frames), name
        assert bool(jnp.all(jnp.isfinite(value))), name
    np.testing.assert_array_equal(np.asarray(states.updates), [cfg.n_updates] * 2)
    np.testing.assert_array_equal(np.asarray(states.frame), [cfg.n_frames] * 2)
    np.testing.assert_array_equal(np.asarray(metrics["trained"]).sum(-1), [cfg.n_updates] * 2)
    np.testing.assert_array_equal(np.asarray(states.memory.count), [cfg.n_scenarios] * 2)
    assert np.all(np.asarray(metrics["k"])[:, :cfg.k_interval] == N)     # K = N at first
    assert np.all((np.asarray(states.k) >= 1) & (np.asarray(states.k) <= N))
    # The seeds differ.
    a = jax.tree.leaves(states.params)[0]
    assert not np.allclose(a[0], a[1])
    assert not np.allclose(jax.tree.leaves(states2.params)[0][0], a[0])


def test_droo_learns(trained):
    cfg, sp, states, _, _ = trained
    params = jax.tree.map(lambda a: a[0], states.params)
    k = int(states.k[0])
    val = system.sample_scenarios(jax.random.key(123), sp, 256)
    d = jax.jit(droo.decide_full)(params, val, sp, k)
    cost = float(jnp.mean(d.cost))
    # The decision and allocation are consistent with the exact scoring.
    off, bw, f = jax.jit(droo.decide)(params, val, sp, k)
    np.testing.assert_array_equal(off, d.offload)
    np.testing.assert_allclose(exhaustive.subset_value(val, off, bw, f, sp), d.cost, rtol=1e-5)
    assert bool(jnp.all(jnp.where(off, True, (bw == 0) & (f == 0))))
    # All-local and random offloading (each with its exact allocation) cost more.
    local = float(jnp.mean(jnp.sum(system.cost_local(val, sp), -1)))
    x_rand = jax.random.bernoulli(jax.random.key(5), 0.5, val.shape)
    b, fr = exhaustive.energy_aware_allocation(val, x_rand, sp)
    rand = float(jnp.mean(exhaustive.subset_value(val, x_rand, b, fr, sp)))
    assert cost < local and cost < rand
    # Within a few % of the exact optimum (measured: 1.0%), and never below it.
    opt = exhaustive.exhaustive_optimum(val, sp, objective="cost", allocation="energy_aware")
    assert np.all(np.asarray(d.cost) >= np.asarray(opt.value) * (1 - 1e-4))
    gap = cost / float(jnp.mean(opt.value)) - 1
    assert 0 <= gap < 0.03, gap
    # Training helped: the trained DNN's own threshold decision (K = 1) beats the untrained one.
    init = droo.init_params(jax.random.key(0), cfg)
    trained_k1 = float(jnp.mean(droo.decide_full(params, val, sp, 1).cost))
    untrained_k1 = float(jnp.mean(droo.decide_full(init, val, sp, 1).cost))
    assert trained_k1 < untrained_k1


def test_mixed_n_never_offloads_padded_users():
    cfg = droo.DrooConfig(n_max=N, n_users_min=2, n_scenarios=300, batch=32,
                          scenarios_per_frame=3)
    sp = system.SystemParams(n_users=N)
    state, metrics = jax.jit(droo_train.make_train(cfg))(jax.random.key(4), sp)
    assert metrics["cost"].shape == (100,) and bool(jnp.all(jnp.isfinite(metrics["cost"])))
    # Padded users never enter the memory's labels.
    mem = state.memory
    assert not np.any(np.asarray(mem.labels)[~np.asarray(mem.valid)])
    scn, valid = system.sample_mixed_scenarios(jax.random.key(7), sp, 128, 2)
    off, bw, f = jax.jit(droo.decide)(state.params, scn, sp, N, valid)
    assert not np.any(np.asarray(off)[~np.asarray(valid)])
    assert np.all(np.asarray(bw)[~np.asarray(valid)] == 0)
    assert np.all(np.asarray(f)[~np.asarray(valid)] == 0)
    # Scenarios with fewer users are padded by decide itself, with the same result.
    small = jax.tree.map(lambda a: a[:, :4], system.sample_scenarios(jax.random.key(8), sp, 16))
    off4, bw4, _ = droo.decide(state.params, small, sp, N)
    padded, v = system.pad_users(small, N, sp)
    off6, bw6, _ = droo.decide(state.params, padded, sp, N, v)
    assert off4.shape == (16, 4)
    np.testing.assert_array_equal(off4, off6[:, :4])
    np.testing.assert_allclose(bw4, bw6[:, :4], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [
    dict(n_scenarios=645),                                      # 64 blocks of 10, then 5 frames
    dict(n_scenarios=300, n_users_min=2, scenarios_per_frame=3, k_interval=4, batch=32),
    dict(n_scenarios=120, adaptive_k=False, train_interval=7),
])
def test_blocks_of_frames_equal_frame_by_frame(kwargs):
    # make_train decides each DNN-update interval's frames as one batch, and scores only
    # the candidates a frame's K can reach; the frames one by one give the same decisions,
    # K, memory and DNN.
    cfg = droo.DrooConfig(n_max=N, **kwargs)
    sp = system.SystemParams(n_users=N)
    # Typed keys, and raw uint32 keys (as the sweep items pass them) for one config.
    raw = not cfg.adaptive_k
    keys = jax.random.split(jax.random.PRNGKey(3) if raw else jax.random.key(3), 2)
    frames, blocks = droo_train.make_train_frame_by_frame(cfg), droo_train.make_train(cfg)
    a_state, a_m = jax.jit(jax.vmap(frames, in_axes=(0, None)))(keys, sp)
    b_state, b_m = jax.jit(jax.vmap(blocks, in_axes=(0, None)))(keys, sp)
    assert set(a_m) == set(b_m)
    for name in a_m:
        assert a_m[name].shape == b_m[name].shape == (2, cfg.n_frames), name
        if name == "cost":
            np.testing.assert_allclose(b_m[name], a_m[name], rtol=1e-5)
        else:
            np.testing.assert_array_equal(b_m[name], a_m[name], err_msg=name)
    for a, b in zip(jax.tree.leaves(a_state.memory), jax.tree.leaves(b_state.memory), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(a_state.params), jax.tree.leaves(b_state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for f in ("k", "window_max", "frame", "updates"):
        np.testing.assert_array_equal(getattr(b_state, f), getattr(a_state, f), err_msg=f)
    if cfg.adaptive_k:
        assert np.asarray(b_m["k"]).min() < N          # K adapted, so scoring was cut


def test_candidate_costs_score_only_below_the_bound():
    sp = system.SystemParams(n_users=N)
    scn = system.sample_scenarios(jax.random.key(0), sp, 5)
    logits = jax.random.normal(jax.random.key(1), scn.shape)
    cands, usable = droo.op_candidates(logits, 4)
    full = droo.score_candidates(scn, cands, usable, sp).cost
    bounds = jnp.array([0, 1, 3, 4, N])
    got = jax.jit(jax.vmap(lambda s, c, u, b: droo.candidate_costs(s, c, u, sp, b, chunk=4)))(
        scn, cands, usable, bounds)
    for i, b in enumerate(np.asarray(bounds)):
        # Scored in chunks of 4 up to the bound: the chunks reached are score_candidates'
        # costs, the rest +inf.
        reached = -(-int(b) // 4) * 4
        np.testing.assert_allclose(got[i, :reached], full[i, :reached], rtol=1e-6)
        assert np.all(np.isinf(np.asarray(got[i, reached:])))
    assert np.isfinite(np.asarray(got[2, :3])).all()   # usable and below the bound: scored


def test_droo_ops():
    hidden = (120, 80)
    for n in (4, 6):
        macs = droo.dnn_macs(n, hidden)
        assert macs == 5 * n * 120 + 120 * 80 + 80 * n
        assert macs == accounting.mlp_macs([5 * n, 120, 80, n])
        alloc = droo.allocation_ops(n)
        assert alloc > 0
        for k in (1, 3, n):
            assert droo.droo_ops(n, k, hidden) == macs + k * alloc
    assert droo.droo_ops(6, 3) > droo.droo_ops(6, 2) > droo.droo_ops(6, 1)
    assert droo.droo_ops(8, 3) > droo.droo_ops(6, 3)
    assert droo.allocation_ops(8) > droo.allocation_ops(6)
    # A mixed-N DNN is sized for N_max; the allocations for the scenario's N.
    assert droo.droo_ops(4, 2, n_max=6) == droo.dnn_macs(6) + 2 * droo.allocation_ops(4)
    # Eq. 9: the inference delay every task pays.
    t = accounting.inference_delay(droo.droo_ops(6, 3), system.SystemParams())
    assert 0 < float(t) < 1e-3
    with pytest.raises(ValueError):
        droo.droo_ops(6, 0)


def test_config_validation():
    cfg = droo.DrooConfig()
    assert (cfg.n_max, cfg.hidden, cfg.memory_size, cfg.batch, cfg.train_interval,
            cfg.k_interval, cfg.lr) == (30, (120, 80), 1024, 128, 10, 32, 0.01)
    assert cfg.n_frames == 9600 and cfg.n_updates == 960
    assert droo.DrooConfig(n_scenarios=9600, scenarios_per_frame=4).n_frames == 2400
    with pytest.raises(ValueError, match="multiple"):
        droo.DrooConfig(n_scenarios=10, scenarios_per_frame=3)
    with pytest.raises(ValueError, match="n_users_min"):
        droo.DrooConfig(n_max=5, n_users_min=6)
    with pytest.raises(ValueError, match="lr"):
        droo.DrooConfig(lr=0.0)
    with pytest.raises(ValueError, match="memory_size"):
        droo.DrooConfig(memory_size=0)


def test_make_train_vmaps_over_stacked_system_params():
    cfg = droo.DrooConfig(n_max=4, n_scenarios=60, batch=16)
    sp = system.SystemParams(n_users=4)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), sp, sp.replace(bandwidth_max=0.05e6))
    train = jax.jit(jax.vmap(droo_train.make_train(cfg)))
    states, metrics = train(jax.random.split(jax.random.key(0), 2), stacked)
    assert bool(jnp.all(jnp.isfinite(metrics["cost"])))
    # A tenth of the bandwidth costs more.
    cost = np.asarray(metrics["cost"]).mean(-1)
    assert cost[1] > cost[0]


# ----------------------------------------------------------------------------
# Save / load, the shipped default, a run
# ----------------------------------------------------------------------------

def _seed0(trained):
    cfg, _, states, _, _ = trained
    return cfg, jax.tree.map(lambda a: a[0], states.params), int(states.k[0])


def test_save_load_round_trip(trained, tmp_path):
    cfg, params, k = _seed0(trained)
    sp = trained[1]
    path = droo.save_droo(params, k, cfg, tmp_path / "m", {"note": "test", "cost": float("nan")})
    assert sorted(p.name for p in path.iterdir()) == ["droo.json", "params.msgpack"]
    model = droo.load_droo(path)
    assert isinstance(model, droo.DrooModel)
    assert model.k == k and model.config == cfg
    assert json.loads(model.record)["note"] == "test"
    chex.assert_trees_all_equal(model.params, jax.tree.map(jnp.asarray, params))
    val = system.sample_scenarios(jax.random.key(9), sp, 32)
    a = jax.jit(droo.decide_full)(params, val, sp, k)
    b = model.decide(val, sp)
    np.testing.assert_array_equal(a.offload, b.offload)
    np.testing.assert_array_equal(a.cost, b.cost)
    # The model is a pytree (params traced, K and config static) usable inside jit.
    off = jax.jit(lambda m, s: droo.decide(m.params, s, sp, m.k)[0])(model, val)
    np.testing.assert_array_equal(off, a.offload)
    # A config that does not match the weights, or a K out of range, is refused.
    with pytest.raises(ValueError, match="n_max"):
        droo.save_droo(params, k, droo.DrooConfig(n_max=N + 1), tmp_path / "x")
    with pytest.raises(ValueError, match="k must be"):
        droo.save_droo(params, N + 1, cfg, tmp_path / "x")


def test_load_errors(trained, tmp_path):
    cfg, params, k = _seed0(trained)
    good = droo.save_droo(params, k, cfg, tmp_path / "good")

    def copy(name):
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = copy("no_params")
    (d / "params.msgpack").unlink()
    with pytest.raises(FileNotFoundError, match="params.msgpack"):
        droo.load_droo(d)
    with pytest.raises(FileNotFoundError, match="droo.json"):
        droo.load_droo(tmp_path / "nowhere")
    d = copy("bad_bytes")
    (d / "params.msgpack").write_bytes(b"\x00not msgpack")
    with pytest.raises(ValueError, match="corrupt DROO checkpoint at .*bad_bytes"):
        droo.load_droo(d)
    d = copy("bad_json")
    (d / "droo.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt DROO checkpoint at .*bad_json"):
        droo.load_droo(d)
    meta = json.loads((good / "droo.json").read_text())
    for name, change in [("format", {"format": 99}), ("k", {"k": N + 1}),
                         ("shape", {"config": {**meta["config"], "n_max": N + 2}}),
                         ("config", {"config": {**meta["config"], "lr": -1.0}})]:
        d = copy(f"bad_{name}")
        (d / "droo.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(ValueError, match=f"corrupt DROO checkpoint at .*bad_{name}"):
            droo.load_droo(d)


def test_shipped_default_decides_any_n():
    model = droo.load_droo()
    assert model.config.n_max == 64 and model.config.n_users_min == 5
    assert 1 <= model.k <= 64 and model.sys_params.n_users == 64
    rec = json.loads(model.record)
    assert rec["config"]["droo"]["n_scenarios"] == model.config.n_scenarios
    for n in (10, 60):
        sp = system.SystemParams(n_users=n)
        scn = system.sample_scenarios(jax.random.key(n), sp, 8)
        d = model.decide(scn, sp)        # padded to 64 users inside, cut back to n
        assert d.offload.shape == d.bandwidth.shape == (8, n) and d.cost.shape == (8,)
        assert bool(jnp.all(jnp.isfinite(d.cost)))
        np.testing.assert_allclose(exhaustive.subset_value(scn, d.offload, d.bandwidth,
                                                           d.f_alloc, sp), d.cost, rtol=1e-5)
        assert np.all(np.asarray(d.bandwidth).sum(-1) <= sp.bandwidth_max * (1 + 1e-5))
        assert 0 < float(jnp.mean(d.offload)) <= 1


def test_select_seed_is_nan_safe():
    assert droo_train.select_seed([3.0, 1.0, 2.0], [True, True, True]) == 1
    assert droo_train.select_seed([3.0, np.nan, 2.0], [True, True, True]) == 2
    assert droo_train.select_seed([3.0, 1.0, 2.0], [True, False, True]) == 2
    assert droo_train.select_seed([np.inf, 5.0], [True, True]) == 1
    with pytest.raises(ValueError, match="no seed"):
        droo_train.select_seed([np.nan, 1.0], [True, False])


def test_run_config_and_presets():
    from dynmec_jax import typedconfig
    from dynmec_jax.configs import droo as presets
    run = typedconfig.from_configdict(droo_train.DrooRunConfig, presets.get_config("default"))
    assert (run.droo.n_max, run.droo.n_users_min, run.system.n_users) == (64, 5, 64)
    assert (run.droo.lr, run.droo.adam_b1, run.droo.hidden) == (0.01, 0.09, (120, 80))
    assert "n_users" not in presets.get_config("default").system
    cfg = droo.DrooConfig(n_max=7)
    assert droo_train.DrooRunConfig(droo=cfg).system.n_users == 7   # N_max from droo
    for bad, match in [({"n_seeds": 0}, "n_seeds"), ({"seed": -1}, "seed"),
                       ({"eval_batch": 0}, "eval_batch"),
                       ({"system": system.SystemParams(bandwidth_max=-1.0)}, "system.")]:
        with pytest.raises(ValueError, match=match):
            droo_train.DrooRunConfig(**bad)
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get_config("paper")


def test_train_and_select_picks_lowest_cost_seed(tmp_path):
    from dynmec_jax import typedconfig
    from dynmec_jax.configs import droo as presets
    cd = presets.get_config("smoke")
    cd.n_seeds = 3
    cd.eval_batch = 32
    cd.droo.n_scenarios = 100
    run = typedconfig.from_configdict(droo_train.DrooRunConfig, cd)
    model, record = droo_train.train_and_select(run, tmp_path)
    costs = [r["cost"] for r in record["per_seed"]]
    assert len(costs) == 3 and all(np.isfinite(costs))
    assert record["exported_seed"] == int(np.argmin(costs))
    best = record["per_seed"][record["exported_seed"]]
    assert model.k == best["k"] and model.config == run.droo
    assert np.isfinite(record["greedy_cost"]) and record["train_wall_time_s"] > 0
    assert (tmp_path / "train_droo.json").is_file() and (tmp_path / "config.json").is_file()
    # The curves: one entry per window of frames, the last at the last frame.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    entries = [json.loads(x) for x in lines]
    frames = run.droo.n_frames
    assert len(entries) == min(100, frames) and entries[-1]["step"] == frames
    assert len(entries[0]["per_seed"]["cost"]) == 3 and np.isfinite(entries[-1]["cost"])
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert any((tmp_path / "tensorboard").iterdir())
    # The saved model is the chosen seed: its held-out cost is the recorded one.
    scn, valid = droo_train.held_out(run)
    ev = droo.load_droo(tmp_path / "droo")
    cost = droo.evaluate(ev.params, ev.k, scn, run.system, valid)["cost"]
    np.testing.assert_allclose(float(cost), best["cost"], rtol=1e-4)
    # A workdir holding another run's config is refused.
    with pytest.raises(ValueError, match="different config"):
        droo_train.train_and_select(dataclasses.replace(run, seed=1), tmp_path)
