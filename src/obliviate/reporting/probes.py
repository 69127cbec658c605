"""The "Robustness probes" part of a report: ``results.json``'s ``probes`` section (docs/robustness.md).

One table per probe and per model that has it: a row per measured model (the unlearned model, the probed
variants, then the target and retain anchors), columns for the forget-side metrics of each measured set, and the
share of the forgotten knowledge that came back (``recovery``). Both renderings are empty strings when no record
has probes, so other reports are unchanged. Uses the report's own table classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from obliviate.reporting.render import render
from obliviate.reporting.results import ModelView, markdown_cell

KEY = "probes"
TITLES = {"relearn": "Relearning", "paraphrase": "Paraphrased questions", "quantization": "Quantisation"}
SHOWN = ("rouge_l", "probability", "truth_ratio", "rouge_l_f1", "accuracy")
"""The metrics a probe table shows (every one is in results.json): the QA suite's, MUSE's and WMDP's headline."""
LABELS = {"rouge_l": "ROUGE-L", "probability": "Prob", "truth_ratio": "TR", "rouge_l_f1": "ROUGE-L F1",
          "accuracy": "Acc"}
NOT_AVAILABLE = "n/a"
UP, DOWN = "↑", "↓"


def _sections(views: Sequence[ModelView]) -> list[tuple[ModelView, str, Mapping[str, Any]]]:
    out = []
    for view in views:
        probes = view.results.get(KEY)
        if not isinstance(probes, Mapping):
            continue
        for name in TITLES:
            section = probes.get(name)
            if isinstance(section, Mapping) and isinstance(section.get("rows"), list) and section["rows"]:
                out.append((view, name, section))
    return out


def _columns(section: Mapping[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(set, metric, higher_is_better) for each shown metric of each measured set, in first-seen order."""
    cols: dict[tuple[str, str], bool | None] = {}
    for row in section["rows"]:
        for set_name, metrics in (row.get("sets") or {}).items():
            if not isinstance(metrics, Mapping):
                continue
            for metric in SHOWN:
                entry = metrics.get(metric)
                if isinstance(entry, Mapping) and cols.get((set_name, metric)) is None:
                    cols[(set_name, metric)] = entry.get("higher_is_better")
    return [(s, m, h) for (s, m), h in cols.items()]


def _value(row: Mapping[str, Any], set_name: str, metric: str) -> float | None:
    entry = ((row.get("sets") or {}).get(set_name) or {}).get(metric)
    value = entry.get("value") if isinstance(entry, Mapping) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.3f}"


def _recovery(section: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    rec = (section.get("recovery") or {}).get(row.get("label"))
    if not isinstance(rec, Mapping):
        return ""
    parts = []
    for set_name, metrics in rec.items():
        if not isinstance(metrics, Mapping):
            continue
        prefix = "" if len(rec) == 1 else f"{set_name} "
        parts += [f"{prefix}{LABELS[m]} {metrics[m]:+.0%}" for m in SHOWN if isinstance(metrics.get(m), (int, float))]
    return ", ".join(parts)


def _caption(name: str, section: Mapping[str, Any]) -> str:
    s = section.get("settings") or {}
    if name == "relearn":
        text = (f"{s.get('steps')} steps at learning rate {s.get('learning_rate')} on {s.get('relearn_rows')} forget "
                f"rows; control: {s.get('control_data')}; measured on the other {s.get('measured_rows')} forget rows.")
    elif name == "quantization":
        text = f"Weights rounded to {', '.join(f'{b}-bit' for b in s.get('bits') or [])} ({s.get('backend')})."
    else:
        text = f"Question variants: {', '.join(s.get('variants') or [])}."
    missing = section.get("anchors_unavailable") or {}
    if missing:
        text += " " + " ".join(f"No {role} anchor: {why}." for role, why in missing.items())
    if section.get("recovery") is not None:
        text += (" Recovered = (probe − unlearned) / (target − unlearned) on the forget-side sets: 0 % nothing "
                 "came back, 100 % back to the target model.")
    return text


def probes_html(views: Sequence[ModelView]) -> str:
    """The "Robustness probes" HTML section, or ``""`` when no record has probes."""
    found = _sections(views)
    if not found:
        return ""
    tables = []
    for view, name, section in found:
        cols = _columns(section)
        has_recovery = section.get("recovery") is not None
        rows = [{"label": row.get("label"), "anchor": row.get("role") == "anchor",
                 "cells": [_fmt(_value(row, s, m)) for s, m, _ in cols],
                 "recovery": _recovery(section, row) if has_recovery else ""} for row in section["rows"]]
        tables.append({"title": TITLES[name], "model": view.label, "has_recovery": has_recovery, "rows": rows,
                       "cols": [(s, m, UP if h else DOWN) for s, m, h in cols], "caption": _caption(name, section)})
    return render("probes.html", tables=tables, labels=LABELS)


def probes_markdown(views: Sequence[ModelView]) -> str:
    """The same tables in Markdown, or ``""`` when no record has probes."""
    found = _sections(views)
    if not found:
        return ""
    lines = ["", "### Robustness probes"]
    for view, name, section in found:
        cols = _columns(section)
        has_recovery = section.get("recovery") is not None
        header = ["model"] + [f"{s} {LABELS[m]} {UP if h else DOWN}" for s, m, h in cols] + \
            (["recovered"] if has_recovery else [])
        lines += ["", f"**{TITLES[name]} — {markdown_cell(view.label)}**", "",
                  "| " + " | ".join(markdown_cell(h) for h in header) + " |",
                  "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
        for row in section["rows"]:
            label = str(row.get("label")) + (" (anchor)" if row.get("role") == "anchor" else "")
            cells = [markdown_cell(label)] + [_fmt(_value(row, s, m)) for s, m, _ in cols]
            if has_recovery:
                cells.append(markdown_cell(_recovery(section, row)))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", markdown_cell(_caption(name, section))]
    return "\n".join(lines) + "\n"
