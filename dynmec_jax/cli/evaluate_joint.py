r"""Section V.B quality check: PMRL against every joint baseline, and against the optimum.

    dynmec-evaluate-joint [--config=dynmec_jax/configs/joint.py:default] \
        [--pipeline=DIR] [--json=FILE] [--skip_optimum]

Trains PMRL and RL, evaluates every Section V.B method on held-out scenarios
and PMRL's gap to the optimum (:mod:`dynmec_jax.experiments.joint_eval`,
whose docstring lists the steps); ``--pipeline`` (default: the shipped one;
``--pipeline=`` skips it) is evaluated too.  Prints mean service delay [ms],
deadline-miss ratio [%], user energy [J per scenario] and sum_i C_i with 95%
CIs over seeds.  Exit code 1 if PMRL (every trained-seed mean, and the
shipped pipeline) does not have a lower mean delay AND a lower miss ratio
than Local execution, Rand, RL and Fix MoE.
"""

from __future__ import annotations

from absl import flags

from dynmec_jax import cli, files, pipeline
from dynmec_jax.experiments import joint_eval
from dynmec_jax.train.config import JointConfig

_CONFIG = cli.define_config("joint.py", "default", "joint training config")
_PIPELINE = flags.DEFINE_string("pipeline", str(pipeline.PRETRAINED_DIR),
                                "shipped pipeline to evaluate too ('' skips it)")
_JSON = flags.DEFINE_string("json", None, "also write the numbers to this JSON file")
_SKIP_OPT = flags.DEFINE_bool("skip_optimum", False, "skip the gap to the optimum")


def main(argv):
    cli.start(argv)
    config = cli.typed(JointConfig, _CONFIG.value)
    try:
        shipped = pipeline.load_pipeline(_PIPELINE.value) if _PIPELINE.value else None
    except (FileNotFoundError, ValueError) as e:
        cli.fail(f"--pipeline: {e}")
    if shipped is not None and shipped.n_users not in (None, config.system.n_users):
        cli.fail(f"pipeline {_PIPELINE.value} was trained for N = {shipped.n_users}, "
                 f"the config has N = {config.system.n_users}")
    record = joint_eval.evaluate(config, shipped, with_optimum=not _SKIP_OPT.value)
    print(joint_eval.report(record))
    if _JSON.value:
        files.write_json(record, _JSON.value)
    return 0 if record["claim_met"] else 1


run = cli.entry(main, __doc__, __name__)
