"""Typed run configurations: dataclasses, YAML files, ``key=value`` overrides, validation of everything at once.

A config file is one flat YAML document per experiment with the sections ``model``, ``data``, ``method``
(unlearning only), ``train``, ``lora`` and the top-level ``output_dir``. Nothing is inherited from other files:
what you read is what runs. Overrides use dotted keys, e.g. ``train.learning_rate=2e-5 method.name=NPO+GD``;
values are parsed as YAML scalars.

``validate()`` returns every problem found (unknown keys with a "did you mean", wrong types, out-of-range or
non-finite numbers, unknown choices with the valid ones); :func:`load_config` raises one :class:`ConfigError`
listing them. ``output_dir`` is made absolute once, here, and refused where replacing it would destroy something
(:func:`obliviate.outputs.output_path_problems`, docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from obliviate.data.formatting import TEMPLATES
from obliviate.data.texts import FORMATS
from obliviate.errors import ConfigError
from obliviate.outputs import output_path_problems, resolve_output_path

DEFAULT_MODEL = "smollm2-135m-instruct"
DTYPES = ("auto", "float32", "bfloat16", "float16")
ME_DIRECTIONS = ("uniform_to_model", "model_to_uniform")
SAVE_STRATEGIES = ("no", "epoch", "steps")
NAN_POLICIES = ("stop", "skip")
TOFU_SPLITS = ("forget01", "forget05", "forget10")
FINETUNE_SETS = ("full", "retain")


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL           # built-in alias, local folder, .gguf file or hub id
    dtype: str = "auto"                 # auto = bfloat16 on a capable GPU, float32 otherwise
    trust_remote_code: bool = False
    template: str = "chat"              # chat | llama2 | llama3 | plain
    system_prompt: str | None = None
    max_length: int = 512               # tokens per question+answer; TOFU items are ~55


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    merge: bool = True                  # merge adapters into the saved model


@dataclass
class DataConfig:
    # Either a TOFU source (local folder in either layout, or the hub id locuslab/TOFU) with a split ...
    tofu: str | None = None
    split: str = "forget05"
    task: int = 1                       # continual layout: which task of the split is the forget set
    # ... or explicit QA files (JSON / JSON lines; a hub dataset as "owner/name:config").
    forget: str | None = None
    retain: str | None = None
    train: list[str] = field(default_factory=list)   # finetune: QA files to train on
    finetune_on: str = "full"           # finetune with `tofu`: full (target model) or retain (retain model)
    refusals: str | None = None         # refusal templates file; None = built-in set
    limit: int | None = None            # use only the first N rows of each set (quick runs)
    format: str = "auto"                # qa | text (raw documents, chunked to model.max_length) | auto (detected)


@dataclass
class MethodConfig:
    name: str = "ME+GD"                 # a named method or any "<forget>+<regularizer>" pair
    forget_coeff: float | None = None   # None = the method's paper default
    regularization_coeff: float | None = None
    mask: bool | None = None            # None = method default (ME+GD: false, others: true)
    beta: float = 0.1                   # β of NPO, DPO and AP
    me_direction: str = "uniform_to_model"  # ME's KL direction
    forget_params: dict | None = None   # the forget term's own parameters (`obliviate methods NAME` lists them)
    regularizer_params: dict | None = None  # the regularizer's own parameters


@dataclass
class TrainConfig:
    learning_rate: float = 1e-5
    num_epochs: float = 5.0
    batch_size: int = 4                 # per device
    gradient_accumulation_steps: int = 4
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0          # linear warm-up length, in epochs (paper: one epoch)
    lr_scheduler: str = "linear"
    max_steps: int = -1                 # > 0 overrides num_epochs
    seed: int = 1001
    logging_steps: int = 1
    save_strategy: str = "no"           # no | epoch | steps (checkpoints for resuming)
    save_steps: int = 500
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward: less memory, more time
    optim: str = "adamw_torch_fused"    # any of transformers' OptimizerNames, e.g. adamw_bnb_8bit (bitsandbytes); the
    #                                     fused AdamW falls back to adamw_torch where the device has no fused kernel
    bf16: bool = False                  # bfloat16 mixed precision (autocast) through the engine
    fp16: bool = False                  # float16 mixed precision with loss scaling (float32 weights, CUDA only)
    loss_chunk_size: int = 512          # tokens whose logits the loss computes at once; 0 = the model's full logits
    packing: bool = True                # lay a step's sequences end to end (no padding); false = pad to the longest
    deepspeed: str | None = None        # path to a DeepSpeed JSON config
    fsdp: str = ""                      # transformers' fsdp option string, e.g. "full_shard auto_wrap"
    report_to: list[str] = field(default_factory=lambda: ["none"])
    nan_policy: str = "stop"            # a non-finite loss or gradient: stop the run, or skip that update
    nan_max_skips: int = 10             # nan_policy=skip: stop once more updates than this were skipped


@dataclass
class EvalConfig:
    enabled: bool = True                # evaluate the unlearned model when training ends
    every_epoch: bool = False           # also evaluate after every epoch (eval/epoch_N.json)
    set_size: int | None = None         # first N rows of each set; None = all (the paper's code used 300)
    max_new_tokens: int = 200
    batch_size: int = 16
    embedding_model: str | None = "sentence-transformers/paraphrase-MiniLM-L6-v2"
    nli_model: str | None = "sileod/deberta-v3-base-tasksource-nli"
    retain_results: str | None = None   # results.json of a retain model, for Forget Quality
    retain_model: str | None = None     # or a retain model to evaluate for it
    real_world: bool = False            # real-world entailment direction
    holdout: str | None = None          # QA file of non-members for the privacy attacks (default: the benchmark's)
    bootstrap: int = 1000               # bootstrap resamples per confidence interval; 0 = no intervals
    gradnorm: bool = True               # run the GradNorm attack (a backward pass per forget/holdout item)
    benchmark: str | None = None        # null = inferred from data; or muse / wmdp (docs/muse_wmdp.md)
    source: str | None = None           # muse: the MUSE folder or hub id (default: inferred from data.forget)
    tasks: list[str] = field(default_factory=list)   # wmdp: lm-eval tasks (default wmdp_bio, wmdp_cyber, mmlu)
    include_path: str | None = None     # wmdp: a folder of extra lm-eval task YAML files
    limit: int | None = None            # wmdp: first N documents per task (smoke tests only)


@dataclass
class UnlearnConfig:
    output_dir: str = "runs/unlearn"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    overwrite: bool = False

    def validate(self) -> list[str]:
        errors = _common_errors(self)
        e = self.eval
        for key in ("max_new_tokens", "batch_size"):
            if getattr(e, key) < 1:
                errors.append(f"eval.{key}: must be >= 1, got {getattr(e, key)}")
        if e.set_size is not None and e.set_size < 1:
            errors.append(f"eval.set_size: must be >= 1 or null, got {e.set_size}")
        if e.bootstrap < 0:
            errors.append(f"eval.bootstrap: must be >= 0 (0 = no confidence intervals), got {e.bootstrap}")
        if e.retain_results and e.retain_model:
            errors.append("eval: eval.retain_results and eval.retain_model are alternatives; give one")
        errors += _eval_benchmark_errors(e)
        d = self.data
        if d.tofu is None and d.forget is None:
            errors.append("data: give either data.tofu (a TOFU folder or hub id) or data.forget (a QA file)")
        if d.tofu is not None and d.forget is not None:
            errors.append("data: data.tofu and data.forget are alternatives; give one")
        if d.train:
            errors.append("data.train: only used by finetune; unlearning reads data.forget / data.retain")
        errors += _method_errors(self.method)
        return errors


@dataclass
class FinetuneConfig:
    output_dir: str = "runs/finetune"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        learning_rate=1e-5, num_epochs=5.0, warmup_epochs=1.0))
    lora: LoraConfig = field(default_factory=LoraConfig)
    overwrite: bool = False

    def validate(self) -> list[str]:
        errors = _common_errors(self)
        d = self.data
        if d.tofu is None and not d.train:
            errors.append("data: give either data.tofu (with data.finetune_on) or data.train (QA files)")
        if d.tofu is not None and d.train:
            errors.append("data: data.tofu and data.train are alternatives; give one")
        if d.finetune_on not in FINETUNE_SETS:
            errors.append(_choice("data.finetune_on", d.finetune_on, FINETUNE_SETS))
        return errors


RunConfig = UnlearnConfig | FinetuneConfig


# -- the continual scenario (docs/continual.md) ------------------------------------------------------------
@dataclass
class ContinualSettings:
    """The ``continual`` config section."""

    steps: int | None = None            # forget tasks 1..steps, one per step; None = every task of the split
    fix_ref_model: bool = False         # true: the reference is always model.name, not the previous step's model
    top_up: str | None = None           # QA file whose rows are added to every step's retain set


@dataclass
class ContinualConfig(UnlearnConfig):
    """An unlearning config (every section of :class:`UnlearnConfig`) plus ``continual``."""

    output_dir: str = "runs/continual"
    continual: ContinualSettings = field(default_factory=ContinualSettings)

    def validate(self) -> list[str]:
        errors = super().validate()
        c = self.continual
        if c.steps is not None and c.steps < 1:
            errors.append(f"continual.steps: must be >= 1 or null (every task), got {c.steps}")
        if c.top_up is not None and not c.top_up.strip():
            errors.append("continual.top_up: must be a QA file or null, got an empty string")
        if self.lora.enabled and not self.lora.merge:
            errors.append("lora.merge: must be true in the continual scenario: each step's adapters are merged "
                          "into the saved model, and the next step puts a fresh adapter on those weights")
        if self.data.tofu is not None and self.data.retain is not None:
            errors.append("data.retain: with data.tofu the retain set comes from the TOFU folder; to add rows to "
                          "every step's retain set use continual.top_up")
        if self.data.task != 1:
            errors.append(f"data.task: the continual scenario forgets tasks 1..N itself (continual.steps); "
                          f"remove data.task (got {self.data.task})")
        return errors

    def step_config(self, *, output_dir: str | Path, model: str) -> UnlearnConfig:
        """The plain unlearning config of one step: this config with its own folder and starting model."""
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(UnlearnConfig)}
        sections.update(output_dir=str(output_dir), model=dataclasses.replace(self.model, name=model),
                        # The continual run owns its step folders: an incomplete leftover is replaced.
                        overwrite=True)
        return UnlearnConfig(**sections)


def continual_config_from_dict(raw: dict | None, overrides: typing.Iterable[str] = (),
                               source: str | None = None) -> ContinualConfig:
    """Build and validate a :class:`ContinualConfig`; raise one ConfigError listing every problem."""
    tree = dict(raw or {})
    tree.pop("kind", None)
    return config_from_dict("continual", tree, overrides, source=source)


def load_continual_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> ContinualConfig:
    """Read a continual YAML config (``kind: continual``; defaults when ``path`` is None), apply overrides."""
    return load_config("continual", path, overrides)


# -- validation ---------------------------------------------------------------------------------------------
def _choice(key: str, value: Any, valid: typing.Iterable[str]) -> str:
    valid = list(valid)
    hint = difflib.get_close_matches(str(value), valid, n=1)
    did = f" (did you mean '{hint[0]}'?)" if hint else ""
    return f"{key}: '{value}' is not one of {', '.join(valid)}{did}"


def _common_errors(cfg: RunConfig) -> list[str]:
    errors: list[str] = []
    m, t, d, lo = cfg.model, cfg.train, cfg.data, cfg.lora
    if not str(cfg.output_dir).strip():
        errors.append("output_dir: must not be empty")
    if m.dtype not in DTYPES:
        errors.append(_choice("model.dtype", m.dtype, DTYPES))
    if m.template not in TEMPLATES:
        errors.append(_choice("model.template", m.template, TEMPLATES))
    if m.max_length < 8:
        errors.append(f"model.max_length: {m.max_length} is too small (at least 8)")
    if t.learning_rate <= 0:
        errors.append(f"train.learning_rate: must be > 0, got {t.learning_rate}")
    if t.num_epochs <= 0 and t.max_steps <= 0:
        errors.append(f"train.num_epochs: must be > 0 (or set train.max_steps), got {t.num_epochs}")
    for key in ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
        if getattr(t, key) < 1:
            errors.append(f"train.{key}: must be >= 1, got {getattr(t, key)}")
    if t.loss_chunk_size < 0:
        errors.append(f"train.loss_chunk_size: must be >= 0 (0 = materialised logits), got {t.loss_chunk_size}")
    if t.weight_decay < 0:
        errors.append(f"train.weight_decay: must be >= 0, got {t.weight_decay}")
    if t.warmup_epochs < 0:
        errors.append(f"train.warmup_epochs: must be >= 0, got {t.warmup_epochs}")
    if t.save_strategy not in SAVE_STRATEGIES:
        errors.append(_choice("train.save_strategy", t.save_strategy, SAVE_STRATEGIES))
    if t.nan_policy not in NAN_POLICIES:
        errors.append(_choice("train.nan_policy", t.nan_policy, NAN_POLICIES))
    if t.nan_max_skips < 1:
        errors.append(f"train.nan_max_skips: must be >= 1, got {t.nan_max_skips}")
    errors += _engine_errors(t)
    if d.tofu is not None and d.split not in TOFU_SPLITS:
        errors.append(_choice("data.split", d.split, TOFU_SPLITS))
    if d.task < 1:
        errors.append(f"data.task: tasks are numbered from 1, got {d.task}")
    if d.limit is not None and d.limit < 1:
        errors.append(f"data.limit: must be >= 1 or null, got {d.limit}")
    errors += _precision_errors(m, t)
    if d.format not in FORMATS:
        errors.append(_choice("data.format", d.format, FORMATS))
    if lo.r < 1:
        errors.append(f"lora.r: must be >= 1, got {lo.r}")
    if not 0 <= lo.dropout < 1:
        errors.append(f"lora.dropout: must be in [0, 1), got {lo.dropout}")
    return errors


EVAL_BENCHMARKS = ("muse", "wmdp")
"""``eval.benchmark`` values; left out (null), the benchmark is inferred from the data section."""


def _eval_benchmark_errors(e: EvalConfig) -> list[str]:
    errors = []
    if e.benchmark is not None and e.benchmark not in EVAL_BENCHMARKS:
        errors.append(_choice("eval.benchmark", e.benchmark, EVAL_BENCHMARKS))
    if e.limit is not None and e.limit < 1:
        errors.append(f"eval.limit: must be >= 1 or null, got {e.limit}")
    if e.benchmark != "wmdp":
        for key in ("tasks", "include_path", "limit"):
            if getattr(e, key):
                errors.append(f"eval.{key}: only read by eval.benchmark=wmdp (lm-eval tasks)")
    if e.source is not None and e.benchmark != "muse":
        errors.append("eval.source: only read by eval.benchmark=muse (a MUSE folder or hub id)")
    return errors


def _engine_choices() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The learning-rate schedules, optimizers and FSDP options the training engine (transformers) knows."""
    # Deferred: transformers takes seconds to import; only this path needs it.
    from transformers.trainer_utils import FSDPOption, SchedulerType
    from transformers.training_args import OptimizerNames

    return (tuple(s.value for s in SchedulerType), tuple(o.value for o in OptimizerNames),
            tuple(o.value for o in FSDPOption))


def _engine_errors(t: TrainConfig) -> list[str]:
    """Options passed through to the engine, checked here so a typo is a config error and not a traceback."""
    errors: list[str] = []
    schedulers, optimizers, fsdp_options = _engine_choices()
    if t.lr_scheduler not in schedulers:
        errors.append(_choice("train.lr_scheduler", t.lr_scheduler, schedulers))
    if t.optim not in optimizers:
        errors.append(_choice("train.optim", t.optim, optimizers))
    for option in t.fsdp.split():
        if option not in fsdp_options:
            errors.append(_choice("train.fsdp", option, fsdp_options))
    if t.deepspeed and t.fsdp:
        errors.append("train.deepspeed and train.fsdp are alternatives; give one")
    if t.deepspeed is not None:
        path = Path(t.deepspeed).expanduser()
        if not t.deepspeed.strip():
            errors.append("train.deepspeed: give the path of a DeepSpeed JSON config, or null")
        elif not path.is_file():
            errors.append(f"train.deepspeed: {t.deepspeed}: file not found (a DeepSpeed JSON config)")
        else:
            try:
                ds = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                line = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
                errors.append(f"train.deepspeed: {t.deepspeed}{line}: not a valid JSON file ({exc})")
            else:
                zero = ds.get("zero_optimization", {}) if isinstance(ds, dict) else None
                if not isinstance(zero, dict):
                    errors.append(f"train.deepspeed: {t.deepspeed}: expected a JSON object with a "
                                  f"zero_optimization object")
                elif zero.get("stage", 0) not in (0, 1, 2, 3):
                    errors.append(f"train.deepspeed: {t.deepspeed}: zero_optimization.stage must be 0, 1, 2 or 3, "
                                  f"got {zero.get('stage')!r}")
        if importlib.util.find_spec("deepspeed") is None:
            errors.append("train.deepspeed: the deepspeed package is not installed (pip install deepspeed)")
    return errors


# Optimizers transformers builds from bitsandbytes (8-bit and paged states, its Lion, RMSprop and AdEMAMix).
def needs_bitsandbytes(optim: str) -> bool:
    o = optim.lower()
    return ("bnb" in o or o.startswith(("paged_", "lion_", "ademamix")) or
            (o.endswith("8bit") and not o.startswith("adamw_torch")) or o == "galore_adamw_8bit")


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _precision_errors(m: ModelConfig, t: TrainConfig) -> list[str]:
    """Mixed precision and optimizer choices that cannot work, said before anything loads."""
    errors: list[str] = []
    if t.bf16 and t.fp16:
        errors.append("train.bf16 and train.fp16 are alternatives; set one (bf16 where the GPU supports it)")
    if t.fp16 and m.dtype in ("bfloat16", "float16"):
        errors.append(f"train.fp16: float16 mixed precision scales the loss and needs float32 weights, but "
                      f"model.dtype is {m.dtype}; use model.dtype=float32, or train.bf16 with bfloat16 weights")
    if t.bf16 and m.dtype == "float16":
        errors.append("train.bf16: bfloat16 autocast over float16 weights mixes two 16-bit formats; use "
                      "model.dtype=bfloat16 or float32")
    if t.optim in _engine_choices()[1] and needs_bitsandbytes(t.optim) and not _installed("bitsandbytes"):
        errors.append(f"train.optim: {t.optim} comes from bitsandbytes, which is not installed "
                      f"(pip install bitsandbytes; its 8-bit optimizers need a CUDA GPU)")
    return errors


def _method_errors(mc: MethodConfig) -> list[str]:
    # Deferred: imports torch, which this module otherwise avoids.
    from obliviate.objectives import ObjectiveParams, get_forget, get_regularizer, resolve_method, term_params

    errors: list[str] = []
    spec = None
    try:
        spec = resolve_method(mc.name)
    except ConfigError as exc:
        errors += [f"method.name: {e}" for e in exc.errors]
    if mc.beta <= 0:
        errors.append(f"method.beta: must be > 0, got {mc.beta}")
    if mc.me_direction not in ME_DIRECTIONS:
        errors.append(_choice("method.me_direction", mc.me_direction, ME_DIRECTIONS))
    for key in ("forget_params", "regularizer_params"):
        value = getattr(mc, key)
        if value is not None and not isinstance(value, dict):
            errors.append(f"method.{key}: expected a mapping of parameter: value, got {value!r}")
    if spec is None or errors:
        return errors
    _, _, problems = term_params(spec.forget, spec.regularizer, shared=ObjectiveParams(mc.beta, mc.me_direction),
                                 method=spec, forget_params=mc.forget_params,
                                 regularizer_params=mc.regularizer_params)
    errors += problems
    # The method-level keys set the terms that have always read them; elsewhere a changed value would be ignored.
    shared = {k for s in (get_forget(spec.forget), get_regularizer(spec.regularizer))
              for k in getattr(s.params, "SHARED", ())}
    defaults = MethodConfig()
    for key in ("beta", "me_direction"):
        if getattr(mc, key) != getattr(defaults, key) and key not in shared:
            errors.append(f"method.{key}: {spec.name} does not read it (it sets NPO, DPO and AP's beta and ME's "
                          f"me_direction); set this method's parameters under method.forget_params / "
                          f"method.regularizer_params (`obliviate methods {spec.name}` lists them)")
    return errors


# -- building from dicts --------------------------------------------------------------------------------------
def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check ``value`` against a dataclass field type; ints are accepted (and converted) where floats are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, converted = _type_ok(value, arg)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        items = [_type_ok(v, inner) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if hint is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 1e-5 (no dot) as a string; a float field takes it as the number it means.
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is str:
        return isinstance(value, str), value
    return True, value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            did = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            errors.append(f"{prefix}{key}: unknown key{did}; valid keys: {', '.join(fields)}")
            continue
        ftype = hints[key]
        if dataclasses.is_dataclass(ftype):
            kwargs[key] = _build(ftype, value, f"{prefix}{key}.", errors)
            continue
        ok, converted = _type_ok(value, ftype)
        if not ok:
            errors.append(f"{prefix}{key}: expected {_type_name(ftype)}, got {value!r}")
            continue
        if isinstance(converted, float) and not math.isfinite(converted):
            # nan and inf parse as floats, but no setting means them (a NaN coefficient poisons every step).
            errors.append(f"{prefix}{key}: must be a finite number, got {value!r}")
            continue
        kwargs[key] = converted
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: typing.Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are YAML scalars (``1e-5``, ``true``, ``null``, ``[a, b]``)."""
    parsed = []
    errors = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            errors.append(f"override '{item}': expected key=value, e.g. train.learning_rate=2e-5")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            errors.append(f"override '{item}': value is not valid YAML ({exc.__class__.__name__})")
            continue
        parsed.append((key.strip(), value))
    if errors:
        raise ConfigError(errors)
    return parsed


def config_classes() -> dict[str, type]:
    """Every config kind: the run kinds here and the scenario kinds that extend them."""
    return {"unlearn": UnlearnConfig, "finetune": FinetuneConfig, "continual": ContinualConfig}


def config_from_dict(kind: str, raw: dict, overrides: typing.Iterable[str] = (), source: str | None = None) -> RunConfig:
    """Build and validate a config of ``kind`` (see :func:`config_classes`); raise ConfigError listing all problems."""
    classes = config_classes()
    if kind not in classes:
        raise ConfigError([_choice("kind", kind, classes)])
    tree = dict(raw or {})
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    errors: list[str] = []
    cfg = _build(classes[kind], tree, "", errors)
    if not errors:
        errors = cfg.validate()
    if not errors:
        # Once, here: "newdir/.." is the current folder before newdir exists, not after.
        cfg.output_dir = resolve_output_path(cfg.output_dir)
        errors = output_path_problems("output_dir", cfg.output_dir, run_inputs(cfg, source))
    if errors:
        raise ConfigError(errors, source)
    return cfg


def run_inputs(cfg: RunConfig, source: str | None = None) -> list[tuple[str, str]]:
    """What a run reads, as ``(key, path or id)``: its output folder must not hold any of them."""
    d, e = cfg.data, getattr(cfg, "eval", None)
    inputs = [("the config file", source), ("data.tofu", d.tofu), ("data.forget", d.forget),
              ("data.retain", d.retain), ("data.refusals", d.refusals), ("model.name", cfg.model.name)]
    inputs += [(f"data.train[{i}]", path) for i, path in enumerate(d.train)]
    if e is not None:
        inputs += [("eval.retain_results", e.retain_results), ("eval.retain_model", e.retain_model),
                   ("eval.source", e.source), ("eval.include_path", e.include_path)]
    continual = getattr(cfg, "continual", None)
    if continual is not None:
        inputs.append(("continual.top_up", continual.top_up))
    return [(key, value) for key, value in inputs if value]


def read_config_file(path: str | Path) -> dict:
    """The YAML mapping in ``path`` (its ``kind`` key included), or a ConfigError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return raw


def load_config(kind: str, path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply overrides, validate.

    A file whose ``kind`` names another kind is refused, so a config is never run as something it isn't.
    """
    raw: dict = {}
    if path is not None:
        raw = read_config_file(path)
        file_kind = raw.pop("kind", kind)
        if file_kind != kind:
            raise ConfigError([f"{path}: kind is '{file_kind}', so it cannot run as '{kind}' "
                               f"(use `obliviate {file_kind}` for this one)"])
    return config_from_dict(kind, raw, overrides, source=str(path) if path else None)


def config_to_dict(cfg: RunConfig) -> dict:
    """A plain dict of the config, as it is saved next to a run's outputs."""
    return asdict(cfg)


def render_config(cfg: dict) -> str:
    """A config mapping as the flat YAML text shipped under configs/ (keys in the order given)."""
    return yaml.safe_dump(cfg, sort_keys=False)


def write_config_files(configs: dict[str, dict], root: str | Path) -> int:
    """Write ``{relative path: config}`` under ``root`` (the generator scripts in scripts/ use this)."""
    root = Path(root)
    for rel, cfg in configs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_config(cfg))
    return len(configs)
