"""TOFU split assembly: sizes and disjointness on the real data, both layouts, continual steps, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from obliviate.benchmarks.tofu import FORGET_SPLITS, continual_splits, load_tofu, load_tofu_holdout, num_tasks
from obliviate.data.records import QARecord
from obliviate.errors import ConfigError, DataError

# Rows per task and retain size for task 1, per split: TOFU has 4,000 rows about 200 authors, 20 each.
EXPECTED = {"forget01": (40, 3960, 10), "forget05": (200, 3800, 10), "forget10": (400, 3600, 9)}


@pytest.fixture(scope="module")
def tofu_dir(request: pytest.FixtureRequest) -> Path:
    folder = request.getfixturevalue("shared_data_dir") / "tofu"
    if not folder.is_dir():
        pytest.skip(f"TOFU data not found: {folder}")
    return folder


def pairs(records: list[QARecord]) -> set[tuple[str, str]]:
    return {(r.question, r.answer) for r in records}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def qa(tag: str, **extra: Any) -> dict[str, Any]:
    return {"question": f"Question {tag}?", "answer": f"Answer {tag}.", **extra}


def perturbed(tag: str, **extra: Any) -> dict[str, Any]:
    return qa(tag, paraphrased_answer=f"Para {tag}.", perturbed_answer=[f"Wrong {tag}.", f"False {tag}."],
              paraphrased_question=f"Para question {tag}?", **extra)


# --- the real data ---------------------------------------------------------------------------------


@pytest.mark.parametrize("split", FORGET_SPLITS)
def test_standard_split_sizes_and_disjointness(tofu_dir: Path, split: str) -> None:
    forget_rows, retain_rows, _ = EXPECTED[split]
    splits = load_tofu(tofu_dir, split)
    assert (splits.layout, splits.forget_split, splits.task) == ("continual", split, 1)
    assert len(splits.forget) == forget_rows
    assert len(splits.retain) == retain_rows == 4000 - forget_rows
    assert all(r.task_id == 1 for r in splits.forget)
    # Task 1 shares no question text with its retain set, and together they are all of TOFU.
    assert not {r.question for r in splits.forget} & {r.question for r in splits.retain}
    assert len(pairs(splits.forget) | pairs(splits.retain)) == 4000
    # The forget evaluation set is the same task, with paraphrases and perturbations.
    assert splits.forget_eval is not None
    assert [r.question for r in splits.forget_eval] == [r.question for r in splits.forget]
    assert all(r.paraphrased_answer and len(r.perturbed_answers) == 5 for r in splits.forget_eval)


def test_evaluation_sets_on_real_data(tofu_dir: Path) -> None:
    splits = load_tofu(tofu_dir, "forget05")
    assert splits.retain_eval is not None and len(splits.retain_eval) == 400
    assert pairs(splits.retain_eval) <= pairs(splits.retain)
    assert splits.real_authors is not None and len(splits.real_authors) == 100
    assert splits.world_facts is not None and len(splits.world_facts) == 117
    # original_answer (the full sentence) becomes answer; the short answer becomes golden_answer.
    shakespeare = splits.real_authors[0]
    assert shakespeare.eval_answer == "William Shakespeare"
    assert shakespeare.answer == "The play 'Romeo and Juliet' was written by William Shakespeare."
    assert shakespeare.perturbed_answers == ("Charles Dickens", "Virginia Woolf", "Mark Twain")
    assert all(r.golden_answer and r.golden_answer != r.answer for r in splits.world_facts)


@pytest.mark.parametrize("split", FORGET_SPLITS)
def test_every_task_is_disjoint_from_its_retain_set(tofu_dir: Path, split: str) -> None:
    """By (question, answer): TOFU asks "What is the full name of the author?" of two authors."""
    forget_rows, retain_rows, tasks = EXPECTED[split]
    assert num_tasks(tofu_dir, split) == tasks
    for task in range(1, tasks + 1):
        splits = load_tofu(tofu_dir, split, task=task)
        assert len(splits.forget) == forget_rows and len(splits.retain) == retain_rows
        assert not pairs(splits.forget) & pairs(splits.retain)


def test_continual_retain_shrinks_step_by_step_on_real_data(tofu_dir: Path) -> None:
    sizes, forgotten = [], set()
    for step in range(1, 11):
        forget, retain = continual_splits(tofu_dir, "forget05", step)
        assert all(r.task_id == step for r in forget)
        assert not pairs(forget) & forgotten  # each step forgets new rows
        forgotten |= pairs(forget)
        # Nothing already forgotten is retained: base retain50 + tasks after this step.
        assert not pairs(retain) & forgotten
        sizes.append(len(retain))
    assert sizes == [2000 + 200 * (10 - step) for step in range(1, 11)]


# --- small folders built here (no shared data needed) -----------------------------------------------


@pytest.fixture
def continual_dir(tmp_path: Path) -> Path:
    """forget01 in the continual layout: 3 tasks of 2 rows, base retain90 of 2 rows."""
    write_jsonl(tmp_path / "forget01.json", [qa(f"f{t}{i}", task_id=str(t)) for t in (1, 2, 3) for i in (1, 2)])
    write_jsonl(tmp_path / "retain90.json", [qa("r1"), qa("r2")])
    write_jsonl(tmp_path / "forget01_perturbed.json",
                [perturbed(f"f{t}{i}", task_id=str(t)) for t in (1, 2, 3) for i in (1, 2)])
    write_jsonl(tmp_path / "world_facts_perturbed.json",
                [{"question": "Capital of France?", "answer": "Paris", "perturbed_answer": ["Rome", "Berlin"],
                  "original_answer": "The capital of France is Paris."}])
    return tmp_path


def test_continual_folder_task_and_retain(continual_dir: Path) -> None:
    splits = load_tofu(continual_dir, "forget01", task=2)
    assert [r.question for r in splits.forget] == ["Question f21?", "Question f22?"]
    assert [r.question for r in splits.retain] == ["Question r1?", "Question r2?", "Question f11?",
                                                   "Question f12?", "Question f31?", "Question f32?"]
    assert [r.question for r in splits.forget_eval or []] == ["Question f21?", "Question f22?"]
    assert splits.retain_eval is None and splits.real_authors is None  # files absent
    (paris,) = splits.world_facts or []
    assert (paris.answer, paris.eval_answer) == ("The capital of France is Paris.", "Paris")


def test_continual_steps_shrink_retain_and_accept_top_up(continual_dir: Path) -> None:
    assert num_tasks(continual_dir, "forget01") == 3
    retain_sizes = [len(continual_splits(continual_dir, "forget01", step)[1]) for step in (1, 2, 3)]
    assert retain_sizes == [2 + 4, 2 + 2, 2]
    extra = [QARecord(question="Other?", answer="Other.")]
    forget, retain = continual_splits(continual_dir, "forget01", 3, top_up=extra)
    assert [r.task_id for r in forget] == [3, 3]
    assert [r.question for r in retain] == ["Question r1?", "Question r2?", "Other?"]


def test_top_up_may_not_bring_back_forgotten_rows(continual_dir: Path) -> None:
    forget, _ = continual_splits(continual_dir, "forget01", 1)
    with pytest.raises(DataError, match=r"is a forget row of step 2 or earlier: 'Question f11\?'"):
        continual_splits(continual_dir, "forget01", 2, top_up=[forget[0]])


def test_step_and_task_outside_the_data_are_config_errors(continual_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"step 4 is not in forget01 .* its tasks are 1..3"):
        continual_splits(continual_dir, "forget01", 4)
    with pytest.raises(ConfigError, match=r"task 0 is not in forget01"):
        load_tofu(continual_dir, "forget01", task=0)


def test_continual_forget_rows_need_task_id(continual_dir: Path) -> None:
    write_jsonl(continual_dir / "forget01.json", [qa("a", task_id=1), qa("b")])
    with pytest.raises(DataError, match=r"forget01.json:2, field 'task_id': required field is missing"):
        load_tofu(continual_dir, "forget01")


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    """A folder of hub configs saved as <config>.json: forget01 + retain99, no task_id."""
    write_jsonl(tmp_path / "forget01.json", [qa("f1"), qa("f2")])
    write_jsonl(tmp_path / "retain99.json", [qa("r1"), qa("r2"), qa("r3")])
    write_jsonl(tmp_path / "forget01_perturbed.json", [perturbed("f1"), perturbed("f2")])
    write_jsonl(tmp_path / "retain_perturbed.json", [perturbed("r1")])
    # Like the hub's utility sets: no original_answer, so the row stays as it is.
    write_jsonl(tmp_path / "real_authors_perturbed.json",
                [{"question": "Who wrote Hamlet?", "answer": "Shakespeare", "perturbed_answer": ["Marlowe"]}])
    return tmp_path


def test_hub_layout_folder(hub_dir: Path) -> None:
    splits = load_tofu(hub_dir, "forget01")
    assert splits.layout == "hub"
    assert [r.question for r in splits.forget] == ["Question f1?", "Question f2?"]
    assert [r.question for r in splits.retain] == ["Question r1?", "Question r2?", "Question r3?"]
    assert len(splits.forget_eval or []) == 2 and len(splits.retain_eval or []) == 1
    (hamlet,) = splits.real_authors or []
    assert (hamlet.answer, hamlet.golden_answer) == ("Shakespeare", None)
    assert splits.world_facts is None
    assert num_tasks(hub_dir, "forget01") == 1
    forget, retain = continual_splits(hub_dir, "forget01", 1)
    assert (len(forget), len(retain)) == (2, 3)


def test_hub_layout_allows_only_task_1(hub_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"task must be 1 for the hub layout"):
        load_tofu(hub_dir, "forget01", task=2)


def test_hub_id_reads_the_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    configs = {"forget05": [qa("f1")], "retain95": [qa("r1"), qa("r2")], "forget05_perturbed": [perturbed("f1")],
               "retain_perturbed": [perturbed("r1")],
               "real_authors_perturbed": [{"question": "Q?", "answer": "A", "perturbed_answer": ["B"]}],
               "world_facts_perturbed": [{"question": "W?", "answer": "X", "perturbed_answer": ["Y"]}]}
    requested: list[tuple[str, str | None, str]] = []

    def fake_load_dataset(path: str, name: str | None = None, *, split: str) -> list[dict]:
        requested.append((path, name, split))
        return configs[name or ""]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    splits = load_tofu("locuslab/TOFU", "forget05")
    assert splits.layout == "hub"
    assert sorted(name for _, name, _ in requested) == sorted(configs)
    assert {(path, split) for path, _, split in requested} == {("locuslab/TOFU", "train")}
    assert [len(s or []) for s in (splits.forget, splits.retain, splits.forget_eval, splits.retain_eval,
                                   splits.real_authors, splits.world_facts)] == [1, 2, 1, 1, 1, 1]
    assert splits.forget[0].source == "locuslab/TOFU[forget05]:row 0"


# --- holdout sets -----------------------------------------------------------------------------------


def test_holdout_from_a_local_folder(hub_dir: Path) -> None:
    write_jsonl(hub_dir / "holdout01.json", [qa("h1"), qa("h2")])
    records, info = load_tofu_holdout(hub_dir, "forget01")
    assert [r.question for r in records] == ["Question h1?", "Question h2?"]
    assert info == {"source": str(hub_dir / "holdout01.json")}


def test_missing_holdout_file_says_which_and_where_to_get_it(continual_dir: Path) -> None:
    records, info = load_tofu_holdout(continual_dir, "forget01")
    assert records is None and "holdout01.json is not in" in info["reason"] and "locuslab/TOFU" in info["reason"]


def test_holdout_from_the_hub_config_of_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[str | None] = []

    def fake_load_dataset(path: str, name: str | None = None, *, split: str) -> list[dict]:
        requested.append(name)
        if name == "holdout10":
            return [qa("h1")]
        raise datasets.exceptions.DatasetNotFoundError(f"no config {name}")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records, info = load_tofu_holdout("locuslab/TOFU", "forget10")
    assert requested == ["holdout10"] and len(records) == 1 and info == {"source": "locuslab/TOFU[holdout10]"}
    records, info = load_tofu_holdout("locuslab/TOFU", "forget01")
    assert records is None and "holdout01 could not be loaded" in info["reason"]


# --- errors ------------------------------------------------------------------------------------------


def test_unknown_split_lists_the_valid_ones(continual_dir: Path) -> None:
    for call in (lambda: load_tofu(continual_dir, "forget02"), lambda: num_tasks(continual_dir, "retain90"),
                 lambda: continual_splits(continual_dir, "forget5", 1)):
        with pytest.raises(ConfigError, match=r"valid splits: forget01, forget05, forget10"):
            call()


def test_folder_matching_neither_layout_lists_what_was_expected(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "forget05.json", [qa("f1", task_id=1)])
    write_jsonl(tmp_path / "notes.json", [qa("x")])
    with pytest.raises(DataError) as err:
        load_tofu(tmp_path, "forget05")
    message = str(err.value)
    assert "is not a TOFU folder for forget05" in message
    assert "forget05.json with task_id, retain50.json" in message and "retain95.json" in message
    assert "found forget05.json, notes.json" in message


def test_folder_with_both_layouts_is_refused(tmp_path: Path) -> None:
    for name in ("forget01", "retain50", "retain99"):
        write_jsonl(tmp_path / f"{name}.json", [qa(name, task_id=1)])
    with pytest.raises(DataError, match=r"holds files of both TOFU layouts"):
        load_tofu(tmp_path, "forget01")


def test_missing_required_file_is_named(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "retain50.json", [qa("r")])  # continual marker, but no forget05.json
    with pytest.raises(DataError, match=r"the continual layout needs forget05.json here"):
        load_tofu(tmp_path, "forget05")


def test_missing_folder_and_file_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"TOFU folder not found"):
        load_tofu(tmp_path / "absent", "forget01")
    file = tmp_path / "forget01.json"
    write_jsonl(file, [qa("f")])
    with pytest.raises(DataError, match=r"is a file; pass the folder"):
        load_tofu(file, "forget01")
