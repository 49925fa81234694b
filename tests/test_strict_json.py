"""Every JSON file the package writes is strict JSON: no bare NaN or Infinity, ever.

A non-finite float (a diverged gap, an undefined mean) is written as
``null`` with its reason beside the data (``files.NONFINITE_KEY``); the
result store's documented NaN for undefined metrics is the one exception
(not tested here).
"""

import json
import pathlib

import jax
import numpy as np
import pytest

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import files, system
from dynmec_jax.baselines import droo
from dynmec_jax.train import loop

NAN_RECORD = {"max_gap_all": float("nan"), "per_seed": [{"gap": [1.0, float("inf")]}]}


def _strict(path):
    """The file parsed by a parser that refuses NaN/Infinity tokens."""
    def refuse(token):
        raise AssertionError(f"{path} holds a bare {token}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_save_allocator_writes_strict_json_with_the_reason(tmp_path, tiny_allocator):
    path = allocator_lib.save_allocator(tiny_allocator(system.SystemParams(n_users=3)),
                                        tmp_path / "a", NAN_RECORD)
    meta = _strict(path / "allocator.json")
    rec = meta["record"]
    assert rec["max_gap_all"] is None and rec["per_seed"][0]["gap"] == [1.0, None]
    assert meta[files.NONFINITE_KEY] == {"value.record.max_gap_all": "NaN",
                                         "value.record.per_seed[0].gap[1]": "Infinity"}
    loaded = allocator_lib.load_allocator(path)
    assert json.loads(loaded.record)["record"]["max_gap_all"] is None


def test_save_droo_writes_strict_json(tmp_path):
    cfg = droo.DrooConfig(n_max=3, hidden=(8, 4))
    params = droo.init_params(jax.random.key(0), cfg)
    path = droo.save_droo(params, 1, cfg, tmp_path / "d", NAN_RECORD)
    assert _strict(path / "droo.json")["record"]["max_gap_all"] is None


def test_curves_and_records_are_strict_json(tmp_path):
    curves = loop.Curves(tmp_path, [{"step": 1, "a": float("nan")}])
    curves.log({"step": 2, "a": float("-inf"), "per_seed": {"a": [1.0, float("nan")]}})
    curves.writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        json.loads(line, parse_constant=lambda t: pytest.fail(f"bare {t} in metrics.jsonl"))
    assert json.loads(lines[1])["per_seed"]["a"] == [1.0, None]
    rec = _strict(pathlib.Path(files.write_json({"gap": np.float32("inf")}, tmp_path / "r.json")))
    assert rec == {"gap": None, files.NONFINITE_KEY: {"value.gap": "Infinity"}}
