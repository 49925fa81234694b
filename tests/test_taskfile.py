"""dynmec_jax.taskfile: careless users' task files are refused in one line, nothing destroyed.

One test per failure a careless-user test found (each failed before), the
bounds at their corners, the output-path rules, and a hypothesis fuzz test
of :func:`decisionfile.decide_file` on random files.  Never touches real device
files: FIFOs and symlinks are made in a temporary directory.
"""

import csv
import itertools
import json
import math
import os
import pathlib
import re
import shutil
import stat
import tempfile
import unicodedata

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

from dynmec_jax import checks, decisionfile, files, pipeline, system, taskfile
from dynmec_jax.taskfile import InputError

HEADER = "scenario,size,workload,deadline,distance,f_local\n"
ROW = "1200,800,0.01,50,1e8"          # a valid task after the id
FIELDS = taskfile.TASK_FIELDS
BOUND = {name: (lo, hi) for name, lo, hi, _, _ in taskfile.BOUNDS}


@pytest.fixture(scope="module")
def pipe():
    """The shipped pipeline, compiled once for this module (N <= 64 is one program)."""
    p = pipeline.load_pipeline()
    p.decide(system.Scenario(*(np.ones(3) for _ in range(5))))
    return p


def _write(path, body):
    path = pathlib.Path(path)
    path.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
    return path


def _task(sid, **kw):
    t = {"scenario": sid, "size": 1200, "workload": 800, "deadline": 0.01, "distance": 50,
         "f_local": 1e8}
    t.update(kw)
    return t


def _refused(pipe, tmp_path, name, body, match, out_name="out.csv"):
    """decide_file refuses ``body`` with one line matching ``match``; nothing is written."""
    src = _write(tmp_path / name, body)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InputError) as e:
        decisionfile.decide_file(pipe, src, tmp_path / out_name)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    assert re.search(match, msg), msg
    assert sorted(os.listdir(tmp_path)) == before          # nothing written, no temp file
    return msg


def _decided(pipe, tmp_path, name, body):
    src = _write(tmp_path / name, body)
    out = tmp_path / "out.csv"
    summary = decisionfile.decide_file(pipe, src, out)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["tasks"]
    return summary, rows


# ----------------------------------------------------------------------------
# The failures of the careless-user test, one each
# ----------------------------------------------------------------------------

def test_duplicate_column_is_refused(pipe, tmp_path):
    body = "scenario,size,workload,deadline,distance,f_local,size\na,1,1,1,1,1,2\n"
    _refused(pipe, tmp_path, "t.csv", body, r"t\.csv header \(row 1\): duplicate column 'size'")


@pytest.mark.parametrize("size", ["1e39", "1e300"])
def test_sizes_that_overflow_float32_are_refused(pipe, tmp_path, size):
    _refused(pipe, tmp_path, "t.csv", HEADER + f"a,{ROW}\na,{size},1,1,1,1\n",
             rf"t\.csv row 3, column 'size': '{size}' is outside \[0, 1e\+10\] bits")
    # And in Python: Pipeline.decide refuses instead of silently keeping the scenario local.
    scn = system.Scenario(size=np.array([1e3, float(size)]), workload=np.full(2, 800.0),
                          deadline=np.full(2, 0.01), distance=np.full(2, 50.0),
                          f_local=np.full(2, 1e8))
    with pytest.raises(ValueError, match=r"'size' at index 1 is 1e\+(39|300); it must be in"):
        pipe.decide(scn)


def test_400_digit_json_number_is_refused_not_an_overflow(pipe, tmp_path):
    big = "1" + "0" * 400
    body = json.dumps([_task("a", size=0)]).replace('"size": 0', f'"size": {big}')
    _refused(pipe, tmp_path, "t.json", body, r"t\.json task 0, column 'size': '10+'\.\.\. "
                                             r"\(401 characters\) is outside \[0, 1e\+10\] bits")
    # A 400-digit integer id is a (long) id, not a number.
    body = json.dumps([_task(0)]).replace('"scenario": 0', f'"scenario": {big}')
    summary, rows = _decided(pipe, tmp_path, "id.json", body)
    assert rows[0]["scenario"] == big


@pytest.mark.parametrize("name,body,match", [
    ("t.csv", HEADER + "a,1_200,800,0.01,50,1e8\n", r"row 2, column 'size': '1_200' is not a "
                                                     r"number"),
    ("t.csv", HEADER + "a,\u0661\u0662,800,0.01,50,1e8\n", r"row 2, column 'size': "
                                                           r"'\u0661\u0662' is not a number"),
    ("t.csv", HEADER + "a,+12,800,0.01,50,1e8\n", r"'\+12' is not a number"),
    ("t.csv", HEADER + "a,inf,800,0.01,50,1e8\n", r"'inf' is not a number"),
    ("t.csv", HEADER + "a,0x10,800,0.01,50,1e8\n", r"'0x10' is not a number"),
    ("t.json", json.dumps([_task("a", size=True)]), r"task 0, column 'size': true is not a "
                                                    r"number"),
    ("t.json", json.dumps([_task("a", size="1200")]), r"task 0, column 'size': the string "
                                                      r"'1200' is not a number"),
    ("t.json", json.dumps([_task("a", size=None)]), r"column 'size': missing value \(null\)"),
    ("t.json", json.dumps([_task("a", size=[1])]), r"column 'size': an array is not a number"),
    ("t.json", json.dumps([_task("a", size=float("nan"))]), r"column 'size': NaN is not a"),
    ("t.json", json.dumps([_task(1.0)]), r"column 'scenario': the number 1.0 is not an id"),
    ("t.json", json.dumps([_task(True)]), r"column 'scenario': true is not an id"),
])
def test_only_plain_numbers_are_numbers(pipe, tmp_path, name, body, match):
    _refused(pipe, tmp_path, name, body, match)


def test_ids_are_text_the_same_in_csv_and_json(pipe, tmp_path):
    # JSON 1 and "1" are one scenario; CSV 1 is that scenario too, CSV 01 another.
    js = [_task(1, size=1000), _task("1", size=2000), _task("b")]
    _, rows_j = _decided(pipe, tmp_path, "t.json", json.dumps(js))
    assert [(r["scenario"], r["task"]) for r in rows_j] == [("1", "0"), ("1", "1"), ("b", "0")]
    _, rows_c = _decided(pipe, tmp_path, "t.csv",
                         HEADER + "1,1000,800,0.01,50,1e8\n1,2000,800,0.01,50,1e8\n"
                         f"b,{ROW}\n01,{ROW}\n")
    assert [(r["scenario"], r["task"]) for r in rows_c] == [("1", "0"), ("1", "1"), ("b", "0"),
                                                            ("01", "0")]
    for a, b in zip(rows_j, rows_c[:3], strict=True):
        assert a == b
    # Whitespace around an id would silently make another scenario: refused.
    _refused(pipe, tmp_path, "w.csv", HEADER + f"a ,{ROW}\n",
             r"row 2, column 'scenario': 'a ' has leading or trailing whitespace")
    _refused(pipe, tmp_path, "w.json", json.dumps([_task("a\u2028b")]),
             r"task 0, column 'scenario': 'a\\u2028b' contains the character")


def test_split_scenario_rows_come_out_in_input_order(pipe, tmp_path):
    body = HEADER + "".join(f"{sid},{1000 + 100 * k},800,0.01,50,1e8\n"
                            for k, sid in enumerate("abab"))
    summary, rows = _decided(pipe, tmp_path, "t.csv", body)
    assert summary["scenarios"] == 2 and summary["tasks"] == 4
    assert [(r["scenario"], r["task"]) for r in rows] == [("a", "0"), ("b", "0"), ("a", "1"),
                                                          ("b", "1")]
    # Each row is its task's decision: the same as deciding the grouped scenarios.
    table = taskfile.read_tasks(tmp_path / "t.csv")
    np.testing.assert_array_equal(table.scenarios["a"].size, [1000.0, 1200.0])
    d = pipe.decide(table.scenarios["b"])
    assert [float(r["bandwidth_hz"]) for r in rows if r["scenario"] == "b"] == \
        [float(b) for b in np.asarray(d.bandwidth)]


def test_utf8_bom_is_accepted(pipe, tmp_path):
    _, rows = _decided(pipe, tmp_path, "t.csv", b"\xef\xbb\xbf" + (HEADER + f"a,{ROW}\n").encode())
    assert rows[0]["scenario"] == "a"
    _, rows = _decided(pipe, tmp_path, "t.json",
                       b"\xef\xbb\xbf" + json.dumps([_task("z")]).encode())
    assert rows[0]["scenario"] == "z"


def test_latin1_file_error_names_file_and_row(pipe, tmp_path):
    body = (HEADER + f"a,{ROW}\nb\u00e9,{ROW}\n").encode("latin-1")
    _refused(pipe, tmp_path, "latin.csv", body,
             r"/latin\.csv row 3: byte 0xe9 at column 2 is not UTF-8")


def test_unknown_and_missing_columns_name_the_known_ones(pipe, tmp_path):
    _refused(pipe, tmp_path, "t.csv", HEADER.strip() + ",colour\n" + f"a,{ROW},red\n",
             r"unknown column 'colour'; the known columns are scenario, size, workload, "
             r"deadline, distance, f_local")
    _refused(pipe, tmp_path, "t.json", json.dumps([{k: v for k, v in _task("a").items()
                                                    if k != "f_local"}]),
             r"task 0: missing column 'f_local'")
    _refused(pipe, tmp_path, "d.json",
             '[{"scenario": "a", "size": 1, "size": 2, "workload": 1, "deadline": 1, '
             '"distance": 1, "f_local": 1}]', r"task 0: duplicate column 'size'")
    _refused(pipe, tmp_path, "f.csv", HEADER + f"a,{ROW},7\n", r"row 2: 7 fields, but the "
                                                                r"header has 6")
    _refused(pipe, tmp_path, "e.csv", "", r"e\.csv: empty file")
    _refused(pipe, tmp_path, "n.csv", HEADER, r"n\.csv: no tasks")
    _refused(pipe, tmp_path, "t.txt", HEADER + f"a,{ROW}\n", r"unknown format '\.txt'")
    _refused(pipe, tmp_path, "deep.json", "[" * 100_000, r"nested too deeply|not valid JSON")


# ----------------------------------------------------------------------------
# The output path
# ----------------------------------------------------------------------------

def _input(tmp_path):
    return _write(tmp_path / "in.csv", HEADER + f"a,{ROW}\n")


def _out_refused(pipe, tmp_path, out, match):
    src = _input(tmp_path)
    before = {p: (os.lstat(tmp_path / p).st_mode, os.lstat(tmp_path / p).st_mtime_ns)
              for p in os.listdir(tmp_path)}
    with pytest.raises(InputError) as e:
        decisionfile.decide_file(pipe, src, out)
    assert len(str(e.value).splitlines()) == 1 and re.search(match, str(e.value)), str(e.value)
    after = {p: (os.lstat(tmp_path / p).st_mode, os.lstat(tmp_path / p).st_mtime_ns)
             for p in os.listdir(tmp_path)}
    assert after == before                                   # nothing replaced or created
    assert src.read_text() == HEADER + f"a,{ROW}\n"


def test_out_equal_to_in_is_refused(pipe, tmp_path):
    _out_refused(pipe, tmp_path, tmp_path / "in.csv", r"is the input file")
    _out_refused(pipe, tmp_path, f"{tmp_path}/./in.csv", r"is the input file")
    os.link(tmp_path / "in.csv", tmp_path / "hard.csv")       # a hard link is the same file
    _out_refused(pipe, tmp_path, tmp_path / "hard.csv", r"is the input file")
    os.symlink(tmp_path / "in.csv", tmp_path / "soft.csv")
    _out_refused(pipe, tmp_path, tmp_path / "soft.csv", r"is the input file")


def test_out_directory_or_empty_is_refused(pipe, tmp_path):
    (tmp_path / "d").mkdir()
    _out_refused(pipe, tmp_path, tmp_path / "d", r"is a directory")
    _out_refused(pipe, tmp_path, str(tmp_path / "new") + "/", r"names a directory")
    _out_refused(pipe, tmp_path, "", r"output path is empty")
    _out_refused(pipe, tmp_path, tmp_path / "missing" / "out.csv", r"does not exist")
    _out_refused(pipe, tmp_path, tmp_path / "in.csv" / "out.csv", r"Not a directory")


def test_paths_with_a_nul_character_are_refused(pipe, tmp_path):
    _out_refused(pipe, tmp_path, f"{tmp_path}/a\x00b.csv", r"cannot contain a NUL character")
    with pytest.raises(InputError, match="cannot contain a NUL character"):
        taskfile.read_tasks(f"{tmp_path}/a\x00b.csv")


def test_out_fifo_and_symlink_to_fifo_are_left_alone(pipe, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    _out_refused(pipe, tmp_path, tmp_path / "fifo", r"is a FIFO \(named pipe\), not a regular")
    os.symlink(tmp_path / "fifo", tmp_path / "link")
    _out_refused(pipe, tmp_path, tmp_path / "link", r"is a FIFO")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert os.path.islink(tmp_path / "link")


def test_out_dangling_or_looping_symlink_is_refused(pipe, tmp_path):
    os.symlink(tmp_path / "nowhere.csv", tmp_path / "dangling")
    _out_refused(pipe, tmp_path, tmp_path / "dangling", r"dangling or looping symlink")
    assert not (tmp_path / "nowhere.csv").exists()
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    _out_refused(pipe, tmp_path, tmp_path / "loop", r"dangling or looping symlink")


def test_out_symlink_to_a_regular_file_replaces_the_target(pipe, tmp_path):
    src = _input(tmp_path)
    (tmp_path / "real.csv").write_text("old\n")
    os.symlink("real.csv", tmp_path / "link.csv")
    summary = decisionfile.decide_file(pipe, src, tmp_path / "link.csv")
    assert summary["out"] == str((tmp_path / "real.csv").resolve())
    assert os.path.islink(tmp_path / "link.csv")               # the link stays a link
    assert (tmp_path / "real.csv").read_text().startswith("scenario,task,offload,")
    # An existing regular file is replaced atomically.
    decisionfile.decide_file(pipe, src, tmp_path / "real.csv")
    assert sorted(os.listdir(tmp_path)) == ["in.csv", "link.csv", "real.csv"]


def test_the_write_rechecks_the_target_just_before_the_rename(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    real = files.atomic_write

    def racing(path, data, before_replace=None):
        def hook():
            os.mkfifo(path)            # something else appears there while we write
            before_replace()
        return real(path, data, before_replace=hook)

    monkeypatch.setattr(decisionfile.files, "atomic_write", racing)
    rows = [{"scenario": "a", "task": 0, "offload": 1, "bandwidth_hz": 1.0, "f_alloc_hz": 1.0,
             "width": 1, "depth": 1, "delay_s": 1.0, "energy_j": 1.0, "deadline_miss": 0}]
    with pytest.raises(InputError, match="became a FIFO"):
        decisionfile.write_decisions(out, rows)
    assert stat.S_ISFIFO(os.lstat(out).st_mode)
    assert os.listdir(tmp_path) == ["out.csv"]                 # the temporary file is gone


def test_a_fifo_as_input_is_refused_without_blocking(pipe, tmp_path):
    os.mkfifo(tmp_path / "in.csv")
    with pytest.raises(InputError, match="is a FIFO"):
        decisionfile.decide_file(pipe, tmp_path / "in.csv", tmp_path / "out.csv")


# ----------------------------------------------------------------------------
# Bounds and non-finite outcomes
# ----------------------------------------------------------------------------

def test_columns_and_bounds_are_consistent_data():
    assert [c.name for c in taskfile.COLUMNS if c.role == "task"] == list(FIELDS)
    assert [b[0] for b in taskfile.BOUNDS[:5]] == list(FIELDS)
    assert taskfile.ID_COLUMN in {c.name for c in taskfile.COLUMNS if c.role == "id"}
    for name, lo, hi, unit, reason in taskfile.BOUNDS:
        assert 0 <= lo < hi and unit and reason and "\n" not in reason, name


def test_bound_table_keeps_float32_finite_at_every_corner(pipe, tmp_path):
    f32_max = float(np.finfo(np.float32).max)
    rows = list(itertools.product(*[BOUND[f] for f in FIELDS]))      # 32 corners
    values = checks.bound_values({f: np.array([r[i] for r in rows]) for i, f in enumerate(FIELDS)})
    for name, lo, hi, _, reason in taskfile.BOUNDS:
        assert lo <= np.min(values[name]) and np.max(values[name]) <= hi, name
        assert hi < 1e-12 * f32_max and reason
    # Every corner alone, and all 32 corners in one scenario, decide to finite numbers.
    body = HEADER + "".join(f"c{k}," + ",".join(repr(v) for v in r) + "\n"
                            for k, r in enumerate(rows))
    body += "".join("all," + ",".join(repr(v) for v in r) + "\n" for r in rows)
    summary, out = _decided(pipe, tmp_path, "corners.csv", body)
    assert summary["tasks"] == 64 and summary["scenarios"] == 33
    for r in out:
        for k in ("bandwidth_hz", "f_alloc_hz", "delay_s", "energy_j"):
            assert math.isfinite(float(r[k])), r


def test_checkify_sees_the_bounds_under_jit_in_float32():
    rows = np.array(list(itertools.product(*[BOUND[f] for f in FIELDS]))).T
    scn = system.Scenario(*(jnp.asarray(r, jnp.float32) for r in rows))
    f = jax.jit(checkify.checkify(checks.check_scenario))
    err, _ = f(scn)
    err.throw()                                          # every corner passes in float32
    err, _ = f(scn.replace(workload=scn.workload.at[3].set(2e6)))
    with pytest.raises(Exception, match=r"'workload' must be in \[0, 1e\+06\] cycles/bit"):
        err.throw()


@pytest.mark.parametrize("field", FIELDS)
def test_just_outside_a_bound_is_refused(pipe, tmp_path, field):
    lo, hi = BOUND[field]
    for v in (np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)):
        t = _task("a", **{field: float(v)})
        _refused(pipe, tmp_path, "t.json", json.dumps([t]),
                 rf"task 0, column '{field}': '{re.escape(repr(float(v)))}' is outside")
    t = _task("a", **{field: lo})
    _decided(pipe, tmp_path, "ok.json", json.dumps([t, _task("a", **{field: hi})]))


def test_a_non_finite_decision_is_refused_naming_the_scenario(pipe, tmp_path):
    class Broken:
        """A pipeline whose allocation is NaN for task 1."""
        sys_params, n_users = pipe.sys_params, None

        def decide(self, scn, sys_params=None):
            d = pipe.decide(scn, sys_params)
            b = np.array(d.bandwidth)
            b[1:2] = np.nan
            return d._replace(bandwidth=b)

    _write(tmp_path / "t.csv", HEADER + f"a,{ROW}\nb,{ROW}\nb,{ROW}\n")
    with pytest.raises(InputError, match=r"t\.csv row 4: scenario 'b', task 1: bandwidth_hz "
                                         r"is nan; the decision is not finite"):
        decisionfile.decide_file(Broken(), tmp_path / "t.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------
# Fuzz: random files either decide completely and finitely, or are refused in one line
# ----------------------------------------------------------------------------

_ODD_NUMBERS = ["1_200", "\u0661\u0662", "\uff11\uff12", "+5", "inf", "-inf", "nan", "NaN",
                "Infinity", "0x1A", "1e", "e5", ".", "-", "", " ", "1 2", "1,5", "1e400",
                "-1e400", "1e-400", "9" * 400, "1" + "0" * 400, "\u00a012", "12\u2028", "--1",
                "1e+", "1.2.3", "٫5", "true", "None"]
_JSON_TOKENS = ["true", "false", "null", "NaN", "Infinity", "-Infinity", "[]", "{}", "[1]",
                '{"a": 1}', '"1200"', '""']
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_SPEC_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", re.ASCII)


def _spec_value(text):
    """The value the module doc's grammar gives a CSV cell, or None if it is not a number."""
    t = text.strip(" \t")
    return float(t) if _SPEC_NUMBER.fullmatch(t) else None


def _spec_id_ok(text):
    return (text != "" and text == text.strip()
            and all(unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp") for c in text))


@st.composite
def _number_text(draw, field, wild):
    """A number cell's text: in-bound values in several spellings, or (``wild``) anything."""
    lo, hi = BOUND[field]
    inside = st.one_of(st.sampled_from([lo, hi]),
                       st.floats(max(lo, 1e-30), hi).filter(lambda x: x > 0),
                       st.floats(math.log(max(lo, 1e-30)), math.log(hi)).map(math.exp))
    if not wild:
        v = draw(inside)
        fmt = draw(st.sampled_from(["{!r}", "{:.17g}", "{:e}", "{:.6E}", "{:.3f}"]))
        return fmt.format(min(max(v, lo), hi))
    kind = draw(st.integers(0, 9))
    if kind <= 3:                                             # at, near or beyond the bounds
        edges = [lo, hi, float(np.nextafter(lo, -np.inf)), float(np.nextafter(hi, np.inf)),
                 -0.0, 1e39, 1e300, 5e-324, -1.0, 3.4e38, 1e-45]
        v = draw(st.one_of(st.sampled_from(edges), inside,
                           st.floats(allow_nan=True, allow_infinity=True)))
        return draw(st.sampled_from(["{!r}", "{:e}", "{:.17g}", "{:.3f}", "{:E}"])).format(v)
    if kind <= 5:
        return draw(st.sampled_from(_ODD_NUMBERS))
    if kind == 6:                                             # huge and tiny exponents
        mant = draw(st.sampled_from(["1", "9.99", "-1", "0", ".5", "5."]))
        return f"{mant}e{draw(st.integers(-400, 400))}"
    if kind == 7:
        return draw(st.integers(-10 ** 40, 10 ** 40).map(str))
    if kind == 8:                                             # CSV-only spellings
        return draw(st.sampled_from([" 12", "12\t", ".5", "5.", "007", "1E3", "-0"]))
    return draw(st.text(max_size=6))


_GOOD_IDS = ["a", "cell-b", "1", "01", "-0", "\u00e9", "\u6771\u4eac", "a b", "\U0001F600",
             "x,y", 'q"q', "\u0661", "\ufeffa", "\u202e"]
_BAD_IDS = [" a", "a ", "", "\t", "a\nb", "\u2028", "\x1b[31m", "\r", "a\x00"]


@st.composite
def _scenario_id(draw, wild, is_json):
    """``(value, text)``: an id as written (str, or for JSON also other types) and its text
    (None if the rules refuse it)."""
    if is_json and draw(st.integers(0, 3)) == 0:
        if wild and draw(st.booleans()):
            return draw(st.sampled_from([1.5, True, None, [1], {"a": 1}, 1e3])), None
        v = draw(st.integers(-10 ** 30, 10 ** 30))
        return v, str(v)
    pool = _GOOD_IDS + (_BAD_IDS if wild else [])
    v = draw(st.one_of(st.sampled_from(pool), st.text(min_size=1, max_size=4)))
    return v, (v if _spec_id_ok(v) else None)


@st.composite
def _task_file(draw):
    """``(suffix, bytes, expected)``: expected is the list of ids of a valid file in input
    order, None for a file that the rules refuse, or "?" after random byte damage."""
    is_json = draw(st.booleans())
    mode = draw(st.sampled_from(["clean", "clean", "one", "wild"]))  # how many wild cells
    n = draw(st.integers(0 if mode == "wild" else 1, 8))
    valid = n > 0
    cols = ["scenario", *FIELDS]
    if draw(st.booleans()):
        cols = draw(st.permutations(cols))
    change = draw(st.sampled_from(["none"] * 4 + ["drop", "dup", "extra"])) \
        if mode == "wild" else "none"
    if change == "drop":                       # every column is required
        gone = draw(st.sampled_from(cols))
        cols = [c for c in cols if c != gone]
    elif change == "dup":
        cols = [*cols, draw(st.sampled_from(cols))]
    elif change == "extra":                    # unknown (in CSV 'size ' is 'size' again)
        cols = [*cols, draw(st.sampled_from(["colour", "Size", "", "size ", "\u00e9"]))]
    valid = valid and change == "none"
    wild_cell = draw(st.integers(0, n * len(cols) - 1)) if mode == "one" and n else -1
    ids, rows = [], []
    for i in range(n):
        row = []
        for j, c in enumerate(cols):
            wild = mode == "wild" or i * len(cols) + j == wild_cell
            if c == "scenario":
                sid, text = draw(_scenario_id(wild, is_json))
                row.append((c, sid, "json"))
                valid = valid and text is not None
                ids.append(text)
            elif c in FIELDS:
                text = draw(_number_text(c, wild))
                v = _spec_value(text)
                ok = v is not None and BOUND[c][0] <= v <= BOUND[c][1]
                if not is_json:
                    row.append((c, text, "json"))
                elif _JSON_NUMBER.fullmatch(text):
                    row.append((c, text, "raw"))
                elif draw(st.booleans()):
                    row.append((c, draw(st.sampled_from(_JSON_TOKENS)), "raw"))
                    ok = False
                else:
                    row.append((c, text, "json"))          # a string: not a JSON number
                    ok = False
                valid = valid and ok
            else:
                row.append((c, "x", "json"))
        rows.append(row)
    if is_json:
        def value(v, how):
            return v if how == "raw" else json.dumps(v)
        objs = ["{" + ", ".join(f"{json.dumps(c)}: {value(v, how)}" for c, v, how in r) + "}"
                for r in rows]
        text = "[" + ", ".join(objs) + "]"
        if draw(st.booleans()):
            text = '{"tasks": ' + text + "}"
    else:
        buf = _CsvBuffer()
        w = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        w.writerow(cols)
        for r in rows:
            w.writerow([str(v) for _, v, _ in r])
        text = buf.text()
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    expected = ids if valid else None
    if mode == "wild" and draw(st.integers(0, 2)) == 0:       # random byte damage
        data = bytearray(raw)
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["ins", "del", "set"]))
            if op == "ins":
                data[i:i] = draw(st.binary(min_size=1, max_size=3))
            elif i < len(data):
                if op == "del":
                    del data[i]
                else:
                    data[i] = draw(st.integers(0, 255))
        raw, expected = bytes(data), "?"
    return (".json" if is_json else ".csv"), raw, expected


class _CsvBuffer:
    """A text sink for csv.writer (keeps lone surrogates for the encoder to judge)."""

    def __init__(self):
        self.parts = []

    def write(self, s):
        self.parts.append(s)

    def text(self):
        return "".join(self.parts)


@settings(max_examples=int(os.environ.get("TASKFILE_FUZZ_EXAMPLES", 100)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=st.one_of(_task_file(), st.tuples(st.sampled_from([".csv", ".json"]),
                                              st.binary(max_size=200), st.just("?"))))
def test_fuzz_decide_file_is_complete_and_finite_or_refused_in_one_line(pipe, case):
    suffix, raw, expected = case
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="taskfile-fuzz-"))
    try:
        src = tmp / f"tasks{suffix}"
        src.write_bytes(raw)
        out = tmp / "out.csv"
        try:
            summary = decisionfile.decide_file(pipe, src, out)
        except InputError as e:
            event(f"refused ({'valid' if isinstance(expected, list) else expected})")
            msg = str(e)
            assert len(msg.splitlines()) == 1 and "\n" not in msg and msg
            assert sorted(os.listdir(tmp)) == [src.name]          # nothing written
            assert expected is None or expected == "?", f"refused a valid file: {msg}"
            return
        assert expected is not None, "accepted a file that breaks the rules"
        event(f"decided ({'valid' if isinstance(expected, list) else expected})")
        with open(out, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
        assert tuple(header) == taskfile.OUTPUT_COLUMNS
        assert len(rows) == summary["tasks"] >= 1
        for r in rows:
            assert len(r) == len(header)
            rec = dict(zip(header, r, strict=True))
            for k in ("bandwidth_hz", "f_alloc_hz", "delay_s", "energy_j"):
                assert math.isfinite(float(rec[k])), rec
            assert rec["offload"] in ("0", "1") and rec["deadline_miss"] in ("0", "1")
        if expected != "?":
            assert [r[0] for r in rows] == expected                 # input order, ids as text
            seen: dict[str, int] = {}
            for r in rows:
                assert int(r[1]) == seen.get(r[0], 0)
                seen[r[0]] = seen.get(r[0], 0) + 1
    finally:
        shutil.rmtree(tmp)
