"""The "Privacy and memorisation" part of a report: exact memorisation and extraction strength on the forget and
retain sets, the membership-inference AUC of every attack and the privacy leakage (docs/metrics.md), each with
its bootstrap interval, as a Markdown table and an HTML section with an error-bar chart of the leakage.

Both are empty strings when no record has these values (records written before they existed), so such reports
are unchanged. The AUCs and the leakage have no better direction: the best value is the one closest to the
record's ``target`` (the retain model's AUC; 0 for the leakage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.reporting import svg
from obliviate.reporting.render import Html, render
from obliviate.reporting.results import Cell, ModelView

NOT_AVAILABLE = "n/a"
UP, DOWN, TARGET = "↑", "↓", "→"


@dataclass(frozen=True)
class PrivacyColumn:
    """A column: a set's memorisation metric (``set_name`` given) or a privacy metric (``set_name`` None)."""

    set_name: str | None
    key: str
    short: str
    full: str

    def cell(self, view: ModelView) -> Cell | None:
        if self.set_name is None:
            return view.privacy.get(self.key)
        set_view = view.sets.get(self.set_name)
        return set_view.metrics.get(self.key) if set_view is not None else None


MEMORIZATION_COLUMNS: tuple[PrivacyColumn, ...] = (
    PrivacyColumn("forget", "exact_memorization", "Forget EM", "Exact memorisation, forget set"),
    PrivacyColumn("forget", "extraction_strength", "Forget Extr.", "Extraction strength, forget set"),
    PrivacyColumn("retain", "exact_memorization", "Retain EM", "Exact memorisation, retain set"),
    PrivacyColumn("retain", "extraction_strength", "Retain Extr.", "Extraction strength, retain set"),
)
PRIVACY_COLUMNS: tuple[PrivacyColumn, ...] = (
    PrivacyColumn(None, "auc_loss", "LOSS", "AUC of the LOSS attack"),
    PrivacyColumn(None, "auc_zlib", "ZLib", "AUC of the ZLib attack"),
    PrivacyColumn(None, "auc_min_k", "Min-K%", "AUC of the Min-K% Prob attack"),
    PrivacyColumn(None, "auc_min_k_plus_plus", "Min-K%++", "AUC of the Min-K%++ attack"),
    PrivacyColumn(None, "auc_gradnorm", "GradNorm", "AUC of the GradNorm attack"),
    PrivacyColumn(None, "auc_reference", "Ref.", "AUC of the reference-model attack"),
    PrivacyColumn(None, "privacy_leakage", "PrivLeak", "Privacy leakage (Min-K%), % against the retain model"),
)
COLUMNS = MEMORIZATION_COLUMNS + PRIVACY_COLUMNS


def _present(views: Sequence[ModelView]) -> list[PrivacyColumn]:
    """The columns some record has an entry for."""
    return [c for c in COLUMNS if any(c.cell(v) is not None for v in views)]


def format_number(key: str, value: float | None) -> str:
    """3 decimals; the privacy leakage (a percentage) with 1 decimal and a sign."""
    if value is None:
        return NOT_AVAILABLE
    return f"{value:+.1f}%" if key.startswith("privacy_leakage") else f"{value:.3f}"


def format_interval(key: str, ci: tuple[float, float] | None) -> str:
    """``[0.412, 0.455]`` (``[-12.0%, +3.1%]`` for the leakage), or ``""`` without an interval."""
    if ci is None:
        return ""
    return f"[{format_number(key, ci[0])}, {format_number(key, ci[1])}]"


def _arrow(cell: Cell | None) -> str:
    if cell is None:
        return ""
    if cell.higher_is_better is None:
        return TARGET
    return UP if cell.higher_is_better else DOWN


def column_arrow(views: Sequence[ModelView], column: PrivacyColumn) -> str:
    """↑/↓ by the first record's direction; → (closest to the target is best) where there is none."""
    for view in views:
        arrow = _arrow(column.cell(view))
        if arrow:
            return arrow
    return ""


def best_labels(views: Sequence[ModelView], column: PrivacyColumn) -> set[str]:
    """Labels with the best value of a column at the shown precision; nothing with fewer than two values.

    Without a direction, best means closest to each record's own target (the leakage's target is 0).
    """
    scored: dict[str, float] = {}
    for view in views:
        cell = column.cell(view)
        if cell is None or cell.value is None:
            continue
        if cell.higher_is_better is None:
            if cell.target is None:
                continue
            scored[view.label] = -abs(cell.value - cell.target)
        else:
            scored[view.label] = cell.value if cell.higher_is_better else -cell.value
    if len(scored) < 2:
        return set()
    top = max(scored.values())
    shown = format_number(column.key, abs(top))
    return {label for label, s in scored.items() if format_number(column.key, abs(s)) == shown}


def _has_content(views: Sequence[ModelView]) -> bool:
    return bool(_present(views)) or any(v.results.get("privacy") is not None for v in views)


def _unavailable(views: Sequence[ModelView]) -> list[tuple[str, str]]:
    """(model, reason) for records whose privacy section is unavailable."""
    return [(v.label, v.privacy_reason) for v in views if not v.privacy and v.privacy_reason
            and v.results.get("privacy") is not None]


# --- Markdown ---------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def privacy_markdown(views: Sequence[ModelView]) -> str:
    """The "Privacy and memorisation" table (value and interval per cell) and its notes; ``""`` if no record
    has these values."""
    if not _has_content(views):
        return ""
    cols = _present(views)
    lines = ["", "### Privacy and memorisation", ""]
    if cols:
        lines += ["| " + " | ".join(["model"] + [_md(f"{c.short} {column_arrow(views, c)}") for c in cols]) + " |",
                  "|" + "|".join([":---"] + ["---:"] * len(cols)) + "|"]
        for view in views:
            cells = []
            for c in cols:
                cell = c.cell(view)
                value = cell.value if cell is not None else None
                interval = format_interval(c.key, cell.ci if cell is not None else None)
                cells.append(format_number(c.key, value) + (f" {interval}" if interval else ""))
            lines.append("| " + " | ".join([_md(view.label)] + cells) + " |")
        lines += ["", "EM = exact memorisation, Extr. = extraction strength (↓ on the forget set, ↑ on the retain "
                      "set). LOSS … Ref. = AUC of each membership-inference attack, forget set (members) against the "
                      "holdout set (non-members): 1 = every member recognised, 0.5 = chance. PrivLeak = privacy "
                      "leakage (MUSE), relative difference from the retain model's Min-K% AUC: near 0 is good, "
                      "negative = under-unlearned, positive = over-unlearned. → closest to the retain model's "
                      "value is best. Brackets: 95 % bootstrap intervals."]
    for label, reason in _unavailable(views):
        lines.append(f"- {_md(label)}: no privacy attacks — {_md(reason)}")
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------------------


def privacy_html(views: Sequence[ModelView], colors: Mapping[str, str]) -> str:
    """The "Privacy and memorisation" section: the table with intervals, the leakage chart with error bars, and
    why a model has no attacks; ``""`` when no record has these values."""
    if not _has_content(views):
        return ""
    cols = _present(views)
    headers = [{"full": c.full, "short": c.short, "arrow": column_arrow(views, c)} for c in cols]
    best = {c.key if c.set_name is None else f"{c.set_name}.{c.key}": best_labels(views, c) for c in cols}
    rows = []
    for view in views:
        cells: list[dict[str, Any]] = []
        for c in cols:
            cell = c.cell(view)
            if cell is None or cell.value is None:
                reason = cell.reason if cell is not None else "not recorded for this model"
                cells.append({"na": True, "reason": reason or ""})
                continue
            key = c.key if c.set_name is None else f"{c.set_name}.{c.key}"
            cells.append({"na": False, "best": view.label in best[key], "text": format_number(c.key, cell.value),
                          "interval": format_interval(c.key, cell.ci),
                          "reference": None if cell.reference is None else format_number(c.key, cell.reference)})
        rows.append({"label": view.label, "cells": cells})
    return render("privacy.html", headers=headers, rows=rows, na=NOT_AVAILABLE,
                  chart=leakage_chart(views, colors) if cols else "", unavailable=_unavailable(views))


def leakage_chart(views: Sequence[ModelView], colors: Mapping[str, str]) -> str:
    """One row per model: its privacy leakage as a dot, its interval as an error bar, 0 (ideal) marked."""
    rows = [(v, v.privacy.get("privacy_leakage")) for v in views]
    rows = [(v, c) for v, c in rows if c is not None and c.value is not None]
    if not rows:
        return ""
    extent = max([100.0] + [abs(c.value) for _, c in rows] + [abs(x) for _, c in rows if c.ci for x in c.ci])
    label_w, value_w, width, row_h, top, axis_h = 130, 150, 640, 22, 6, 20
    plot_w = width - label_w - value_w
    height = top + row_h * len(rows) + axis_h
    sx = svg.LinearScale(-extent, extent, label_w, label_w + plot_w)
    out = svg.x_grid(sx, (-extent, -extent / 2, 0.0, extent / 2, extent), y0=top, y1=top + row_h * len(rows),
                     label_y=height - 5, label=lambda t: f"{t:+.0f}%", size=10, fill=svg.FAINT,
                     stroke=lambda t: "#57606a" if t == 0 else svg.GRID,
                     stroke_width=lambda t: 1.5 if t == 0 else 1)
    for i, (view, cell) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        color = colors.get(view.label, "#4e79a7")
        name = view.label if len(view.label) <= 19 else view.label[:18] + "…"
        out.append(svg.text(label_w - 8, svg.f1(y + 4), Html("").join([svg.element("title", None, view.label), name]),
                            size=11, anchor="end"))
        if cell.ci is not None:
            out.append(svg.error_bar(sx(cell.ci[0]), sx(cell.ci[1]), y, horizontal=True, color=color, width=2, cap=5))
        out.append(svg.point(sx(cell.value), y, r=5, fill=color,
                             tooltip=f"{view.label}: {format_number('privacy_leakage', cell.value)}"))
        text = format_number("privacy_leakage", cell.value)
        if cell.ci is not None:
            text += " " + format_interval("privacy_leakage", cell.ci)
        out.append(svg.text(label_w + plot_w + 8, svg.f1(y + 4), text, size=11))
    return render("bar_figure.html", title="Privacy leakage (Min-K%)",
                  direction="→ 0 is best; left = under-unlearned, right = over-unlearned",
                  svg=svg.svg("bars", width, height, "Privacy leakage per model, with 95 % intervals", out))
