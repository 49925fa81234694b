"""The command-line entry points (one module each) and the helpers they share.

Each launcher module (``dynmec_jax/cli/reproduce.py``, ...) parses its absl
flags and calls one library function; ``launch/<name>.py`` runs it as a
script and ``pyproject.toml`` installs it as a console script
(``dynmec-reproduce``, ...).  Default configs are found inside the package,
so both work from any directory.

Bad input ends the program with one clear line on stderr and exit code 2,
before any compute.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging as pylogging
import os
import pathlib
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from dynmec_jax import files, multihost, typedconfig

USAGE_ERROR = 2
#: The presets' directory (``dynmec_jax/configs``).
CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


#: Exit code of a run stopped because training diverged (:class:`loop.DivergenceError`).
DIVERGED = 1


def diverged(error: Exception) -> int:
    """Prints ``error: <the divergence>`` on stderr; returns :data:`DIVERGED` (exit 1)."""
    print(f"error: {error}", file=sys.stderr)
    return DIVERGED


def fail(message: str) -> None:
    """Prints ``error: message`` on stderr and exits with code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def parse_flags(argv):
    """absl flag parser for :func:`run`: a bad flag or config override is one line, exit 2.

    Covers unknown flags, unknown ``--config.field`` keys and values of the
    wrong type (ml_collections raises plain ``AttributeError``/``KeyError``
    for those).
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    except (AttributeError, KeyError, ValueError, TypeError) as e:
        fail(f"invalid flag or config override: {e}")


#: Set (to anything) to make the launchers raise glibc's malloc thresholds (:func:`tune_malloc`).
TUNE_MALLOC_ENV = "DYNMEC_JAX_TUNE_MALLOC"


def tune_malloc() -> bool:
    """Raises glibc's mmap, trim and top-pad thresholds for this process (``mallopt``).

    XLA's CPU temporaries (megabytes each) are otherwise ``mmap``-ed and
    page-faulted afresh on every call and handed back on every free;
    with the thresholds raised they are reused from the heap
    (benchmarks/README.md, "Malloc", has the measurements; the launchers
    leave it off unless ``DYNMEC_JAX_TUNE_MALLOC`` is set).  glibc reads ``MALLOC_*_``
    environment variables only at start-up, hence ``mallopt`` in the
    process.  Returns False (and changes nothing) where glibc is not the C
    library.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 31)
                and libc.mallopt(m_top_pad, 1 << 28))


def run(main: Callable, doc: str | None = None) -> None:
    """``absl.app.run(main)`` with :func:`parse_flags`; exits with main's return code.

    ``doc``: the usage text ``--help`` prints (the launcher module's
    docstring; console scripts have none of their own).  Tunes malloc first
    (:func:`tune_malloc`) if ``DYNMEC_JAX_TUNE_MALLOC`` is set in the
    environment (off by default; benchmarks/README.md).
    """
    main_module = sys.modules.get("__main__")
    if doc and main_module is not None and not getattr(main_module, "__doc__", None):
        main_module.__doc__ = doc
    if os.environ.get(TUNE_MALLOC_ENV):
        tune_malloc()
    sys.exit(app.run(main, flags_parser=parse_flags))


def define_config(module: str, preset: str, help_text: str):
    """``--config``: an ml_collections config file, default ``configs/<module>:<preset>``
    inside the package (an absolute path: the launchers work from any directory).

    ml_collections applies ``--config.x=...`` overrides of a default config
    when the flag is defined (at import): a bad override is one line, exit 2.
    """
    try:
        return config_flags.DEFINE_config_file("config", f"{CONFIG_DIR / module}:{preset}",
                                               help_text)
    except (AttributeError, KeyError, ValueError, TypeError) as e:
        fail(f"invalid flag or config override: {e}")


def define_training_flags(module: str, what: str, exported: str):
    """The flags of a training launcher: ``--config`` (:func:`define_config`, preset
    ``default``), ``--workdir`` (default ``runs/<module stem>``) and
    ``--export_pretrained`` (also write the trained ``what`` into
    ``dynmec_jax/pretrained/<exported>``, the package's default).  Returns the three
    flag holders."""
    stem = module.removesuffix(".py")
    return (define_config(module, "default", f"{what} training config"),
            flags.DEFINE_string("workdir", f"runs/{stem}", "output directory"),
            flags.DEFINE_bool("export_pretrained", False,
                              f"also write the {what} into dynmec_jax/pretrained/{exported}"))


def typed(cls, cd):
    """The typed config ``cls`` of ConfigDict ``cd``
    (:func:`dynmec_jax.typedconfig.from_configdict`); an unknown key or a bad value is
    one line and exit 2."""
    return guard(typedconfig.from_configdict, cls, cd)


def entry(main: Callable, doc: str | None, module: str | None = None) -> Callable[[], None]:
    """The console-script function of a launcher, ``run = cli.entry(main, __doc__, __name__)``,
    which also runs the command when ``module`` is ``"__main__"`` (``python -m``)."""
    def run_main() -> None:
        run(main, doc)
    run_main.__doc__ = "Runs the command (its module docstring is the usage)."
    if module == "__main__":
        run_main()
    return run_main


def start(argv) -> None:
    """What every launcher's ``main`` does first: no positional arguments, quiet logs, and
    JAX's persistent compilation cache (:func:`enable_compilation_cache`)."""
    check_no_args(argv)
    quiet_libraries()
    if _CACHE.value:
        enable_compilation_cache(_CACHE_DIR.value or default_cache_dir())


#: Environment variable naming the compilation cache directory (the default of
#: ``--compilation_cache_dir``).
CACHE_ENV = "DYNMEC_JAX_CACHE_DIR"
_CACHE = flags.DEFINE_bool(
    "compilation_cache", True,
    "keep compiled programs in JAX's persistent cache (--nocompilation_cache: off)")
_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    f"the persistent cache's directory (default ${CACHE_ENV}, else "
    "$XDG_CACHE_HOME/dynmec_jax/jax, else ~/.cache/dynmec_jax/jax)")


def default_cache_dir() -> pathlib.Path:
    """The user's compilation cache directory: ``$DYNMEC_JAX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/dynmec_jax/jax``, else ``~/.cache/dynmec_jax/jax``."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root).expanduser() / "dynmec_jax" / "jax"


def enable_compilation_cache(path) -> pathlib.Path | None:
    """Turns on JAX's persistent compilation cache in ``path`` for every program.

    A compiled program is stored under a key of its HLO, the compile options,
    the backend and the JAX version; a later process that compiles the same
    program (a rerun, a resumed run, a run that changes one sweep point)
    loads it instead.  The thresholds are set to zero (JAX's default skips
    programs that compile in under a second), so CPU programs are cached
    too.  A directory that cannot be created is reported as a warning and the
    cache left off (the run goes on, compiling as usual).  Returns the
    directory, or None when off.
    """
    p = pathlib.Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        logging.warning("compilation cache off: cannot create %s (%s)", p, e.strerror or e)
        return None
    jax.config.update("jax_compilation_cache_dir", str(p))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return p


class ProcessFlags(NamedTuple):
    """The flags of a multi-process launch (:func:`define_process_flags`)."""

    coordinator: Any
    num_processes: Any
    process_id: Any

    def check(self) -> bool:
        """:func:`check_processes` with these flags' values (call it before writing
        anything: inconsistent flags are one line, exit 2, and nothing is created)."""
        return check_processes(self.coordinator.value, self.num_processes.value,
                               self.process_id.value)

    def init(self) -> bool:
        """:func:`init_processes` with these flags' values."""
        return init_processes(self.coordinator.value, self.num_processes.value,
                              self.process_id.value)


def define_process_flags() -> ProcessFlags:
    """``--coordinator``, ``--num_processes``, ``--process_id`` (multi-process runs)."""
    return ProcessFlags(
        flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process)"),
        flags.DEFINE_integer("num_processes", None, "number of processes (multi-process)"),
        flags.DEFINE_integer("process_id", None, "this process's index (multi-process)"))


class PlanFlags(NamedTuple):
    """The flags of ``--plan`` (:func:`define_plan_flags`)."""

    plan: Any
    plan_dir: Any
    fraction: Any
    tflops: Any
    hbm_gb: Any

    def run(self, cfg, workdir, stages, optimum_workers: int = 1) -> int:
        """Plans ``stages`` of ``cfg`` (:func:`dynmec_jax.experiments.plan.make_plan`; the
        certified optimum in ``optimum_workers`` processes), prints the Markdown table and
        writes ``plan.json`` and ``plan.md`` under ``--plan_dir`` (default
        ``WORKDIR/plan``).  Returns 0."""
        from dynmec_jax.experiments import plan as plan_lib
        out = writable_workdir(self.plan_dir.value or pathlib.Path(workdir) / "plan")
        result = guard(lambda: plan_lib.make_plan(
            cfg, stages=stages, step_fraction=self.fraction.value,
            assume_tflops=self.tflops.value, assume_hbm_gb=self.hbm_gb.value,
            optimum_workers=optimum_workers, log=lambda m: logging.info("plan: %s", m)))
        paths = plan_lib.write(result, out)
        print(plan_lib.markdown(result))
        print(f"plan written to {paths[0]} and {paths[1]}")
        return 0

    def check(self) -> None:
        """Refuses the accelerator and fraction flags without ``--plan`` (one line, exit 2)."""
        if self.plan.value:
            return
        for f in (self.plan_dir, self.tflops, self.hbm_gb):
            if f.value is not None:
                fail(f"--{f.name} needs --plan")


def define_plan_flags() -> PlanFlags:
    """``--plan`` and its options (:class:`PlanFlags`)."""
    return PlanFlags(
        flags.DEFINE_bool("plan", False, "compile every program and predict the run's "
                          "memory, FLOPs and time instead of running it"),
        flags.DEFINE_string("plan_dir", None, "where --plan writes plan.json and plan.md "
                            "(default WORKDIR/plan)"),
        flags.DEFINE_float("plan_fraction", 0.02, "fraction of Algorithm 1's steps of the "
                           "plan's timed executions", lower_bound=1e-6, upper_bound=1.0),
        flags.DEFINE_float("assume_tflops", None, "--plan: sustained TFLOP/s of an "
                           "accelerator, for a FLOP-based estimate"),
        flags.DEFINE_float("assume_hbm_gb", None, "--plan: an accelerator's memory (GB): "
                           "does every program fit"))


def define_optimum_workers_flag():
    """``--optimum_workers``: processes solving the certified optimum (SCIP, one thread
    each); read it with :func:`optimum_workers`."""
    return flags.DEFINE_integer("optimum_workers", 0, "processes solving the certified "
                                "optimum (SCIP, one thread each); 0: one per CPU core",
                                lower_bound=0)


def optimum_workers(flag) -> int:
    """The number of processes of ``--optimum_workers`` (0: one per CPU core)."""
    from dynmec_jax.experiments import optimum
    return flag.value or optimum.host_cores()


def check_no_args(argv) -> None:
    """Rejects stray positional arguments (absl passes the program name first)."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; every option is a --flag")


def guard(check: Callable, *args):
    """Runs a host-side validation; a ``ValueError``/``TypeError`` becomes one line and exit 2."""
    try:
        return check(*args)
    except (ValueError, TypeError, KeyError) as e:
        fail(str(e))


def writable_workdir(path) -> pathlib.Path:
    """Creates ``path`` if needed and checks that a file can be written in it.

    An unwritable location ends the program with one line naming the path
    (exit code 2) before any compute.
    """
    p = pathlib.Path(path).expanduser().resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        fail(f"cannot write to workdir {p}: {e.strerror or e}")
    return p


_NOISY = ("orbax", "xla_bridge.py", "checkpoint_manager", "async_checkpointer")


def quiet_libraries() -> None:
    """Drops the INFO chatter of orbax and JAX's backend probing from absl logging,
    keeping this package's own progress lines and every warning."""
    def keep(record) -> bool:
        return record.levelno >= pylogging.WARNING or not any(s in record.pathname for s in _NOISY)

    logging.get_absl_handler().addFilter(keep)


def init_processes(coordinator: str | None, num_processes: int | None,
                   process_id: int | None) -> bool:
    """Joins a multi-process run (:func:`dynmec_jax.multihost.initialize_distributed`);
    inconsistent flags are one line and exit 2 (:func:`check_processes`).  Returns
    whether several processes run."""
    if not check_processes(coordinator, num_processes, process_id):
        return False
    return multihost.initialize_distributed(coordinator, num_processes, process_id)


def check_processes(coordinator: str | None, num_processes: int | None,
                    process_id: int | None) -> bool:
    """Checks the multi-process flags without connecting: one line and exit 2 if they are
    inconsistent (e.g. ``--num_processes=2`` without ``--coordinator``).  Returns whether
    they ask for several processes."""
    if num_processes is None or num_processes == 1:
        if coordinator is not None or process_id not in (None, 0):
            fail("--coordinator and --process_id need --num_processes >= 2")
        return False
    if num_processes < 1:
        fail(f"--num_processes must be >= 1, got {num_processes}")
    if coordinator is None:
        fail("--num_processes >= 2 needs --coordinator=host:port (process 0's address)")
    if process_id is None or not 0 <= process_id < num_processes:
        fail(f"--process_id must be in [0, {num_processes}), got {process_id}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--coordinator must be host:port, got {coordinator!r}")
    return True


@contextlib.contextmanager
def locked(workdir):
    """``with cli.locked(workdir):`` holds :func:`lock_workdir` for the block."""
    lock = lock_workdir(workdir)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.close()


def lock_workdir(workdir):
    """One run per workdir (:func:`dynmec_jax.files.lock_workdir`); returns the lock (keep it).

    The processes of one multi-process launch are one run: process 0 takes
    the lock for all of them and tells the others whether it got it.  A
    workdir held by another run: one line and exit 2 on every process.
    """
    lock, message = None, ""
    if jax.process_index() == 0:
        try:
            lock = files.lock_workdir(workdir)
        except files.WorkdirBusy as e:
            message = str(e)
    busy = lock is None if jax.process_index() == 0 else True
    if jax.process_count() > 1:
        busy = bool(multihost_utils.broadcast_one_to_all(np.int32(busy)))
    if busy:
        fail(message or f"workdir {workdir} is in use by another run (see process 0)")
    return lock
