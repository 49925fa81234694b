"""Config of allocator training (``launch/train_allocator.py``): an :class:`AllocatorConfig`.

Presets (``--config=dynmec_jax/configs/allocator.py:PRESET``; the schema, the
defaults and the checks of every field are the dataclasses of
:mod:`dynmec_jax.train.config`):

* ``smoke``: tiny shapes (K=4, L=2, 8 hidden units, N=6), a few dozen steps;
  seconds on a CPU.  Used by the tests.
* ``default``: Table II shapes (K=10, L=3, 64 hidden units, N=30); the
  pretrained allocator shipped in ``dynmec_jax/pretrained/allocator`` was
  made with it (3 seeds, 1,400 steps each at batch 128, progressive
  shrinking over all 30 sub-networks; largest network within 0.04%, worst
  sub-network (width 1, depth 1) 2.4% of the optimal weighted delay on
  held-out scenarios, see ``dynmec_jax/pretrained/allocator/allocator.json``).
* ``paper``: Table II shapes, batch 256 and 4x the steps, 5 seeds; sized for
  a GPU.

Override any field: ``--config.train.batch=64 --config.system.n_users=50``.
"""

import ml_collections

from dynmec_jax import typedconfig
from dynmec_jax.train.config import AllocatorConfig

PRESETS = ("smoke", "default", "paper")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    """Returns the allocator-training config for ``preset``."""
    c = typedconfig.preset(AllocatorConfig, preset, PRESETS)
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
