"""launch/decide.py: a user's tasks in, one decision per task out; bad files exit 2."""

import csv
import json
import os
import pathlib
import re
import stat

import jax
import numpy as np
import pytest
from jax.experimental import checkify

from dynmec_jax import checks, pipeline, system, taskfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tasks.csv"
HEADER = "scenario,size,workload,deadline,distance,f_local\n"


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_and_json_give_the_pipelines_decisions(tmp_path, decide_cli):
    rows_in = _read(EXAMPLE)
    js = tmp_path / "tasks.json"
    # JSON numbers are JSON numbers (a string "1200" is refused), ids stay text.
    js.write_text(json.dumps({"tasks": [{k: (v if k == "scenario" else float(v))
                                         for k, v in r.items()} for r in rows_in]}))
    proc = decide_cli(f"--in={js}", f"--out={tmp_path / 'a.csv'}")
    assert proc.returncode == 0, proc.stderr
    assert "decided 2 scenarios, 8 tasks" in proc.stdout
    out = _read(tmp_path / "a.csv")
    assert [r["scenario"] for r in out] == [r["scenario"] for r in rows_in]
    assert list(out[0]) == list(taskfile.OUTPUT_COLUMNS)
    # The same as deciding in Python, scenario by scenario.
    pipe = pipeline.load_pipeline()
    scenarios = taskfile.read_tasks(EXAMPLE).scenarios
    for sid, scn in scenarios.items():
        d = pipe.decide(scn)
        mine = [r for r in out if r["scenario"] == sid]
        np.testing.assert_array_equal([int(r["offload"]) for r in mine], np.asarray(d.offload))
        np.testing.assert_allclose([float(r["bandwidth_hz"]) for r in mine],
                                   np.asarray(d.bandwidth), rtol=1e-6)
        assert {int(r["width"]) for r in mine} == {int(d.width)}
        off = np.asarray(d.offload)
        if off.any():
            total = sum(float(r["bandwidth_hz"]) for r in mine)
            assert total == pytest.approx(pipe.allocator.sys_params.bandwidth_max, rel=1e-5)
        for r in mine:
            assert float(r["delay_s"]) > 0 and int(r["deadline_miss"]) in (0, 1)
    # The CSV version of the same tasks reads to the same scenarios.
    from_json = taskfile.read_tasks(js).scenarios
    assert list(from_json) == list(scenarios)
    for sid, scn in scenarios.items():
        for f in taskfile.TASK_FIELDS:
            np.testing.assert_array_equal(getattr(from_json[sid], f), getattr(scn, f))


@pytest.mark.parametrize("body,message", [
    ("scenario,size,workload,deadline,distance\na,1,1,1,1\n", "missing column 'f_local'"),
    (HEADER + "a,1,1,1,1,1\na,abc,1,1,1,1\n", "row 3, column 'size': 'abc' is not a number"),
    (HEADER + "a,nan,1,1,1,1\n", "row 2, column 'size': 'nan'"),
    (HEADER + "a,1,-5,1,1,1\n", "row 2, column 'workload': '-5'"),
    (HEADER + "a,1,1,0,1,1\n", "row 2, column 'deadline': '0' is outside [1e-06, 10000] s"),
    (HEADER + "a,1,1,1,inf,1\n", "row 2, column 'distance'"),
    (HEADER + "a,1,1,1,1,\n", "row 2, column 'f_local': missing value"),
])
def test_bad_rows_name_the_row_and_column(tmp_path, body, message):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(taskfile.InputError, match=re.escape(message)):
        taskfile.read_tasks(p)


def test_bad_file_exits_2_with_one_line_and_writes_nothing(tmp_path, decide_cli):
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + "a,1,1,1,1,1\na,1,1,1,-3,1\n")
    out = tmp_path / "out.csv"
    proc = decide_cli(f"--in={p}", f"--out={out}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "row 3, column 'distance'" in lines[0]
    assert not out.exists()
    js = tmp_path / "bad.json"
    js.write_text(json.dumps([{"scenario": "a", "size": 1, "workload": 1, "deadline": "x",
                               "distance": 1, "f_local": 1}]))
    proc = decide_cli(f"--in={js}", f"--out={out}")
    assert proc.returncode == 2 and "task 0, column 'deadline'" in proc.stderr
    assert not out.exists()


def test_validate_scenario_names_field_and_index():
    ok = dict(size=np.ones((2, 3)), workload=np.ones((2, 3)), deadline=np.ones((2, 3)),
              distance=np.ones((2, 3)), f_local=np.ones((2, 3)))
    scn = checks.validate_scenario(system.Scenario(**ok))
    assert scn.size.dtype == np.float64
    for field, value in (("size", np.nan), ("deadline", 0.0), ("distance", np.inf),
                         ("f_local", -1.0), ("workload", -1e-9)):
        bad = dict(ok)
        bad[field] = ok[field].copy()
        bad[field][1, 2] = value
        with pytest.raises(ValueError, match=rf"'{field}' at index \(1, 2\)"):
            checks.validate_scenario(system.Scenario(**bad))
    with pytest.raises(ValueError, match="has shape"):
        checks.validate_scenario(system.Scenario(**dict(ok, size=np.ones((2, 4)))))
    with pytest.raises(ValueError, match="not numeric"):
        checks.validate_scenario(system.Scenario(**dict(ok, size=np.array(["a", "b"]))))


def test_decide_rejects_bad_scenarios_and_checkify_sees_them_under_jit():
    pipe = pipeline.load_pipeline()
    scn = system.Scenario(*(np.ones(4) for _ in range(5)))
    pipe.decide(scn)
    with pytest.raises(ValueError, match="'size' at index 2"):
        pipe.decide(scn.replace(size=np.array([1.0, 1.0, np.nan, 1.0])))
    f = checkify.checkify(lambda s: checks.check_scenario(s))
    err, _ = jax.jit(f)(scn.replace(deadline=np.array([1.0, 0.0, 1.0, 1.0])))
    with pytest.raises(Exception, match="deadline"):
        err.throw()
    err, _ = jax.jit(f)(scn)
    err.throw()


def test_bad_out_paths_exit_2_with_one_line_and_leave_things_alone(tmp_path, decide_cli):
    src = tmp_path / "in.csv"
    src.write_text(HEADER + "a,1,1,1,1,1\n")
    os.mkfifo(tmp_path / "fifo")
    for out, message in (("", "output path is empty"), (str(tmp_path), "is a directory"),
                         (str(tmp_path / "fifo"), "is a FIFO"), (str(src), "is the input file")):
        proc = decide_cli(f"--in={src}", f"--out={out}")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert src.read_text() == HEADER + "a,1,1,1,1,1\n"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert sorted(os.listdir(tmp_path)) == ["fifo", "in.csv"]
