"""The "General ability" part of a report: lm-eval task scores stored under ``results.json``'s
``"general_ability"`` key (docs/general_ability.md), as a Markdown table and an HTML section.

Both renderings show one row per model and one column per top-level task × metric, with the standard
error lm-eval reports and the metric's direction; they are empty strings when no record carries the key,
so reports of runs without it are unchanged. This module reads only the record, never lm-eval, so reports
work without the ``lm-eval`` extra.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.errors import DataError
from obliviate.reporting.render import render
from obliviate.reporting.results import SOURCE_KEY, ModelView, markdown_cell

KEY = "general_ability"
"""Top-level key of ``results.json`` holding the record (``obliviate.evaluation.general.RESULTS_KEY``)."""

NOT_AVAILABLE = "n/a"
UP, DOWN = "↑", "↓"


# --- validation -------------------------------------------------------------------------------------


def validate_general_ability(record: Any, where: str) -> None:
    """Check the fields the report reads; every problem at once, in one DataError naming ``where``."""
    problems: list[str] = []
    if not isinstance(record, Mapping):
        raise DataError(f"'{KEY}': expected an object, found {type(record).__name__}", path=where)
    tasks = record.get("tasks")
    if not isinstance(tasks, Mapping):
        problems.append("tasks: expected an object of task entries")
        tasks = {}
    top = record.get("top_level")
    if not isinstance(top, list) or not all(isinstance(t, str) for t in top):
        problems.append("top_level: expected a list of task names")
    else:
        problems += [f"top_level: '{t}' has no entry in tasks" for t in top if t not in tasks]
    for name, task in tasks.items():
        here = f"tasks.{name}"
        if not isinstance(task, Mapping) or not isinstance(task.get("metrics"), Mapping):
            problems.append(f"{here}.metrics: expected an object")
            continue
        n = task.get("n_samples")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            problems.append(f"{here}.n_samples: expected a non-negative integer, found {n!r}")
        for metric, entry in task["metrics"].items():
            at = f"{here}.metrics.{metric}"
            if not isinstance(entry, Mapping):
                problems.append(f"{at}: expected an object")
                continue
            for field in ("value", "stderr"):
                value = entry.get(field)
                if value is not None and not _finite(value):
                    problems.append(f"{at}.{field}: expected a finite number or null, found {value!r}")
            if entry.get("higher_is_better") not in (True, False, None):
                problems.append(f"{at}.higher_is_better: expected true, false or null")
    if problems:
        listed = "\n".join(f"  - {KEY}.{p}" for p in problems[:20])
        more = f"\n  - … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in '{KEY}':\n{listed}{more}",
                        path=where)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- the table model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneralColumn:
    """One column: a top-level task's metric, with the direction the first record stating one gives."""

    task: str
    metric: str
    higher_is_better: bool | None

    @property
    def header(self) -> str:
        arrow = {True: f" {UP}", False: f" {DOWN}"}.get(self.higher_is_better, "")
        return f"{self.task} {self.metric}{arrow}"


def _records(views: Sequence[ModelView]) -> list[tuple[ModelView, Mapping[str, Any]]]:
    """(view, validated general-ability record) for every model that has one."""
    out = []
    for view in views:
        record = view.results.get(KEY)
        if record is None:
            continue
        validate_general_ability(record, str(view.results.get(SOURCE_KEY) or view.source))
        out.append((view, record))
    return out


def general_columns(records: Sequence[tuple[ModelView, Mapping[str, Any]]]) -> list[GeneralColumn]:
    """Top-level task × metric columns over all records, in order of first appearance."""
    seen: dict[tuple[str, str], bool | None] = {}
    for _, record in records:
        for task in record["top_level"]:
            for metric, entry in record["tasks"][task]["metrics"].items():
                if seen.get((task, metric)) is None:
                    seen[(task, metric)] = entry.get("higher_is_better")
    return [GeneralColumn(task, metric, hib) for (task, metric), hib in seen.items()]


def _entry(record: Mapping[str, Any], column: GeneralColumn) -> Mapping[str, Any] | None:
    task = record["tasks"].get(column.task) if column.task in record["top_level"] else None
    return task["metrics"].get(column.metric) if task else None


def format_entry(entry: Mapping[str, Any] | None) -> str:
    """``0.412 ± 0.021``, ``0.412`` without a standard error, ``n/a`` without a value."""
    if entry is None or entry.get("value") is None:
        return NOT_AVAILABLE
    stderr = entry.get("stderr")
    return f"{entry['value']:.3f}" + (f" ± {stderr:.3f}" if stderr is not None else "")


def _best(records: Sequence[tuple[ModelView, Mapping[str, Any]]], column: GeneralColumn) -> set[str]:
    """Labels holding the best value of a column (ties at 3 decimals all count); none under two values."""
    if column.higher_is_better is None:
        return set()
    values = {view.label: e["value"] for view, r in records
              if (e := _entry(r, column)) is not None and e.get("value") is not None}
    if len(values) < 2:
        return set()
    best = f"{(max if column.higher_is_better else min)(values.values()):.3f}"
    return {label for label, v in values.items() if f"{v:.3f}" == best}


def _setting_notes(records: Sequence[tuple[ModelView, Mapping[str, Any]]]) -> list[str]:
    """One plain-text line per model: lm-eval version, shots, limit, documents scored per task."""
    lines = []
    for view, record in records:
        shots = record.get("num_fewshot")
        limit = record.get("limit")
        counts = ", ".join(f"{t} {record['tasks'][t].get('n_samples', '?')}" for t in record["top_level"])
        lines.append(f"{view.label}: lm-eval {record.get('lm_eval_version', '?')}, "
                     f"{'each task’s default' if shots is None else shots} shots, "
                     f"{'all documents' if limit is None else f'first {limit} documents per task'}; "
                     f"documents scored: {counts or 'none'}")
    return lines


def _limited(records: Sequence[tuple[ModelView, Mapping[str, Any]]]) -> bool:
    return any(record.get("limit") is not None for _, record in records)


_LIMIT_NOTE = ("Scored on a limited number of documents per task: these numbers are not comparable with "
               "published ones.")


# --- Markdown ---------------------------------------------------------------------------------------


def general_markdown(views: Sequence[ModelView]) -> str:
    """The "General ability" Markdown table and its notes, or ``""`` when no record has the section."""
    records = _records(views)
    if not records:
        return ""
    cols = general_columns(records)
    lines = ["", "### General ability", "",
             "| " + " | ".join(["model"] + [markdown_cell(c.header) for c in cols]) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(cols)) + "|"]
    for view, record in records:
        cells = [markdown_cell(view.label)] + [format_entry(_entry(record, c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"lm-evaluation-harness tasks; value ± standard error. {UP} higher is better, {DOWN} lower is "
                  "better. A metric name with a comma is lm-eval's metric,filter (e.g. GSM8K's answer extraction)."]
    if _limited(records):
        lines += ["", _LIMIT_NOTE]
    lines += [""] + [f"- {markdown_cell(line)}" for line in _setting_notes(records)]
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------------------


def general_html(views: Sequence[ModelView]) -> str:
    """The "General ability" section of the HTML report, or ``""`` when no record has one.

    Uses the report's own table classes, so it needs no style of its own.
    """
    records = _records(views)
    if not records:
        return ""
    cols = general_columns(records)
    heads = [{"task": c.task, "metric": c.metric,
              "arrow": None if c.higher_is_better is None else UP if c.higher_is_better else DOWN} for c in cols]
    best = {(c.task, c.metric): _best(records, c) for c in cols}
    rows = []
    for view, record in records:
        cells: list[dict[str, Any]] = []
        for c in cols:
            entry = _entry(record, c)
            if entry is None or entry.get("value") is None:
                cells.append({"na": True, "reason": (entry or {}).get("reason") or "not recorded for this model"})
            else:
                cells.append({"na": False, "best": view.label in best[(c.task, c.metric)],
                              "text": format_entry(entry)})
        rows.append({"label": view.label, "cells": cells})
    notes = [f"lm-evaluation-harness tasks; value ± standard error; {UP} higher is better, {DOWN} lower is better; "
             "the best value of each column is highlighted. A metric name with a comma is lm-eval's metric,filter."]
    if _limited(records):
        notes.append(_LIMIT_NOTE)
    return render("general.html", cols=heads, rows=rows, notes=notes, settings=_setting_notes(records),
                  na=NOT_AVAILABLE)
