"""Reports of the newer parts of a record: privacy and memorisation, confidence intervals, overlap statements,
mean ± std across seeds — and the validation of the fields behind them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from obliviate.errors import DataError
from obliviate.reporting import html_report, load_results, markdown_table, validate_results
from obliviate.reporting.intervals import mean_std, overlap_statements, seed_groups
from obliviate.reporting.results import model_views

from test_report import FIXTURES, RUNS, parse, small_record


def with_uncertainty(method: str, *, mu: float, mu_ci: list[float], leak: float | None = -40.0,
                     seed: int = 1, em: float = 0.8) -> dict[str, Any]:
    """A small record with intervals, memorisation values and a privacy section."""
    record = small_record(method, mu=mu)
    record["aggregates"]["model_utility"]["ci"] = mu_ci
    record["aggregates"]["forget_efficacy"]["ci"] = [0.5, 0.7]
    record["sets"]["forget"]["metrics"]["exact_memorization"] = {"value": em, "higher_is_better": False,
                                                                 "ci": [em - 0.1, em + 0.05], "reference": 0.2}
    leak_entry: dict[str, Any] = {"value": leak, "higher_is_better": None, "target": 0.0, "attack": "min_k"}
    if leak is None:
        leak_entry.update(available=False, reason="no retain model: pass --retain-model or --retain-results")
    else:
        leak_entry["ci"] = [leak - 10.0, leak + 5.0]
    record["privacy"] = {"available": True, "members": "forget", "nonmembers": "holdout", "metrics": {
        "auc_min_k": {"value": 0.8, "higher_is_better": None, "target": 0.55, "reference": 0.55,
                      "ci": [0.7, 0.9]},
        "privacy_leakage": leak_entry}}
    record["run"]["config"] = {"method": {"name": method}, "train": {"seed": seed, "learning_rate": 1e-5},
                               "output_dir": f"runs/{method}-{seed}"}
    record["seed"] = seed
    return record


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r["aggregates"]["model_utility"].update(ci=[0.6, 0.4]), "aggregates.model_utility.ci"),
    (lambda r: r["aggregates"]["model_utility"].update(ci=[0.4]), "aggregates.model_utility.ci"),
    (lambda r: r["sets"]["forget"]["metrics"]["exact_memorization"].update(reference="x"),
     "sets.forget.metrics.exact_memorization.reference"),
    (lambda r: r["privacy"].update(available="yes"), "privacy.available"),
    (lambda r: r["privacy"].pop("metrics"), "privacy.metrics"),
    (lambda r: r["privacy"]["metrics"]["auc_min_k"].update(higher_is_better="no"),
     "privacy.metrics.auc_min_k.higher_is_better"),
    (lambda r: r.update(privacy={"available": False}), "privacy.reason"),
])
def test_malformed_new_fields_name_the_field(mutate, field: str) -> None:
    record = with_uncertainty("A", mu=0.5, mu_ci=[0.4, 0.6])
    validate_results(record)
    mutate(record)
    with pytest.raises(DataError) as err:
        validate_results(record, "r.json")
    assert err.value.field == field


def test_a_null_direction_is_only_for_privacy_entries() -> None:
    record = with_uncertainty("A", mu=0.5, mu_ci=[0.4, 0.6])
    record["aggregates"]["model_utility"]["higher_is_better"] = None
    with pytest.raises(DataError, match="expected true or false"):
        validate_results(record)


def test_records_without_the_new_parts_report_as_before() -> None:
    results = [load_results(FIXTURES / run) for run in RUNS]
    table = markdown_table(results)
    assert "Privacy and memorisation" not in table and "confidence intervals" not in table
    page = html_report(results)
    assert 'id="privacy"' not in page and 'id="uncertainty"' not in page and "errorbar" not in page


# --- Markdown ---------------------------------------------------------------------------------------


def test_markdown_privacy_table_and_intervals() -> None:
    table = markdown_table([with_uncertainty("A", mu=0.5, mu_ci=[0.4, 0.6]),
                            with_uncertainty("B", mu=0.55, mu_ci=[0.45, 0.65], leak=None, seed=2),
                            with_uncertainty("C", mu=0.8, mu_ci=[0.7, 0.9], leak=2.0, seed=3)])
    assert "### Privacy and memorisation" in table
    assert "| A | 0.800 [0.700, 0.850] | 0.800 [0.700, 0.900] | -40.0% [-50.0%, -35.0%] |" in table
    assert "| B | 0.800 [0.700, 0.850] | 0.800 [0.700, 0.900] | n/a |" in table
    assert "| Forget EM ↓ | Min-K% → | PrivLeak → |" in table
    assert "### 95 % confidence intervals" in table
    # No record has an FQ interval, so the table has no FQ column.
    assert "| model | MU | FE | PrivLeak |" in table
    assert "| A | 0.500 [0.400, 0.600] | 0.600 [0.500, 0.700] | -40.0% [-50.0%, -35.0%] |" in table
    # MU: A and B overlap (0.45 ≤ 0.6), C overlaps neither; PrivLeak: only A and C have one, apart.
    assert "- MU: overlap A – B; separate A – C, B – C" in table
    assert "- PrivLeak: overlap none; separate A – C" in table


def test_overlap_statements_by_hand() -> None:
    views = model_views([with_uncertainty("A", mu=0.2, mu_ci=[0.1, 0.3]),
                         with_uncertainty("B", mu=0.3, mu_ci=[0.3, 0.5]),     # touches A's end: overlap
                         with_uncertainty("C", mu=0.65, mu_ci=[0.6, 0.7])])
    statements = {h.short: (same, apart) for h, same, apart in overlap_statements(views)}
    assert statements["MU"] == ([("A", "B")], [("A", "C"), ("B", "C")])
    assert statements["FE"] == ([("A", "B"), ("A", "C"), ("B", "C")], [])


# --- across seeds -----------------------------------------------------------------------------------


def test_runs_that_differ_only_in_seed_are_summarised() -> None:
    records = [with_uncertainty("ME+GD", mu=mu, mu_ci=[mu - 0.1, mu + 0.1], seed=s, em=em)
               for s, mu, em in ((1, 0.4, 0.7), (2, 0.5, 0.8), (3, 0.6, 0.9))]
    other = with_uncertainty("ME+GD", mu=0.9, mu_ci=[0.8, 1.0], seed=4)
    other["run"]["config"]["train"]["learning_rate"] = 2e-5           # another setting: not the same runs
    single = with_uncertainty("IDK+AP", mu=0.3, mu_ci=[0.2, 0.4], seed=1)
    groups = seed_groups(model_views(records + [other, single]))
    assert [(g.label, g.seeds, len(g.views)) for g in groups] == [("ME+GD", (1, 2, 3), 3)]
    # MU 0.4, 0.5, 0.6: mean 0.5, sample standard deviation sqrt((0.01 + 0 + 0.01) / 2) = 0.1.
    table = markdown_table(records + [other, single])
    assert "### Across seeds" in table
    assert "| ME+GD | 1, 2, 3 | 0.500 ± 0.100 | 0.600 ± 0.000 | n/a | -40.0% ± 0.0% | 0.800 ± 0.100 | n/a |" in table
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, (5 / 3) ** 0.5))
    with pytest.raises(ValueError):
        mean_std([1.0])


def test_the_same_seed_twice_is_not_a_seed_group() -> None:
    records = [with_uncertainty("A", mu=0.5, mu_ci=[0.4, 0.6], seed=1) for _ in range(2)]
    assert seed_groups(model_views(records)) == []


# --- HTML -------------------------------------------------------------------------------------------


def test_html_sections_error_bars_and_well_formed(tmp_path: Path) -> None:
    records = [with_uncertainty("A", mu=0.5, mu_ci=[0.4, 0.6]),
               with_uncertainty("B", mu=0.55, mu_ci=[0.45, 0.65], leak=12.5, seed=2)]
    page = html_report(records)
    tree = parse(page)
    assert tree.errors == [] and [t for t, _ in tree.stack] == []
    assert 'id="privacy"' in page and 'id="uncertainty"' in page
    # Error bars: MU (scatter, vertical) and FE (scatter, horizontal) of both models, the MU and FE bar charts,
    # and the leakage chart's two intervals.
    assert page.count('class="errorbar"') == 4 + 4 + 2
    assert "-40.0% [-50.0%, -35.0%]" in page and "+12.5% [+2.5%, +17.5%]" in page
    # Closest to the target (0) is best for the leakage; lower is best for forget EM (a tie here).
    assert ("B", "+12.5%[+2.5%, +17.5%]") in tree.best_cells
    assert 'title="95 % interval 0.400 – 0.600"' in page


def test_unavailable_privacy_is_explained() -> None:
    record = with_uncertainty("A", mu=0.5, mu_ci=[0.4, 0.6])
    record["privacy"] = {"available": False, "reason": "no holdout set (non-members): give one with --holdout"}
    page = html_report([record])
    assert "No privacy attacks for: A (no holdout set" in page
    assert "- A: no privacy attacks — no holdout set" in markdown_table([copy.deepcopy(record)])
    json.dumps(record)  # still plain JSON
