"""A fork server for the tests that run a launcher: each run is a fresh child process.

Started once per test process (``conftest.launch``), this script imports
what every launcher imports (JAX, NumPy, SciPy, Matplotlib, Orbax, Flax and
the library, but no launcher module: those define absl flags) and then
serves requests read from stdin, one JSON line each::

    {"argv": ["-m", "dynmec_jax.cli.decide", "--in=..."] | ["launch/decide.py", ...],
     "cwd": "...", "env": {...}, "timeout": 600}

For each it forks; the child takes the request's working directory and
environment, sends its stdout and stderr to two files and runs the module
(``runpy.run_module``, as ``python -m`` does) or the script
(``runpy.run_path``, as ``python script.py`` does) as ``__main__``.  The
server answers one JSON line ``{"returncode": ..., "stdout": path,
"stderr": path}``.  A child is the process ``python`` would have started,
less the seconds of importing: no JAX backend exists in the server when it
forks (the child initialises its own, reading ``XLA_FLAGS`` from the
request's environment), and absl's flags are defined in the child only.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback


def _preload() -> None:
    """Imports the launchers' dependencies (not the launcher modules)."""
    import matplotlib
    matplotlib.use("Agg")
    import jax  # noqa: F401
    import jax.numpy  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import scipy.stats  # noqa: F401
    from jax._src import xla_bridge

    import dynmec_jax.cli  # noqa: F401
    import dynmec_jax.decisionfile  # noqa: F401
    import dynmec_jax.experiments.plan  # noqa: F401
    import dynmec_jax.experiments.reproduce  # noqa: F401
    import dynmec_jax.pipeline  # noqa: F401
    import dynmec_jax.train.allocator  # noqa: F401
    import dynmec_jax.train.joint  # noqa: F401
    assert not xla_bridge._backends, "the server must not initialise a JAX backend"


def _child(req: dict, out: str, err: str) -> None:
    """Runs the request in this (forked) process; never returns."""
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        argv = req["argv"]
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:   # noqa: BLE001 - reported like the interpreter does
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    """The child's exit code (negative: killed by that signal; -9 also on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.005)


def main() -> None:
    _preload()
    with tempfile.TemporaryDirectory(prefix="dynmec-forkserver-") as tmp:
        reply = sys.stdout
        print(json.dumps({"ready": True}), file=reply, flush=True)
        for n, line in enumerate(sys.stdin):
            req = json.loads(line)
            out, err = (os.path.join(tmp, f"{n}.{s}") for s in ("out", "err"))
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(req, out, err)
            code = _wait(pid, req.get("timeout", 600))
            print(json.dumps({"returncode": code, "stdout": out, "stderr": err}), file=reply,
                  flush=True)


if __name__ == "__main__":
    main()
