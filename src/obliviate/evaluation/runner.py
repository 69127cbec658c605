"""Evaluate a model on a benchmark and write a self-describing ``results.json`` (docs/results.md).

Benchmarks:

``tofu``       a TOFU folder (either layout) or the hub id ``locuslab/TOFU``, with a forget split and task
``synthetic``  a folder written by ``obliviate synth``
``real_world`` a folder in the real-world layout (forget + neighbour people), or the shipped example
``files``      explicit files: ``forget=…``, ``retain=…`` and any utility sets (real-world layout included)
``muse``       a MUSE folder or hub id: verbatim and knowledge memorisation, privacy leakage (docs/muse_wmdp.md)
``wmdp``       lm-eval multiple-choice tasks: WMDP's hazardous-knowledge sets and MMLU (docs/muse_wmdp.md)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import asdict
from pathlib import Path

import torch

from obliviate.benchmarks.muse import muse_benchmark
from obliviate.benchmarks.real_world import real_world_aggregates, real_world_benchmark
from obliviate.benchmarks.synthetic import load_manifest
from obliviate.benchmarks.tofu import _normalise_utility, load_tofu, load_tofu_holdout
from obliviate.benchmarks.types import BENCHMARKS, BenchmarkSpec, EvalSet, Holdout, LoadedBenchmark
from obliviate.benchmarks.wmdp import wmdp_benchmark
from obliviate.data.formatting import PromptFormatter
from obliviate.data.loading import load_qa, parse_records, read_rows
from obliviate.errors import DataError, ObliviateError
from obliviate.files import read_json_object, remove_stale_temps, write_json_atomic
from obliviate.models import load_model
from obliviate.outputs import OutputLock, check_output_file, environment
from obliviate.evaluation import bootstrap as boot
from obliviate.evaluation.privacy_eval import retain_scores_from_results
from obliviate.evaluation.suite import (
    EvalSettings,
    RetainReference,
    Scorers,
    evaluate_model,
    retain_reference,
)
from obliviate.training.guard import nonfinite_parameters

SCHEMA_VERSION = 1


def _utility_records(path: Path):
    """A utility file: TOFU-style rows with ``original_answer`` get the real-world convention (tofu.py)."""
    return parse_records(_normalise_utility(read_rows(path)), layout="tofu")


def load_benchmark(spec: BenchmarkSpec) -> LoadedBenchmark:
    """The evaluation sets of a benchmark, with a description, the local files they came from and its holdout
    set (``spec.holdout`` when given, else the benchmark's own; without one, the reason why not)."""
    loaded = _load_sets(spec)
    if spec.holdout:
        path = Path(spec.holdout)
        loaded.holdout = Holdout(load_qa(path), {"source": str(path)})
    elif loaded.holdout is None:
        loaded.holdout = Holdout(None, {"reason": f"the {spec.kind} benchmark has no holdout set (non-members); "
                                                  "give one with --holdout or eval.holdout"})
    source = Path(loaded.holdout.info.get("source") or "")
    if loaded.holdout.records and source.is_file():
        # Beside the holdout rows in the privacy section, not in data_hashes: those are the evaluation sets.
        loaded.holdout.info["sha256"] = _sha256(source)
    return loaded


def _load_sets(spec: BenchmarkSpec) -> LoadedBenchmark:
    if spec.kind not in BENCHMARKS:
        raise ObliviateError(f"unknown benchmark '{spec.kind}'; valid: {', '.join(BENCHMARKS)}")
    if spec.kind == "tofu":
        if not spec.source:
            raise ObliviateError("the tofu benchmark needs a source: a TOFU folder or locuslab/TOFU")
        s = load_tofu(spec.source, spec.split, task=spec.task)
        named = {"forget": s.forget_eval, "retain": s.retain_eval, "real_authors": s.real_authors,
                 "world_facts": s.world_facts}
        sets = [EvalSet(name, rows) for name, rows in named.items() if rows]
        missing = [name for name, rows in named.items() if not rows]
        files = []
        if Path(spec.source).is_dir():
            stems = [f"{spec.split}_perturbed", "retain_perturbed", "real_authors_perturbed",
                     "world_facts_perturbed"]
            files = [p for stem in stems for p in Path(spec.source).glob(f"{stem}.json*")]
        info = {"name": "tofu", "source": spec.source, "forget_split": spec.split, "task": spec.task,
                "layout": s.layout, "missing_sets": missing, "real_world": spec.real_world}
        holdout = None
        if not spec.holdout:
            holdout = Holdout(*load_tofu_holdout(spec.source, spec.split))
        return LoadedBenchmark(sets, info, files, holdout)
    if spec.kind == "real_world":
        return real_world_benchmark(spec.source)
    if spec.kind == "muse":
        return muse_benchmark(spec.source)
    if spec.kind == "wmdp":
        return wmdp_benchmark(spec.tasks, include_path=spec.include_path, limit=spec.limit)
    if spec.kind == "synthetic":
        folder = Path(spec.source or "")
        manifest = load_manifest(folder)
        paths = {"forget": folder / "forget_perturbed.json", "retain": folder / "retain_perturbed.json",
                 "real_authors": folder / "real_authors_perturbed.json",
                 "world_facts": folder / "world_facts_perturbed.json"}
        sets = [EvalSet(name, _utility_records(p) if name in ("real_authors", "world_facts") else load_qa(p))
                for name, p in paths.items()]
        info = {"name": "synthetic", "source": str(folder), "seed": manifest.get("seed"),
                "authors": manifest.get("authors"), "facts": manifest.get("facts"), "real_world": spec.real_world}
        held = folder / "holdout_perturbed.json"
        if held.is_file():
            holdout = Holdout(load_qa(held), {"source": str(held)})
        else:
            reason = (f"{folder} has no holdout_perturbed.json (written before synthetic benchmarks had holdout "
                      "authors, or with none); regenerate it with obliviate synth")
            holdout = Holdout(None, {"source": str(held), "reason": reason})
        return LoadedBenchmark(sets, info, list(paths.values()), holdout)
    if not spec.files:
        raise ObliviateError("the files benchmark needs at least one set, e.g. forget=forget.json")
    sets, holdout = [], None
    for name, path in spec.files.items():
        if name == "holdout":
            # Not an evaluation set: the non-members of the membership-inference attacks.
            holdout = Holdout(load_qa(path), {"source": str(path)})
            continue
        kind = "forget" if name == "forget" else "retain" if name == "retain" else "utility"
        rows = _utility_records(Path(path)) if kind == "utility" else load_qa(path)
        sets.append(EvalSet(name, rows, kind))
    if not sets:
        raise ObliviateError("the files benchmark needs at least one evaluation set besides the holdout set")
    info = {"name": "files", "files": dict(spec.files), "real_world": spec.real_world}
    # Real-world files (forget people + neighbours): MU over the neighbour facts, no Forget Quality.
    aggregate = real_world_aggregates if spec.real_world and "neighbor" in spec.files else None
    return LoadedBenchmark(sets, info, [Path(p) for n, p in spec.files.items() if n != "holdout"], holdout,
                           aggregate=aggregate)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def check_finite_model(model, spec: str) -> None:
    """Refuse to evaluate a model whose weights hold NaN or inf: every metric of it would be meaningless."""
    bad = nonfinite_parameters(model)
    if bad:
        raise ObliviateError(f"model '{spec}' has non-finite weights (NaN or inf) in {len(bad)} tensor"
                             f"{'s' if len(bad) != 1 else ''} (first: {bad[0]}); it cannot be evaluated. Was it "
                             f"saved from a training run that diverged?")


def _read_retain_results(path: str | Path) -> tuple[Path, dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return path, read_json_object(path, strict=True, missing="retain results not found")


def checked_retain_results(loaded: LoadedBenchmark, path: str | Path | None,
                           settings: EvalSettings) -> tuple[Path, dict] | None:
    """A retain model's results (file, record) for a benchmark whose own evaluator takes them (MUSE's privacy
    leakage), checked by the benchmark; None when it takes none or no file is given."""
    if loaded.check_retain_results is None or path is None:
        return None
    file, data = _read_retain_results(path)
    loaded.check_retain_results(str(file), data, settings)
    return file, data


def retain_reference_from_results(path: str | Path, forget_questions: list[str], holdout: Holdout | None,
                                  settings: EvalSettings) -> RetainReference:
    """What a retain model's ``results.json`` offers another evaluation: forget-set truth-ratio values,
    memorisation values and — when it was evaluated with the same holdout questions — attack scores."""
    file, data = _read_retain_results(path)
    truth_x = retain_truth_x_from_results(file, forget_questions, data=data)
    forget = (data.get("sets") or {}).get("forget") or {}
    metrics = forget.get("metrics") if isinstance(forget, dict) else None
    forget_metrics = {}
    if isinstance(metrics, dict) and len(forget.get("items") or []) == len(forget_questions):
        for name in ("exact_memorization", "extraction_strength"):
            entry = metrics.get(name)
            if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)):
                forget_metrics[name] = float(entry["value"])
    privacy = None
    records = holdout.records if holdout is not None else None
    if records:
        held = records[: settings.set_size] if settings.set_size else records
        privacy = retain_scores_from_results(data, str(file), forget_questions, [r.question for r in held])
    return RetainReference(truth_x=truth_x, forget_metrics=forget_metrics, privacy=privacy)


def retain_truth_x_from_results(path: str | Path, forget_questions: list[str], *, data: dict | None = None
                                ) -> list[float]:
    """The forget-set truth-ratio values of a retain model from its ``results.json`` (or its ``data``)."""
    if data is None:
        path, data = _read_retain_results(path)
    try:
        items = data["sets"]["forget"]["items"]
        values = {it["question"]: it["truth_ratio_x"] for it in items}
    except (KeyError, TypeError):
        raise DataError("has no per-item forget results", path=str(path), field="sets.forget.items") from None
    missing = [q for q in forget_questions if values.get(q) is None]
    if missing:
        raise DataError(f"lacks truth-ratio values for {len(missing)} of the evaluated forget questions "
                        f"(first: {missing[0][:60]!r}); evaluate the retain model on the same split and set size",
                        path=str(path), field="sets.forget.items")
    return [values[q] for q in forget_questions]


def evaluate(model_spec: str, benchmark: BenchmarkSpec | LoadedBenchmark, out_path: str | Path, *,
             settings: EvalSettings | None = None, dtype: str = "auto", template: str = "chat",
             system_prompt: str | None = None, retain_model: str | None = None,
             retain_results: str | Path | None = None, run_info: dict | None = None,
             scorers: Scorers | None = None, seed: int = 0, model=None, tokenizer=None,
             model_path: str | Path | None = None) -> dict:
    """Evaluate ``model_spec`` and write ``out_path``.

    The model is ``model``/``tokenizer`` when given (already in memory), else loaded from ``model_path`` when
    given, else from ``model_spec``; ``model_spec`` is what the record names either way.

    ``out_path`` is checked before anything is evaluated and locked while the evaluation runs: a second
    process evaluating into the same file stops at once (:class:`~obliviate.outputs.OutputLock`).
    """
    settings = settings or EvalSettings()
    out_path = check_output_file(out_path)
    loaded = benchmark if isinstance(benchmark, LoadedBenchmark) else load_benchmark(benchmark)
    with OutputLock(out_path, what="--out file"):
        remove_stale_temps(out_path)  # what a killed evaluation into the same file left
        return _evaluate(model_spec, loaded, out_path, settings=settings, dtype=dtype, template=template,
                         system_prompt=system_prompt, retain_model=retain_model, retain_results=retain_results,
                         run_info=run_info, scorers=scorers, seed=seed, model=model, tokenizer=tokenizer,
                         model_path=model_path)


def _evaluate(model_spec: str, loaded: LoadedBenchmark, out_path: Path, *, settings: EvalSettings, dtype: str,
              template: str, system_prompt: str | None, retain_model: str | None,
              retain_results: str | Path | None, run_info: dict | None, scorers: Scorers | None, seed: int,
              model, tokenizer, model_path: str | Path | None) -> dict:
    settings.real_world = settings.real_world or bool(loaded.info.get("real_world"))
    torch.manual_seed(seed)
    # A missing file, or results that cannot be the reference, stop the evaluation before any model loads.
    retain_record = checked_retain_results(loaded, retain_results, settings)
    if model is None:
        model, tokenizer = load_model(str(model_path or model_spec), dtype=dtype)
    check_finite_model(model, model_spec)
    if loaded.evaluator is not None:
        retain = {}
        if retain_record is not None:
            retain["retain_results"] = (str(retain_record[0]), retain_record[1])
        elif loaded.check_retain_results is not None and retain_model is not None:
            r_model, r_tok = load_model(retain_model, dtype=dtype)
            check_finite_model(r_model, retain_model)
            retain["retain_model"] = (r_model, r_tok)
            del r_model, r_tok
        body = loaded.evaluator(model, tokenizer, settings, **retain)
        retain.clear()  # the retain model's memory goes back before the record is written
        # Intervals as for the question-answer benchmarks: every per-set metric the registry can recompute from
        # its items (MUSE's ROUGE-L F1) and every AUC and leakage of the privacy section.
        boot.add_intervals(body, resamples=settings.bootstrap, seed=seed, level=settings.confidence_level)
        # MUSE and lm-eval (WMDP) give the model their own plain-text prompts: no chat template, no system turn.
        prompt_format = {"template": None, "system_prompt": None, "template_default_system_prompt": None,
                         "example": None, "note": f"{loaded.info.get('name')}'s own plain-text prompts"}
        return _write_record(out_path, body, model_spec=model_spec, model=model, template=template,
                             prompt_format=prompt_format, run_info=run_info, loaded=loaded, seed=seed,
                             settings=settings, scorers=None, retain_model=retain_model,
                             retain_results=retain_results)
    scorers = scorers or Scorers.load(settings)
    formatter = PromptFormatter(tokenizer, template, system_prompt=system_prompt)

    forget_set = next((s for s in loaded.sets if s.kind == "forget"), None)
    retain, fq_reason = None, None
    if forget_set is not None:
        questions = [r.question for r in forget_set.records[: settings.set_size or None]]
        if retain_results is not None:
            retain = retain_reference_from_results(retain_results, questions, loaded.holdout, settings)
        elif retain_model is not None:
            r_model, r_tok = load_model(retain_model, dtype=dtype)
            check_finite_model(r_model, retain_model)
            retain = retain_reference(r_model, PromptFormatter(r_tok, template, system_prompt=system_prompt),
                                      forget_set, settings, loaded.holdout)
            del r_model
        else:
            fq_reason = "no retain model: pass --retain-model or --retain-results"
    body = evaluate_model(model, formatter, loaded.sets, scorers=scorers, settings=settings, retain=retain,
                          fq_reason=fq_reason, holdout=loaded.holdout, seed=seed, aggregate=loaded.aggregate)
    return _write_record(out_path, body, model_spec=model_spec, model=model, template=template,
                         prompt_format=formatter.describe(), run_info=run_info, loaded=loaded, seed=seed,
                         settings=settings, scorers=scorers, retain_model=retain_model, retain_results=retain_results)


def _write_record(out_path: Path, body: dict, *, model_spec: str, model, template: str, prompt_format: dict,
                  run_info: dict | None, loaded: LoadedBenchmark, seed: int, settings: EvalSettings,
                  scorers: Scorers | None, retain_model: str | None, retain_results: str | Path | None) -> dict:
    record = {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"spec": model_spec, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                  "template": template},
        "prompt_format": prompt_format,
        "run": run_info or {},
        "benchmark": loaded.info,
        "environment": environment(),
        "seed": seed,
        "data_hashes": _data_hashes(loaded.files),
        "settings": {**asdict(settings), **(scorers.settings if scorers is not None else {}),
                     "retain_model": retain_model, "retain_results": str(retain_results) if retain_results else None},
        **body,
    }
    previous = _previous_general_ability(Path(out_path), model_spec)
    if previous is not None:
        # `obliviate general` results for the same model stay with its record when it is re-evaluated.
        record["general_ability"] = previous
    write_json_atomic(out_path, record, what="the results")
    return record


def _data_hashes(files: list[Path]) -> dict[str, str]:
    """``{file name: sha256}``; names that repeat (MUSE's verbmem/forget.json and privleak/forget.json) are
    written with their folder."""
    present = [p for p in files if p.is_file()]
    names = [p.name for p in present]
    return {(p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}"): _sha256(p) for p in present}


def _previous_general_ability(path: Path, model_spec: str) -> dict | None:
    old = read_json_object(path)
    if old is not None and old.get("model", {}).get("spec") == model_spec:
        return old.get("general_ability")
    return None
