"""The continual part of a report: MU and FE against the number of tasks forgotten.

A continual run (``obliviate continual``, docs/continual.md) writes one results record per step, each with
``run.continual.step`` and ``run.continual.tasks_forgotten``. When the records given to a report include the
steps of one such run, the HTML page gets a section with a line plot (inline SVG, like the other charts) of
model utility and forget efficacy after every step, and a small table of MU, FE and FQ per step; the Markdown
report gets the same table. Records that are not steps of that run (a target model, say) are left out of the
plot and named under it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


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


def line_plot_svg(steps: Sequence[ContinualStep]) -> str:
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

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * plot_w

    def sy(v: float) -> float:
        return top + plot_h - (v - y_lo) / (y_hi - y_lo) * plot_h

    out = [f'<svg class="continual" viewBox="0 0 {width} {height}" width="100%" role="img" '
           'aria-label="Model utility and forget efficacy against the number of tasks forgotten">',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="#d8dee4"/>']
    # Integer ticks on x; at most about ten labels so long runs stay legible.
    stride = max(1, (x_hi - x_lo + 9) // 10)
    for tick in range(x_lo, x_hi + 1, stride):
        x = sx(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eaeef2"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" font-size="12" fill="#59636e" '
                   f'text-anchor="middle">{tick}</text>')
    tick = 0.0
    while tick <= y_hi + 1e-9:
        if tick >= y_lo - 1e-9:
            y = sy(tick)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eaeef2"/>')
            out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" fill="#59636e" '
                       f'text-anchor="end">{tick:.1f}</text>')
        tick = round(tick + 0.2, 6)
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" font-size="13" fill="#1f2328" '
               'text-anchor="middle">Tasks forgotten</text>')
    out.append(f'<text transform="translate(16 {top + plot_h / 2:.1f}) rotate(-90)" font-size="13" '
               'fill="#1f2328" text-anchor="middle">Value (higher is better)</text>')
    for i, (key, short, full, color) in enumerate(SERIES):
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
            fill = "#ffffff" if cell.partial else color
            tip = f"{short} after {s.tasks} task(s) (step {s.step}): {format_cell(cell, key)}"
            circles.append(f'<circle class="point" data-series="{short}" data-tasks="{s.tasks}" cx="{px:.1f}" '
                           f'cy="{py:.1f}" r="4.5" fill="{fill}" stroke="{color}" stroke-width="2">'
                           f"<title>{_e(tip)}</title></circle>")
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                out.append(f'<polyline class="line" data-series="{short}" points="{points}" fill="none" '
                           f'stroke="{color}" stroke-width="2"/>')
        out.extend(circles)
        ly = top + 14 + i * 20
        out.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{left + plot_w + 40}" y="{ly}" font-size="12" fill="#1f2328">{_e(short)}: '
                   f"{_e(full.lower())}</text>")
    out.append("</svg>")
    return "".join(out)


def _table_html(steps: Sequence[ContinualStep]) -> str:
    head = "".join(f"<th>{_e(short)} ↑</th>" for _, short in TABLE_AGGREGATES)
    rows = []
    for s in steps:
        cells = []
        for key, _ in TABLE_AGGREGATES:
            cell = _cell(s.view, key)
            if cell is None or cell.value is None:
                reason = cell.reason if cell is not None else "not recorded in results.json"
                cells.append(f'<td class="num" title="{_e(reason or "")}">{NOT_AVAILABLE}</td>')
            else:
                cells.append(f'<td class="num">{_e(format_cell(cell, key))}</td>')
        rows.append(f'<tr><td class="num">{s.step}</td><td class="num">{s.tasks}</td>'
                    f'<td>{_e(s.view.label)}</td>{"".join(cells)}</tr>')
    return (f'<table class="notes"><thead><tr><th>Step</th><th>Tasks forgotten</th><th>Model</th>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def continual_section(views: Sequence[ModelView]) -> str:
    """The HTML section for the steps of one continual run among ``views``; empty when there is none."""
    found = continual_steps(views)
    if found is None:
        return ""
    steps, others = found
    caption = ("Model utility and forget efficacy after each step of continual unlearning, against the number "
               "of tasks forgotten so far; each step's forget set holds every task forgotten up to it. "
               "A hollow point is a partial aggregate; a missing value leaves a gap.")
    notes = f'<p class="caption">Not part of this continual run, not plotted: {_e(", ".join(others))}.</p>' \
        if others else ""
    return (f'<section id="continual"><h2>Continual unlearning</h2><p class="caption">{caption}</p>'
            f'<div class="scatter-wrap">{line_plot_svg(steps)}</div>{notes}{_table_html(steps)}</section>')


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
