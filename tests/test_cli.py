"""dynmec_jax/cli: the launchers' persistent compilation cache (on by default, off by flag)."""

import pathlib
import sys

import pytest

from dynmec_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tasks.csv"


@pytest.fixture
def decide(launch, tmp_path):
    """Runs launch/decide.py on the example file (a fresh process: conftest ``launch``)."""
    return lambda *flags: launch([sys.executable, ROOT / "launch" / "decide.py",
                                  f"--in={EXAMPLE}", f"--out={tmp_path / 'out.csv'}", *flags],
                                 cwd=ROOT, timeout=600)


def _entries(path):
    return sorted(p.name for p in pathlib.Path(path).rglob("*") if p.is_file())


def test_a_second_identical_run_compiles_nothing(tmp_path, decide):
    cache = tmp_path / "cache"
    first = decide(f"--compilation_cache_dir={cache}")
    assert first.returncode == 0, first.stderr
    stored = _entries(cache)
    assert stored, "the first run cached no program"
    second = decide(f"--compilation_cache_dir={cache}")
    assert second.returncode == 0, second.stderr
    # Every program of the second run was found: nothing new was compiled and stored.
    assert _entries(cache) == stored


def test_the_cache_is_off_with_a_flag(tmp_path, decide):
    cache = tmp_path / "cache"
    proc = decide(f"--compilation_cache_dir={cache}", "--nocompilation_cache")
    assert proc.returncode == 0, proc.stderr
    assert _entries(cache) == []


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cli.CACHE_ENV, str(tmp_path / "x"))
    assert cli.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv(cli.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.default_cache_dir() == tmp_path / "dynmec_jax" / "jax"
