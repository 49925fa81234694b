"""Config of DROO's training (``dynmec-train-droo``): a :class:`DrooRunConfig`.

Presets (``--config=dynmec_jax/configs/droo.py:PRESET``; schema, defaults and
checks: :class:`dynmec_jax.baselines.droo_train.DrooRunConfig` and
:class:`dynmec_jax.baselines.droo.DrooConfig`):

* ``smoke``: N_max = 6 users, N ~ U{2..6} (mixed), 2 seeds, 300 training
  scenarios each, 64 held-out scenarios; seconds on a CPU (the tests).
* ``default``: the shipped DROO (``dynmec_jax/pretrained/droo``): one DNN
  for every N up to 64, trained on scenarios of N ~ U{5..64} users padded to
  N_max = 64 (Table II system), DROO's reference hyperparameters (hidden
  (120, 80), memory 1,024, batch 128, delta = 10, Delta = 32, Adam lr = 0.01,
  beta_1 = 0.09), 96,000 training scenarios per seed (one per frame, 9,600
  DNN updates), 3 seeds side by side, the best of them on 1,024 held-out
  scenarios.

N_max comes from ``droo.n_max`` (the ``system`` section has no ``n_users``).
Override any field: ``--config.droo.n_scenarios=48000 --config.n_seeds=5``.
"""

import ml_collections

from dynmec_jax import typedconfig
from dynmec_jax.baselines.droo_train import DrooRunConfig
from dynmec_jax.system import SystemParams

PRESETS = ("smoke", "default")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    """Returns the DROO training config for ``preset``."""
    c = typedconfig.preset(DrooRunConfig, preset, PRESETS)
    c.system = typedconfig.to_configdict(SystemParams(), exclude=("n_users",))
    c.droo.update(n_max=64, n_users_min=5, n_scenarios=96_000)
    if preset == "smoke":
        c.n_seeds = 2
        c.eval_batch = 64
        c.droo.update(n_max=6, n_users_min=2, n_scenarios=300, batch=32, memory_size=128)
    return c
