"""The compact summary: per model the six numbers a reader looks at first, narrow enough for a terminal.

Per model: forget ROUGE-L, forget truth ratio, retain ROUGE-L (the neighbour set's in the real-world scenario),
MU, FE and FQ, each with its direction arrow and the partial mark of the full table (and the one number of each
MUSE or WMDP set), then the lm-eval "General ability" table when a record has one. ``obliviate report``, ``obliviate sweep`` and ``obliviate demo`` print it
and point to the full table (Markdown and HTML); the model card of a saved model reports the same numbers. Cells
come from the full table's :func:`columns` and :func:`cell_for`, so the two never disagree.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.reporting.general import general_markdown
from obliviate.reporting.results import ModelView, markdown_cell, model_views, ordered_sets
from obliviate.reporting.table import (
    DOWN,
    NOT_AVAILABLE,
    OWN_METRICS,
    PARTIAL_MARK,
    UP,
    Column,
    cell_for,
    columns,
    format_cell,
)

# (set, metric) of the summary columns, in order; "retain" stands for the retain-kind set (see retain_set).
SUMMARY_KEYS: tuple[tuple[str | None, str], ...] = (
    ("forget", "rouge_l"),
    ("forget", "truth_ratio"),
    ("retain", "rouge_l"),
    (None, "model_utility"),
    (None, "forget_efficacy"),
    (None, "forget_quality"),
)

LEGEND = (f"{UP} higher is better, {DOWN} lower is better. TR = truth ratio, 1 − mean(min(x, 1/x)) on the forget "
          f"set; MU = model utility, FE = forget efficacy, FQ = forget quality. {PARTIAL_MARK} partial aggregate, "
          f"{NOT_AVAILABLE} not available: the full table's notes say why.")


def retain_set(views: Sequence[ModelView]) -> str | None:
    """The set the summary's retain column shows: ``retain`` when a record has it, else the first set of kind
    retain (the real-world scenario's ``neighbor``), else None."""
    names = ordered_sets(views)
    if "retain" in names:
        return "retain"
    for name in names:
        if any(name in v.sets and v.sets[name].kind == "retain" for v in views):
            return name
    return None


def summary_columns(views: Sequence[ModelView]) -> list[Column]:
    """The summary's columns, taken from the full table's; those no record can fill are left out."""
    by_key = {c.key: c for c in columns(views)}
    retain = retain_set(views)
    out = []
    for set_name, metric in SUMMARY_KEYS:
        if set_name == "retain":
            set_name = retain
            if set_name is None:
                continue
        key = f"{set_name}.{metric}" if set_name else metric
        if key in by_key:
            out.append(by_key[key])
    # Sets measured by their own metric (MUSE's ROUGE-L F1, WMDP's accuracy) have one number each: all shown.
    out += [c for c in by_key.values() if c.metric in OWN_METRICS]
    return out


def _header(column: Column) -> str:
    return f"{column.set_name + ' ' if column.set_name else ''}{column.short} {column.arrow}"


def summary_table(results_list: Sequence[Mapping[str, Any]]) -> str:
    """The compact table in Markdown, its columns padded so that it also reads as plain text, then the legend."""
    views = model_views(results_list)
    cols = summary_columns(views)
    header = ["model"] + [_header(c) for c in cols]
    rows = [[markdown_cell(view.label)] + [format_cell(cell_for(view, c), c.metric) for c in cols] for view in views]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join([":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    # The lm-eval "General ability" table (one column per task and metric) follows when a record has one.
    return ("\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n\n" + textwrap.fill(LEGEND, 100) + "\n"
            + general_markdown(views))


def full_table_hint(markdown: str | Path, html: str | Path) -> str:
    """Where the full table is, for the line printed under the summary."""
    return (f"Full table (every set × metric, with notes): {markdown}\nHTML report: {html}\n"
            f"(--full prints the full table here)")


def summary_metrics(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record's summary numbers: ``key`` (``forget.rouge_l``, ``model_utility``, …), ``name`` (the column
    header without its arrow), ``value`` (None when unavailable), ``higher_is_better`` and ``partial``."""
    [view] = model_views([results])
    out = []
    for column in summary_columns([view]):
        cell = cell_for(view, column)
        out.append({"key": column.key, "name": _header(column)[:-2], "value": cell.value,
                    "higher_is_better": column.higher_is_better, "partial": cell.partial})
    return out
