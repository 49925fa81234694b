"""The certified optimum at every sweep point, solved on the host, resumable in the store.

A solver does not run inside a compiled program, and at about 0.05 s a
scenario (``benchmarks/exact.py``) all held-out scenarios of every item would
cost hours; so for each sweep record (point, seed) :func:`solve_records`
solves :func:`dynmec_jax.baselines.exact.exact_optimum` (sum_i C_i of Eq.
24-25 over offloading, bandwidth and CPU; a bound: no inference delay) on the
first S = ``vb.optimum_scenarios`` held-out scenarios of Section V.B, the
same ones every method's per-scenario cost was kept for
(:attr:`~dynmec_jax.experiments.sections.ItemResult.subsample`).  The
scenarios are sampled again on the host exactly as the item samples them,
and checked against the item's own costs of Local execution (which depend on
the scenarios alone).  Each result is a record of figure ``optimum_<sweep>``
in the store (a rerun, also after a kill, solves only what is missing), with
the optimum's :class:`~dynmec_jax.evaluation.Metrics` means under ``vb/Optimum``
and its per-scenario costs under ``subsample/Optimum/cost``.

:func:`gap_rows` turns the records into every method's relative gap to the
optimum per (point, seed): ``sum_s C(method) / sum_s C(optimum) - 1`` over the
S scenarios; the figures average it over seeds with a 95% CI.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import functools
import multiprocessing
import os
import time
import warnings

import jax
import numpy as np
from tqdm.auto import tqdm

from dynmec_jax import evaluation, files, methods, system
from dynmec_jax.baselines import exact
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.experiments.sections import ItemResult
from dynmec_jax.store import ResultStore

#: The point key of the N sweep, whose value is N (it overrides no field).
N_POINT = "n_users_point"


@functools.partial(jax.jit, static_argnums=2)
def _sample(k_eval, sp, batch: int):
    return system.sample_scenarios(jax.random.fold_in(k_eval, 1), sp, batch)


def held_out(cfg: ReproduceConfig, point: dict, seed: int) -> tuple[system.Scenario,
                                                                   system.SystemParams]:
    """The first S Section V.B held-out scenarios of item (``point``, ``seed``) and its
    system, as :func:`~dynmec_jax.experiments.sections.make_item` draws them."""
    n = int(point.get(N_POINT, cfg.system.n_users))
    sp = cfg.system.replace(n_users=n, **{k: v for k, v in point.items() if k != N_POINT})
    k_eval = jax.random.fold_in(jax.random.PRNGKey(cfg.eval_seed), seed)
    scn = _sample(k_eval, sp, cfg.vb.eval_batch)
    return jax.tree.map(lambda a: np.asarray(a[:cfg.vb.optimum_scenarios]), scn), sp


def host_cores() -> int:
    """The CPU cores this process may run on (the default number of solver processes)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def _checked_scenarios(cfg: ReproduceConfig, record: dict):
    """``(scenarios, system)`` of a record, checked against the item's Local execution."""
    scn, sp = held_out(cfg, record["point"], record["seed"])
    local = np.asarray(evaluation.task_cost(scn, evaluation.local_execution(scn, sp), sp))
    item = ItemResult.from_flat(record["result"]).subsample
    if methods.LOCAL.name in item:
        np.testing.assert_allclose(local, item[methods.LOCAL.name]["cost"], rtol=1e-5,
                                   err_msg="the host's scenarios are not the item's")
    return scn, sp


def _result(scn: system.Scenario, sp: system.SystemParams, res: exact.ExactResult) -> dict:
    sc = evaluation.score(scn, res.offload, res.bandwidth, res.f_alloc, sys_params=sp)
    m = evaluation.metrics(sc, sp)
    out = {f"vb/{methods.OPTIMUM.name}/{k}": float(np.mean(v)) for k, v in m._asdict().items()}
    out[f"subsample/{methods.OPTIMUM.name}/cost"] = np.asarray(m.cost, np.float64).tolist()
    out["status_optimal"] = float(np.mean(res.status == "optimal"))
    out["max_gap"] = float(np.max(res.gap))
    out["solver_cost"] = np.asarray(res.cost, np.float64).tolist()
    return out


def solve_one(cfg: ReproduceConfig, record: dict) -> dict:
    """The optimum of one sweep record's scenarios: ``{"vb/Optimum/<metric>": mean,
    "subsample/Optimum/cost": [S], "status_optimal": share, "max_gap": certificate}``."""
    scn, sp = _checked_scenarios(cfg, record)
    return _result(scn, sp, exact.exact_optimum(scn, sp))


def _in_workers(keys: list, workers: int, prepare, finish):
    """Solves ``keys`` in a pool of spawned processes (not forked: this process runs JAX's
    threads, which a forked child must not inherit): ``prepare(key) -> (scenarios,
    system, host seconds)`` here, the solve in a worker, ``finish`` here as each ends."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(keys)), mp_context=ctx) as pool:
        try:
            futures = {}
            for key in keys:
                scn, sp, t_host = prepare(key)
                futures[pool.submit(exact.exact_optimum, scn, sp)] = (key, scn, sp, t_host)
            for fut in concurrent.futures.as_completed(futures):
                key, scn, sp, t_host = futures[fut]
                finish(key, scn, sp, fut.result(), t_host)
        finally:   # an error or an interrupt: solve nothing more
            pool.shutdown(wait=True, cancel_futures=True)


def solve_records(cfg: ReproduceConfig, store: ResultStore, sweeps: dict,
                  progress: bool = True, workers: int = 1) -> dict:
    """The optimum records of every sweep record, ``{figure: {(point_key, seed): record}}``
    (stored ones reused, missing ones solved and stored as they finish).

    With ``workers`` > 1 the solves run in that many spawned processes (SCIP
    is single-threaded, and the solves of different records are independent;
    the launchers pass :func:`host_cores`): the scenarios are drawn and
    checked here, each record's :func:`~dynmec_jax.baselines.exact.exact_optimum`
    runs in a worker, and its result is scored and stored here as soon as it
    arrives.  As with any spawned pool, the calling script's main module must
    be safe to import (``if __name__ == "__main__":``); where the workers
    cannot start, a warning and the rest is solved in this process.  The
    results do not depend on ``workers``.  ``wall_time_s`` of a record is its
    solver seconds plus this process's drawing, checking and scoring of it.
    """
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    conf = {"eval_seed": cfg.eval_seed, "vb": files.to_jsonable(cfg.vb),
            "system": files.to_jsonable(cfg.system)}
    conf_json = files.to_jsonable(conf)   # what a stored record's config must equal
    records: dict = {}      # key -> sweep record, in order
    for name, recs in sweeps.items():
        if name == "optima":
            continue
        for r in recs:
            records.setdefault((f"optimum_{r['figure']}", r["point_key"], r["seed"]), r)
    done: dict = {}
    missing = []
    for key, r in records.items():
        rec = store.try_read(key[0], r["point"], r["seed"])
        if rec is None or rec.get("config") != conf_json:
            missing.append(key)
        else:
            done[key] = rec
    bar = tqdm(total=len(records), initial=len(done), desc="certified optimum", unit="item",
               disable=not progress)

    def finish(key, scn, sp, res, t_host):
        t0 = time.perf_counter()
        result = _result(scn, sp, res)
        r = records[key]
        done[key] = store.write(key[0], r["point"], r["seed"], result, config=conf,
                                wall_time_s=float(np.sum(res.seconds)) + t_host
                                + time.perf_counter() - t0)
        bar.update(1)

    def prepare(key):
        t0 = time.perf_counter()
        scn, sp = _checked_scenarios(cfg, records[key])
        return scn, sp, time.perf_counter() - t0

    def in_process(keys):
        for key in keys:
            scn, sp, t_host = prepare(key)
            finish(key, scn, sp, exact.exact_optimum(scn, sp), t_host)

    try:
        if workers == 1 or len(missing) <= 1:
            in_process(missing)
        else:
            try:
                _in_workers(missing, workers, prepare, finish)
            except (concurrent.futures.process.BrokenProcessPool, OSError) as e:
                # e.g. a script that runs this at import time, without an
                # ``if __name__ == "__main__":`` guard, or no right to start processes
                warnings.warn(f"the optimum's worker processes failed ({e}); solving the "
                              "rest in this process", stacklevel=2)
                in_process([k for k in missing if k not in done])
    finally:
        bar.close()
    out: dict = {}
    for key, r in records.items():
        out.setdefault(r["figure"], {})[(r["point_key"], r["seed"])] = done[key]
    return out


def merged(record: dict, optima: dict) -> dict:
    """A sweep record's result with its optimum's numbers added (``vb/Optimum/...``,
    ``subsample/Optimum/cost``), when the optimum was solved."""
    opt = optima.get(record["figure"], {}).get((record["point_key"], record["seed"]))
    if opt is None:
        return record["result"]
    res = dict(record["result"])
    res.update({k: v for k, v in opt["result"].items() if k.startswith(("vb/", "subsample/"))})
    return res


def gaps(result: dict) -> dict:
    """``{method: sum C(method) / sum C(optimum) - 1}`` over the S scenarios of a merged
    result (:func:`merged`); empty without the optimum."""
    sub = ItemResult.from_flat(result).subsample
    opt = sub.get(methods.OPTIMUM.name)
    if opt is None:
        return {}
    total = float(np.sum(opt["cost"]))
    return {name: float(np.sum(v["cost"])) / total - 1.0 for name, v in sub.items()
            if name != methods.OPTIMUM.name}
