r"""Checks that a code change leaves the numbers alone: stored results and shipped models.

    # 1. the shipped models' outputs on fixed scenarios, at each commit:
    python tools/compare_results.py dump-models OUT.json
    # 2. compare two such dumps, or two result trees (a workdir's store, results/):
    python tools/compare_results.py compare A B

``compare`` walks both trees, loads every ``*.json`` and compares them exactly,
ignoring timing and environment fields (wall times, steps per second, peak
memory, versions, machine) and the paths given by ``--ignore-key`` (dotted,
e.g. ``config.allocator.train.micro_batch`` for a config field added by the
change).  Figures (PNG) are compared byte for byte unless ``--skip-png``.
Exit 0 if equal, 1 with one line per difference.  Used for the restructuring
of issue 10 (docs/reproduction.md, "Layout").
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

# The public entry points of the README; the layout before the restructuring had them in
# dynmec_jax.allocation / dynmec_jax.policy, so the dump also runs at older commits.
try:
    from dynmec_jax.allocator import load_allocator
    from dynmec_jax.pipeline import load_pipeline
except ImportError:  # the layout before issue 10
    from dynmec_jax.allocation import load_allocator
    from dynmec_jax.policy import load_pipeline
from dynmec_jax import system

TIMING_KEYS = {"wall_time_s", "train_wall_time_s", "steps_per_s", "versions", "peak_rss_mb",
               "machine", "chunk_wall_time_s", "timestamp_utc", "stage_wall_time_s",
               "all_invocations", "seconds"}


def dump_models(out: str) -> None:
    """Decisions of the shipped pipeline and allocations of the shipped allocator."""
    sp = system.SystemParams()
    scn = system.sample_scenarios(jax.random.PRNGKey(2026), sp, 64)
    alloc = load_allocator()
    mask = np.asarray(jax.random.uniform(jax.random.PRNGKey(7), scn.shape) < 0.6)
    res = {}
    for w, d in ((1, 1), (5, 2), (alloc.n_experts, alloc.n_layers)):
        b, f = alloc.allocate(scn, mask, w, d)
        res[f"allocator/{w},{d}"] = [np.asarray(b).tolist(), np.asarray(f).tolist()]
    dec = load_pipeline().decide(scn)
    res["pipeline"] = {k: np.asarray(v).tolist() for k, v in dec._asdict().items()}
    pathlib.Path(out).write_text(json.dumps(res))


def _strip(obj, path, ignore):
    if isinstance(obj, dict):
        return {k: _strip(v, f"{path}.{k}" if path else k, ignore) for k, v in obj.items()
                if k not in TIMING_KEYS and not k.endswith("_wall_s")
                and (f"{path}.{k}" if path else k) not in ignore}
    if isinstance(obj, list):
        return [_strip(v, path, ignore) for v in obj]
    return obj


def _diff(a, b, path, out):
    if type(a) is not type(b):
        out.append(f"{path}: {type(a).__name__} vs {type(b).__name__}")
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'B' if k not in a else 'A'}")
            else:
                _diff(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} vs {len(b)}")
        else:
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                _diff(x, y, f"{path}[{i}]", out)
    elif a != b and not (isinstance(a, float) and a != a and b != b):
        out.append(f"{path}: {a!r} vs {b!r}")


def compare(a: str, b: str, ignore: set, skip_png: bool) -> list[str]:
    """Differences between two trees (or two files) of JSON results."""
    pa, pb = pathlib.Path(a), pathlib.Path(b)
    if pa.is_file():
        pairs = [(pa, pb, pa.name)]
    else:
        names = sorted({p.relative_to(pa) for p in pa.rglob("*") if p.is_file()}
                       | {p.relative_to(pb) for p in pb.rglob("*") if p.is_file()})
        pairs = [(pa / n, pb / n, str(n)) for n in names
                 if n.suffix == ".json" or (n.suffix == ".png" and not skip_png)]
    out = []
    for x, y, name in pairs:
        if not x.exists() or not y.exists():
            out.append(f"{name}: only in {'B' if not x.exists() else 'A'}")
        elif x.suffix == ".png":
            if x.read_bytes() != y.read_bytes():
                out.append(f"{name}: images differ")
        else:
            _diff(_strip(json.loads(x.read_text()), "", ignore),
                  _strip(json.loads(y.read_text()), "", ignore), name, out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump-models")
    d.add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--ignore-key", action="append", default=[])
    c.add_argument("--skip-png", action="store_true")
    args = ap.parse_args()
    if args.cmd == "dump-models":
        dump_models(args.out)
        return 0
    diffs = compare(args.a, args.b, set(args.ignore_key), args.skip_png)
    for line in diffs[:200]:
        print(line)
    print(f"{len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
