"""The cell in dynmec-decide: flags, --cell=cell.json, per-scenario cell columns, --strict."""

import csv
import json
import pathlib

import numpy as np
import pytest

from dynmec_jax import decisionfile, pipeline, system, taskfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tasks.csv"
ROWS = ["a,1200,800,0.010,50,1.0e8", "a,300,1500,0.150,400,1.5e8", "b,900,700,0.05,100,1e8"]


def _write(tmp_path, header_extra="", extra=("", "", "")):
    p = tmp_path / "tasks.csv"
    p.write_text("scenario,size,workload,deadline,distance,f_local" + header_extra + "\n"
                 + "\n".join(r + e for r, e in zip(ROWS, extra, strict=True)) + "\n")
    return p


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cell_columns_are_read_per_scenario(tmp_path):
    t = taskfile.read_tasks(_write(tmp_path, ",f_server,beta", (",1e10,0.5", ",1e10,0.5",
                                                                 ",5e9,0.2")))
    assert t.cells == {"a": {"f_server": 1e10, "beta": 0.5}, "b": {"f_server": 5e9, "beta": 0.2}}
    with pytest.raises(taskfile.InputError, match=r"row 3, column 'f_server'.*differs"):
        taskfile.read_tasks(_write(tmp_path, ",f_server", (",1e10", ",2e10", ",5e9")))
    with pytest.raises(taskfile.InputError, match="column 'beta'.*not a number"):
        taskfile.read_tasks(_write(tmp_path, ",beta", (",x", ",x", ",x")))
    with pytest.raises(taskfile.InputError, match="unknown column 'n_users'"):
        taskfile.read_tasks(_write(tmp_path, ",n_users", (",3", ",3", ",3")))


def test_decide_file_uses_the_cell_and_warns_outside_the_range(tmp_path):
    pipe = pipeline.load_pipeline()
    src = _write(tmp_path, ",bandwidth_max", (",2e7", ",2e7", ",5e5"))
    out = tmp_path / "out.csv"
    s = decisionfile.decide_file(pipe, src, out, cell={"f_server": 1e11})
    # Scenario a: its column and the cell; b: the cell (its bandwidth is Table II's).
    # (20 MHz and 100 GHz are outside the range of every shipped pipeline.)
    assert any(w.startswith("scenario 'a': bandwidth_max = 2e+07 outside the trained range")
               for w in s["warnings"])
    assert any(w.startswith("scenario 'b': f_server = 1e+11") for w in s["warnings"])
    rows = _read(out)
    scn = taskfile.read_tasks(src).scenarios["a"]
    d = pipe.decide(scn, system.SystemParams(f_server=1e11, bandwidth_max=2e7))
    np.testing.assert_allclose([float(r["bandwidth_hz"]) for r in rows[:2]], d.bandwidth,
                               rtol=1e-6)
    assert sum(float(r["bandwidth_hz"]) for r in rows[:2]) == pytest.approx(
        2e7 if d.offload.any() else 0.0, rel=1e-5)
    with pytest.raises(taskfile.InputError, match=r"scenario 'a': .* \(--strict\)"):
        decisionfile.decide_file(pipe, src, tmp_path / "strict.csv", strict=True)
    assert not (tmp_path / "strict.csv").exists()
    with pytest.raises(taskfile.InputError, match="scenario 'a': bandwidth_max must be > 0"):
        decisionfile.decide_file(pipe, _write(tmp_path, ",bandwidth_max", (",0", ",0", ",1")),
                                 tmp_path / "bad.csv")
    s = decisionfile.decide_file(pipe, EXAMPLE, tmp_path / "plain.csv")
    assert s["warnings"] == []


def test_cli_cell_flags_json_and_strict(tmp_path, decide_cli):
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps({"bandwidth_max": 2e7}))
    p = decide_cli(f"--in={EXAMPLE}", f"--out={tmp_path / 'a.csv'}", f"--cell={cell}",
                   "--f_server=1e11")
    assert p.returncode == 0, p.stderr
    assert "warning: scenario 'cell-a': bandwidth_max = 2e+07 outside the trained range" in \
        p.stderr
    assert "f_server = 1e+11" in p.stderr
    p = decide_cli(f"--in={EXAMPLE}", f"--out={tmp_path / 'b.csv'}", "--f_server=1e11",
                   "--strict")
    assert p.returncode == 2 and not (tmp_path / "b.csv").exists()
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: scenario")
    bad = tmp_path / "bad.json"
    bad.write_text('{"f_server": "fast"}')
    p = decide_cli(f"--in={EXAMPLE}", f"--out={tmp_path / 'c.csv'}", f"--cell={bad}")
    assert p.returncode == 2 and p.stderr.startswith("error: --cell=")
    p = decide_cli(f"--in={EXAMPLE}", f"--out={tmp_path / 'c.csv'}", "--beta=-1")
    assert p.returncode == 2 and "beta must be >= 0" in p.stderr
