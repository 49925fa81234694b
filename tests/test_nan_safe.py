"""Seed selection and reductions over seeds are NaN-safe: the answer does not depend on
where a diverged seed's NaN sits (Python's ``min``/``max`` do)."""

import itertools
import math

import numpy as np
import pytest

from dynmec_jax.train import loop


def test_best_seed_ignores_nonfinite_costs_whatever_the_order():
    values = [3.0, math.nan, 1.0, math.inf, 2.0]
    for perm in itertools.permutations(range(len(values))):
        costs = [values[i] for i in perm]
        assert costs[loop.best_seed(costs)] == 1.0, costs
    assert loop.best_seed([2.0, 1.0, 1.0]) == 1                    # ties: lowest index


def test_best_seed_skips_unusable_seeds_and_refuses_when_none_is_left():
    assert loop.best_seed([1.0, 2.0], usable=[False, True]) == 1
    with pytest.raises(ValueError, match="no seed"):
        loop.best_seed([math.nan, -math.inf])
    with pytest.raises(ValueError, match="no seed"):
        loop.best_seed([1.0], usable=[False])


def test_worst_over_seeds_is_nan_whatever_the_order():
    for perm in itertools.permutations([[0.1, 0.2], [math.nan, 0.0], [0.3, 0.05]]):
        assert math.isnan(loop.worst_over_seeds(list(perm)))
    assert loop.worst_over_seeds([[0.1, 0.2], [0.3, 0.05]]) == 0.3
    assert loop.worst_over_seeds(np.array([1.0, math.inf])) == math.inf


def test_a_diverged_training_cost_run_is_an_error_not_a_missed_target():
    """Fig. 12's runs train to a target: at lr 10 the gap is NaN, which never 'reaches' the
    target; it must stop the run as a divergence instead of being measured as slow."""
    from dynmec_jax import typedconfig
    from dynmec_jax.configs import allocator as allocator_config
    from dynmec_jax.experiments import fig12
    from dynmec_jax.train.config import AllocatorConfig

    cd = allocator_config.get_config("smoke")
    cd.train.lr = 10.0
    cfg = typedconfig.from_configdict(AllocatorConfig, cd)
    with pytest.raises(loop.DivergenceError, match="is not finite"):
        fig12.training_cost(cfg, cfg.system, "depth", "progressive", seed=0, target=1e-9,
                            eval_every=5, max_steps=40, eval_batch=16,
                            eval_seed=cfg.eval.seed)
