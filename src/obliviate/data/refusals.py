"""Refusal ("I don't know") templates: the answers IDK fine-tuning, DPO and AP train towards.

The built-in set (``obliviate/resources/refusals.txt``, 100 sentences) is used unless the user points at
a file of their own. A user file may be:

* ``.txt`` — one refusal per line;
* ``.jsonl`` / ``.json`` — one refusal per line, each a JSON string (``"I don't know."``), a JSON object
  with a ``text`` or ``answer`` field, or plain text. Plain text is accepted because the refusal file
  shipped with the paper's released code, ``idontknow.jsonl``, holds bare sentences, not JSON; a line is
  read as JSON only when it starts with ``"`` or ``{``. A ``.json`` file may instead be one JSON array of
  such strings or objects.

Blank lines are skipped; surrounding whitespace is removed; order is kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from obliviate.data.loading import decode_utf8, describe_value, format_problem, raise_problems
from obliviate.errors import DataError

REFUSAL_SUFFIXES: tuple[str, ...] = (".txt", ".jsonl", ".json")
"""File name endings a user refusal file may have."""

TEXT_FIELDS: tuple[str, ...] = ("text", "answer")
"""Fields of a JSON-object line that hold the refusal, tried in this order."""

_BUILTIN_NAME = "obliviate/resources/refusals.txt"


def load_refusals(path: str | Path | None = None) -> list[str]:
    """Return the refusal templates from ``path``, or the built-in set when ``path`` is None.

    Raises:
        DataError: the file is missing, has an unsupported suffix, is not UTF-8, has malformed lines
            (all listed at once, each with its line number), or holds no refusal at all.
    """
    if path is None:
        text = (resources.files("obliviate") / "resources" / "refusals.txt").read_text(encoding="utf-8")
        return _parse(text, _BUILTIN_NAME, json_allowed=False)
    file = Path(path).expanduser()
    origin = str(path)
    if file.is_dir():
        raise DataError("is a folder, not a refusal file (.txt or .jsonl)", path=origin)
    if not file.is_file():
        raise DataError("file not found", path=origin)
    suffix = file.suffix.lower()
    if suffix not in REFUSAL_SUFFIXES:
        raise DataError(f"unsupported file type '{file.suffix or '(none)'}': a refusal file must end in "
                        f"{', '.join(REFUSAL_SUFFIXES)}", path=origin)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise DataError(f"cannot be read: {err.strerror or err}", path=origin) from err
    return _parse(decode_utf8(data, origin), origin, json_allowed=suffix != ".txt")


def _parse(text: str, origin: str, *, json_allowed: bool) -> list[str]:
    problems: list[str] = []
    refusals: list[str] = []
    if json_allowed and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON: {err.msg} (column {err.colno})", path=origin,
                            line=err.lineno) from err
        for index, value in enumerate(values):
            _collect(value, origin, f"element {index}", refusals, problems)
    else:
        # split("\n") keeps physical line numbers exact (splitlines() also breaks on U+2028 etc.).
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if not line:
                continue
            where = f"line {number}"
            if json_allowed and line[0] in "\"{":
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    problems.append(format_problem(origin, where, None,
                                                   f"invalid JSON: {err.msg} (column {err.colno})"))
                    continue
                _collect(value, origin, where, refusals, problems)
            else:
                refusals.append(line)
    if problems:
        raise_problems(origin, problems, what="the refusal templates")
    if not refusals:
        raise DataError("holds no refusal templates (every line is blank)", path=origin)
    return refusals


def _collect(value: Any, origin: str, where: str, refusals: list[str], problems: list[str]) -> None:
    """Append the refusal held by one decoded JSON value, or a problem saying why there is none."""
    if isinstance(value, Mapping):
        field = next((name for name in TEXT_FIELDS if name in value), None)
        if field is None:
            problems.append(format_problem(origin, where, TEXT_FIELDS[0],
                                           f"a JSON object needs a {' or '.join(repr(f) for f in TEXT_FIELDS)} "
                                           "field holding the refusal"))
            return
        value, label = value[field], field
    else:
        label = None
    if isinstance(value, str) and value.strip():
        refusals.append(value.strip())
    else:
        expected = "must be a non-empty string" if label else "expected a non-empty JSON string or an object"
        problems.append(format_problem(origin, where, label, f"{expected}, got {describe_value(value)}"))
