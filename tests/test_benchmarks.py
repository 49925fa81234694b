"""Smoke runs of the benchmark scripts that the tests do not otherwise reach."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_compile_time_benchmark_runs_at_smoke_size(tmp_path):
    """benchmarks/compile_time.py builds today's allocator chunk (capacity dispatch on by
    default, strata with widths) and writes its measurements."""
    out = tmp_path / "compile.json"
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile_time.py"),
                           "--preset", "smoke", "--families", "allocator_moe",
                           "--out", str(out)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "allocator_moe" in proc.stdout and "compile_ratio" in proc.stdout
    rec = json.loads(out.read_text())
    (res,) = rec["results"].values()
    assert res["allocator_moe"]["total_s"] > 0
    assert set(res["allocator_moe"]["programs"]) == {"train_chunk"}
