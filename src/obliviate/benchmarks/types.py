"""What a benchmark hands to the evaluation: its sets, a description, its files, its holdout set and, where it
differs from TOFU's, its own ``aggregates`` section.

The bottom of the benchmark layer: the benchmark loaders (``tofu``, ``synthetic``, ``real_world``) and the
evaluation (``obliviate.evaluation``) both import these types, and this module imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.data.records import QARecord

__all__ = ["BENCHMARKS", "SET_KINDS", "Aggregation", "BenchmarkSpec", "EvalSet", "Holdout", "LoadedBenchmark"]

BENCHMARKS = ("tofu", "synthetic", "real_world", "files", "muse", "wmdp")
SET_KINDS = {"forget": "forget", "retain": "retain", "real_authors": "utility", "world_facts": "utility"}

Aggregation = Callable[[Mapping[str, Mapping[str, Any]]], dict]
"""A benchmark's own ``aggregates`` section, computed from the evaluated ``sets`` section."""


@dataclass
class EvalSet:
    """One evaluation set: ``name`` is forget / retain / real_authors / world_facts (or any name with a kind)."""

    name: str
    records: list[QARecord]
    kind: str = ""

    def __post_init__(self):
        if not self.kind:
            self.kind = SET_KINDS.get(self.name, "retain")
        if self.kind not in ("forget", "retain", "utility"):
            raise ValueError(f"set kind must be forget, retain or utility, got {self.kind!r}")


@dataclass
class Holdout:
    """Non-members for the membership-inference attacks: questions the model was never trained on.

    ``records`` is None when the benchmark has none, and ``info["reason"]`` then says why; ``info`` also says
    where the rows came from (``source``).
    """

    records: list[QARecord] | None
    info: dict = field(default_factory=dict)


@dataclass
class BenchmarkSpec:
    kind: str = "tofu"                  # one of BENCHMARKS
    source: str | None = None           # TOFU folder / hub id, or synthetic folder
    split: str = "forget05"
    task: int = 1
    files: dict[str, str] = field(default_factory=dict)   # kind "files": set name -> file
    real_world: bool = False
    holdout: str | None = None          # a QA file of non-members; default: the benchmark's own holdout set
    tasks: list[str] = field(default_factory=list)        # kind "wmdp": lm-eval tasks (default: WMDP_TASKS)
    include_path: str | None = None                       # kind "wmdp": extra lm-eval task YAML files
    limit: int | None = None                              # kind "wmdp": first N documents per task


@dataclass
class LoadedBenchmark:
    sets: list[EvalSet]
    info: dict
    files: list[Path]
    holdout: Holdout | None = None      # non-members for the membership-inference attacks (privacy)
    # Benchmarks with their own measures (MUSE, WMDP): evaluator(model, tokenizer, settings) -> the record's
    # sections ("sets", "aggregates" and any of their own); None for the question-answer suite.
    evaluator: Callable[..., dict] | None = None
    # For an evaluator that takes a retain model's reference (MUSE's privacy leakage) as retain_results=(path,
    # record) or retain_model=(model, tokenizer): checks a retain results record (path, record, settings) before
    # any model is loaded, raising DataError when it cannot serve. None: the evaluator takes no reference.
    check_retain_results: Callable[[str, Mapping, Any], None] | None = None
    aggregate: Aggregation | None = None  # the benchmark's own aggregates; None: TOFU's (evaluation/suite.py)
