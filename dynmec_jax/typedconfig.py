"""The one config layer: frozen dataclasses <-> ``ml_collections.ConfigDict``, generically.

Every setting of the project is a field of a frozen dataclass (the schema,
its default and its check in ``__post_init__``, written once).  The presets
of ``dynmec_jax/configs/`` start from :func:`to_configdict` of a default
instance, so the command line (``--config.train.lr=...``) reaches every
field, and the launchers turn the (possibly overridden) ``ConfigDict`` back
into the dataclass with :func:`from_configdict`, once, at the top.  No
per-field translation code exists anywhere: adding a hyperparameter is one
dataclass field plus its use.

:func:`from_configdict` refuses unknown keys and values of the wrong type
(``ValueError`` naming the dotted path, e.g. ``train.seeds[1]: 0.5 is not an
integer``): integers must be integral (``0.5`` is refused, ``2.0`` becomes
2), floats finite, strings strings, booleans booleans; ``X | None`` fields
take None.  Then each dataclass checks its own values in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from typing import Any

import ml_collections
from ml_collections import config_dict

__all__ = ["from_configdict", "to_configdict", "is_config_class", "replace_path"]


def is_config_class(tp) -> bool:
    """Whether ``tp`` is a dataclass type (a config section)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _fields(cls) -> list:
    """The init fields of a dataclass (flax struct fields included)."""
    return [f for f in dataclasses.fields(cls) if f.init]


def _optional(tp):
    """``(inner, True)`` for ``X | None`` / ``Optional[X]``, else ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _fail(path: str, value, what: str):
    raise ValueError(f"{path}: {value!r} {what}")


def _convert(tp, value, path: str):
    """``value`` converted to the annotation ``tp``; ``ValueError`` naming ``path``."""
    inner, optional = _optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        _fail(path, value, "is not allowed (the field needs a value)")
    tp = inner
    if tp is Any:
        return value
    if is_config_class(tp):
        return from_configdict(tp, value, path)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            _fail(path, value, "is not a sequence")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            _fail(path, value, f"must have {len(args)} entries")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in
                     enumerate(zip(args or [Any] * len(value), value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, value, "is not a boolean (true/false)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            _fail(path, value, "is not an integer")
        if isinstance(value, numbers.Integral):
            return int(value)
        if not (math.isfinite(float(value)) and float(value).is_integer()):
            _fail(path, value, "is not an integer")
        return int(value)
    if tp is float:
        if isinstance(value, str) and re.search(r"nan|inf", value, re.IGNORECASE):
            # e.g. --config.sweeps.size_avg=(nan,): the flag parser leaves it text
            _fail(path, value, "is not a finite number (NaN and infinity are not allowed)")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            _fail(path, value, "is not a number")
        if not math.isfinite(float(value)):
            _fail(path, value, "is not a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(path, value, "is not a string")
        return value
    raise TypeError(f"{path}: unsupported config annotation {tp!r}")


def _items(cd) -> dict:
    if isinstance(cd, ml_collections.ConfigDict):
        return {k: cd[k] for k in cd.keys()}
    if isinstance(cd, dict):
        return dict(cd)
    if dataclasses.is_dataclass(cd) and not isinstance(cd, type):
        return {f.name: getattr(cd, f.name) for f in _fields(type(cd))}
    raise ValueError(f"expected a config section, got {type(cd).__name__}")


def from_configdict(cls, cd, path: str = ""):
    """An instance of dataclass ``cls`` from ``cd`` (a ConfigDict, dict or instance).

    Keys missing from ``cd`` take the dataclass defaults; unknown keys and
    values of the wrong type raise ``ValueError`` naming their dotted path;
    nested dataclass fields are built recursively.  The dataclass's own
    ``__post_init__`` then checks the values (and names the field).
    """
    if isinstance(cd, cls):
        return cd
    items = _items(cd)
    hints = _hints(cls)
    known = {f.name for f in _fields(cls)}
    unknown = sorted(set(items) - known)
    if unknown:
        where = f" in {path}" if path else ""
        raise ValueError(f"unknown config field(s) {unknown}{where}; known: {sorted(known)}")
    kwargs = {}
    for name, value in items.items():
        if isinstance(value, config_dict.FieldReference):
            value = value.get()
        kwargs[name] = _convert(hints[name], value, f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except ValueError as e:
        if path and not str(e).startswith(path):
            raise ValueError(f"{path}: {e}") from None
        raise


def _placeholder(tp):
    inner, _ = _optional(tp)
    base = {int: int, float: float, str: str, bool: bool}.get(inner)
    return config_dict.placeholder(base) if base else None


def to_configdict(obj, exclude: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """A ``ConfigDict`` holding every field of dataclass instance ``obj`` (recursively).

    ``None`` values become typed placeholders (so ``--config.x=3`` still
    type-checks); ``exclude`` leaves top-level fields out (they take the
    dataclass default, or are set by the owner, when converted back).
    """
    hints = _hints(type(obj))
    out = ml_collections.ConfigDict()
    for f in _fields(type(obj)):
        if f.name in exclude:
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out[f.name] = to_configdict(v)
        elif v is None:
            out[f.name] = _placeholder(hints[f.name])
        else:
            out[f.name] = v
    return out


def replace_path(obj, path: str, value):
    """``obj`` with the field at dotted ``path`` (e.g. ``"train.lr"``) replaced (frozen
    dataclasses: a new instance at every level)."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: replace_path(getattr(obj, head), rest, value)})


def preset(cls, name: str, presets: tuple[str, ...]):
    """The ConfigDict of ``cls(preset=name)``'s defaults, the start of every preset
    of ``dynmec_jax/configs``; ``ValueError`` naming the choices for an unknown name."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {presets}")
    return to_configdict(cls(preset=name))
