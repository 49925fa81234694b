"""Tests of the one config layer: typed dataclasses built from the presets, checked once."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from dynmec_jax import typedconfig
from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.configs import joint as joint_configs
from dynmec_jax.configs import reproduce as reproduce_configs
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.train import config as train_config
from dynmec_jax.train.config import AllocatorConfig, JointConfig, TrainConfig


@pytest.mark.parametrize("module, cls", [(allocator_configs, AllocatorConfig),
                                         (joint_configs, JointConfig),
                                         (reproduce_configs, ReproduceConfig)])
def test_every_preset_builds_and_round_trips(module, cls):
    for preset in module.PRESETS:
        cfg = typedconfig.from_configdict(cls, module.get_config(preset))
        assert cfg.preset == preset and hash(cfg) == hash(dataclasses.replace(cfg))
        again = typedconfig.from_configdict(cls, typedconfig.to_configdict(cfg))
        assert again == cfg


def test_allocator_schedule_and_joint_n_from_the_system():
    c = typedconfig.from_configdict(AllocatorConfig, allocator_configs.get_config("smoke"))
    assert c.schedule().shape == (sum(c.train.phase_steps), c.model.n_experts,
                                  c.model.n_layers)
    cd = joint_configs.get_config("smoke")
    assert "n_users" not in cd.train   # N comes from the system section
    cd.system.n_users = 9
    assert typedconfig.from_configdict(JointConfig, cd).train.n_users == 9


@pytest.mark.parametrize("path, value, match", [
    ("model.kind", "mlp", "model.kind"), ("model.n_experts", 0, "model.n_experts"),
    ("train.lr", 0.0, "train.lr"), ("train.micro_batch", 3, "train.micro_batch"),
    ("train.phase_steps", (1, 2), "train.phase_steps"),
    ("train.offload_all_fraction", 2.0, "offload"), ("seed", 0.5, "seed"),
    ("seed", 2 ** 32, "seed"), ("eval.seed", -3, "eval.seed"),
    ("system.bandwidth_max", -1.0, "bandwidth_max"), ("train.lr", float("nan"), "train.lr"),
])
def test_allocator_config_names_the_bad_field(path, value, match):
    d = _set(allocator_configs.get_config("smoke").to_dict(), path, value)
    with pytest.raises(ValueError, match=match):
        typedconfig.from_configdict(AllocatorConfig, d)


def _set(d: dict, path: str, value) -> dict:
    """``d`` (a plain nested dict) with the dotted ``path`` set: any value, as a config file
    or the command line could give it."""
    *heads, leaf = path.split(".")
    section = d
    for h in heads:
        section = section[h]
    section[leaf] = value
    return d


@pytest.mark.parametrize("field,value,match", [
    ("estimator", "ppo", "train.estimator"), ("variant", "half", "train.variant"),
    ("scheduler", "rnn", "train.scheduler"), ("advantage", "scaled", "train.advantage"),
    ("batch", 0, "train.batch"), ("entropy", -1.0, "train.entropy"),
    ("policy_lr", 0.0, "train.policy_lr"), ("scheduler_optimizer", "rmsprop", "optimizer"),
    ("n_users_min", 40, "n_users_min"),
])
def test_train_config_names_the_bad_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_unknown_keys_and_wrong_types_are_refused_with_their_path():
    cd = reproduce_configs.get_config("smoke")
    with cd.unlocked():
        cd.train.no_such_field = 1
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['no_such_field'\] in train"):
        typedconfig.from_configdict(ReproduceConfig, cd)
    for path, value, match in (("seeds", (0.5, 1.7), r"seeds\[0\]: 0.5 is not an integer"),
                               ("sweeps.size_avg", (float("nan"),), "not a finite number"),
                               ("vb.paper_scheduler", 1, "not a boolean"),
                               ("seeds", (0, 2 ** 32), "seeds must be an integer in")):
        d = _set(reproduce_configs.get_config("smoke").to_dict(), path, value)
        with pytest.raises(ValueError, match=match):
            typedconfig.from_configdict(ReproduceConfig, d)


def test_a_plain_dict_and_defaults_fill_missing_keys():
    cfg = typedconfig.from_configdict(ReproduceConfig, {"seeds": [3, 4],
                                                        "train": {"episodes": 7}})
    assert cfg.seeds == (3, 4) and cfg.train.episodes == 7
    assert cfg.train.batch == TrainConfig().batch
    cd = typedconfig.to_configdict(cfg)
    assert isinstance(cd, ml_collections.ConfigDict) and cd.train.fixed_width is None
    cd.train.fixed_width = 2   # a typed placeholder accepts an int
    assert typedconfig.from_configdict(ReproduceConfig, cd).train.fixed_width == 2


def test_static_model_trains_its_one_network_for_all_steps():
    cfg = typedconfig.from_configdict(ReproduceConfig, reproduce_configs.get_config("smoke"))
    c = cfg.static_allocator()
    table = c.schedule()
    assert c.model.kind == "static"
    assert table.shape == (cfg.static.steps, 1, c.model.n_layers) and np.all(table[:, 0, -1])


def test_micro_batch_is_read_from_the_config():
    cd = allocator_configs.get_config("smoke")
    cd.train.micro_batch = 8
    assert typedconfig.from_configdict(AllocatorConfig, cd).train.micro_batch == 8


def test_seed_check():
    train_config.check_seed("seed", 0)
    for bad in (-1, 2 ** 31, 1.0, True):
        with pytest.raises(ValueError):
            train_config.check_seed("seed", bad)


def test_capacity_dispatch_is_the_default_but_not_in_fig12():
    """The allocators train with capacity dispatch; Fig. 12 trains without it (its static
    capacities would compile one program per sub-network), at its own batch."""
    cfg = typedconfig.from_configdict(ReproduceConfig, reproduce_configs.get_config("quick"))
    assert cfg.allocator.train.capacity_factor == 1.25
    f12 = cfg.fig12_allocator()
    assert f12.train.capacity_factor == 0 and f12.train.batch == cfg.fig12.batch
    assert f12.model == cfg.allocator.model
