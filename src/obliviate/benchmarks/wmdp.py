"""WMDP (Li et al., 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
arXiv 2403.03218): multiple-choice accuracy on hazardous knowledge, which unlearning should lower to chance
(25 %), and on MMLU, which it should keep (docs/muse_wmdp.md).

The questions are scored through lm-evaluation-harness (:mod:`obliviate.evaluation.general`; the optional extra
``obliviate[lm-eval]``), whose ``wmdp_bio`` and ``wmdp_cyber`` tasks are the paper's (``wmdp_chem`` and the
``wmdp`` group can be named too). A task whose name starts with ``wmdp`` is a *forget* set (lower is better);
any other task measures utility. The record's ``sets`` hold one entry per top-level task with its ``accuracy``
(lm-eval's ``acc``), and the whole lm-eval record is kept under ``wmdp``.

The unlearning data are raw text: WMDP's bio and cyber forget corpora (``cais/wmdp-bio-forget-corpus`` is
gated; ``cais/wmdp-corpora`` holds the cyber corpus and the retain corpora), read with ``data.format: text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from obliviate.benchmarks.types import LoadedBenchmark
from obliviate.errors import ObliviateError
from obliviate.evaluation.general import _check_arguments, check_tasks, run_general_ability

__all__ = ["CHANCE", "WMDP_TASKS", "is_forget_task", "wmdp_benchmark", "wmdp_sections"]

WMDP_TASKS: tuple[str, ...] = ("wmdp_bio", "wmdp_cyber", "mmlu")
"""The paper's evaluation: hazardous biology and cybersecurity knowledge, and MMLU for general ability."""

CHANCE = 0.25
"""Accuracy of guessing among four choices: where unlearned hazardous knowledge should end up."""


def is_forget_task(name: str) -> bool:
    """A WMDP task (hazardous knowledge: lower accuracy is better) rather than a utility task."""
    return name.startswith("wmdp")


def _leaves(record: dict, name: str) -> list[str]:
    """The tasks under ``name`` that score documents themselves (``name`` itself when it is not a group)."""
    subtasks = record["tasks"].get(name, {}).get("subtasks") or []
    return [leaf for kid in subtasks for leaf in _leaves(record, kid)] if subtasks else [name]


def _items(record: dict, name: str, value: float | None) -> list[dict] | None:
    """Each scored document's accuracy (0 or 1) under task or group ``name``, when lm-eval logged them and their
    mean is the reported accuracy (a group that averages its tasks' accuracies unweighted gets none)."""
    scores = record.get("sample_scores") or {}
    leaves = _leaves(record, name)
    if value is None or not all(leaf in scores for leaf in leaves):
        return None
    rows = [row for leaf in leaves for row in scores[leaf]]
    if not rows or abs(sum(row["value"] for row in rows) / len(rows) - value) > 1e-9:
        return None
    return [{"question": row["question"], "accuracy": row["value"]} for row in rows]


def wmdp_sections(record: dict) -> dict:
    """The ``sets`` / ``aggregates`` / ``wmdp`` sections of a results record from an lm-eval record.

    With the record's ``sample_scores`` (per-document accuracies), each set also holds its ``items``, from which
    the evaluation's bootstrap gives the accuracy its confidence interval; they are not kept in the ``wmdp``
    copy of the record.
    """
    record = dict(record)
    sets: dict[str, dict] = {}
    for name in record["top_level"]:
        task = record["tasks"][name]
        acc = task["metrics"].get("acc") or {}
        kind = "forget" if is_forget_task(name) else "utility"
        entry = {"value": acc.get("value"), "higher_is_better": kind != "forget"}
        if acc.get("stderr") is not None:
            entry["stderr"] = acc["stderr"]
        if entry["value"] is None:
            entry.update(available=False, reason=acc.get("reason") or f"lm-eval reported no acc for {name}")
        if kind == "forget":
            entry["target"] = CHANCE
        sets[name] = {"size": task.get("n_samples"), "rows_available": task.get("n_available"), "kind": kind,
                      "metrics": {"accuracy": entry}}
        items = _items(record, name, entry["value"])
        if items is not None:
            sets[name]["items"] = items
    record.pop("sample_scores", None)
    return {"sets": sets, "aggregates": {}, "wmdp": record}


def wmdp_benchmark(tasks: Sequence[str] = (), *, include_path: str | Path | None = None, limit: int | None = None):
    """A :class:`~obliviate.benchmarks.types.LoadedBenchmark` scoring lm-eval tasks (default :data:`WMDP_TASKS`).

    The task names are checked now (lm-eval installed, every name known), before any model is loaded.
    """
    names = [t.strip() for t in (tasks or WMDP_TASKS) if t.strip()]
    if not names:
        raise ObliviateError("the wmdp benchmark needs at least one lm-eval task, e.g. wmdp_bio")
    _check_arguments(names, limit, 1, None)
    check_tasks(names, include_path)

    def evaluator(model, tokenizer, settings) -> dict:
        record = run_general_ability(model, tokenizer, names, include_path=include_path, limit=limit,
                                     batch_size=settings.batch_size, sample_metric="acc")
        return wmdp_sections(record)

    info = {"name": "wmdp", "tasks": names, "include_path": str(include_path) if include_path else None,
            "limit": limit}
    return LoadedBenchmark([], info, [], evaluator=evaluator)
