"""Robustness probes: does the forgotten knowledge come back? (docs/robustness.md)

Three probes, each run on a finished unlearning run folder and written into its ``results.json`` under
``probes.<name>``, with the target model (before unlearning) and the retain model (never trained on the forget
set) measured the same way as the two anchors:

``relearn``       fine-tune the unlearned model for a few steps on a small part of the forget set, and — as a
                  control — as many steps on unrelated data; measure the *rest* of the forget set before and after.
                  Relearning attacks: Hu et al., 2024, arXiv 2406.13356; Lynch et al., 2024, arXiv 2402.16835.
``paraphrase``    the forget set asked with its original questions and with every rephrasing the data holds
                  (TOFU's ``paraphrased_question``, and any other ``*question*`` column of the forget file).
``quantization``  the unlearned model after 8-bit and 4-bit weight quantisation (:mod:`obliviate.quantization`;
                  Zhang et al., 2024, arXiv 2410.16454).

A section (docs/robustness.md) holds ``rows``: one per measured model (``role`` unlearned / probe / anchor), each
with the metrics of every measured set; ``recovery`` gives, per probe row, forget-side set and metric, the share of
what unlearning removed that came back: ``(probe − unlearned) / (target − unlearned)`` (0 = nothing came back,
1 = back to the target model; not computed where target and unlearned are closer than 1e-9).
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from obliviate.benchmarks.types import EvalSet, LoadedBenchmark
from obliviate.config import UnlearnConfig, _build
from obliviate.data.collate import collate_examples
from obliviate.data.formatting import PromptFormatter
from obliviate.data.loading import load_qa, read_rows
from obliviate.data.records import QARecord
from obliviate.errors import DataError, ObliviateError
from obliviate.evaluation.runner import check_finite_model, load_benchmark
from obliviate.evaluation.suite import EvalSettings, Scorers, evaluate_model
from obliviate.files import remove_stale_temps, write_json_atomic
from obliviate.models import load_model
from obliviate.outputs import OutputLock
from obliviate.quantization import DEFAULT_GROUP_SIZE, check_backend, default_backend, quantize_model
from obliviate.training.run import eval_benchmark

__all__ = ["PROBES", "ProbeContext", "add_probe_section", "paraphrase_probe", "probe_context", "quantization_probe",
           "recovery", "relearn_probe"]

PROBES: tuple[str, ...] = ("relearn", "paraphrase", "quantization")
RESULTS_KEY = "probes"
_EPS = 1e-9


@dataclass
class ProbeContext:
    """What every probe needs to know about a run: its model, benchmark, evaluation settings and anchors."""

    run_dir: Path
    model_path: Path
    results_path: Path
    loaded: Any                       # LoadedBenchmark
    settings: Any                     # EvalSettings
    template: str
    system_prompt: str | None
    dtype: str
    anchors: dict[str, str | None] = field(default_factory=dict)     # target / retain → model spec or None
    anchor_reasons: dict[str, str] = field(default_factory=dict)
    scorers: Any = None
    kinds: dict[str, str] = field(default_factory=dict)          # set name → kind, of every set measured

    def formatter(self, tokenizer) -> PromptFormatter:
        return PromptFormatter(tokenizer, self.template, system_prompt=self.system_prompt)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot be read ({exc})", path=str(path)) from None
    except yaml.YAMLError as exc:
        raise DataError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=str(path)) from None
    if not isinstance(data, dict):
        raise DataError("expected a mapping of config sections", path=str(path))
    return data


def probe_context(run: str | Path, *, target: str | None = None, retain: str | None = None,
                  results: str | Path | None = None, set_size: int | None = None, batch_size: int | None = None,
                  max_new_tokens: int | None = None, embedding_model: str | None = None,
                  nli_model: str | None = None) -> ProbeContext:
    """Read an unlearning run folder (``run.json``, ``config.yaml``, ``model/``) and its evaluation settings.

    The target anchor is ``target`` or the model the run started from (``model.name``); the retain anchor is
    ``retain`` or the run's ``eval.retain_model``. ``results`` is the record the probe is added to (default
    ``<run>/results.json``, which must exist: evaluate the run first). Settings not given are the run's own;
    the embedding and NLI models are off unless named (the probes compare models on the same measures).
    """
    run_dir = Path(run)
    if not (run_dir / "run.json").is_file() or not (run_dir / "model").is_dir():
        raise ObliviateError(f"{run_dir}: not a finished run folder (expected run.json and model/ in it)")
    raw = _read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
    kind = raw.pop("kind", "unlearn")
    if kind != "unlearn":
        raise ObliviateError(f"{run_dir}: a {kind} run; the probes measure an unlearning run")
    errors: list[str] = []
    cfg = _build(UnlearnConfig, raw, "", errors)
    if errors:
        raise DataError("; ".join(errors), path=str(run_dir / "config.yaml"))
    results_path = Path(results) if results is not None else run_dir / "results.json"
    if results_path.is_dir():
        results_path = results_path / "results.json"
    if not results_path.is_file():
        raise ObliviateError(f"{results_path}: no results record to add the probe to; evaluate the run first "
                             f"(obliviate eval --model {run_dir}) or name one with --results")
    e = cfg.eval
    settings = EvalSettings(max_new_tokens=max_new_tokens or e.max_new_tokens, batch_size=batch_size or e.batch_size,
                            set_size=set_size if set_size is not None else e.set_size,
                            embedding_model=embedding_model, nli_model=nli_model, real_world=e.real_world)
    spec = eval_benchmark(cfg)
    loaded = spec if isinstance(spec, LoadedBenchmark) else load_benchmark(spec)
    anchors = {"target": target or cfg.model.name, "retain": retain or e.retain_model}
    reasons = {}
    if anchors["retain"] is None:
        reasons["retain"] = "no retain model: pass --retain (or set eval.retain_model in the run's config)"
    return ProbeContext(run_dir=run_dir, model_path=run_dir / "model", results_path=results_path, loaded=loaded,
                        settings=settings, template=cfg.model.template, system_prompt=cfg.model.system_prompt,
                        dtype=cfg.model.dtype, anchors=anchors, anchor_reasons=reasons)


# --- measuring ------------------------------------------------------------------------------------------


def _scorers(ctx: ProbeContext):
    if ctx.scorers is None:
        ctx.scorers = Scorers.load(ctx.settings)
    return ctx.scorers


def measure(ctx: ProbeContext, model, tokenizer, sets: Sequence | None = None) -> dict[str, dict]:
    """``{set name: {metric: entry}}`` of ``model`` on ``sets`` (QA benchmarks) or on the benchmark's own
    measures (MUSE, WMDP: ``sets`` must be None)."""
    if ctx.loaded.evaluator is not None:
        if sets is not None:
            raise ObliviateError(f"this probe needs question-answer sets; the {ctx.loaded.info.get('name')} "
                                 f"benchmark measures with its own sets")
        # The probes compare the benchmark's own measures; its privacy attacks would be computed and dropped.
        body = ctx.loaded.evaluator(model, tokenizer, replace(ctx.settings, privacy=False))
    else:
        body = evaluate_model(model, ctx.formatter(tokenizer), list(sets), scorers=_scorers(ctx),
                              settings=ctx.settings)
    ctx.kinds.update({name: s.get("kind") for name, s in body["sets"].items()})
    return {name: {m: dict(entry) for m, entry in s["metrics"].items()} for name, s in body["sets"].items()}


def _forget_and_retain(ctx: ProbeContext):
    return [s for s in ctx.loaded.sets if s.kind in ("forget", "retain")]


def _load(spec: str, dtype: str):
    model, tokenizer = load_model(spec, dtype=dtype)
    check_finite_model(model, spec)
    return model, tokenizer


def _free() -> None:
    """Return the memory of models the caller has just deleted (a 7B model is tens of GB)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _row(label: str, role: str, sets: Mapping[str, dict], **extra) -> dict:
    return {"label": label, "role": role, "sets": dict(sets), **extra}


def _anchor_rows(ctx: ProbeContext, measure_fn) -> tuple[list[dict], dict[str, str]]:
    """The target and retain models measured by ``measure_fn(model, tokenizer)``; the reasons for any absent."""
    rows, reasons = [], dict(ctx.anchor_reasons)
    for role in ("target", "retain"):
        spec = ctx.anchors.get(role)
        if spec is None:
            continue
        model, tokenizer = _load(spec, ctx.dtype)
        rows.append(_row(role, "anchor", measure_fn(model, tokenizer), model=spec))
        del model
        _free()
    return rows, reasons


def recovery(rows: Sequence[Mapping], sets: Sequence[str] = ("forget",)) -> dict[str, dict[str, dict]]:
    """Per probe row, forget-side set and metric: ``(probe − unlearned) / (target − unlearned)`` (module
    docstring)."""
    by_label = {r["label"]: r for r in rows}
    base, target = by_label.get("unlearned"), by_label.get("target")
    out: dict[str, dict[str, dict]] = {}
    if base is None or target is None:
        return out
    for row in rows:
        if row["role"] != "probe":
            continue
        per_set = {}
        for set_name in sets:
            values = {}
            for metric, entry in (row["sets"].get(set_name) or {}).items():
                b = ((base["sets"].get(set_name) or {}).get(metric) or {}).get("value")
                t = ((target["sets"].get(set_name) or {}).get(metric) or {}).get("value")
                v = entry.get("value")
                values[metric] = None if None in (b, t, v) or abs(t - b) < _EPS else (v - b) / (t - b)
            per_set[set_name] = values
        out[row["label"]] = per_set
    return out


def _section(probe: str, ctx: ProbeContext, rows: list[dict], reasons: dict[str, str], settings: dict,
             recovery_sets: Sequence[str] | None = ("forget",)) -> dict:
    section = {
        "probe": probe,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "benchmark": ctx.loaded.info.get("name"),
        "settings": {**settings, "set_size": ctx.settings.set_size, "max_new_tokens": ctx.settings.max_new_tokens,
                     "batch_size": ctx.settings.batch_size},
        "rows": rows,
        "anchors_unavailable": reasons,
    }
    if recovery_sets is not None:
        section["recovery_sets"] = list(recovery_sets)
        section["recovery"] = recovery(rows, recovery_sets)
    return section


# --- quantisation ---------------------------------------------------------------------------------------


def quantization_probe(ctx: ProbeContext, *, bits: Sequence[int] = (8, 4), backend: str | None = None,
                       group_size: int | None = None) -> dict:
    """The unlearned model measured in full precision and after weight quantisation to each of ``bits``."""
    backend = backend or default_backend()
    group_size = group_size or DEFAULT_GROUP_SIZE
    check_backend(bits, backend)
    sets = None if ctx.loaded.evaluator is not None else _forget_and_retain(ctx)

    def measure_fn(model, tokenizer):
        return measure(ctx, model, tokenizer, sets)

    model, tokenizer = _load(str(ctx.model_path), ctx.dtype)
    rows = [_row("unlearned", "unlearned", measure_fn(model, tokenizer))]
    schemes = {}
    for b in bits:
        q = quantize_model(model, b, backend=backend, group_size=group_size, model_path=str(ctx.model_path))
        rows.append(_row(f"unlearned, int{b}", "probe", measure_fn(q.model, tokenizer), quantization=q.describe()))
        schemes[f"int{b}"] = q.describe()
        del q
        _free()
    del model
    _free()
    anchors, reasons = _anchor_rows(ctx, measure_fn)
    return _section("quantization", ctx, rows + anchors, reasons,
                    {"bits": list(bits), "backend": backend, "group_size": group_size, "schemes": schemes},
                    recovery_sets=[n for n, kind in ctx.kinds.items() if kind == "forget"])


# --- paraphrased questions ------------------------------------------------------------------------------


def _source_file(record: QARecord) -> tuple[str, str] | None:
    """(file, row location) from a record's ``source`` (``file:3`` or ``file:element 3``), for local files."""
    if not record.source or ":" not in record.source:
        return None
    path, _, where = record.source.rpartition(":")
    return (path, where) if Path(path).is_file() else None


def question_variants(records: Sequence[QARecord]) -> dict[str, list[str]]:
    """Every way the forget questions are asked: ``question``, ``paraphrased_question`` where every row has one,
    and any other string column with ``question`` in its name present on every row of a local forget file."""
    variants = {"question": [r.question for r in records]}
    if all(r.paraphrased_question for r in records):
        variants["paraphrased_question"] = [r.paraphrased_question for r in records]
    located = [_source_file(r) for r in records]
    if records and all(located):
        rows: dict[str, Any] = {}
        for path in sorted({p for p, _ in located}):
            rows.update({row.source: row.value for row in read_rows(path).rows})
        values = [rows.get(r.source) for r in records]
        if all(isinstance(v, Mapping) for v in values):
            names = sorted(set.intersection(*(set(v) for v in values)))
            for name in names:
                if "question" in name and name not in variants and name != "question":
                    column = [v[name] for v in values]
                    if all(isinstance(c, str) and c.strip() for c in column):
                        variants[name] = column
    return variants


def paraphrase_probe(ctx: ProbeContext) -> dict:
    """The forget set under each of its question variants, for the unlearned, target and retain models."""

    if ctx.loaded.evaluator is not None:
        raise ObliviateError(f"the paraphrase probe asks rephrased questions; the {ctx.loaded.info.get('name')} "
                             f"benchmark has none")
    forget = next((s for s in ctx.loaded.sets if s.kind == "forget"), None)
    if forget is None:
        raise ObliviateError("the run's benchmark has no forget set")
    records = forget.records[: ctx.settings.set_size] if ctx.settings.set_size else list(forget.records)
    variants = question_variants(records)
    if len(variants) == 1:
        raise ObliviateError("the forget set has no rephrased questions (no paraphrased_question, and no other "
                             "question column on every row)")
    sets = [EvalSet(f"forget:{name}", [replace(r, question=q) for r, q in zip(records, questions)], "forget")
            for name, questions in variants.items()]

    def measure_fn(model, tokenizer):
        return measure(ctx, model, tokenizer, sets)

    model, tokenizer = _load(str(ctx.model_path), ctx.dtype)
    rows = [_row("unlearned", "unlearned", measure_fn(model, tokenizer))]
    del model
    _free()
    anchors, reasons = _anchor_rows(ctx, measure_fn)
    section = _section("paraphrase", ctx, rows + anchors, reasons, {"variants": list(variants)},
                       recovery_sets=None)
    # The paraphrase "gap": how much higher (lower) each model scores with rephrased questions than original ones.
    section["gap"] = {row["label"]: {name: _differences(row["sets"].get(f"forget:{name}"),
                                                        row["sets"]["forget:question"])
                                     for name in variants if name != "question"} for row in rows + anchors}
    return section


def _differences(after: Mapping | None, before: Mapping) -> dict[str, float | None]:
    out = {}
    for metric, entry in before.items():
        a = ((after or {}).get(metric) or {}).get("value")
        b = entry.get("value")
        out[metric] = None if a is None or b is None else a - b
    return out


# --- relearning -----------------------------------------------------------------------------------------


def _key(r: QARecord) -> tuple[str, str]:
    return (r.question, r.answer)


def relearn_model(model, tokenizer, formatter: PromptFormatter, records: Sequence[QARecord], *, steps: int,
                  learning_rate: float, batch_size: int, seed: int) -> list[float]:
    """Fine-tune ``model`` in place for ``steps`` AdamW steps on ``records`` (answer tokens labelled, the data
    cycled in a seeded order); returns the loss of every step."""
    examples = [formatter.encode(r.question, r.answer) for r in records]
    order = list(range(len(examples)))
    rng = random.Random(seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate,
                                  weight_decay=0.0)
    model.train()
    losses, queue = [], []
    torch.manual_seed(seed)
    for _ in range(steps):
        batch = []
        while len(batch) < min(batch_size, len(examples)):
            if not queue:
                queue = order[:]
                rng.shuffle(queue)
            batch.append(examples[queue.pop()])
        b = collate_examples([{"input_ids": e.input_ids, "labels": e.labels} for e in batch],
                             tokenizer.pad_token_id)
        out = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                    labels=b["labels"].to(device))
        if not torch.isfinite(out.loss):
            raise ObliviateError(f"relearning diverged (loss {out.loss.item()}) at step {len(losses) + 1}; lower "
                                 f"--lr")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    model.eval()
    return losses


def _load_subset(path: str) -> list[QARecord]:
    return load_qa(path)


def relearn_probe(ctx: ProbeContext, *, steps: int, data: str | None = None, count: int | None = None,
                  control: str | None = None, learning_rate: float = 1e-5, batch_size: int = 4,
                  seed: int = 0) -> dict:
    """Relearning attack (module docstring): the rest of the forget set, before and after a few steps of
    fine-tuning on ``data`` (a QA file of forget rows) or on ``count`` forget rows drawn with ``seed``, next to
    the same steps on ``control`` (default: as many rows of the benchmark's retain set)."""

    if ctx.loaded.evaluator is not None:
        raise ObliviateError(f"the relearn probe splits a question-answer forget set; the "
                             f"{ctx.loaded.info.get('name')} benchmark measures with its own sets")
    if steps < 1:
        raise ObliviateError(f"--steps must be >= 1, got {steps}")
    if learning_rate <= 0 or not math.isfinite(learning_rate):
        raise ObliviateError(f"--lr must be a positive number, got {learning_rate}")
    if batch_size < 1:
        raise ObliviateError(f"--batch-size must be >= 1, got {batch_size}")
    if (data is None) == (count is None):
        raise ObliviateError("give the forget rows to relearn on: --data FILE or --count N (not both)")
    forget = next((s for s in ctx.loaded.sets if s.kind == "forget"), None)
    if forget is None:
        raise ObliviateError("the run's benchmark has no forget set")
    all_forget = list(forget.records)
    if data is not None:
        subset = _load_subset(data)
        known = {_key(r) for r in all_forget}
        foreign = [r for r in subset if _key(r) not in known]
        if foreign:
            raise DataError(f"{len(foreign)} of its {len(subset)} rows are not in the run's forget set (first: "
                            f"{foreign[0].question[:60]!r}); the relearning data must be forget rows", path=data)
    else:
        if count < 1 or count >= len(all_forget):
            raise ObliviateError(f"--count must be between 1 and {len(all_forget) - 1} (the forget set has "
                                 f"{len(all_forget)} rows, and some must be left to measure), got {count}")
        subset = random.Random(seed).sample(all_forget, count)
    used = {_key(r) for r in subset}
    rest = [r for r in all_forget if _key(r) not in used]
    if not rest:
        raise ObliviateError("the relearning data hold the whole forget set: nothing is left to measure")
    if control is not None:
        control_rows = _load_subset(control)
        overlap = [r for r in control_rows if _key(r) in {_key(x) for x in all_forget}]
        if overlap:
            raise DataError(f"{len(overlap)} of its rows are forget rows; the control must be unrelated data",
                            path=control)
        control_source = control
    else:
        retain = next((s for s in ctx.loaded.sets if s.kind == "retain"), None)
        if retain is None:
            raise ObliviateError("the benchmark has no retain set to draw control data from; pass --control FILE")
        control_rows = retain.records[: len(subset)]
        control_source = f"the first {len(control_rows)} rows of the benchmark's retain set"
    settings_set = ctx.settings.set_size
    measured = EvalSet("forget", rest, "forget")
    sets = [measured]

    def measure_fn(model, tokenizer):
        return measure(ctx, model, tokenizer, sets)

    ctx.settings = replace(ctx.settings, set_size=None)  # the rest is measured whole: set_size chose nothing
    try:
        model, tokenizer = _load(str(ctx.model_path), ctx.dtype)
        formatter = ctx.formatter(tokenizer)
        rows = [_row("unlearned", "unlearned", measure_fn(model, tokenizer))]
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        losses = {}
        for label, records in (("relearned on forget rows", subset), ("relearned on control data", control_rows)):
            model.load_state_dict(state)
            losses[label] = relearn_model(model, tokenizer, formatter, records, steps=steps,
                                          learning_rate=learning_rate, batch_size=batch_size, seed=seed)
            rows.append(_row(label, "probe", measure_fn(model, tokenizer), final_loss=losses[label][-1]))
        del model, state
        _free()
        anchors, reasons = _anchor_rows(ctx, measure_fn)
    finally:
        ctx.settings = replace(ctx.settings, set_size=settings_set)
    return _section("relearn", ctx, rows + anchors, reasons, {
        "steps": steps, "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
        "relearn_data": data or f"{len(subset)} forget rows drawn with seed {seed}",
        "relearn_rows": len(subset), "control_data": control_source, "control_rows": len(control_rows),
        "measured_rows": len(rest), "losses": losses})


# --- results.json ---------------------------------------------------------------------------------------


def add_probe_section(results_path: str | Path, name: str, section: Mapping[str, Any]) -> dict:
    """Write ``section`` into ``results_path`` under ``probes.<name>`` (atomically, under the file's lock)."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}")
    path = Path(results_path)
    with OutputLock(path, what="results file"):
        remove_stale_temps(path)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
        if not isinstance(record, dict) or "schema_version" not in record or not isinstance(record.get("sets"), dict):
            raise DataError("is not an evaluation record (no schema_version and sets)", path=str(path))
        probes = record.get(RESULTS_KEY)
        record[RESULTS_KEY] = {**(probes if isinstance(probes, dict) else {}), name: dict(section)}
        write_json_atomic(path, record, what="the results")
    return record
