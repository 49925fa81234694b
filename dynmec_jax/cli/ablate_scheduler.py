r"""Scheduler ablation (Section V.B): what makes Eq. 23-27 learn, one change per row.

    dynmec-ablate-scheduler [--config=dynmec_jax/configs/joint.py:default] \
        [--json=results/scheduler_ablation.json] [--markdown=results/scheduler_ablation.md] \
        [--rows=paper,set_relative_marginal] [--skip_optimum]

Each row trains PMRL with one set of scheduler options and scores it against
greedy + KKT (:mod:`dynmec_jax.experiments.ablation`); writes a Markdown
table and the numbers.
"""

from __future__ import annotations

from absl import flags

from dynmec_jax import cli, files
from dynmec_jax.experiments import ablation
from dynmec_jax.train import joint_run
from dynmec_jax.train.config import JointConfig

_CONFIG = cli.define_config("joint.py", "default", "joint training config (budget, seeds)")
_JSON = flags.DEFINE_string("json", "results/scheduler_ablation.json", "numbers (JSON)")
_MARKDOWN = flags.DEFINE_string("markdown", "results/scheduler_ablation.md", "table (Markdown)")
_ROWS = flags.DEFINE_list("rows", None, "rows to run (default: all)")
_SKIP_OPT = flags.DEFINE_bool("skip_optimum", False,
                              "skip the gap to the certified optimum (baselines/exact.py)")


def main(argv):
    cli.start(argv)
    config = cli.typed(JointConfig, _CONFIG.value)
    names = [r[0] for r in ablation.ROWS]
    wanted = _ROWS.value or names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        cli.fail(f"unknown --rows {unknown}; choose among {names}")
    try:
        alloc = joint_run.load_allocator(config)
    except (FileNotFoundError, ValueError) as e:
        cli.fail(str(e))
    result = ablation.run_rows(config, [r for r in ablation.ROWS if r[0] in wanted], alloc,
                               not _SKIP_OPT.value)
    result["config"] = files.to_jsonable(config)
    md = ablation.markdown(result, config)
    print("\n" + md)
    if _JSON.value:
        files.write_json(result, _JSON.value)
    if _MARKDOWN.value:
        files.atomic_write(_MARKDOWN.value, md)
    return 0


run = cli.entry(main, __doc__, __name__)
