"""Tests of dynmec_jax.files: atomic writes, JSON conversion, seeds, workdir claims."""

import math
import os
import pathlib
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from dynmec_jax import files, system

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_atomic_write_text_and_bytes_leave_no_temporary_files(tmp_path):
    p = files.atomic_write(tmp_path / "a" / "x.txt", "hé")
    assert p.read_text(encoding="utf-8") == "hé"
    files.atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert [q.name for q in p.parent.iterdir()] == ["x.txt"]


def test_to_jsonable_types_and_nonfinite():
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": (1, {2}), "d": jax.numpy.ones(2),
           "sp": system.SystemParams(n_users=3), "nan": float("nan"),
           "cfg": ml_collections.ConfigDict({"x": 1})}
    out = files.to_jsonable(obj)
    assert out["a"] == 1.5 and out["b"] == [0, 1, 2] and out["c"] == [1, [2]]
    assert out["sp"]["n_users"] == 3 and out["cfg"] == {"x": 1}
    assert math.isnan(out["nan"])                       # kept (the result store's records)
    assert files.to_jsonable(obj, nonfinite_as_null=True)["nan"] is None
    with pytest.raises(TypeError, match="value.f"):
        files.to_jsonable({"f": object()})


def test_write_json_is_strict_json(tmp_path):
    """A non-finite float is a null, with its reason beside the data; a finite record is
    written unchanged."""
    p = files.write_json({"x": [1.0, float("inf")], "y": {"z": np.float32("nan")}},
                         tmp_path / "d.json")
    text = open(p).read()
    assert "Infinity" not in text.replace('"Infinity"', "") and "NaN" not in text.replace(
        '"NaN"', "")
    reason = {"value.x[1]": "Infinity", "value.y.z": "NaN"}
    assert files.read_json(p) == {"x": [1.0, None], "y": {"z": None},
                                  files.NONFINITE_KEY: reason}
    assert files.read_json(files.write_json({"x": [1.0]}, tmp_path / "e.json")) == {"x": [1.0]}
    assert files.dumps([float("-inf")]) == "[null]"     # no object to hold the reason


def test_seed_keys_are_typed_and_equal_the_raw_keys():
    keys = files.seed_keys(3, 4)
    raw = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(3), i))(np.arange(4))
    np.testing.assert_array_equal(jax.random.key_data(keys), raw)


def test_claim_workdir_refuses_another_config(tmp_path):
    cfg = ml_collections.ConfigDict({"a": 1, "b": (1, 2)})
    files.claim_workdir(cfg, tmp_path)
    files.claim_workdir(cfg, tmp_path)              # the same config: fine
    cfg.a = 2
    with pytest.raises(ValueError, match="different config"):
        files.claim_workdir(cfg, tmp_path)


def test_workdir_lock_is_exclusive_and_released_when_the_holder_dies(tmp_path):
    held = files.lock_workdir(tmp_path)
    with pytest.raises(files.WorkdirBusy, match=f"pid {os.getpid()}"):
        files.lock_workdir(tmp_path)
    held.close()
    files.lock_workdir(tmp_path).close()
    # A holder killed with SIGKILL leaves no stale lock.
    code = ("import sys, time; from dynmec_jax import files; "
            "lock = files.lock_workdir(sys.argv[1]); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(files.WorkdirBusy, match=f"pid {proc.pid}"):
        files.lock_workdir(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    files.lock_workdir(tmp_path).close()


def test_a_second_sweep_launch_on_a_busy_workdir_exits_2(tmp_path, launch):
    held = files.lock_workdir(tmp_path)
    proc = launch([sys.executable, ROOT / "launch" / "sweep.py", f"--workdir={tmp_path}"],
                  timeout=300, cwd=ROOT)
    held.close()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another run" in lines[0], proc.stderr
    assert not (tmp_path / "store").exists()
