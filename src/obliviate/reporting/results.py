"""Read ``results.json`` records (docs/results.md) and turn them into checked, render-ready views.

:func:`load_results` reads one record from a file or a run folder and validates the fields a report
needs; :func:`validate_results` does the same for a record already in memory, so the renderers never
meet a ``KeyError`` on a hand-built dict. Every problem found is reported at once, in one
:class:`~obliviate.errors.DataError` that names the file and (first) field.

The renderers work on :class:`ModelView` objects built by :func:`model_views`: per set and metric one
:class:`Cell` with its value, direction, availability and reason, so that formatting code never has to
re-interpret the schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.errors import DataError
from obliviate.evaluation.metrics import METRICS as REGISTRY
from obliviate.evaluation.metrics import SIX

SCHEMA_VERSION = 1
"""The ``schema_version`` this module reads."""

RESULTS_FILENAME = "results.json"

SOURCE_KEY = "_source"
"""Key :func:`load_results` adds to a loaded record: the path of the file it came from (for labels and notes)."""

STANDARD_SETS: tuple[str, ...] = ("forget", "retain", "real_authors", "world_facts")
"""The TOFU evaluation sets, in the paper's column order. Other sets found in a record follow them."""

SET_TITLES: dict[str, str] = {
    "forget": "Forget",
    "retain": "Retain",
    "real_authors": "Real authors",
    "world_facts": "World facts",
}

# (key in results.json, short column label, full name), from the metric registry. The short labels are the paper's.
METRICS: tuple[tuple[str, str, str], ...] = tuple((name, REGISTRY[name].short, REGISTRY[name].title) for name in SIX)

# Metrics shown after another one, only for sets where some record has them: (key, short, full, shown after).
EXTRA_METRICS: tuple[tuple[str, str, str, str], ...] = tuple(
    (name, spec.short, spec.title, spec.shown_after) for name, spec in REGISTRY.items() if spec.shown_after)

AGGREGATES: tuple[tuple[str, str, str], ...] = (
    ("model_utility", "MU", "Model utility"),
    ("forget_efficacy", "FE", "Forget efficacy"),
    ("forget_quality", "FQ", "Forget quality"),
)

MAX_LISTED_PROBLEMS = 20
"""How many problems one error message spells out; the rest are counted."""


@dataclass(frozen=True)
class Cell:
    """One metric or aggregate of one model, as the report shows it.

    ``value`` is ``None`` whenever the number is unavailable; ``reason`` then says why (or that the record
    gave no reason). ``partial``/``note``/``missing`` carry an aggregate's partial-computation flag.
    """

    value: float | None
    higher_is_better: bool | None
    reason: str | None = None
    partial: bool = False
    note: str | None = None
    missing: tuple[str, ...] = ()
    recorded: bool = True  # False when the record has no entry at all for this metric
    ci: tuple[float, float] | None = None  # bootstrap confidence interval (settings.confidence_level)
    target: float | None = None            # where neither direction is better: the ideal value
    reference: float | None = None         # the retain model's value, where the record gives it

    @property
    def available(self) -> bool:
        """Whether there is a number to show."""
        return self.value is not None


@dataclass(frozen=True)
class Item:
    """One evaluated question of a set: the texts shown side by side, plus its ROUGE-L when recorded."""

    question: str
    reference: str | None
    generation: str | None
    rouge_l: float | None


@dataclass(frozen=True)
class SetView:
    """One evaluation set of one model."""

    name: str
    kind: str | None
    size: int | None
    rows_available: int | None
    metrics: dict[str, Cell]
    items: tuple[Item, ...]


@dataclass(frozen=True)
class ModelView:
    """One results record, checked and flattened for rendering. ``label`` is unique within a report."""

    label: str
    source: str
    results: Mapping[str, Any]
    sets: dict[str, SetView]
    aggregates: dict[str, Cell]
    other_aggregates: dict[str, Cell] = field(default_factory=dict)
    privacy: dict[str, Cell] = field(default_factory=dict)  # the privacy section's metrics (AUCs, leakage)
    privacy_reason: str | None = None                       # why the record has no privacy metrics


def markdown_cell(text: str) -> str:
    """``text`` made safe for a Markdown table cell or list item: pipes and backslashes escaped, line breaks
    folded, and HTML escaped (``<``, ``>``, ``&``) so a ``<script>`` in a record's text stays text when the
    Markdown is rendered on a web page."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " "))


# --- loading and validation -------------------------------------------------------------------------


def find_results_file(path: str | Path) -> Path:
    """Return the ``results.json`` for ``path``: the file itself, ``<run>/results.json`` or ``<run>/eval/results.json``.

    Raises :class:`DataError` naming ``path`` and the places looked in when none exists.
    """
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        candidates = (p / RESULTS_FILENAME, p / "eval" / RESULTS_FILENAME)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        looked = ", ".join(str(c) for c in candidates)
        raise DataError(f"no {RESULTS_FILENAME} in this folder (looked for {looked}); "
                        "run `obliviate eval` on it first", path=str(p))
    raise DataError("no such file or folder", path=str(p))


def load_results(path: str | Path) -> dict[str, Any]:
    """Load and validate one ``results.json``, given the file or a run folder holding one.

    A folder is searched for ``results.json`` and then ``eval/results.json``. The returned dict is the
    record as written, plus ``"_source"``: the path of the file read, which :func:`label_for` and the
    report's notes use.

    Raises :class:`DataError` naming the file and field when the file is missing, is not JSON, or lacks
    a field the report needs (``schema_version``, ``sets``, ``aggregates`` and their values).
    """
    file = find_results_file(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read: {err}", path=str(file)) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg}, column {err.colno})", path=str(file), line=err.lineno) from err
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object at the top level, found {_json_type(data)}", path=str(file))
    data[SOURCE_KEY] = str(file)
    validate_results(data, str(file))
    return data


def validate_results(results: Any, source: str | None = None) -> None:
    """Check that ``results`` has every field a report reads; raise one :class:`DataError` listing all problems.

    ``source`` names the record in the message (defaults to its ``"_source"``, else ``"results"``).
    Unknown fields are allowed; sets and metrics the report does not know are allowed too.
    """
    where = source or (results.get(SOURCE_KEY) if isinstance(results, dict) else None) or "results"
    problems: list[tuple[str, str]] = []
    if not isinstance(results, dict):
        raise DataError(f"expected a JSON object, found {_json_type(results)}", path=where)

    version = results.get("schema_version")
    if "schema_version" not in results:
        problems.append(("schema_version", "missing; this file does not look like an obliviate results.json"))
    elif not _is_int(version):
        problems.append(("schema_version", f"expected an integer, found {_json_type(version)}"))
    elif version != SCHEMA_VERSION:
        problems.append(("schema_version", f"unsupported version {version} (this obliviate reads {SCHEMA_VERSION})"))

    sets = results.get("sets")
    if "sets" not in results:
        problems.append(("sets", "missing"))
    elif not isinstance(sets, dict):
        problems.append(("sets", f"expected an object, found {_json_type(sets)}"))
    elif not sets:
        problems.append(("sets", "is empty: no evaluation set was recorded"))
    else:
        for name, entry in sets.items():
            _check_set(f"sets.{name}", entry, problems)

    aggregates = results.get("aggregates")
    if "aggregates" not in results:
        problems.append(("aggregates", "missing"))
    elif not isinstance(aggregates, dict):
        problems.append(("aggregates", f"expected an object, found {_json_type(aggregates)}"))
    else:
        for name, entry in aggregates.items():
            _check_value_entry(f"aggregates.{name}", entry, problems, aggregate=True)

    for key in ("run", "model", "settings"):
        if results.get(key) is not None and not isinstance(results[key], dict):
            problems.append((key, f"expected an object, found {_json_type(results[key])}"))

    if results.get("privacy") is not None:
        _check_privacy(results["privacy"], problems)

    if problems:
        raise _problems_error(where, problems)


def _check_set(prefix: str, entry: Any, problems: list[tuple[str, str]]) -> None:
    """Validate one ``sets.<name>`` object: metrics, optional size fields, optional items."""
    if not isinstance(entry, dict):
        problems.append((prefix, f"expected an object, found {_json_type(entry)}"))
        return
    metrics = entry.get("metrics")
    if not isinstance(metrics, dict):
        problems.append((f"{prefix}.metrics", "missing" if metrics is None else
                         f"expected an object, found {_json_type(metrics)}"))
    else:
        for name, metric in metrics.items():
            _check_value_entry(f"{prefix}.metrics.{name}", metric, problems, aggregate=False)
    for key in ("size", "rows_available"):
        value = entry.get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            problems.append((f"{prefix}.{key}", f"expected a non-negative integer or null, found {value!r}"))
    items = entry.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        problems.append((f"{prefix}.items", f"expected a list, found {_json_type(items)}"))
        return
    for i, item in enumerate(items):
        here = f"{prefix}.items[{i}]"
        if not isinstance(item, dict):
            problems.append((here, f"expected an object, found {_json_type(item)}"))
            continue
        if not isinstance(item.get("question"), str):
            problems.append((f"{here}.question", "missing" if item.get("question") is None else
                             f"expected a string, found {_json_type(item.get('question'))}"))
        for key in ("reference", "generation"):
            if item.get(key) is not None and not isinstance(item[key], str):
                problems.append((f"{here}.{key}", f"expected a string or null, found {_json_type(item[key])}"))


def _check_privacy(privacy: Any, problems: list[tuple[str, str]]) -> None:
    """Validate the optional ``privacy`` section: available with metrics, or unavailable with a reason."""
    if not isinstance(privacy, dict):
        problems.append(("privacy", f"expected an object, found {_json_type(privacy)}"))
        return
    if not isinstance(privacy.get("available"), bool):
        problems.append(("privacy.available", "expected true or false"))
        return
    if not privacy["available"]:
        if not isinstance(privacy.get("reason"), str):
            problems.append(("privacy.reason", "an unavailable privacy section says why"))
        return
    metrics = privacy.get("metrics")
    if not isinstance(metrics, dict):
        problems.append(("privacy.metrics", "missing" if metrics is None else
                         f"expected an object, found {_json_type(metrics)}"))
        return
    for name, entry in metrics.items():
        _check_value_entry(f"privacy.metrics.{name}", entry, problems, aggregate=False, targeted=True)
    items = privacy.get("items")
    if items is not None and not (isinstance(items, dict) and all(isinstance(v, list) for v in items.values())):
        problems.append(("privacy.items", "expected an object of lists"))


def _check_value_entry(prefix: str, entry: Any, problems: list[tuple[str, str]], *, aggregate: bool,
                       targeted: bool = False) -> None:
    """Validate a metric or aggregate object: ``value``, ``higher_is_better``, ``available``, ``partial``, and
    the optional ``ci``, ``reference`` and ``target``. ``targeted`` entries (privacy) may have a null
    ``higher_is_better``: neither direction is better, the value closest to ``target`` is."""
    if not isinstance(entry, dict):
        problems.append((prefix, f"expected an object, found {_json_type(entry)}"))
        return
    if "value" not in entry:
        problems.append((f"{prefix}.value", "missing (write null with \"available\": false and a \"reason\")"))
    else:
        value = entry["value"]
        if value is not None and not _is_number(value):
            problems.append((f"{prefix}.value", f"expected a number or null, found {_json_type(value)}"))
        elif value is not None and not math.isfinite(value):
            problems.append((f"{prefix}.value", f"{value} is not a finite number; an uncomputable value is "
                                                "written as null with \"available\": false and a \"reason\""))
        elif value is not None and entry.get("available") is False:
            problems.append((f"{prefix}.available", "is false but \"value\" holds a number"))
    if "higher_is_better" not in entry:
        problems.append((f"{prefix}.higher_is_better", "missing; every metric declares its direction"))
    elif targeted and entry["higher_is_better"] is None:
        pass
    elif not isinstance(entry["higher_is_better"], bool):
        problems.append((f"{prefix}.higher_is_better", f"expected true or false, found {entry['higher_is_better']!r}"))
    ci = entry.get("ci")
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(_is_number(c) and math.isfinite(c)
                                                                           for c in ci) and ci[0] <= ci[1]):
        problems.append((f"{prefix}.ci", f"expected [low, high], two finite numbers with low <= high, found {ci!r}"))
    for key in ("reference", "target"):
        if entry.get(key) is not None and not (_is_number(entry[key]) and math.isfinite(entry[key])):
            problems.append((f"{prefix}.{key}", f"expected a finite number or null, found {entry[key]!r}"))
    for key in ("available", "partial"):
        if entry.get(key) is not None and not isinstance(entry[key], bool):
            problems.append((f"{prefix}.{key}", f"expected true or false, found {entry[key]!r}"))
    for key in ("reason", "note"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            problems.append((f"{prefix}.{key}", f"expected a string, found {_json_type(entry[key])}"))
    if aggregate and entry.get("missing") is not None and not (
            isinstance(entry["missing"], list) and all(isinstance(m, str) for m in entry["missing"])):
        problems.append((f"{prefix}.missing", "expected a list of strings"))


def _problems_error(where: str, problems: Sequence[tuple[str, str]]) -> DataError:
    """One DataError for all problems: the first field goes in ``field``, the rest are listed."""
    if len(problems) == 1:
        field_name, message = problems[0]
        return DataError(message, path=where, field=field_name)
    shown = [f"  - field '{f}': {m}" for f, m in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        shown.append(f"  - … and {len(problems) - MAX_LISTED_PROBLEMS} more")
    err = DataError(f"{len(problems)} problems:\n" + "\n".join(shown), path=where)
    # Callers that inspect ``field`` get the first offending one, as for a single problem.
    err.field = problems[0][0]
    return err


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but JSON true/false is never a count or a version.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- labels and views -------------------------------------------------------------------------------


def label_for(results: Mapping[str, Any]) -> str:
    """A short label for a model: ``run.method``, else the run folder's name, else ``model.spec``.

    The run folder is the folder holding ``results.json`` (or the one above ``eval/``); a file with
    another name is labelled by its stem. Falls back to ``"model"`` when the record names nothing.
    """
    run = results.get("run")
    if isinstance(run, dict) and isinstance(run.get("method"), str) and run["method"].strip():
        return run["method"].strip()
    source = results.get(SOURCE_KEY)
    if isinstance(source, str) and source:
        file = Path(source)
        if file.name != RESULTS_FILENAME:
            return file.stem
        folder = file.parent
        if folder.name == "eval" and folder.parent.name:
            folder = folder.parent
        if folder.name:
            return folder.name
    model = results.get("model")
    if isinstance(model, dict) and isinstance(model.get("spec"), str) and model["spec"].strip():
        return model["spec"].strip()
    return "model"


def unique_labels(results_list: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`label_for` of each record, made unique: repeats get their folder name, else a number.

    Several steps of one continual run share a method name; the folder tells them apart.
    """
    labels = [label_for(r) for r in results_list]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    out: list[str] = []
    for label, results in zip(labels, results_list):
        if counts[label] > 1:
            folder = _folder_label(results)
            if folder and folder != label:
                label = f"{label} ({folder})"
        out.append(label)
    seen: dict[str, int] = {}
    final: list[str] = []
    for label in out:
        seen[label] = seen.get(label, 0) + 1
        final.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return final


def _folder_label(results: Mapping[str, Any]) -> str | None:
    """The run folder's name of a loaded record, or ``None``."""
    source = results.get(SOURCE_KEY)
    if not isinstance(source, str) or not source:
        return None
    folder = Path(source).parent
    if folder.name == "eval" and folder.parent.name:
        folder = folder.parent
    return folder.name or None


def ordered_sets(views: Iterable[ModelView]) -> list[str]:
    """Set names present in any view: the TOFU sets in paper order, then others in order of first appearance."""
    present: list[str] = []
    for view in views:
        for name in view.sets:
            if name not in present:
                present.append(name)
    return [s for s in STANDARD_SETS if s in present] + [s for s in present if s not in STANDARD_SETS]


def set_title(name: str) -> str:
    """Human title of a set name (``real_authors`` → ``Real authors``)."""
    return SET_TITLES.get(name, name.replace("_", " ").capitalize())


def model_views(results_list: Sequence[Mapping[str, Any]]) -> list[ModelView]:
    """Validate every record and build one :class:`ModelView` per record, with unique labels."""
    for i, results in enumerate(results_list):
        validate_results(results, _source_of(results, i))
    labels = unique_labels(results_list)
    return [_view(results, label, _source_of(results, i)) for i, (results, label) in
            enumerate(zip(results_list, labels))]


def _source_of(results: Any, index: int) -> str:
    """The file a record came from, or its position in the list for records built in memory."""
    if isinstance(results, dict) and isinstance(results.get(SOURCE_KEY), str):
        return results[SOURCE_KEY]
    return f"results[{index}]"


def _cell(entry: Mapping[str, Any]) -> Cell:
    value = entry.get("value")
    reason = entry.get("reason")
    if value is None and not reason:
        reason = "no value and no reason recorded"
    ci = entry.get("ci")
    return Cell(
        value=float(value) if value is not None else None,
        higher_is_better=entry.get("higher_is_better"),
        reason=reason if value is None else None,
        partial=bool(entry.get("partial")) and value is not None,
        note=entry.get("note"),
        missing=tuple(entry.get("missing") or ()),
        ci=(float(ci[0]), float(ci[1])) if ci is not None and value is not None else None,
        target=float(entry["target"]) if entry.get("target") is not None else None,
        reference=float(entry["reference"]) if entry.get("reference") is not None else None,
    )


def _view(results: Mapping[str, Any], label: str, source: str) -> ModelView:
    sets: dict[str, SetView] = {}
    for name, entry in results["sets"].items():
        metrics = {key: _cell(metric) for key, metric in entry["metrics"].items()}
        items = tuple(
            Item(question=item["question"], reference=item.get("reference"), generation=item.get("generation"),
                 rouge_l=float(item["rouge_l"]) if _is_number(item.get("rouge_l")) else None)
            for item in entry.get("items") or ()
        )
        sets[name] = SetView(name=name, kind=entry.get("kind"), size=entry.get("size"),
                             rows_available=entry.get("rows_available"), metrics=metrics, items=items)
    known = {key for key, _, _ in AGGREGATES}
    aggregates = {key: _cell(entry) for key, entry in results["aggregates"].items() if key in known}
    others = {key: _cell(entry) for key, entry in results["aggregates"].items() if key not in known}
    privacy = results.get("privacy")
    if isinstance(privacy, dict) and privacy.get("available"):
        privacy_cells, privacy_reason = {key: _cell(e) for key, e in privacy["metrics"].items()}, None
    elif isinstance(privacy, dict):
        privacy_cells, privacy_reason = {}, privacy.get("reason")
    else:
        privacy_cells, privacy_reason = {}, "not evaluated (the record has no privacy section)"
    return ModelView(label=label, source=source, results=results, sets=sets, aggregates=aggregates,
                     other_aggregates=others, privacy=privacy_cells, privacy_reason=privacy_reason)


def missing_cell(higher_is_better: bool | None, what: str) -> Cell:
    """The cell shown where a record has no entry at all for a metric or aggregate."""
    return Cell(value=None, higher_is_better=higher_is_better, reason=f"{what} not recorded in results.json",
                recorded=False)


def default_direction(set_name: str | None, metric: str) -> bool:
    """The direction docs/results.md prescribes, used only when no record states one.

    On the forget set lower is better for everything except token entropy and TOFU's truth ratio; everywhere
    else higher is better.
    """
    if set_name == "forget" and metric not in ("token_entropy", "truth_ratio_tofu"):
        return False
    return True
