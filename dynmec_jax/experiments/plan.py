"""What a reproduction costs, before it runs: programs, compile time, memory, FLOPs, time.

:func:`make_plan` lowers and compiles every program of a
:class:`~dynmec_jax.experiments.config.ReproduceConfig` (``dynmec-reproduce
--plan``, ``dynmec-sweep --plan``) without doing the work, with random
allocator weights (shapes and programs do not depend on the values):

* **allocators**: the training chunk ``jit(vmap(train_chunk))`` of the MoE
  and of the static model (:func:`dynmec_jax.train.allocator.train_and_evaluate`);
* **fig12**: the training chunk of Fig. 12, one program per depth stratum;
* **sweeps**: each stage program of the sweep items
  (:func:`dynmec_jax.experiments.sections.make_stages`) of the shared-shape
  sweep and of each N.  Only the shared-shape sweep's stages are timed; the
  N sweeps' time is predicted from their FLOPs at the seconds per FLOP
  measured for the same stage of the shared-shape sweep.

Per program: compile seconds; XLA's memory analysis (argument, output and
temporary bytes of one device holding the whole chunk); operations
(:func:`dynmec_jax.opcount.program_ops` of the program at the preset's step
counts, loops counted by their trip counts; a ``while`` loop with a traced
trip count, as DROO's bounded candidate scoring has, once: those programs'
FLOPs, marked ">=", are lower bounds); one timed execution at a
reduced step count (a training chunk of a few steps, Algorithm 1 with
``step_fraction`` of its pre-training steps and episodes; the evaluation
stage runs whole), extrapolated linearly in the steps to the preset's
budget; and the number of calls the run makes.  Fig. 12 stops when every
sub-network reaches the target, which no plan can know: its time is the
upper bound where every stage runs to ``fig12.max_steps``.  The certified
optimum of the sweeps (on the host, :mod:`~dynmec_jax.experiments.optimum`):
a few of its scenarios solved and timed at every N (:func:`plan_optimum`):
its rows (``"host": True``) are solves, not compiled programs, and count as
``host_solves`` (records), not ``programs``, in their stage and the total.

With ``assume_tflops`` (sustained TFLOP/s of an accelerator) and
``assume_hbm_gb`` (its memory), each stage also gets an accelerator
estimate: FLOPs / throughput, and whether every program fits.  Units:
seconds, bytes, FLOPs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import files, opcount
from dynmec_jax.experiments import reproduce, sections
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.nets.features import FeatureScales
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import config as train_config

#: Memory sizes (GB) every plan reports a fit for: a 16 GB GPU, an 80 GB A100/H100, a 141 GB H200.
DEVICE_GB = (16, 80, 141)
#: Steps of the timed execution of a training chunk.
TIMED_CHUNK_STEPS = 5


def _random_stack(acfg, n: int):
    model, sp = acfg.model.build(), acfg.system
    return reproduce.stack_allocators([
        allocator_lib.Allocator(allocator_lib.init_params(jax.random.key(i), model),
                                FeatureScales.from_params(sp), sp, model) for i in range(n)])


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "temp", "alias")}
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def _no_memory() -> dict:
    """:func:`_memory`'s record of a row with no compiled program (all 0 bytes)."""
    return dict.fromkeys(("argument", "output", "temp", "alias", "total"), 0)


def _timed(fn: Callable, *args) -> float:
    return _timed_out(fn, *args)[0]


def _timed_out(fn: Callable, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def _ops(fn, args) -> dict:
    """``flops_per_call`` of ``fn(*args)`` and its ``while_loops`` (each counted once, its
    trip count being traced: the FLOPs are then a lower bound; :mod:`dynmec_jax.opcount`)."""
    count = opcount.program_ops(jax.make_jaxpr(fn)(*args))
    return {"flops_per_call": count.flops, "while_loops": int(count.while_loops)}


def _program(stage: str, name: str, calls: int, lowered, fn, args) -> tuple[dict, object]:
    """Compiles ``lowered``; returns its record (without the timing) and the executable."""
    t0 = time.perf_counter()
    compiled = lowered.compile()
    rec = {"stage": stage, "program": name, "calls": int(calls),
           "compile_s": time.perf_counter() - t0, "memory": _memory(compiled),
           **_ops(fn, args)}
    return rec, compiled


def plan_allocators(cfg: ReproduceConfig, log=print) -> list[dict]:
    """The training chunks of the MoE and static allocators (module doc)."""
    out = []
    for kind, acfg in (("moe", cfg.allocator), ("static", cfg.static_allocator())):
        s = train_allocator.setup(acfg)
        table = acfg.schedule()
        strata = train_allocator.table_strata(table, widths=bool(acfg.train.capacity_factor))
        keys = files.seed_keys(acfg.seed, acfg.n_seeds)
        state = jax.jit(jax.vmap(lambda k, s=s: train_allocator.init_state(
            jax.random.fold_in(k, 10**6), s.model, s.tx)))(keys)
        run = jax.jit(jax.vmap(
            lambda st, k, allowed, s=s, strata=strata: train_allocator.train_chunk(
                s.step_fn, st, k, s.sys_params, s.scales, allowed, strata),
            in_axes=(0, 0, None)))
        steps = min(acfg.train.chunk_steps, len(table))
        full = jnp.asarray(table[:steps])
        rec, _ = _program("allocators", f"train_chunk_{kind}", math.ceil(len(table) / steps),
                          run.lower(state, keys, full), run, (state, keys, full))
        # Time a few steps of the last phase (every sub-network allowed: the costliest).
        short = jnp.asarray(table[-min(TIMED_CHUNK_STEPS, steps):])
        timed = run.lower(state, keys, short).compile()
        _timed(timed, state, keys, short)                       # first call: warm-up
        per_step = _timed(timed, state, keys, short) / short.shape[0]
        rec.update(measured_s=per_step * short.shape[0], measured_steps=int(short.shape[0]),
                   wall_s=per_step * len(table), flops=rec["flops_per_call"] * rec["calls"])
        log(f"allocators {kind}: {rec['compile_s']:.1f} s compile, {per_step * 1e3:.1f} ms/step")
        out.append(rec)
    return out


def plan_fig12(cfg: ReproduceConfig, log=print) -> list[dict]:
    """Fig. 12's chunk programs (one per depth stratum) and the upper bound of its time."""
    f = cfg.fig12
    acfg = cfg.fig12_allocator()
    s = train_allocator.setup(acfg)
    K, L = acfg.model.max_width, acfg.model.n_layers
    widths = bool(acfg.train.capacity_factor)
    stages = []   # the stratum of every stage of every run, for the bound
    example = {}  # stratum -> an allowed table of it
    for case in f.cases:
        tables = [allowed for _, allowed in train_config.progressive_phases(case, K, L)]
        for k, d in zip(*np.nonzero(train_config.subnet_set(case, K, L)), strict=True):
            one = np.zeros((K, L), bool)
            one[k, d] = True
            tables.append(one)
        for allowed in tables:
            stratum = train_allocator.table_strata(np.asarray(allowed)[None], widths)[0]
            stages.append(stratum)
            example.setdefault(stratum, np.asarray(allowed, bool))
    state = train_allocator.init_state(jax.random.key(0), s.model, s.tx)
    key = jax.random.key(1)
    chunk = jax.jit(lambda st, k, allowed, strata: train_allocator.train_chunk(
        s.step_fn, st, k, s.sys_params, s.scales, allowed, strata), static_argnums=3)
    out = []
    for stratum, allowed in example.items():
        table = jnp.asarray(np.broadcast_to(allowed, (f.eval_every, K, L)))
        n_stages = stages.count(stratum) * len(f.seeds)
        calls = n_stages * math.ceil(f.max_steps / f.eval_every)
        args = (state, key, table, (stratum,))
        rec, compiled = _program("fig12", f"chunk_depths{''.join(map(str, stratum[:L]))}"
                                 + (f"_widths{'-'.join(f'{w:g}' for w in stratum[L:])}"
                                    if widths else ""), calls,
                                 chunk.lower(*args),
                                 lambda a, b, c, st=stratum: chunk(a, b, c, (st,)), args[:3])
        _timed(compiled, state, key, table)
        t = _timed(compiled, state, key, table)
        rec.update(measured_s=t, measured_steps=f.eval_every, wall_s=t * calls,
                   flops=rec["flops_per_call"] * calls, upper_bound=True)
        log(f"fig12 {rec['program']}: {rec['compile_s']:.1f} s compile, {t:.2f} s/chunk")
        out.append(rec)
    return out


def _reduced(cfg: ReproduceConfig, fraction: float) -> tuple[ReproduceConfig, dict]:
    """``cfg`` with ``fraction`` of Algorithm 1's steps, and each stage's time multiplier."""
    t = cfg.train
    pre = max(1, round(t.pretrain_steps * fraction)) if t.pretrain_steps else 0
    eps = max(1, round(t.episodes * fraction))
    small = dataclasses.replace(cfg, train=dataclasses.replace(t, pretrain_steps=pre,
                                                               episodes=eps))
    ep = t.episodes / eps
    scale = {"pretrain": t.pretrain_steps / pre if pre else 1.0, "pmrl": ep, "droo": ep,
             "evaluate": 1.0}
    return small, scale


def _sweeps(cfg: ReproduceConfig, n_users: tuple[int, ...] | None = None) -> list[tuple]:
    """``[(figure, N, items, has_point)]`` of the run's sweeps: the shared-shape sweep
    (every point and seed, at the default N) and one per other N (``n_users``, default
    the config's; every seed)."""
    main = ("sweep_main", cfg.system.n_users,
            len(reproduce.sweep_points(cfg)) * len(cfg.seeds), True)
    return [main] + [(f"sweep_n{n}", n, len(cfg.seeds), False)
                     for n in (cfg.sweeps.n_users if n_users is None else n_users)
                     if n != cfg.system.n_users]


def plan_sweeps(cfg: ReproduceConfig, step_fraction: float = 0.02, log=print,
                n_users: tuple[int, ...] | None = None, full_programs: bool = True) -> list[dict]:
    """Every stage program of every sweep (module doc).

    ``n_users``: the N sweeps to plan (default the config's); ``full_programs``
    False skips compiling the training stages at the preset's step counts
    (no memory analysis for them; only the timed, reduced programs compile:
    a quick timing, ``benchmarks/gpu_check.py``).
    """
    n_alloc = cfg.allocator.n_seeds
    moe, static = _random_stack(cfg.allocator, n_alloc), _random_stack(cfg.static_allocator(),
                                                                      n_alloc)
    small_cfg, scale = _reduced(cfg, step_fraction)
    out = []
    per_flop: dict = {}   # stage -> measured seconds per FLOP in the main sweep
    for figure, n, items, has_point in _sweeps(cfg, n_users):
        B = min(cfg.chunk_size, items)
        calls = math.ceil(items / B)
        pts = ({k: jnp.full((B,), v, jnp.float32) for k, v in sections.default_point(cfg).items()}
               if has_point else {})
        seeds = jnp.arange(B, dtype=jnp.int32)
        # The allocators are arguments (as in reproduce.run_sweeps): the programs are the
        # run's, and the compilation cache serves them to it.
        opts = {"stacks": (moe, static), "map_stages": sections.map_on_one_device()}
        full = sections.staged_compute(sections.make_stages(cfg, n, moe, static, n_alloc), **opts)
        small = (sections.staged_compute(sections.make_stages(small_cfg, n, moe, static, n_alloc),
                                         **opts)
                 if has_point else None)
        deps_abs, deps = {}, {}
        for name, prog in full.programs.items():
            args = full.args(pts, seeds, dict(deps_abs))
            lowered = prog.lower(*args)
            deps_abs[name] = lowered.out_info
            if full_programs or name == "evaluate" or small is None:
                rec, compiled = _program(f"sweeps ({figure})", f"{figure}/{name}", calls,
                                         lowered, prog, args)
            else:
                rec = {"stage": f"sweeps ({figure})", "program": f"{figure}/{name}",
                       "calls": calls, "compile_s": 0.0, **_ops(prog, args),
                       "memory": _no_memory()}
            if small is None:
                # The N sweeps: the main sweep's seconds per FLOP of the same stage.
                t = rec["flops_per_call"] * per_flop.get(name, 0.0) / scale[name]
            elif name == "evaluate":   # the evaluation stage runs whole
                t = _timed(compiled, *full.args(pts, seeds, dict(deps)))
            else:
                fast = small.programs[name].lower(*small.args(pts, seeds, dict(deps))).compile()
                t, deps[name] = _timed_out(fast, *small.args(pts, seeds, dict(deps)))
            if small is not None and rec["flops_per_call"]:
                per_flop[name] = t * scale[name] / rec["flops_per_call"]
            rec.update(measured_s=t, step_scale=scale[name], wall_s=t * scale[name] * calls,
                       flops=rec["flops_per_call"] * calls, items_per_call=B,
                       timed=small is not None)
            log(f"{figure}/{name}: {rec['compile_s']:.1f} s compile, "
                f"{rec['memory']['total'] / 1e9:.2f} GB, {t:.2f} s timed x {scale[name]:.0f}")
            out.append(rec)
    return out


def plan_optimum(cfg: ReproduceConfig, workers: int = 1, scenarios: int = 4,
                 log=print) -> list[dict]:
    """The certified optimum of the sweeps, solved on the host (SCIP; module doc).

    At every N of the sweeps, the first ``scenarios`` held-out scenarios of
    seed 0 at the default point (:func:`dynmec_jax.experiments.optimum.held_out`:
    the ones the run solves first) are solved and timed; the run solves
    ``vb.optimum_scenarios`` of every record at that N, in ``workers``
    processes.  Predicted wall: seconds per scenario x scenarios / workers,
    the solver's time only (not the host's sampling and scoring, their
    compiles, the workers' start; a solver's time also varies from scenario
    to scenario): an estimate, about half of the quick preset's measured
    stage (docs/performance.md).  No FLOPs, no device memory.  Without
    pyscipopt (the ``exact`` extra) the stage is left out, with a log line.
    """
    from dynmec_jax.baselines import exact
    from dynmec_jax.experiments import optimum
    try:
        exact.require_scip()
    except ImportError as e:
        log(f"certified optimum not planned: {e}")
        return []
    if workers < 1 or scenarios < 1:
        raise ValueError(f"workers and scenarios must be >= 1, got {workers}, {scenarios}")
    out = []
    for _, n, records, has_point in _sweeps(cfg):
        point = sections.default_point(cfg) if has_point else {optimum.N_POINT: float(n)}
        scn, sp = optimum.held_out(cfg, point, 0)
        k = min(scenarios, cfg.vb.optimum_scenarios)
        t0 = time.perf_counter()
        exact.exact_optimum(jax.tree.map(lambda a, k=k: a[:k], scn), sp)
        t = time.perf_counter() - t0
        total = records * cfg.vb.optimum_scenarios
        out.append({"stage": "certified optimum (host)", "program": f"optimum_n{n}",
                    "calls": records, "compile_s": 0.0,
                    "memory": _no_memory(),
                    "flops_per_call": 0.0, "while_loops": 0, "flops": 0.0,
                    "measured_s": t, "measured_scenarios": k, "workers": workers,
                    "wall_s": t / k * total / workers, "timed": True, "host": True})
        log(f"optimum N={n}: {k} scenarios in {t:.2f} s; {total} in the run, "
            f"{workers} process(es)")
    return out


def make_plan(cfg: ReproduceConfig, *, stages=("allocators", "fig12", "sweeps"),
              step_fraction: float = 0.02, assume_tflops: float | None = None,
              assume_hbm_gb: float | None = None, optimum_workers: int = 1,
              log=print) -> dict:
    """The plan of ``cfg``: ``{"programs": [...], "stages": {...}, "total": {...}}``.

    ``stages``: which stages to plan, of "allocators", "fig12", "sweeps" and
    "optimum" (:func:`plan_optimum`, with ``optimum_workers`` processes);
    ``step_fraction``: the fraction of Algorithm 1's steps of the timed
    sweep executions.  See the module doc.
    """
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must be in (0, 1], got {step_fraction}")
    for name, v in (("assume_tflops", assume_tflops), ("assume_hbm_gb", assume_hbm_gb)):
        if v is not None and not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")
    t0 = time.perf_counter()
    progs = []
    if "allocators" in stages:
        progs += plan_allocators(cfg, log)
    if "fig12" in stages:
        progs += plan_fig12(cfg, log)
    if "sweeps" in stages:
        progs += plan_sweeps(cfg, step_fraction, log)
    if "optimum" in stages:
        progs += plan_optimum(cfg, optimum_workers, log=log)
    by_stage: dict = {}
    for p in progs:
        st = by_stage.setdefault(p["stage"], {"programs": 0, "host_solves": 0,
                                              "compile_s": 0.0, "wall_s": 0.0,
                                              "flops": 0.0, "peak_bytes": 0,
                                              "upper_bound": False,
                                              "flops_lower_bound": False})
        if p.get("host"):   # solves on the host (the certified optimum): no compiled program
            st["host_solves"] += p["calls"]
        else:
            st["programs"] += 1
        st["compile_s"] += p["compile_s"]
        st["wall_s"] += p["wall_s"]
        st["flops"] += p["flops"]
        st["peak_bytes"] = max(st["peak_bytes"], p["memory"]["total"])
        st["upper_bound"] |= bool(p.get("upper_bound"))
        st["flops_lower_bound"] |= p.get("while_loops", 0) > 0
    for st in by_stage.values():
        st["fits_gb"] = {str(g): st["peak_bytes"] <= g * 1e9 for g in DEVICE_GB}
        if assume_tflops:
            st["accelerator_s"] = st["flops"] / (assume_tflops * 1e12)
        if assume_hbm_gb:
            st["fits_assumed"] = st["peak_bytes"] <= assume_hbm_gb * 1e9
    total = {k: sum(st[k] for st in by_stage.values())
             for k in ("programs", "host_solves", "compile_s", "wall_s", "flops")}
    total["peak_bytes"] = max((st["peak_bytes"] for st in by_stage.values()), default=0)
    total["flops_lower_bound"] = any(st["flops_lower_bound"] for st in by_stage.values())
    total["cpu_hours"] = (total["wall_s"] + total["compile_s"]) / 3600
    if assume_tflops:
        total["accelerator_s"] = total["flops"] / (assume_tflops * 1e12)
    return {"preset": cfg.preset, "step_fraction": step_fraction,
            "assume_tflops": assume_tflops, "assume_hbm_gb": assume_hbm_gb,
            "devices": [str(d) for d in jax.devices()], "plan_wall_s": time.perf_counter() - t0,
            "versions": files.versions(), "programs": progs, "stages": by_stage, "total": total}


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _optimum_note(plan: dict) -> str:
    opt = [p for p in plan["programs"] if p.get("host")]
    if not opt:
        return "the host's certified optimum not included"
    return (f"the host's certified optimum in {opt[0]['workers']} process(es), timed on "
            f"{opt[0]['measured_scenarios']} scenarios per N")


#: The prefix of a FLOP count (and its accelerator time) that is a lower bound.
_AT_LEAST = ">= "


def markdown(plan: dict) -> str:
    """The plan as Markdown: one row per stage, then one per program."""
    acc = plan["assume_tflops"] is not None
    head = ["stage", "programs", "compile", "peak memory / program", "fits 16/80/141 GB",
            "FLOPs", "predicted wall (this machine)"] + (
        [f"at {plan['assume_tflops']:g} TFLOP/s"] if acc else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, st in list(plan["stages"].items()) + [("**total**", plan["total"])]:
        fits = st.get("fits_gb") or {str(g): plan["total"]["peak_bytes"] <= g * 1e9
                                     for g in DEVICE_GB}
        wall = _h(st["wall_s"]) + (" (upper bound)" if st.get("upper_bound") else "")
        low = _AT_LEAST if st.get("flops_lower_bound") else ""
        progs = "(host)" if st.get("host_solves") and not st["programs"] else str(st["programs"])
        row = [name, progs, f"{st['compile_s']:.0f} s",
               f"{st['peak_bytes'] / 1e9:.2f} GB",
               "/".join("yes" if fits[str(g)] else "no" for g in DEVICE_GB),
               f"{low}{st['flops']:.3g}", wall] + ([low + _h(st["accelerator_s"])] if acc else [])
        rows.append("| " + " | ".join(row) + " |")
    prog = ["", "| program | calls | compile | argument / output / temp | FLOPs per call | "
            "timed | predicted wall |", "|---|---|---|---|---|---|---|"]
    for p in plan["programs"]:
        m = p["memory"]
        prog.append(f"| {p['program']} | {p['calls']} | {p['compile_s']:.1f} s | "
                    f"{m['argument'] / 1e6:.1f} / {m['output'] / 1e6:.1f} / "
                    f"{m['temp'] / 1e6:.1f} MB | "
                    f"{_AT_LEAST if p.get('while_loops') else ''}{p['flops_per_call']:.3g} | "
                    f"{p['measured_s']:.2f} s | {_h(p['wall_s'])} |")
    t = plan["total"]
    foot = (f"\nPreset `{plan['preset']}`; devices {', '.join(plan['devices'])}; the plan took "
            f"{plan['plan_wall_s']:.0f} s.  Predicted: {t['cpu_hours']:.1f} h of this machine "
            "(compile included; " + _optimum_note(plan) + ").")
    if t.get("flops_lower_bound"):
        foot += (f"  {_AT_LEAST.strip()} marks a lower bound: the program has `while` loops "
                 "whose trip count is traced (DROO's bounded candidate scoring), each "
                 "counted once.")
    return "\n".join(rows + prog) + "\n" + foot + "\n"


def write(plan: dict, out_dir) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``plan.json`` and ``plan.md`` under ``out_dir``; returns both paths."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files.atomic_write(out / "plan.json", json.dumps(plan, indent=1) + "\n")
    files.atomic_write(out / "plan.md", markdown(plan))
    return out / "plan.json", out / "plan.md"
