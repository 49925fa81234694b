r"""Equal versus optimal (KKT) resource allocation on sampled scenarios.

    dynmec-compare-allocators [--batch=1024] [--seed=0] [--n_users=30] [--offload_fraction=1]

Samples scenarios from Table II's defaults and prints, for the equal split
and the exact minimiser of the importance-weighted delay, the weighted
delay, mean service delay, deadline-miss ratio and user energy
(:func:`dynmec_jax.experiments.allocation.compare_allocators`).
"""

from __future__ import annotations

from absl import flags

from dynmec_jax import cli
from dynmec_jax.experiments import allocation

_BATCH = flags.DEFINE_integer("batch", 1024, "number of scenarios", lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed", lower_bound=0)
_N_USERS = flags.DEFINE_integer("n_users", 30, "users (tasks) per scenario", lower_bound=1)
_OFFLOAD = flags.DEFINE_float(
    "offload_fraction", 1.0, "probability that a task is offloaded (1.0: all, Section V.A)",
    lower_bound=0.0, upper_bound=1.0)


def main(argv):
    cli.check_no_args(argv)
    print(allocation.compare_allocators(_BATCH.value, _SEED.value, _N_USERS.value,
                                        _OFFLOAD.value))
    return 0


run = cli.entry(main, __doc__, __name__)
