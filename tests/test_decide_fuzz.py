"""Fuzz of the Python decide path: ``Pipeline.decide`` on random arrays either refuses
them (``ValueError`` naming the field, one line) or returns a finite, complete decision.

Issue 20 found sizes of 1e39 passing the float64 check, overflowing in
float32 and sending the whole scenario silently local.  The task-file
reader (CSV/JSON bytes) has its own fuzz test in ``tests/test_taskfile.py``.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dynmec_jax import checks, pipeline, system

BOUND = {name: (lo, hi) for name, lo, hi, *_ in checks.SCENARIO_BOUNDS}
N_MAX = 6
FIELDS = ("size", "workload", "deadline", "distance", "f_local")


@pytest.fixture(scope="module")
def pipe():
    """The shipped pipeline, compiled once (one program serves N <= 64)."""
    p = pipeline.load_pipeline()
    p.decide(system.Scenario(*(np.ones(3) for _ in range(5))))
    return p


def _value(field):
    lo, hi = BOUND[field]
    edges = [lo, hi, float(np.nextafter(lo, -np.inf)), float(np.nextafter(hi, np.inf)), 0.0,
             -0.0, -1.0, 1e39, 1e300, 5e-324, 3.4e38, 1e-45, math.nan, math.inf, -math.inf]
    inside = st.floats(math.log(max(lo, 1e-30)), math.log(hi)).map(math.exp)
    return st.one_of(inside, inside, st.sampled_from(edges), st.floats())


@st.composite
def _scenario(draw):
    n = draw(st.integers(1, N_MAX))
    fields = {f: np.array([draw(_value(f)) for _ in range(n)], np.float64)
              for f in FIELDS}
    return system.Scenario(**fields)


def _in_bounds(scn) -> bool:
    """The documented rule: every field and the product size x workload in its bounds."""
    vals = {f: getattr(scn, f) for f in FIELDS}
    vals["size*workload"] = scn.size * scn.workload
    return all(np.all(np.isfinite(v) & (v >= BOUND[k][0]) & (v <= BOUND[k][1]))
               for k, v in vals.items() if k in BOUND)


@settings(max_examples=int(os.environ.get("DECIDE_FUZZ_EXAMPLES", 60)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(scn=_scenario())
@example(scn=system.Scenario(*(np.array([1200.0, 800.0, 0.01, 50.0, 1e8])[i:i + 1]
                               for i in range(5))))                 # decided
@example(scn=system.Scenario(np.array([1e39]), *(np.ones(1) for _ in range(4))))  # refused
def test_fuzz_pipeline_decide_is_finite_or_refused_naming_the_field(pipe, scn):
    try:
        d = pipe.decide(scn)
    except ValueError as e:
        msg = str(e)
        assert "\n" not in msg and any(f"'{f}'" in msg for f in BOUND), msg
        assert not _in_bounds(scn), f"refused a scenario inside the bounds: {msg}"
        return
    assert _in_bounds(scn), "decided a scenario outside the documented bounds"
    n = scn.size.shape[-1]
    for name in ("offload", "bandwidth", "f_alloc", "width", "depth"):
        a = np.asarray(getattr(d, name))
        assert a.shape == ((n,) if name in ("offload", "bandwidth", "f_alloc") else ()), name
        assert np.all(np.isfinite(a.astype(np.float64))), name
    assert d.input_ok is None or bool(np.all(d.input_ok))
    res = system.task_outcomes(system.as_scenario(scn), d.offload, d.bandwidth, d.f_alloc,
                               pipe.sys_params, infer_edge=d.inference_delay_edge,
                               infer_local=d.inference_delay_local)
    for name in ("delay", "energy"):
        assert np.all(np.isfinite(np.asarray(getattr(res, name)))), name
