"""Trace and compile seconds of every program of a reproduction preset, cold cache.

For each checkout given (``--repo``, default this one) and each program
family of the preset, a fresh Python process (``PYTHONPATH`` = the
checkout, no persistent compilation cache) builds the programs the
reproduction compiles, at the preset's shapes, with random allocator
weights (compile time does not depend on the values), and times
``jit(...).lower(...)`` (trace + lowering to StableHLO) and
``.compile()`` (XLA) of each, without running them.  The checkouts are
measured round-robin, family by family, so that the load of a shared
machine hits them alike.

Families: ``allocator_moe`` and ``allocator_static`` (the training chunk
``jit(vmap(train_chunk))`` of :func:`dynmec_jax.train.allocator.train_and_evaluate`),
``sweep_main`` (the shared-shape sweep of Figs. 5-11 at ``chunk_size``
items) and ``sweep_n<N>`` (one per number of users other than the
default).  A checkout with :func:`dynmec_jax.experiments.sections.make_stages`
compiles one program per stage (method family), an older one the
monolithic item; both are what its launcher compiles.

    python benchmarks/compile_time.py [--preset quick] [--repo /path/a --repo /path/b] \\
        [--families sweep_main,sweep_n10] [--out compile_time.json]

The last line is ``compile_ratio <total of the last repo / total of the first>``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve()


class _Preset:
    """The preset as the checkout under test reads it (today's typed config, or the
    ConfigDict API of older checkouts)."""

    def __init__(self, preset: str):
        from dynmec_jax.configs import reproduce as rc
        from dynmec_jax.experiments import reproduce, sections
        self.sections = sections
        cd = rc.get_config(preset)
        try:
            from dynmec_jax import typedconfig
            from dynmec_jax.experiments.config import ReproduceConfig
        except ImportError:   # the ConfigDict API
            from dynmec_jax.train import config as tc
            self.cfg = cd
            self.alloc = {"moe": tc.allocator_config(cd.allocator),
                          "static": tc.allocator_config(reproduce.static_config(cd))}
            self.systems = {k: sections.base_params(cd) for k in self.alloc}
            self.models = {k: c.model() for k, c in self.alloc.items()}
            self.chunk_steps = {k: c.chunk_steps for k, c in self.alloc.items()}
            self.n_default = sections.base_params(cd).n_users
        else:
            cfg = typedconfig.from_configdict(ReproduceConfig, cd)
            self.cfg = cfg
            self.alloc = {"moe": cfg.allocator, "static": cfg.static_allocator()}
            self.systems = {k: c.system for k, c in self.alloc.items()}
            self.models = {k: c.model.build() for k, c in self.alloc.items()}
            self.chunk_steps = {k: c.train.chunk_steps for k, c in self.alloc.items()}
            self.n_default = cfg.system.n_users
        self.n_seeds = int(cd.allocator.n_seeds)
        self.chunk_size = int(cd.chunk_size)
        self.n_users = [int(n) for n in cd.sweeps.n_users]

    def families(self) -> list[str]:
        """The program families, in the order the reproduction compiles them."""
        return (["allocator_moe", "allocator_static", "sweep_main"]
                + [f"sweep_n{n}" for n in self.n_users if n != self.n_default])

    def stack(self, kind: str):
        """Randomly initialised allocators of ``kind``, stacked (as the sweeps take them)."""
        import jax

        from dynmec_jax import allocator as allocator_lib
        from dynmec_jax.experiments import reproduce
        from dynmec_jax.nets.features import FeatureScales
        model, sp = self.models[kind], self.systems[kind]
        return reproduce.stack_allocators([
            allocator_lib.Allocator(allocator_lib.init_params(jax.random.key(i), model),
                                    FeatureScales.from_params(sp), sp, model)
            for i in range(self.n_seeds)])


def _allocator_programs(p: _Preset, kind: str):
    import jax
    import jax.numpy as jnp

    from dynmec_jax.train import allocator as ta
    s = ta.setup(p.alloc[kind], p.systems[kind])
    table = p.alloc[kind].schedule()
    # Capacity dispatch (the training default since issue 22) needs strata with widths; a
    # checkout from before it has neither the field nor the argument.
    cf = getattr(getattr(p.alloc[kind], "train", None), "capacity_factor", None)
    strata = ta.table_strata(table, widths=True) if cf else ta.table_strata(table)
    init = jax.vmap(lambda k: ta.init_state(jax.random.fold_in(k, 10**6), s.model, s.tx))
    keys = jax.random.split(jax.random.key(0), p.n_seeds)
    state = jax.eval_shape(init, keys)
    run = jax.jit(jax.vmap(lambda st, k, allowed: ta.train_chunk(
        s.step_fn, st, k, s.sys_params, s.scales, allowed, strata), in_axes=(0, 0, None)))
    chunk = jax.ShapeDtypeStruct((min(p.chunk_steps[kind], len(table)),) + table.shape[1:],
                                 jnp.bool_)
    return [("train_chunk", lambda: run.lower(state, keys, chunk))]


def _sweep_programs(p: _Preset, n_users: int):
    import jax
    import jax.numpy as jnp
    sections = p.sections
    moe, static = p.stack("moe"), p.stack("static")
    B = p.chunk_size
    names = sections.default_point(p.cfg) if n_users == p.n_default else {}
    pts = {k: jax.ShapeDtypeStruct((B,), jnp.float32) for k in names}
    seeds = jax.ShapeDtypeStruct((B,), jnp.int32)
    if not hasattr(sections, "make_stages"):   # the monolithic item of older checkouts
        prog = jax.jit(jax.vmap(sections.make_item(p.cfg, n_users, moe, static, p.n_seeds)))
        return [("item", lambda: prog.lower(pts, seeds))]
    stages = sections.make_stages(p.cfg, n_users, moe, static, p.n_seeds)
    if "stacks" in inspect.signature(sections.staged_compute).parameters:
        compute = sections.staged_compute(   # as reproduce runs it
            stages, stacks=(moe, static),
            **({"map_stages": sections.map_on_one_device()}
               if hasattr(sections, "map_on_one_device") else {}))
    else:   # checkouts that compiled the allocators in as constants
        compute = sections.staged_compute(stages)
    args = getattr(compute, "args", lambda *a: a)
    out, deps = [], {}
    for name, prog in compute.programs.items():
        def lower(prog=prog, name=name, deps=deps):
            low = prog.lower(*args(pts, seeds, dict(deps)))
            deps[name] = low.out_info
            return low
        out.append((name, lower))
    return out


def child(preset: str, family: str) -> dict:
    """Times the programs of one family in this process; returns ``{program: {...}}``."""
    p = _Preset(preset)
    if family.startswith("allocator_"):
        progs = _allocator_programs(p, family.removeprefix("allocator_"))
    elif family == "sweep_main":
        progs = _sweep_programs(p, p.n_default)
    else:
        progs = _sweep_programs(p, int(family.removeprefix("sweep_n")))
    out = {}
    for name, lower in progs:
        t0 = time.perf_counter()
        low = lower()
        t1 = time.perf_counter()
        low.compile()
        t2 = time.perf_counter()
        out[name] = {"lower_s": t1 - t0, "compile_s": t2 - t1}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--repo", action="append", default=None,
                    help="a checkout to measure (repeat; default: this one)")
    ap.add_argument("--families", default=None, help="comma-separated (default: all)")
    ap.add_argument("--out", default=None, help="write the measurements here (JSON)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.preset, args.child)))
        return
    repos = [pathlib.Path(r).resolve() for r in (args.repo or [HERE.parents[1]])]
    if args.families:
        fams = args.families.split(",")
    else:
        sys.path.insert(0, str(repos[-1]))
        fams = _Preset(args.preset).families()
    res = {str(r): {} for r in repos}
    for fam in fams:
        for r in repos:
            env = dict(os.environ, PYTHONPATH=str(r),
                       JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
            env.pop("XLA_FLAGS", None)
            env.pop("JAX_COMPILATION_CACHE_DIR", None)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, str(HERE), "--preset", args.preset,
                                   "--child", fam], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"error: {fam} in {r} failed:\n{proc.stderr[-3000:]}")
            progs = json.loads(line[0][7:])
            total = sum(p["lower_s"] + p["compile_s"] for p in progs.values())
            res[str(r)][fam] = {"programs": progs, "total_s": total, "process_wall_s": wall}
            print(f"{fam:18s} {r.name:10s} {len(progs):2d} programs  "
                  f"trace {sum(p['lower_s'] for p in progs.values()):6.1f} s  "
                  f"compile {sum(p['compile_s'] for p in progs.values()):6.1f} s", flush=True)
    totals = {r: sum(f["total_s"] for f in v.values()) for r, v in res.items()}
    for r, t in totals.items():
        print(f"total {pathlib.Path(r).name}: {t:.1f} s (trace + compile, {len(fams)} families)")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"preset": args.preset, "results": res,
                                                      "totals_s": totals}, indent=1))
    first, last = totals[str(repos[0])], totals[str(repos[-1])]
    print(f"compile_ratio {last / first:.3f}")


if __name__ == "__main__":
    main()
