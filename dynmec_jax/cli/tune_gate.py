r"""Choose the early exit of a pipeline's last scheduler pass on held-out scenarios.

    dynmec-tune-gate --pipeline=runs/joint/pipeline --workdir=runs/gate \
        [--gates=0,1,2,3,4,6,8,12,16] [--batch=4096] [--seed=4242] [--export_pretrained]

With an early exit (``PipelineSpec.scheduler_gate`` > 0, beyond the paper) the
set scheduler's last pass runs only for the users whose logit after the
earlier passes is within +-gate of 0, and M_Sced (Eq. 34-35) counts only
them.  For each candidate gate this decides ``--batch`` held-out scenarios
drawn as the pipeline was trained (its mixed N, one cell per scenario over
its trained range; seed ``--seed``, not the evaluations') and prints the
mean cost with the pipeline's own inference delay relative to no early exit
(gate 0), with its 95% CI, and the share of users that ran the last pass
(:func:`dynmec_jax.train.gate.tune_gate`).  The gate with the lowest mean is
written with the unchanged weights to ``WORKDIR/pipeline`` (the table in its
record, ``scheduler_gate_tuning``) and ``WORKDIR/gate.json``;
``--export_pretrained`` also makes it the shipped default
(:func:`dynmec_jax.train.joint_run.export_pretrained`).  The pipeline needs
the set scheduler with at least 2 passes.
"""

from __future__ import annotations

from absl import flags

from dynmec_jax import cli, files, pipeline
from dynmec_jax.train import gate, joint_run

_PIPE = flags.DEFINE_string("pipeline", None, "the pipeline directory ('shipped': the default)")
_GATES = flags.DEFINE_list("gates", [f"{g:g}" for g in gate.DEFAULT_GATES],
                           "candidate gates [logits] (0: no early exit)")
_BATCH = flags.DEFINE_integer("batch", 4096, "held-out scenarios", lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 4242, "PRNG seed of the held-out scenarios", lower_bound=0)
_WORKDIR = flags.DEFINE_string("workdir", "runs/gate", "output directory")
_EXPORT = flags.DEFINE_bool("export_pretrained", False,
                            "also write the pipeline into dynmec_jax/pretrained/pipeline")
flags.mark_flag_as_required("pipeline")


def main(argv):
    cli.start(argv)
    gates = cli.guard(lambda: [float(g) for g in _GATES.value])
    if not all(g >= 0 for g in gates):     # NaN too
        cli.fail(f"--gates must be >= 0, got {_GATES.value}")
    try:
        pipe = pipeline.load_pipeline(None if _PIPE.value == "shipped" else _PIPE.value)
    except (FileNotFoundError, ValueError) as e:
        cli.fail(f"--pipeline: {e}")
    cli.guard(gate.with_gate, pipe, 1.0)   # a scheduler with a last pass to skip
    workdir = cli.writable_workdir(_WORKDIR.value)   # nothing written before the checks
    tuned, record = cli.guard(gate.tune_gate, pipe, gates, _BATCH.value, _SEED.value)
    print(f"{'gate':>6} | {'cost / no early exit':>22} | last pass run by")
    for r in record["table"]:
        mark = "  <- chosen" if r["gate"] == record["gate"] else ""
        print(f"{r['gate']:6g} | {r['relative_cost']:.5f} +- {r['ci']:.5f}     | "
              f"{100 * r['last_pass_share']:5.1f}% of the users{mark}")
    pipeline.save_pipeline(tuned, workdir / "pipeline")
    files.write_json(dict(record, pipeline=_PIPE.value, versions=files.versions()),
                     workdir / "gate.json", indent=1)
    print(f"wrote {workdir / 'pipeline'} (gate {record['gate']:g})")
    if _EXPORT.value:
        print(f"exported to {cli.guard(joint_run.export_pretrained, workdir)}")
    return 0


run = cli.entry(main, __doc__, __name__)
