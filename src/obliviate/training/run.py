"""Library entry points: ``unlearn(config)`` and ``finetune(config)``.

A run writes into ``<output_dir>.partial/`` and renames it to ``<output_dir>`` only when it has finished, so
an output folder either does not exist or is complete. Checkpoints (``train.save_strategy``) live in the
partial folder; an interrupted run is continued with ``resume=True`` from the newest complete checkpoint and
nothing is lost. While it runs, the output is locked against a second process; ``overwrite=true`` replaces
only a folder obliviate wrote; a NaN or inf stops the run before anything bad is saved
(:mod:`obliviate.training.guard`). docs/reliability.md lists what each failure leaves behind.

Run folder layout::

    <output_dir>/
      config.yaml      the full, validated config that ran
      run.json         kind, method, data sizes, seed, timings, the training log (loss terms per logging step),
                       updates skipped by train.nan_policy=skip (skipped_updates, skipped_steps)
      .obliviate       marks the folder as obliviate's (overwrite=true replaces only such folders)
      model/           the trained model (safetensors) and tokenizer; LoRA merged unless lora.merge=false; its
                       model card README.md (what was forgotten and how, the summary metrics once evaluated)
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import yaml
from transformers import TrainerCallback, TrainingArguments, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled

from obliviate.benchmarks.muse import find_muse_root
from obliviate.benchmarks.real_world import is_real_world_folder, real_world_benchmark
from obliviate.benchmarks.tofu import load_tofu
from obliviate.benchmarks.types import BenchmarkSpec, Holdout, LoadedBenchmark
from obliviate.config import FinetuneConfig, RunConfig, UnlearnConfig, config_to_dict
from obliviate.data.formatting import PromptFormatter
from obliviate.data.loading import load_qa
from obliviate.data.refusals import load_refusals
from obliviate.data.texts import detect_format, load_set, record_key
from obliviate.data.records import QARecord, TextRecord
from obliviate.errors import ConfigError, DataError, ObliviateError
from obliviate.evaluation.runner import (
    checked_retain_results,
    evaluate,
    load_benchmark,
    retain_reference_from_results,
)
from obliviate.evaluation.suite import EvalSettings, Scorers
from obliviate.files import read_json_object, write_json_atomic, write_text_atomic
from obliviate.models import (
    LoraSettings,
    _write_marker,
    apply_lora,
    frozen_copy,
    is_peft_model,
    load_model,
    resolve_model,
    save_model,
)
from obliviate.objectives import ObjectiveParams, resolve_method, term_params
from obliviate.objectives.params import params_as_dict
from obliviate.outputs import RunFolder, environment, is_main_process
from obliviate.reporting.model_card import update_card_with_results, write_run_card
from obliviate.training.checkpoints import last_complete_checkpoint
from obliviate.training.data import PartsCollator, UnlearningDataset
from obliviate.training.distributed import loading_in_one_process
from obliviate.training.guard import NonFiniteGuard, TrainingStopped, nonfinite_parameters
from obliviate.training.trainer import TrainingObjective, UnlearningTrainer

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    model_dir: Path
    log_history: list[dict]


# -- data -----------------------------------------------------------------------------------------------------
def _limit(rows: list[QARecord], limit: int | None) -> list[QARecord]:
    return rows if limit is None else rows[:limit]


def load_unlearning_data(cfg: UnlearnConfig) -> tuple[list[QARecord], list[QARecord]]:
    """The forget and retain training sets named by ``cfg.data``."""
    d = cfg.data
    if d.tofu is not None:
        splits = load_tofu(d.tofu, d.split, task=d.task)
        return _limit(splits.forget, d.limit), _limit(splits.retain, d.limit)
    forget = load_set(d.forget, d.limit, d.format)
    retain = load_set(d.retain, d.limit, d.format) if d.retain else []
    return forget, retain


def check_training_sets(forget: list[QARecord], retain: list[QARecord]) -> None:
    """Refuse a retain set that is the forget set; warn about shared and repeated questions, with counts.

    Unlearning pushes the forget answers away and pulls the retain answers in: on a question in both sets the
    two objectives fight, and a retain set equal to the forget set undoes the run.
    """
    forget_q, retain_q = Counter(map(record_key, forget)), Counter(map(record_key, retain))
    if forget and retain and set(forget_q) == set(retain_q):
        verb, what = ("holds", "texts") if isinstance(forget[0], TextRecord) else ("asks", "questions")
        raise DataError(f"the retain set {verb} the same {len(retain_q)} {what} as the forget set; give a "
                        f"retain set of other {what} (data.retain)")
    shared = sorted(set(forget_q) & set(retain_q))
    if shared:
        log.warning("%d question%s of the forget set %s also in the retain set (first: %r); the two objectives "
                    "pull those answers in opposite directions", len(shared), "s" if len(shared) != 1 else "",
                    "are" if len(shared) != 1 else "is", shared[0][:80])
    for name, counts in (("forget", forget_q), ("retain", retain_q)):
        repeated = [q for q, n in counts.items() if n > 1]
        if repeated:
            extra = sum(counts[q] - 1 for q in repeated)
            log.warning("the %s set repeats %d question%s (%d extra row%s; first: %r)", name, len(repeated),
                        "s" if len(repeated) != 1 else "", extra, "s" if extra != 1 else "", repeated[0][:80])


def load_finetune_data(cfg: FinetuneConfig) -> list[QARecord]:
    d = cfg.data
    if d.tofu is not None:
        if d.finetune_on == "retain":
            rows = load_tofu(d.tofu, d.split, task=d.task).retain
        else:
            # forget10 task 1 + its retain set = all of TOFU, in either layout.
            full = load_tofu(d.tofu, "forget10", task=1)
            rows = full.forget + full.retain
        return _limit(rows, d.limit)
    rows: list = []
    for spec in d.train:
        rows += load_set(spec, d.limit, d.format)
    if len({type(r) for r in rows}) > 1:
        raise ObliviateError("data.train mixes question-answer files and text files; fine-tune on one kind "
                             "(or run twice)")
    return rows


# -- output folder --------------------------------------------------------------------------------------------
def is_complete(output_dir: str | Path) -> bool:
    """True when ``output_dir`` holds a finished run."""
    record = read_json_object(Path(output_dir) / "run.json")
    return record is not None and record.get("status") == "complete"


# -- training -------------------------------------------------------------------------------------------------
def warmup_steps(t, world_size: int, n_examples: int) -> int:
    """Warm-up is given in epochs (the paper warms up for one): optimizer steps per epoch = training items /
    (per-device batch × accumulation × devices), e.g. 400 / (4 × 4 × 2) → 13 steps. An item is a question-answer
    pair or one chunk of a text document."""
    per_step = t.batch_size * t.gradient_accumulation_steps * max(1, world_size)
    return int(round(t.warmup_epochs * math.ceil(n_examples / per_step)))


def _checkpointing_arguments(enabled: bool) -> dict:
    """Activation checkpointing as a constructor argument (set afterwards, transformers 5 ignores it), under
    the name this transformers release takes; non-reentrant, which also works when no input needs a gradient
    (LoRA on a frozen embedding)."""
    names = {f.name for f in fields(TrainingArguments)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    if not enabled:
        return {prefix: False}
    return {prefix: True, f"{prefix}_kwargs": {"use_reentrant": False}}


def _optimizer_name(name: str) -> str:
    """``adamw_torch_fused`` where torch has a fused AdamW kernel for this machine's device, else ``adamw_torch``."""
    if name != "adamw_torch_fused":
        return name
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        log.info("no fused AdamW kernel for %s: using adamw_torch", device)
        return "adamw_torch"
    return name


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
        optim=_optimizer_name(t.optim),
        bf16=t.bf16,
        fp16=t.fp16,
        # Without CUDA the engine must be told it runs on the CPU; under torchrun it then forms a gloo group.
        use_cpu=not torch.cuda.is_available(),
        deepspeed=t.deepspeed,
        fsdp=t.fsdp,
        report_to=t.report_to,
        # With eval.every_epoch the main process evaluates while the others wait in the next step's first
        # collective: give them hours, not the default half hour.
        ddp_timeout=4 * 3600 if getattr(getattr(cfg, "eval", None), "every_epoch", False) else 1800,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        label_names=[],
        disable_tqdm=False,
        # A NaN loss is logged as NaN, not replaced by the running mean (the guard stops or skips that step).
        logging_nan_inf_filter=False,
        **_checkpointing_arguments(t.gradient_checkpointing),
    )
    args.warmup_steps = warmup_steps(t, args.world_size, n_examples)
    # Set up the processes now (the process group under torchrun / accelerate): DeepSpeed's sharded loading
    # reads the world size when the model is loaded, before the trainer exists.
    _ = args.device
    if (t.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true") \
            and not torch.cuda.is_available():
        # On a GPU the engine connects DeepSpeed to the process group; on the CPU (gloo) it is done here.
        import deepspeed
        deepspeed.init_distributed(dist_backend="gloo")
    return args


def _build_model(cfg: RunConfig):
    model, tokenizer = load_model(cfg.model.name, dtype=cfg.model.dtype,
                                  trust_remote_code=cfg.model.trust_remote_code)
    if cfg.lora.enabled:
        lo = cfg.lora
        model = apply_lora(model, LoraSettings(r=lo.r, alpha=lo.alpha, dropout=lo.dropout,
                                               target_modules=lo.target_modules))
    return model, tokenizer


def _save(trainer: UnlearningTrainer, tokenizer, model_dir: Path, merge_lora: bool, cfg: RunConfig) -> None:
    """Save the trained model as one safetensors folder on the main process.

    Under ZeRO-3 / FSDP every process takes part in gathering the full weights (the engine's save_model); a
    LoRA model is saved as its adapter first and merged on the main process's CPU when ``merge_lora``.
    """
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        merge = is_peft_model(unwrapped) and merge_lora
        target = model_dir.with_name(model_dir.name + ".adapter") if merge else model_dir
        trainer.save_model(str(target))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(target))
            if merge:
                with loading_in_one_process():
                    merged, merged_tokenizer = load_model(str(target), dtype=cfg.model.dtype, device="cpu",
                                                          trust_remote_code=cfg.model.trust_remote_code)
                save_model(merged, merged_tokenizer, model_dir)
                shutil.rmtree(target)
            else:
                _write_marker(model_dir, {"format": "lora-adapter" if is_peft_model(unwrapped) else "model",
                                          "gathered_by": "deepspeed" if trainer.is_deepspeed_enabled else "fsdp"})
        return
    if trainer.is_world_process_zero():
        save_model(unwrapped, tokenizer, model_dir, merge_lora=merge_lora)


class _EpochEvaluation(TrainerCallback):
    """Evaluates the model after every epoch into ``eval/epoch_N.json`` (``eval.every_epoch``)."""

    def __init__(self, cfg: UnlearnConfig, tokenizer, folder: Path, summary: dict, scorers, benchmark=None,
                 guard: NonFiniteGuard | None = None):
        self.cfg, self.tokenizer, self.folder, self.summary = cfg, tokenizer, folder, summary
        self.scorers, self.benchmark, self.guard = scorers, benchmark, guard

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.guard is not None and self.guard.stopped:
            return control  # the model is not finite; the run is about to end with the guard's message
        if state.is_world_process_zero and model is not None:
            epoch = int(round(state.epoch))
            evaluate_run(self.cfg, self.folder / f"epoch_{epoch}.json", self.summary,
                         model=getattr(model, "module", model), tokenizer=self.tokenizer, scorers=self.scorers,
                         benchmark=self.benchmark)
        return control


def _check_precision(cfg: RunConfig) -> None:
    """Refuse float16 without a GPU; warn when 16-bit weights are trained without float32 master weights."""
    cuda = torch.cuda.is_available()
    if cfg.model.dtype == "float16" and not cuda:
        raise ConfigError(["model.dtype: float16 training on the CPU overflows without a loss scaler (the loss "
                           "turns NaN); use bfloat16, the CPU's half precision, or float32"])
    if cfg.train.fp16 and not cuda:
        raise ConfigError(["train.fp16: float16 mixed precision needs a CUDA GPU (its loss scaler); on the CPU "
                           "use train.bf16 (bfloat16 autocast) or float32"])
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else ("bfloat16" if cuda and torch.cuda.is_bf16_supported()
                                                               else "float32")
    if dtype == "float32" or cfg.lora.enabled:  # LoRA adapters are float32 whatever the base
        return
    # DeepSpeed (train.deepspeed, or an accelerate launcher config) keeps float32 master weights when its
    # 16-bit mode is on: train.bf16 / train.fp16, or the launcher config's mixed_precision.
    deepspeed = bool(cfg.train.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    mixed = cfg.train.bf16 or cfg.train.fp16 or os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no"
    if deepspeed and not mixed:
        log.warning("model.dtype=%s under DeepSpeed without train.bf16=true: DeepSpeed then keeps no float32 "
                    "master weights; set train.bf16=true", dtype)
    elif not deepspeed:
        log.warning("model.dtype=%s trains the %s weights directly (optimizer states too): an update smaller than "
                    "the format's resolution (about 0.4%% of a weight for bfloat16) is lost. For small learning "
                    "rates keep float32 master weights: model.dtype=float32 with train.bf16=true, or DeepSpeed "
                    "(docs/scaling.md)", dtype, dtype)


def _train(cfg: RunConfig, *, kind: str, objective: TrainingObjective, forget: list[QARecord],
           retain: list[QARecord], mask: bool, resume: bool, summary: dict, reference_spec: str | None = None,
           benchmark=None) -> RunResult:
    _check_precision(cfg)
    folder = RunFolder(cfg.output_dir, kind=kind, overwrite=cfg.overwrite, resume=resume)
    partial = folder.open()
    try:
        result = _train_in(partial, cfg, kind=kind, objective=objective, forget=forget, retain=retain, mask=mask,
                           resume=resume, summary=summary, reference_spec=reference_spec, benchmark=benchmark)
    except BaseException:
        # Keep the partial folder only if it holds a checkpoint to resume from; otherwise leave nothing behind.
        folder.abandon(keep=last_complete_checkpoint(partial / "checkpoints") is not None)
        raise
    folder.commit()
    return result


def _resume_point(checkpoints: Path, resume: bool, main: bool) -> str | None:
    """The newest complete checkpoint (every rank picks the same one; only the main process removes the
    incomplete ones after it)."""
    if not resume:
        return None
    checkpoint = last_complete_checkpoint(checkpoints, remove_incomplete=main)
    if checkpoint is None:
        if main:
            log.warning("no complete checkpoint found in %s; starting from the beginning", checkpoints)
        return None
    if main:
        log.warning("resuming from %s", checkpoint)
    return str(checkpoint)


def _stopped_message(guard: NonFiniteGuard, checkpoints: Path, save_strategy: str, model=None) -> str:
    """The guard's reason, whether the weights are still finite, and what is kept."""
    parts = [f"training stopped at {guard.stop_reason}"]
    if model is not None and "weight tensor" not in (guard.stop_reason or "") and nonfinite_parameters(model):
        parts.append("the weights had already become non-finite in an earlier update (the learning rate is "
                     "probably too high)")
    good = last_complete_checkpoint(checkpoints)
    if good is not None:
        parts.append(f"the last good checkpoint is {good}; it is kept (continue from it with --resume, e.g. "
                     f"after lowering train.learning_rate)")
    elif save_strategy == "no":
        parts.append("no checkpoint is kept (train.save_strategy=no saves none)")
    else:
        parts.append("no good checkpoint had been saved yet, so nothing is kept")
    parts.append("nothing was saved as model/")
    return "; ".join(parts)


def _train_in(partial: Path, cfg: RunConfig, *, kind: str, objective: TrainingObjective, forget: list[QARecord],
              retain: list[QARecord], mask: bool, resume: bool, summary: dict, reference_spec: str | None,
              benchmark) -> RunResult:
    out = Path(cfg.output_dir)
    main = is_main_process()  # only the main process writes into the output folder
    if main:
        write_text_atomic(partial / "config.yaml",
                          yaml.safe_dump({"kind": kind, **config_to_dict(cfg)}, sort_keys=False))
    started = time.time()

    # The engine's arguments come first: under DeepSpeed ZeRO-3 they make from_pretrained load every model
    # already sharded over the processes (zero.Init) instead of whole on each.
    args = _training_arguments(cfg, partial, len(retain) if objective.forget is None else len(forget))
    # Seed before building: LoRA adapters start from random matrices, which must be the same in every process
    # and in every run of the same config.
    set_seed(cfg.train.seed)
    model, tokenizer = _build_model(cfg)
    formatter = PromptFormatter(tokenizer, cfg.model.template, system_prompt=cfg.model.system_prompt,
                                max_length=cfg.model.max_length)
    summary["prompt_format"] = formatter.describe()  # recorded in run.json: the prompt training saw
    if all(isinstance(rows[0], TextRecord) for rows in (forget, retain) if rows):
        # Raw text is trained on as it is: no prompt template, no question (docs/muse_wmdp.md).
        summary["prompt_format"] = {"template": None, "system_prompt": None, "template_default_system_prompt": None,
                                    "example": None, "note": "raw text, trained on as it is"}
    refusals = load_refusals(cfg.data.refusals) if any(p.endswith("_idk") for p in objective.parts) else []
    dataset = UnlearningDataset(forget, retain, formatter, parts=objective.parts, mask=mask, refusals=refusals,
                                seed=cfg.train.seed)
    # Text documents are cut into chunks of max_length tokens: an epoch is as many items as there are chunks.
    args.warmup_steps = warmup_steps(cfg.train, args.world_size, len(dataset))
    reference = None
    if objective.needs_reference and reference_spec is not None:
        reference = frozen_copy(load_model(reference_spec, dtype=cfg.model.dtype,
                                           trust_remote_code=cfg.model.trust_remote_code)[0])
    elif objective.reads_reference_each_step and not cfg.lora.enabled:
        # KL reads the reference's logits every step: a frozen copy of the starting model. NPO and DPO read only
        # log-probs, which the trainer caches from the starting model itself before it changes: no copy.
        if is_deepspeed_zero3_enabled():  # a sharded model cannot be deep-copied: load the reference sharded too
            reference = load_model(cfg.model.name, dtype=cfg.model.dtype,
                                   trust_remote_code=cfg.model.trust_remote_code)[0]
        else:
            reference = frozen_copy(model)
    trainer = UnlearningTrainer(model=model, args=args, train_dataset=dataset,
                                data_collator=PartsCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                                objective=objective, reference_model=reference,
                                loss_chunk_size=cfg.train.loss_chunk_size, packing=cfg.train.packing)
    # The trainer keeps a reference model only while a term reads its logits (KL); a reference given for NPO or
    # DPO serves the cached log-probs only, and this name must not keep it alive (a whole model's worth of memory).
    del reference
    guard = NonFiniteGuard(cfg.train.nan_policy, cfg.train.nan_max_skips)
    guard.withhold_updates = not trainer.is_deepspeed_enabled
    guard.check_grad_norm = getattr(trainer.accelerator, "scaler", None) is None
    guard.check_weights = not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled)
    trainer.nonfinite_guard = guard
    trainer.add_callback(guard)
    scorers = None
    if kind == "unlearn" and cfg.eval.enabled:
        # The embedding and NLI models, once per run; MUSE and WMDP measure without them.
        scorers = Scorers.load(eval_settings(cfg)) if getattr(benchmark, "evaluator", None) is None else None
        if cfg.eval.every_epoch:
            if trainer._sharded():
                raise ConfigError(["eval.every_epoch: under ZeRO-3 / FSDP no process holds the whole model "
                                   "between epochs; evaluate the saved model instead (eval.enabled) or use "
                                   "DDP / ZeRO-2 for per-epoch evaluation"])
            trainer.add_callback(_EpochEvaluation(cfg, tokenizer, partial / "eval", summary, scorers, benchmark,
                                                  guard))
    checkpoints = Path(args.output_dir)
    checkpoint = _resume_point(checkpoints, resume, main)
    trainer.train(resume_from_checkpoint=checkpoint)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if guard.stopped:
        raise TrainingStopped(_stopped_message(guard, checkpoints, cfg.train.save_strategy, trained))
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    if not sharded:
        bad = nonfinite_parameters(trained)
        if bad:
            guard.stop_reason = (f"step {trainer.state.global_step}: the update made {len(bad)} weight tensor"
                                 f"{'s' if len(bad) != 1 else ''} non-finite (first: {bad[0]})")
            raise TrainingStopped(_stopped_message(guard, checkpoints, cfg.train.save_strategy))
    _save(trainer, tokenizer, partial / "model", cfg.lora.merge, cfg)
    if trainer.is_world_process_zero():  # the model card: what was forgotten and how (README.md)
        write_run_card(partial / "model", kind=kind, config=config_to_dict(cfg), summary=summary, forget=forget,
                       retain=retain)
    if trainer.accelerator.num_processes > 1:
        # Everyone has finished training and the model is saved; the main process evaluates and writes the
        # record, the others are done (they must not wait in a collective while it evaluates: it can take
        # longer than the process group's timeout).
        trainer.accelerator.wait_for_everyone()
        if not main:
            return RunResult(output_dir=out, model_dir=out / "model", log_history=trainer.state.log_history)

    if kind == "unlearn" and cfg.eval.enabled and trainer.is_world_process_zero():
        model_for_eval = None if sharded else trained
        with loading_in_one_process():  # a sharded run's model is evaluated from its saved folder
            record = evaluate_run(cfg, partial / "results.json", summary, model=model_for_eval, tokenizer=tokenizer,
                                  model_dir=partial / "model", scorers=scorers, benchmark=benchmark)
        update_card_with_results(partial / "results.json", record)

    if trainer.is_world_process_zero():
        record = {"status": "complete", "kind": kind, **summary, "examples": len(dataset),
                  "optimizer_steps": trainer.state.global_step, "seconds": round(time.time() - started, 1),
                  "resumed_from": checkpoint, "skipped_updates": guard.skipped_updates,
                  "skipped_steps": guard.skipped_steps, "environment": environment(),
                  "log_history": trainer.state.log_history}
        # Checkpoints were only for resuming; the engine creates the folder even when it saves none.
        shutil.rmtree(checkpoints, ignore_errors=True)
        write_json_atomic(partial / "run.json", record)
    return RunResult(output_dir=out, model_dir=out / "model", log_history=trainer.state.log_history)


def eval_benchmark(cfg: UnlearnConfig):
    """The benchmark an unlearning run is evaluated on, inferred from its data section (and ``eval.holdout``)."""
    bench = _inferred_benchmark(cfg)
    if cfg.eval.holdout:
        if isinstance(bench, BenchmarkSpec):
            bench.holdout = cfg.eval.holdout
        else:
            bench.holdout = Holdout(load_qa(cfg.eval.holdout), {"source": cfg.eval.holdout})
    return bench


def _inferred_benchmark(cfg: UnlearnConfig):
    """The benchmark an unlearning run is evaluated on: ``eval.benchmark`` (muse, wmdp) when given, else inferred
    from its data section (a forget file inside a MUSE folder is evaluated on MUSE)."""
    d, e = cfg.data, cfg.eval
    if e.benchmark == "wmdp":
        return BenchmarkSpec(kind="wmdp", tasks=list(e.tasks), include_path=e.include_path, limit=e.limit)
    muse_root = find_muse_root(d.forget)
    if e.benchmark == "muse" or (d.tofu is None and muse_root is not None):
        source = e.source or (str(muse_root) if muse_root is not None else None)
        if source is None:
            raise ConfigError(["eval.source: eval.benchmark=muse needs a MUSE folder or hub id (the forget file "
                               "is not inside one)"])
        return BenchmarkSpec(kind="muse", source=source)
    if d.tofu is None and (d.format == "text" or (d.format == "auto" and detect_format(d.forget) == "text")):
        raise ConfigError(["eval.benchmark: the forget set is raw text, which the question-answer evaluation "
                           "cannot score; set eval.benchmark to muse or wmdp, or eval.enabled=false"])
    if d.tofu is not None:
        return BenchmarkSpec(kind="tofu", source=d.tofu, split=d.split, task=d.task, real_world=cfg.eval.real_world)
    folder = Path(d.forget).parent
    if (folder / "benchmark.json").is_file() and (folder / "forget_perturbed.json").is_file():
        return BenchmarkSpec(kind="synthetic", source=str(folder), real_world=cfg.eval.real_world)
    if is_real_world_folder(folder):
        return real_world_benchmark(folder)
    # A folder in the TOFU file layout (forget.json beside forget_perturbed.json, retain_perturbed.json, and
    # optionally the utility sets and a holdout set): evaluate on its perturbed files; the holdout set, when
    # there is one, serves the privacy attacks as non-members.
    if (folder / "forget_perturbed.json").is_file():
        files = {name: str(folder / f"{name}_perturbed.json")
                 for name in ("forget", "retain", "real_authors", "world_facts")
                 if (folder / f"{name}_perturbed.json").is_file()}
        holdout = next((folder / n for n in ("holdout_perturbed.json", "holdout.json") if (folder / n).is_file()),
                       None)
        if holdout is not None:
            files["holdout"] = str(holdout)
        return BenchmarkSpec(kind="files", files=files, real_world=cfg.eval.real_world)
    files = {"forget": d.forget}
    if d.retain:
        files["retain"] = d.retain
    return BenchmarkSpec(kind="files", files=files, real_world=cfg.eval.real_world)


def eval_settings(cfg: UnlearnConfig):
    e = cfg.eval
    return EvalSettings(max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, set_size=e.set_size,
                        embedding_model=e.embedding_model, nli_model=e.nli_model, real_world=e.real_world,
                        bootstrap=e.bootstrap, gradnorm=e.gradnorm)


def evaluate_run(cfg: UnlearnConfig, out_path: Path, summary: dict, *, model=None, tokenizer=None,
                 model_dir: Path | None = None, scorers=None, benchmark=None) -> dict:
    """Evaluate an unlearning run's model (in memory, or from ``model_dir``) into ``out_path``."""
    method = summary.get("method", {})
    run_info = {"kind": "unlearn", "method": method.get("name"), "method_details": method,
                "output_dir": cfg.output_dir, "config": config_to_dict(cfg)}
    run_info.update(summary.get("run_extra") or {})  # what a scenario records about the run (unlearn's run_extra)
    return evaluate(str(cfg.output_dir) + "/model", benchmark or eval_benchmark(cfg), out_path, settings=eval_settings(cfg),
                    dtype=cfg.model.dtype, template=cfg.model.template, system_prompt=cfg.model.system_prompt,
                    retain_model=cfg.eval.retain_model, retain_results=cfg.eval.retain_results, run_info=run_info,
                    seed=cfg.train.seed, model=model, tokenizer=tokenizer if model is not None else None,
                    model_path=None if model is not None else model_dir, scorers=scorers)


def _evaluation_inputs(cfg: UnlearnConfig, benchmark):
    """Load and check what the end-of-run evaluation reads, before training: a missing retain results file
    found after hours of training would cost the run."""
    if not cfg.eval.enabled:
        return benchmark

    spec = benchmark or eval_benchmark(cfg)
    loaded = spec if isinstance(spec, LoadedBenchmark) else load_benchmark(spec)
    e = cfg.eval
    forget = next((s for s in loaded.sets if s.kind == "forget"), None)
    if e.retain_results and forget is not None:
        # Its truth-ratio values and, with a holdout set, its attack scores of the same questions.
        retain_reference_from_results(e.retain_results, [r.question for r in forget.records[: e.set_size or None]],
                                      loaded.holdout, eval_settings(cfg))
    elif e.retain_results:
        # MUSE: the retain model's results over the same privleak texts (its privacy leakage's reference).
        checked_retain_results(loaded, e.retain_results, eval_settings(cfg))
    if e.retain_model:
        resolve_model(e.retain_model)
    return loaded


def _own_params(objective: TrainingObjective) -> dict:
    """The terms' own parameters, for the run's record (only for terms that have parameters besides the
    method-level ``beta`` / ``me_direction``, so the records of the paper's 14 methods are unchanged)."""
    out = {}
    for key, p in (("forget_params", objective.forget_params), ("regularizer_params", objective.regularizer_params)):
        values = params_as_dict(p) if p is not None else {}
        if values and not getattr(type(p), "SHARED", ()):
            out[key] = values
    return out


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
    shared = ObjectiveParams(beta=m.beta, me_direction=m.me_direction)
    forget_params, regularizer_params, problems = term_params(
        spec.forget, spec.regularizer, shared=shared, method=spec, forget_params=m.forget_params,
        regularizer_params=m.regularizer_params)
    if problems:
        raise ConfigError(problems)
    objective = TrainingObjective(
        forget=spec.forget, regularizer=spec.regularizer,
        forget_coeff=spec.forget_coeff if m.forget_coeff is None else m.forget_coeff,
        regularization_coeff=spec.regularization_coeff if m.regularization_coeff is None else m.regularization_coeff,
        params=shared, forget_params=forget_params, regularizer_params=regularizer_params)
    mask = spec.mask if m.mask is None else m.mask
    if forget is None or retain is None:
        loaded_forget, loaded_retain = load_unlearning_data(cfg)
        forget = loaded_forget if forget is None else forget
        retain = loaded_retain if retain is None else retain
    check_training_sets(forget, retain)
    benchmark = _evaluation_inputs(cfg, benchmark)
    summary = {"method": {"name": spec.name, "forget": spec.forget, "regularizer": spec.regularizer,
                          "forget_coeff": objective.forget_coeff,
                          "regularization_coeff": objective.regularization_coeff, "mask": mask,
                          **asdict(objective.params), **_own_params(objective)},
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
