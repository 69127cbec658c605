"""Raw-text training data: load documents, tell them apart from question–answer files, cut them into chunks.

MUSE (Shi et al., 2024, arXiv 2407.06460) and WMDP (Li et al., 2024, arXiv 2403.03218) unlearn *text* — news
articles, book chapters, papers — not question–answer pairs. A text set is read with :func:`load_texts`:

========================  ====================================================================================
``name.txt``              the whole file is one document (MUSE's ``raw/forget.txt``)
``name.json``/``.jsonl``  JSON lines or one JSON array; each row is a string or an object with a non-empty
                          ``text`` field (MUSE's ``privleak/*.json``, WMDP's corpora); other fields are ignored
``owner/name:config``     a Hugging Face hub dataset's ``text`` column, split ``train``;
``owner/name:config:split``  the same with a split, e.g. ``muse-bench/MUSE-News:raw:forget``
========================  ====================================================================================

:func:`encode_texts` turns documents into training examples: each document is tokenised, a document longer
than ``max_length`` tokens is cut into consecutive chunks of ``max_length`` tokens (the tokenizer's own
leading special token, if it adds one, starts every chunk, as in MUSE's released code), and every token is
labelled — the objectives then see a text chunk exactly as they see a question–answer pair with every token
labelled. Unlike MUSE's code, a short last chunk is kept as it is (batches are padded dynamically) rather than
filled up with tokens from the start of the corpus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.data.formatting import EncodedExample
from obliviate.data.loading import (
    MAX_LISTED_PROBLEMS,
    QA_SUFFIXES,
    decode_utf8,
    describe_value,
    format_problem,
    load_qa,
    looks_like_hub_id,
    raise_problems,
)
from obliviate.data.records import QARecord, TextRecord
from obliviate.errors import DataError, ObliviateError

__all__ = ["FORMATS", "TEXT_SUFFIX", "detect_format", "encode_texts", "load_set", "load_texts", "parse_hub_spec",
           "record_key"]

FORMATS: tuple[str, ...] = ("auto", "qa", "text")
"""``data.format``: ``qa`` (question–answer rows), ``text`` (raw documents) or ``auto`` (:func:`detect_format`)."""

TEXT_SUFFIX = ".txt"


def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """``owner/name[:config[:split]]`` → (hub id, config or None, split, default ``train``)."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise DataError("expected a hub dataset as owner/name, owner/name:config or owner/name:config:split",
                        path=spec)
    hub_id = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return hub_id, config, split


def _local(source: str | Path) -> Path | None:
    path = Path(source).expanduser()
    return path if path.exists() else None


def detect_format(source: str | Path) -> str:
    """``text`` or ``qa`` for a data source, without validating it.

    A ``.txt`` file is text. A JSON(-lines) file is text when its first row is a string, or an object with
    ``text`` and no ``question``. A hub dataset (no local file of that name) is taken as question–answer data:
    name ``data.format: text`` for a hub text corpus.
    """
    path = _local(source)
    if path is None or path.is_dir():
        return "qa"
    if path.suffix.lower() == TEXT_SUFFIX:
        return "text"
    try:
        head = path.read_bytes()[: 1 << 20].decode("utf-8-sig", errors="replace").lstrip()
    except OSError:
        return "qa"
    first: Any = None
    if head.startswith("["):
        try:
            values = json.loads(path.read_text(encoding="utf-8-sig"))
            first = values[0] if isinstance(values, list) and values else None
        except (OSError, ValueError):
            return "qa"
    else:
        line = head.split("\n", 1)[0]
        try:
            first = json.loads(line)
        except ValueError:
            return "qa"
    if isinstance(first, str):
        return "text"
    if isinstance(first, Mapping) and "text" in first and "question" not in first:
        return "text"
    return "qa"


def load_set(spec: str, limit: int | None = None, data_format: str = "qa") -> list[QARecord] | list[TextRecord]:
    """The rows a config's data section names: a QA file, or a hub dataset written ``owner/name:config``; with
    ``data_format`` text or auto, raw text (a ``.txt`` file, JSON rows of texts, or ``owner/name:config:split``;
    docs/muse_wmdp.md)."""
    if data_format == "text" or (data_format == "auto" and detect_format(spec) == "text"):
        return load_texts(spec, limit=limit)
    if not Path(spec).expanduser().exists() and ":" in spec:
        hub_id, _, hub_config = spec.rpartition(":")
        return load_qa(hub_id, hub_config=hub_config, limit=limit)
    return load_qa(spec, limit=limit)


def load_texts(source: str | Path, *, limit: int | None = None) -> list[TextRecord]:
    """Documents from a ``.txt`` / JSON / JSON-lines file or a hub dataset (module docstring), validated.

    Every bad row is reported at once, by file, line (or element) and field, in one :class:`DataError`.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer, got {limit!r}", path=str(source))
    path = _local(source)
    if path is not None:
        if path.is_dir():
            raise DataError("is a folder, not a text file: pass a .txt, .json or .jsonl file", path=str(source))
        suffix = path.suffix.lower()
        if suffix not in QA_SUFFIXES + (TEXT_SUFFIX,):
            raise DataError(f"unsupported file type '{path.suffix or '(none)'}': text data must be a .txt file or "
                            f"a .json/.jsonl file of strings or objects with 'text'", path=str(source))
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(f"cannot be read: {err.strerror or err}", path=str(source)) from err
        text = decode_utf8(data, str(source))
        if suffix == TEXT_SUFFIX:
            if not text.strip():
                raise DataError("the file is empty; expected text to train on", path=str(source))
            return [TextRecord(text, f"{source}")]
        return _parse_rows(_json_rows(text, str(source)), str(source), limit)
    spec = str(source)
    hub_id = spec.split(":", 1)[0]
    if looks_like_hub_id(hub_id):
        return _parse_rows(_hub_rows(spec), spec, limit)
    raise DataError("file not found", path=spec)


def _json_rows(text: str, origin: str) -> list[tuple[Any, str, str]]:
    """(value, where, source) per row of a JSON array or JSON-lines text; invalid JSON lines as problems."""
    stripped = text.lstrip()
    if not stripped:
        raise DataError("the file is empty; expected JSON lines or a JSON array of texts", path=origin)
    if stripped[0] == "[":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON: {err.msg} (column {err.colno}); the file starts with '[', so it is "
                            f"read as one JSON array", path=origin, line=err.lineno) from err
        return [(v, f"element {i}", f"{origin}:element {i}") for i, v in enumerate(values)]
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((json.loads(line), f"line {number}", f"{origin}:{number}"))
        except json.JSONDecodeError as err:
            rows.append((_BadJSON(f"invalid JSON: {err.msg} (column {err.colno})"), f"line {number}", ""))
    return rows


class _BadJSON:
    def __init__(self, message: str):
        self.message = message


def _hub_rows(spec: str) -> list[tuple[Any, str, str]]:
    # Deferred: datasets is heavy and only the hub path needs it.
    import datasets

    hub_id, config, split = parse_hub_spec(spec)
    origin = f"{hub_id}[{config}/{split}]" if config else f"{hub_id}[{split}]"
    hint = (f"No local file named '{spec}' exists, so it was read as a Hugging Face hub dataset. To work "
            "offline, download the data and pass a local file.")
    try:
        dataset = datasets.load_dataset(hub_id, config, split=split)
    except datasets.exceptions.DatasetNotFoundError as err:
        raise ObliviateError(f"dataset {origin} was not found on the Hugging Face hub, or the hub could not be "
                             f"reached ({err}). {hint}") from err
    except OSError as err:
        raise ObliviateError(f"the Hugging Face hub could not be reached to load {origin} ({err}). {hint}") from err
    except ValueError as err:
        raise ObliviateError(f"cannot load {origin} from the Hugging Face hub: {err}") from err
    return [(row, f"row {i}", f"{origin}:row {i}") for i, row in enumerate(dataset)]


def _parse_rows(rows: Sequence[tuple[Any, str, str]], origin: str, limit: int | None) -> list[TextRecord]:
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DataError("holds no rows; expected strings or objects with 'text'", path=origin)
    problems: list[str] = []
    out: list[TextRecord] = []
    for value, where, source in rows:
        if isinstance(value, _BadJSON):
            problems.append(format_problem(origin, where, None, value.message))
            continue
        if isinstance(value, Mapping):
            item, field = value.get("text"), "text"
        else:
            item, field = value, None
        if isinstance(item, str) and item.strip():
            out.append(TextRecord(item, source))
        elif field and item is None:
            problems.append(format_problem(origin, where, field, "required field is missing (a text row is a "
                                                                 "string or an object with 'text')"))
        else:
            what = "must be a non-empty string" if field else "expected a string or an object with 'text'"
            problems.append(format_problem(origin, where, field, f"{what}, got {describe_value(item)}"))
        if len(problems) > MAX_LISTED_PROBLEMS * 50:
            break
    if problems:
        raise_problems(origin, problems, what="text data")
    return out


def _leading_specials(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before any text by default (BOS for Llama; none for SmolLM2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    if len(full) > len(plain) and full[len(full) - len(plain):] == plain:
        return list(full[: len(full) - len(plain)])
    return []


def encode_texts(tokenizer, records: Iterable[TextRecord], max_length: int) -> list[EncodedExample]:
    """Each document's tokens cut into chunks of at most ``max_length`` tokens, every token labelled.

    The tokenizer's leading special tokens (if any) start each chunk. Documents are never joined: a chunk holds
    text of one document only. Raises :class:`~obliviate.errors.ObliviateError` when ``max_length`` leaves no
    room for text or a document has no tokens.
    """
    head = _leading_specials(tokenizer)
    room = max_length - len(head)
    if room < 2:
        raise ObliviateError(f"model.max_length {max_length} leaves no room for text after {len(head)} special "
                             f"token(s); raise it")
    out: list[EncodedExample] = []
    for record in records:
        # A document is longer than the model's context by design (it is cut below): no length warning.
        ids = tokenizer(record.text, add_special_tokens=False, verbose=False)["input_ids"]
        if not ids:
            raise DataError("the text has no tokens", path=record.source)
        for start in range(0, len(ids), room):
            chunk = head + list(ids[start:start + room])
            if len(chunk) < 2:  # one token predicts nothing
                continue
            out.append(EncodedExample(input_ids=chunk, labels=list(chunk), full_labels=list(chunk), prompt_length=0))
    return out


def record_key(record: QARecord | TextRecord) -> str:
    """What identifies a training row when sets are compared: the question, or a text's own text."""
    return record.text if isinstance(record, TextRecord) else record.question
