"""Tests of dynmec_jax.train.config: typed configs, validated when built."""

import dataclasses

import numpy as np
import pytest

from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.configs import joint as joint_configs
from dynmec_jax.train import config as train_config


def test_presets_build():
    for preset in allocator_configs.PRESETS:
        c = train_config.allocator_config(allocator_configs.get_config(preset))
        assert c.schedule().shape == (sum(c.phase_steps), c.n_experts, c.n_layers)
    for preset in ("smoke", "default"):
        tc = train_config.joint_config(joint_configs.get_config(preset))
        assert tc.n_users >= 1 and hash(tc) == hash(dataclasses.replace(tc))


@pytest.mark.parametrize("field,value,match", [
    ("kind", "mlp", "model.kind"), ("n_experts", 0, "model.n_experts"),
    ("lr", 0.0, "train.lr"), ("micro_batch", 3, "train.micro_batch"),
    ("phase_steps", (1, 2), "train.phase_steps"), ("offload_all_fraction", 2.0, "offload"),
])
def test_allocator_config_names_the_bad_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        train_config.AllocatorConfig(**{field: value})


@pytest.mark.parametrize("field,value,match", [
    ("estimator", "ppo", "train.estimator"), ("variant", "half", "train.variant"),
    ("scheduler", "rnn", "train.scheduler"), ("advantage", "scaled", "train.advantage"),
    ("batch", 0, "train.batch"), ("entropy", -1.0, "train.entropy"),
    ("policy_lr", 0.0, "train.policy_lr"), ("scheduler_optimizer", "rmsprop", "optimizer"),
])
def test_train_config_names_the_bad_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        train_config.TrainConfig(**{field: value})


def test_static_model_trains_its_one_network_for_all_steps():
    c = train_config.AllocatorConfig(kind="static", phase_steps=(5, 0, 0, 0))
    table = c.schedule()
    assert table.shape == (5, 1, c.n_layers) and np.all(table[:, 0, -1])


def test_micro_batch_is_read_from_the_config():
    cfg = allocator_configs.get_config("smoke")
    cfg.train.micro_batch = 8
    assert train_config.allocator_config(cfg).micro_batch == 8
