"""dynmec_jax.deciders and ``dynmec-decide --method``: every method decides a user's file,
the certified optimum is never beaten, and the flags refuse what does not fit."""

import csv
import pathlib
import sys

import jax
import numpy as np
import pytest

from dynmec_jax import deciders, evaluation, taskfile
from dynmec_jax.system import SystemParams

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tasks.csv"


def _cost(decider, scn, sp):
    """sum_i C_i (Eq. 24-25) of ``decider``'s decision, its own inference delay included."""
    d = decider.decide(scn, sp)
    s = evaluation.score(scn, d.offload, d.bandwidth, d.f_alloc,
                         sys_params=sp.replace(n_users=scn.size.shape[-1]),
                         inference_delay=(d.inference_delay_local, d.inference_delay_edge))
    return float(np.sum(s.cost))


@pytest.fixture(scope="module")
def scenarios():
    return taskfile.read_tasks(EXAMPLE).scenarios


@pytest.mark.parametrize("method", deciders.METHODS)
def test_every_method_decides_every_scenario(method, scenarios):
    decider = deciders.make(method)
    for scn in scenarios.values():
        d = decider.decide(scn)
        n = scn.size.shape[-1]
        assert np.asarray(d.offload).shape == (n,)
        bw = np.asarray(d.bandwidth)
        off = np.asarray(d.offload, bool)
        assert np.all(np.isfinite(bw)) and np.all(bw[~off] == 0)
        if off.any():   # the whole channel and server go to the offloaded tasks (Eq. 18, 20)
            assert bw.sum() == pytest.approx(decider.sys_params.bandwidth_max, rel=1e-5)
            assert np.asarray(d.f_alloc).sum() == pytest.approx(
                decider.sys_params.f_server, rel=1e-5)


def test_the_optimum_is_never_beaten(scenarios):
    sp = SystemParams()
    best = deciders.make("optimum")
    for scn in scenarios.values():
        opt = _cost(best, scn, sp)
        for method in ("pmrl", "pmrl_search", "greedy", "droo"):
            assert _cost(deciders.make(method), scn, sp) >= opt * (1 - 1e-5), method


def test_greedy_decider_is_the_greedy_method(scenarios):
    scn = next(iter(scenarios.values()))
    sp = SystemParams().replace(n_users=scn.size.shape[-1])
    d = deciders.make("greedy").decide(scn)
    batched = jax.tree.map(lambda a: np.asarray(a)[None], scn)
    ref = evaluation.greedy(batched, sp).decision
    np.testing.assert_array_equal(np.asarray(d.offload), np.asarray(ref.offload[0]))
    assert float(d.inference_delay_local) == pytest.approx(    # its own Eq. 9 delay
        float(ref.inference_delay_local[0]))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="--method must be one of"):
        deciders.make("oracle")


@pytest.fixture
def cli(launch):
    """Runs ``python -m dynmec_jax.cli.decide`` (a fresh process: conftest ``launch``)."""
    return lambda *args: launch([sys.executable, "-m", "dynmec_jax.cli.decide", *args],
                                cwd=ROOT, timeout=600)


def test_cli_method_greedy_writes_its_decisions(tmp_path, scenarios, cli):
    out = tmp_path / "g.csv"
    proc = cli(f"--in={EXAMPLE}", f"--out={out}", "--method=greedy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("greedy decided 2 scenarios, 8 tasks")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    for sid, scn in scenarios.items():
        d = deciders.make("greedy").decide(scn)
        np.testing.assert_array_equal([int(r["offload"]) for r in rows if r["scenario"] == sid],
                                      np.asarray(d.offload, int))


@pytest.mark.parametrize("args, message", [
    (["--method=greedy", "--pipeline=x"], "--pipeline is for --method=pmrl or pmrl_search"),
    (["--method=pmrl", "--droo=x"], "--droo is for --method=droo"),
    (["--method=droo", "--droo=/nonexistent/droo"], "--droo:"),
    (["--method=fastest"], "--method"),
])
def test_cli_method_flags_refused(tmp_path, args, message, cli):
    out = tmp_path / "o.csv"
    proc = cli(f"--in={EXAMPLE}", f"--out={out}", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not out.exists()


def test_help_says_the_optimum_is_certified_and_slower(cli):
    proc = cli("--helpfull")
    text = " ".join(proc.stdout.split())
    assert "certified optimum" in text and "slower" in text
