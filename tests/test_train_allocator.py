"""Tests of dynmec_jax.train.allocator and dynmec_jax.allocator: train step, progressive
shrinking, driver, save/load."""

import json
import pathlib
import shutil
import signal
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynmec_jax import accounting, baselines, costs, files, system, typedconfig
from dynmec_jax import allocator as allocator_lib
from dynmec_jax.configs import allocator as allocator_config
from dynmec_jax.experiments import fig12
from dynmec_jax.nets import static as static_net
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import config as train_config
from dynmec_jax.train.config import AllocatorConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "sweep_helpers" / "allocator_driver.py"


@pytest.fixture(scope="module")
def smoke_cfg():
    return typedconfig.from_configdict(AllocatorConfig, allocator_config.get_config("smoke"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_cfg):
    workdir = tmp_path_factory.mktemp("alloc")
    record = train_allocator.train_and_evaluate(smoke_cfg, workdir, progress=False)
    return workdir, record


def test_static_model_parameter_count():
    model = static_net.StaticAllocator(hidden=384, n_layers=3)
    v = allocator_lib.init_params(jax.random.PRNGKey(0), model)
    n = sum(x.size for x in jax.tree.leaves(v))
    assert n == accounting.static_model_params(hidden=384, depth=3)


def test_weighted_parts_sum_to_weighted_delay():
    sp = system.SystemParams(n_users=7)
    scn = system.sample_scenarios(jax.random.PRNGKey(0), sp, 5)
    mask = jax.random.uniform(jax.random.PRNGKey(1), scn.shape) < 0.6
    b, f = baselines.equal_allocation(scn, mask, sp)
    tra, com = costs.weighted_parts(scn, mask, b, f, sp)
    np.testing.assert_allclose(tra + com, system.weighted_delay(scn, mask, b, f, sp), rtol=1e-5)


@pytest.mark.parametrize("case,names", [
    ("full", ["largest", "width", "depth", "both"]),
    ("width", ["largest", "width"]),
    ("depth", ["largest", "depth"]),
    ("largest", ["largest"]),
])
def test_progressive_phases(case, names):
    phases = train_config.progressive_phases(case, 4, 3)
    assert [p[0] for p in phases] == names
    # the last phase allows exactly the case's sub-networks; the first only the largest.
    np.testing.assert_array_equal(phases[-1][1] | phases[0][1], train_config.subnet_set(case, 4, 3))
    assert phases[0][1].sum() == 1 and phases[0][1][-1, -1]
    table = train_config.schedule_table(phases, [3] * len(phases))
    assert table.shape == (3 * len(phases), 4, 3)


def test_sample_subnets_only_allowed():
    allowed = np.zeros((4, 3), bool)
    allowed[1, 0] = allowed[3, 2] = True
    w, d = train_allocator.sample_subnets(jax.random.PRNGKey(0), jnp.asarray(allowed), 4000)
    pairs = set(zip(np.asarray(w).tolist(), np.asarray(d).tolist(), strict=False))
    assert pairs == {(2, 1), (4, 3)}
    assert 0.45 < float(jnp.mean(w == 2)) < 0.55


def test_depth_strata_counts_and_rows():
    every = np.ones((4, 3), bool)
    deep = np.zeros((4, 3), bool)
    deep[:, 2] = True
    assert train_allocator.depth_stratum(every) == (1, 1, 1)
    assert train_allocator.depth_stratum(deep) == (0, 0, 1)
    assert train_allocator.depth_stratum(deep | (np.arange(4)[:, None] == 3)) == (1, 1, 4)
    with pytest.raises(ValueError, match="no sub-network"):
        train_allocator.depth_stratum(np.zeros((4, 3), bool))
    table = train_config.schedule_table(train_config.progressive_phases("full", 4, 3), [2] * 4)
    assert train_allocator.table_strata(table) == ((0, 0, 1), (1, 1, 1))
    # Largest remainder, ties to the deeper depth; empty depths stay empty.
    assert train_allocator.depth_counts((1, 1, 1), 32) == (10, 11, 11)
    assert train_allocator.depth_counts((0, 0, 1), 32) == (0, 0, 32)
    assert train_allocator.depth_counts((1, 0, 2), 7) == (2, 0, 5)
    # Hidden layer i serves the scenarios of depth >= i + 2 (sorted deepest first).
    assert train_allocator.layer_rows((10, 11, 11), 5) == (5 * 22, 5 * 11)
    assert train_allocator.layer_rows((0, 0, 32), 5) == (160, 160)


def test_stratified_sampling_trains_every_subnet_as_often_as_uniform():
    allowed = np.zeros((4, 3), bool)
    allowed[:, 2] = True
    allowed[3, :] = True                  # 6 sub-networks: depth 3 at every width, width 4
    counts = train_allocator.depth_counts(train_allocator.depth_stratum(allowed), 30)
    assert counts == (5, 5, 20)
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    w, d = jax.vmap(lambda k: train_allocator.sample_subnets_stratified(
        k, jnp.asarray(allowed), counts, tiles=2))(keys)
    w, d = np.asarray(w), np.asarray(d)
    assert w.shape == (400, 60)
    # Deepest first within each of the 2 tiles; widths only where allowed.
    np.testing.assert_array_equal(d[0], np.tile(np.repeat([3, 2, 1], [20, 5, 5]), 2))
    assert allowed[w - 1, d - 1].all()
    freq = [np.mean((w == a + 1) & (d == b + 1)) for a, b in zip(*np.nonzero(allowed),
                                                                 strict=True)]
    np.testing.assert_allclose(freq, 1 / 6, atol=0.01)


def test_stratum_index_finds_the_profile_of_a_table():
    strata = ((0, 0, 1), (1, 1, 1), (1, 0, 2))
    for i, allowed in enumerate([np.zeros((4, 3), bool)] * 3):
        allowed = allowed.copy()
        if i == 0:
            allowed[:, 2] = True
        elif i == 1:
            allowed[1:3, :] = True
        else:
            allowed[0, 0] = allowed[2:, 2] = True
        assert train_allocator.depth_stratum(allowed) == strata[i]
        assert int(train_allocator.stratum_index(jnp.asarray(allowed), strata)) == i


def test_stratified_step_picks_the_branch_of_the_allowed_table(smoke_cfg, default_emitters):
    """With two strata compiled into one step (lax.switch), a table of depth L only runs the
    branch of its own stratum: the same result as a step compiled for that stratum alone
    (compiled as real runs are: conftest, ``default_emitters``)."""
    s, state = _setup(smoke_cfg)
    K, L = smoke_cfg.model.n_experts, smoke_cfg.model.n_layers
    deep = jnp.zeros((K, L), bool).at[:, -1].set(True)
    # the default config's strata: depth and, for capacity dispatch, width profiles
    both = train_allocator.table_strata(np.stack([deep, np.ones((K, L), bool)]),
                                        widths=bool(smoke_cfg.train.capacity_factor))
    assert len(both) == 2
    run = jax.jit(lambda st, strata: s.step_fn(st, jax.random.PRNGKey(4), s.sys_params,
                                               s.scales, deep, strata), static_argnums=1,
                  compiler_options=default_emitters.compiler_options)
    out, m = run(state, both)
    ref, m_ref = run(state, both[:1])
    chex.assert_tree_all_finite(m)
    chex.assert_trees_all_close((out.params, m), (ref.params, m_ref), rtol=1e-6, atol=1e-7)


def _setup(cfg):
    s = train_allocator.setup(cfg)
    state = train_allocator.init_state(jax.random.PRNGKey(0), s.model, s.tx)
    return s, state


def test_train_step_is_finite_and_chunking_does_not_change_results(smoke_cfg):
    s, state = _setup(smoke_cfg)
    K, L = smoke_cfg.model.n_experts, smoke_cfg.model.n_layers
    table = jnp.ones((10, K, L), bool)
    key = jax.random.PRNGKey(3)
    run = jax.jit(lambda st, tab: train_allocator.train_chunk(s.step_fn, st, key, s.sys_params,
                                                              s.scales, tab))
    one, metrics = run(state, table)
    chex.assert_tree_all_finite((one.params, metrics))
    half, _ = run(state, table[:5])
    two, _ = run(half, table[5:])
    chex.assert_trees_all_close(one.params, two.params, rtol=1e-6, atol=1e-7)
    assert int(one.step) == 10


def test_capacity_dispatch_step_trains_the_same_subnets_with_few_drops(smoke_cfg):
    """train.capacity_factor: one branch per (depth, width) profile of the schedule; a
    factor that holds every user runs the masked pass itself, a tight one computes only
    the picked experts, drops a few pairs and moves the loss little."""
    K, L = smoke_cfg.model.n_experts, smoke_cfg.model.n_layers
    table = train_config.schedule_table(train_config.progressive_phases("full", K, L), [2] * 4)
    strata = train_allocator.table_strata(table, widths=True)
    assert len(strata) == 4 and all(len(st) == 2 * L for st in strata)
    assert strata[0] == (0,) * (L - 1) + (1,) + (0.0,) * (L - 1) + (float(K),)   # full net
    for i, allowed in enumerate(table[::2]):
        assert int(train_allocator.stratum_index(jnp.asarray(allowed), strata)) == i
    s, state = _setup(smoke_cfg)
    batch = int(smoke_cfg.train.batch)
    allowed = jnp.ones((K, L), bool)
    every = train_allocator.table_strata(allowed[None], widths=True)
    out = {}
    for cf in (None, 100.0, 1.0):
        step = train_allocator.make_train_step(s.model, s.tx, batch, capacity_factor=cf)
        st = every if cf else train_allocator.table_strata(allowed[None])
        out[cf] = jax.jit(lambda x, step=step, st=st: step(
            x, jax.random.PRNGKey(5), s.sys_params, s.scales, allowed, st))(state)
    (base, m0), (wide, m_wide), (tight, m_tight) = out[None], out[100.0], out[1.0]
    assert float(m_wide["dropped"]) == 0.0
    chex.assert_trees_all_close(wide.params, base.params, rtol=1e-6, atol=1e-7)
    assert 0.0 <= float(m_tight["dropped"]) < 0.2
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tight.params))
    assert float(m_tight["weighted_tra"]) == pytest.approx(float(m0["weighted_tra"]), rel=0.05)
    with pytest.raises(ValueError, match="widths=True"):
        train_allocator.make_train_step(s.model, s.tx, batch, capacity_factor=1.0)(
            state, jax.random.PRNGKey(5), s.sys_params, s.scales, allowed,
            train_allocator.table_strata(allowed[None]))


def test_micro_batch_step_equals_full_batch_step(smoke_cfg):
    """micro_batch sums per-slice gradients of the same batch and gate noise: with plain
    SGD (so parameter changes are lr x gradient) both steps agree to float rounding."""
    s, _ = _setup(smoke_cfg)
    tx = optax.sgd(1.0)
    state = train_allocator.init_state(jax.random.PRNGKey(0), s.model, tx)
    batch = int(smoke_cfg.train.batch)
    K, L = smoke_cfg.model.n_experts, smoke_cfg.model.n_layers
    allowed = jnp.ones((K, L), bool)
    out = {}
    for mb in (None, batch // 4):
        step = train_allocator.make_train_step(s.model, tx, batch, micro_batch=mb)
        out[mb] = jax.jit(step)(state, jax.random.PRNGKey(5), s.sys_params, s.scales, allowed)
    (full, m_full), (tiled, m_tiled) = out[None], out[batch // 4]
    chex.assert_trees_all_close(m_full, m_tiled, rtol=1e-5)
    delta = jax.tree.map(lambda a, b: a - b, full.params, state.params)
    assert max(float(jnp.max(jnp.abs(d))) for d in jax.tree.leaves(delta)) > 0
    chex.assert_trees_all_close(full.params, tiled.params, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="micro_batch"):
        train_allocator.make_train_step(s.model, tx, batch, micro_batch=batch - 1)


def test_a_few_seconds_of_training_lowers_the_loss(smoke_cfg):
    cfg = smoke_cfg
    s, state = _setup(cfg)
    K, L = cfg.model.n_experts, cfg.model.n_layers
    scn = system.sample_scenarios(jax.random.PRNGKey(7), s.sys_params, 256)
    mask = jnp.ones(scn.shape, bool)

    def wd(params):
        alloc = allocator_lib.Allocator(params, s.scales, s.sys_params, s.model)
        b, f = alloc.allocate(scn, mask)
        return float(system.weighted_delay(scn, mask, b, f, s.sys_params).mean())

    before = wd(state.params)
    table = jnp.zeros((150, K, L), bool).at[:, -1, -1].set(True)
    state, _ = jax.jit(lambda st: train_allocator.train_chunk(
        s.step_fn, st, jax.random.PRNGKey(1), s.sys_params, s.scales, table))(state)
    after = wd(state.params)
    assert after < 0.8 * before


def test_static_model_trains_too(smoke_cfg):
    cfg = typedconfig.replace_path(smoke_cfg, "model.kind", "static")
    s, state = _setup(cfg)
    table = jnp.ones((5, 1, cfg.model.n_layers), bool)
    state, m = jax.jit(lambda st: train_allocator.train_chunk(
        s.step_fn, st, jax.random.PRNGKey(1), s.sys_params, s.scales, table))(state)
    chex.assert_tree_all_finite(m)
    alloc = allocator_lib.Allocator(state.params, s.scales, s.sys_params, s.model)
    scn = system.sample_scenarios(jax.random.PRNGKey(2), s.sys_params, 3)
    b, f = alloc.allocate(scn)
    np.testing.assert_allclose(b.sum(-1), s.sys_params.bandwidth_max, rtol=1e-5)
    ball, _ = alloc.allocate_all(scn)
    assert ball.shape == (1, cfg.model.n_layers, 3, cfg.system.n_users)


def test_driver_writes_record_and_allocator(smoke_run, smoke_cfg):
    workdir, record = smoke_run
    K, L = smoke_cfg.model.n_experts, smoke_cfg.model.n_layers
    on_disk = json.loads((workdir / "allocator_eval.json").read_text())
    assert on_disk["steps"] == sum(smoke_cfg.train.phase_steps)
    assert len(on_disk["per_seed"]) == smoke_cfg.n_seeds
    for res in on_disk["per_seed"]:
        for name in ("all", "random"):
            assert np.asarray(res[name]["gap"]).shape == (K, L)
            assert np.isfinite(res[name]["weighted_delay_infer"]).all()
            # inference delay only adds delay.
            assert (np.asarray(res[name]["weighted_delay_infer"])
                    >= np.asarray(res[name]["weighted_delay"])).all()
    alloc = allocator_lib.load_allocator(workdir / "allocator")
    assert alloc.n_experts == K and alloc.n_layers == L


def test_resume_after_interruption_gives_the_same_model(smoke_run, smoke_cfg, tmp_path):
    workdir, _ = smoke_run
    # Simulate a run killed after its second chunk: keep only that checkpoint.
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    steps = sorted(int(p.name) for p in (resumed / "checkpoints").iterdir() if p.name.isdigit())
    for st in steps:
        if st != 20:
            shutil.rmtree(resumed / "checkpoints" / str(st))
    for f in ("allocator_eval.json",):
        (resumed / f).unlink()
    shutil.rmtree(resumed / "allocator")
    train_allocator.train_and_evaluate(smoke_cfg, resumed, progress=False)
    a = allocator_lib.load_allocator(workdir / "allocator")
    b = allocator_lib.load_allocator(resumed / "allocator")
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-6, atol=1e-7)


def test_a_different_config_refuses_the_workdir(smoke_run, smoke_cfg):
    workdir, _ = smoke_run
    other = typedconfig.replace_path(smoke_cfg, "train.batch", 8)
    with pytest.raises(ValueError, match="different config"):
        files.claim_workdir(other, workdir)


def test_load_errors_name_the_path(tmp_path, smoke_run):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        allocator_lib.load_allocator(tmp_path)
    workdir, _ = smoke_run
    bad = tmp_path / "bad"
    shutil.copytree(workdir / "allocator", bad)
    (bad / "params.msgpack").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(bad)):
        allocator_lib.load_allocator(bad)


def test_allocate_accepts_numpy_and_does_not_recompile(smoke_run, smoke_cfg):
    workdir, _ = smoke_run
    alloc = allocator_lib.load_allocator(workdir / "allocator")
    sp = alloc.sys_params
    scn = system.sample_scenarios(jax.random.PRNGKey(4), sp, 6)
    scn_np = jax.tree.map(np.asarray, scn)
    mask = np.asarray(jax.random.uniform(jax.random.PRNGKey(5), scn.shape) < 0.5)
    ball, fall = alloc.allocate_all(scn_np, mask)
    before = allocator_lib._allocate_jit._cache_size()
    for k in range(1, alloc.n_experts + 1):
        for d in range(1, alloc.n_layers + 1):
            b, f = alloc.allocate(scn_np, mask, k, d)
            np.testing.assert_allclose(b, ball[k - 1, d - 1], rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(f, fall[k - 1, d - 1], rtol=1e-4, atol=1.0)
    assert allocator_lib._allocate_jit._cache_size() - before <= 1
    with pytest.raises(ValueError, match="width"):
        alloc.allocate(scn_np, mask, alloc.n_experts + 1, 1)
    # one scenario (N,) works too
    b1, _ = alloc.allocate(jax.tree.map(lambda a: a[0], scn_np), mask[0], 1, 1)
    np.testing.assert_allclose(b1, ball[0, 0, 0], rtol=1e-4, atol=1e-3)


def test_pretrained_default_loads_and_allocates():
    alloc = allocator_lib.load_allocator()
    assert alloc.is_moe and (alloc.n_experts, alloc.n_layers) == (10, 3)
    sp = alloc.sys_params
    scn = system.sample_scenarios(jax.random.PRNGKey(11), sp, 256)
    mask = jnp.ones(scn.shape, bool)
    e = train_allocator.evaluate_subnets(alloc, scn, mask)
    # the shipped model's quality targets, on fresh scenarios (loose bound: 256 scenarios).
    assert float(e["gap"][-1, -1]) < 0.01
    assert float(e["gap"].max()) < 0.05


def test_training_cost_smoke(smoke_cfg):
    for method in ("progressive", "traditional"):
        r = fig12.training_cost(smoke_cfg, smoke_cfg.system,
                                "depth", method, seed=0, target=10.0, eval_every=5,
                                max_steps=10, eval_batch=32, eval_seed=smoke_cfg.eval.seed)
        assert r["steps"] % 5 == 0 and r["steps"] > 0
        assert r["reached"]
        assert len(r["stages"]) == 2 if method == "progressive" else smoke_cfg.model.n_layers


@pytest.mark.parametrize("field,value,match", [
    ("train.batch", 0, "batch"),
    ("train.lr", -1.0, "lr"),
    ("train.phase_steps", (1, 2), "phase_steps"),
    ("model.kind", "cnn", "kind"),
    ("n_seeds", 0, "n_seeds"),
    ("train.offload_all_fraction", 1.5, "offload_all_fraction"),
])
def test_validate_config(smoke_cfg, field, value, match):
    with pytest.raises(ValueError, match=match):
        typedconfig.replace_path(smoke_cfg, field, value)


TIMING = ("train_wall_time_s", "steps_per_s", "versions")


def _driver(workdir, out, pause_at=None):
    args = [sys.executable, str(DRIVER), str(workdir), str(out)]
    return subprocess.Popen(args + ([str(pause_at)] if pause_at else []), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)


def test_sigkill_then_rerun_records_what_an_uninterrupted_run_records(tmp_path, smoke_run):
    """kill -9 between two chunks, rerun: the record (history included) and the model
    equal an uninterrupted run's (``smoke_run``, the same config), timing fields aside."""
    workdir, record = smoke_run
    killed = _driver(tmp_path / "killed", tmp_path / "killed.json", pause_at=20)
    for line in killed.stdout:                     # wait for the second checkpoint
        if line.startswith("saved step 20"):
            break
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert not (tmp_path / "killed.json").exists()
    rerun = _driver(tmp_path / "killed", tmp_path / "killed.json")
    assert rerun.wait(timeout=600) == 0
    a = json.loads(json.dumps(record))
    b = json.loads((tmp_path / "killed.json").read_text())
    assert [h["step"] for h in b["history"]] == [10, 20, 30, 40]
    assert b["history"] == a["history"]
    assert {k: v for k, v in b.items() if k not in TIMING} == \
        {k: v for k, v in a.items() if k not in TIMING}
    pa = allocator_lib.load_allocator(workdir / "allocator").params
    pb = allocator_lib.load_allocator(tmp_path / "killed" / "allocator").params
    chex.assert_trees_all_equal(pa, pb)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _keep_first_line(path):
    """Cuts ``path`` after its first line: every line left parses."""
    path.write_text(path.read_text().splitlines(keepends=True)[0])


#: The damage a kill, a full disk or a careless hand leaves in a finished workdir.
DAMAGE = {
    "seed half saved": lambda wd: (wd / "seeds" / "seed_1" / "allocator.json").unlink(),
    "seed weights truncated": lambda wd: _truncate(wd / "seeds" / "seed_0" / "params.msgpack"),
    "record truncated": lambda wd: _truncate(wd / "allocator_eval.json"),
    "exported spec truncated": lambda wd: _truncate(wd / "allocator" / "allocator.json"),
    "curves truncated": lambda wd: _truncate(wd / "metrics.jsonl"),
    "curves cut at a line's end": lambda wd: _keep_first_line(wd / "metrics.jsonl"),
    "config truncated": lambda wd: _truncate(wd / "config.json"),
}


def _rerun_gives_identical_files(cfg, workdir, wd):
    """Reruns ``cfg`` on the damaged copy ``wd``; asserts it now holds the numbers of
    ``workdir``: the record (timings aside), the curves, the config and every weight."""
    train_allocator.train_and_evaluate(cfg, wd, progress=False)
    assert train_allocator.finished(cfg, wd)
    a, b = (json.loads((d / "allocator_eval.json").read_text()) for d in (workdir, wd))
    assert {k: v for k, v in b.items() if k not in TIMING} == \
        {k: v for k, v in a.items() if k not in TIMING}
    for name in ("metrics.jsonl", "config.json"):
        assert (wd / name).read_bytes() == (workdir / name).read_bytes(), name
    for sub in ("allocator", "seeds/seed_0", "seeds/seed_1"):
        chex.assert_trees_all_equal(allocator_lib.load_allocator(wd / sub).params,
                                    allocator_lib.load_allocator(workdir / sub).params)


def test_a_half_saved_seed_is_retrained_with_identical_numbers(smoke_run, smoke_cfg, tmp_path):
    """A kill between the two files of save_allocator: seed 1 has weights but no
    allocator.json.  Not done; the rerun restores the last checkpoint and saves it again."""
    workdir, _ = smoke_run
    wd = tmp_path / "wd"
    shutil.copytree(workdir, wd)
    DAMAGE["seed half saved"](wd)
    assert not train_allocator.finished(smoke_cfg, wd)
    _rerun_gives_identical_files(smoke_cfg, workdir, wd)


def test_every_damaged_bookkeeping_file_is_rebuilt_with_identical_numbers(
        smoke_run, smoke_cfg, tmp_path):
    """"Done" means every file parses and the curves are whole: each damage alone makes the
    run not done (a corrupt config.json is rewritten with a warning, not taken for another
    run's); one rerun with all of them rebuilds every file with the same numbers."""
    workdir, _ = smoke_run
    for name, damage in DAMAGE.items():
        if name == "config truncated":
            continue
        one = tmp_path / name.replace(" ", "_")
        shutil.copytree(workdir, one)
        damage(one)
        assert not train_allocator.finished(smoke_cfg, one), name
        shutil.rmtree(one)
    wd = tmp_path / "wd"
    shutil.copytree(workdir, wd)
    for damage in DAMAGE.values():
        damage(wd)
    with pytest.warns(UserWarning, match="config.json is corrupt"):
        _rerun_gives_identical_files(smoke_cfg, workdir, wd)
