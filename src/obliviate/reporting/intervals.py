"""Uncertainty in a report: the bootstrap intervals of the headline numbers, which models' intervals overlap, and
mean ± standard deviation over runs that differ only in their seed (docs/reports.md).

* **Intervals** — MU, FE, FQ and the privacy leakage of every model with the 95 % bootstrap interval the record
  stores beside each value (docs/metrics.md, Confidence intervals).
* **Overlap** — for each of those numbers, which pairs of models have overlapping intervals (the difference
  between them is within what resampling the questions moves a number by) and which do not.
* **Across seeds** — records that differ only in seeds (the run's config and the evaluation settings agree once
  every ``seed``, the output folder and the retain reference are set aside) form a group; the group's mean and
  sample standard deviation of each number are shown when it has at least two members.

All are empty strings when there is nothing to show (no intervals recorded, no group of seeds), so reports of
older records are unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from obliviate.reporting.render import render
from obliviate.reporting.results import Cell, ModelView, label_for

NOT_AVAILABLE = "n/a"


@dataclass(frozen=True)
class Headline:
    """A number the uncertainty tables show: an aggregate, a set metric or a privacy metric."""

    short: str
    full: str
    where: str   # "aggregate", "privacy" or a set name
    key: str

    def cell(self, view: ModelView) -> Cell | None:
        if self.where == "aggregate":
            return view.aggregates.get(self.key) or view.other_aggregates.get(self.key)
        if self.where == "privacy":
            return view.privacy.get(self.key)
        set_view = view.sets.get(self.where)
        return set_view.metrics.get(self.key) if set_view is not None else None

    def fmt(self, value: float | None) -> str:
        if value is None:
            return NOT_AVAILABLE
        if self.key == "privacy_leakage":
            return f"{value:+.1f}%"
        if self.key == "forget_quality" and 0 < abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.3f}"


HEADLINES: tuple[Headline, ...] = (
    Headline("MU", "Model utility", "aggregate", "model_utility"),
    Headline("FE", "Forget efficacy", "aggregate", "forget_efficacy"),
    Headline("FQ", "Forget quality", "aggregate", "forget_quality"),
    Headline("PrivLeak", "Privacy leakage", "privacy", "privacy_leakage"),
)
SEED_HEADLINES: tuple[Headline, ...] = HEADLINES + (
    Headline("Forget EM", "Exact memorisation, forget set", "forget", "exact_memorization"),
    Headline("Forget Extr.", "Extraction strength, forget set", "forget", "extraction_strength"),
)


def _with_intervals(views: Sequence[ModelView], headline: Headline) -> list[tuple[ModelView, Cell]]:
    out = []
    for view in views:
        cell = headline.cell(view)
        if cell is not None and cell.value is not None and cell.ci is not None:
            out.append((view, cell))
    return out


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


Pairs = list[tuple[str, str]]


def overlap_statements(views: Sequence[ModelView]) -> list[tuple[Headline, Pairs, Pairs]]:
    """Per headline with intervals for two models or more: (headline, overlapping pairs, separate pairs)."""
    out = []
    for headline in HEADLINES:
        rows = _with_intervals(views, headline)
        if len(rows) < 2:
            continue
        same, apart = [], []
        for (va, ca), (vb, cb) in combinations(rows, 2):
            (same if overlaps(ca.ci, cb.ci) else apart).append((va.label, vb.label))
        out.append((headline, same, apart))
    return out


# --- seeds ------------------------------------------------------------------------------------------

_SEED_FREE = {"seed", "output_dir", "overwrite", "retain_results", "retain_model", "git_commit"}


def _strip(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip(v) for k, v in value.items() if k not in _SEED_FREE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def seed_key(results: Mapping[str, Any]) -> str:
    """What two records must share to differ only in seed: method, run config and evaluation settings, benchmark,
    and — for a model evaluated without a run config — the model itself."""
    run = results.get("run") if isinstance(results.get("run"), Mapping) else {}
    model = results.get("model") if isinstance(results.get("model"), Mapping) else {}
    key = {"method": run.get("method"), "kind": run.get("kind"), "config": _strip(run.get("config")),
           "benchmark": _strip(results.get("benchmark")), "settings": _strip(results.get("settings")),
           "template": model.get("template"), "model": None if run.get("config") else model.get("spec")}
    return json.dumps(key, sort_keys=True, default=str)


def _seed_of(results: Mapping[str, Any]) -> Any:
    run = results.get("run") if isinstance(results.get("run"), Mapping) else {}
    config = run.get("config") if isinstance(run.get("config"), Mapping) else {}
    train = config.get("train") if isinstance(config.get("train"), Mapping) else {}
    return train.get("seed", results.get("seed"))


@dataclass(frozen=True)
class SeedGroup:
    """Records that differ only in seed: a label, the seeds, and the views."""

    label: str
    seeds: tuple[Any, ...]
    views: tuple[ModelView, ...]


def seed_groups(views: Sequence[ModelView]) -> list[SeedGroup]:
    """Groups of two or more records that differ only in seed, in order of first appearance."""
    groups: dict[str, list[ModelView]] = {}
    for view in views:
        groups.setdefault(seed_key(view.results), []).append(view)
    out = []
    for members in groups.values():
        seeds = tuple(_seed_of(v.results) for v in members)
        if len(members) >= 2 and len(set(map(str, seeds))) == len(members):
            out.append(SeedGroup(label_for(members[0].results), seeds, tuple(members)))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1 in the denominator) of two or more values."""
    if len(values) < 2:
        raise ValueError("mean ± standard deviation needs at least two values")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def group_summary(group: SeedGroup, headline: Headline) -> str:
    """``0.412 ± 0.013`` over the group's members that have the number; ``n/a`` with fewer than two."""
    values = [c.value for v in group.views if (c := headline.cell(v)) is not None and c.value is not None]
    if len(values) < 2:
        return NOT_AVAILABLE
    mean, std = mean_std(values)
    text = f"{headline.fmt(mean)} ± {headline.fmt(std).lstrip('+')}"
    return text if len(values) == len(group.views) else f"{text} (n={len(values)})"


# --- Markdown ---------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _pairs(pairs: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{a} – {b}" for a, b in pairs) or "none"


def intervals_markdown(views: Sequence[ModelView]) -> str:
    """The intervals table, the overlap statements and the across-seeds table; ``""`` when none applies."""
    lines: list[str] = []
    heads = [h for h in HEADLINES if _with_intervals(views, h)]
    if heads:
        lines += ["", "### 95 % confidence intervals", "",
                  "| " + " | ".join(["model"] + [h.short for h in heads]) + " |",
                  "|" + "|".join([":---"] + ["---:"] * len(heads)) + "|"]
        for view in views:
            cells = []
            for h in heads:
                cell = h.cell(view)
                if cell is None or cell.value is None:
                    cells.append(NOT_AVAILABLE)
                elif cell.ci is None:
                    cells.append(h.fmt(cell.value))
                else:
                    cells.append(f"{h.fmt(cell.value)} [{h.fmt(cell.ci[0])}, {h.fmt(cell.ci[1])}]")
            lines.append("| " + " | ".join([_md(view.label)] + cells) + " |")
        lines += ["", "Bootstrap percentile intervals over the evaluated questions (docs/metrics.md)."]
        statements = overlap_statements(views)
        if statements:
            lines += ["", "Overlapping intervals (a difference within resampling noise) and separate ones:"]
            for h, same, apart in statements:
                lines.append(f"- {h.short}: overlap {_md(_pairs(same))}; separate {_md(_pairs(apart))}")
    groups = seed_groups(views)
    if groups:
        lines += ["", "### Across seeds", "",
                  "| " + " | ".join(["runs", "seeds"] + [h.short for h in SEED_HEADLINES]) + " |",
                  "|" + "|".join([":---", ":---"] + ["---:"] * len(SEED_HEADLINES)) + "|"]
        for g in groups:
            cells = [group_summary(g, h) for h in SEED_HEADLINES]
            seeds = ", ".join(str(s) for s in g.seeds)
            lines.append("| " + " | ".join([_md(g.label), _md(seeds)] + cells) + " |")
        lines += ["", "Mean ± sample standard deviation over runs that differ only in seed."]
    return ("\n".join(lines) + "\n") if lines else ""


# --- HTML -------------------------------------------------------------------------------------------


def intervals_html(views: Sequence[ModelView]) -> str:
    """The "Uncertainty" section of the HTML report, or ``""`` when no record has intervals and no seeds group."""
    heads = [h for h in HEADLINES if _with_intervals(views, h)]
    groups = seed_groups(views)
    if not heads and not groups:
        return ""
    rows = []
    for view in views:
        cells: list[dict[str, Any]] = []
        for h in heads:
            cell = h.cell(view)
            if cell is None or cell.value is None:
                cells.append({"na": True})
                continue
            cells.append({"na": False, "text": h.fmt(cell.value),
                          "interval": None if cell.ci is None else f"[{h.fmt(cell.ci[0])}, {h.fmt(cell.ci[1])}]"})
        rows.append({"label": view.label, "cells": cells})
    statements = [(h.short, _pairs(same), _pairs(apart)) for h, same, apart in overlap_statements(views)] \
        if heads else []
    seed_rows = [{"label": g.label, "seeds": ", ".join(str(s) for s in g.seeds),
                  "cells": [group_summary(g, h) for h in SEED_HEADLINES]} for g in groups]
    return render("intervals.html", heads=heads, rows=rows, statements=statements, groups=seed_rows,
                  seed_heads=SEED_HEADLINES, na=NOT_AVAILABLE)
