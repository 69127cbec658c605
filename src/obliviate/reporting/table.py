"""The paper-style results table: columns, number formatting, best values, and the Markdown rendering.

One row per model; columns are every set × the six metrics (ROUGE-L, Prob, TR, TE, CS, ES), then the
aggregates MU, FE, FQ. The HTML report builds its table from the same :func:`columns` and
:func:`format_value`, so the two renderings always agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.reporting.general import general_markdown
from obliviate.reporting.intervals import intervals_markdown
from obliviate.reporting.privacy import privacy_markdown
from obliviate.reporting.probes import probes_markdown
from obliviate.reporting.results import (
    AGGREGATES,
    EXTRA_METRICS,
    METRICS,
    Cell,
    ModelView,
    default_direction,
    markdown_cell,
    missing_cell,
    model_views,
    ordered_sets,
)

NOT_AVAILABLE = "n/a"
PARTIAL_MARK = "*"
UP, DOWN = "↑", "↓"

SCIENTIFIC_BELOW = 1e-3
"""Forget quality is a p-value; below this it is written in scientific notation so that 3e-12 ≠ 0.000."""


@dataclass(frozen=True)
class Column:
    """One table column: a set's metric (``set_name`` given) or an aggregate (``set_name`` is ``None``).

    ``higher_is_better`` comes from the records (the first that states it); ``conflict`` is set when two
    records disagree, which the notes then report.
    """

    set_name: str | None
    metric: str
    short: str
    full: str
    higher_is_better: bool
    conflict: bool = False

    @property
    def key(self) -> str:
        """``forget.rouge_l`` for a set metric, ``model_utility`` for an aggregate."""
        return f"{self.set_name}.{self.metric}" if self.set_name else self.metric

    @property
    def arrow(self) -> str:
        """↑ when higher is better, ↓ when lower is."""
        return UP if self.higher_is_better else DOWN


def cell_for(view: ModelView, column: Column) -> Cell:
    """The cell of ``view`` in ``column``; a placeholder saying "not recorded" when the record lacks it."""
    if column.set_name is None:
        cell = view.aggregates.get(column.metric)
        return cell if cell is not None else missing_cell(column.higher_is_better, column.full)
    set_view = view.sets.get(column.set_name)
    if set_view is None:
        return missing_cell(column.higher_is_better, f"set '{column.set_name}'")
    cell = set_view.metrics.get(column.metric)
    return cell if cell is not None else missing_cell(column.higher_is_better, column.full)


def columns(views: Sequence[ModelView]) -> list[Column]:
    """Every column of the table for these models: sets present in any record × six metrics, then aggregates.

    A metric of :data:`EXTRA_METRICS` (TOFU's truth ratio on the forget set) follows the metric it belongs with,
    in the sets where at least one record has it.
    """
    out: list[Column] = []
    for set_name in ordered_sets(views):
        own = _own_metrics(views, set_name)
        for metric, short, full in own or METRICS:
            out.append(_column(views, set_name, metric, short, full))
            for extra, extra_short, extra_full, after in EXTRA_METRICS:
                if after == metric and any(extra in v.sets[set_name].metrics for v in views if set_name in v.sets):
                    out.append(_column(views, set_name, extra, extra_short, extra_full))
    for metric, short, full in AGGREGATES:
        out.append(_column(views, None, metric, short, full))
    return out


OWN_METRICS: dict[str, tuple[str, str]] = {
    "rouge_l_f1": ("ROUGE-L F1", "ROUGE-L F1 (MUSE)"),
    "accuracy": ("Acc", "Multiple-choice accuracy (lm-eval)"),
}
"""Labels of the metrics that sets of other benchmarks (MUSE, WMDP) are measured by."""


def _own_metrics(views: Sequence[ModelView], set_name: str) -> list[tuple[str, str, str]]:
    """A set measured by none of the six metrics (MUSE's, WMDP's) gets columns for the metrics it has."""
    six = {m for m, _, _ in METRICS}
    names: list[str] = []
    for view in views:
        set_view = view.sets.get(set_name)
        if set_view is None:
            continue
        if six & set(set_view.metrics):
            return []
        names += [m for m in set_view.metrics if m not in names]
    return [(m, *OWN_METRICS.get(m, (m, m))) for m in names]


def _column(views: Sequence[ModelView], set_name: str | None, metric: str, short: str, full: str) -> Column:
    stated: list[bool] = []
    for view in views:
        if set_name is None:
            cell = view.aggregates.get(metric)
        else:
            set_view = view.sets.get(set_name)
            cell = set_view.metrics.get(metric) if set_view else None
        if cell is not None and cell.higher_is_better is not None:
            stated.append(cell.higher_is_better)
    direction = stated[0] if stated else default_direction(set_name, metric)
    return Column(set_name=set_name, metric=metric, short=short, full=full, higher_is_better=direction,
                  conflict=len(set(stated)) > 1)


def format_value(value: float | None, metric: str) -> str:
    """A table number: 3 decimals; forget quality below 0.001 in scientific notation; ``None`` → ``n/a``."""
    if value is None:
        return NOT_AVAILABLE
    if metric == "forget_quality" and 0 < abs(value) < SCIENTIFIC_BELOW:
        return f"{value:.2e}"
    return f"{value:.3f}"


def format_cell(cell: Cell, metric: str) -> str:
    """:func:`format_value` plus the partial marker (``0.412*``) for a partial aggregate."""
    text = format_value(cell.value, metric)
    return text + PARTIAL_MARK if cell.partial else text


def best_labels(views: Sequence[ModelView], column: Column) -> set[str]:
    """Labels of the models holding the best value in ``column`` (ties all count); empty with under two values.

    A single number has nothing to be best against, so nothing is highlighted then.
    """
    values = {view.label: cell_for(view, column).value for view in views}
    present = {label: v for label, v in values.items() if v is not None}
    if len(present) < 2:
        return set()
    best = max(present.values()) if column.higher_is_better else min(present.values())
    # Compare at the shown precision: two values that print the same are equally best.
    shown = format_value(best, column.metric)
    return {label for label, v in present.items() if format_value(v, column.metric) == shown}


def unavailable_notes(views: Sequence[ModelView], cols: Sequence[Column]) -> list[tuple[str, str, str, str]]:
    """Unavailable values grouped as (model, where, metric, reason), one row per model × metric × reason.

    An NLI model that failed to load makes entailment unavailable on all four sets; that is one row
    ("forget, retain, real authors, world facts"), not four.
    """
    groups: dict[tuple[str, str, str], list[str]] = {}
    for view in views:
        for column in cols:
            cell = cell_for(view, column)
            if cell.value is not None:
                continue
            key = (view.label, column.full, cell.reason or "")
            groups.setdefault(key, []).append(column.set_name or "aggregate")
    rows: list[tuple[str, str, str, str]] = []
    for (label, metric, reason), places in groups.items():
        where = "aggregate" if places == ["aggregate"] else ", ".join(p.replace("_", " ") for p in places)
        rows.append((label, where, metric, reason))
    return rows


def partial_notes(views: Sequence[ModelView]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """Partial aggregates as (model, aggregate name, note, missing components)."""
    rows: list[tuple[str, str, str, tuple[str, ...]]] = []
    for view in views:
        for metric, _, full in AGGREGATES:
            cell = view.aggregates.get(metric)
            if cell is not None and cell.partial:
                rows.append((view.label, full, cell.note or "computed over the available components only",
                             cell.missing))
    return rows


def tofu_note(cols: Sequence[Column]) -> str:
    """The legend's words on TOFU's truth ratio, when the table has that column (else empty)."""
    if not any(c.metric == "truth_ratio_tofu" for c in cols):
        return ""
    return (" TR (TOFU) = the forget set's truth ratio in TOFU's form, mean(min(x, 1/x)), higher is better; "
            "TR is the paper's code's form, 1 − mean(min(x, 1/x)), lower is better (docs/metrics.md).")


def markdown_table(results_list: Sequence[Mapping[str, Any]]) -> str:
    """The paper-style table in GitHub Markdown, with footnotes for partial and unavailable values.

    Headers carry the direction (``forget ROUGE-L ↓``: lower is better). Numbers have 3 decimals; forget
    quality below 0.001 uses scientific notation; unavailable values read ``n/a``; a partial aggregate
    is marked ``*`` and explained below the table.
    """
    views = model_views(results_list)
    cols = columns(views)
    header = ["model"] + [
        f"{(c.set_name + ' ') if c.set_name else ''}{c.short} {c.arrow}" for c in cols
    ]
    lines = [
        "| " + " | ".join(markdown_cell(h) for h in header) + " |",
        "|" + "|".join([":---"] + ["---:"] * len(cols)) + "|",
    ]
    for view in views:
        cells = [format_cell(cell_for(view, c), c.metric) for c in cols]
        lines.append("| " + " | ".join([markdown_cell(view.label)] + cells) + " |")

    notes: list[str] = [f"{UP} higher is better, {DOWN} lower is better. "
                        "ROUGE-L = ROUGE-L recall, Prob = probability, TR = truth ratio, TE = token entropy, "
                        "CS = cosine similarity, ES = entailment score, MU = model utility, FE = forget efficacy, "
                        "FQ = forget quality." + tofu_note(cols)]
    partial = partial_notes(views)
    if partial:
        # Escaped: a line starting "* " would be a Markdown list item.
        notes.append(f"\\{PARTIAL_MARK} Partial aggregate, computed over the available components only:")
        for label, name, note, missing in partial:
            # The aggregate's note usually names what is missing already; say it only when it does not.
            unnamed = [m for m in missing if m not in note]
            missing_text = f" (missing: {', '.join(unnamed)})" if unnamed else ""
            notes.append(f"- {markdown_cell(label)}, {name}: {markdown_cell(note)}{markdown_cell(missing_text)}")
    unavailable = unavailable_notes(views, cols)
    if unavailable:
        notes.append(f"{NOT_AVAILABLE}: not available —")
        for label, where, metric, reason in unavailable:
            notes.append(f"- {markdown_cell(label)}, {metric} ({where}): {markdown_cell(reason)}")
    conflicts = [c for c in cols if c.conflict]
    if conflicts:
        names = ", ".join(c.key for c in conflicts)
        notes.append(f"Records disagree on the direction of {names}; the first record's direction is shown.")
    # The lm-eval "General ability" table, privacy and memorisation, the intervals and the robustness
    # probes follow, when present.
    return ("\n".join(lines) + "\n\n" + "\n".join(_join_paragraphs(notes)) + "\n" + general_markdown(views)
            + privacy_markdown(views) + intervals_markdown(views) + probes_markdown(views))


def _join_paragraphs(notes: list[str]) -> list[str]:
    """Blank lines between paragraphs, but not between a heading line and its list items."""
    out: list[str] = []
    for note in notes:
        if out and not note.startswith("- "):
            out.append("")
        out.append(note)
    return out
