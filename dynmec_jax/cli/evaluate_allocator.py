r"""Quality of a trained allocator against the optimal allocation (Fig. 4 numbers).

    dynmec-evaluate-allocator [--path=DIR] [--batch=4096] [--seed=2024] [--json=FILE]

``--path`` defaults to the pretrained allocator shipped in the package
(:func:`dynmec_jax.experiments.allocation.evaluate_allocator`).  Exit code 1
if the quality goals (largest network within 1%, every sub-network within
5%) are not met.
"""

from __future__ import annotations

from absl import flags

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cli, files
from dynmec_jax.experiments import allocation

_PATH = flags.DEFINE_string("path", None, "allocator directory (default: the pretrained one)")
_BATCH = flags.DEFINE_integer("batch", 4096, "held-out scenarios", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 2024, "PRNG seed of the held-out scenarios", lower_bound=0)
_FRACTION = flags.DEFINE_float("offload_fraction", 0.6, "random offload probability",
                               lower_bound=0.0, upper_bound=1.0)
_JSON = flags.DEFINE_string("json", None, "also write the numbers to this JSON file")


def main(argv):
    cli.start(argv)
    try:
        alloc = allocator_lib.load_allocator(_PATH.value)
    except (FileNotFoundError, ValueError) as e:
        cli.fail(str(e))
    result = allocation.evaluate_allocator(alloc, _BATCH.value, _SEED.value, _FRACTION.value)
    print(allocation.allocator_report(result, _BATCH.value))
    if _JSON.value:
        files.write_json(result, _JSON.value)
    return 0 if result["goals_met"] else 1


run = cli.entry(main, __doc__, __name__)
