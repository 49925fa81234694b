"""baselines.local_search: the one-flip search never raises the cost, ends 1-flip optimal,
is charged its operations, and PMRL + search keeps the pipeline's inference delays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import accounting, evaluation, pipeline, system
from dynmec_jax.baselines import local_search

SP = system.SystemParams(n_users=7)


@pytest.fixture(scope="module")
def scn():
    return system.sample_scenarios(jax.random.key(3), SP, 16)


def test_search_lowers_the_cost_and_ends_one_flip_optimal(scn):
    x0 = jax.random.bernoulli(jax.random.key(4), 0.5, scn.shape)
    res = jax.jit(lambda s, x: local_search.one_flip_search(s, x, SP))(scn, x0)
    start = local_search.set_cost(scn, x0, SP)
    assert np.all(np.asarray(res.cost) <= np.asarray(start) * (1 + 1e-6))
    assert np.any(np.asarray(res.cost) < np.asarray(start) * (1 - 1e-4))   # it does move
    np.testing.assert_allclose(res.cost, local_search.set_cost(scn, res.offload, SP), rtol=1e-6)
    x = np.asarray(res.offload)
    for j in range(SP.n_users):           # no single task changes side for less
        flipped = x.copy()
        flipped[:, j] = ~flipped[:, j]
        assert np.all(np.asarray(local_search.set_cost(scn, flipped, SP))
                      >= np.asarray(res.cost) * (1 - 1e-6))
    assert np.all(np.asarray(res.bandwidth)[~x] == 0)
    np.testing.assert_allclose(np.asarray(res.bandwidth).sum(-1)[x.any(-1)], SP.bandwidth_max,
                               rtol=1e-5)
    assert np.all(np.asarray(res.moves) >= 0) and int(np.max(res.moves)) <= SP.n_users


def test_zero_rounds_keep_the_start_and_bad_rounds_are_refused(scn):
    x0 = jnp.ones(scn.shape, bool)
    res = local_search.one_flip_search(scn, x0, SP, max_rounds=0)
    np.testing.assert_array_equal(res.offload, x0)
    assert int(np.max(res.moves)) == 0
    with pytest.raises(ValueError, match="max_rounds"):
        local_search.one_flip_search(scn, x0, SP, max_rounds=-1)


def test_search_operations_grow_with_the_rounds_and_n():
    per_round, final = local_search.round_ops(7)
    assert per_round > 7 * final > 0          # N + 1 allocations and costs per round
    assert float(local_search.search_ops(7, 2)) == pytest.approx(3 * per_round + final)
    assert float(local_search.search_ops(7, 100)) == pytest.approx(7 * per_round + final)
    assert local_search.round_ops(14)[0] > per_round
    with pytest.raises(ValueError, match="n_users"):
        local_search.round_ops(0)


def test_pipeline_search_is_charged_the_search_on_top_of_the_pipeline(scn):
    pipe = pipeline.load_pipeline()
    plain, searched = jax.jit(lambda s: (evaluation.pipeline_method(pipe, s, SP),
                                         evaluation.pipeline_search(pipe, s, SP)))(scn)
    d0, d1 = plain.decision, searched.decision
    moves = local_search.one_flip_search(scn, d0.offload, SP,
                                         infer_local=d0.inference_delay_local,
                                         infer_edge=d0.inference_delay_edge).moves
    t = accounting.inference_delay(local_search.search_ops(SP.n_users, moves), SP)
    np.testing.assert_allclose(d1.inference_delay_edge - d0.inference_delay_edge, t, rtol=1e-5)
    np.testing.assert_allclose(d1.inference_delay_local - d0.inference_delay_local, t, rtol=1e-5)
    np.testing.assert_array_equal(d1.width, d0.width)
    # with the pipeline's own delays, the searched decision costs no more than the pipeline's
    delays = (d0.inference_delay_local, d0.inference_delay_edge)
    c0, c1 = (evaluation.score(scn, d.offload, d.bandwidth, d.f_alloc, sys_params=SP,
                               inference_delay=delays).cost.sum(-1) for d in (d0, d1))
    assert np.all(np.asarray(c1) <= np.asarray(c0) * (1 + 1e-5))
