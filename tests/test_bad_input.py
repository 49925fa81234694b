"""Every bad flag and config of issue 20, through the real launchers: one line, exit 2.

Each case starts ``python -m dynmec_jax.cli.<launcher>`` (a fresh process, forked
from the tests' server of pre-imported modules: conftest ``launch``) in a fresh temporary
directory (so also "a launcher run from another directory") and asserts the
promise of ``dynmec_jax/cli/__init__.py``: exit code 2 (1 for a diverged
training run), exactly one line ``error: ...`` on stderr and no traceback,
and nothing written (the directory is as it was; a diverged run keeps only
its checkpoints and curves, never a record or a model).  The launchers
refuse before any compile, except the divergence case, which trains one
chunk of the smoke config.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from collections.abc import Callable

import pytest

from dynmec_jax import files

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "dynmec_jax" / "configs"


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad invocation: ``launcher`` (module of dynmec_jax.cli), its ``args`` (``{tmp}``
    is the case's directory), the exit code and a fragment of the error line."""

    launcher: str
    args: tuple[str, ...]
    needle: str
    code: int = 2
    prepare: Callable[[pathlib.Path], object] | None = None


def _existing_workdir(tmp: pathlib.Path):
    """A workdir that already holds something (the late check used to trip over it)."""
    (tmp / "w").mkdir()
    (tmp / "w" / "notes.txt").write_text("mine\n")


def _busy_workdir(tmp: pathlib.Path):
    """Another run holds the workdir's lock (kept open by the test while the case runs)."""
    return files.lock_workdir(tmp / "w")


def _task_file(tmp: pathlib.Path, body: str, name: str = "tasks.csv"):
    (tmp / name).write_text(body)


DUPLICATE = "scenario,size,workload,deadline,distance,f_local,size\na,1200,800,0.01,50,1e8,9\n"
GOOD = "scenario,size,workload,deadline,distance,f_local\na,1200,800,0.01,50,1e8\n"
REPRODUCE = f"--config={CONFIGS / 'reproduce.py'}:smoke"

CASES = {
    # 1. a diverged training run is an error (exit 1), not a success
    "allocator lr=10 diverges": Case(
        "train_allocator", (f"--config={CONFIGS / 'allocator.py'}:smoke",
                            "--config.train.lr=10", "--workdir={tmp}/w"),
        "training diverged at step 10", code=1),
    # 5. bad seeds, eval_seed, multi-process flags, NaN sweep values, a busy workdir
    "float seeds": Case("reproduce", (REPRODUCE, "--config.seeds=(0.5,1.7)",
                                      "--workdir={tmp}/w", "--results={tmp}/r"),
                        "seeds[0]: 0.5 is not an integer"),
    "seed beyond 2**31": Case("reproduce", (REPRODUCE, "--config.seeds=(0,4294967296)",
                                            "--workdir={tmp}/w", "--results={tmp}/r"),
                              "seeds must be an integer in [0, 2**31)"),
    "negative eval_seed on an existing workdir": Case(
        "reproduce", (REPRODUCE, "--config.eval_seed=-3", "--workdir={tmp}/w",
                      "--results={tmp}/r"),
        "eval_seed must be an integer in [0, 2**31), got -3", prepare=_existing_workdir),
    "num_processes without a coordinator": Case(
        "reproduce", (REPRODUCE, "--num_processes=2"),   # default workdir/results: relative
        "--num_processes >= 2 needs --coordinator"),
    "NaN in a sweep": Case("sweep", (REPRODUCE, "--config.sweeps.size_avg=(nan,)",
                                     "--workdir={tmp}/w"),
                           "sweeps.size_avg[0]: '(nan,)' is not a finite number"),
    "train_joint on a busy workdir": Case(
        "train_joint", (f"--config={CONFIGS / 'joint.py'}:smoke", "--workdir={tmp}/w"),
        "is in use by another run", prepare=_busy_workdir),
    "evaluate_any_cell malformed per_cell": Case(
        "evaluate_any_cell", ("--per_cell=beta:runs/pc", "--out={tmp}/r/any_cell"),
        "--per_cell: 'beta:runs/pc' is not FIELD=VALUE:DIR"),
    # 2-3. decide: a silent wrong answer and a destroyed input, now refused
    "decide duplicate column": Case(
        "decide", ("--in={tmp}/tasks.csv", "--out={tmp}/out.csv"), "duplicate column 'size'",
        prepare=lambda tmp: _task_file(tmp, DUPLICATE)),
    "decide out is the input": Case(
        "decide", ("--in={tmp}/tasks.csv", "--out={tmp}/tasks.csv"), "is the input file",
        prepare=lambda tmp: _task_file(tmp, GOOD)),
}


def _tree(path: pathlib.Path) -> dict:
    """Every file under ``path`` with its bytes (directories as None)."""
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "device_count" not in f)
    return env


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, env, launch, name):
    case = CASES[name]
    held = case.prepare(tmp_path) if case.prepare else None
    before = _tree(tmp_path)
    try:
        proc = launch([sys.executable, "-m", f"dynmec_jax.cli.{case.launcher}",
                       *(a.format(tmp=tmp_path) for a in case.args)],
                      env=env, cwd=tmp_path, timeout=300)
    finally:
        if held is not None:
            held.close()
    err = proc.stderr
    assert proc.returncode == case.code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and case.needle in errors[0], err
    if case.code == 2:
        assert len(lines) == 1, err
        assert _tree(tmp_path) == before           # nothing written, nothing created
    else:   # diverged: before it, only progress bars; no record, no model
        assert all("chunk" in ln for ln in lines[:-1]), err
        wd = tmp_path / "w"
        assert not (wd / "allocator_eval.json").exists() and not (wd / "allocator").exists()
        assert not (wd / "seeds").exists()
