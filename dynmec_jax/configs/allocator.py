"""Config of allocator training (``launch/train_allocator.py``).

Presets (``--config=dynmec_jax/configs/allocator.py:PRESET``):

* ``smoke``: tiny shapes (K=4, L=2, 8 hidden units, N=6), a few dozen steps;
  seconds on a CPU.  Used by the tests.
* ``default``: Table II shapes (K=10, L=3, 64 hidden units, N=30); the
  pretrained allocator shipped in ``dynmec_jax/pretrained/allocator`` was
  made with it (3 seeds, 1,400 steps each at batch 128, progressive
  shrinking over all 30 sub-networks; about 3.5 minutes on 2 CPU cores;
  largest network within 0.04%, worst sub-network (width 1, depth 1) 2.4% of
  the optimal weighted delay on held-out scenarios, see
  ``dynmec_jax/pretrained/allocator/allocator.json``).
* ``paper``: Table II shapes, batch 256 and 4x the steps, 5 seeds; sized for
  a GPU.

Override any field: ``--config.train.batch=64 --config.system.n_users=50``.
"""

import ml_collections

from dynmec_jax import system

PRESETS = ("smoke", "default", "paper")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    """Returns the allocator-training config for ``preset``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.n_seeds = 3
    c.export_seed = 0  # which seed's model is exported as the allocator

    # Overrides of system.SystemParams fields (Table II defaults otherwise).
    c.system = ml_collections.ConfigDict({"n_users": system.SystemParams().n_users})

    c.model = ml_collections.ConfigDict(dict(
        kind="moe",            # "moe" (Section IV.A) or "static" (Section V.A baseline)
        n_experts=10,          # K
        n_layers=3,            # L
        hidden=64,             # expert layer width
        static_hidden=384,     # static model's hidden units
        negative_slope=0.01,   # LeakyReLU
    ))
    c.train = ml_collections.ConfigDict(dict(
        batch=128,
        lr=1e-3,                     # Table II
        case="full",                 # sub-networks to support: full / width / depth / largest
        phase_steps=(200, 300, 300, 600),  # steps per progressive-shrinking phase
        chunk_steps=100,             # steps per lax.scan chunk (checkpoint + log interval)
        offload_all_fraction=0.5,    # share of training scenarios with every task offloaded
        load_balance_weight=0.0,     # Shazeer importance loss (off: measured, see docs)
        micro_batch=ml_collections.config_dict.placeholder(int),  # scenarios per gradient
        # slice (None: the whole batch; see train/allocator.py, make_train_step)
    ))
    c.eval = ml_collections.ConfigDict(dict(
        batch=1024,            # held-out scenarios
        seed=12345,            # their PRNG seed (disjoint from training keys)
        offload_fraction=0.6,  # the "random 60% offloaded" evaluation
    ))
    if preset == "smoke":
        c.n_seeds = 2
        c.system.n_users = 6
        c.model.update(n_experts=4, n_layers=2, hidden=8, static_hidden=16)
        c.train.update(batch=16, phase_steps=(10, 10, 10, 10), chunk_steps=10)
        c.eval.update(batch=64)
    elif preset == "paper":
        c.n_seeds = 5
        c.train.update(batch=256, phase_steps=(800, 1200, 1200, 2400), chunk_steps=200)
        c.eval.update(batch=4096)
    return c
