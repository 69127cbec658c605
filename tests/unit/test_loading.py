"""load_qa: local JSON lines and arrays, hub ids (monkeypatched), and the all-at-once validation errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from obliviate.data.loading import MAX_LISTED_PROBLEMS, load_qa, looks_like_hub_id
from obliviate.data.records import QARecord
from obliviate.errors import ConfigError, DataError, ObliviateError

GOOD = {"question": "Who wrote it?", "answer": "Ann wrote it."}


def write_lines(path: Path, rows: list[Any]) -> Path:
    """Write one line per item: dicts and lists as JSON, strings verbatim (for broken or blank lines)."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# --- well-formed data -------------------------------------------------------------------------------


def test_json_lines_rows_become_records_with_every_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [
        {"question": "Q1?", "answer": "A1.", "paraphrased_answer": "P1.", "perturbed_answer": ["W1.", "W2."],
         "paraphrased_question": "PQ1?", "task_id": "3", "unknown_field": 7},
        "",
        {"question": "Q2?", "answer": "A2.", "perturbed_answer": "Only one.", "task_id": 2},
    ])
    records = load_qa(path)
    assert records == [
        QARecord(question="Q1?", answer="A1.", paraphrased_answer="P1.", perturbed_answers=("W1.", "W2."),
                 paraphrased_question="PQ1?", task_id=3, source=f"{path}:1"),
        # The blank line 2 is skipped but still counted: this row is physical line 3.
        QARecord(question="Q2?", answer="A2.", perturbed_answers=("Only one.",), task_id=2, source=f"{path}:3"),
    ]


def test_json_array_form_is_accepted_in_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text("  \n[\n" + json.dumps(GOOD) + ",\n" + json.dumps({"question": "Q?", "answer": "A."}) + "\n]\n",
                    encoding="utf-8")
    records = load_qa(path)
    assert [r.question for r in records] == ["Who wrote it?", "Q?"]
    assert records[1].source == f"{path}:element 1"


def test_null_optional_fields_count_as_absent(tmp_path: Path) -> None:
    """Hub datasets fill missing columns with None; that must not be an error."""
    path = write_lines(tmp_path / "qa.jsonl", [{**GOOD, "paraphrased_answer": None, "task_id": None,
                                                "perturbed_answer": None}])
    (record,) = load_qa(path)
    assert record.paraphrased_answer is None and record.task_id is None and record.perturbed_answers == ()


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode("utf-8") + b"\n")
    assert load_qa(path)[0].question == "Who wrote it?"


# --- layouts ----------------------------------------------------------------------------------------


def test_real_world_layout_requires_name_and_golden_answer(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [GOOD])
    with pytest.raises(DataError) as err:
        load_qa(path, layout="real_world")
    message = str(err.value)
    assert f"{path}, line 1, field 'name': required field is missing" in message
    assert f"{path}, line 1, field 'golden_answer': required field is missing" in message
    # The TOFU layout does not need them.
    assert len(load_qa(path, layout="tofu")) == 1


def test_auto_layout_applies_real_world_rules_when_first_row_has_golden_answer(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [
        {**GOOD, "name": "Ann", "golden_answer": "Ann"},
        {**GOOD, "golden_answer": "Ann"},  # no name
    ])
    with pytest.raises(DataError, match=r"line 2, field 'name': required field is missing"):
        load_qa(path)
    fixed = write_lines(tmp_path / "fixed.jsonl", [{**GOOD, "name": "Ann", "golden_answer": "Ann"}])
    (record,) = load_qa(fixed)
    assert (record.name, record.golden_answer, record.eval_answer) == ("Ann", "Ann", "Ann")


def test_unknown_layout_is_a_config_error_listing_the_valid_ones(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [GOOD])
    with pytest.raises(ConfigError, match=r"layout 'tofu2' is not one of: auto, tofu, real_world"):
        load_qa(path, layout="tofu2")


# --- one validation error at a time ------------------------------------------------------------------


@pytest.mark.parametrize(("row", "field", "expected"), [
    ({"answer": "A."}, "question", "required field is missing"),
    ({"question": "Q?", "answer": ""}, "answer", "must be a non-empty string, got an empty string"),
    ({"question": "Q?", "answer": "   "}, "answer", "must be a non-empty string, got a blank string"),
    ({"question": 5, "answer": "A."}, "question", "must be a non-empty string, got number 5"),
    ({**GOOD, "paraphrased_answer": ["x"]}, "paraphrased_answer", "must be a non-empty string, got an array"),
    ({**GOOD, "paraphrased_question": 1}, "paraphrased_question", "must be a non-empty string, got number 1"),
    ({**GOOD, "perturbed_answer": ["ok", ""]}, "perturbed_answer",
     "must be a list of non-empty strings: item 1 is an empty string"),
    ({**GOOD, "perturbed_answer": ["ok", 3]}, "perturbed_answer",
     "must be a list of non-empty strings: item 1 is number 3"),
    ({**GOOD, "perturbed_answer": 3}, "perturbed_answer", "must be a list of non-empty strings, got number 3"),
    ({**GOOD, "perturbed_answer": []}, "perturbed_answer", "must not be an empty list"),
    ({**GOOD, "task_id": 1.5}, "task_id", "must be an integer (or a string holding one), got number 1.5"),
    ({**GOOD, "task_id": True}, "task_id", "must be an integer (or a string holding one), got boolean true"),
    ({**GOOD, "task_id": "one"}, "task_id", 'must be an integer (or a string holding one), got string "one"'),
    ({**GOOD, "task_id": "1.0"}, "task_id", 'must be an integer (or a string holding one), got string "1.0"'),
    ({**GOOD, "name": 7}, "name", "must be a non-empty string, got number 7"),
    ({**GOOD, "golden_answer": {"a": 1}}, "golden_answer", "must be a non-empty string, got an object"),
])
def test_each_field_problem_names_file_line_and_field(tmp_path: Path, row: dict, field: str,
                                                      expected: str) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [GOOD, "", row])
    with pytest.raises(DataError) as err:
        load_qa(path, layout="tofu")
    assert f"{path}, line 3, field '{field}': {expected}" in str(err.value)
    assert "1 problem in QA data" in str(err.value)


def test_invalid_json_line_reports_line_and_parser_message(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [GOOD, '{"question": "Q?", "answer": }'])
    with pytest.raises(DataError) as err:
        load_qa(path)
    assert f"{path}, line 2: invalid JSON: Expecting value (column 30)" in str(err.value)


def test_row_that_is_not_an_object_is_reported(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [GOOD, ["Q?", "A."], "null"])
    with pytest.raises(DataError) as err:
        load_qa(path)
    assert f"{path}, line 2: expected a JSON object, got an array" in str(err.value)
    assert f"{path}, line 3: expected a JSON object, got null" in str(err.value)


def test_json_lines_file_starting_with_an_array_row_explains_the_array_reading(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [["Q?", "A."], GOOD])
    with pytest.raises(DataError, match=r"line 2: invalid JSON: Extra data .*read as one JSON array"):
        load_qa(path)


def test_array_element_problem_names_the_element_index(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([GOOD, {"question": "Q?"}, "text"]), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_qa(path)
    message = str(err.value)
    assert f"{path}, element 1, field 'answer': required field is missing" in message
    assert f"{path}, element 2: expected a JSON object, got string" in message


def test_broken_json_array_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text('[\n{"question": "Q?", "answer": "A."},\n{"question": }\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: invalid JSON: Expecting value"):
        load_qa(path)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"question": "\xff", "answer": "A."}\n')
    with pytest.raises(DataError, match=r"qa.jsonl, line 2: not valid UTF-8"):
        load_qa(path)


# --- all problems at once -----------------------------------------------------------------------------


def test_every_problem_in_the_file_is_listed_in_one_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [
        {"question": "", "answer": "A.", "task_id": 1.5},   # two problems on one row
        GOOD,
        "not json",
        {"question": "Q?", "answer": "A.", "perturbed_answer": [None]},
    ])
    with pytest.raises(DataError) as err:
        load_qa(path)
    message = str(err.value)
    assert message.startswith(f"{path}: 4 problems in QA data:")
    for fragment in (f"{path}, line 1, field 'question'", f"{path}, line 1, field 'task_id'",
                     f"{path}, line 3: invalid JSON", f"{path}, line 4, field 'perturbed_answer'"):
        assert fragment in message


def test_long_problem_lists_are_capped_with_a_count(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [{"question": "Q?"}] * (MAX_LISTED_PROBLEMS + 5))
    with pytest.raises(DataError) as err:
        load_qa(path)
    message = str(err.value)
    assert f"{MAX_LISTED_PROBLEMS + 5} problems" in message
    assert message.count("\n  - ") == MAX_LISTED_PROBLEMS
    assert message.endswith("  ... and 5 more")


# --- files that cannot be QA data --------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n  \n\n", "[]"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "qa.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"empty|no rows"):
        load_qa(path)


def test_folder_is_not_a_qa_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is a folder, not a QA file"):
        load_qa(tmp_path)


def test_missing_path_is_file_not_found_and_does_not_touch_the_hub(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_hub(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a local path must not be looked up on the hub")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    for missing in (tmp_path / "nope.jsonl", "data/nope.json", "nope.jsonl"):
        with pytest.raises(DataError, match=r"file not found"):
            load_qa(missing)


def test_unsupported_suffix_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        load_qa(path)


# --- limit -------------------------------------------------------------------------------------------


def test_limit_keeps_the_first_rows_and_ignores_problems_below_them(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [GOOD, "", {"question": "Q2?", "answer": "A2."}, "broken"])
    assert [r.question for r in load_qa(path, limit=2)] == ["Who wrote it?", "Q2?"]
    with pytest.raises(DataError, match=r"line 4: invalid JSON"):
        load_qa(path, limit=3)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_bad_limit_is_a_config_error(tmp_path: Path, limit: Any) -> None:
    path = write_lines(tmp_path / "qa.jsonl", [GOOD])
    with pytest.raises(ConfigError, match=r"limit must be a positive integer"):
        load_qa(path, limit=limit)


# --- hub ---------------------------------------------------------------------------------------------


def test_hub_id_goes_through_datasets_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def fake_load_dataset(path: str, name: str | None = None, *, split: str) -> list[dict]:
        calls.append((path, name, split))
        return [{"question": "Q0?", "answer": "A0.", "task_id": 1}, {"question": "Q1?", "answer": "A1."}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = load_qa("locuslab/TOFU", hub_config="forget01")
    assert calls == [("locuslab/TOFU", "forget01", "train")]
    assert [r.source for r in records] == ["locuslab/TOFU[forget01]:row 0", "locuslab/TOFU[forget01]:row 1"]
    assert records[0].task_id == 1
    assert len(load_qa("locuslab/TOFU", hub_config="forget01", limit=1)) == 1


def test_hub_rows_are_validated_like_file_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, *, split: [GOOD, {"question": "Q?", "answer": None}])
    with pytest.raises(DataError, match=r"locuslab/TOFU\[retain99\], row 1, field 'answer': required"):
        load_qa("locuslab/TOFU", hub_config="retain99")


@pytest.mark.parametrize(("error", "expected"), [
    (ConnectionError("Couldn't reach 'locuslab/TOFU' on the Hub"), "hub could not be reached"),
    (TimeoutError("read timed out"), "hub could not be reached"),
    (datasets.exceptions.DatasetNotFoundError("no such dataset"), "was not found on the Hugging Face hub"),
])
def test_hub_failures_say_so_and_suggest_a_local_folder(monkeypatch: pytest.MonkeyPatch, error: Exception,
                                                        expected: str) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(ObliviateError) as err:
        load_qa("locuslab/TOFU", hub_config="forget01")
    assert not isinstance(err.value, DataError)
    assert expected in str(err.value)
    assert "pass a local file or folder" in str(err.value)


def test_unknown_hub_config_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise ValueError("BuilderConfig 'forget02' not found. Available: ['forget01', 'forget05']")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(ObliviateError, match=r"cannot load locuslab/TOFU\[forget02\].*Available"):
        load_qa("locuslab/TOFU", hub_config="forget02")


@pytest.mark.parametrize(("source", "expected"), [
    ("locuslab/TOFU", True),
    ("some-user/my_data.v2", True),
    ("data/qa.json", False),
    ("data/qa.JSONL", False),
    ("qa.jsonl", False),
    ("/abs/path", False),
    ("./rel/path", False),
    ("a/b/c", False),
    (Path("locuslab/TOFU"), False),
])
def test_looks_like_hub_id(source: str | Path, expected: bool) -> None:
    assert looks_like_hub_id(source) is expected
