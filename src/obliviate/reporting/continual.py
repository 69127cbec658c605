"""The continual part of a report: MU and FE against the number of tasks forgotten.

A continual run (``obliviate continual``, docs/continual.md) writes one results record per step, each with
``run.continual.step`` and ``run.continual.tasks_forgotten``. When the records given to a report include the
steps of one such run, the HTML page gets a section with a line plot (inline SVG, like the other charts) of
model utility and forget efficacy after every step, and a small table of MU, FE and FQ per step; the Markdown
report gets the same table. Records that are not steps of that run (a target model, say) are left out of the
plot and named under it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.reporting import svg
from obliviate.reporting.render import Html, render
from obliviate.reporting.results import Cell, ModelView, model_views
from obliviate.reporting.table import NOT_AVAILABLE, PARTIAL_MARK, format_cell

# (aggregate key, short label, full name, colour): the two plotted series. Colours from the report's palette.
SERIES: tuple[tuple[str, str, str, str], ...] = (
    ("model_utility", "MU", "Model utility", "#4e79a7"),
    ("forget_efficacy", "FE", "Forget efficacy", "#e15759"),
)
TABLE_AGGREGATES: tuple[tuple[str, str], ...] = (("model_utility", "MU"), ("forget_efficacy", "FE"),
                                                 ("forget_quality", "FQ"))


@dataclass(frozen=True)
class ContinualStep:
    """One step of a continual run, as a report shows it."""

    step: int
    tasks: int                      # tasks forgotten after this step (the x axis)
    view: ModelView


def _continual_info(results: Mapping[str, Any]) -> dict | None:
    run = results.get("run")
    info = run.get("continual") if isinstance(run, dict) else None
    if not isinstance(info, dict):
        return None
    step = info.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    return info


def continual_steps(views: Sequence[ModelView]) -> tuple[list[ContinualStep], list[str]] | None:
    """The steps of the one continual run among ``views`` (by step), and the labels of the other records.

    None when no record is a continual step, or when the steps belong to more than one run or repeat a step
    number: a single line per series would then mix runs.
    """
    steps: list[ContinualStep] = []
    others: list[str] = []
    runs: set[str] = set()
    for view in views:
        info = _continual_info(view.results)
        if info is None:
            others.append(view.label)
            continue
        runs.add(str(info.get("run_dir")))
        tasks = info.get("tasks_forgotten")
        count = len(tasks) if isinstance(tasks, list) else info["step"]
        steps.append(ContinualStep(step=info["step"], tasks=count, view=view))
    if not steps or len(runs) > 1 or len({s.step for s in steps}) != len(steps):
        return None
    return sorted(steps, key=lambda s: s.step), others


def _cell(view: ModelView, key: str) -> Cell | None:
    return view.aggregates.get(key) or view.other_aggregates.get(key)


def line_plot_svg(steps: Sequence[ContinualStep]) -> Html:
    """An SVG line plot of MU and FE (y, on [0, 1]) against tasks forgotten (x), one point per step.

    Each point is a ``<circle class="point">`` with ``data-series`` and ``data-tasks``; a hollow point marks a
    partial aggregate; an unavailable value leaves a gap in its line.
    """
    width, height = 720, 360
    left, right, top, bottom = 56, 160, 20, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [s.tasks for s in steps]
    x_lo, x_hi = min(0, *xs), max(xs)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    values = [c.value for s in steps for key, *_ in SERIES if (c := _cell(s.view, key)) and c.value is not None]
    y_lo, y_hi = min(0.0, *values) if values else 0.0, max(1.0, *values) if values else 1.0
    sx = svg.LinearScale(x_lo, x_hi, left, left + plot_w)
    sy = svg.LinearScale(y_lo, y_hi, top + plot_h, top)

    out = [svg.frame(left, top, plot_w, plot_h)]
    # Integer ticks on x; at most about ten labels so long runs stay legible.
    stride = max(1, (x_hi - x_lo + 9) // 10)
    out += svg.x_grid(sx, range(x_lo, x_hi + 1, stride), y0=top, y1=top + plot_h, label_y=top + plot_h + 18,
                      label=str)
    out += svg.y_grid(sy, svg.ticks(0.0, y_hi, 0.2), x0=left, x1=left + plot_w, label=lambda t: f"{t:.1f}")
    out += svg.axis_titles("Tasks forgotten", "Value (higher is better)", center_x=left + plot_w / 2,
                           x_title_y=height - 12, y_title_x=16, center_y=top + plot_h / 2)
    for key, short, _, color in SERIES:
        # Consecutive available points are joined; an unavailable step breaks the line.
        runs: list[list[tuple[float, float]]] = [[]]
        circles = []
        for s in steps:
            cell = _cell(s.view, key)
            if cell is None or cell.value is None:
                runs.append([])
                continue
            px, py = sx(s.tasks), sy(cell.value)
            runs[-1].append((px, py))
            tip = f"{short} after {s.tasks} task(s) (step {s.step}): {format_cell(cell, key)}"
            circles.append(svg.point(px, py, r=4.5, fill="#ffffff" if cell.partial else color, stroke=color,
                                     stroke_width=2, tooltip=tip, cls="point",
                                     data={"series": short, "tasks": s.tasks}))
        out += [svg.polyline(run, color=color, data={"series": short}) for run in runs if len(run) > 1]
        out += circles
    out += svg.legend([(color, f"{short}: {full.lower()}") for _, short, full, color in SERIES],
                      x=left + plot_w + 14, y=top + 14)
    return svg.svg("continual", width, height,
                   "Model utility and forget efficacy against the number of tasks forgotten", out)


def continual_section(views: Sequence[ModelView]) -> str:
    """The HTML section for the steps of one continual run among ``views``; empty when there is none."""
    found = continual_steps(views)
    if found is None:
        return ""
    steps, others = found
    rows = []
    for s in steps:
        cells: list[dict[str, Any]] = []
        for key, _ in TABLE_AGGREGATES:
            cell = _cell(s.view, key)
            if cell is None or cell.value is None:
                reason = cell.reason if cell is not None else "not recorded in results.json"
                cells.append({"na": True, "reason": reason or ""})
            else:
                cells.append({"na": False, "text": format_cell(cell, key)})
        rows.append({"step": s.step, "tasks": s.tasks, "label": s.view.label, "cells": cells})
    return render("continual.html", plot=line_plot_svg(steps), others=others,
                  heads=[short for _, short in TABLE_AGGREGATES], rows=rows, na=NOT_AVAILABLE)


def continual_markdown(results_list: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of MU, FE and FQ per step for the continual run among the records; empty if none."""
    found = continual_steps(model_views(results_list))
    if found is None:
        return ""
    steps, _ = found
    lines = ["| Step | Tasks forgotten | " + " | ".join(f"{short} ↑" for _, short in TABLE_AGGREGATES) + " |",
             "|---:|---:|" + "---:|" * len(TABLE_AGGREGATES)]
    for s in steps:
        cells = []
        for key, _ in TABLE_AGGREGATES:
            cell = _cell(s.view, key)
            cells.append(NOT_AVAILABLE if cell is None or cell.value is None else format_cell(cell, key))
        lines.append(f"| {s.step} | {s.tasks} | " + " | ".join(cells) + " |")
    marks = any((c := _cell(s.view, k)) is not None and c.partial for s in steps for k, _ in TABLE_AGGREGATES)
    footer = f"\n{PARTIAL_MARK} partial aggregate (see the table above).\n" if marks else "\n"
    return "Continual unlearning, after each step:\n\n" + "\n".join(lines) + footer
