"""Load question–answer data from local JSON files or Hugging Face hub ids, validated up front.

Every row is checked before any record is returned, and every problem found is reported in one
:class:`~obliviate.errors.DataError`, so a user fixes a file in one pass instead of one error per run.

Accepted rows (JSON objects; unknown fields are ignored):

========================  ==========================================================================
``question``, ``answer``  required, non-empty strings
``paraphrased_answer``    optional non-empty string
``paraphrased_question``  optional non-empty string
``perturbed_answer``      optional non-empty list of non-empty strings (one string = a one-item list)
``task_id``               optional integer, or a string holding one (TOFU's files write ``"3"``)
``name``                  optional non-empty string; required in the ``real_world`` layout
``golden_answer``         optional non-empty string; required in the ``real_world`` layout
========================  ==========================================================================

A JSON ``null`` counts as an absent field, because hub datasets fill missing columns with ``None``.

Locations in messages: ``line N`` is the 1-based physical line of a JSON-lines file, ``element N`` the
0-based index in a JSON array, ``row N`` the 0-based row of a hub split (so ``dataset[N]`` finds it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from obliviate.data.records import QARecord
from obliviate.errors import ConfigError, DataError, ObliviateError

LAYOUTS: tuple[str, ...] = ("auto", "tofu", "real_world")
"""Row layouts :func:`load_qa` knows; ``auto`` picks ``real_world`` when the first row has ``golden_answer``."""

QA_SUFFIXES: tuple[str, ...] = (".json", ".jsonl")
"""File name endings a local QA file may have (either may hold JSON lines or a JSON array)."""

MAX_LISTED_PROBLEMS = 20
"""How many problems one error message spells out; the rest are counted, to keep the message readable."""

# owner/name, as the hub spells dataset ids. A path such as "data/qa.json" also has one slash, so a
# name ending in a QA suffix is never taken for a hub id (see looks_like_hub_id).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_INT_STRING = re.compile(r"\s*[+-]?\d+\s*")

_TEXT_FIELDS: tuple[str, ...] = ("paraphrased_answer", "paraphrased_question", "name", "golden_answer")
_REAL_WORLD_REQUIRED: tuple[str, ...] = ("name", "golden_answer")


@dataclass(frozen=True)
class RawRow:
    """One row as read from a file or hub split, before validation.

    ``value`` is the decoded JSON value (a ``dict`` for a well-formed row), ``where`` its location for
    messages (``"line 3"``, ``"element 2"``, ``"row 2"``) and ``source`` the string stored on the
    resulting :class:`QARecord` (``"qa.jsonl:3"``, ``"qa.json:element 2"``, ``"locuslab/TOFU[forget01]:row 2"``).
    """

    value: Any
    where: str
    source: str


@dataclass(frozen=True)
class RawRows:
    """Rows read from one origin (a file path or ``hub-id[config]``), plus problems met while reading.

    Reading and validating are separate steps so that a caller can rename fields between them (the
    TOFU loader does, for the utility sets) and still get one error that lists every problem.
    """

    origin: str
    rows: tuple[RawRow, ...]
    problems: tuple[str, ...] = ()

    def map(self, transform: Callable[[Any], Any]) -> RawRows:
        """Return a copy with ``transform`` applied to every row's value (locations are kept)."""
        return replace(self, rows=tuple(replace(row, value=transform(row.value)) for row in self.rows))


def looks_like_hub_id(source: str | Path) -> bool:
    """True when ``source`` reads as a Hugging Face dataset id (``owner/name``) rather than a file path.

    A :class:`~pathlib.Path` is always local; so is any string ending in ``.json``/``.jsonl``. The
    caller checks first whether a local file or folder of that name exists.
    """
    if isinstance(source, Path):
        return False
    if not _HUB_ID.fullmatch(source):
        return False
    return not source.lower().endswith(QA_SUFFIXES)


def load_qa(source: str | Path, *, layout: str = "auto", hub_config: str | None = None,
            hub_split: str = "train", limit: int | None = None) -> list[QARecord]:
    """Load and validate question–answer rows from a local file or a Hugging Face hub dataset.

    Args:
        source: a ``.json``/``.jsonl`` file (JSON lines, or one JSON array), or a hub dataset id such as
            ``"locuslab/TOFU"`` when no local path of that name exists.
        layout: ``"tofu"``, ``"real_world"`` (``name`` and ``golden_answer`` required too) or ``"auto"``
            (``real_world`` when the first row has ``golden_answer``).
        hub_config: the hub configuration, e.g. ``"forget01"``; ignored for local files.
        hub_split: the hub split to read.
        limit: keep only the first ``limit`` rows; only those rows are read and validated, so a quick
            look at a large file does not fail on a bad row far below.

    Returns:
        One :class:`QARecord` per row, in file order.

    Raises:
        ConfigError: ``layout`` or ``limit`` is not valid.
        DataError: the file is missing, empty, not UTF-8, or has invalid rows (all listed at once).
        ObliviateError: the hub could not be reached or has no such dataset, config or split.
    """
    _check_layout(layout)
    _check_limit(limit)
    raw = read_rows(source, hub_config=hub_config, hub_split=hub_split, limit=limit)
    return parse_records(raw, layout=layout)


def read_rows(source: str | Path, *, hub_config: str | None = None, hub_split: str = "train",
              limit: int | None = None) -> RawRows:
    """Read the rows of a local QA file or a hub split without validating them (see :func:`load_qa`).

    Invalid JSON lines do not stop reading: they become entries of :attr:`RawRows.problems`, so that
    :func:`parse_records` can report them together with the rows' field problems.
    """
    _check_limit(limit)
    path = Path(source).expanduser()
    if path.is_dir():
        raise DataError("is a folder, not a QA file: pass a .json or .jsonl file (a TOFU folder is "
                        "read with obliviate.benchmarks.tofu.load_tofu)", path=str(source))
    if path.is_file():
        if path.suffix.lower() not in QA_SUFFIXES:
            raise DataError(f"unsupported file type '{path.suffix or '(none)'}': QA data must be a "
                            f"{' or '.join(QA_SUFFIXES)} file holding JSON lines or a JSON array",
                            path=str(source))
        return _read_file(path, str(source), limit)
    if looks_like_hub_id(source):
        return _read_hub(str(source), hub_config, hub_split, limit)
    raise DataError("file not found", path=str(source))


def parse_records(raw: RawRows, *, layout: str = "auto") -> list[QARecord]:
    """Validate every row of ``raw`` and build records; raise one :class:`DataError` listing all problems."""
    _check_layout(layout)
    if not raw.rows and not raw.problems:
        raise DataError("holds no rows; expected JSON objects with 'question' and 'answer'", path=raw.origin)
    real_world = layout == "real_world" or (
        layout == "auto" and bool(raw.rows) and isinstance(raw.rows[0].value, Mapping)
        and raw.rows[0].value.get("golden_answer") is not None)
    problems = list(raw.problems)
    records: list[QARecord] = []
    for row in raw.rows:
        record = _record_from_row(row, raw.origin, real_world, problems)
        if record is not None:
            records.append(record)
    if problems:
        raise_problems(raw.origin, problems, what="QA data")
    return records


def raise_problems(origin: str, problems: list[str], *, what: str) -> None:
    """Raise one :class:`DataError` for ``origin`` that lists ``problems`` (at most :data:`MAX_LISTED_PROBLEMS`)."""
    shown = [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        shown.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    raise DataError(f"{count} in {what}:\n" + "\n".join(shown), path=origin)


def format_problem(origin: str, where: str | None, field: str | None, message: str) -> str:
    """One problem in the style of :class:`DataError`: ``"qa.jsonl, line 3, field 'answer': message"``."""
    parts = [origin] + ([where] if where else []) + ([f"field '{field}'"] if field else [])
    return f"{', '.join(parts)}: {message}"


def decode_utf8(data: bytes, origin: str) -> str:
    """Decode a whole file as UTF-8 (a leading byte-order mark is dropped); errors name the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"not valid UTF-8 ({err.reason} at byte {err.start})", path=origin, line=line) from err


def describe_value(value: Any) -> str:
    """A short description of a JSON value for messages: its JSON type and, where short, the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, str):
        if not value:
            return "an empty string"
        if not value.strip():
            return "a blank string"
        return f"string {_shorten(json.dumps(value, ensure_ascii=False))}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


# --- reading -----------------------------------------------------------------------------------------


def _read_file(path: Path, origin: str, limit: int | None) -> RawRows:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot be read: {err.strerror or err}", path=origin) from err
    text = decode_utf8(data, origin)
    stripped = text.lstrip()
    if not stripped:
        raise DataError("the file is empty; expected JSON lines or a JSON array of objects with "
                        "'question' and 'answer'", path=origin)
    if stripped[0] == "[":
        return _read_array(text, origin, limit)
    return _read_json_lines(text, origin, limit)


def _read_array(text: str, origin: str, limit: int | None) -> RawRows:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        # One syntax error spoils the whole array, so there is nothing further to validate. The hint
        # matters for a JSON-lines file whose first row happens to be an array.
        raise DataError(f"invalid JSON: {err.msg} (column {err.colno}); the file starts with '[', so it "
                        f"is read as one JSON array", path=origin, line=err.lineno) from err
    if limit is not None:
        values = values[:limit]
    rows = tuple(RawRow(value, f"element {i}", f"{origin}:element {i}") for i, value in enumerate(values))
    return RawRows(origin, rows)


def _read_json_lines(text: str, origin: str, limit: int | None) -> RawRows:
    rows: list[RawRow] = []
    problems: list[str] = []
    # split("\n") rather than splitlines(): JSON strings may hold U+2028 and friends, which splitlines()
    # would treat as line breaks and so shift every later line number.
    for number, line in enumerate(text.split("\n"), start=1):
        if limit is not None and len(rows) + len(problems) >= limit:
            break
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(format_problem(origin, f"line {number}", None,
                                           f"invalid JSON: {err.msg} (column {err.colno})"))
            continue
        rows.append(RawRow(value, f"line {number}", f"{origin}:{number}"))
    return RawRows(origin, tuple(rows), tuple(problems))


def _read_hub(hub_id: str, hub_config: str | None, hub_split: str, limit: int | None) -> RawRows:
    # Imported here: importing datasets takes seconds, and local files never need it.
    import datasets

    origin = f"{hub_id}[{hub_config}]" if hub_config else hub_id
    offline_hint = (f"No local file or folder named '{hub_id}' exists, so it was read as a Hugging Face "
                    f"hub dataset id. To work offline, download the data and pass a local file or folder.")
    try:
        dataset = datasets.load_dataset(hub_id, hub_config, split=hub_split)
    except datasets.exceptions.DatasetNotFoundError as err:
        # Checked before OSError (its base class): offline, the hub also answers "not found".
        raise ObliviateError(f"dataset {origin} was not found on the Hugging Face hub, or the hub could "
                             f"not be reached ({err}). {offline_hint}") from err
    except OSError as err:
        # ConnectionError, timeouts and the hub client's HTTP errors all derive from OSError.
        raise ObliviateError(f"the Hugging Face hub could not be reached to load {origin} ({err}). "
                             f"{offline_hint}") from err
    except ValueError as err:
        # datasets reports an unknown config or split name as a ValueError that lists the valid ones.
        raise ObliviateError(f"cannot load {origin} split '{hub_split}' from the Hugging Face hub: {err}") from err
    rows: list[RawRow] = []
    # A datasets.Dataset iterates as one dict per row.
    for index, value in enumerate(dataset):
        if limit is not None and index >= limit:
            break
        rows.append(RawRow(value, f"row {index}", f"{origin}:row {index}"))
    return RawRows(origin, tuple(rows))


# --- validation --------------------------------------------------------------------------------------


def _record_from_row(row: RawRow, origin: str, real_world: bool, problems: list[str]) -> QARecord | None:
    """Validate one row, appending every problem found; return its record when it has none."""
    value = row.value
    if not isinstance(value, Mapping):
        problems.append(format_problem(origin, row.where, None,
                                       f"expected a JSON object, got {describe_value(value)}"))
        return None
    before = len(problems)

    def problem(field: str, message: str) -> None:
        problems.append(format_problem(origin, row.where, field, message))

    text: dict[str, str | None] = {}
    required = ("question", "answer") + (_REAL_WORLD_REQUIRED if real_world else ())
    for field in ("question", "answer") + _TEXT_FIELDS:
        item = value.get(field)
        if item is None:
            if field in required:
                problem(field, "required field is missing" + (" (the real_world layout needs it)"
                                                              if field in _REAL_WORLD_REQUIRED else ""))
            text[field] = None
        elif isinstance(item, str) and item.strip():
            text[field] = item
        else:
            problem(field, f"must be a non-empty string, got {describe_value(item)}")

    perturbed = _perturbed_answers(value.get("perturbed_answer"), problem)
    task_id = _task_id(value.get("task_id"), problem)
    if len(problems) > before:
        return None
    return QARecord(
        question=text["question"] or "",
        answer=text["answer"] or "",
        paraphrased_answer=text["paraphrased_answer"],
        perturbed_answers=perturbed,
        paraphrased_question=text["paraphrased_question"],
        task_id=task_id,
        name=text["name"],
        golden_answer=text["golden_answer"],
        source=row.source,
    )


def _perturbed_answers(value: Any, problem: Callable[[str, str], None]) -> tuple[str, ...]:
    field = "perturbed_answer"
    if value is None:
        return ()
    if isinstance(value, str):
        # Some exports store a single wrong answer as a bare string; it means a one-item list.
        value = [value]
    if not isinstance(value, (list, tuple)):
        problem(field, f"must be a list of non-empty strings, got {describe_value(value)}")
        return ()
    if not value:
        # An empty list would make the truth ratio a mean over nothing.
        problem(field, "must not be an empty list")
        return ()
    bad = [f"item {i} is {describe_value(item)}" for i, item in enumerate(value)
           if not (isinstance(item, str) and item.strip())]
    if bad:
        problem(field, "must be a list of non-empty strings: " + "; ".join(bad))
        return ()
    return tuple(value)


def _task_id(value: Any, problem: Callable[[str, str], None]) -> int | None:
    if value is None:
        return None
    # bool is a subclass of int in Python, but true/false in a file is a mistake, not a task number.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_STRING.fullmatch(value):
        return int(value)
    problem("task_id", f"must be an integer (or a string holding one), got {describe_value(value)}")
    return None


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError([f"layout {layout!r} is not one of: {', '.join(LAYOUTS)}"])


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError([f"limit must be a positive integer or None, got {limit!r}"])


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
