"""WMDP's results sections from an lm-eval record: per-question accuracies as items where they give the reported
accuracy, a group's from its tasks' documents, none where lm-eval averaged unweighted."""

from __future__ import annotations

import pytest

from obliviate.benchmarks.wmdp import wmdp_sections


def _record(group_acc: float) -> dict:
    task = lambda acc, group=None: {"metrics": {"acc": {"value": acc}}, "n_samples": 2, "n_available": 2,  # noqa: E731
                                    "group": group, "subtasks": []}
    return {
        "top_level": ["wmdp_bio", "mmlu"],
        "tasks": {"wmdp_bio": task(0.5), "mmlu": {**task(group_acc), "n_samples": 5, "subtasks": ["a", "b"]},
                  "a": task(1.0, "mmlu"), "b": task(1 / 3, "mmlu")},
        "sample_scores": {"wmdp_bio": [{"question": "q1", "value": 1.0}, {"question": "q2", "value": 0.0}],
                          "a": [{"question": "a1", "value": 1.0}, {"question": "a2", "value": 1.0}],
                          "b": [{"question": "b1", "value": 0.0}, {"question": "b2", "value": 1.0},
                                {"question": "b3", "value": 0.0}]},
    }


def test_items_carry_each_questions_accuracy_and_a_group_gathers_its_tasks() -> None:
    out = wmdp_sections(_record(group_acc=3 / 5))           # weighted by size: 3 right of 5
    bio, mmlu = out["sets"]["wmdp_bio"], out["sets"]["mmlu"]
    assert bio["items"] == [{"question": "q1", "accuracy": 1.0}, {"question": "q2", "accuracy": 0.0}]
    assert bio["kind"] == "forget" and bio["metrics"]["accuracy"]["target"] == pytest.approx(0.25)
    assert [it["question"] for it in mmlu["items"]] == ["a1", "a2", "b1", "b2", "b3"]
    assert "sample_scores" not in out["wmdp"]


def test_a_group_averaged_unweighted_gets_no_items() -> None:
    out = wmdp_sections(_record(group_acc=(1.0 + 1 / 3) / 2))   # mean of the tasks' accuracies, not of documents
    assert "items" not in out["sets"]["mmlu"] and "items" in out["sets"]["wmdp_bio"]


def test_a_record_without_samples_has_no_items() -> None:
    record = _record(group_acc=3 / 5)
    del record["sample_scores"]
    assert all("items" not in s for s in wmdp_sections(record)["sets"].values())
