"""Tests of dynmec_jax.accounting: exact counts (Table I) and Eq. 9."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynmec_jax import accounting, system


def test_table1_dynamic_params_exact():
    # Ten experts 5 -> 64 -> 64 -> 64 with biases: 10 * (384 + 4160 + 4160).
    assert accounting.allocation_model_params(10, 3)["dynamic"] == 87_040


def test_param_counts_by_hand():
    assert accounting.layer_params(5, 64) == 384
    assert accounting.expert_params(1) == 384
    assert accounting.expert_params(3) == 384 + 2 * 4160
    p = accounting.allocation_model_params(4, 2)
    assert p == {"dynamic": 4 * (384 + 4160), "fixed": 2 * 5 * 10 + 2 * 65}
    assert accounting.static_model_params() == (5 * 384 + 384) + 2 * (384 * 384 + 384) + 2 * 385


def test_macs_by_hand():
    # Eq. 8 with zeta=1, iota=0; Eq. 31/33: k * (5*64 + (l-1)*64*64), plus k*64 for the combination.
    m = accounting.allocation_model_macs(10, 3, 30)
    assert m["dynamic"] == 30 * 10 * (320 + 2 * 4096 + 64)
    assert m["fixed"] == 30 * (50 + 128)
    m1 = accounting.allocation_model_macs(1, 1, 1)
    assert m1["dynamic"] == 320 + 64
    # the "2 operations per MAC" convention doubles the dense terms.
    m2 = accounting.allocation_model_macs(10, 3, 30, zeta=2)
    assert m2["dynamic"] == 2 * m["dynamic"]
    assert accounting.scheduler_macs(30) == 150 * 32 + 32 * 30
    assert accounting.policy_macs(n_inputs=11) == 11 * 32 + 32 * 2
    assert accounting.static_model_macs(2) == 2 * (5 * 384 + 2 * 384 * 384 + 2 * 384)


def test_macs_linear_in_width_depth_and_users():
    base = accounting.allocation_model_macs(1, 1, 1)["dynamic"]
    for k in range(1, 11):
        assert accounting.allocation_model_macs(k, 1, 1)["dynamic"] == k * base
        assert accounting.allocation_model_macs(k, 2, 7)["dynamic"] == 7 * k * (base + 4096)


def test_traced_width_depth():
    f = jax.jit(lambda k, depth: accounting.allocation_model_macs(k, depth, 30)["dynamic"])
    for k, depth in [(1, 1), (3, 2), (10, 3)]:
        want = accounting.allocation_model_macs(k, depth, 30)["dynamic"]
        assert int(f(jnp.int32(k), jnp.int32(depth))) == want


@pytest.mark.parametrize("width,depth", [(0, 1), (11, 1), (1, 0), (1, 4)])
def test_bad_sizes_raise(width, depth):
    with pytest.raises(ValueError):
        accounting.allocation_model_macs(width, depth, 30)


def test_inference_delay_eq9():
    p = system.SystemParams()
    macs = accounting.allocation_model_macs(10, 3, 30)
    t = accounting.inference_delay(macs["dynamic"] + macs["fixed"], p)
    np.testing.assert_allclose(t, (2_572_800 + 5_340) / 2.5e9, rtol=1e-6)
    # doubling the server frequency halves it; lambda scales it.
    p2 = dataclasses.replace(p, f_server=5e9, efficiency=3.0)
    np.testing.assert_allclose(accounting.inference_delay(1000, p2), 3 * 1000 / 5e9, rtol=1e-6)
