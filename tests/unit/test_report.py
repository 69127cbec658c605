"""Reports from results.json: loading errors, the Markdown table, the self-contained HTML page, atomic writes.

The fixtures in tests/fixtures/results are hand-written records (one per model: target, retain, ME+GD,
IDK+AP, GA+GD) following docs/results.md. The numbers asserted below are read off those files.
"""

from __future__ import annotations

import copy
import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from obliviate.errors import DataError, ObliviateError
from obliviate.reporting import html_report, label_for, load_results, markdown_table, write_report
from obliviate.reporting.table import format_value

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"
RUNS = ("target", "retain", "me_gd", "idk_ap", "ga_gd")
LABELS = ("target", "retain", "ME+GD", "IDK+AP", "GA+GD")


@pytest.fixture(scope="module")
def fixture_results() -> list[dict[str, Any]]:
    """The five fixture records, loaded from their run folders in table order."""
    return [load_results(FIXTURES / run) for run in RUNS]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def metric(value: float | None, higher: bool, reason: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": value, "higher_is_better": higher}
    if value is None:
        entry.update(available=False, reason=reason or "not computed")
    return entry


def small_record(method: str, *, generation: str = "Ann wrote it.", mu: float | None = 0.5,
                 fe: float | None = 0.6) -> dict[str, Any]:
    """A minimal valid record: a forget and a retain set with one item each, and the three aggregates."""
    def one_set(kind: str, question: str) -> dict[str, Any]:
        lower = kind == "forget"
        return {"size": 1, "rows_available": 10, "kind": kind,
                "metrics": {"rouge_l": metric(0.25, not lower), "entailment": metric(None, not lower, "no NLI")},
                "items": [{"question": question, "reference": "Ann wrote it.", "generation": generation,
                           "rouge_l": 0.25}]}
    return {
        "schema_version": 1,
        "run": {"method": method},
        "sets": {"forget": one_set("forget", "Who wrote it?"), "retain": one_set("retain", "Who read it?")},
        "aggregates": {
            "model_utility": metric(mu, True, "no utility sets"),
            "forget_efficacy": metric(fe, True, "no forget set"),
            "forget_quality": metric(None, True, "no retain model: pass --retain-model or --retain-results"),
        },
    }


# --- loading ----------------------------------------------------------------------------------------


def test_fixtures_load_from_file_run_folder_and_eval_subfolder(fixture_results: list[dict[str, Any]]) -> None:
    # target/results.json sits in the run folder; retain and ga_gd keep theirs in eval/.
    sources = [Path(r["_source"]) for r in fixture_results]
    assert sources[0] == FIXTURES / "target" / "results.json"
    assert sources[1] == FIXTURES / "retain" / "eval" / "results.json"
    assert load_results(FIXTURES / "me_gd" / "results.json")["run"]["method"] == "ME+GD"
    assert [label_for(r) for r in fixture_results] == list(LABELS)


def test_label_falls_back_to_folder_then_model_spec(tmp_path: Path) -> None:
    record = small_record("")
    record["model"] = {"spec": "runs/x/model"}
    assert label_for(record) == "runs/x/model"  # no method, no file: the model spec
    loaded = load_results(write_json(tmp_path / "step_3" / "eval" / "results.json", record))
    assert label_for(loaded) == "step_3"  # the run folder, not "eval"
    named = load_results(write_json(tmp_path / "npo_forget10.json", record))
    assert label_for(named) == "npo_forget10"


def test_missing_path_and_folder_without_results_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file") as err:
        load_results(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "run").mkdir()
    with pytest.raises(DataError, match=r"eval/results\.json") as err:
        load_results(tmp_path / "run")
    assert err.value.path == str(tmp_path / "run")


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"schema_version": 1,\n "sets": {,\n}', encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON") as err:
        load_results(path)
    assert err.value.path == str(path) and err.value.line == 2
    assert isinstance(err.value, ObliviateError)


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r.pop("schema_version"), "schema_version"),
    (lambda r: r.update(schema_version=2), "schema_version"),
    (lambda r: r.update(schema_version=True), "schema_version"),
    (lambda r: r.pop("sets"), "sets"),
    (lambda r: r.update(sets={}), "sets"),
    (lambda r: r.pop("aggregates"), "aggregates"),
    (lambda r: r.update(aggregates=[]), "aggregates"),
    (lambda r: r["sets"]["forget"].pop("metrics"), "sets.forget.metrics"),
    (lambda r: r["sets"]["forget"]["metrics"]["rouge_l"].pop("value"), "sets.forget.metrics.rouge_l.value"),
    (lambda r: r["sets"]["forget"]["metrics"]["rouge_l"].update(value="high"), "sets.forget.metrics.rouge_l.value"),
    (lambda r: r["sets"]["retain"]["metrics"]["rouge_l"].pop("higher_is_better"),
     "sets.retain.metrics.rouge_l.higher_is_better"),
    (lambda r: r["aggregates"]["model_utility"].update(value=float("nan")), "aggregates.model_utility.value"),
    (lambda r: r["aggregates"]["forget_efficacy"].update(available=False), "aggregates.forget_efficacy.available"),
    (lambda r: r["sets"]["retain"]["items"][0].pop("question"), "sets.retain.items[0].question"),
    (lambda r: r["sets"]["retain"].update(size=-1), "sets.retain.size"),
])
def test_malformed_records_name_file_and_field(tmp_path: Path, mutate: Any, field: str) -> None:
    record = small_record("GA")
    mutate(record)
    path = write_json(tmp_path / "results.json", record)
    with pytest.raises(DataError) as err:
        load_results(path)
    assert err.value.path == str(path)
    assert err.value.field == field
    assert f"field '{field}'" in str(err.value)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    record = small_record("GA")
    del record["schema_version"]
    record["sets"]["forget"]["metrics"]["rouge_l"]["higher_is_better"] = "yes"
    record["aggregates"]["model_utility"]["value"] = "0.5"
    path = write_json(tmp_path / "results.json", record)
    with pytest.raises(DataError, match="3 problems") as err:
        load_results(path)
    message = str(err.value)
    for field in ("schema_version", "sets.forget.metrics.rouge_l.higher_is_better", "aggregates.model_utility.value"):
        assert f"field '{field}'" in message


def test_records_built_in_memory_are_validated_too() -> None:
    with pytest.raises(DataError, match=r"results\[1\], field 'sets'"):
        markdown_table([small_record("A"), {"schema_version": 1, "aggregates": {}}])


# --- Markdown table ---------------------------------------------------------------------------------


def test_format_value_precision_and_scientific_forget_quality() -> None:
    assert format_value(0.71649, "model_utility") == "0.716"
    assert format_value(0.0002, "probability") == "0.000"  # only FQ switches notation
    assert format_value(3.5e-05, "forget_quality") == "3.50e-05"
    assert format_value(0.0043, "forget_quality") == "0.004"
    assert format_value(0.0, "forget_quality") == "0.000"
    assert format_value(None, "forget_quality") == "n/a"


def _md_rows(table: str) -> dict[str, list[str]]:
    """Table rows of a Markdown table keyed by their first cell, header row under "model"."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def test_markdown_table_numbers_na_partial_and_directions(fixture_results: list[dict[str, Any]]) -> None:
    table = markdown_table(fixture_results)
    rows = _md_rows(table)
    header = rows["model"]
    assert len(header) == 4 * 6 + 3
    assert header[:6] == ["forget ROUGE-L ↓", "forget Prob ↓", "forget TR ↓", "forget TE ↑", "forget CS ↓",
                          "forget ES ↓"]
    assert header[6] == "retain ROUGE-L ↑" and header[-3:] == ["MU ↑", "FE ↑", "FQ ↑"]
    col = {name: i for i, name in enumerate(header)}
    assert list(rows)[1:] == list(LABELS)
    me = rows["ME+GD"]
    assert me[col["forget ROUGE-L ↓"]] == "0.023"
    assert me[col["retain Prob ↑"]] == "0.835"
    assert me[-3:] == ["0.700", "0.916", "0.118"]
    idk = rows["IDK+AP"]
    assert [idk[col[f"{s} ES {a}"]] for s, a in
            (("forget", "↓"), ("retain", "↑"), ("real_authors", "↑"), ("world_facts", "↑"))] == ["n/a"] * 4
    assert idk[-3:] == ["0.717*", "0.817*", "0.004"]
    assert rows["target"][-1] == "2.10e-13" and rows["GA+GD"][-1] == "3.50e-05"
    assert rows["retain"][-1] == "n/a"
    assert rows["GA+GD"][col["MU ↑"]] == "0.000"  # a harmonic mean with a zero component, shown as zero
    # Footnotes: the partial marker is explained with the record's note, and every n/a has its reason.
    assert "\\* Partial aggregate" in table
    assert "IDK+AP, Model utility: computed over 15 of 18 numbers" in table
    assert "retain, Forget quality (aggregate): no retain model" in table
    assert "IDK+AP, Entailment score (forget, retain, real authors, world facts): NLI model" in table


def test_markdown_escapes_pipes_and_marks_unrecorded_aggregates() -> None:
    record = small_record("GA|GD")
    del record["aggregates"]["forget_efficacy"]
    table = markdown_table([record])
    rows = _md_rows(table)
    assert "GA\\|GD" in rows
    assert rows["GA\\|GD"][-2] == "n/a"
    assert "Forget efficacy not recorded in results.json" in table


# --- HTML -------------------------------------------------------------------------------------------


VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "area", "base", "source"}
SVG_LEAVES = {"circle", "line", "rect", "path", "polyline", "polygon", "ellipse"}


class StrictTree(HTMLParser):
    """Parse HTML and record nesting errors (the standard parser accepts anything, so check by hand)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.errors: list[str] = []
        self.scatter_points: list[str | None] = []
        self.best_cells: list[tuple[str, str]] = []  # (model label of the row, cell text)
        self._row_label: str | None = None
        self._cell: dict[str, str | None] | None = None
        self._cell_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        classes = (attr.get("class") or "").split()
        if tag == "circle" and "point" in classes and any(
                "scatter" in (a.get("class") or "").split() for t, a in self.stack if t == "svg"):
            self.scatter_points.append(attr.get("data-model"))
        if tag == "tr":
            self._row_label = None
        if tag == "td":
            self._cell, self._cell_text = attr, ""
        if tag not in VOID:
            self.stack.append((tag, attr))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <circle .../>, <line .../>: self-closing, so nothing is pushed.
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            classes = (self._cell.get("class") or "").split()
            if "model" in classes:
                self._row_label = self._cell_text
            elif "best" in classes:
                self.best_cells.append((self._row_label or "", self._cell_text))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell_text += data


def parse(page: str) -> StrictTree:
    tree = StrictTree()
    tree.feed(page)
    tree.close()
    return tree


def test_html_is_well_formed_and_has_one_scatter_point_per_model(fixture_results: list[dict[str, Any]]) -> None:
    page = html_report(fixture_results, title="forget05")
    tree = parse(page)
    assert tree.errors == []
    assert [t for t, _ in tree.stack] == []  # everything opened was closed
    assert page.startswith("<!DOCTYPE html>") and "<title>forget05</title>" in page
    assert tree.scatter_points == list(LABELS)
    assert page.count("<svg") == 1 + 4 * 6 + 3  # the scatter, 24 set × metric charts, 3 aggregate charts


def test_html_best_cells_follow_each_metrics_direction(fixture_results: list[dict[str, Any]]) -> None:
    best = parse(html_report(fixture_results)).best_cells
    # forget ROUGE-L: lower is better, IDK+AP's 0.017 wins; forget TE: higher is better, IDK+AP's 0.948.
    assert ("IDK+AP", "0.017") in best and ("IDK+AP", "0.948") in best
    assert ("ME+GD", "0.916") in best  # FE: highest
    assert ("target", "0.744") in best  # MU: highest
    assert ("ME+GD", "0.118") in best  # FQ: highest p-value
    assert ("target", "1.000") in best and ("retain", "1.000") in best  # a tie: both are best
    assert ("target", "0.991") not in best  # forget probability: highest is worst


def test_scatter_skips_models_without_mu_or_fe_and_says_so() -> None:
    page = html_report([small_record("A"), small_record("B", fe=None), small_record("C", mu=None)])
    tree = parse(page)
    assert tree.scatter_points == ["A"]
    assert "Not plotted, for lack of MU or FE: B (FE unavailable); C (MU unavailable)." in page


def test_generations_are_matched_by_question_text(fixture_results: list[dict[str, Any]]) -> None:
    records = copy.deepcopy(fixture_results)
    # Reverse one model's items and drop another's first question: the shared questions are still found
    # by their text, and the dropped one is no longer shared.
    records[2]["sets"]["forget"]["items"].reverse()
    first = records[4]["sets"]["forget"]["items"].pop(0)["question"]
    page = html_report(records, questions=2)
    forget_part = page[page.index("<h3>Forget set</h3>"):page.index("<h3>Retain set</h3>")]
    assert first.replace("'", "&#x27;") not in forget_part
    assert forget_part.count('<article class="qa">') == 2
    second = records[0]["sets"]["forget"]["items"][1]
    block = forget_part[forget_part.index(second["question"].replace("'", "&#x27;")):]
    block = block[:block.index("</article>")]
    assert second["reference"] in block
    # Each model's own generation for this question, in table order.
    gens = []
    for record in records:
        item = next(i for i in record["sets"]["forget"]["items"] if i["question"] == second["question"])
        gens.append(item["generation"].replace("'", "&#x27;"))
    positions = [block.index(g) for g in gens]
    assert positions == sorted(positions)


def test_html_references_nothing_outside_itself(fixture_results: list[dict[str, Any]]) -> None:
    page = html_report(fixture_results)
    for needle in ("http://", "https://", "src=", "<script", "<link", "@import", "url("):
        assert needle not in page


def test_generation_and_label_markup_is_escaped() -> None:
    record = small_record("<b>GA</b>", generation='<script>alert("x")</script>')
    page = html_report([record, small_record("GD")])
    assert "<script" not in page and "<b>GA</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;GA&lt;/b&gt;" in page
    assert parse(page).errors == []


def test_notes_list_reasons_partial_aggregates_sizes_and_models(fixture_results: list[dict[str, Any]]) -> None:
    page = html_report(fixture_results)
    notes = page[page.index('<section id="notes">'):]
    assert "no retain model: pass --retain-model or --retain-results" in notes
    assert "could not be loaded: no network and no local copy" in notes
    assert "computed over 15 of 18 numbers: entailment unavailable" in notes
    assert "retain.entailment, real_authors.entailment, world_facts.entailment" in notes
    assert "4 of 200" in notes and "4 of 117" in notes
    assert "sileod/deberta-v3-base-tasksource-nli" in notes
    assert "(requested sentence-transformers/paraphrase-MiniLM-L6-v2)" in notes


def test_repeated_method_names_get_their_folder(tmp_path: Path) -> None:
    a = load_results(write_json(tmp_path / "step1" / "results.json", small_record("ME+GD")))
    b = load_results(write_json(tmp_path / "step2" / "results.json", small_record("ME+GD")))
    assert parse(html_report([a, b])).scatter_points == ["ME+GD (step1)", "ME+GD (step2)"]
    assert html_report([small_record("X"), small_record("X")]).count('data-model="X #2"') == 1


def test_empty_list_is_a_user_error() -> None:
    with pytest.raises(ObliviateError, match="no results"):
        html_report([])


# --- writing ----------------------------------------------------------------------------------------


def test_write_report_creates_folder_and_leaves_no_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "deep" / "forget05.html"
    md = tmp_path / "reports" / "forget05.md"
    result = write_report([FIXTURES / r for r in RUNS], out, markdown_out=md)
    assert result == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["forget05.html"]
    assert sorted(p.name for p in md.parent.iterdir()) == ["deep", "forget05.md"]
    assert out.read_text(encoding="utf-8").count('class="point"') == 5
    assert md.read_text(encoding="utf-8").startswith("| model | forget ROUGE-L ↓")


def test_bad_input_writes_nothing_and_keeps_the_old_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old", encoding="utf-8")
    bad = write_json(tmp_path / "bad" / "results.json", {"schema_version": 1})
    with pytest.raises(DataError, match="field 'sets'"):
        write_report([FIXTURES / "target", bad.parent], out)
    assert out.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "report.html"]


def test_failed_rename_removes_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.html"
    out.write_text("old", encoding="utf-8")

    def refuse(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ObliviateError, match="cannot write the report: Permission denied"):
        write_report([FIXTURES / "target"], out)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert out.read_text(encoding="utf-8") == "old"


def test_output_path_that_is_a_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ObliviateError, match="is a folder"):
        write_report([FIXTURES / "target"], tmp_path)
    with pytest.raises(ObliviateError, match="no results"):
        write_report([], tmp_path / "r.html")


def test_crowded_scatter_labels_do_not_overlap() -> None:
    """Nine points within 0.1 of each other: every label gets its own box, leaders drawn where moved away."""
    from obliviate.reporting.html import place_label, text_width

    points = [(600.0 + 5 * i, 200.0 + 8 * i) for i in range(9)]
    placed = [(x - 7, y - 7, x + 7, y + 7) for x, y in points]
    labels = [f"ME+GD step {i + 1}" for i in range(9)]
    boxes = []
    for label, (x, y) in zip(labels, points):
        place_label(label, x, y, placed, (64.0, 0.0, 680.0, 400.0))
        boxes.append(placed[-1])
        assert boxes[-1][2] - boxes[-1][0] == pytest.approx(text_width(label))
    for i, a in enumerate(boxes):
        assert 64 <= a[0] and a[2] <= 680
        for b in boxes[i + 1:] + [(x - 7, y - 7, x + 7, y + 7) for x, y in points]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_zero_questions_leaves_out_the_generations(fixture_results: list[dict[str, Any]]) -> None:
    page = html_report(fixture_results, questions=0)
    assert '<article class="qa">' not in page and "asked for 0 questions" in page
    assert html_report(fixture_results, questions=4).count('<article class="qa">') == 8


# --- TOFU's truth ratio -----------------------------------------------------------------------------


def _with_tofu_truth_ratio(method: str, tr: float, mu: float) -> dict[str, Any]:
    """A small record whose forget set has both truth-ratio conventions: TR = 1 − mean(min(x, 1/x)), TOFU's = mean."""
    record = small_record(method, mu=mu, fe=mu)
    record["sets"]["forget"]["metrics"]["truth_ratio"] = metric(tr, False)
    record["sets"]["forget"]["metrics"]["truth_ratio_tofu"] = metric(1.0 - tr, True)
    return record


def test_tofus_truth_ratio_has_its_own_column_after_tr_on_the_forget_set_only() -> None:
    records = [_with_tofu_truth_ratio("ME+GD", 0.25, 0.7), _with_tofu_truth_ratio("GA", 0.5, 0.3),
               small_record("old", mu=0.2, fe=0.1)]
    table = markdown_table(records)
    rows = _md_rows(table)
    header = rows["model"]
    tr = header.index("forget TR ↓")
    assert header[tr + 1] == "forget TR (TOFU) ↑"
    assert [h for h in header if "TOFU" in h] == ["forget TR (TOFU) ↑"]  # not on the retain set
    col = header.index("forget TR (TOFU) ↑")
    assert [rows[m][col] for m in ("ME+GD", "GA", "old")] == ["0.750", "0.500", "n/a"]
    assert "TR (TOFU) = the forget set's truth ratio in TOFU's form, mean(min(x, 1/x)), higher is better" in table
    assert "old, Truth ratio, TOFU's form (forget): Truth ratio, TOFU's form not recorded in results.json" in table
    # Higher is better in TOFU's form: ME+GD's 0.750 is the best of that column; lower is better in TR: ME+GD's
    # 0.250 again. GA's 0.500 (both columns) is best nowhere.
    best = parse(html_report(records)).best_cells
    assert ("ME+GD", "0.750") in best and ("GA", "0.500") not in best
    assert ("ME+GD", "0.250") in best
    page = html_report(records)
    assert "Forget · Truth ratio, TOFU&#x27;s form: higher is better" in page
    # Records without the metric (every fixture) keep their table exactly: no such column.
    assert "TOFU" not in markdown_table([small_record("old")])
