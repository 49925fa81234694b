"""Config of joint scheduler + policy training (Algorithm 1; ``launch/train_joint.py``).

Presets (``--config=dynmec_jax/configs/joint.py:PRESET``):

* ``smoke``: N = 6 users, a few dozen steps, on the allocator given by
  ``allocator`` (the tests build a tiny one); seconds on a CPU.
* ``default``: Table II system (N = 30, users with computing power), the
  pretrained default allocator (K = 10, L = 3), 3 seeds side by side
  (``jit(vmap(train))``), policy pre-training 1,500 steps then 1,500 joint
  episodes at batch 64, Adam at the paper's learning rates (2e-3 scheduler,
  1e-4 policy); the per-user two-pass scheduler trained on relative marginal
  costs (docs/reproduction.md, scheduler ablation).  Cost: 103 s for the 3
  seeds on 2 CPU cores.  Result (``launch/evaluate_joint.py``, 1,024
  held-out scenarios, 3 seeds): PMRL 8.06 ms mean delay, 1.78% deadline
  misses, sum_i C_i 450.4 (0.954 of greedy + KKT's 472.3), 39% of the tasks
  offloaded, sub-network (5, 1); RL 7.96 ms, 1.94%, 467.6; Rand 12.4 ms,
  5.32%; Local execution 15.4 ms, 9.32%.  At N = 10 PMRL is 0.49% above the
  exhaustive optimum of sum_i C_i with its inference delay (0.37% without).
  The pipeline shipped in ``dynmec_jax/pretrained/pipeline`` is the best
  seed of this run on validation scenarios (``pipeline.json`` records the
  wall time and the validation numbers).
* ``paper``: Table II, batch 128, 4x the steps, 5 seeds; sized for a GPU.

Override any field: ``--config.train.episodes=500 --config.system.n_users=20``.
"""

import ml_collections

from dynmec_jax import system

PRESETS = ("smoke", "default", "paper")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    """Returns the joint-training config for ``preset``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.n_seeds = 3
    # Allocator directory; "" = the pretrained default shipped in the package.
    c.allocator = ""
    # Overrides of system.SystemParams fields (Table II defaults otherwise).
    c.system = ml_collections.ConfigDict({"n_users": system.SystemParams().n_users})
    c.train = ml_collections.ConfigDict(dict(
        batch=64,
        pretrain_steps=1500,          # Algorithm 1 lines 2-6 (all tasks offloaded)
        episodes=1500,                # E_max
        scheduler_lr=2e-3,            # Table II
        policy_lr=1e-4,               # Table II
        scheduler_optimizer="adam",
        policy_optimizer="adam",
        estimator="marginal",         # "marginal" (beyond; default), "eq23" (paper), "reinforce"
        variant="full",               # "full" (PMRL), "fixed" (RL), "fix_width", "fix_depth"
        scheduler="set",              # "set" (per-user, any N; default) or "paper" (5N -> 32 -> N)
        scheduler_hidden=32,          # hidden units of the scheduler (Section V: 32)
        scheduler_layers=2,           # hidden layers per pass of the "set" scheduler
        scheduler_passes=2,           # passes of the "set" scheduler
        advantage="relative",         # "relative" (default) or "raw" (Eq. 23 as printed)
        entropy=0.0,                  # entropy bonus at episode 0, decaying linearly to 0
        clip_norm=0.0,                # global-norm gradient clip of the scheduler (0 = off)
        # Mixed N: each scenario has N ~ U{n_users_min..system.n_users} users, padded to
        # system.n_users (None: all have system.n_users).  The shipped pipeline: 5..60.
        n_users_min=ml_collections.config_dict.placeholder(int),
    ))
    c.eval = ml_collections.ConfigDict(dict(
        batch=1024,        # held-out scenarios
        seed=777,          # their PRNG seed (disjoint from the training keys)
        ga_iters=100,      # GA (joint) iterations (paper: not given)
        ga_batch=64,       # scenarios for the GA (it is slow)
        small_n=10,        # N of the exhaustive-optimum comparison
        small_batch=1024,  # scenarios of that comparison
    ))
    if preset == "smoke":
        c.n_seeds = 2
        c.system.n_users = 6
        c.train.update(batch=16, pretrain_steps=20, episodes=20)
        c.eval.update(batch=64, ga_iters=5, ga_batch=4, small_n=4, small_batch=16)
    elif preset == "paper":
        c.n_seeds = 5
        c.train.update(batch=128, pretrain_steps=6000, episodes=6000)
        c.eval.update(batch=4096, ga_iters=200, ga_batch=256)
    return c
