r"""Task files: a user's tasks in (CSV or JSON), one decision per task out (CSV).

The library behind ``dynmec-decide``: this module reads and checks the
input (:func:`read_tasks`); :mod:`dynmec_jax.decisionfile` checks the output
path, decides and writes (``decisionfile.decide_file`` is the whole flow).
Every refusal is an
:class:`InputError` whose message is one line naming the file and the row
(and the column) where it applies; on any error nothing is written.

Input.  One row per task with the columns of :data:`COLUMNS`: ``scenario``
(an id; the tasks of one scenario compete for the server), ``size`` [bits],
``workload`` [cycles/bit], ``deadline`` [s], ``distance`` [m] and
``f_local`` [cycles/s].  ``.csv``: a header row, then one task per row.
``.json``: a list of objects with those keys, or ``{"tasks": [...]}``.  The
format goes by the suffix (either case); any other suffix is refused.  Rows
of one scenario may be anywhere in the file: the output has one row per input
row, in input order, and a task's index is its order within its scenario.

Rules (the same for CSV and JSON wherever both have the notion):

* Encoding: UTF-8, with or without a byte-order mark.  A byte that is not
  UTF-8 is refused naming the file, the row (line) and the byte.
* Columns: exactly the known ones (:data:`COLUMNS`; a later change may add
  optional ones there).  A duplicate column (or a duplicate key in a JSON
  object), a missing one or an unknown one is refused, the last listing the
  known columns.  In CSV, spaces and tabs around a header name are ignored,
  a completely empty line is skipped, and a row with more or fewer fields
  than the header is refused.
* Numbers: plain ASCII decimal or scientific notation, ``-?(digits[.[digits]]
  | .digits)[(e|E)[+|-]digits]`` (:data:`NUMBER`; e.g. ``1200``, ``0.01``,
  ``.5``, ``5.``, ``1.5e8``).
  No leading ``+`` (JSON has none either), no ``_`` separators, no
  ``inf``/``nan``, no hexadecimal, no non-ASCII digits (``'١٢'`` is not 12).
  In CSV, spaces and tabs around a number are ignored.  In JSON a number
  field must be a JSON number: ``true``, ``"1200"``, ``null``, ``NaN``,
  arrays and objects are refused; a number with hundreds of digits is read
  from its text (never an ``OverflowError``) and refused by its bound.
* Bounds: every value must lie in its range of
  :data:`dynmec_jax.checks.SCENARIO_BOUNDS` (:data:`BOUNDS`), and so must the
  products the maths forms from a task (cycles c s, the importance weight of
  Eq. 19, the local energy of Eq. 6).  They keep every quantity of Eq. 1-6
  and 19 finite in float32, the dtype the networks and the outcomes run in
  (a size of 1e39 bits passes a float64 check but is inf in float32).  Each
  bound and the measurement behind it is documented there:

  ===============  =======  ======  ==========  ===========================
  quantity         low      high    unit        why
  ===============  =======  ======  ==========  ===========================
  size             0        1e10    bits        1.25 GB; c s <= 1e16
  workload         0        1e6     cycles/bit  ~1000x heavy MEC loads
  deadline         1e-6     1e4     s           1 us < inference delay
  distance         1e-2     1e5     m           1 cm to 100 km (Eq. 1)
  f_local          1        1e12    cycles/s    f_loc^2 <= 1e24 (Eq. 6)
  size*workload    0        1e16    cycles      Eq. 2, 4, 6
  importance       0        1e15    1/s         w of Eq. 19
  local_energy     0        1e20    J           E_loc of Eq. 6
  ===============  =======  ======  ==========  ===========================

* Cell columns (optional): any float field of
  :class:`dynmec_jax.system.SystemParams` (:data:`CELL_FIELDS`, e.g.
  ``bandwidth_max`` [Hz], ``f_server`` [cycles/s], ``beta``) gives that
  scenario its own cell.  A scenario's rows that have the column must agree
  on its value; the value is a number (same grammar) checked by
  :func:`dynmec_jax.system.validate` when deciding.  Kept in
  :attr:`TaskTable.cells`.
* Scenario ids are text, compared exactly.  CSV cells are text; a JSON id
  may be a string or an integer, and an integer stands for its decimal text,
  so JSON ``1``, JSON ``"1"`` and CSV ``1`` are one scenario (but CSV ``01``
  is another).  A JSON float, boolean, null, array or object id is refused.
  An id must be non-empty, without leading or trailing whitespace (``"a "``
  would silently be another scenario than ``"a"``) and without control,
  surrogate or line-separator characters.
* Output path (``decisionfile.check_output_path``): refused if empty, if it names a
  directory (an existing one, or a path ending in ``/``), if it is one of the
  input files (the same file by ``os.path.samefile``, hard and symbolic links
  included), if something other than a regular file is there (a FIFO, a
  device, a socket: they are left alone), or if its directory does not exist
  or is not writable.  A symlink is followed and judged by its target: a
  symlink to a regular file has that file replaced (the link stays a link);
  a dangling (or looping) symlink is refused, since writing through it would
  create a file elsewhere or replace the link.  The write is atomic
  (:func:`dynmec_jax.files.atomic_write`) and re-checks, just before the
  rename, that the target is still absent or a regular file.

Output: :data:`OUTPUT_COLUMNS`, one row per input task, floats as ``repr``
(they read back exactly).  A decision or outcome that is not finite is
refused naming the scenario (never a NaN in the file).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import os
import pathlib
import re
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from dynmec_jax import checks, system


class InputError(ValueError):
    """A refused input (or output path): the message is one line naming the file and the
    row (and column) where it applies.  ``launch/decide.py`` prints it and exits 2."""

    def __init__(self, message: str):
        super().__init__(one_line(str(message)))


class Column(NamedTuple):
    """A known input column.

    Attributes:
      name: the CSV header / JSON key.
      role: ``"id"`` (the scenario id), ``"task"`` (a field of
        :class:`dynmec_jax.system.Scenario`) or ``"extra"`` (kept as read, per
        row, in :attr:`TaskTable.extras`).
      required: whether every row must have it.
      unit: SI unit ("" for text).
      description: what it is.
    """

    name: str
    role: str
    required: bool
    unit: str
    description: str


#: The known input columns (extend this tuple to accept more; unknown ones are refused).
COLUMNS: tuple[Column, ...] = (
    Column("scenario", "id", True, "", "scenario id (text); its tasks share the server"),
    Column("size", "task", True, "bits", "s_i, task size (Eq. 1-6)"),
    Column("workload", "task", True, "cycles/bit", "c_i, task complexity (Eq. 2, 4, 6)"),
    Column("deadline", "task", True, "s", "d_i (Eq. 19, deadline miss of Eq. 11a)"),
    Column("distance", "task", True, "m", "l_i, user-server distance (Eq. 1)"),
    Column("f_local", "task", True, "cycles/s", "f_i^loc, local CPU (Eq. 4, 6)"),
)
#: Optional per-scenario cell columns: the float fields of SystemParams (module doc).
CELL_FIELDS = tuple(f.name for f in dataclasses.fields(system.SystemParams)
                    if f.name != "n_users")
COLUMNS = COLUMNS + tuple(Column(name, "extra", False, "SI",
                                 f"the scenario's SystemParams.{name} (its cell)")
                          for name in CELL_FIELDS)
ID_COLUMN = "scenario"
#: The task fields, in :class:`dynmec_jax.system.Scenario` order.
TASK_FIELDS = tuple(name for name, _, _ in checks.SCENARIO_RULES)
#: (name, low, high, unit, reason), both ends inclusive: :data:`checks.SCENARIO_BOUNDS`.
BOUNDS = checks.SCENARIO_BOUNDS
OUTPUT_COLUMNS = ("scenario", "task", "offload", "bandwidth_hz", "f_alloc_hz", "width",
                  "depth", "delay_s", "energy_j", "deadline_miss")
#: Input formats by (lower-case) suffix.
SUFFIXES = (".csv", ".json")
#: The number grammar (fullmatch; ASCII digits only).
NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")
_BLANKS = " \t"
_BOUND = {name: (lo, hi, unit, reason) for name, lo, hi, unit, reason in BOUNDS}
# Characters str.splitlines() breaks at: never inside a message.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Unicode categories refused in ids: control, surrogate, line and paragraph separators.
_BAD_ID_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")


def one_line(message: str) -> str:
    for ch in _LINE_BREAKS:
        message = message.replace(ch, ascii(ch)[1:-1])
    return message


def show_path(path) -> str:
    """A path for a message: as given, or its ``repr`` if it has unprintable characters."""
    text = os.fspath(path) if not isinstance(path, str) else path
    text = os.fsdecode(text) if isinstance(text, bytes) else text
    return text if text.isprintable() else repr(text)


def clip(value, limit: int = 40) -> str:
    """``repr`` of a raw value for a message, shortened to about ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    return (repr(text) if len(text) <= limit
            else f"{repr(text[:limit])}... ({len(text)} characters)")


#: What a non-regular file is, in words (:func:`file_kind`), tested in this order.
_FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
               (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
               (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link"))


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words (for refusals)."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "special file")


def known_columns() -> str:
    """The known column names, comma-separated (for messages)."""
    return ", ".join(c.name for c in COLUMNS)


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TaskTable:
    """The tasks of a file, grouped by scenario, with the input order.

    Attributes:
      path: the file read.
      scenarios: ``{id: Scenario}`` in order of first appearance; fields are
        float64 NumPy arrays ``(N,)`` in SI units, checked by
        :func:`dynmec_jax.checks.validate_scenario` (bounds included).
      order: one ``(scenario id, index within the scenario, where)`` per
        input row, in input order; ``where`` names the row for messages
        (``"tasks.csv row 3"``, ``"tasks.json task 2"``).
      extras: per input row, the optional (``role="extra"``) columns it has,
        as read.
      cells: ``{id: {field: value}}``, the cell columns of each scenario that has
        any (SI units; module doc).
    """

    path: pathlib.Path
    scenarios: dict[str, system.Scenario]
    order: tuple[tuple[str, int, str], ...]
    extras: tuple[dict[str, Any], ...] = ()
    cells: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        """Number of tasks (input rows)."""
        return len(self.order)

    def where(self, sid: str, index: int) -> str:
        """The ``where`` of task ``index`` of scenario ``sid``."""
        for s, i, w in self.order:
            if s == sid and i == index:
                return w
        raise KeyError((sid, index))


class _JsonNumber:
    """A JSON number kept as its text (``parse_int``/``parse_float`` hook)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _JsonConstant:
    """``NaN``, ``Infinity`` or ``-Infinity`` in a JSON file (``parse_constant`` hook)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _JsonObject(dict):
    """A JSON object that remembers its duplicate keys (``object_pairs_hook``)."""

    duplicates: tuple = ()


def _json_object(pairs) -> _JsonObject:
    obj = _JsonObject()
    dups = []
    for k, v in pairs:
        if k in obj and k not in dups:
            dups.append(k)
        obj[k] = v
    obj.duplicates = tuple(dups)
    return obj


def _open_input(path) -> tuple[pathlib.Path, str, bytes]:
    """``(path, shown, bytes)`` of an input file: a regular file with a known suffix."""
    text = "" if path is None else os.fsdecode(os.fspath(path))
    if text == "":
        raise InputError("input path is empty; name a .csv or .json file")
    p, shown = pathlib.Path(text), show_path(text)
    if "\x00" in text:
        raise InputError(f"input {shown}: a path cannot contain a NUL character")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"input {shown}: no such file") from None
    except OSError as e:
        raise InputError(f"input {shown}: cannot open it ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"input {shown} is a directory; name a .csv or .json file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"input {shown} is a {file_kind(st.st_mode)}, not a regular file")
        if p.suffix.lower() not in SUFFIXES:
            raise InputError(f"input {shown}: unknown format {p.suffix or '(no suffix)'!r}; "
                             "name a .csv or .json file")
        try:
            raw = f.read()
        except OSError as e:
            raise InputError(f"input {shown}: cannot read it ({e.strerror or e})") from None
    return p, shown, raw


def _decode(shown: str, raw: bytes, unit: str) -> str:
    """UTF-8 text of ``raw`` (one leading byte-order mark dropped); ``unit`` is "row" or "line"."""
    body = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        before = re.split(rb"\r\n|\r|\n", body[:e.start])
        raise InputError(
            f"{shown} {unit} {len(before)}: byte 0x{body[e.start]:02x} at column "
            f"{len(before[-1]) + 1} is not UTF-8; save the file as UTF-8 (from Latin-1: "
            "iconv -f latin1 -t utf-8)") from None


def _csv_records(shown: str, text: str) -> list[tuple[str, dict]]:
    """``[(where, {column: text})]`` of a CSV text; checks the header and field counts."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records = []
    try:
        for fields in reader:
            if not fields:                       # a completely empty line
                continue
            where = f"{shown} row {reader.line_num}"
            if header is None:
                header = [h.strip(_BLANKS) for h in fields]
                _check_columns(f"{shown} header (row {reader.line_num})", header,
                               duplicates=[h for i, h in enumerate(header) if h in header[:i]])
                continue
            if len(fields) != len(header):
                raise InputError(f"{where}: {len(fields)} fields, but the header has "
                                 f"{len(header)} ({', '.join(header)})")
            records.append((where, dict(zip(header, fields, strict=True))))
    except csv.Error as e:
        raise InputError(f"{shown} row {reader.line_num}: not valid CSV ({e})") from None
    if header is None:
        raise InputError(f"{shown}: empty file; expected a header row ({known_columns()}) "
                         "and one row per task")
    return records


def _check_columns(where: str, names: Sequence[str], duplicates: Iterable[str] = ()) -> None:
    """Refuses duplicate, unknown and (for required columns) missing names."""
    for d in duplicates:
        raise InputError(f"{where}: duplicate column {clip(d)}")
    known = {c.name for c in COLUMNS}
    for n in names:
        if n not in known:
            raise InputError(f"{where}: unknown column {clip(n)}; the known columns are "
                             f"{known_columns()}")
    for c in COLUMNS:
        if c.required and c.name not in names:
            raise InputError(f"{where}: missing column {c.name!r} (columns: "
                             f"{', '.join(clip(n) for n in names)})")


def _json_records(shown: str, text: str) -> list[tuple[str, dict]]:
    """``[(where, {key: value})]`` of a JSON text (numbers kept as their text)."""
    try:
        data = json.loads(text, parse_int=_JsonNumber, parse_float=_JsonNumber,
                          parse_constant=_JsonConstant, object_pairs_hook=_json_object)
    except json.JSONDecodeError as e:
        raise InputError(f"{shown} line {e.lineno}, column {e.colno}: not valid JSON "
                         f"({e.msg})") from None
    except RecursionError:
        raise InputError(f"{shown}: JSON nested too deeply") from None
    if isinstance(data, _JsonObject):
        if data.duplicates:
            raise InputError(f"{shown}: duplicate key {clip(data.duplicates[0])}")
        if set(data) != {"tasks"}:
            other = sorted(set(data) - {"tasks"})
            raise InputError(f"{shown}: expected a list of tasks or {{\"tasks\": [...]}}; "
                             f"{'unknown key ' + clip(other[0]) if other else 'no key tasks'}")
        data = data["tasks"]
        if not isinstance(data, list):
            raise InputError(f"{shown}: \"tasks\" must be a list of task objects")
    elif not isinstance(data, list):
        raise InputError(f"{shown}: expected a list of tasks or {{\"tasks\": [...]}}")
    records = []
    for i, row in enumerate(data):
        where = f"{shown} task {i}"
        if not isinstance(row, _JsonObject):
            raise InputError(f"{where}: expected an object with keys {known_columns()}, got "
                             f"{_json_kind(row)}")
        _check_columns(where, list(row), row.duplicates)
        records.append((where, row))
    return records


def _json_kind(value) -> str:
    if isinstance(value, _JsonNumber):
        return f"the number {value.text[:40]}"
    if isinstance(value, _JsonConstant):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {clip(value)}"
    return "an array" if isinstance(value, list) else "an object"


def _number(where: str, name: str, value, is_json: bool) -> float:
    """A task field's value in SI units, from CSV text or a JSON value (rules: module doc)."""
    at = f"{where}, column {name!r}"
    if is_json:
        if value is None:
            raise InputError(f"{at}: missing value (null)")
        if not isinstance(value, _JsonNumber):
            raise InputError(f"{at}: {_json_kind(value)} is not a number; write a JSON "
                             "number")
        text = value.text
    else:
        text = value.strip(_BLANKS)
    if text == "":
        raise InputError(f"{at}: missing value")
    if not NUMBER.fullmatch(text):
        raise InputError(f"{at}: {clip(text)} is not a "
                         "number (plain ASCII decimal or scientific notation such as 1200, "
                         "0.01 or 1.5e8; no '+', '_', inf or nan)")
    v = float(text)          # never raises on this grammar; huge values become inf
    if name not in _BOUND:   # a cell column: checked by system.validate when deciding
        if not np.isfinite(v):
            raise InputError(f"{at}: {clip(text)} is not a finite number")
        return v
    lo, hi, unit, reason = _BOUND[name]
    if not lo <= v <= hi:
        raise InputError(f"{at}: {clip(text)} is outside [{lo:g}, {hi:g}] {unit}: {reason}")
    return v


def _scenario_id(where: str, value) -> str:
    """The scenario id as text (rules: module doc)."""
    at = f"{where}, column {ID_COLUMN!r}"
    if isinstance(value, _JsonNumber):
        if not _INTEGER.fullmatch(value.text):
            raise InputError(f"{at}: {_json_kind(value)} is not an id; an id is a string or "
                             "an integer")
        return value.text
    if not isinstance(value, str):
        if value is None:
            raise InputError(f"{at}: missing value (null)")
        raise InputError(f"{at}: {_json_kind(value)} is not an id; an id is a string or an "
                         "integer")
    if value == "":
        raise InputError(f"{at}: missing value")
    if value != value.strip():
        raise InputError(f"{at}: {clip(value)} has leading or trailing whitespace; ids are "
                         "compared as exact text")
    for ch in value:
        if unicodedata.category(ch) in _BAD_ID_CATEGORIES:
            raise InputError(f"{at}: {clip(value)} contains the character {ascii(ch)}; an "
                             "id must be printable text")
    return value


def _check_products(where: str, values: dict[str, float]) -> None:
    """Refuses a task whose products (c s, Eq. 19's w, Eq. 6's E_loc) leave their bounds."""
    with np.errstate(all="ignore"):
        derived = checks.bound_values({k: np.float64(v) for k, v in values.items()})
    for name, lo, hi, unit, reason in BOUNDS:
        if name in values:
            continue
        v = float(derived[name])
        if not lo <= v <= hi:
            raise InputError(f"{where}: {name} is {v!r} {unit}; it must be in [{lo:g}, "
                             f"{hi:g}] {unit}: {reason}")


def read_tasks(path) -> TaskTable:
    """Reads a task file (``.csv`` or ``.json``, rules in the module doc) into a :class:`TaskTable`.

    Units: size [bits], workload [cycles/bit], deadline [s], distance [m], f_local
    [cycles/s].  Every value is checked against :data:`BOUNDS` (and each task's
    products c s, w of Eq. 19 and E_loc of Eq. 6), so that Eq. 1-6 and 19 stay finite in
    float32.  Rows are grouped by scenario id (first-appearance order) and the input
    order is kept in :attr:`TaskTable.order`.

    Raises:
      InputError: one line naming the file, the row and the column of the first problem.
    """
    p, shown, raw = _open_input(path)
    is_json = p.suffix.lower() == ".json"
    text = _decode(shown, raw, "line" if is_json else "row")
    records = _json_records(shown, text) if is_json else _csv_records(shown, text)
    if not records:
        raise InputError(f"{shown}: no tasks")
    extra_names = [c.name for c in COLUMNS if c.role == "extra"]
    groups: dict[str, dict[str, list[float]]] = {}
    order, extras = [], []
    cells: dict[str, dict[str, float]] = {}
    named: dict[str, set] = {}   # per scenario: the cell columns its first row had
    for where, row in records:
        for c in COLUMNS:
            if c.required and c.name not in row:
                raise InputError(f"{where}: missing column {c.name!r}")
        sid = _scenario_id(where, row[ID_COLUMN])
        values = {name: _number(where, name, row[name], is_json) for name in TASK_FIELDS}
        _check_products(where, values)
        cols = groups.setdefault(sid, {f: [] for f in TASK_FIELDS})
        order.append((sid, len(cols[TASK_FIELDS[0]]), where))
        extras.append({n: row[n] for n in extra_names if n in row})
        here = {n: _number(where, n, row[n], is_json) for n in CELL_FIELDS if n in row}
        if sid not in named:
            named[sid] = set(here)
            if here:
                cells[sid] = here
        if set(here) != named[sid]:
            raise InputError(f"{where}: scenario {clip(sid)} has cell columns "
                             f"{sorted(here)} here but {sorted(named[sid])} in its first row")
        for n, v in here.items():
            if v != cells[sid][n]:
                raise InputError(f"{where}, column {n!r}: {v!r} differs from {cells[sid][n]!r} "
                                 f"in an earlier row of scenario {clip(sid)}; a cell column "
                                 "has one value per scenario")
        for f in TASK_FIELDS:
            cols[f].append(values[f])
    scenarios = {}
    for sid, cols in groups.items():
        try:
            scenarios[sid] = checks.validate_scenario(system.Scenario(
                **{f: np.asarray(v, dtype=np.float64) for f, v in cols.items()}))
        except ValueError as e:       # not expected: every value was checked above
            raise InputError(f"{shown}: scenario {clip(sid)}: {e}") from None
    return TaskTable(path=p, scenarios=scenarios, order=tuple(order), extras=tuple(extras),
                     cells=cells)
