r"""One pipeline for any number of users: mixed-N training against one network per N.

    dynmec-evaluate-any-n [--mixed=DIR] [--per_n=runs/per_n] \
        [--n_users=10,20,30,40] [--gap_n_users=10,20,30,40,60] \
        [--peers_n_users=5,10,20,30,40,50,60] [--optimum_scenarios=256] [--out=results/any_n]

Compares the mixed-N pipeline (default: the shipped one) with greedy + KKT
and the certified optimum at every N of ``--peers_n_users`` (needs the
``exact`` extra), with one pipeline trained per N (``--n_users``; empty:
skipped), and measures the allocator's gap to the optimum at each N
(:mod:`dynmec_jax.experiments.any_n`).  Writes ``OUT.json`` and ``OUT.md``;
every number comes from this run.
"""

from __future__ import annotations

import sys

from absl import flags

from dynmec_jax import cli, files, pipeline
from dynmec_jax.experiments import any_n

_MIXED = flags.DEFINE_string("mixed", None, "mixed-N pipeline (default: the shipped one)")
_PER_N = flags.DEFINE_string("per_n", "runs/per_n", "per-N pipelines: PER_N/n<N>/pipeline")
_N = flags.DEFINE_list("n_users", ["10", "20", "30", "40"], "N of the pipeline comparison")
_GAP_N = flags.DEFINE_list("gap_n_users", ["10", "20", "30", "40", "60"],
                           "N of the allocator's gap to the optimum")
_PEERS_N = flags.DEFINE_list("peers_n_users", ["5", "10", "20", "30", "40", "50", "60"],
                             "N of the comparison with greedy + KKT and the certified optimum")
_OPT = flags.DEFINE_integer("optimum_scenarios", 256,
                            "held-out scenarios per N solved to the certified optimum",
                            lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 1024, "held-out scenarios per N", lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 4242, "PRNG seed of the held-out scenarios", lower_bound=0)
_OUT = flags.DEFINE_string("out", "results/any_n", "output prefix (.json, .md)")


def _users(values, name, allow_empty=False):
    ns = cli.guard(lambda: [int(v) for v in values])
    if (not ns and not allow_empty) or (ns and min(ns) < 1):
        cli.fail(f"--{name} must be positive integers, got {values}")
    return ns


def main(argv):
    cli.start(argv)
    ns = _users(_N.value, "n_users", allow_empty=True)
    gap_ns = _users(_GAP_N.value, "gap_n_users")
    peers_ns = _users(_PEERS_N.value, "peers_n_users", allow_empty=True)
    cli.writable_workdir(files.parent_dir(_OUT.value))
    try:
        mixed = pipeline.load_pipeline(_MIXED.value)
    except (FileNotFoundError, ValueError) as e:
        cli.fail(f"--mixed: {e}")
    record = {"command": " ".join(["dynmec-evaluate-any-n", *sys.argv[1:]]),
              "peers": any_n.against_peers(mixed, peers_ns, _BATCH.value, _SEED.value,
                                           _OPT.value),
              "pipelines": any_n.compare_pipelines(mixed, ns, _PER_N.value, _BATCH.value,
                                                   _SEED.value),
              "allocator_gap": any_n.allocator_gaps(mixed.allocator, gap_ns, _BATCH.value,
                                                    _SEED.value),
              "batch": _BATCH.value, "seed": _SEED.value, "mixed": _MIXED.value or "shipped",
              "versions": files.versions()}
    print(f"wrote {' and '.join(any_n.write(record, _OUT.value))}")
    return 0


run = cli.entry(main, __doc__, __name__)
