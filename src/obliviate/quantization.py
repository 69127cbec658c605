"""Weight quantisation of a model, for the quantisation probe (docs/robustness.md).

Zhang et al. (2024, "Catastrophic Failure of LLM Unlearning via Quantization", arXiv 2410.16454) found that
quantising an unlearned model's weights can bring "forgotten" knowledge back: unlearning moves weights by less
than a quantisation step, and rounding returns them to where the target model had them. The probe measures it
by evaluating the unlearned model after round-to-nearest weight quantisation:

``torchao`` (CPU and GPU; the optional extra ``obliviate[quantization]``)
    every linear layer's weight, symmetric round-to-nearest integers: 8-bit with one scale per output channel,
    4-bit with one scale per group of ``group_size`` input weights (128 by default; a layer whose input width
    the group does not divide gets one scale per output channel), activations left in floating point
    (torchao's ``IntxWeightOnlyConfig``). The input embedding is left as it is; the output layer is quantised
    when its weight is its own (tied to the embedding, it is left too).
``bitsandbytes`` (CUDA only)
    the model reloaded with ``BitsAndBytesConfig(load_in_8bit=True)`` (LLM.int8) or ``load_in_4bit=True``
    (NF4), as Zhang et al.'s GPU experiments do.

:func:`quantize_model` returns a new model; the original is left untouched.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from obliviate.errors import ObliviateError

__all__ = ["BACKENDS", "BITS", "DEFAULT_GROUP_SIZE", "INSTALL_HINT", "QuantizedModel", "check_backend",
           "default_backend", "quantize_model"]

BITS: tuple[int, ...] = (8, 4)
BACKENDS: tuple[str, ...] = ("torchao", "bitsandbytes")
DEFAULT_GROUP_SIZE = 128
INSTALL_HINT = "pip install 'obliviate[quantization]'"
REQUIREMENT = "torchao>=0.18,<0.19"


@dataclass
class QuantizedModel:
    """A quantised copy of a model, and how it was made (``describe()`` goes into results.json)."""

    model: torch.nn.Module
    bits: int
    backend: str
    scheme: str
    layers: int                 # linear layers quantised
    per_channel_layers: int = 0  # 4-bit layers that fell back to one scale per output channel

    def describe(self) -> dict:
        return {"bits": self.bits, "backend": self.backend, "scheme": self.scheme, "layers": self.layers,
                "per_channel_fallback_layers": self.per_channel_layers}


def default_backend() -> str:
    """``bitsandbytes`` on a CUDA machine that has it, else ``torchao``."""
    if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None:
        return "bitsandbytes"
    return "torchao"


def _check(bits: int, backend: str) -> None:
    if bits not in BITS:
        raise ObliviateError(f"quantisation bits must be one of {', '.join(map(str, BITS))}, got {bits}")
    if backend not in BACKENDS:
        raise ObliviateError(f"unknown quantisation backend '{backend}'; valid: {', '.join(BACKENDS)}")


def check_backend(bits: Sequence[int], backend: str) -> None:
    """Refuse, before any model is loaded, bits or a backend this machine cannot quantise with."""
    for b in bits:
        _check(b, backend)
    if backend == "bitsandbytes":
        if not torch.cuda.is_available():
            raise ObliviateError("the bitsandbytes backend quantises on CUDA GPUs only; on this machine use "
                                 "--backend torchao")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ObliviateError("the bitsandbytes backend needs the bitsandbytes package (pip install bitsandbytes)")
    elif importlib.util.find_spec("torchao") is None:
        raise ObliviateError(f"quantisation on the CPU needs torchao ({REQUIREMENT}); install it with:\n"
                             f"    {INSTALL_HINT}")


def _linear_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    shared = embedding.weight if embedding is not None else None
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m.weight is not shared]


def quantize_model(model: torch.nn.Module, bits: int, *, backend: str = "torchao",
                   group_size: int = DEFAULT_GROUP_SIZE, model_path: str | None = None) -> QuantizedModel:
    """A copy of ``model`` with ``bits``-bit weights (module docstring). ``model_path`` (the model's folder) is
    needed by the bitsandbytes backend, which quantises while loading."""
    _check(bits, backend)
    if group_size < 1:
        raise ObliviateError(f"group size must be >= 1, got {group_size}")
    if backend == "bitsandbytes":
        return _bitsandbytes(bits, model_path)
    try:
        # Deferred: optional dependency: torchao (needed only to quantise).
        from torchao.quantization import IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerAxis, PerGroup
    except ImportError as exc:
        raise ObliviateError(f"quantisation on the CPU needs torchao ({REQUIREMENT}), which could not be imported "
                             f"({exc}); install it with:\n    {INSTALL_HINT}") from exc
    if next(model.parameters()).dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ObliviateError("quantisation needs a floating-point model")
    quantized = copy.deepcopy(model)
    layers = _linear_layers(quantized)
    if not layers:
        raise ObliviateError("the model has no linear layers to quantise")
    dtype = torch.int8 if bits == 8 else torch.int4
    grouped = {id(m) for _, m in layers if bits == 4 and m.in_features % group_size == 0}
    targets = {id(m) for _, m in layers}
    if bits == 8:
        quantize_(quantized, IntxWeightOnlyConfig(weight_dtype=dtype, granularity=PerAxis(0)),
                  filter_fn=lambda m, _: id(m) in targets)
        scheme = "int8 weights, symmetric round-to-nearest, one scale per output channel"
    else:
        if grouped:
            quantize_(quantized, IntxWeightOnlyConfig(weight_dtype=dtype, granularity=PerGroup(group_size)),
                      filter_fn=lambda m, _: id(m) in grouped)
        rest = targets - grouped
        if rest:
            quantize_(quantized, IntxWeightOnlyConfig(weight_dtype=dtype, granularity=PerAxis(0)),
                      filter_fn=lambda m, _: id(m) in rest)
        scheme = f"int4 weights, symmetric round-to-nearest, one scale per group of {group_size} inputs"
    quantized.eval()
    return QuantizedModel(quantized, bits, "torchao", scheme, len(layers), len(layers) - len(grouped)
                          if bits == 4 else 0)


def _bitsandbytes(bits: int, model_path: str | None) -> QuantizedModel:
    if not torch.cuda.is_available():
        raise ObliviateError("the bitsandbytes backend quantises on CUDA GPUs only; on this machine use "
                             "--backend torchao")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ObliviateError("the bitsandbytes backend needs the bitsandbytes package (pip install bitsandbytes)")
    if model_path is None:
        raise ObliviateError("the bitsandbytes backend quantises while loading: give the model's folder")
    # Deferred: transformers takes seconds to import; only this path needs it.
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_8bit=True) if bits == 8 else BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=config, device_map="cuda")
    model.eval()
    scheme = "LLM.int8 (bitsandbytes)" if bits == 8 else "NF4, bfloat16 compute (bitsandbytes)"
    return QuantizedModel(model, bits, "bitsandbytes", scheme, len(_linear_layers(model)))
