"""A self-contained HTML report: one page, inline CSS and SVG, no scripts, fonts or images from elsewhere.

Sections, in order:

1. the paper-style table, best value per column highlighted according to the metric's direction;
2. utility against forgetting: a scatter of MU (y) against FE (x), one labelled point per model, with the
   95 % bootstrap intervals as error bars; then, when the records have them, privacy and memorisation
   (membership-inference AUCs, privacy leakage, exact memorisation, extraction strength) and uncertainty
   (the intervals of MU, FE, FQ and the leakage, which models' intervals overlap, mean ± std across seeds);
3. small bar charts, one per set × metric, each saying which direction is better, with error bars;
4. side-by-side generations for the first forget and retain questions that every model answered;
5. notes: unavailable values and why, partial aggregates, set sizes, the embedding and NLI models used.

Everything taken from a record (labels, reasons, generations) passes through :func:`html.escape`, so
a generation holding markup is shown as text, never run.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from obliviate.errors import ObliviateError
from obliviate.reporting.continual import continual_section
from obliviate.reporting.probes import probes_html
from obliviate.reporting.general import general_html
from obliviate.reporting.intervals import intervals_html
from obliviate.reporting.privacy import privacy_html
from obliviate.reporting.results import ModelView, model_views, ordered_sets, set_title
from obliviate.reporting.table import (
    DOWN,
    NOT_AVAILABLE,
    PARTIAL_MARK,
    UP,
    Column,
    best_labels,
    cell_for,
    columns,
    format_cell,
    format_value,
    partial_notes,
    tofu_note,
    unavailable_notes,
)

DEFAULT_TITLE = "Unlearning report"

GENERATION_SETS: tuple[str, ...] = ("forget", "retain")
"""Sets whose generations are shown side by side."""

# Tableau 10: distinguishable, and legible as text on white. Cycled past ten models.
PALETTE: tuple[str, ...] = ("#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1",
                            "#76b7b2", "#9c755f", "#edc948", "#ff9da7", "#bab0ac")

# Glyph widths of the 12 px semibold system sans-serif, in px, to size label boxes without a font engine.
# Generous on purpose: a box too wide only moves a label, one too narrow lets labels collide.
_WIDE, _CAPITAL, _SMALL, _NARROW, _OTHER = 12.0, 9.6, 7.6, 4.4, 8.4


def text_width(text: str) -> float:
    """Estimated width in px of ``text`` in the scatter's 12 px semibold labels."""
    width = 0.0
    for ch in text:
        if ch in "MWmw@%":
            width += _WIDE
        elif ch.isupper():
            width += _CAPITAL
        elif ch in "iljtfr.,:;'|!() ":
            width += _NARROW
        elif ch.islower() or ch.isdigit():
            width += _SMALL
        else:
            width += _OTHER
    return width

_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --rule: #d8dee4; --soft: #f6f8fa; --best: #dafbe1; --bestink: #0a5c26; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1440px; margin: 0 auto; padding: 28px 16px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 20px; margin: 40px 0 6px; padding-bottom: 6px; border-bottom: 1px solid var(--rule); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p { margin: 6px 0; }
.meta, .caption, .muted { color: var(--muted); }
.caption { font-size: 13px; }
nav { margin: 10px 0 0; font-size: 14px; }
nav a { color: #0969da; text-decoration: none; margin-right: 16px; }
nav a:hover { text-decoration: underline; }
.legend-models { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 12px 0 0; font-size: 14px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px;
  vertical-align: baseline; }
.table-wrap { overflow-x: auto; border: 1px solid var(--rule); border-radius: 6px; }
table { border-collapse: collapse; font-size: 13px; }
table.results { font-variant-numeric: tabular-nums; width: 100%; font-size: 11.5px; }
/* Tight cells: 27 number columns should fit a 1400 px window without scrolling. */
table.results th, table.results td { padding: 5px 3px; text-align: right; white-space: nowrap;
  border-bottom: 1px solid var(--rule); }
table.results thead th { background: var(--soft); font-weight: 600; font-size: 11px; }
table.results thead tr.groups th { text-align: center; font-size: 12px; text-transform: uppercase;
  letter-spacing: 0.04em; color: var(--muted); }
table.results th.model, table.results td.model { text-align: left; position: sticky; left: 0; background: #fff;
  border-right: 1px solid var(--rule); font-weight: 600; }
table.results thead th.model { background: var(--soft); }
table.results .group-start { border-left: 1px solid var(--rule); }
table.results td.best { background: var(--best); color: var(--bestink); font-weight: 700; }
table.results td.na { color: #8c959f; }
table.results tbody tr:last-child td { border-bottom: 0; }
.arrow { color: var(--muted); font-weight: 400; }
table.results thead .arrow { display: block; line-height: 1.1; }
sup.partial { color: #9a6700; font-weight: 700; }
.scatter-wrap { max-width: 800px; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.bars-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 14px 28px; }
figure { margin: 0; }
figure.bar figcaption { font-size: 13px; font-weight: 600; margin-bottom: 2px; }
figure.bar figcaption .dir { font-weight: 400; color: var(--muted); }
.qa { border: 1px solid var(--rule); border-radius: 6px; padding: 12px 14px; margin: 12px 0; }
.qa .q { font-weight: 600; }
.qa .ref { color: #24292f; background: var(--soft); border-radius: 4px; padding: 6px 8px; font-size: 14px; }
.tag { display: inline-block; min-width: 84px; margin-right: 6px; font-size: 11px; text-transform: uppercase;
  letter-spacing: 0.05em; color: var(--muted); font-weight: 600; }
.gens { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 10px; margin-top: 10px; }
.gen { border-top: 3px solid var(--rule); padding: 6px 2px 0; font-size: 14px; }
.gen .who { font-size: 12px; font-weight: 700; display: flex; justify-content: space-between; gap: 8px; }
.gen .score { font-weight: 400; color: var(--muted); font-variant-numeric: tabular-nums; }
.gen .text { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 14em; overflow-y: auto; margin: 4px 0 0; }
.gen .empty { color: #8c959f; font-style: italic; }
table.notes { margin: 6px 0 10px; }
table.notes th, table.notes td { text-align: left; vertical-align: top; padding: 4px 12px 4px 0;
  border-bottom: 1px solid var(--rule); }
table.notes th { font-weight: 600; color: var(--muted); font-size: 12px; }
table.notes td.num { font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft);
  padding: 1px 4px; border-radius: 3px; }
ul.shared { margin: 4px 0 10px; padding-left: 18px; font-size: 14px; }
ul.shared b { font-weight: 600; margin-right: 4px; }
.ci { display: block; font-size: 10px; font-weight: 400; color: var(--muted); }
"""


def _e(text: Any) -> str:
    """Escape any value for HTML text and attribute values (quotes included)."""
    return html.escape(str(text), quote=True)


def model_colors(views: Sequence[ModelView]) -> dict[str, str]:
    """One palette colour per model label, stable in the order given."""
    return {view.label: PALETTE[i % len(PALETTE)] for i, view in enumerate(views)}


def html_report(results_list: Sequence[Mapping[str, Any]], title: str = DEFAULT_TITLE, *,
                questions: int = 3) -> str:
    """Render one self-contained HTML page comparing the given results records.

    ``questions`` is how many shared forget and retain questions to show generations for. The page needs
    no JavaScript and references nothing outside itself. Raises :class:`~obliviate.errors.DataError`
    when a record lacks a field the report reads, and :class:`~obliviate.errors.ObliviateError` for an
    empty list.
    """
    if not results_list:
        raise ObliviateError("no results to report: give at least one results.json or run folder")
    if questions < 0:
        raise ObliviateError(f"questions must be 0 or more, got {questions}")
    views = model_views(results_list)
    cols = columns(views)
    colors = model_colors(views)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        _header_html(views, title, colors),
        _table_section(views, cols),
        general_html(views),  # empty unless a record has lm-eval general-ability scores
        probes_html(views),  # empty unless a record has robustness probes
        _scatter_section(views, cols, colors),
        privacy_html(views, colors),  # empty unless a record has memorisation or privacy values
        intervals_html(views),  # empty unless a record has intervals or runs differ only in seed
        continual_section(views),  # empty unless the records are the steps of a continual run
        _bars_section(views, cols, colors),
        _generations_section(views, colors, questions),
        _notes_section(views, cols),
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


# --- header -----------------------------------------------------------------------------------------


def _header_html(views: Sequence[ModelView], title: str, colors: Mapping[str, str]) -> str:
    benchmarks: list[str] = []
    for view in views:
        bench = view.results.get("benchmark")
        if isinstance(bench, dict):
            text = " · ".join(str(bench[k]) for k in ("name", "forget_split") if bench.get(k))
            if bench.get("task") is not None:
                text += f" · task {bench['task']}"
            if text and text not in benchmarks:
                benchmarks.append(text)
    meta = f"{len(views)} model{'s' if len(views) != 1 else ''}"
    if benchmarks:
        meta = "Benchmark " + "; ".join(_e(b) for b in benchmarks) + " · " + meta
    legend = "".join(
        f'<span><span class="swatch" style="background:{colors[v.label]}"></span>{_e(v.label)}</span>'
        for v in views
    )
    nav = "".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in (
        ("results", "Results table"), ("tradeoff", "Utility vs forgetting"), ("metrics", "Metrics per set"),
        ("generations", "Generations"), ("notes", "Notes")))
    return (f"<header><h1>{_e(title)}</h1><p class=\"meta\">{meta}</p>"
            f'<div class="legend-models">{legend}</div><nav>{nav}</nav></header>')


# --- 1. table ---------------------------------------------------------------------------------------


def _table_section(views: Sequence[ModelView], cols: Sequence[Column]) -> str:
    groups: list[tuple[str, int]] = []
    for column in cols:
        name = set_title(column.set_name) if column.set_name else "Aggregates"
        if groups and groups[-1][0] == name:
            groups[-1] = (name, groups[-1][1] + 1)
        else:
            groups.append((name, 1))
    group_row = '<tr class="groups"><th class="model"></th>' + "".join(
        f'<th class="group-start" colspan="{span}">{_e(name)}</th>' for name, span in groups) + "</tr>"
    starts = _group_starts(cols)
    metric_row = '<tr><th class="model">Model</th>' + "".join(
        f'<th{_cls("group-start" if i in starts else "")} title="{_e(_direction_title(c))}">'
        f'{_e(c.short)} <span class="arrow">{c.arrow}</span></th>'
        for i, c in enumerate(cols)) + "</tr>"
    best = {c.key: best_labels(views, c) for c in cols}
    body_rows = []
    for view in views:
        cells = []
        for i, column in enumerate(cols):
            cell = cell_for(view, column)
            classes = ["group-start"] if i in starts else []
            if cell.value is None:
                classes.append("na")
                cells.append(f'<td{_cls(*classes)} title="{_e(cell.reason or "")}">{NOT_AVAILABLE}</td>')
                continue
            if view.label in best[column.key]:
                classes.append("best")
            text = _e(format_value(cell.value, column.metric))
            if cell.ci is not None:
                low, high = (format_value(v, column.metric) for v in cell.ci)
                span = f"95 % interval {low} – {high}"
                text = f'<span title="{_e(span)}">{text}</span>'
            if cell.partial:
                text += f'<sup class="partial" title="{_e(cell.note or "partial aggregate")}">{PARTIAL_MARK}</sup>'
            cells.append(f"<td{_cls(*classes)}>{text}</td>")
        body_rows.append(f'<tr><td class="model">{_e(view.label)}</td>{"".join(cells)}</tr>')
    legend = (f"{UP} higher is better, {DOWN} lower is better; the best value of each column is highlighted. "
              f"<sup class=\"partial\">{PARTIAL_MARK}</sup> partial aggregate (see notes). {NOT_AVAILABLE}: not "
              "available (reason in the notes). ROUGE-L = ROUGE-L recall, Prob = probability, TR = truth ratio, "
              "TE = token entropy, CS = cosine similarity, ES = entailment score, MU = model utility, "
              "FE = forget efficacy, FQ = forget quality (KS-test p-value against the retain model)."
              + _e(tofu_note(cols)))
    return ('<section id="results"><h2>Results</h2>'
            f'<div class="table-wrap"><table class="results"><thead>{group_row}{metric_row}</thead>'
            f'<tbody>{"".join(body_rows)}</tbody></table></div>'
            f'<p class="caption">{legend}</p></section>')


def _group_starts(cols: Sequence[Column]) -> set[int]:
    """Indexes of the first column of each set (and of the aggregates), which get a dividing rule."""
    starts: set[int] = set()
    previous: object = object()
    for i, column in enumerate(cols):
        if column.set_name != previous:
            starts.add(i)
            previous = column.set_name
    return starts


def _direction_title(column: Column) -> str:
    where = f"{set_title(column.set_name)} · " if column.set_name else ""
    return f"{where}{column.full}: {'higher' if column.higher_is_better else 'lower'} is better"


def _cls(*classes: str) -> str:
    names = " ".join(c for c in classes if c)
    return f' class="{names}"' if names else ""


# --- 2. scatter -------------------------------------------------------------------------------------


def _scatter_section(views: Sequence[ModelView], cols: Sequence[Column], colors: Mapping[str, str]) -> str:
    fe_col = next(c for c in cols if c.key == "forget_efficacy")
    mu_col = next(c for c in cols if c.key == "model_utility")
    svg, skipped = scatter_svg(views, fe_col, mu_col, colors)
    notes = []
    if any(cell_for(v, fe_col).partial or cell_for(v, mu_col).partial for v in views
           if v.label not in {s for s, _ in skipped}):
        notes.append("A hollow point marks a model whose MU or FE is a partial aggregate.")
    if skipped:
        listed = "; ".join(f"{_e(label)} ({_e(why)})" for label, why in skipped)
        notes.append(f"Not plotted, for lack of MU or FE: {listed}.")
    caption = " ".join(f"<p class=\"caption\">{n}</p>" for n in notes)
    return ('<section id="tradeoff"><h2>Utility vs forgetting</h2>'
            '<p class="caption">Model utility (harmonic mean over retain, real authors and world facts) against '
            'forget efficacy (1 − mean forget-set knowledge); each point is one model.</p>'
            f'<div class="scatter-wrap">{svg}</div>{caption}</section>')


def scatter_svg(views: Sequence[ModelView], x_col: Column, y_col: Column,
                colors: Mapping[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """An SVG scatter of ``y_col`` against ``x_col``, one labelled ``<circle class="point">`` per model.

    Returns the SVG and the (label, reason) of every model left out because a value is unavailable.
    """
    points: list[tuple[ModelView, float, float, bool]] = []
    skipped: list[tuple[str, str]] = []
    for view in views:
        x_cell, y_cell = cell_for(view, x_col), cell_for(view, y_col)
        lacking = [c.short for c, cell in ((y_col, y_cell), (x_col, x_cell)) if cell.value is None]
        if lacking:
            skipped.append((view.label, " and ".join(lacking) + " unavailable"))
            continue
        points.append((view, float(x_cell.value or 0.0), float(y_cell.value or 0.0),
                       x_cell.partial or y_cell.partial))

    width, height = 680, 460
    left, right, top, bottom = 64, 44, 24, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p[1] for p in points] or [0.0]
    ys = [p[2] for p in points] or [0.0]
    # Both axes span [0, 1], the range every aggregate is defined on; widen only if a record strays.
    x_lo, x_hi = min(0.0, *xs), max(1.0, *xs)
    y_lo, y_hi = min(0.0, *ys), max(1.0, *ys)

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * plot_w

    def sy(v: float) -> float:
        return top + plot_h - (v - y_lo) / (y_hi - y_lo) * plot_h

    out = [f'<svg class="scatter" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="{_e(y_col.full)} against {_e(x_col.full)}">']
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="#d8dee4"/>')
    for tick in _ticks(x_lo, x_hi):
        x = sx(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eaeef2"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" font-size="12" fill="#59636e" '
                   f'text-anchor="middle">{tick:.1f}</text>')
    for tick in _ticks(y_lo, y_hi):
        y = sy(tick)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eaeef2"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" fill="#59636e" '
                   f'text-anchor="end">{tick:.1f}</text>')
    x_arrow = "→" if x_col.higher_is_better else "←"
    y_arrow = "↑" if y_col.higher_is_better else "↓"
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 14}" font-size="13" fill="#1f2328" '
               f'text-anchor="middle">{_e(x_col.full)} ({_e(x_col.short)}) {x_arrow} better</text>')
    out.append(f'<text transform="translate(18 {top + plot_h / 2:.1f}) rotate(-90)" font-size="13" '
               f'fill="#1f2328" text-anchor="middle">{_e(y_col.full)} ({_e(y_col.short)}) {y_arrow} better</text>')
    # The corner both directions point to: where an ideal unlearned model would sit.
    corner_x = left + plot_w - 8 if x_col.higher_is_better else left + 8
    corner_y = top + 16 if y_col.higher_is_better else top + plot_h - 8
    anchor = "end" if x_col.higher_is_better else "start"
    glyph = {(True, True): "↗", (False, True): "↖", (True, False): "↘", (False, False): "↙"}[
        (x_col.higher_is_better, y_col.higher_is_better)]
    out.append(f'<text x="{corner_x}" y="{corner_y}" font-size="12" fill="#8c959f" text-anchor="{anchor}">'
               f"better {glyph}</text>")

    screen = [(view, sx(x), sy(y), x, y, partial) for view, x, y, partial in points]
    placed_boxes: list[tuple[float, float, float, float]] = [
        (px - 7, py - 7, px + 7, py + 7) for _, px, py, _, _, _ in screen]
    # Labels may run into the right margin and above the plot, but not over the axis ticks.
    bounds = (left, 0, width, top + plot_h)
    leaders: list[str] = []
    circles: list[str] = []
    labels_svg: list[str] = []
    bars: list[str] = []
    for view, px, py, x, y, partial in screen:
        # 95 % bootstrap intervals of both aggregates as error bars through the point.
        for cell, horizontal in ((cell_for(view, x_col), True), (cell_for(view, y_col), False)):
            if cell.ci is None:
                continue
            if horizontal:
                a, b = sx(cell.ci[0]), sx(cell.ci[1])
                bars.append(f'<path class="errorbar" d="M{a:.1f} {py:.1f}H{b:.1f}M{a:.1f} {py - 4:.1f}v8'
                            f'M{b:.1f} {py - 4:.1f}v8" stroke="{colors[view.label]}" stroke-width="1.2" fill="none"/>')
            else:
                a, b = sy(cell.ci[0]), sy(cell.ci[1])
                bars.append(f'<path class="errorbar" d="M{px:.1f} {a:.1f}V{b:.1f}M{px - 4:.1f} {a:.1f}h8'
                            f'M{px - 4:.1f} {b:.1f}h8" stroke="{colors[view.label]}" stroke-width="1.2" fill="none"/>')
    for view, px, py, x, y, partial in screen:
        color = colors[view.label]
        fill = "#ffffff" if partial else color
        tip = (f"{view.label}: {y_col.short} {format_value(y, y_col.metric)}, "
               f"{x_col.short} {format_value(x, x_col.metric)}{' (partial)' if partial else ''}")
        circles.append(f'<circle class="point" data-model="{_e(view.label)}" cx="{px:.1f}" cy="{py:.1f}" r="6" '
                       f'fill="{fill}" stroke="{color}" stroke-width="2.5"><title>{_e(tip)}</title></circle>')
        tx, ty, anchor, leader = place_label(view.label, px, py, placed_boxes, bounds)
        if leader:
            # From the point's centre to the label's near end, at the text's mid-height.
            end_x = tx - 3 if anchor == "start" else tx + 3
            leaders.append(f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{end_x:.1f}" y2="{ty - 4:.1f}" '
                           f'stroke="{color}" stroke-width="1"/>')
        labels_svg.append(f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="12" font-weight="600" fill="{color}" '
                          f'text-anchor="{anchor}" paint-order="stroke" stroke="#ffffff" stroke-width="3">'
                          f"{_e(view.label)}</text>")
    # Leaders under the points, labels over everything: no point hides a label, no leader crosses a point.
    out.extend(bars + leaders + circles + labels_svg)
    out.append("</svg>")
    return "".join(out), skipped


def place_label(label: str, px: float, py: float, placed: list[tuple[float, float, float, float]],
                 bounds: tuple[float, float, float, float]) -> tuple[float, float, str, bool]:
    """Pick a label position near a point that overlaps no earlier label or point and stays in bounds.

    Tries right, left, above, below and the diagonals; in a crowded cluster it then walks outwards, up
    and down, to the nearest free row on either side, and the caller draws a leader line to the point
    (the last element of the result says so). The chosen box is appended to ``placed``.
    """
    w, h = text_width(label), 13.0
    near = [(10, 4, "start"), (-10, 4, "end"), (0, -11, "middle"), (0, 19, "middle"),
            (9, -9, "start"), (9, 17, "start"), (-9, -9, "end"), (-9, 17, "end")]
    # Farther rows, nearest first, 14 px apart: used only when every near position is taken.
    far = [(dx, 4 + sign * step * 14, anchor) for step in range(1, 30) for sign in (-1, 1)
           for dx, anchor in ((22, "start"), (-22, "end"))]

    def box(dx: float, dy: float, anchor: str) -> tuple[float, float, float, float]:
        x = px + dx
        x0 = x if anchor == "start" else x - w if anchor == "end" else x - w / 2
        y1 = py + dy + 3  # text baseline plus descenders
        return (x0, y1 - h, x0 + w, y1)

    def fits(b: tuple[float, float, float, float]) -> bool:
        if b[0] < bounds[0] + 2 or b[2] > bounds[2] - 2 or b[1] < bounds[1] + 2 or b[3] > bounds[3] - 2:
            return False
        return not any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in placed)

    for i, (dx, dy, anchor) in enumerate(near + far):
        if fits(box(dx, dy, anchor)):
            placed.append(box(dx, dy, anchor))
            return px + dx, py + dy, anchor, i >= len(near)
    # Nowhere free (a very crowded plot): beside the point, whichever side has room.
    dx, anchor = (10, "start") if px + 10 + w <= bounds[2] else (-10, "end")
    placed.append(box(dx, 4, anchor))
    return px + dx, py + 4, anchor, False


def _ticks(lo: float, hi: float) -> list[float]:
    """Tick positions every 0.2 across [lo, hi] (0.5 when the span is wider than 2)."""
    step = 0.2 if hi - lo <= 2 else 0.5
    start = round(lo / step) * step
    ticks, t = [], start
    while t <= hi + 1e-9:
        if t >= lo - 1e-9:
            ticks.append(round(t, 6))
        t += step
    return ticks


# --- 3. bar charts ----------------------------------------------------------------------------------


def _bars_section(views: Sequence[ModelView], cols: Sequence[Column], colors: Mapping[str, str]) -> str:
    parts = ['<section id="metrics"><h2>Metrics per set</h2>'
             '<p class="caption">One chart per set and metric; bars span 0 to 1. The best value is in bold.</p>']
    for set_name in ordered_sets(views):
        figures = [bar_chart(views, c, colors) for c in cols if c.set_name == set_name]
        parts.append(f"<h3>{_e(set_title(set_name))}</h3><div class=\"bars-grid\">{''.join(figures)}</div>")
    aggregates = [bar_chart(views, c, colors) for c in cols if c.set_name is None]
    parts.append(f"<h3>Aggregates</h3><div class=\"bars-grid\">{''.join(aggregates)}</div>")
    parts.append("</section>")
    return "".join(parts)


def bar_chart(views: Sequence[ModelView], column: Column, colors: Mapping[str, str]) -> str:
    """A small horizontal bar chart of one column: one bar per model, its direction in the caption."""
    label_w, value_w, width = 118, 60, 330
    row_h, bar_h, top, axis_h = 20, 12, 4, 18
    bar_w = width - label_w - value_w
    values = [cell_for(v, column).value for v in views]
    hi = max([1.0] + [v for v in values if v is not None])
    best = best_labels(views, column)
    height = top + row_h * len(views) + axis_h
    out = [f'<svg class="bars" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="{_e(_direction_title(column))}">']
    for frac in (0.0, 0.5, 1.0):
        x = label_w + frac * bar_w * (1.0 / hi if hi > 1 else 1.0)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + row_h * len(views)}" '
                   f'stroke="{"#afb8c1" if frac == 0 else "#eaeef2"}"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 4}" font-size="10" fill="#8c959f" '
                   f'text-anchor="middle">{frac:g}</text>')
    for i, view in enumerate(views):
        cell = cell_for(view, column)
        y = top + i * row_h
        name = view.label if len(view.label) <= 17 else view.label[:16] + "…"
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" fill="#1f2328" text-anchor="end">'
                   f"<title>{_e(view.label)}</title>{_e(name)}</text>")
        if cell.value is None:
            out.append(f'<text x="{label_w + 4}" y="{y + 14}" font-size="11" fill="#8c959f" font-style="italic">'
                       f"{NOT_AVAILABLE}<title>{_e(cell.reason or '')}</title></text>")
            continue
        length = max(0.0, min(cell.value, hi)) / hi * bar_w
        color = colors[view.label]
        fill = "#ffffff" if cell.partial else color
        out.append(f'<rect x="{label_w}" y="{y + (row_h - bar_h) / 2:.1f}" width="{length:.1f}" height="{bar_h}" '
                   f'rx="2" fill="{fill}" stroke="{color}" stroke-width="{1.5 if cell.partial else 0}"/>')
        end = length
        if cell.ci is not None:
            # The 95 % bootstrap interval as an error bar across the bar's end.
            lo, hi_x = (max(0.0, min(v, hi)) / hi * bar_w for v in cell.ci)
            mid = y + row_h / 2
            out.append(f'<path class="errorbar" d="M{label_w + lo:.1f} {mid:.1f}H{label_w + hi_x:.1f}'
                       f'M{label_w + lo:.1f} {mid - 4:.1f}v8M{label_w + hi_x:.1f} {mid - 4:.1f}v8" '
                       f'stroke="#1f2328" stroke-width="1.2" fill="none"><title>95 % interval '
                       f'{format_value(cell.ci[0], column.metric)} – {format_value(cell.ci[1], column.metric)}'
                       "</title></path>")
            end = max(end, hi_x)
        weight = ' font-weight="700"' if view.label in best else ""
        text = format_value(cell.value, column.metric) + (PARTIAL_MARK if cell.partial else "")
        out.append(f'<text x="{label_w + end + 5:.1f}" y="{y + 14}" font-size="11" fill="#1f2328"{weight}>'
                   f"{_e(text)}</text>")
    out.append("</svg>")
    direction = "higher is better" if column.higher_is_better else "lower is better"
    return (f'<figure class="bar"><figcaption>{_e(column.full)} <span class="dir">{column.arrow} '
            f"{direction}</span></figcaption>{''.join(out)}</figure>")


# --- 4. generations ---------------------------------------------------------------------------------


def shared_questions(views: Sequence[ModelView], set_name: str, limit: int) -> list[str]:
    """The first ``limit`` questions of ``set_name`` that every model with generations there answered.

    Order follows the first such model's items; matching is by exact question text, because models
    evaluated with different set sizes or orders still share the question wording.
    """
    with_items = [v for v in views if set_name in v.sets and v.sets[set_name].items]
    if not with_items or limit <= 0:
        return []
    others = [{item.question for item in v.sets[set_name].items} for v in with_items[1:]]
    out: list[str] = []
    for item in with_items[0].sets[set_name].items:
        if item.question not in out and all(item.question in seen for seen in others):
            out.append(item.question)
            if len(out) == limit:
                break
    return out


def _generations_section(views: Sequence[ModelView], colors: Mapping[str, str], limit: int) -> str:
    if limit == 0:
        return ('<section id="generations"><h2>Generations</h2>'
                '<p class="muted">Not shown: the report was asked for 0 questions.</p></section>')
    parts = ['<section id="generations"><h2>Generations</h2>'
             f'<p class="caption">The first {limit} questions of each set that every model answered, matched by '
             "question text; greedy generations side by side.</p>"]
    for set_name in GENERATION_SETS:
        present = [v for v in views if set_name in v.sets]
        if not present:
            continue
        parts.append(f"<h3>{_e(set_title(set_name))} set</h3>")
        without = [v.label for v in present if not v.sets[set_name].items]
        questions = shared_questions(views, set_name, limit)
        if not questions:
            parts.append('<p class="muted">No question was answered by every model here.</p>')
        for question in questions:
            parts.append(_question_block(views, set_name, question, colors))
        if without:
            parts.append(f'<p class="caption">No generations recorded for: {_e(", ".join(without))}.</p>')
    parts.append("</section>")
    return "".join(parts)


def _question_block(views: Sequence[ModelView], set_name: str, question: str, colors: Mapping[str, str]) -> str:
    reference: str | None = None
    cards: list[str] = []
    for view in views:
        set_view = view.sets.get(set_name)
        item = next((it for it in set_view.items if it.question == question), None) if set_view else None
        if item is None:
            continue
        if reference is None:
            reference = item.reference
        if item.generation is None:
            text = '<div class="text empty">no generation recorded</div>'
        elif not item.generation.strip():
            text = '<div class="text empty">(empty generation)</div>'
        else:
            text = f'<div class="text">{_e(item.generation)}</div>'
        score = (f'<span class="score">ROUGE-L {format_value(item.rouge_l, "rouge_l")}</span>'
                 if item.rouge_l is not None else "")
        color = colors[view.label]
        cards.append(f'<div class="gen" style="border-top-color:{color}"><div class="who">'
                     f'<span><span class="swatch" style="background:{color}"></span>{_e(view.label)}</span>'
                     f"{score}</div>{text}</div>")
    ref_html = _e(reference) if reference is not None else '<span class="muted">no reference recorded</span>'
    return (f'<article class="qa"><p class="q"><span class="tag">Question</span>{_e(question)}</p>'
            f'<p class="ref"><span class="tag">Reference</span>{ref_html}</p>'
            f'<div class="gens">{"".join(cards)}</div></article>')


# --- 5. notes ---------------------------------------------------------------------------------------


def _notes_section(views: Sequence[ModelView], cols: Sequence[Column]) -> str:
    parts = ['<section id="notes"><h2>Notes</h2>']

    unavailable = unavailable_notes(views, cols)
    parts.append("<h3>Unavailable values</h3>")
    if unavailable:
        parts.append(_notes_table(("Model", "Metric", "Where", "Reason"),
                                  [(label, metric, where, reason) for label, where, metric, reason in unavailable]))
    else:
        parts.append('<p class="muted">Every metric and aggregate was computed for every model.</p>')

    partial = partial_notes(views)
    parts.append("<h3>Partial aggregates</h3>")
    if partial:
        parts.append(_notes_table(("Model", "Aggregate", "Note", "Missing components"),
                                  [(label, name, note, ", ".join(missing) or "—")
                                   for label, name, note, missing in partial]))
    else:
        parts.append('<p class="muted">No aggregate is partial.</p>')

    other_names: list[str] = []
    for view in views:
        other_names += [name for name in view.other_aggregates if name not in other_names]
    if other_names:
        parts.append("<h3>Other aggregates</h3>")
        if "model_utility_tofu" in other_names:
            parts.append('<p class="caption"><code>model_utility_tofu</code>: TOFU\'s 9-number model utility '
                         "(probability, ROUGE, truth ratio on retain, real authors and world facts).</p>")
        rows = []
        for view in views:
            row = [view.label]
            for name in other_names:
                cell = view.other_aggregates.get(name)
                row.append("—" if cell is None else format_cell(cell, name) if cell.value is not None
                           else f"{NOT_AVAILABLE} ({cell.reason})")
            rows.append(tuple(row))
        parts.append(_notes_table(("Model", *other_names), rows, numeric=True))

    sets = ordered_sets(views)
    parts.append("<h3>Set sizes</h3>"
                 '<p class="caption">Rows evaluated, of the rows in the set\'s file.</p>')
    size_rows = []
    for view in views:
        row = [view.label]
        for set_name in sets:
            sv = view.sets.get(set_name)
            if sv is None:
                row.append("—")
            else:
                size = "?" if sv.size is None else str(sv.size)
                row.append(size if sv.rows_available is None else f"{size} of {sv.rows_available}")
        size_rows.append(tuple(row))
    parts.append(_notes_table(("Model", *[set_title(s) for s in sets]), size_rows, numeric=True))

    parts.append("<h3>Models and settings</h3>")
    parts.append(_settings_html(views))

    conflicts = [c for c in cols if c.conflict]
    if conflicts:
        parts.append("<h3>Direction conflicts</h3><p>Records disagree on whether higher is better for "
                     + ", ".join(f"<code>{_e(c.key)}</code>" for c in conflicts)
                     + "; the first record's direction is used for arrows and highlighting.</p>")
    parts.append("</section>")
    return "".join(parts)


# Per-model settings shown in the notes: (heading, function of the record). When every model has the
# same value the setting is stated once above the table instead of repeated in every row.
_SETTINGS: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("Checkpoint", lambda r: _dict(r, "model").get("spec")),
    ("Embedding model", lambda r: _embedding(_dict(r, "settings"))),
    ("NLI model", lambda r: _dict(r, "settings").get("nli_model")),
    ("Max new tokens", lambda r: _dict(r, "settings").get("max_new_tokens")),
    ("Seed", lambda r: r.get("seed")),
    ("Device", lambda r: _dict(r, "environment").get("device")),
    ("obliviate", lambda r: _dict(r, "environment").get("obliviate")),
    ("Created", lambda r: r.get("created")),
)


def _dict(results: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = results.get(key)
    return value if isinstance(value, dict) else {}


def _embedding(settings: Mapping[str, Any]) -> str | None:
    """The embedding model actually used, and the one asked for when a fallback replaced it."""
    requested, used = settings.get("embedding_model"), settings.get("embedding_model_used")
    if used and requested and used != requested:
        return f"{used} (requested {requested})"
    return used or requested


def _settings_html(views: Sequence[ModelView]) -> str:
    """Settings every model shares as one list, then a table of those that differ plus each results file."""
    shared: list[tuple[str, str]] = []
    varying: list[tuple[str, list[str]]] = []
    for heading, getter in _SETTINGS:
        values = ["—" if getter(v.results) is None else str(getter(v.results)) for v in views]
        if len(views) > 1 and len(set(values)) == 1:
            if values[0] != "—":
                shared.append((heading, values[0]))
        else:
            varying.append((heading, values))
    out = []
    if shared:
        out.append('<p class="caption">Shared by every model:</p><ul class="shared">' + "".join(
            f"<li><b>{_e(h)}</b> {_e(v)}</li>" for h, v in shared) + "</ul>")
    header = ("Model", *[h for h, _ in varying], "Results file")
    rows = [(view.label, *[values[i] for _, values in varying], view.source) for i, view in enumerate(views)]
    code = {i + 1 for i, (h, _) in enumerate(varying) if h == "Checkpoint"} | {len(header) - 1}
    out.append(_notes_table(header, rows, code_columns=code))
    return "".join(out)


def _notes_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, code_columns: set[int] | None = None,
                 numeric: bool = False) -> str:
    """A plain notes table; ``code_columns`` are shown as code, ``numeric`` aligns figures after column 0."""
    code_columns = code_columns or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in header)

    def td(i: int, cell: str) -> str:
        if i in code_columns and cell != "—":
            return f"<td><code>{_e(cell)}</code></td>"
        return f'<td class="num">{_e(cell)}</td>' if numeric and i > 0 else f"<td>{_e(cell)}</td>"

    body = "".join("<tr>" + "".join(td(i, cell) for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="notes"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
