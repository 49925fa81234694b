"""Config of the reproduction of Section V (``launch/reproduce.py``, ``launch/sweep.py``).

Presets (``--config=dynmec_jax/configs/reproduce.py:PRESET``):

* ``smoke``: the whole pipeline at tiny sizes (K=3, L=2, 8 hidden units,
  N=4 users, 2 seeds, two points per shared axis, one N); a few seconds of
  compute, the rest (about a minute on 2 CPU cores) is compilation.  Used by
  the tests.
* ``quick``: Table II shapes (K=10, L=3, N=30), reduced training and
  evaluation budgets, 5 seeds, 4 points per sweep axis; the README's main
  command.  Measured cost and peak memory: ``results/README.md``.
* ``paper``: Table II shapes, 5 seeds, 5 points per axis, the full training
  budgets of ``configs/allocator.py:paper``; sized for a GPU.

Override any field: ``--config.seeds='(0,1,2)' --config.va.eval_batch=512``
(sequences are tuples: pass them quoted, ``'(a, b)'``).

Fields:
  seeds: sweep seeds (each point runs every seed; >= 5 for the figures).
  allocator: an ``configs/allocator.py`` config (the MoE allocator; trained
    once per allocator seed on the default system and shared by all sweep
    points; sweep seed s uses allocator seed ``s % allocator.n_seeds``).
  static: training budget of the static model of Section V.A (same config,
    ``model.kind = "static"``; steps = ``static.steps``).
  fig12: training-cost measurement (``allocation.training_cost``).
  sweeps: the x-axis values of Figs. 5-11 (SI units): ``size_avg`` [bit],
    ``workload_avg`` [cycles/bit], ``f_server`` [cycles/s], ``n_users``.
    Each axis varies one field with the others at Table II defaults.
  va / vb: policy pre-training, joint training (Algorithm 1) and evaluation
    budgets of Sections V.A and V.B; ``vb`` also holds the scheduler options
    (``policy.TrainConfig``) and ``paper_scheduler`` (also train PMRL with
    the paper's scheduler network and Eq. 23, "PMRL (paper)").
"""

import ml_collections

from dynmec_jax.configs import allocator as allocator_configs

PRESETS = ("smoke", "quick", "paper")


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
    """Returns the reproduction config for ``preset``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seeds = (0, 1, 2, 3, 4)
    c.eval_seed = 777  # held-out scenarios: fold_in(PRNGKey(eval_seed), point, seed)

    alloc = allocator_configs.get_config("default")
    alloc.n_seeds = 3
    alloc.train.batch = 64
    alloc.train.phase_steps = (150, 200, 200, 350)
    alloc.train.chunk_steps = 100
    alloc.eval.batch = 512
    c.allocator = alloc
    c.static = ml_collections.ConfigDict(dict(steps=400))

    c.fig12 = ml_collections.ConfigDict(dict(
        seeds=(0, 1, 2), cases=("full", "width", "depth"), target=0.05, batch=32,
        eval_every=25, max_steps=2000, eval_batch=256))

    c.sweeps = ml_collections.ConfigDict(dict(
        size_avg=(500.0, 1000.0, 1500.0, 2000.0),
        workload_avg=(400.0, 797.5, 1200.0, 1600.0),
        f_server=(1.5e9, 2.5e9, 3.5e9, 4.5e9),
        n_users=(10, 20, 30, 40),
    ))
    c.va = ml_collections.ConfigDict(dict(
        pretrain_steps=400, batch=32, policy_lr=1e-3, eval_batch=256,
        ga_batch=16, ga_iters=100, ga_pop_factor=6))
    # Scheduler training (Algorithm 1, lines 7-16): the per-user "set" scheduler with the
    # relative marginal advantage (docs/reproduction.md, scheduler ablation); the paper's
    # own ("paper", "raw", "eq23") is trained beside it as "PMRL (paper)".
    c.vb = ml_collections.ConfigDict(dict(
        episodes=300, batch=32, scheduler_lr=2e-3, estimator="marginal", scheduler="set",
        scheduler_hidden=32, scheduler_layers=2, scheduler_passes=2, advantage="relative",
        entropy=0.0, clip_norm=0.0, eval_batch=256,
        paper_scheduler=True))  # also train "PMRL (paper)" (the paper's scheduler, Eq. 23)
    c.chunk_size = 5  # sweep items per compiled call

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
        c.va.update(pretrain_steps=20, batch=8, eval_batch=16, ga_batch=4, ga_iters=5)
        # No "PMRL (paper)" here: it adds a second Algorithm 1 (about a quarter of the
        # compile time of a sweep item, which the tests run several times); its claims row
        # is tested on synthetic tables, and the quick preset runs it.
        c.vb.update(episodes=20, batch=8, eval_batch=16, paper_scheduler=False)
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
        c.va.update(pretrain_steps=3000, batch=64, policy_lr=1e-4, eval_batch=1024,
                    ga_batch=64, ga_iters=200)
        c.vb.update(episodes=2000, batch=64, eval_batch=1024)
    return c
