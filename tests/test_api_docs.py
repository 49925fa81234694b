"""docs/api.md is generated from the docstrings, up to date, and every public name has one."""

import importlib
import inspect
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import api_docs  # noqa: E402


@pytest.mark.parametrize("name", api_docs.MODULES)
def test_every_public_function_and_class_has_a_docstring(name):
    module = importlib.import_module(name)
    missing = []
    for n, obj in api_docs.public(module):
        if callable(obj) and not (inspect.getdoc(obj) or "").strip():
            missing.append(n)
        if inspect.isclass(obj):
            for m, v in api_docs.members(obj):
                f = v.fget if isinstance(v, property) else getattr(v, "__func__", v)
                if not (inspect.getdoc(f) or "").strip():
                    missing.append(f"{n}.{m}")
    assert not missing, f"{name}: no docstring for {missing}"


def test_the_api_page_is_up_to_date():
    assert api_docs.main(["--check"]) == 0, "run python tools/api_docs.py"
