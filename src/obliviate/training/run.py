"""Library entry points: ``unlearn(config)`` and ``finetune(config)``.

A run writes into ``<output_dir>.partial/`` and renames it to ``<output_dir>`` only when it has finished, so
an output folder either does not exist or is complete. Checkpoints (``train.save_strategy``) live in the
partial folder; an interrupted run is continued with ``resume=True`` and nothing is lost.

Run folder layout::

    <output_dir>/
      config.yaml      the full, validated config that ran
      run.json         kind, method, data sizes, seed, timings, the training log (loss terms per logging step)
      model/           the trained model (safetensors) and tokenizer; LoRA merged unless lora.merge=false
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from obliviate import __version__
from obliviate.config import FinetuneConfig, RunConfig, UnlearnConfig, config_to_dict
from obliviate.data.formatting import PromptFormatter
from obliviate.data.loading import load_qa
from obliviate.data.refusals import load_refusals
from obliviate.data.records import QARecord
from obliviate.errors import ObliviateError
from obliviate.objectives import ObjectiveParams, resolve_method
from obliviate.training.data import PartsCollator, UnlearningDataset
from obliviate.training.trainer import TrainingObjective, UnlearningTrainer

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    model_dir: Path
    log_history: list[dict]
    skipped: bool = False


# -- data -----------------------------------------------------------------------------------------------------
def _load_set(spec: str, limit: int | None) -> list[QARecord]:
    """A QA file, or a hub dataset written ``owner/name:config``."""
    if not os.path.exists(spec) and ":" in spec:
        hub_id, _, hub_config = spec.rpartition(":")
        return load_qa(hub_id, hub_config=hub_config, limit=limit)
    return load_qa(spec, limit=limit)


def _limit(rows: list[QARecord], limit: int | None) -> list[QARecord]:
    return rows if limit is None else rows[:limit]


def load_unlearning_data(cfg: UnlearnConfig) -> tuple[list[QARecord], list[QARecord]]:
    """The forget and retain training sets named by ``cfg.data``."""
    d = cfg.data
    if d.tofu is not None:
        from obliviate.benchmarks.tofu import load_tofu
        splits = load_tofu(d.tofu, d.split, task=d.task)
        return _limit(splits.forget, d.limit), _limit(splits.retain, d.limit)
    forget = _load_set(d.forget, d.limit)
    retain = _load_set(d.retain, d.limit) if d.retain else []
    return forget, retain


def load_finetune_data(cfg: FinetuneConfig) -> list[QARecord]:
    d = cfg.data
    if d.tofu is not None:
        from obliviate.benchmarks.tofu import load_tofu
        if d.finetune_on == "retain":
            rows = load_tofu(d.tofu, d.split, task=d.task).retain
        else:
            # forget10 task 1 + its retain set = all of TOFU, in either layout.
            full = load_tofu(d.tofu, "forget10", task=1)
            rows = full.forget + full.retain
        return _limit(rows, d.limit)
    rows: list[QARecord] = []
    for spec in d.train:
        rows += _load_set(spec, d.limit)
    return rows


# -- output folder --------------------------------------------------------------------------------------------
def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def is_complete(output_dir: str | Path) -> bool:
    """True when ``output_dir`` holds a finished run."""
    path = Path(output_dir) / "run.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("status") == "complete"
    except (OSError, json.JSONDecodeError):
        return False


def _prepare_output(cfg: RunConfig, resume: bool) -> Path:
    out = Path(cfg.output_dir)
    if out.exists() and not cfg.overwrite:
        raise ObliviateError(
            f"output folder {out} already exists; choose another output_dir or set overwrite=true")
    partial = _partial_dir(out)
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    return partial


def _finish_output(partial: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def _environment() -> dict:
    import transformers
    return {"obliviate": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


# -- training -------------------------------------------------------------------------------------------------
def _training_arguments(cfg: RunConfig, partial: Path, n_examples: int) -> TrainingArguments:
    t = cfg.train
    args = TrainingArguments(
        output_dir=str(partial / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        dataloader_pin_memory=torch.cuda.is_available(),
        optim=t.optim,
        deepspeed=t.deepspeed,
        fsdp=t.fsdp,
        report_to=t.report_to,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        label_names=[],
        disable_tqdm=False,
    )
    if t.gradient_checkpointing:
        args.gradient_checkpointing = True
    # Warm-up is given in epochs (the paper warms up for one): optimizer steps per epoch = examples /
    # (per-device batch × accumulation × devices), e.g. 400 / (4 × 4 × 2) → 13 steps.
    per_step = t.batch_size * t.gradient_accumulation_steps * max(1, args.world_size)
    args.warmup_steps = int(round(t.warmup_epochs * math.ceil(n_examples / per_step)))
    return args


def _build_model(cfg: RunConfig):
    from obliviate.models import LoraSettings, apply_lora, load_model
    model, tokenizer = load_model(cfg.model.name, dtype=cfg.model.dtype,
                                  trust_remote_code=cfg.model.trust_remote_code)
    if cfg.lora.enabled:
        lo = cfg.lora
        model = apply_lora(model, LoraSettings(r=lo.r, alpha=lo.alpha, dropout=lo.dropout,
                                               target_modules=lo.target_modules))
    return model, tokenizer


def _save(trainer: UnlearningTrainer, tokenizer, model_dir: Path, merge_lora: bool) -> None:
    from obliviate.models import save_model
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        # Sharded engines must gather the weights themselves.
        trainer.save_model(str(model_dir))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(model_dir))
        return
    if trainer.is_world_process_zero():
        save_model(trainer.accelerator.unwrap_model(trainer.model), tokenizer, model_dir, merge_lora=merge_lora)


class _EpochEvaluation(TrainerCallback):
    """Evaluates the model after every epoch into ``eval/epoch_N.json`` (``eval.every_epoch``)."""

    def __init__(self, cfg: UnlearnConfig, tokenizer, folder: Path, summary: dict, scorers, benchmark=None):
        self.cfg, self.tokenizer, self.folder, self.summary = cfg, tokenizer, folder, summary
        self.scorers, self.benchmark = scorers, benchmark

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            epoch = int(round(state.epoch))
            evaluate_run(self.cfg, self.folder / f"epoch_{epoch}.json", self.summary,
                         model=getattr(model, "module", model), tokenizer=self.tokenizer, scorers=self.scorers,
                         benchmark=self.benchmark)
        return control


def _train(cfg: RunConfig, *, kind: str, objective: TrainingObjective, forget: list[QARecord],
           retain: list[QARecord], mask: bool, resume: bool, summary: dict, reference_spec: str | None = None,
           benchmark=None) -> RunResult:
    partial = _prepare_output(cfg, resume)
    try:
        return _train_in(partial, cfg, kind=kind, objective=objective, forget=forget, retain=retain, mask=mask,
                         resume=resume, summary=summary, reference_spec=reference_spec, benchmark=benchmark)
    except BaseException:
        # Keep the partial folder only if it holds checkpoints to resume from; otherwise leave nothing behind.
        if not any((partial / "checkpoints").glob("checkpoint-*")):
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _train_in(partial: Path, cfg: RunConfig, *, kind: str, objective: TrainingObjective, forget: list[QARecord],
              retain: list[QARecord], mask: bool, resume: bool, summary: dict, reference_spec: str | None,
              benchmark) -> RunResult:
    out = Path(cfg.output_dir)
    (partial / "config.yaml").write_text(yaml.safe_dump({"kind": kind, **config_to_dict(cfg)}, sort_keys=False))
    started = time.time()

    model, tokenizer = _build_model(cfg)
    formatter = PromptFormatter(tokenizer, cfg.model.template, system_prompt=cfg.model.system_prompt,
                                max_length=cfg.model.max_length)
    refusals = load_refusals(cfg.data.refusals) if any(p.endswith("_idk") for p in objective.parts) else []
    dataset = UnlearningDataset(forget, retain, formatter, parts=objective.parts, mask=mask, refusals=refusals,
                                seed=cfg.train.seed)
    reference = None
    if objective.needs_reference and reference_spec is not None:
        from obliviate.models import frozen_copy, load_model
        reference = frozen_copy(load_model(reference_spec, dtype=cfg.model.dtype,
                                           trust_remote_code=cfg.model.trust_remote_code)[0])
    elif objective.needs_reference and not cfg.lora.enabled:
        from obliviate.models import frozen_copy
        reference = frozen_copy(model)
    args = _training_arguments(cfg, partial, len(dataset))
    trainer = UnlearningTrainer(model=model, args=args, train_dataset=dataset,
                                data_collator=PartsCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                                objective=objective, reference_model=reference)
    scorers = None
    if kind == "unlearn" and cfg.eval.enabled:
        from obliviate.evaluation.suite import Scorers
        scorers = Scorers.load(eval_settings(cfg))  # the embedding and NLI models, once per run
        if cfg.eval.every_epoch:
            trainer.add_callback(_EpochEvaluation(cfg, tokenizer, partial / "eval", summary, scorers, benchmark))
    checkpoint = get_last_checkpoint(args.output_dir) if resume and os.path.isdir(args.output_dir) else None
    if resume and checkpoint is None:
        log.warning("no checkpoint found in %s; starting from the beginning", args.output_dir)
    trainer.train(resume_from_checkpoint=checkpoint)
    _save(trainer, tokenizer, partial / "model", cfg.lora.merge)

    if kind == "unlearn" and cfg.eval.enabled and trainer.is_world_process_zero():
        sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
        model_for_eval = None if sharded else trainer.accelerator.unwrap_model(trainer.model)
        evaluate_run(cfg, partial / "results.json", summary, model=model_for_eval, tokenizer=tokenizer,
                     model_dir=partial / "model", scorers=scorers, benchmark=benchmark)

    if trainer.is_world_process_zero():
        record = {"status": "complete", "kind": kind, **summary, "examples": len(dataset),
                  "optimizer_steps": trainer.state.global_step, "seconds": round(time.time() - started, 1),
                  "resumed_from": checkpoint, "environment": _environment(),
                  "log_history": trainer.state.log_history}
        (partial / "run.json").write_text(json.dumps(record, indent=2))
        if cfg.train.save_strategy != "no":
            shutil.rmtree(partial / "checkpoints", ignore_errors=True)
        _finish_output(partial, out)
    return RunResult(output_dir=out, model_dir=out / "model", log_history=trainer.state.log_history)


def eval_benchmark(cfg: UnlearnConfig):
    """The benchmark an unlearning run is evaluated on, inferred from its data section."""
    from obliviate.evaluation.runner import BenchmarkSpec

    d = cfg.data
    if d.tofu is not None:
        return BenchmarkSpec(kind="tofu", source=d.tofu, split=d.split, task=d.task, real_world=cfg.eval.real_world)
    folder = Path(d.forget).parent
    if (folder / "benchmark.json").is_file() and (folder / "forget_perturbed.json").is_file():
        return BenchmarkSpec(kind="synthetic", source=str(folder), real_world=cfg.eval.real_world)
    from obliviate.benchmarks.real_world import is_real_world_folder, real_world_benchmark
    if is_real_world_folder(folder):
        return real_world_benchmark(folder)
    # A folder in the TOFU file layout (forget.json beside forget_perturbed.json, retain_perturbed.json, and
    # optionally the utility sets): evaluate on its perturbed files.
    if (folder / "forget_perturbed.json").is_file():
        files = {name: str(folder / f"{name}_perturbed.json")
                 for name in ("forget", "retain", "real_authors", "world_facts")
                 if (folder / f"{name}_perturbed.json").is_file()}
        return BenchmarkSpec(kind="files", files=files, real_world=cfg.eval.real_world)
    files = {"forget": d.forget}
    if d.retain:
        files["retain"] = d.retain
    return BenchmarkSpec(kind="files", files=files, real_world=cfg.eval.real_world)


def eval_settings(cfg: UnlearnConfig):
    from obliviate.evaluation.suite import EvalSettings

    e = cfg.eval
    return EvalSettings(max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, set_size=e.set_size,
                        embedding_model=e.embedding_model, nli_model=e.nli_model, real_world=e.real_world)


def evaluate_run(cfg: UnlearnConfig, out_path: Path, summary: dict, *, model=None, tokenizer=None,
                 model_dir: Path | None = None, scorers=None, benchmark=None) -> dict:
    """Evaluate an unlearning run's model (in memory, or from ``model_dir``) into ``out_path``."""
    from obliviate.evaluation.runner import evaluate

    method = summary.get("method", {})
    run_info = {"kind": "unlearn", "method": method.get("name"), "method_details": method,
                "output_dir": cfg.output_dir, "config": config_to_dict(cfg)}
    run_info.update(summary.get("run_extra") or {})  # what a scenario records about the run (unlearn's run_extra)
    return evaluate(str(cfg.output_dir) + "/model", benchmark or eval_benchmark(cfg), out_path, settings=eval_settings(cfg),
                    dtype=cfg.model.dtype, template=cfg.model.template, system_prompt=cfg.model.system_prompt,
                    retain_model=cfg.eval.retain_model, retain_results=cfg.eval.retain_results, run_info=run_info,
                    seed=cfg.train.seed, model=model, tokenizer=tokenizer if model is not None else None,
                    model_path=None if model is not None else model_dir, scorers=scorers)


def unlearn(cfg: UnlearnConfig, *, resume: bool = False, forget: list[QARecord] | None = None,
            retain: list[QARecord] | None = None, reference: str | None = None, benchmark=None,
            run_extra: dict | None = None) -> RunResult:
    """Unlearn ``cfg.data``'s forget set from ``cfg.model`` with ``cfg.method``; returns where the model is.

    Scenario code may pass the training sets directly (``forget``/``retain`` instead of ``cfg.data``), a
    ``reference`` model to load as the frozen reference (instead of a copy of the starting model), and the
    ``benchmark`` to evaluate on (a BenchmarkSpec or LoadedBenchmark; default: inferred from ``cfg.data``).
    ``run_extra`` entries are added to the ``run`` section of every results record (and kept in run.json under
    ``run_extra``), e.g. ``{"continual": {"step": 2, ...}}``.
    """
    spec = resolve_method(cfg.method.name)
    m = cfg.method
    objective = TrainingObjective(
        forget=spec.forget, regularizer=spec.regularizer,
        forget_coeff=spec.forget_coeff if m.forget_coeff is None else m.forget_coeff,
        regularization_coeff=spec.regularization_coeff if m.regularization_coeff is None else m.regularization_coeff,
        params=ObjectiveParams(beta=m.beta, me_direction=m.me_direction))
    mask = spec.mask if m.mask is None else m.mask
    if forget is None or retain is None:
        loaded_forget, loaded_retain = load_unlearning_data(cfg)
        forget = loaded_forget if forget is None else forget
        retain = loaded_retain if retain is None else retain
    summary = {"method": {"name": spec.name, "forget": spec.forget, "regularizer": spec.regularizer,
                          "forget_coeff": objective.forget_coeff,
                          "regularization_coeff": objective.regularization_coeff, "mask": mask,
                          **asdict(objective.params)},
               "forget_items": len(forget), "retain_items": len(retain)}
    if reference is not None:
        summary["reference_model"] = reference
    if run_extra:
        summary["run_extra"] = dict(run_extra)
    return _train(cfg, kind="unlearn", objective=objective, forget=forget, retain=retain, mask=mask,
                  resume=resume, summary=summary, reference_spec=reference, benchmark=benchmark)


def finetune(cfg: FinetuneConfig, *, resume: bool = False) -> RunResult:
    """Fine-tune ``cfg.model`` on a QA set (answer tokens only): a target model, or a retain model."""
    rows = load_finetune_data(cfg)
    if not rows:
        raise ObliviateError("the fine-tuning set is empty")
    objective = TrainingObjective(forget=None, regularizer="gd")
    return _train(cfg, kind="finetune", objective=objective, forget=[], retain=rows, mask=True, resume=resume,
                  summary={"train_items": len(rows)})
