"""TOFU (Maini et al., 2024): forget/retain training sets and the evaluation sets, from either layout.

Two layouts hold the same 4,000 question–answer pairs about 200 fictitious authors:

* **Continual** (the paper's released code): ``forget01/05/10.json`` whose
  rows carry a ``task_id`` (each task is a disjoint group of 40/200/400 rows; task 1 is the standard
  split), base retain files ``retain90/50/10.json``, and the ``*_perturbed.json`` evaluation files.
  The retain set of task ``t`` is the base file plus the forget rows of every other task, so it covers
  99/95/90 % of TOFU like the hub's ``retain99/95/90``.
* **Hub** (``locuslab/TOFU`` on the Hugging Face hub, or a folder of its configs saved as
  ``<config>.json``): ``forget01/05/10`` with ``retain99/95/90``, one forget set per split (task 1 only).

Utility sets. ``real_authors_perturbed`` and ``world_facts_perturbed`` hold a short ``answer`` (e.g.
"William Shakespeare", what ROUGE, probability and truth ratio use) and, in the continual layout, the
full sentence as ``original_answer`` (what cosine similarity and entailment use). :class:`QARecord` has
no ``original_answer``, so those rows are normalised to the real-world convention: ``answer`` becomes
the full sentence and ``golden_answer`` the short answer, so that ``record.eval_answer`` is the short
answer and ``record.answer`` the sentence, in both benchmarks. Rows without ``original_answer`` (as on
the hub) are left as they are.

Data quirk worth knowing: TOFU asks "What is the full name of the author?" of two different authors
(Aurelio Beltrán and Isabel Martínez), so question text alone is not a unique key; pairs of question and
answer are. With forget10, task 6 holds one of them and the base retain file the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from obliviate.data.loading import (
    RawRows,
    format_problem,
    looks_like_hub_id,
    parse_records,
    raise_problems,
    read_rows,
)
from obliviate.data.records import QARecord
from obliviate.errors import ConfigError, DataError, ObliviateError

TOFU_HUB_ID = "locuslab/TOFU"
"""The Hugging Face hub id of TOFU."""

FORGET_SPLITS: tuple[str, ...] = ("forget01", "forget05", "forget10")
"""The TOFU forget splits: 1, 5 and 10 % of the authors."""

CONTINUAL_BASE_RETAIN: dict[str, str] = {"forget01": "retain90", "forget05": "retain50", "forget10": "retain10"}
"""Continual layout: the base retain file of each split; the other tasks' forget rows complete it."""

HUB_RETAIN: dict[str, str] = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
"""Hub layout: the retain config that complements each forget config."""

HOLDOUT: dict[str, str] = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
"""The holdout config of each split: as many questions as the forget split, about fictitious authors outside the
fine-tuning data (the non-members of the membership-inference attacks, docs/metrics.md)."""

EVAL_SETS: tuple[str, ...] = ("retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")
"""Evaluation files shared by every split (the forget split's own is ``<split>_perturbed``)."""

# Files only one layout has: retain10/50 belong to the continual layout, retain99/95 to the hub's.
# retain90 is in both (continual base of forget01, hub retain of forget10), so it decides nothing alone.
_CONTINUAL_MARKERS = ("retain10", "retain50")
_HUB_MARKERS = ("retain99", "retain95")

Layout = Literal["continual", "hub"]


@dataclass
class TofuSplits:
    """The TOFU sets for one forget split and task.

    ``forget`` and ``retain`` are the training sets. The evaluation sets come from the perturbed files
    (``paraphrased_answer``, ``perturbed_answers``); each is None where its file is absent from a local
    folder. ``forget_eval`` covers the same task as ``forget``. ``real_authors`` and ``world_facts``
    follow the real-world convention described in the module docstring (``eval_answer`` is the short
    answer, ``answer`` the full sentence where the data has one).
    """

    forget: list[QARecord]
    retain: list[QARecord]
    forget_eval: list[QARecord] | None = None
    retain_eval: list[QARecord] | None = None
    real_authors: list[QARecord] | None = None
    world_facts: list[QARecord] | None = None
    forget_split: str = "forget05"
    task: int = 1
    layout: Layout = "continual"


@dataclass(frozen=True)
class _Source:
    """Where the TOFU files are: a local folder of either layout, or a hub id (always the hub layout)."""

    layout: Layout
    location: str
    folder: Path | None = None

    def read(self, name: str, *, required: bool) -> RawRows | None:
        """Rows of the file or hub config ``name``; None when an optional local file is absent."""
        if self.folder is None:
            return read_rows(self.location, hub_config=name, hub_split="train")
        file = self.folder / f"{name}.json"
        if not file.is_file():
            if required:
                raise DataError(f"the {self.layout} layout needs {name}.json here, and it is missing",
                                path=str(self.folder))
            return None
        return read_rows(file)


def load_tofu(source: str | Path, forget_split: str = "forget05", *, task: int = 1) -> TofuSplits:
    """Load the TOFU forget/retain training sets and evaluation sets for one split.

    Args:
        source: a local folder (continual or hub layout, detected from its files) or a hub id such as
            ``"locuslab/TOFU"``.
        forget_split: ``"forget01"``, ``"forget05"`` or ``"forget10"``.
        task: the continual layout's task to forget (1 = the standard TOFU split); must be 1 for the
            hub layout, which has one forget set per split.

    Returns:
        :class:`TofuSplits`. Continual layout: ``forget`` = rows of ``<split>.json`` with ``task_id ==
        task``; ``retain`` = the base retain file plus the forget rows of every other task (so forget01
        gives 40 forget and 3,960 retain rows, forget05 200/3,800, forget10 400/3,600).

    Raises:
        ConfigError: unknown split, or a task the data does not have.
        DataError: missing or malformed files, or a folder that matches neither layout.
        ObliviateError: the hub could not be reached.
    """
    _check_split(forget_split)
    source_ = _resolve(source, forget_split)
    if source_.layout == "hub":
        if task != 1:
            raise ConfigError([f"task must be 1 for the hub layout of TOFU (one forget set per split), "
                               f"got {task!r}; tasks 2 and up exist only in the continual layout"])
        forget = _records(source_.read(forget_split, required=True))
        retain = _records(source_.read(HUB_RETAIN[forget_split], required=True))
        forget_eval = _optional_records(source_.read(f"{forget_split}_perturbed", required=False))
    else:
        by_task, base = _continual_parts(source_, forget_split)
        _check_task(task, by_task, source_, forget_split, what="task")
        forget = by_task[task]
        retain = base + [r for t in sorted(by_task) if t != task for r in by_task[t]]
        forget_eval = _optional_records(source_.read(f"{forget_split}_perturbed", required=False))
        if forget_eval is not None:
            forget_eval = _rows_of_task(forget_eval, task, f"{forget_split}_perturbed.json", source_)
    retain_eval, real_authors, world_facts = (
        _optional_records(_normalise_utility(source_.read(name, required=False))) for name in EVAL_SETS)
    return TofuSplits(forget=forget, retain=retain, forget_eval=forget_eval, retain_eval=retain_eval,
                      real_authors=real_authors, world_facts=world_facts, forget_split=forget_split,
                      task=task, layout=source_.layout)


def load_tofu_holdout(source: str | Path, forget_split: str = "forget05") -> tuple[list[QARecord] | None, dict]:
    """TOFU's holdout set for ``forget_split`` (``holdout01/05/10``) and where it came from.

    From the hub config of that name when ``source`` is a hub id, else from ``<name>.json`` in the folder
    (either layout). Returns ``(None, {"reason": ...})`` when the folder has no such file or the hub cannot
    serve it: the privacy attacks are then reported unavailable with that reason, the rest of the evaluation
    runs. Malformed rows are a :class:`DataError`, as for every other TOFU file.
    """
    _check_split(forget_split)
    name = HOLDOUT[forget_split]
    source_ = _resolve(source, forget_split)
    if source_.folder is None:
        try:
            raw = source_.read(name, required=True)
        except ObliviateError as err:
            return None, {"source": f"{source_.location}[{name}]", "reason": f"{name} could not be loaded: {err}"}
        return _records(raw), {"source": f"{source_.location}[{name}]"}
    file = source_.folder / f"{name}.json"
    if not file.is_file():
        return None, {"source": str(file), "reason": f"{name}.json is not in {source_.folder} (TOFU's holdout "
                                                     f"sets are the {name} config of {TOFU_HUB_ID}; save it there "
                                                     f"or give a holdout file with --holdout)"}
    return _records(read_rows(file)), {"source": str(file)}


def num_tasks(source: str | Path, forget_split: str) -> int:
    """How many continual-unlearning steps ``forget_split`` offers: its task count (1 in the hub layout)."""
    _check_split(forget_split)
    source_ = _resolve(source, forget_split)
    if source_.layout == "hub":
        return 1
    by_task, _ = _continual_parts(source_, forget_split)
    return len(by_task)


def continual_splits(source: str | Path, forget_split: str, step: int, *,
                     top_up: list[QARecord] | None = None) -> tuple[list[QARecord], list[QARecord]]:
    """Forget and retain sets for step ``step`` of continual unlearning (tasks 1..N, one per step).

    ``forget`` is task ``step``. ``retain`` is the base retain file plus the forget rows of the tasks
    not yet forgotten (``task_id > step``), so it shrinks step by step, plus ``top_up`` rows appended
    to make up for that shrinkage. In the hub layout there is a single step, whose retain set is the
    split's retain config.

    Raises:
        ConfigError: unknown split or a step outside 1..N.
        DataError: a ``top_up`` row is one of the rows being forgotten at or before this step, which
            would train the model to keep what it is told to forget.
    """
    _check_split(forget_split)
    source_ = _resolve(source, forget_split)
    if source_.layout == "hub":
        if step != 1:
            raise ConfigError([f"step must be 1 for the hub layout of TOFU (a single forget set per split), "
                               f"got {step!r}"])
        forget = _records(source_.read(forget_split, required=True))
        retain = _records(source_.read(HUB_RETAIN[forget_split], required=True))
        forgotten = forget
    else:
        by_task, base = _continual_parts(source_, forget_split)
        _check_task(step, by_task, source_, forget_split, what="step")
        forget = by_task[step]
        retain = base + [r for t in sorted(by_task) if t > step for r in by_task[t]]
        forgotten = [r for t in sorted(by_task) if t <= step for r in by_task[t]]
    if top_up:
        # Compare question and answer together: TOFU repeats one question text for two authors.
        gone = {(r.question, r.answer) for r in forgotten}
        leaks = [r for r in top_up if (r.question, r.answer) in gone]
        if leaks:
            raise_problems("top_up", [format_problem(r.source or "top_up", None, None,
                                                     f"is a forget row of step {step} or earlier: "
                                                     f"{r.question!r}") for r in leaks],
                           what="the retain top-up rows")
        retain = retain + list(top_up)
    return forget, retain


# --- helpers -----------------------------------------------------------------------------------------


def _check_split(forget_split: str) -> None:
    if forget_split not in FORGET_SPLITS:
        raise ConfigError([f"forget_split {forget_split!r} is not a TOFU forget split; valid splits: "
                           f"{', '.join(FORGET_SPLITS)}"])


def _resolve(source: str | Path, forget_split: str) -> _Source:
    """Decide between a hub id and a local folder, and detect the folder's layout from its files."""
    folder = Path(source).expanduser()
    if not folder.exists() and looks_like_hub_id(source):
        return _Source("hub", str(source))
    if not folder.exists():
        raise DataError(f"TOFU folder not found (pass a local folder or the hub id {TOFU_HUB_ID})",
                        path=str(source))
    if not folder.is_dir():
        raise DataError(f"is a file; pass the folder that holds the TOFU files, or the hub id {TOFU_HUB_ID}",
                        path=str(source))

    def has(name: str) -> bool:
        return (folder / f"{name}.json").is_file()

    continual = [n for n in _CONTINUAL_MARKERS if has(n)]
    hub = [n for n in _HUB_MARKERS if has(n)]
    if continual and hub:
        raise DataError(f"holds files of both TOFU layouts ({', '.join(f'{n}.json' for n in continual)} are "
                        f"continual, {', '.join(f'{n}.json' for n in hub)} hub); keep one layout per folder",
                        path=str(source))
    layout: Layout | None = "continual" if continual else "hub" if hub else None
    if layout is None and has(forget_split):
        # Only retain90.json (or nothing) to go on: it is the continual base of forget01 and the hub
        # retain set of forget10, so the requested split decides.
        if has(CONTINUAL_BASE_RETAIN[forget_split]):
            layout = "continual"
        elif has(HUB_RETAIN[forget_split]):
            layout = "hub"
    if layout is None:
        found = sorted(p.name for p in folder.iterdir() if p.suffix == ".json")
        raise DataError(
            f"is not a TOFU folder for {forget_split}: expected either the continual layout "
            f"({forget_split}.json with task_id, {CONTINUAL_BASE_RETAIN[forget_split]}.json) or the hub "
            f"layout ({forget_split}.json, {HUB_RETAIN[forget_split]}.json), plus optionally "
            f"{forget_split}_perturbed.json and {', '.join(f'{n}.json' for n in EVAL_SETS)}; found "
            f"{', '.join(found[:12]) + (' ...' if len(found) > 12 else '') if found else 'no .json files'}",
            path=str(source))
    return _Source(layout, str(source), folder)


def _records(raw: RawRows | None) -> list[QARecord]:
    # Callers pass required=True, which raises instead of returning None.
    return parse_records(raw, layout="tofu") if raw is not None else []


def _optional_records(raw: RawRows | None) -> list[QARecord] | None:
    return parse_records(raw, layout="tofu") if raw is not None else None


def _normalise_utility(raw: RawRows | None) -> RawRows | None:
    """Map ``original_answer`` rows to the real-world convention (see the module docstring)."""
    if raw is None:
        return None

    def convert(row: Any) -> Any:
        if not isinstance(row, Mapping) or row.get("golden_answer") is not None:
            return row
        sentence, short = row.get("original_answer"), row.get("answer")
        # Only well-formed pairs move; otherwise the row is validated as it stands, so that a problem
        # is reported under the field name the file actually uses.
        if isinstance(sentence, str) and sentence.strip() and isinstance(short, str) and short.strip():
            return {**row, "answer": sentence, "golden_answer": short}
        return row

    return raw.map(convert)


def _continual_parts(source: _Source, forget_split: str) -> tuple[dict[int, list[QARecord]], list[QARecord]]:
    """The forget rows of ``forget_split`` grouped by task (in file order), and the base retain rows."""
    raw = source.read(forget_split, required=True)
    rows = _records(raw)
    missing = [r for r in rows if r.task_id is None]
    if missing:
        raise_problems(raw.origin if raw else forget_split,
                       [format_problem(r.source or forget_split, None, "task_id",
                                       "required field is missing (the continual layout groups forget rows "
                                       "into tasks)") for r in missing],
                       what="the continual TOFU forget file")
    by_task: dict[int, list[QARecord]] = {}
    for record in rows:
        by_task.setdefault(record.task_id, []).append(record)  # type: ignore[arg-type]
    tasks = sorted(by_task)
    if tasks != list(range(1, len(tasks) + 1)):
        # Steps run 1..N; a gap would make "step k" and "task k" disagree.
        raise DataError(f"task_id values must run 1..N without gaps; found {tasks}",
                        path=raw.origin if raw else forget_split)
    base = _records(source.read(CONTINUAL_BASE_RETAIN[forget_split], required=True))
    return by_task, base


def _check_task(task: int, by_task: dict[int, list[QARecord]], source: _Source, forget_split: str,
                *, what: str) -> None:
    if isinstance(task, bool) or not isinstance(task, int) or task not in by_task:
        raise ConfigError([f"{what} {task!r} is not in {forget_split} of {source.location}; its tasks are "
                           f"1..{len(by_task)}"])


def _rows_of_task(records: list[QARecord], task: int, name: str, source: _Source) -> list[QARecord]:
    """The rows of one task from a continual perturbed file (every row must carry ``task_id``)."""
    missing = [r for r in records if r.task_id is None]
    if missing:
        raise_problems(str(source.folder / name) if source.folder else name,
                       [format_problem(r.source or name, None, "task_id",
                                       "required field is missing (needed to pick the task's evaluation rows)")
                        for r in missing],
                       what="the continual TOFU evaluation file")
    return [r for r in records if r.task_id == task]
