"""Continual unlearning (docs/continual.md): forget the tasks of a split one after another.

Tasks ``1..N`` of a forget split are unlearned in order. Step ``k`` forgets task ``k``, starting from the model
step ``k − 1`` produced (step 1 from ``model.name``). Its retain set is the base retain set plus the forget rows
of the tasks not yet forgotten (``task_id > k``), so it shrinks step by step; the paper observes that model
utility then degrades, so ``continual.top_up`` adds the rows of another QA file to every step's retain set.
After every step the model is evaluated with the forget set made of the evaluation rows of *all* tasks
forgotten so far (``1..k``).

Data (``data`` section, as for ``obliviate unlearn``):

* ``data.tofu`` — a TOFU folder in the continual layout (``forgetXX.json`` rows carry ``task_id``); the hub
  layout and the hub id hold one task per split, so they allow a single step only.
* ``data.forget`` — a QA file whose rows carry ``task_id`` 1..K, e.g. ``forget.json`` of a synthetic benchmark
  (``obliviate synth``), with ``data.retain`` as the base retain set. Beside a synthetic benchmark's
  ``benchmark.json`` the ``*_perturbed.json`` files are the evaluation sets; otherwise the forget file itself
  (tasks ``1..k``) and ``data.retain`` are evaluated.

Output::

    <output_dir>/
      continual.json   the config, the plan, and per finished step: sizes, reference, MU / FE / FQ
      step_01/         a normal unlearning run folder (config.yaml, run.json, model/, results.json)
      step_02/         ... its model.name is step_01/model
      report.html      written by ``obliviate continual`` (and report.md)

Each step folder is written as ``step_NN.partial`` and renamed when complete, like every run folder. A rerun
of the same config skips the complete steps; an unfinished step is continued from its last checkpoint with
``resume=True`` (``train.save_strategy`` must have written one), else redone.

Reference model (NPO, DPO, KL, LLMU): by default it is the model the step starts from — the previous step's
result, which is what a frozen copy of the starting model gives; ``continual.fix_ref_model=true`` makes it
the original ``model.name`` at every step. With LoRA each step's adapters are merged into the saved model
(``lora.merge`` must stay true) and the next step puts a fresh adapter on the merged weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.benchmarks.tofu import continual_splits, load_tofu, num_tasks
from obliviate.benchmarks.types import BenchmarkSpec, EvalSet, LoadedBenchmark
from obliviate.config import ContinualConfig, config_to_dict, load_continual_config
from obliviate.data.loading import format_problem, raise_problems
from obliviate.data.texts import load_set
from obliviate.data.records import QARecord
from obliviate.errors import ConfigError, DataError, ObliviateError
from obliviate.files import read_json_object, write_json_atomic
from obliviate.outputs import MARKER, OutputLock, is_main_process, written_by_obliviate
from obliviate.reporting import html_report, load_results, markdown_table
from obliviate.reporting.continual import continual_markdown
from obliviate.reporting.table import format_value
from obliviate.reporting.write import write_report_files

SUMMARY_FILE = "continual.json"
"""The run's summary, in the output folder: config, plan, and the aggregates after every finished step."""

STEP_PREFIX = "step_"

# Aggregates copied from each step's results.json into continual.json (and shown per step by the CLI).
SUMMARY_AGGREGATES: tuple[str, ...] = ("model_utility", "forget_efficacy", "forget_quality", "model_utility_tofu")

# Config keys that may change between an interrupted run and its continuation: the number of steps (a run
# can be extended by more tasks) and whether an existing folder may be replaced.
_MAY_CHANGE: tuple[tuple[str, ...], ...] = (("overwrite",), ("continual", "steps"))


# -- the plan: which rows each step trains and evaluates on --------------------------------------------------
@dataclass
class StepPlan:
    """What step ``step`` trains on (``forget``, ``retain``) and is evaluated on (``benchmark``).

    ``retain`` is ``retain_base_items`` base rows, then ``retain_pending_items`` forget rows of the tasks after
    ``step``, then ``top_up_items`` top-up rows, in that order. ``benchmark`` is None when evaluation is off.
    """

    step: int
    tasks_forgotten: list[int]
    forget: list[QARecord]
    retain: list[QARecord]
    retain_base_items: int
    retain_pending_items: int
    top_up_items: int
    benchmark: LoadedBenchmark | None = None

    @property
    def eval_forget_items(self) -> int | None:
        """Rows of the forget evaluation set after this step (tasks ``1..step``); None without one."""
        if self.benchmark is None:
            return None
        forget = next((s for s in self.benchmark.sets if s.kind == "forget"), None)
        return None if forget is None else len(forget.records)


@dataclass
class ContinualPlan:
    """Every step of a continual run, assembled (and checked) before anything is trained."""

    data: dict               # what the tasks come from (kind, source, split, ...)
    total_tasks: int
    steps: list[StepPlan]


def _cut(rows: list[QARecord], limit: int | None) -> list[QARecord]:
    return rows if limit is None else rows[:limit]


def _group_by_task(rows: list[QARecord], origin: str, what: str) -> dict[int, list[QARecord]]:
    """Rows grouped by ``task_id`` (file order kept); every row needs one and tasks must run 1..K."""
    missing = [r for r in rows if r.task_id is None]
    if missing:
        raise_problems(origin, [format_problem(r.source or origin, None, "task_id",
                                               "required field is missing (the continual scenario forgets the "
                                               "rows task by task)") for r in missing], what=what)
    by_task: dict[int, list[QARecord]] = {}
    for row in rows:
        by_task.setdefault(int(row.task_id), []).append(row)  # type: ignore[arg-type]
    tasks = sorted(by_task)
    if tasks != list(range(1, len(tasks) + 1)):
        # Step k forgets task k, so a gap would leave a step with nothing to forget.
        raise DataError(f"task_id values must run 1..K without gaps; found {tasks}", path=origin)
    return by_task


def _check_top_up(top_up: list[QARecord], forgotten: list[QARecord], last_step: int, origin: str) -> None:
    """A top-up row that is also a row to forget would train the model to keep what it must forget."""
    # Question and answer together: TOFU asks one question text of two different authors.
    gone = {(r.question, r.answer) for r in forgotten}
    leaks = [r for r in top_up if (r.question, r.answer) in gone]
    if leaks:
        raise_problems(origin, [format_problem(r.source or origin, None, None,
                                               f"is a forget row of step {last_step} or earlier: {r.question!r}")
                                for r in leaks], what="the retain top-up rows")


def _steps_error(n: int, total: int, where: str, hub: bool) -> ConfigError:
    if hub:
        return ConfigError([f"continual.steps: {n} steps need {n} tasks, but {where} is in the TOFU hub layout, "
                            f"which holds one task per split; give data.tofu a folder in the continual layout "
                            f"(forgetXX.json rows with task_id), see docs/continual.md"])
    return ConfigError([f"continual.steps: {n} steps need {n} tasks, but {where} has {total} "
                        f"(tasks 1..{total}); lower continual.steps or leave it null for every task"])


def _step_benchmark(base: LoadedBenchmark, forget_eval: dict[int, list[QARecord]] | None, step: int):
    """The evaluation sets after ``step``: the forget rows of tasks 1..step, and the base's other sets."""
    tasks = list(range(1, step + 1))
    sets = []
    if forget_eval is not None:
        sets.append(EvalSet("forget", [r for t in tasks for r in forget_eval[t]], "forget"))
    sets += [s for s in base.sets if s.kind != "forget"]
    # "task" named the one task of a single run; here the forget set spans every task forgotten so far.
    info = {k: v for k, v in base.info.items() if k != "task"}
    info.update(scenario="continual", tasks=tasks, continual_step=step)
    if forget_eval is None:
        info["missing_sets"] = sorted(set(info.get("missing_sets") or []) | {"forget"})
    return LoadedBenchmark(sets, info, list(base.files), base.holdout, aggregate=base.aggregate)


def plan_continual(cfg: ContinualConfig) -> ContinualPlan:
    """Load the data and assemble every step's training and evaluation sets; nothing is trained.

    Raises ConfigError when ``continual.steps`` exceeds the tasks the data has, and DataError for rows without
    ``task_id``, task numbers with gaps, or top-up rows that are rows to forget.
    """
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.evaluation.runner import load_benchmark

    d, c = cfg.data, cfg.continual
    evaluate = cfg.eval.enabled
    top_up = load_set(c.top_up, d.limit) if c.top_up else []

    if d.tofu is not None:
        total = num_tasks(d.tofu, d.split)
        n = c.steps or total
        if n > total:
            hub = total == 1 and load_tofu(d.tofu, d.split).layout == "hub"
            raise _steps_error(n, total, f"{d.split} of {d.tofu}", hub)
        by_task = {t: _cut(continual_splits(d.tofu, d.split, t)[0], d.limit) for t in range(1, total + 1)}
        # The last step's retain set holds no forget rows of later tasks: it is the base retain set alone.
        base = continual_splits(d.tofu, d.split, total)[1]
        if top_up:
            # continual_splits checks a top-up against every row forgotten up to the step it is given: the
            # last step covers them all, so a leak is reported before step 1 trains.
            continual_splits(d.tofu, d.split, n, top_up=top_up)
        data = {"kind": "tofu", "source": d.tofu, "split": d.split}
        base_bench = forget_eval = None
        if evaluate:
            base_bench = load_benchmark(BenchmarkSpec(kind="tofu", source=d.tofu, split=d.split, task=1,
                                                      real_world=cfg.eval.real_world))
            per_task = {t: load_tofu(d.tofu, d.split, task=t).forget_eval for t in range(1, n + 1)}
            forget_eval = None if any(rows is None for rows in per_task.values()) else per_task
    else:
        full = _group_by_task(load_set(d.forget, None), d.forget, "the continual forget file")
        total = len(full)
        n = c.steps or total
        if n > total:
            raise _steps_error(n, total, d.forget, hub=False)
        if top_up:
            _check_top_up(top_up, [r for t in range(1, n + 1) for r in full[t]], n, c.top_up or "top_up")
        by_task = {t: _cut(rows, d.limit) for t, rows in full.items()}
        base = load_set(d.retain, None) if d.retain else []
        folder = Path(d.forget).parent
        synthetic = (folder / "benchmark.json").is_file() and (folder / "forget_perturbed.json").is_file()
        data = {"kind": "synthetic" if synthetic else "files", "forget": d.forget, "retain": d.retain}
        base_bench = forget_eval = None
        if evaluate:
            if synthetic:
                spec = BenchmarkSpec(kind="synthetic", source=str(folder), real_world=cfg.eval.real_world)
            else:
                files = {"forget": d.forget, **({"retain": d.retain} if d.retain else {})}
                spec = BenchmarkSpec(kind="files", files=files, real_world=cfg.eval.real_world)
            base_bench = load_benchmark(spec)
            eval_forget = next(s for s in base_bench.sets if s.kind == "forget")
            origin = str(folder / "forget_perturbed.json") if synthetic else d.forget
            forget_eval = _group_by_task(eval_forget.records, origin, "the continual forget evaluation file")
            if len(forget_eval) < n:
                raise DataError(f"has evaluation rows for tasks 1..{len(forget_eval)} only; step {n} needs "
                                f"tasks 1..{n}", path=origin)

    # data.limit (quick runs) keeps the first rows of each task, of the base retain set and of the top-up, so
    # the retain set still shrinks by one (cut) task per step.
    base = _cut(base, d.limit)
    steps = []
    for k in range(1, n + 1):
        pending = [r for t in range(k + 1, total + 1) for r in by_task[t]]
        # Base rows first, then the tasks still to forget, then the top-up: the order continual_splits uses.
        retain = base + pending + top_up
        bench = _step_benchmark(base_bench, forget_eval, k) if base_bench is not None else None
        steps.append(StepPlan(step=k, tasks_forgotten=list(range(1, k + 1)), forget=by_task[k],
                              retain=retain, retain_base_items=len(base), retain_pending_items=len(pending),
                              top_up_items=len(top_up), benchmark=bench))
    return ContinualPlan(data=data, total_tasks=total, steps=steps)


# -- running --------------------------------------------------------------------------------------------------
@dataclass
class StepResult:
    """One step of a finished (or continued) run."""

    step: int
    output_dir: Path
    model_dir: Path
    skipped: bool                 # True when a complete step folder was reused
    entry: dict                   # this step's entry in continual.json


@dataclass
class ContinualResult:
    """What :func:`run_continual` did: the run folder, its continual.json (path and content), every step."""

    output_dir: Path
    summary_path: Path
    summary: dict
    steps: list[StepResult]

    @property
    def model_dir(self) -> Path:
        """The model after the last step."""
        return self.steps[-1].model_dir


def step_folder_name(step: int, total_steps: int) -> str:
    """``step_01`` … : zero-padded to two digits, or more when a run has 100 steps or more."""
    return f"{STEP_PREFIX}{step:0{max(2, len(str(total_steps)))}d}"


def _comparable(cfg: ContinualConfig) -> dict:
    """The config as stored in continual.json, without the keys allowed to change on a continuation."""
    tree = json.loads(json.dumps(config_to_dict(cfg)))
    for path in _MAY_CHANGE:
        node = tree
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return tree


def _claim_output(out: Path, cfg: ContinualConfig) -> None:
    """Make sure ``out`` is free or holds this same run; with ``overwrite`` a different run's steps are removed."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ObliviateError(f"output_dir {out} is a file; choose a folder")
    previous = read_json_object(out / SUMMARY_FILE)
    leftovers = sorted(p for p in out.iterdir() if p.name.startswith(STEP_PREFIX) or p.name == SUMMARY_FILE)
    if previous is not None and previous.get("kind") == "continual" and previous.get("config") == _comparable(cfg):
        return  # the same run: continue it
    if not leftovers:
        return
    if not cfg.overwrite:
        why = ("holds a continual run with a different config" if previous is not None
               else "holds step folders but no readable continual.json")
        raise ObliviateError(f"output folder {out} {why}; choose another output_dir, or set overwrite=true "
                             f"to replace its steps")
    foreign = [p for p in leftovers if p.is_dir() and not written_by_obliviate(p)
               and not (p.name.endswith(".partial") and (p / MARKER).is_file())]
    if foreign:
        raise ObliviateError(f"output folder {out} holds {foreign[0].name}, which obliviate did not write, so "
                             f"overwrite=true will not remove it; move it away or choose another output_dir")
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _write_summary(path: Path, summary: dict) -> None:
    write_json_atomic(path, summary)


def _aggregate_entry(results: dict | None, name: str, reason: str) -> dict:
    entry = (results or {}).get("aggregates", {}).get(name)
    if not isinstance(entry, dict):
        return {"value": None, "available": False, "reason": reason}
    keep = ("value", "higher_is_better", "available", "partial", "reason", "note")
    return {k: entry[k] for k in keep if k in entry}


def _step_entry(sp: StepPlan, folder: Path, out: Path, info: dict, eval_enabled: bool) -> dict:
    run = read_json_object(folder / "run.json") or {}
    results = read_json_object(folder / "results.json")
    if not eval_enabled:
        reason = "evaluation is off (eval.enabled=false)"
    elif results is None:
        reason = "the step folder has no readable results.json"
    else:
        reason = "not recorded in the step's results.json"
    entry = {
        "step": sp.step,
        "folder": str(folder.relative_to(out)),
        "tasks_forgotten": sp.tasks_forgotten,
        "forget_items": run.get("forget_items", len(sp.forget)),
        "retain_items": run.get("retain_items", len(sp.retain)),
        "retain_base_items": sp.retain_base_items,
        "retain_pending_items": sp.retain_pending_items,
        "top_up_items": sp.top_up_items,
        "eval_forget_items": sp.eval_forget_items,
        "start_model": info["start_model"],
        "reference_model": info["reference_model"],
        "results": str((folder / "results.json").relative_to(out)) if results is not None else None,
    }
    for name in SUMMARY_AGGREGATES:
        entry[name] = _aggregate_entry(results, name, reason)
    return entry


def _check_retain_results(cfg: ContinualConfig, plan: ContinualPlan) -> None:
    """Forget Quality needs the retain model's values for every forget question of the last step: check now."""
    if not (cfg.eval.enabled and cfg.eval.retain_results) or not plan.steps or plan.steps[-1].benchmark is None:
        return
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.evaluation.runner import retain_truth_x_from_results

    forget = next((s for s in plan.steps[-1].benchmark.sets if s.kind == "forget"), None)
    if forget is not None:
        questions = [r.question for r in forget.records[: cfg.eval.set_size or None]]
        retain_truth_x_from_results(cfg.eval.retain_results, questions)


def _needs_reference(cfg: ContinualConfig) -> bool:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.objectives import resolve_method
    from obliviate.training.trainer import TrainingObjective

    spec = resolve_method(cfg.method.name)
    return TrainingObjective(forget=spec.forget, regularizer=spec.regularizer).needs_reference


def run_continual(cfg: ContinualConfig, *, resume: bool = False, plan: ContinualPlan | None = None) -> ContinualResult:
    """Forget tasks 1..N one after another; every step is a normal unlearning run in ``step_NN/``.

    A rerun of the same config continues the run: complete step folders are reused, an unfinished step
    resumes from its last checkpoint when ``resume`` is true (else it is redone). ``plan`` (from
    :func:`plan_continual`) saves loading the data twice. Returns where everything is, with the summary
    written to ``<output_dir>/continual.json``. The output folder is locked against a second process.
    """

    plan = plan or plan_continual(cfg)
    _check_retain_results(cfg, plan)
    out = Path(cfg.output_dir)
    if not is_main_process():
        # Other ranks of a multi-process run train each step with the main process; only it writes here.
        return _run_steps(cfg, plan, out, resume, main=False)
    with OutputLock(out, what="output_dir"):
        _claim_output(out, cfg)
        out.mkdir(parents=True, exist_ok=True)
        return _run_steps(cfg, plan, out, resume, main=True)


def _run_steps(cfg: ContinualConfig, plan: ContinualPlan, out: Path, resume: bool, *, main: bool) -> ContinualResult:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.training.run import is_complete, unlearn

    c = cfg.continual
    n = len(plan.steps)
    needs_reference = _needs_reference(cfg)
    summary = {
        "kind": "continual",
        "status": "running",
        "method": cfg.method.name,
        "data": plan.data,
        "total_tasks": plan.total_tasks,
        "steps_planned": n,
        "fix_ref_model": c.fix_ref_model,
        "top_up": c.top_up,
        "original_model": cfg.model.name,
        "config": _comparable(cfg),
        "steps": [],
    }
    summary_path = out / SUMMARY_FILE
    if main:
        _write_summary(summary_path, summary)

    start_model = cfg.model.name
    results: list[StepResult] = []
    for sp in plan.steps:
        folder = out / step_folder_name(sp.step, n)
        if not needs_reference:
            reference = None
        else:
            reference = cfg.model.name if c.fix_ref_model else start_model
        info = {"step": sp.step, "tasks_forgotten": sp.tasks_forgotten, "fix_ref_model": c.fix_ref_model,
                "start_model": start_model, "reference_model": reference, "run_dir": str(out),
                "steps_planned": n, "top_up": c.top_up, "top_up_items": sp.top_up_items,
                "retain_base_items": sp.retain_base_items, "retain_pending_items": sp.retain_pending_items}
        skipped = is_complete(folder)
        if not skipped:
            unlearn(cfg.step_config(output_dir=folder, model=start_model), resume=resume, forget=sp.forget,
                    retain=sp.retain,
                    # Without fix_ref_model the default reference, a frozen copy of the starting model, is
                    # already the previous step's model; only the original model has to be loaded.
                    reference=cfg.model.name if (c.fix_ref_model and needs_reference) else None,
                    benchmark=sp.benchmark, run_extra={"continual": info})
        entry = _step_entry(sp, folder, out, info, cfg.eval.enabled)
        summary["steps"].append(entry)
        if main:
            _write_summary(summary_path, summary)
        results.append(StepResult(step=sp.step, output_dir=folder, model_dir=folder / "model", skipped=skipped,
                                  entry=entry))
        start_model = str(folder / "model")
    summary["status"] = "complete"
    if main:
        _write_summary(summary_path, summary)
    return ContinualResult(output_dir=out, summary_path=summary_path, summary=summary, steps=results)


def write_continual_report(output_dir: str | Path, *, out_html: str | Path | None = None,
                           title: str | None = None) -> Path | None:
    """Write ``report.html`` and ``report.md`` over every evaluated step of the run in ``output_dir``.

    The HTML page is the usual report (its continual section plots MU and FE against the number of tasks
    forgotten); the Markdown file is the paper-style table followed by the per-step table. Returns the HTML
    path, or None when no step has a results.json (evaluation was off).
    """
    out = Path(output_dir)
    summary = read_json_object(out / SUMMARY_FILE)
    if summary is None or summary.get("kind") != "continual":
        raise DataError("not a continual run folder (no readable continual.json)", path=str(out))
    paths = [out / s["results"] for s in summary.get("steps", []) if s.get("results")]
    if not paths:
        return None
    records = [load_results(p) for p in paths]
    data = summary.get("data") or {}
    what = data.get("split") or Path(str(data.get("forget") or "")).parent.name or "tasks"
    title = title or f"Continual unlearning: {summary.get('method')} on {what}"
    page = html_report(records, title=title)
    table = markdown_table(records) + "\n" + continual_markdown(records)
    html_path = Path(out_html) if out_html else out / "report.html"
    return write_report_files(html_path, page, html_path.with_suffix(".md"), table)


# -- command line ---------------------------------------------------------------------------------------------
def _format_plan(plan: ContinualPlan) -> str:
    source = ", ".join(f"{k}={v}" for k, v in plan.data.items() if v is not None)
    head = ("step", "forget", "retain", "= base", "+ later tasks", "+ top-up", "eval forget")
    lines = [f"{len(plan.steps)} of {plan.total_tasks} task(s) from {source}:",
             "  " + "  ".join(f"{h:>{max(6, len(h))}}" for h in head)]
    for sp in plan.steps:
        ev = "-" if sp.eval_forget_items is None else sp.eval_forget_items
        row = (sp.step, len(sp.forget), len(sp.retain), sp.retain_base_items, sp.retain_pending_items,
               sp.top_up_items, ev)
        lines.append("  " + "  ".join(f"{v:>{max(6, len(h))}}" for v, h in zip(row, head)))
    return "\n".join(lines)


def _cmd_continual(args: argparse.Namespace) -> int:
    cfg = load_continual_config(args.config, args.overrides)
    plan = plan_continual(cfg)
    print(_format_plan(plan))
    if args.dry_run:
        print(f"config and data are valid: {args.config or '(defaults)'}")
        return 0
    try:
        result = run_continual(cfg, resume=args.resume, plan=plan)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished steps are kept in {cfg.output_dir}. Rerun the same command to continue "
              f"(add --resume to continue an unfinished step from its last checkpoint, if "
              f"train.save_strategy wrote one)", file=sys.stderr)
        return 130

    print(f"\n  {'step':>4}  {'tasks':>5}  {'MU':>6}  {'FE':>6}  {'FQ':>9}")
    for step in result.steps:
        e = step.entry
        mu, fe, fq = (format_value(e[k].get("value"), k)
                      for k in ("model_utility", "forget_efficacy", "forget_quality"))
        print(f"  {e['step']:>4}  {len(e['tasks_forgotten']):>5}  {mu:>6}  {fe:>6}  {fq:>9}"
              + ("  (reused)" if step.skipped else ""))
    report = write_continual_report(result.output_dir) if is_main_process() else None
    print(f"\nmodel after the last step: {result.model_dir}\nsummary: {result.summary_path}")
    if report is not None:
        print(f"report: {report} (Markdown: {report.with_suffix('.md')})")
    return 0


def add_subcommand(sub: Any) -> None:
    """Add ``obliviate continual`` to the CLI's subcommands (``sub`` is argparse's subparsers object)."""
    p = sub.add_parser("continual", help="forget the tasks of a split one after another, evaluating every step")
    p.add_argument("--config", "-c", default=None, help="YAML config of kind continual (configs/continual/...)")
    p.add_argument("--resume", action="store_true",
                   help="continue an unfinished step from its last checkpoint (finished steps are always kept)")
    p.add_argument("--dry-run", action="store_true", help="validate the config and the data, print the plan, stop")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys, e.g. continual.steps=3 continual.fix_ref_model=true")
    p.set_defaults(func=_cmd_continual)


__all__ = ["ContinualPlan", "ContinualResult", "StepPlan", "StepResult", "add_subcommand", "plan_continual",
           "run_continual", "step_folder_name", "write_continual_report"]
