"""load_refusals: the built-in templates and user files (.txt, .jsonl with strings, objects or plain text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.data.refusals import load_refusals
from obliviate.errors import DataError


def test_builtin_set_has_100_distinct_non_empty_sentences() -> None:
    refusals = load_refusals()
    assert len(refusals) == 100
    assert len(set(refusals)) == 100
    assert all(r and r == r.strip() for r in refusals)
    assert "I'm not able to answer that one." in refusals


def test_builtin_set_is_not_the_shared_idontknow_file(shared_data_dir: Path) -> None:
    theirs = {line.strip().lower() for line in (shared_data_dir / "idontknow.jsonl").read_text("utf-8").splitlines()}
    assert not {r.lower() for r in load_refusals()} & theirs


def test_txt_file_one_refusal_per_line(tmp_path: Path) -> None:
    path = tmp_path / "idk.txt"
    # A .txt line is text even when it looks like JSON.
    path.write_text("  I do not know.  \n\n{\"text\": \"literal\"}\nNo idea.\n", encoding="utf-8")
    assert load_refusals(path) == ["I do not know.", '{"text": "literal"}', "No idea."]


def test_jsonl_strings_objects_and_plain_lines(tmp_path: Path) -> None:
    path = tmp_path / "idk.jsonl"
    path.write_text("\n".join([
        json.dumps("I can't say."),
        json.dumps({"text": "Not sure."}),
        json.dumps({"answer": "No clue.", "id": 3}),
        "",
        "Plain sentence, as in the released idontknow.jsonl.",
    ]), encoding="utf-8")
    assert load_refusals(path) == ["I can't say.", "Not sure.", "No clue.",
                                   "Plain sentence, as in the released idontknow.jsonl."]


def test_json_array_of_strings_and_objects(tmp_path: Path) -> None:
    path = tmp_path / "idk.json"
    path.write_text(json.dumps(["First.", {"text": "Second."}]), encoding="utf-8")
    assert load_refusals(path) == ["First.", "Second."]


def test_the_shared_idontknow_file_loads_as_plain_lines(shared_data_dir: Path) -> None:
    path = shared_data_dir / "idontknow.jsonl"
    expected = [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    assert load_refusals(path) == expected
    assert len(expected) == 100


def test_bad_lines_are_all_listed_with_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "idk.jsonl"
    path.write_text("\n".join([
        "Fine.",
        json.dumps({"reply": "wrong field"}),
        json.dumps({"text": ""}),
        '{"text": ',
        json.dumps(""),
    ]), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_refusals(path)
    message = str(err.value)
    assert message.startswith(f"{path}: 4 problems in the refusal templates:")
    assert f"{path}, line 2, field 'text': a JSON object needs a 'text' or 'answer' field" in message
    assert f"{path}, line 3, field 'text': must be a non-empty string, got an empty string" in message
    assert f"{path}, line 4: invalid JSON" in message
    assert f"{path}, line 5: expected a non-empty JSON string or an object, got an empty string" in message


@pytest.mark.parametrize("content", ["", "\n   \n"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "idk.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"idk.txt: holds no refusal templates"):
        load_refusals(path)


def test_missing_file_folder_and_suffix_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.txt: file not found"):
        load_refusals(tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"is a folder"):
        load_refusals(tmp_path)
    csv = tmp_path / "idk.csv"
    csv.write_text("I don't know.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        load_refusals(csv)
