"""Config of joint scheduler + policy training (Algorithm 1): a :class:`JointConfig`.

Used by ``launch/train_joint.py``, ``launch/evaluate_joint.py`` and
``launch/ablate_scheduler.py``.  Presets
(``--config=dynmec_jax/configs/joint.py:PRESET``; schema, defaults and checks:
:mod:`dynmec_jax.train.config`):

* ``smoke``: N = 6 users, a few dozen steps, on the allocator given by
  ``allocator`` (the tests build a tiny one); seconds on a CPU.
* ``default``: Table II system (N = 30, users with computing power), the
  pretrained default allocator (K = 10, L = 3), 3 seeds side by side
  (``jit(vmap(train))``), policy pre-training 1,500 steps then 4,000 joint
  episodes at batch 64 (1,500 episodes leave PMRL 1.09% above the certified
  optimum at N = 30, 4,000 episodes 0.97%: docs/reproduction.md, "Peers"),
  Adam at the paper's learning rates (2e-3 scheduler, 1e-4 policy); the
  per-user two-pass scheduler trained on relative marginal costs
  (docs/reproduction.md, scheduler ablation).  Its results:
  ``dynmec-evaluate-joint`` (docs/reproduction.md, "Joint scheduling").
* ``paper``: Table II, batch 128, 4x the steps, 5 seeds; sized for a GPU.
* ``cell``: any cell (docs/reproduction.md, "Any cell"): mixed N = 5..60 and one
  cell per scenario drawn over :data:`dynmec_jax.cell.DEFAULT_RANGE`, the
  networks reading the cell features, the scheduler also each task's cost
  features, dominated tasks kept local (``train.cost_features``,
  ``train.skip_dominated``), warm-started from a pipeline
  (``train.init_from``); 2 seeds, 500 pre-training steps, 5,000 episodes,
  scheduler lr 1e-3 (the shipped default's stage 1 ran 3 seeds without the
  cost features, 380 s on 2 CPU cores).  Its second stage, per seed
  (``--config.train.init_from=RUN/seeds/<i>/pipeline --config.seed=<i>
  --config.train.pretrain_steps=0 --config.train.episodes=20000
  --config.train.scheduler_lr=3e-4 --config.train.cell_base_share=0.25
  --config.n_seeds=1 --config.train.scheduler_passes=3``, about 260 s) and the
  choice of the third pass's early exit (``dynmec-tune-gate``, 15 s) are in the
  docs.

N comes from ``system.n_users`` (the ``train`` section has no ``n_users``).
Override any field: ``--config.train.episodes=500 --config.system.n_users=20``.
"""

import ml_collections

from dynmec_jax import typedconfig
from dynmec_jax.train.config import JointConfig, TrainConfig

PRESETS = ("smoke", "default", "paper", "cell")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    """Returns the joint-training config for ``preset``."""
    c = typedconfig.preset(JointConfig, preset, PRESETS)
    c.train = typedconfig.to_configdict(TrainConfig(), exclude=("n_users",))
    c.train.update(batch=64, pretrain_steps=1500, episodes=4000)
    if preset == "smoke":
        c.n_seeds = 2
        c.system.n_users = 6
        c.train.update(batch=16, pretrain_steps=20, episodes=20)
        c.eval.update(batch=64, ga_iters=5, ga_batch=4, optimum_batch=16)
    elif preset == "cell":
        c.n_seeds = 2
        c.system.n_users = 60
        c.train.update(n_users_min=5, cell="default", init_from="pretrained",
                       pretrain_steps=500, episodes=5000, chunk=500, scheduler_lr=1e-3,
                       cost_features=True, skip_dominated=True)
    elif preset == "paper":
        c.n_seeds = 5
        c.train.update(batch=128, pretrain_steps=6000, episodes=6000)
        c.eval.update(batch=4096, ga_iters=200, ga_batch=256)
    return c
