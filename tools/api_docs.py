r"""Writes ``docs/api.md``: the public API of the library, from its docstrings.

    python tools/api_docs.py            # writes docs/api.md
    python tools/api_docs.py --check    # exit 1 if docs/api.md is out of date

For each module of :data:`MODULES`, every public name (``__all__`` where the
module has one, else the names not starting with ``_`` defined in the module)
with its signature and its whole docstring, which names the equation, the
units and the shapes.  Deterministic (sorted by source order), so the file is
regenerated, never edited by hand; ``tests/test_api_docs.py`` checks that it is
up to date and that every public function and class has a docstring.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"
#: The documented modules, in the order of the page.
MODULES = ("dynmec_jax.system", "dynmec_jax.allocator", "dynmec_jax.costs",
           "dynmec_jax.evaluation", "dynmec_jax.methods", "dynmec_jax.pipeline", "dynmec_jax.cell",
           "dynmec_jax.baselines", "dynmec_jax.baselines.greedy",
           "dynmec_jax.baselines.exhaustive", "dynmec_jax.baselines.exact",
           "dynmec_jax.baselines.droo", "dynmec_jax.baselines.droo_train", "dynmec_jax.env",
           "dynmec_jax.rng")


def public(module) -> list[tuple[str, object]]:
    """``[(name, object)]``: the module's public functions, classes and constants, in
    source order (``__all__`` order where it exists)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__
                 and (inspect.isfunction(v) or inspect.isclass(v))]

        def line(n):
            try:
                return inspect.getsourcelines(getattr(module, n))[1]
            except (OSError, TypeError):
                return 0
        names = sorted(names, key=line)
    return [(n, getattr(module, n)) for n in names]


def _signature(obj) -> str:
    """``obj``'s signature without memory addresses (Flax modules' ``parent`` default)."""
    try:
        return re.sub(r" at 0x[0-9a-f]+", "", str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return ""


def members(cls) -> list[tuple[str, object]]:
    """The public methods and properties a class defines itself (not inherited)."""
    out = []
    for n, v in vars(cls).items():
        if n.startswith("_"):
            continue
        if inspect.isfunction(v) or isinstance(v, (property, classmethod, staticmethod)):
            out.append((n, v))
    return out


def render() -> str:
    """The page's Markdown text."""
    lines = ["# API", "",
             "Generated from the docstrings by `python tools/api_docs.py` (do not edit). "
             "Units are SI unless a docstring says otherwise; shapes use B scenarios of N "
             "users.", ""]
    for name in MODULES:
        module = importlib.import_module(name)
        lines += [f"## `{name}`", "", inspect.cleandoc(module.__doc__ or ""), ""]
        for n, obj in public(module):
            kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "data"
            sig = _signature(obj) if kind != "data" else ""
            lines += [f"### `{n}{sig}`" if kind != "data" else f"### `{n}`", "",
                      f"*{kind}*", "", inspect.cleandoc(inspect.getdoc(obj) or "") if kind != "data"
                      else "", ""]
            if inspect.isclass(obj):
                for m, v in members(obj):
                    f = v.fget if isinstance(v, property) else getattr(v, "__func__", v)
                    lines += [f"- `{n}.{m}{'' if isinstance(v, property) else _signature(f)}`: "
                              + " ".join((inspect.getdoc(f) or "").split("\n\n")[0].split())]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
