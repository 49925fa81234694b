"""Config of the reproduction of Section V (``launch/reproduce.py``, ``launch/sweep.py``).

A :class:`~dynmec_jax.experiments.config.ReproduceConfig` (its docstring
lists every field; the schema, defaults and checks live there).  Presets
(``--config=dynmec_jax/configs/reproduce.py:PRESET``):

* ``smoke``: the whole pipeline at tiny sizes (K=3, L=2, 8 hidden units,
  N=4 users, 2 seeds, two points per shared axis, one N); a few seconds of
  compute, the rest (about a minute on 2 CPU cores) is compilation.  Used by
  the tests.
* ``quick``: Table II shapes (K=10, L=3, N=30), reduced training and
  evaluation budgets, 5 seeds, 4 points per sweep axis; the README's main
  command.  Measured cost and peak memory: ``results/README.md``.
* ``paper``: Table II shapes, 5 seeds, 5 points per axis, the full training
  budgets of ``configs/allocator.py:paper``; sized for a GPU.

Override any field: ``--config.seeds='(0,1,2)' --config.va.eval_batch=512
--config.train.episodes=500`` (sequences are tuples: pass them quoted).
"""

import ml_collections

from dynmec_jax import typedconfig
from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.train.config import TrainConfig

PRESETS = ("smoke", "quick", "paper")


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
    """Returns the reproduction config for ``preset``."""
    c = typedconfig.preset(ReproduceConfig, preset, PRESETS)
    alloc = allocator_configs.get_config("default")
    alloc.n_seeds = 3
    alloc.train.update(batch=64, phase_steps=(150, 200, 200, 350), chunk_steps=100)
    alloc.eval.batch = 512
    c.allocator = alloc
    # Algorithm 1 per sweep item: the per-user "set" scheduler with the relative marginal
    # advantage (docs/reproduction.md, scheduler ablation); the paper's own ("paper",
    # "raw", "eq23") is trained beside it as "PMRL (paper)" (vb.paper_scheduler).
    c.train = typedconfig.to_configdict(TrainConfig(), exclude=("n_users", "variant"))
    c.train.update(batch=32, pretrain_steps=400, episodes=300, policy_lr=1e-3)

    if preset == "smoke":
        c.seeds = (0, 1)
        alloc.n_seeds = 2
        alloc.system.n_users = 4
        alloc.model.update(n_experts=3, n_layers=2, hidden=8, static_hidden=12)
        alloc.train.update(batch=16, phase_steps=(20, 20, 20, 20), chunk_steps=20)
        alloc.eval.batch = 64
        c.static.steps = 40
        c.fig12.update(seeds=(0,), cases=("full", "depth"), target=0.5, batch=16,
                       eval_every=10, max_steps=60, eval_batch=32)
        c.sweeps.update(size_avg=(500.0, 1000.0), workload_avg=(797.5, 1200.0),
                        f_server=(2.5e9, 3.5e9), n_users=(4,))
        c.train.update(pretrain_steps=20, batch=8, episodes=20)
        c.va.update(eval_batch=16, ga_batch=4, ga_iters=5)
        # No "PMRL (paper)" here: it adds a second Algorithm 1 (about a quarter of the
        # compile time of a sweep item, which the tests run several times); its claims row
        # is tested on synthetic tables, and the quick preset runs it.
        c.vb.update(eval_batch=16, paper_scheduler=False, optimum_scenarios=4)
        c.chunk_size = 2
    elif preset == "paper":
        paper = allocator_configs.get_config("paper")
        paper.n_seeds = 5
        c.allocator = paper
        c.static.steps = 5600
        c.fig12.update(target=0.02, batch=256, max_steps=8000, eval_batch=1024)
        c.sweeps.update(
            size_avg=(500.0, 1000.0, 1500.0, 2000.0, 2500.0),
            workload_avg=(400.0, 797.5, 1200.0, 1600.0, 2000.0),
            f_server=(1.5e9, 2.5e9, 3.5e9, 4.5e9, 5.5e9),
            n_users=(10, 20, 30, 40, 50))
        c.train.update(pretrain_steps=3000, batch=64, policy_lr=1e-4, episodes=2000)
        c.va.update(eval_batch=1024, ga_batch=64, ga_iters=200)
        c.vb.update(eval_batch=1024, optimum_scenarios=32)
    return c
