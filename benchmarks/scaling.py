"""How each decision method's time per scenario and peak memory grow with N and the batch.

Methods (each a jitted JAX function on Table II scenarios,
``system.sample_scenarios(key, SystemParams(n_users=N), batch)``):

* ``pmrl``: the shipped pipeline (``pipeline.load_pipeline()``), timed as a
  user calls it: ``Pipeline.decide(scn, sys_params)`` on a batch (host-side
  ``validate_scenario``, padding of N to ``padded_users(N)`` = max(64, next
  power of two), the jitted body, cutting the padding off).  The same child
  process also times ``pmrl_body``: ``jax.jit(pipeline.decide_body)`` alone on
  the already padded batch (the program ``decide`` runs inside; its compile
  column shows whether it reused ``decide``'s compilation).  Both rows share
  the process, so they share one peak-memory figure.  Because of the padding
  every N <= 64 runs the same N = 64 program (flat time per scenario there),
  and N = 100, 300, 1000 run N = 128, 512, 1024 (the ``padded N`` column).
* ``kkt``: ``baselines.optimal_allocation(scn, offload_mask, sys_params)``
  with every task offloaded.
* ``greedy``: ``evaluation.greedy(scn, sys_params)`` (removal-only greedy
  offloading, N rounds of the KKT allocation: O(N^2) per scenario).
* ``ga``: ``evaluation.genetic(key, scn, sys_params, joint=True)`` with the
  library's defaults (200 iterations, population 6N, Section V.B joint mode:
  O(N^2) per scenario and iteration).
* ``exhaustive``: ``baselines.exhaustive.exhaustive_optimum`` with the
  settings of ``evaluation.exhaustive`` (``objective="cost"``,
  ``allocation="energy_aware"``) and ``max_users=N`` (the library caps N at
  12 by default): 2^N subsets, each with two KKT solves; only at small N.

Two sweeps: (1) over N (batch fixed per method, ``--n-batch``); (2) over the
batch at N = ``--batch-n`` (not ``exhaustive``).  Every point runs in a fresh
subprocess (``python scaling.py --point JSON``, with a timeout), which
reports: the first call (trace + compile + run), the median of up to
``--repeats`` warm calls (``jax.block_until_ready``, stopped early once the
warm calls have used ``--measure-budget`` seconds), time per scenario =
median / batch, compile time = first call - median warm call (noisy where
the warm calls are few and long, e.g. a single 9 s call), and memory:
``ru_maxrss`` of the child after importing jax and the library and
initialising the CPU backend (the baseline) and at the end of the point (the
peak), so that the increment is the point's own.  Points of one sweep run
value-major (every method at one N, then the next N), so machine load hits
the methods alike; a batch-sweep point identical to an N-sweep point (N =
``--batch-n`` at that method's N-sweep batch) is taken from the N sweep.

Each row also has the point's setup time (sampling the scenarios; for
``pmrl`` also ``load_pipeline``) and its measured wall time (first call
plus warm calls).

A method stops (remaining points skipped, reason printed) when its previous
point's measured wall time (compile included, setup not) exceeded
``--time-limit`` seconds, timed out, died (a signal: likely out of memory), went
over ``--mem-limit-mb`` peak RSS, or when the next point is predicted to
exceed the time or memory limit (last compile + 2 calls extrapolated with the
local growth, at least linear in N or the batch, at least 2^N for
``exhaustive``).

Growth fits (least squares): ln(time per scenario) against ln(N), a power
law, for the N sweep; ln(time per call) against ln(batch) for the batch sweep
(1 = linear in the batch; the per-scenario exponent is that minus 1); for
``exhaustive`` log2(time per scenario) against N (exponential), reported as
the base b of time ~ b^N (2 for the subsets alone).  Each fit is over the
longest tail of the measured points (the largest values, at least 3 when
there are 3) whose residuals stay within ``FIT_TOLERANCE`` (fixed per-call
overheads bend the small end away from the power law); the all-points fit
and the local exponent between neighbouring points are reported too.

On CPU the children raise glibc's mmap/trim thresholds (mallopt, as the
other scripts here) unless ``--plain-malloc``; with the raised thresholds
freed memory is kept, so peak RSS can be higher than with plain malloc.

Usage: ``python benchmarks/scaling.py [--quick] [--methods pmrl,kkt,greedy,ga,exhaustive]
[--time-limit 60] [--json out.json]``.  Last line:
``scaling_exponents pmrl=<e> pmrl_body=<e> kkt=<e> greedy=<e> ga=<e> exhaustive_base=<b>``
(N sweep; ``nan`` where fewer than two points were measured).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import baselines, cli, evaluation, pipeline, system
from dynmec_jax.baselines import exhaustive as exhaustive_lib

METHODS = ("pmrl", "kkt", "greedy", "ga", "exhaustive")
#: Rows per method: ``pmrl`` also yields ``pmrl_body`` (same process).
ROWS = {"pmrl": ("pmrl", "pmrl_body")}
DEFAULT_N = (10, 30, 100, 300, 1000)
DEFAULT_EXHAUSTIVE_N = (4, 6, 8, 10, 12, 14, 16, 18, 20)
DEFAULT_BATCHES = (1, 4, 16, 64, 256, 1024)
DEFAULT_N_BATCH = "64,ga=1,exhaustive=16"
QUICK_N = (10, 30)
QUICK_EXHAUSTIVE_N = (4, 6)
QUICK_BATCHES = (1, 16)
#: Quick N-sweep batches equal to quick batch-sweep values, so N = 30 points are shared.
QUICK_N_BATCH = "16,ga=1,exhaustive=16"
#: Largest |residual| (natural log of time) of a fit's points to count as one growth law.
FIT_TOLERANCE = 0.25
RESULT_PREFIX = "SCALING_POINT "


def maxrss_mb() -> float:
    """Peak resident set size of this process so far [MiB] (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def available_memory_mb() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` [MiB]; ``inf`` where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.inf


# ----------------------------------------------------------------------------
# Child: one point
# ----------------------------------------------------------------------------

def build_calls(method: str, n_users: int, batch: int, seed: int) -> list:
    """The calls to time for one point: ``[(row name, fn, args, extra fields)]``.

    Scenarios (and, for ``pmrl_body``, their padded form) are built and
    materialised here, before any timing.
    """
    sp = system.SystemParams(n_users=n_users)
    k_scn, k_alg = jax.random.split(jax.random.key(seed))
    scn = jax.block_until_ready(system.sample_scenarios(k_scn, sp, batch))
    if method == "pmrl":
        pipe = pipeline.load_pipeline()
        n_pad = pipeline.padded_users(n_users)
        padded, valid = jax.block_until_ready(system.pad_users(scn, n_pad, sp))
        extra = {"padded_n": n_pad}
        return [("pmrl", pipe.decide, (scn, sp), extra),
                ("pmrl_body", jax.jit(pipeline.decide_body), (pipe, padded, sp, None, valid),
                 extra)]
    if method == "kkt":
        mask = jnp.ones((batch, n_users), bool)
        return [("kkt", jax.jit(baselines.optimal_allocation), (scn, mask, sp), {})]
    if method == "greedy":
        return [("greedy", jax.jit(evaluation.greedy), (scn, sp), {})]
    if method == "ga":
        fn = jax.jit(functools.partial(evaluation.genetic, joint=True))
        return [("ga", fn, (k_alg, scn, sp), {})]
    if method == "exhaustive":
        fn = jax.jit(functools.partial(exhaustive_lib.exhaustive_optimum, objective="cost",
                                       allocation="energy_aware", max_users=n_users))
        return [("exhaustive", fn, (scn, sp), {"subsets": 2 ** n_users})]
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def measure(fn, args, repeats: int, budget_s: float) -> dict:
    """Times ``fn(*args)``: the first call, then up to ``repeats`` warm calls.

    Warm calls stop early once the next one would take the warm calls past
    ``budget_s`` seconds (at least one warm call is always made).  Returns
    first-call and median/min warm times [s] and the number of warm calls.
    """
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    warm = []
    while len(warm) < repeats:
        if warm and sum(warm) + statistics.median(warm) > budget_s:
            break
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        warm.append(time.perf_counter() - t0)
    median = statistics.median(warm)
    return {"first_call_s": first, "call_s": median, "call_min_s": min(warm),
            "repeats": len(warm), "compile_s": first - median}


def run_point(spec: dict) -> dict:
    """Runs one point in this (fresh) process; returns its rows and memory figures."""
    if not spec.get("plain_malloc"):
        cli.tune_malloc()
    jax.block_until_ready(jnp.zeros(()) + 1)  # initialise the backend before the baseline
    rss_base = maxrss_mb()
    t_start = time.perf_counter()
    method, n, batch = spec["method"], spec["n_users"], spec["batch"]
    calls = build_calls(method, n, batch, spec["seed"])
    setup = time.perf_counter() - t_start
    rows = []
    for name, fn, args, extra in calls:
        rec = {"method": name, "n_users": n, "batch": batch, **extra,
               **measure(fn, args, spec["repeats"], spec["measure_budget"])}
        rec["per_scenario_s"] = rec["call_s"] / batch
        rows.append(rec)
    wall = time.perf_counter() - t_start
    return {"rows": rows, "rss_base_mb": rss_base, "rss_peak_mb": maxrss_mb(),
            "setup_s": setup, "point_wall_s": wall, "measure_wall_s": wall - setup,
            "backend": jax.default_backend(), "jax": jax.__version__}


# ----------------------------------------------------------------------------
# Parent: sweeps, limits, fits
# ----------------------------------------------------------------------------

def run_child(spec: dict, timeout_s: float) -> dict:
    """Runs ``spec`` in a fresh interpreter with a timeout; returns its result or the failure.

    On failure the result has ``error`` (timeout, signal or exit status, with
    the tail of stderr) and no rows.
    """
    cmd = [sys.executable, os.path.abspath(__file__), "--point", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout_s:.0f} s", "kind": "timeout",
                "process_wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            out = json.loads(line[len(RESULT_PREFIX):])
            out["process_wall_s"] = wall
            return out
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    if proc.returncode < 0:
        return {"error": f"killed by signal {-proc.returncode} (likely out of memory): {tail}",
                "kind": "signal", "process_wall_s": wall}
    return {"error": f"exit status {proc.returncode}: {tail}", "kind": "error",
            "process_wall_s": wall}


def growth_of(xs, ys, exponential: bool) -> float:
    """Local growth between the last two points: exponent (power law) or base per unit x."""
    if exponential:
        return (ys[-1] / ys[-2]) ** (1.0 / (xs[-1] - xs[-2]))
    return math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])


def predict(done: list, x: int, exponential: bool) -> tuple[float, float]:
    """Predicted (measured wall [s], peak-RSS increment [MiB]) of the next point at ``x``.

    From the method's measured points: last compile time + 2 calls (first
    and one warm), the call time extrapolated with the local growth, at least
    linear (power law) or 2^x (exponential); the memory increment with the
    same factor.  ``(0, 0)`` without a measured point.
    """
    if not done:
        return 0.0, 0.0
    xs = [d["x"] for d in done]
    calls = [d["call_s"] for d in done]
    last = done[-1]
    if exponential:
        base = max(2.0, growth_of(xs, calls, True)) if len(done) > 1 else 2.0
        factor = base ** (x - xs[-1])
    else:
        expo = max(1.0, growth_of(xs, calls, False)) if len(done) > 1 else 1.0
        factor = (x / xs[-1]) ** expo
    return (max(last["compile_s"], 0.0) + 2.0 * last["call_s"] * factor,
            max(last["rss_inc_mb"], 0.0) * factor)


def sweep(label: str, xs, methods, make_spec, args, cache: dict, exponential_for=()) -> list:
    """Runs one sweep (value-major: all methods at one value, then the next).

    ``make_spec(method, x)`` gives a point's spec, or None where the method
    does not take part at ``x``; methods in ``exponential_for`` are
    extrapolated as 2^x.  ``cache`` maps a spec (JSON) to its child's result:
    a point already measured (e.g. N = 30 at the N sweep's batch, met again
    in the batch sweep) is reused, not rerun (``reused`` set).  Returns the
    records: measured rows (one per row name) and skipped/failed points
    (``skipped`` or ``error`` set).
    """
    timeout = 2.0 * args.time_limit + 120.0
    stopped: dict = {}
    done: dict = {m: [] for m in methods}
    records = []
    for x in xs:
        for m in methods:
            spec = make_spec(m, x)
            if spec is None:
                continue
            base = {"sweep": label, "method": m, "x": x, "n_users": spec["n_users"],
                    "batch": spec["batch"]}
            if m in stopped:
                records.append({**base, "skipped": stopped[m]})
                continue
            t_pred, mem_pred = predict(done[m], x, m in exponential_for)
            rss_base = done[m][-1]["rss_base_mb"] if done[m] else 0.0
            if t_pred > args.time_limit:
                stopped[m] = (f"predicted {t_pred:.0f} s > time limit {args.time_limit:g} s "
                              f"(from the previous point)")
            elif rss_base + mem_pred > args.mem_limit_mb:
                stopped[m] = (f"predicted peak RSS {rss_base + mem_pred:.0f} MiB > memory "
                              f"limit {args.mem_limit_mb:.0f} MiB")
            if m in stopped:
                records.append({**base, "skipped": stopped[m]})
                print(f"  [{label}] {m} x={x}: skipped: {stopped[m]}", flush=True)
                continue
            key = json.dumps(spec, sort_keys=True)
            reused = key in cache
            out = cache[key] if reused else run_child(spec, timeout)
            cache[key] = out
            if "error" in out:
                stopped[m] = f"point x={x} failed: {out['error']}"
                records.append({**base, "error": out["error"], "kind": out["kind"],
                                "process_wall_s": out["process_wall_s"]})
                print(f"  [{label}] {m} x={x}: FAILED: {out['error']}", flush=True)
                continue
            inc = out["rss_peak_mb"] - out["rss_base_mb"]
            for row in out["rows"]:
                records.append({**base, **row, "reused": reused,
                                "rss_base_mb": out["rss_base_mb"],
                                "rss_peak_mb": out["rss_peak_mb"], "rss_inc_mb": inc,
                                "setup_s": out["setup_s"], "point_wall_s": out["point_wall_s"],
                                "measure_wall_s": out["measure_wall_s"],
                                "process_wall_s": out["process_wall_s"]})
            first = out["rows"][0]
            done[m].append({"x": x, "call_s": first["call_s"], "compile_s": first["compile_s"],
                            "rss_inc_mb": inc, "rss_base_mb": out["rss_base_mb"]})
            print(f"  [{label}] {m} x={x}: " + ", ".join(
                f"{r['method']} {r['call_s'] * 1e3:.2f} ms/call" for r in out["rows"])
                + f"; compile {first['compile_s']:.1f} s; peak RSS {out['rss_peak_mb']:.0f} MiB"
                f" (+{inc:.0f}); setup {out['setup_s']:.1f} s, measured {out['measure_wall_s']:.1f}"
                f" s, process {out['process_wall_s']:.1f} s" + (" (reused)" if reused else ""),
                flush=True)
            if out["measure_wall_s"] > args.time_limit:
                stopped[m] = (f"previous point (x={x}) took {out['measure_wall_s']:.0f} s > time "
                              f"limit {args.time_limit:g} s")
            elif out["rss_peak_mb"] > args.mem_limit_mb:
                stopped[m] = (f"previous point (x={x}) peak RSS {out['rss_peak_mb']:.0f} MiB > "
                              f"memory limit {args.mem_limit_mb:.0f} MiB")
    return records


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line y = a x + c: ``(a, c, largest |residual|)``."""
    a, c = np.polyfit(x, y, 1)
    return float(a), float(c), float(np.max(np.abs(y - (a * x + c))))


def fit_growth(xs, ts, exponential: bool) -> dict:
    """Growth law of times ``ts`` [s] over ``xs``: tail fit, all-points fit, local values.

    Power law: slope of ln t against ln x (the exponent).  Exponential: slope
    of log2 t against x, reported as the base b = 2^slope of t ~ b^x.  The
    tail fit uses the longest run of the largest x (>= 3 points when there
    are >= 3) with every |residual| of ln t <= ``FIT_TOLERANCE``, else the
    last two points.
    """
    xs = np.asarray(xs, float)
    ts = np.asarray(ts, float)
    if len(xs) < 2:
        return {"value": math.nan, "all": math.nan, "range": None, "points": int(len(xs)),
                "local": []}
    fx = xs if exponential else np.log(xs)
    fy = np.log2(ts) if exponential else np.log(ts)
    tol = FIT_TOLERANCE / math.log(2.0) if exponential else FIT_TOLERANCE
    start = len(xs) - 2
    for s in range(0, len(xs) - 2):
        if fit_line(fx[s:], fy[s:])[2] <= tol:
            start = s
            break
    slope = fit_line(fx[start:], fy[start:])[0]
    slope_all = fit_line(fx, fy)[0]
    local = list(np.diff(fy) / np.diff(fx))

    def value(v):
        """The slope as reported: the exponent, or the base for an exponential."""
        return float(2.0 ** v) if exponential else float(v)

    return {"value": value(slope), "all": value(slope_all),
            "range": [float(xs[start]), float(xs[-1])], "points": int(len(xs) - start),
            "local": [value(v) for v in local]}


def fits_for(records: list, rows, exponential_for=(), per_call: bool = False) -> dict:
    """Growth fits of each row name over a sweep's measured records (see :func:`fit_growth`)."""
    out = {}
    for name in rows:
        meas = [r for r in records if r.get("method") == name and "call_s" in r]
        meas.sort(key=lambda r: r["x"])
        key = "call_s" if per_call else "per_scenario_s"
        fit = fit_growth([r["x"] for r in meas], [r[key] for r in meas],
                         name in exponential_for)
        fit["model"] = ("exponential (base b of t ~ b^N)" if name in exponential_for
                        else "power law" + (" (time per call vs batch)" if per_call
                                            else " (time per scenario)"))
        stops = [r for r in records if r["method"] == name.replace("_body", "")
                 and ("skipped" in r or "error" in r)]
        fit["stopped"] = (f"x={stops[0]['x']}: {stops[0].get('skipped') or stops[0]['error']}"
                          if stops else None)
        out[name] = fit
    return out


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

def json_safe(obj):
    """``obj`` with NaN/inf floats replaced by None (strict JSON), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fmt(v, spec: str = ".3g") -> str:
    """A number for the table; '-' for None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def print_table(title: str, records: list, exponential_for=()) -> None:
    """Markdown table of one sweep's records (measured, skipped and failed points).

    ``local exp``: growth of the time per call from the method's previous
    point (exponent; for methods in ``exponential_for`` the base per unit x).
    """
    print(f"\n### {title}\n")
    print("| method | N | batch | padded N | warm calls | ms / call | us / scenario | "
          "local exp | compile s | RSS base MiB | RSS peak MiB | RSS inc MiB | setup s | "
          "measured s | note |")
    print("|---" * 15 + "|")
    prev: dict = {}
    for r in records:
        name = r["method"]
        if "call_s" not in r:
            note = r.get("skipped") or r.get("error")
            print(f"| {name} | {r['n_users']} | {r['batch']} | | | | | | | | | | | | "
                  f"{'skipped' if 'skipped' in r else 'FAILED'}: {note} |")
            continue
        local = None
        if name in prev and r["x"] != prev[name]["x"]:
            px, pt = prev[name]["x"], prev[name]["call_s"]
            if name in exponential_for:
                local = (r["call_s"] / pt) ** (1.0 / (r["x"] - px))
            else:
                local = math.log(r["call_s"] / pt) / math.log(r["x"] / px)
        prev[name] = r
        note = []
        if name == "pmrl_body":
            note.append("jitted decide_body on padded input; same process as pmrl")
        elif name == "pmrl":
            note.append("Pipeline.decide (host validation + padding + jit)")
        if name == "exhaustive":
            note.append(f"{r['subsets']} subsets; local value = base per user")
        if r.get("reused"):
            note.append("same point as in the N sweep (reused)")
        print(f"| {name} | {r['n_users']} | {r['batch']} | "
              f"{r.get('padded_n', '')} | {r['repeats']} | {fmt(r['call_s'] * 1e3)} | "
              f"{fmt(r['per_scenario_s'] * 1e6)} | {fmt(local, '.2f')} | "
              f"{fmt(r['compile_s'], '.1f')} | {fmt(r['rss_base_mb'], '.0f')} | "
              f"{fmt(r['rss_peak_mb'], '.0f')} | {fmt(r['rss_inc_mb'], '.0f')} | "
              f"{fmt(r['setup_s'], '.1f')} | {fmt(r['measure_wall_s'], '.1f')} | "
              f"{'; '.join(note)} |")


def print_fits(title: str, fits: dict) -> None:
    """Markdown table of growth fits."""
    print(f"\n### {title}\n")
    print("| method | model | fit range | points | tail fit | all points | local values | "
          "stopped |")
    print("|---" * 8 + "|")
    for name, f in fits.items():
        rng = "-" if f["range"] is None else f"{f['range'][0]:g}..{f['range'][1]:g}"
        local = ", ".join(f"{v:.2f}" for v in f["local"]) or "-"
        print(f"| {name} | {f['model']} | {rng} | {f['points']} | {fmt(f['value'], '.2f')} | "
              f"{fmt(f['all'], '.2f')} | {local} | {f['stopped'] or '-'} |")


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------

def int_list(text: str) -> tuple:
    """Comma-separated integers."""
    return tuple(int(v) for v in text.split(",") if v.strip())


def batch_map(text: str, methods) -> dict:
    """``"64,ga=1,exhaustive=16"``: a default batch and per-method overrides."""
    default, out = None, {}
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=")
            out[k.strip()] = int(v)
        elif part.strip():
            default = int(part)
    if default is None:
        raise ValueError(f"--n-batch needs a default batch: {text!r}")
    return {m: out.get(m, default) for m in methods}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny sizes: N {QUICK_N}, batches {QUICK_BATCHES}, exhaustive N "
                         f"{QUICK_EXHAUSTIVE_N}, 3 repeats")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    ap.add_argument("--sweeps", default="n,batch", help="n, batch or both (comma-separated)")
    ap.add_argument("--n-users", type=int_list, default=None,
                    help=f"N sweep values (default {DEFAULT_N})")
    ap.add_argument("--exhaustive-n", type=int_list, default=None,
                    help=f"N sweep values of exhaustive (default {DEFAULT_EXHAUSTIVE_N})")
    ap.add_argument("--n-batch", default=None,
                    help=f"batch of the N sweep: default and per-method overrides (default "
                         f"{DEFAULT_N_BATCH!r}; quick {QUICK_N_BATCH!r})")
    ap.add_argument("--batches", type=int_list, default=None,
                    help=f"batch sweep values (default {DEFAULT_BATCHES})")
    ap.add_argument("--batch-n", type=int, default=30, help="N of the batch sweep")
    ap.add_argument("--repeats", type=int, default=None, help="warm calls per point (5; quick 3)")
    ap.add_argument("--measure-budget", type=float, default=5.0,
                    help="seconds of warm calls per point before stopping early")
    ap.add_argument("--time-limit", type=float, default=60.0,
                    help="seconds per point (child wall time, compile included)")
    ap.add_argument("--mem-limit-mb", type=float, default=None,
                    help="peak RSS per point [MiB] (default 80%% of MemAvailable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plain-malloc", action="store_true", help="leave glibc malloc alone")
    ap.add_argument("--json", default=None, help="also write all data here")
    ap.add_argument("--point", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = args.quick
    args.n_users = args.n_users or (QUICK_N if q else DEFAULT_N)
    args.exhaustive_n = args.exhaustive_n or (QUICK_EXHAUSTIVE_N if q else DEFAULT_EXHAUSTIVE_N)
    args.batches = args.batches or (QUICK_BATCHES if q else DEFAULT_BATCHES)
    args.repeats = args.repeats or (3 if q else 5)
    args.n_batch = args.n_batch or (QUICK_N_BATCH if q else DEFAULT_N_BATCH)
    if args.mem_limit_mb is None:
        args.mem_limit_mb = 0.8 * available_memory_mb()
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"unknown methods {bad}; choose from {METHODS}")
    return args


def main(argv=None) -> None:
    """Runs a point (``--point``) or the sweeps, prints the tables, writes ``--json``."""
    args = parse_args(argv)
    if args.point is not None:
        print(RESULT_PREFIX + json.dumps(run_point(json.loads(args.point))), flush=True)
        return
    t0 = time.perf_counter()
    methods = args.methods
    rows = [r for m in methods for r in ROWS.get(m, (m,))]
    common = {"repeats": args.repeats, "measure_budget": args.measure_budget,
              "seed": args.seed, "plain_malloc": args.plain_malloc}
    n_batch = batch_map(args.n_batch, methods)
    sweeps = {s.strip() for s in args.sweeps.split(",")}
    load0 = os.getloadavg()
    print(f"scaling benchmark: methods {','.join(methods)}; {os.cpu_count()} CPUs, load "
          f"{load0[0]:.2f}; jax {jax.__version__}; malloc "
          f"{'plain' if args.plain_malloc else 'tuned (mallopt)'}; time limit "
          f"{args.time_limit:g} s, memory limit {args.mem_limit_mb:.0f} MiB per point; "
          f"up to {args.repeats} warm calls ({args.measure_budget:g} s budget)", flush=True)

    def n_spec(m, n):
        """Spec of the N sweep point (method m, N = n); exhaustive has its own N values."""
        in_sweep = n in args.exhaustive_n if m == "exhaustive" else n in args.n_users
        return {**common, "method": m, "n_users": n, "batch": n_batch[m]} if in_sweep else None

    def b_spec(m, b):
        """Spec of the batch sweep point (method m, batch b); no exhaustive at N = batch_n."""
        if m == "exhaustive":
            return None
        return {**common, "method": m, "n_users": args.batch_n, "batch": b}

    n_records, b_records, cache = [], [], {}
    if "n" in sweeps:
        xs = sorted(set(args.n_users) | (set(args.exhaustive_n) if "exhaustive" in methods
                                          else set()))
        n_records = sweep("N", xs, methods, n_spec, args, cache, exponential_for=("exhaustive",))
    if "batch" in sweeps:
        b_records = sweep("batch", sorted(args.batches), methods, b_spec, args, cache)
    n_fits = fits_for(n_records, rows, exponential_for=("exhaustive",))
    b_fits = fits_for(b_records, [r for r in rows if r != "exhaustive"], per_call=True)
    total = time.perf_counter() - t0
    load1 = os.getloadavg()

    batches_txt = ", ".join(f"{m} {b}" for m, b in n_batch.items())
    if n_records:
        print_table(f"Sweep 1: over N (batch: {batches_txt})", n_records, ("exhaustive",))
        print_fits("Growth over N (time per scenario; exhaustive: base b of t ~ b^N)", n_fits)
    if b_records:
        print_table(f"Sweep 2: over the batch at N = {args.batch_n}", b_records)
        print_fits("Growth over the batch (time per call; 1 = linear, per-scenario exponent "
                   "= value - 1)", b_fits)
    print(f"\ntotal wall {total:.0f} s; load average {load0[0]:.2f} -> {load1[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(json_safe({
                "config": {k: v for k, v in vars(args).items() if k != "point"},
                "n_batch": n_batch, "cpus": os.cpu_count(), "load_start": load0,
                "load_end": load1, "jax": jax.__version__, "total_wall_s": total,
                "n_sweep": n_records, "batch_sweep": b_records,
                "fits": {"n": n_fits, "batch": b_fits}}), fh, indent=1, allow_nan=False)
    parts = []
    for name in rows:
        if name not in n_fits:
            continue
        key = "exhaustive_base" if name == "exhaustive" else name
        parts.append(f"{key}={n_fits[name]['value']:.3f}")
    print("scaling_exponents " + " ".join(parts))


if __name__ == "__main__":
    main()
