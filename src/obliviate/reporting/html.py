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

The page is rendered from the templates in ``templates/`` with autoescaping (:mod:`obliviate.reporting.render`)
and its charts are drawn by :mod:`obliviate.reporting.svg`: everything taken from a record (labels, reasons,
generations) is escaped by the template engine, so a generation holding markup is shown as text, never run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from obliviate.errors import ObliviateError
from obliviate.reporting.continual import continual_section
from obliviate.reporting.probes import probes_html
from obliviate.reporting.general import general_html
from obliviate.reporting.intervals import intervals_html
from obliviate.reporting.privacy import privacy_html
from obliviate.reporting.render import Html, render
from obliviate.reporting import svg
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
    sections = [
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
    ]
    return str(render("report.html", title=title, sections=[s for s in sections if s],
                      **_header(views, colors))) + "\n"


# --- header -----------------------------------------------------------------------------------------


def _header(views: Sequence[ModelView], colors: Mapping[str, str]) -> dict[str, Any]:
    benchmarks: list[str] = []
    for view in views:
        bench = view.results.get("benchmark")
        if isinstance(bench, dict):
            text = " · ".join(str(bench[k]) for k in ("name", "forget_split") if bench.get(k))
            if bench.get("task") is not None:
                text += f" · task {bench['task']}"
            if text and text not in benchmarks:
                benchmarks.append(text)
    return {"benchmarks": benchmarks, "models": f"{len(views)} model{'s' if len(views) != 1 else ''}",
            "legend": [(v.label, colors[v.label]) for v in views],
            "nav": [("results", "Results table"), ("tradeoff", "Utility vs forgetting"), ("metrics", "Metrics per set"),
                    ("generations", "Generations"), ("notes", "Notes")]}


# --- 1. table ---------------------------------------------------------------------------------------


def _table_section(views: Sequence[ModelView], cols: Sequence[Column]) -> Html:
    groups: list[tuple[str, int]] = []
    for column in cols:
        name = set_title(column.set_name) if column.set_name else "Aggregates"
        if groups and groups[-1][0] == name:
            groups[-1] = (name, groups[-1][1] + 1)
        else:
            groups.append((name, 1))
    starts = _group_starts(cols)
    headers = [{"cls": "group-start" if i in starts else "", "title": _direction_title(c), "short": c.short,
                "arrow": c.arrow} for i, c in enumerate(cols)]
    best = {c.key: best_labels(views, c) for c in cols}
    rows = []
    for view in views:
        cells = []
        for i, column in enumerate(cols):
            cell = cell_for(view, column)
            classes = ["group-start"] if i in starts else []
            if cell.value is None:
                cells.append({"na": True, "cls": " ".join(classes + ["na"]), "reason": cell.reason or ""})
                continue
            if view.label in best[column.key]:
                classes.append("best")
            interval = None
            if cell.ci is not None:
                low, high = (format_value(v, column.metric) for v in cell.ci)
                interval = f"95 % interval {low} – {high}"
            cells.append({"na": False, "cls": " ".join(classes), "text": format_value(cell.value, column.metric),
                          "interval": interval,
                          "partial": (cell.note or "partial aggregate") if cell.partial else None})
        rows.append({"label": view.label, "cells": cells})
    return render("results.html", groups=groups, headers=headers, rows=rows, tofu_note=tofu_note(cols),
                  up=UP, down=DOWN, na=NOT_AVAILABLE, partial_mark=PARTIAL_MARK)


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


# --- 2. scatter -------------------------------------------------------------------------------------


def _scatter_section(views: Sequence[ModelView], cols: Sequence[Column], colors: Mapping[str, str]) -> Html:
    fe_col = next(c for c in cols if c.key == "forget_efficacy")
    mu_col = next(c for c in cols if c.key == "model_utility")
    plot, skipped = scatter_svg(views, fe_col, mu_col, colors)
    hollow = any(cell_for(v, fe_col).partial or cell_for(v, mu_col).partial for v in views
                 if v.label not in {s for s, _ in skipped})
    return render("tradeoff.html", svg=plot, hollow=hollow, skipped=skipped)


def scatter_svg(views: Sequence[ModelView], x_col: Column, y_col: Column,
                colors: Mapping[str, str]) -> tuple[Html, list[tuple[str, str]]]:
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
    sx = svg.LinearScale(x_lo, x_hi, left, left + plot_w)
    sy = svg.LinearScale(y_lo, y_hi, top + plot_h, top)

    out = [svg.frame(left, top, plot_w, plot_h)]
    out += svg.x_grid(sx, _ticks(x_lo, x_hi), y0=top, y1=top + plot_h, label_y=top + plot_h + 18,
                      label=lambda t: f"{t:.1f}")
    out += svg.y_grid(sy, _ticks(y_lo, y_hi), x0=left, x1=left + plot_w, label=lambda t: f"{t:.1f}")
    x_arrow = "→" if x_col.higher_is_better else "←"
    y_arrow = "↑" if y_col.higher_is_better else "↓"
    out += svg.axis_titles(f"{x_col.full} ({x_col.short}) {x_arrow} better",
                           f"{y_col.full} ({y_col.short}) {y_arrow} better",
                           center_x=left + plot_w / 2, x_title_y=height - 14, y_title_x=18, center_y=top + plot_h / 2)
    # The corner both directions point to: where an ideal unlearned model would sit.
    corner_x = left + plot_w - 8 if x_col.higher_is_better else left + 8
    corner_y = top + 16 if y_col.higher_is_better else top + plot_h - 8
    anchor = "end" if x_col.higher_is_better else "start"
    glyph = {(True, True): "↗", (False, True): "↖", (True, False): "↘", (False, False): "↙"}[
        (x_col.higher_is_better, y_col.higher_is_better)]
    out.append(svg.text(corner_x, corner_y, f"better {glyph}", fill=svg.FAINT, anchor=anchor))

    screen = [(view, sx(x), sy(y), x, y, partial) for view, x, y, partial in points]
    placed_boxes: list[tuple[float, float, float, float]] = [
        (px - 7, py - 7, px + 7, py + 7) for _, px, py, _, _, _ in screen]
    # Labels may run into the right margin and above the plot, but not over the axis ticks.
    bounds = (left, 0, width, top + plot_h)
    leaders: list[Html] = []
    circles: list[Html] = []
    labels_svg: list[Html] = []
    bars: list[Html] = []
    for view, px, py, x, y, partial in screen:
        # 95 % bootstrap intervals of both aggregates as error bars through the point.
        for cell, horizontal, scale, at in ((cell_for(view, x_col), True, sx, py),
                                            (cell_for(view, y_col), False, sy, px)):
            if cell.ci is not None:
                bars.append(svg.error_bar(scale(cell.ci[0]), scale(cell.ci[1]), at, horizontal=horizontal,
                                          color=colors[view.label], width=1.2))
    for view, px, py, x, y, partial in screen:
        color = colors[view.label]
        tip = (f"{view.label}: {y_col.short} {format_value(y, y_col.metric)}, "
               f"{x_col.short} {format_value(x, x_col.metric)}{' (partial)' if partial else ''}")
        circles.append(svg.point(px, py, r=6, fill="#ffffff" if partial else color, stroke=color, stroke_width=2.5,
                                 tooltip=tip, cls="point", data={"model": view.label}))
        tx, ty, anchor, leader = place_label(view.label, px, py, placed_boxes, bounds)
        if leader:
            # From the point's centre to the label's near end, at the text's mid-height.
            end_x = tx - 3 if anchor == "start" else tx + 3
            leaders.append(svg.element("line", {"x1": svg.f1(px), "y1": svg.f1(py), "x2": svg.f1(end_x),
                                                "y2": svg.f1(ty - 4), "stroke": color, "stroke-width": 1}))
        labels_svg.append(svg.text(svg.f1(tx), svg.f1(ty), view.label, fill=color, anchor=anchor, font_weight=600,
                                   paint_order="stroke", stroke="#ffffff", stroke_width=3))
    # Leaders under the points, labels over everything: no point hides a label, no leader crosses a point.
    out.extend(bars + leaders + circles + labels_svg)
    return svg.svg("scatter", width, height, f"{y_col.full} against {x_col.full}", out), skipped


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
    return svg.ticks(lo, hi, 0.2 if hi - lo <= 2 else 0.5)


# --- 3. bar charts ----------------------------------------------------------------------------------


def _bars_section(views: Sequence[ModelView], cols: Sequence[Column], colors: Mapping[str, str]) -> Html:
    groups = [(set_title(set_name), [bar_chart(views, c, colors) for c in cols if c.set_name == set_name])
              for set_name in ordered_sets(views)]
    groups.append(("Aggregates", [bar_chart(views, c, colors) for c in cols if c.set_name is None]))
    return render("bars.html", groups=groups)


def bar_chart(views: Sequence[ModelView], column: Column, colors: Mapping[str, str]) -> Html:
    """A small horizontal bar chart of one column: one bar per model, its direction in the caption."""
    label_w, value_w, width = 118, 60, 330
    row_h, bar_h, top, axis_h = 20, 12, 4, 18
    bar_w = width - label_w - value_w
    values = [cell_for(v, column).value for v in views]
    hi = max([1.0] + [v for v in values if v is not None])
    best = best_labels(views, column)
    height = top + row_h * len(views) + axis_h
    length = svg.LinearScale(0.0, hi, 0.0, bar_w)  # value -> bar length
    axis = svg.LinearScale(0.0, hi, label_w, label_w + bar_w)
    out = svg.x_grid(axis, (0.0, 0.5, 1.0), y0=top, y1=top + row_h * len(views), label_y=height - 4,
                     label=lambda t: f"{t:g}", size=10, fill=svg.FAINT,
                     stroke=lambda t: "#afb8c1" if t == 0 else svg.GRID)
    for i, view in enumerate(views):
        cell = cell_for(view, column)
        y = top + i * row_h
        name = view.label if len(view.label) <= 17 else view.label[:16] + "…"
        out.append(svg.text(label_w - 6, y + 14, Html("").join([svg.element("title", None, view.label), name]),
                            size=11, anchor="end"))
        if cell.value is None:
            out.append(svg.text(label_w + 4, y + 14, Html("").join(
                [NOT_AVAILABLE, svg.element("title", None, cell.reason or "")]), size=11, fill=svg.FAINT,
                font_style="italic"))
            continue
        bar_len = length(max(0.0, min(cell.value, hi)))
        out.append(svg.bar(label_w, y + (row_h - bar_h) / 2, bar_len, bar_h, color=colors[view.label],
                           hollow=cell.partial))
        end = bar_len
        if cell.ci is not None:
            # The 95 % bootstrap interval as an error bar across the bar's end.
            lo, hi_x = (length(max(0.0, min(v, hi))) for v in cell.ci)
            low, high = (format_value(v, column.metric) for v in cell.ci)
            out.append(svg.error_bar(label_w + lo, label_w + hi_x, y + row_h / 2, horizontal=True, color=svg.INK,
                                     width=1.2, tooltip=f"95 % interval {low} – {high}"))
            end = max(end, hi_x)
        text = format_value(cell.value, column.metric) + (PARTIAL_MARK if cell.partial else "")
        out.append(svg.text(svg.f1(label_w + end + 5), y + 14, text, size=11,
                            font_weight=700 if view.label in best else None))
    direction = "higher is better" if column.higher_is_better else "lower is better"
    return render("bar_figure.html", title=column.full, direction=f"{column.arrow} {direction}",
                  svg=svg.svg("bars", width, height, _direction_title(column), out))


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


def _generations_section(views: Sequence[ModelView], colors: Mapping[str, str], limit: int) -> Html:
    blocks = []
    for set_name in GENERATION_SETS if limit else ():
        present = [v for v in views if set_name in v.sets]
        if not present:
            continue
        blocks.append({"title": set_title(set_name),
                       "questions": [_question_block(views, set_name, q, colors)
                                     for q in shared_questions(views, set_name, limit)],
                       "without": [v.label for v in present if not v.sets[set_name].items]})
    return render("generations.html", limit=limit, sets=blocks)


def _question_block(views: Sequence[ModelView], set_name: str, question: str,
                    colors: Mapping[str, str]) -> dict[str, Any]:
    reference: str | None = None
    cards: list[dict[str, Any]] = []
    for view in views:
        set_view = view.sets.get(set_name)
        item = next((it for it in set_view.items if it.question == question), None) if set_view else None
        if item is None:
            continue
        if reference is None:
            reference = item.reference
        cards.append({"label": view.label, "color": colors[view.label], "generation": item.generation,
                      "score": format_value(item.rouge_l, "rouge_l") if item.rouge_l is not None else None})
    return {"question": question, "reference": reference, "cards": cards}


# --- 5. notes ---------------------------------------------------------------------------------------


def _notes_section(views: Sequence[ModelView], cols: Sequence[Column]) -> Html:
    unavailable = _notes_table(("Model", "Metric", "Where", "Reason"),
                               [(label, metric, where, reason)
                                for label, where, metric, reason in unavailable_notes(views, cols)])
    partial = _notes_table(("Model", "Aggregate", "Note", "Missing components"),
                           [(label, name, note, ", ".join(missing) or "—")
                            for label, name, note, missing in partial_notes(views)])

    other_names: list[str] = []
    for view in views:
        other_names += [name for name in view.other_aggregates if name not in other_names]
    other = None
    if other_names:
        rows = []
        for view in views:
            row = [view.label]
            for name in other_names:
                cell = view.other_aggregates.get(name)
                row.append("—" if cell is None else format_cell(cell, name) if cell.value is not None
                           else f"{NOT_AVAILABLE} ({cell.reason})")
            rows.append(tuple(row))
        other = {"tofu": "model_utility_tofu" in other_names, **_notes_table(("Model", *other_names), rows,
                                                                               numeric=True)}

    sets = ordered_sets(views)
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
    return render("notes.html", unavailable=unavailable, partial=partial, other=other,
                  sizes=_notes_table(("Model", *[set_title(s) for s in sets]), size_rows, numeric=True),
                  conflicts=[c.key for c in cols if c.conflict], **_settings(views))


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


def _settings(views: Sequence[ModelView]) -> dict[str, Any]:
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
    header = ("Model", *[h for h, _ in varying], "Results file")
    rows = [(view.label, *[values[i] for _, values in varying], view.source) for i, view in enumerate(views)]
    code = {i + 1 for i, (h, _) in enumerate(varying) if h == "Checkpoint"} | {len(header) - 1}
    return {"shared": shared, "settings": _notes_table(header, rows, code_columns=code)}


def _notes_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, code_columns: set[int] | None = None,
                 numeric: bool = False) -> dict[str, Any]:
    """A notes table for the ``notes_table`` macro: each cell with its kind, ``code`` for the ``code_columns``
    (unless "—"), ``num`` (figures, aligned) after column 0 when ``numeric``."""
    code_columns = code_columns or set()

    def kind(i: int, cell: str) -> str:
        if i in code_columns and cell != "—":
            return "code"
        return "num" if numeric and i > 0 else ""

    return {"header": list(header), "rows": [[(kind(i, cell), cell) for i, cell in enumerate(row)] for row in rows]}
