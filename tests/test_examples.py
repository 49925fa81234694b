"""The scripts in examples/ run and print what they claim (each in its own process)."""

import importlib.util
import pathlib
import re
import sys

import jax
import numpy as np
import pytest

from dynmec_jax import system

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def run(launch):
    """Runs ``examples/<name>`` as a script (a fresh process: conftest ``launch``); its stdout."""
    def run_example(name: str) -> str:
        proc = launch([sys.executable, ROOT / "examples" / name], cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout
    return run_example


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", line)]


def test_marginal_value_gradients_match_finite_differences(run):
    out = run("marginal_value.py")
    for var in ("b_max", "f_ser"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"d/d {var}"))
        grad, fd = _numbers(line)
        assert grad < 0                                      # more resource, less delay
        assert abs(grad - fd) <= 1e-5 * abs(fd), line


def test_vmapped_sweep_matches_a_loop_and_greedy_beats_local(run):
    out = run("sweep_baselines.py")
    rows = [_numbers(ln) for ln in out.splitlines()[1:] if ln.strip()]
    table = np.array(rows)
    assert table.shape == (5, 5)
    np.testing.assert_allclose(table[:, 0], [1.5, 2.5, 3.5, 4.5, 5.5])
    assert np.all(np.diff(table[:, 1]) < 0)              # faster server: lower delay
    assert np.all(table[:, 1] < table[:, 4])             # greedy + KKT beats local
    assert np.all(table[:, 4] == table[0, 4])            # local ignores the server

    # The vmapped program equals one evaluation per point (examples/ is not a package).
    spec = importlib.util.spec_from_file_location("sweep_baselines",
                                                  ROOT / "examples" / "sweep_baselines.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    base = system.SystemParams()
    scn = system.sample_scenarios(jax.random.PRNGKey(0), base, batch=128)
    one = ex.metrics(base.replace(f_server=ex.F_SERVER[2]), scn)
    np.testing.assert_allclose(1e3 * float(one["greedy_delay"]), table[2, 1], atol=1e-3)


def test_decide_one_scenario_prints_a_decision_per_task(run):
    out = run("decide_one_scenario.py")
    lines = out.splitlines()
    width, depth = (int(x) for x in re.findall(r"\d+", lines[0]))
    assert width >= 1 and depth >= 1
    rows = [ln for ln in lines if re.match(r"^\s+\d+ \|", ln)]
    assert len(rows) == 5
    offloaded = [ln for ln in rows if "True" in ln]
    local = [ln for ln in rows if "False" in ln]
    assert len(offloaded) + len(local) == 5
    for ln in local:                                      # local tasks get no resources
        assert _numbers(ln)[0] == 0.0
    total = _numbers(lines[-1])
    if offloaded:
        assert abs(total[0] - total[1]) < 1e-6 * total[1]    # shares sum to b_max
