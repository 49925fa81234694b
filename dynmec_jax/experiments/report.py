"""The run's report: ``results/README.md``, the machine and the peak memory."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import warnings

import jax

from dynmec_jax import files


def peak_rss_mb() -> float:
    """Peak resident memory of this process [MB] (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def read_timings(path, stages) -> dict:
    """The times summed over earlier invocations on a workdir (``timings.json``), or zeros.

    Bookkeeping only: a missing file starts from zero; a corrupt one (a
    truncated write, a manual edit) is rebuilt from zero with a warning
    instead of failing the run that has just done all the work.
    """
    zero = {"invocations": 0, "wall_time_s": 0.0, "peak_rss_mb": 0.0,
            "stage_wall_time_s": {k: 0.0 for k in stages}}
    path = pathlib.Path(path)
    if not path.is_file():
        return zero
    try:
        prev = files.read_json(path)
        ok = (isinstance(prev, dict) and isinstance(prev.get("invocations"), int)
              and isinstance(prev.get("stage_wall_time_s"), dict)
              and all(isinstance(prev.get(k), (int, float))
                      for k in ("wall_time_s", "peak_rss_mb")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        warnings.warn(f"{path} is corrupt; the times of earlier invocations are lost "
                      "and counting starts again", stacklevel=2)
        return zero
    return prev


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devs = jax.devices()
    return (f"{cpu}; {os.cpu_count()} logical CPUs visible; JAX backend "
            f"{jax.default_backend()} with {len(devs)} device(s) ({devs[0].device_kind})")


def results_readme(cfg, summary: dict) -> str:
    """``results/README.md``: how the results were made (preset, seeds, times, machine)."""
    tot = summary["all_invocations"]
    st = tot["stage_wall_time_s"]
    lines = [
        "# Results of the reproduction (Section V)",
        "",
        f"Made by `python launch/reproduce.py --config=dynmec_jax/configs/reproduce.py:"
        f"{cfg.preset} --workdir=WORKDIR --results=results` (the README's main command).",
        "",
        f"* Preset: `{cfg.preset}`; sweep seeds {list(cfg.seeds)}; allocator seeds "
        f"{cfg.allocator.n_seeds} (sweep seed s uses allocator s mod "
        f"{cfg.allocator.n_seeds}); Fig. 12 seeds {list(cfg.fig12.seeds)}.",
        f"* Machine: {summary['machine']}.",
        f"* Wall time: {tot['wall_time_s']:.0f} s over {tot['invocations']} invocation(s) "
        f"of the command on this workdir (allocators {st['allocators']:.0f} s, Fig. 12 "
        f"{st['fig12']:.0f} s, sweeps {st['sweeps']:.0f} s, certified optimum "
        f"{st.get('optimum', 0.0):.0f} s, figures and claims "
        f"{st['figures']:.0f} s); the last invocation took {summary['wall_time_s']:.0f} s.  "
        f"Peak resident memory {tot['peak_rss_mb']:.0f} MB.  Finished stages are reused on a "
        "rerun, so a rerun adds only what it recomputes.",
        f"* Package versions: {summary['versions']}.",
        "* Every number comes from `WORKDIR/store` (one JSON record per (figure, point, "
        "seed) with its config, seed, versions and wall time) and the allocators' "
        "`allocator_eval.json`; figures show means with 95% Student-t confidence intervals "
        "over seeds.",
        "* Budgets of the preset (training steps, batches, evaluation scenarios, GA "
        "iterations): `dynmec_jax/configs/reproduce.py` and `config.json` here.",
        "",
        "| Figure | File | What |",
        "|---|---|---|",
        "| 4 | fig04_model_size.png | weighted delay per (width, depth), without (a) and "
        "with (b) inference delay |",
        "| 5, 6 | fig05_delay.png, fig06_miss_ratio.png | Section V.A (all tasks offloaded) |",
        "| 7, 8, 9 | fig07_delay_joint.png, fig08_miss_ratio_joint.png, "
        "fig09_energy_joint.png | Section V.B (users with computing power) |",
        "| 10, 11 | fig10_macs.png, fig11_inference_share.png | allocation MACs and "
        "inference-delay share vs data amount |",
        "| 12 | fig12_training_cost.png | progressive shrinking vs traditional training |",
        "| beyond | gap_to_optimum.png | Section V.B: every method's gap to the certified "
        "optimum (first scenarios of every item) |",
        "",
        "Claims of Section V, checked one by one: [claims.md](claims.md).",
    ]
    return "\n".join(lines) + "\n"
