"""General ability of a model through lm-evaluation-harness (the optional extra ``obliviate[lm-eval]``).

Yuan et al. (2024, arXiv:2410.08109) check that unlearning leaves a model generally capable by scoring it on
ARC-Challenge, TruthfulQA, TriviaQA, MMLU and GSM8K (:data:`PAPER_TASKS`). :func:`run_general_ability`
scores a model that is already in memory (a plain ``PreTrainedModel`` or a PEFT/LoRA wrapper) on any
lm-eval tasks, in this process, and returns a compact, JSON-ready record; :func:`add_general_ability`
merges that record into a run's ``results.json`` under ``"general_ability"``; ``obliviate general`` does
both from the command line (:func:`add_subcommand`). docs/general_ability.md describes the record.

lm-eval is imported only when a function here needs it, so obliviate works without the extra; without it
these functions raise :class:`~obliviate.errors.ObliviateError` with the install command.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import functools
import importlib.metadata
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from obliviate.errors import ConfigError, DataError, ObliviateError
from obliviate.files import read_json_object, remove_stale_temps, write_json_atomic
from obliviate.outputs import OutputLock, check_output_file
from obliviate.reporting.general import validate_general_ability

__all__ = [
    "GENERAL_ABILITY_FILENAME",
    "INSTALL_HINT",
    "PAPER_METRICS",
    "PAPER_TASKS",
    "RESULTS_KEY",
    "add_general_ability",
    "add_subcommand",
    "check_tasks",
    "run_general_ability",
]

PAPER_TASKS: list[str] = ["arc_challenge", "truthfulqa_mc1", "triviaqa", "mmlu", "gsm8k"]
"""The paper's general-ability suite, as lm-eval task names (``mmlu`` is a group of 57 subjects). The paper's
released evaluation runs lm-eval's whole ``truthfulqa`` group but reports only its MC1 accuracy, so the MC1
task alone is run here; MC2 and the generation task can be named explicitly."""

PAPER_METRICS: dict[str, str] = {
    "arc_challenge": "acc_norm",
    "truthfulqa_mc1": "acc",
    "triviaqa": "exact_match,remove_whitespace",
    "mmlu": "acc",
    "gsm8k": "exact_match,flexible-extract",
}
"""The one number per task the paper reports, as a metric name of this module's record (``metric`` under
lm-eval's default filter, ``metric,filter`` otherwise). Every other metric lm-eval computes is kept too."""

INSTALL_HINT = "pip install 'obliviate[lm-eval]'"

LM_EVAL_REQUIREMENT = "lm-eval>=0.4.10,<0.5"
"""The versions the ``lm-eval`` extra allows: older releases do not import beside transformers 5."""

RESULTS_KEY = "general_ability"
"""Top-level key of ``results.json`` that holds the general-ability record."""

GENERAL_ABILITY_FILENAME = "general_ability.json"
"""The standalone record ``obliviate general`` writes into a run folder."""

RECORD_VERSION = 1
"""Version of the general-ability record's layout (docs/general_ability.md)."""

# How many "did you mean" names an unknown task lists, and how alike a name must be to count.
_SUGGESTIONS = 5
_SUGGESTION_CUTOFF = 0.6


# --------------------------------------------------------------------------------------------------
# lm-eval, imported on demand


def _lm_eval() -> SimpleNamespace:
    """The few lm-eval entry points used here, or an ObliviateError with the install command."""
    try:
        # Deferred: optional dependency: lm-eval (the lm-eval extra).
        from lm_eval.evaluator import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except (ImportError, AttributeError) as exc:
        # AttributeError: an lm-eval release older than LM_EVAL_REQUIREMENT fails at import time beside
        # transformers 5 (it reads classes that transformers removed).
        raise ObliviateError(
            f"general-ability evaluation needs lm-evaluation-harness ({LM_EVAL_REQUIREMENT}), which could not "
            f"be imported ({type(exc).__name__}: {exc}). Install it with:\n    {INSTALL_HINT}"
        ) from exc
    return SimpleNamespace(simple_evaluate=simple_evaluate, HFLM=HFLM, TaskManager=TaskManager,
                           version=importlib.metadata.version("lm_eval"))


@functools.lru_cache(maxsize=1)
def _builtin_manager() -> Any:
    """A TaskManager over lm-eval's built-in tasks only. Indexing its ~15,000 YAML files takes about ten
    seconds and they cannot change while the process runs, so the index is built once per process; each
    evaluation still builds fresh task objects from it."""
    return _lm_eval().TaskManager()


def _is_task_file(name: str) -> bool:
    """lm-eval also accepts the path of a task YAML file in place of a name."""
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


def check_tasks(tasks: Sequence[str], include_path: str | Path | None = None) -> Any:
    """Check that lm-eval knows every task name and return a TaskManager that can load them.

    With ``include_path``, names are looked up among the YAML files there alone first, which is instant;
    only a name not found there makes lm-eval index its built-in tasks too (about ten seconds).

    Raises:
        ObliviateError: lm-eval is not installed, ``include_path`` is not a folder, or a name is unknown;
            the message lists the closest known names for each unknown one.
    """
    lm = _lm_eval()
    names = [t for t in tasks if not _is_task_file(t)]
    if include_path is not None:
        if not Path(include_path).is_dir():
            raise ObliviateError(f"include path {include_path}: not a folder of lm-eval task YAML files")
        local = lm.TaskManager(include_path=str(include_path), include_defaults=False)
        if all(t in local.all_tasks for t in names):
            return local
        manager = lm.TaskManager(include_path=str(include_path))
    else:
        manager = _builtin_manager()
    known = set(manager.all_tasks)
    unknown = [t for t in names if t not in known]
    if unknown:
        ordered = sorted(known)
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, ordered, n=_SUGGESTIONS, cutoff=_SUGGESTION_CUTOFF)
            lines.append(f"  - '{name}'" + (f": did you mean {', '.join(close)}?" if close else ""))
        where = f"lm-eval {lm.version}" + (f" or {include_path}" if include_path is not None else "")
        raise ObliviateError(f"unknown lm-eval task{'s' if len(unknown) > 1 else ''} (not in {where}):\n"
                             + "\n".join(lines)
                             + "\nThe paper's tasks are " + ", ".join(PAPER_TASKS)
                             + "; local task YAML files are found through an include path (--include-path).")
    return manager


def _check_arguments(tasks: Sequence[str], limit: int | None, batch_size: int, num_fewshot: int | None) -> None:
    """Every problem with the arguments at once, as one ConfigError."""
    errors = []
    if isinstance(tasks, str) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        errors.append(f"tasks: expected a non-empty list of lm-eval task names, got {tasks!r}")
    elif len(set(tasks)) != len(tasks):
        errors.append(f"tasks: a task is named twice in {list(tasks)}")
    for name, value, lowest in (("limit", limit, 1), ("batch_size", batch_size, 1), ("num_fewshot", num_fewshot, 0)):
        if value is None and name != "batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            errors.append(f"{name}: must be an integer >= {lowest}, got {value!r}")
    if errors:
        raise ConfigError(errors)


# --------------------------------------------------------------------------------------------------
# Running


def run_general_ability(model: Any, tokenizer: Any, tasks: Sequence[str], *, include_path: str | Path | None = None,
                        limit: int | None = None, batch_size: int = 8, num_fewshot: int | None = None,
                        device: str | None = None, sample_metric: str | None = None) -> dict[str, Any]:
    """Score an in-memory model on lm-eval tasks and return the compact record (docs/general_ability.md).

    Args:
        model: a causal LM, or a PEFT wrapper of one (evaluated with its adapters active, unmerged).
        tokenizer: its tokenizer.
        tasks: lm-eval task, group or tag names (e.g. :data:`PAPER_TASKS`), or paths of task YAML files.
        include_path: a folder of extra task YAML files (local tasks with local data).
        limit: score only the first ``limit`` documents of each task — for smoke tests: such numbers are
            not comparable with published ones.
        batch_size: sequences per forward pass.
        num_fewshot: few-shot examples per prompt; ``None`` keeps each task's own default (0 when it has
            none). A task whose config fixes 0 shots keeps 0.
        device: move the model to this device first (in place); ``None`` leaves it where it is.
        sample_metric: also keep each scored document's value of this metric (e.g. ``"acc"``), per task in
            document order with its question, under the record's ``sample_scores`` (for per-item confidence
            intervals).

    lm-eval seeds Python's, NumPy's and torch's global random generators (its defaults) and puts the
    model in eval mode; the model's previous train/eval mode is restored afterwards.

    Raises:
        ObliviateError: lm-eval is missing, a task is unknown, or a task's data or configuration cannot
            be loaded (the real tasks download their datasets from the Hugging Face hub).
        ConfigError: an argument is out of range (every problem listed).
    """
    _check_arguments(tasks, limit, batch_size, num_fewshot)
    names = [t.strip() for t in tasks]
    lm = _lm_eval()
    manager = check_tasks(names, include_path)
    if device is not None:
        model.to(device)
    was_training = model.training
    try:
        # A PeftModel passes through as it is: HFLM only calls the model, so the adapters stay active and
        # the caller's object is not merged or modified.
        hflm = lm.HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        raw = lm.simple_evaluate(model=hflm, tasks=names, task_manager=manager, limit=limit,
                                 num_fewshot=num_fewshot, log_samples=sample_metric is not None)
    except OSError as exc:
        # Missing local data files, and hub datasets that cannot be downloaded (offline, gated, renamed):
        # datasets and huggingface_hub raise OSError subclasses for both.
        raise ObliviateError(f"lm-eval could not load the data of {', '.join(names)}: {exc}\nlm-eval's own tasks "
                             "download their datasets from the Hugging Face hub on first use; offline, fill the "
                             "datasets cache on a connected machine first, or use local tasks (docs/general_ability.md)"
                             ) from exc
    except ValueError as exc:
        # lm-eval's own rejections of a task list or task YAML (a task in two requested groups, an unknown
        # split or metric) are ValueErrors.
        raise ObliviateError(f"lm-eval rejected the tasks {', '.join(names)}: {exc}") from exc
    finally:
        model.train(was_training)
    if raw is None:  # only in a non-zero rank of a multi-process launch, which this in-process call is not
        raise ObliviateError("lm-eval returned no results (was this started as a secondary process?)")
    record = summarize(raw, names, version=lm.version, limit=limit, num_fewshot=num_fewshot,
                       batch_size=batch_size, include_path=include_path, model=model)
    if sample_metric is not None:
        record["sample_scores"] = sample_scores(raw, sample_metric)
    return record


def sample_scores(raw: Mapping[str, Any], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Per task, each scored document's ``metric`` (``value``) and its ``question`` (the document's question
    field, else ``"<task> #<doc_id>"``), in document order, from lm-eval's logged samples; tasks whose samples
    lack the metric are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for task, samples in (raw.get("samples") or {}).items():
        rows = sorted(samples, key=lambda row: row.get("doc_id", 0))
        values = [_number(row.get(metric)) for row in rows]
        if not values or any(v is None for v in values):
            continue
        questions = []
        for row in rows:
            doc = row.get("doc")
            text = doc.get("question") if isinstance(doc, Mapping) else None
            questions.append(text if isinstance(text, str) else f"{task} #{row.get('doc_id')}")
        out[task] = [{"question": q, "value": v} for q, v in zip(questions, values)]
    return out


def _number(value: Any) -> float | None:
    """A finite float, or None for lm-eval's placeholders ("N/A", nan, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _metrics(row: Mapping[str, Any], directions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One task's ``"metric,filter"`` entries as ``{name: {value, stderr, higher_is_better}}``.

    The name is the metric alone under lm-eval's default filter (``acc``) and ``metric,filter`` otherwise
    (``exact_match,strict-match``), so GSM8K's two answer extractions stay apart.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        metric, sep, filt = key.partition(",")
        # Keys without a comma are labels and counts (alias, name, sample_len, sample_count); stderr values
        # are read beside their metric below.
        if not sep or metric.endswith("_stderr"):
            continue
        name = metric if filt == "none" else key
        direction = directions.get(metric)
        entry: dict[str, Any] = {"value": _number(value), "stderr": _number(row.get(f"{metric}_stderr,{filt}")),
                                 "higher_is_better": direction if isinstance(direction, bool) else None}
        if entry["value"] is None:
            entry.update(available=False, reason=f"lm-eval returned {value!r} for {key}")
        out[name] = entry
    return out


def summarize(raw: Mapping[str, Any], requested: Sequence[str], *, version: str, limit: int | None = None,
              num_fewshot: int | None = None, batch_size: int | None = None,
              include_path: str | Path | None = None, model: Any = None) -> dict[str, Any]:
    """The compact record of an lm-eval results dict (what ``simple_evaluate`` returns).

    Every task and group lm-eval reports gets one entry in ``tasks``: its metrics with stderr and
    direction, ``n_samples`` (documents scored) and ``n_available`` (documents in the split), its shot
    count and version, the group it belongs to (``group``) and its direct ``subtasks``. A group's counts
    are the sums over its tasks. ``top_level`` lists the entries that belong to no group, in the order
    lm-eval reports them — the ones a report shows.
    """
    results = raw.get("results") or {}
    children = {name: list(kids) for name, kids in (raw.get("group_subtasks") or {}).items()}
    parent = {kid: group for group, kids in children.items() for kid in kids}
    counts = raw.get("n-samples") or {}
    shots = raw.get("n-shot") or {}
    versions = raw.get("versions") or {}
    directions = raw.get("higher_is_better") or {}

    def totals(name: str, seen: frozenset[str] = frozenset()) -> tuple[int, int]:
        if name in counts:
            return int(counts[name].get("effective", 0)), int(counts[name].get("original", 0))
        pairs = [totals(kid, seen | {name}) for kid in children.get(name, []) if kid not in seen]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    tasks: dict[str, Any] = {}
    for name, row in results.items():
        n_samples, n_available = totals(name)
        shot = shots.get(name)
        tasks[name] = {
            "metrics": _metrics(row, directions.get(name) or {}),
            "n_samples": n_samples,
            "n_available": n_available,
            "num_fewshot": shot if isinstance(shot, int) and not isinstance(shot, bool) else None,
            "version": versions.get(name),
            "group": parent.get(name),
            "subtasks": children.get(name, []),
        }
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lm_eval_version": version,
        "task_names": list(requested),
        "limit": limit,
        "num_fewshot": num_fewshot,
        "batch_size": batch_size,
        "include_path": str(include_path) if include_path is not None else None,
        "top_level": [name for name in tasks if tasks[name]["group"] is None],
        "tasks": tasks,
    }
    if model is not None:
        record["model"] = _model_info(model)
    return record


def _model_info(model: Any) -> dict[str, Any]:
    """What was scored: the class, whether LoRA adapters were active, dtype and device."""
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.models import is_peft_model

    first = next(iter(model.parameters()), None)
    return {"class": type(model).__name__, "peft": is_peft_model(model),
            "name_or_path": getattr(model, "name_or_path", None) or None,
            "dtype": str(first.dtype).replace("torch.", "") if first is not None else None,
            "device": str(first.device) if first is not None else None}


# --------------------------------------------------------------------------------------------------
# Records on disk


def _is_evaluation_record(data: Mapping[str, Any]) -> bool:
    """A results.json written by ``obliviate eval`` (docs/results.md), as opposed to any other JSON file."""
    return "schema_version" in data and isinstance(data.get("sets"), dict)


def add_general_ability(results_path: str | Path, general: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a general-ability record into an existing ``results.json`` under ``"general_ability"``.

    ``results_path`` is the file or a run folder holding one. The rest of the record is kept as it is; a
    previous ``general_ability`` entry is replaced. The file is rewritten atomically (a temporary file
    renamed into place), so a reader never sees half of it. Returns the updated record.

    Raises:
        DataError: the file is missing, not JSON, not an evaluation record, or ``general`` is malformed.
    """
    path = Path(results_path)
    if path.is_dir():
        path = path / "results.json"
    validate_general_ability(general, "general-ability record")
    # The same lock `obliviate eval` takes on this file: the read-modify-write never interleaves with another.
    with OutputLock(path, what="results file"):
        remove_stale_temps(path)
        record = read_json_object(path, strict=True)
        if not _is_evaluation_record(record):
            raise DataError("is not an evaluation record (no schema_version and sets); write the general-ability "
                            f"record to its own file ({GENERAL_ABILITY_FILENAME}) instead", path=str(path))
        record[RESULTS_KEY] = dict(general)
        write_json_atomic(path, record, what="the results")
    return record


# --------------------------------------------------------------------------------------------------
# Command line: `obliviate general`


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Register ``obliviate general`` on the CLI's subcommand parser."""
    p = sub.add_parser("general", help="general ability through lm-evaluation-harness (ARC, TruthfulQA, TriviaQA, "
                                       "MMLU, GSM8K); needs obliviate[lm-eval]")
    p.add_argument("--model", required=True, help="run folder, model folder, .gguf file, alias or hub id")
    p.add_argument("--tasks", default=",".join(PAPER_TASKS),
                   help=f"comma-separated lm-eval tasks (default: the paper's, {','.join(PAPER_TASKS)})")
    p.add_argument("--include-path", default=None, help="folder of extra lm-eval task YAML files")
    p.add_argument("--limit", type=int, default=None, help="first N documents per task (smoke tests only)")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=None,
                   help="where to write: a .json file or a folder (default: the run folder); an existing "
                        "results.json there gets the record merged in")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=_cmd_general)


def _targets(model_arg: str, out: str | None) -> tuple[str, Path, Path | None]:
    """(model spec to load, standalone record file, results.json to merge into or None) for the CLI.

    A run folder (``run.json`` + ``model/``) is scored through its ``model/`` folder; its record goes to
    ``<run>/general_ability.json`` and into ``<run>/results.json`` when that exists. ``--out`` may name a
    folder (the same two files there), an existing evaluation ``results.json`` (merged into; the standalone
    record goes beside it), or any other ``.json`` file (the standalone record alone).
    """
    run_dir = Path(model_arg)
    is_run = (run_dir / "run.json").is_file() and (run_dir / "model").is_dir()
    spec = str(run_dir / "model") if is_run else model_arg
    if out is None:
        if not is_run:
            raise ObliviateError("--out is required unless --model is a run folder")
        folder = run_dir
    else:
        target = Path(out)
        if target.suffix.lower() == ".json" and not target.is_dir():
            if target.is_file():
                existing = read_json_object(target, strict=True)
                if _is_evaluation_record(existing):
                    return spec, target.parent / GENERAL_ABILITY_FILENAME, target
                if "tasks" not in existing or "lm_eval_version" not in existing:
                    raise ObliviateError(f"--out {target}: exists and is neither an evaluation results.json nor a "
                                         "general-ability record; not overwriting it")
            return spec, target, None
        folder = target
    results = folder / "results.json"
    return spec, folder / GENERAL_ABILITY_FILENAME, results if results.is_file() else None


def _cmd_general(args: argparse.Namespace) -> int:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.models import load_model

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ObliviateError("--tasks: give at least one lm-eval task name, e.g. --tasks arc_challenge,mmlu")
    spec, record_path, merge_into = _targets(args.model, args.out)
    # Fail on a missing extra, a misspelt task or an unwritable output before spending time on the model.
    _check_arguments(tasks, args.limit, args.batch_size, args.num_fewshot)
    check_tasks(tasks, args.include_path)
    check_output_file(record_path)
    with OutputLock(record_path, what="--out file"):
        remove_stale_temps(record_path)
        model, tokenizer = load_model(spec, dtype=args.dtype, device=args.device)
        general = run_general_ability(model, tokenizer, tasks, include_path=args.include_path, limit=args.limit,
                                      batch_size=args.batch_size, num_fewshot=args.num_fewshot)
        general["model"] = {**general.get("model", {}), "spec": spec}
        write_json_atomic(record_path, general, what="the general-ability record")
    _print_summary(general)
    print(f"general ability written to {record_path}")
    if merge_into is not None:
        add_general_ability(merge_into, general)
        print(f"and merged into {merge_into} under '{RESULTS_KEY}'")
    return 0


def _print_summary(general: Mapping[str, Any]) -> None:
    for name in general["top_level"]:
        task = general["tasks"][name]
        cells = []
        for metric, entry in task["metrics"].items():
            arrow = {True: "↑", False: "↓"}.get(entry["higher_is_better"], "")
            value = "n/a" if entry["value"] is None else f"{entry['value']:.4f}"
            stderr = f" ± {entry['stderr']:.4f}" if entry.get("stderr") is not None else ""
            cells.append(f"{metric} {value}{stderr}{arrow}")
        print(f"{name:<24} n={task['n_samples']:<6} " + "  ".join(cells))
