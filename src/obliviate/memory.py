"""Peak memory per device of a training run, estimated from the model's config without loading its weights.

``obliviate unlearn --dry-run`` prints this estimate (docs/scaling.md explains every line and shows it for
Llama-2-7B and Llama-3-8B). The estimate adds up what a training step holds at its two peaks:

- *forward/backward*: weights, optimizer states, gradients (of earlier micro-batches under gradient
  accumulation, else the output layer's, which backward makes first), the saved activations and the loss
  buffers;
- *optimizer step*: weights, optimizer states, all gradients and the optimizer's scratch space;

plus what is alive during both: a frozen reference model, DDP's gradient buckets, ZeRO-3's gathered layers.

Sizes in bytes, per device. Notation: Ψ parameters (exact, counted on the architecture built on PyTorch's
``meta`` device, which allocates nothing), Ψ_t trainable parameters (all, or the LoRA adapters), H hidden size,
q = heads × head size, I MLP width, V vocabulary, L layers, N devices, and *tokens* = sequences per micro-batch
(per-device batch × the parts an objective stacks into one forward pass, e.g. forget + retain) × tokens per
sequence.

Engines (``zero``):

- ``0``: plain PyTorch (one process or DDP). Gradients and AdamW states have the weights' dtype; under DDP
  (N > 1) the reducer keeps a flat copy of all gradients in its buckets.
- ``2`` / ``3``: DeepSpeed ZeRO, accounted as in the ZeRO paper (Rajbhandari et al., 2020, arXiv 1910.02054):
  with 16-bit training each trainable parameter costs 2 B of weights, 2 B of gradient and 12 B of optimizer
  state (a float32 master copy, two float32 Adam moments). ZeRO-2 shards gradients and optimizer states over
  the N devices, ZeRO-3 the weights too, and gathers the layers it runs (two layers' weights, or the
  embedding matrix, whichever is larger, are counted as gathered at once). FSDP ``full_shard`` is accounted
  as ZeRO-3, ``shard_grad_op`` as ZeRO-2.

Activations of a decoder layer, per token, as transformers' Llama code saves them for backward (SDPA or
flash attention, so no T×T attention matrix; key and value heads repeated to the query heads, as happens
with a padding mask; ``tests/unit/test_memory.py`` checks these counts against what autograd actually saves):

- float32 weights: 4·(6H + 4q + 4I) bytes — each RMSNorm keeps its input, the normalised and the scaled
  output (3H twice), attention keeps q, k, v and its output (4q), the MLP keeps gate, SiLU(gate), up and their
  product (4I);
- 16-bit weights: 2·(8H + 4q + 4I) — the RMSNorms compute in float32, which adds a float32 copy of each input;
- float32 weights with 16-bit autocast (``train.bf16`` / ``train.fp16``): 26H + 8q + 8I — the residual stream
  and the norms stay float32 (input and normalised value, 4 B each, per norm), and every linear layer keeps
  its own 16-bit copy of its input (q, k and v three, gate and up two);
- LoRA adds, per adapted linear layer, a float32 copy of its input when the base is 16-bit (PEFT runs the
  adapters in float32) and the rank-r intermediate.

The trainer runs Llama-style SwiGLU blocks lean (``obliviate.lean``: no autocast, weights not sharded by ZeRO-3 or
FSDP, projections not LoRA-adapted): a block keeps gate and up only, 2I instead of 4I (2I instead of 3I with LoRA
elsewhere, where the frozen down projection keeps no input). Its RMSNorms, under the same conditions, keep their
input as it comes (and the following layer its output), not a float32 copy and the normalised value: 2H per norm
instead of 3H in float32, 4 B instead of 8 B per H with 16-bit weights (frozen, with LoRA: w B instead of the
float32 copy's 4) — so 4·(4H + 4q + 2I) and 2·(4H + 4q + 2I) for full training.

With gradient checkpointing (every decoder layer) only each layer's input is kept, H per token per layer,
and one layer's activations are rebuilt at a time during backward.

Loss buffers, ``loss_chunk = 0`` (the logits of every token materialised: ``train.loss_chunk_size=0``, and
always under DeepSpeed and FSDP): the logits (in the compute dtype, plus a float32 copy if that is 16-bit),
the float32 rows of the labelled tokens that the log-softmax keeps, and in backward their gradient and the
gradient of the full logits — four float32 tokens×V buffers for float32 logits. A KL reference adds its float32
logits and two log-softmax buffers per KL token. With ``loss_chunk = c > 0`` (the output layer applied c
labelled tokens at a time and recomputed in backward): the labelled positions' final hidden states and their
gradient, the gradient of the final norm's output, and two float32 c×V buffers (three with a KL reference,
whose labelled hidden states are kept too). When the output layer trains, the chunked path also sums its weight's
gradient over the chunks in a float32 V×H accumulator ("output-layer gradient accumulator"; none for float32
weights, whose reductions share one that becomes the gradient); with 16-bit products it adds a 16-bit V×H copy (the
accumulator cast back to 16-bit weights, or the float32 weight cast for autocast) and, per block of vocabulary
rows, the 16-bit product and its float32 copy (6·c·V bytes).

Not counted: the CUDA context and allocator fragmentation (on a GPU add about 0.5–1 GiB; the CPU check in
bench/memory_check.py measures its process's baseline and adds it), the data, and temporaries smaller than
one layer's weights.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from obliviate.config import UnlearnConfig
from obliviate.errors import ModelLoadError

GIB = 1024 ** 3

#: Shapes of models the paper trains, so that the estimate works offline for the shipped configs (whose
#: models live on the Hugging Face hub). Values from the models' published config.json files.
KNOWN_CONFIGS: dict[str, dict] = {
    "llama-2-7b": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                   "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    "llama-3-8b": {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                   "tie_word_embeddings": False},
    "llama-3.2-1b": {"model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
                     "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                     "rope_theta": 500000.0, "tie_word_embeddings": True},
    "smollm2-135m": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
                     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
                     "tie_word_embeddings": True},
}

#: Hub ids whose shape is one of KNOWN_CONFIGS (fine-tunes keep their base model's shape).
KNOWN_HUB_IDS: dict[str, str] = {
    "locuslab/tofu_ft_llama2-7b": "llama-2-7b",
    "meta-llama/Llama-2-7b-hf": "llama-2-7b",
    "meta-llama/Llama-2-7b-chat-hf": "llama-2-7b",
    "meta-llama/Meta-Llama-3-8B": "llama-3-8b",
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama-3-8b",
    "meta-llama/Llama-3.1-8B": "llama-3-8b",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3-8b",
    "meta-llama/Llama-3.2-1B": "llama-3.2-1b",
    "meta-llama/Llama-3.2-1B-Instruct": "llama-3.2-1b",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
}

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Optimizer state bytes per trainable parameter, as a multiple of the parameter's own size (None: fixed bytes).
_EIGHT_BIT = ("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "lion_8bit", "paged_lion_8bit")


# -- the model's shape --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about an architecture; parameter counts are exact."""

    name: str
    source: str                  # where the config was read
    model_type: str
    parameters: int              # Ψ, every parameter (tied matrices once)
    linear_parameters: int       # parameters in nn.Linear layers, the output head included
    embedding_parameters: int    # the input embedding matrix, V × H
    largest_layer: int           # parameters of the largest decoder layer
    head_trainable: int          # parameters of the output head (V × H; the embedding when tied)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    head_dim: int
    intermediate_size: int
    # (module name, in_features, out_features) of every linear layer LoRA may adapt (the output head excluded)
    linear_layers: tuple[tuple[str, int, int], ...] = field(repr=False, default=())
    # Whether the decoder's feed-forward blocks are SwiGLU blocks the trainer runs lean (obliviate.lean)
    swiglu_blocks: bool = False
    rmsnorms: bool = False               # every RMSNorm one that obliviate.lean runs lean

    def lora_parameters(self, rank: int, targets: str | list[str] = "all-linear") -> int:
        """Trainable parameters of rank-``rank`` LoRA adapters: r·(in + out) per adapted layer, as PEFT builds
        them; ``all-linear`` adapts every linear layer except the output head."""
        total = 0
        for name, n_in, n_out in self.linear_layers:
            short = name.rsplit(".", 1)[-1]
            if targets == "all-linear" or (not isinstance(targets, str) and short in targets) \
                    or (isinstance(targets, str) and short == targets):
                total += rank * (n_in + n_out)
        return total

    def lora_inputs_per_layer(self, targets: str | list[str] = "all-linear") -> list[tuple[str, int]]:
        """(short name, in_features) of the linear layers of one decoder layer that LoRA adapts."""
        per_layer = [(n.rsplit(".", 1)[-1], i) for n, i, _ in self.linear_layers if ".layers.0." in f".{n}."]
        wanted = None if targets == "all-linear" else ([targets] if isinstance(targets, str) else list(targets))
        return [(n, i) for n, i in per_layer if wanted is None or n in wanted]


def shape_from_config(config, *, name: str = "model", source: str = "config") -> ModelShape:
    """Count an architecture's parameters by building it on the ``meta`` device (no memory, any architecture
    transformers knows); ``config`` is a transformers config or a config.json dict."""
    # Deferred: torch and transformers take seconds to import; this module serves commands that never need them.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(config, dict):
        raw = dict(config)
        model_type = raw.pop("model_type", "llama")
        config = AutoConfig.for_model(model_type, **raw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = {id(p): p.numel() for p in model.parameters()}
    parameters = sum(params.values())
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    linear_total, linears = 0, []
    for mod_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linear_total += module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
            if module is not head:
                linears.append((mod_name, module.in_features, module.out_features))
    layers = _decoder_layers(model)
    largest = max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(text.hidden_size)
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    from obliviate.lean import eligible, norm_eligible
    swiglu = bool(layers) and all(eligible(m) for layer in layers for m in layer.modules()
                                  if type(m).__name__.endswith("MLP"))
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    rmsnorms = bool(norms) and all(norm_eligible(m) for m in norms)
    return ModelShape(
        name=name, source=source, model_type=str(getattr(config, "model_type", "?")), parameters=parameters,
        linear_parameters=linear_total, embedding_parameters=emb.weight.numel(), largest_layer=largest,
        head_trainable=head.weight.numel() if head is not None else 0,
        vocab_size=int(text.vocab_size), hidden_size=hidden, num_layers=len(layers) or int(text.num_hidden_layers),
        num_heads=heads, head_dim=head_dim,
        intermediate_size=int(getattr(text, "intermediate_size", 4 * hidden)), linear_layers=tuple(linears),
        swiglu_blocks=swiglu, rmsnorms=rmsnorms)


def _decoder_layers(model) -> list:
    # Deferred: torch takes seconds to import; this module serves commands that never need it.
    import torch
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return max(lists, key=len) if lists else []


def read_model_config(spec: str, *, trust_remote_code: bool = False):
    """The transformers config of a model spec (see :func:`obliviate.models.resolve_model`), read without its
    weights: a local folder's config.json, a GGUF file's metadata, a LoRA adapter's base model, the Hugging
    Face cache or hub, and for the paper's models (KNOWN_HUB_IDS) the shape recorded here when the hub cannot
    be reached. Returns ``(config, source)``.

    Raises:
        ModelLoadError: the config cannot be read; says why and what to give instead.
    """
    # Deferred: transformers and the model code (torch) take seconds to import; only this path needs them.
    from transformers import AutoConfig

    from obliviate.models import ALIASES, _is_complete, _models_dir, _wheel_gguf, resolve_model

    resolved = resolve_model(spec)
    try:
        if resolved.kind == "alias":
            folder = _models_dir() / resolved.path_or_id
            if _is_complete(folder, ("config.json",)):
                return AutoConfig.from_pretrained(str(folder)), str(folder / "config.json")
            gguf = _wheel_gguf(ALIASES[resolved.path_or_id])
            if gguf is not None:
                return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name), str(gguf)
            return _known(resolved.path_or_id.replace("-instruct", ""), spec)
        if resolved.kind == "gguf" and resolved.gguf_file and Path(resolved.path_or_id).is_dir():
            return (AutoConfig.from_pretrained(resolved.path_or_id, gguf_file=resolved.gguf_file),
                    f"{resolved.path_or_id}/{resolved.gguf_file}")
        if resolved.kind == "local":
            folder = Path(resolved.path_or_id)
            if not (folder / "config.json").is_file():  # a LoRA adapter: its base model's shape
                base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
                if not base:
                    raise ModelLoadError(f"cannot estimate memory for '{spec}': its adapter_config.json names no "
                                         f"base model")
                return read_model_config(base, trust_remote_code=trust_remote_code)
            return (AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code),
                    str(folder / "config.json"))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the config of model '{spec}' to estimate memory: {exc}") from exc
    # A hub id: the local cache first (no network), then the shapes recorded here, then the hub itself.
    hub_id = resolved.path_or_id
    try:
        return (AutoConfig.from_pretrained(hub_id, local_files_only=True, trust_remote_code=trust_remote_code),
                f"{hub_id} (Hugging Face cache)")
    except (OSError, ValueError):
        pass
    if hub_id in KNOWN_HUB_IDS:
        return _known(KNOWN_HUB_IDS[hub_id], spec)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
        try:
            return AutoConfig.from_pretrained(hub_id, trust_remote_code=trust_remote_code), f"{hub_id} (hub)"
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0]
    else:
        why = "HF_HUB_OFFLINE is set"
    raise ModelLoadError(
        f"cannot read the config of hub model '{spec}' to estimate memory: it is not in the local Hugging Face "
        f"cache and the hub cannot be reached ({why}). Download its config.json into a folder and give that "
        f"folder as model.name, or pass --model-config path/to/config.json")


def _known(key: str, spec: str):
    # Deferred: transformers takes seconds to import; only this path needs it.
    from transformers import AutoConfig

    if key not in KNOWN_CONFIGS:
        raise ModelLoadError(f"cannot read the config of model '{spec}' to estimate memory")
    raw = dict(KNOWN_CONFIGS[key])
    return AutoConfig.for_model(raw.pop("model_type"), **raw), f"obliviate's table of known shapes ({key})"


def load_config_file(path: str | Path):
    """A transformers config from a config.json file (``--model-config``)."""
    # Deferred: transformers takes seconds to import; only this path needs it.
    from transformers import AutoConfig

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--model-config {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ModelLoadError(f"--model-config {path}: not a model config.json (it has no model_type)")
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")}
    try:
        return AutoConfig.for_model(raw.pop("model_type"), **raw), str(path)
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(f"--model-config {path}: {exc}") from exc


# -- the run's shape ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSetup:
    """How a run trains, as far as memory is concerned (per device)."""

    batch_size: int = 4                   # sequences per part per device per micro-batch
    seq_len: int = 512                    # tokens per sequence (padded length)
    parts: int = 2                        # sequence kinds stacked into one forward pass (forget, retain, ...)
    kl_parts: int = 0                     # parts whose reference logits are computed every step (KL)
    labelled_fraction: float = 1.0        # share of tokens that carry a label (the loss reads only those)
    reference: str = "none"               # none | copy (a frozen model) | adapters (LoRA: no copy) | cached
    cached_items: int = 0                 # forget items whose reference log-probs are cached (NPO, DPO)
    weight_dtype: str = "bfloat16"        # float32 | bfloat16 | float16
    mixed_precision: str | None = None    # None | bf16 | fp16 (autocast over float32 weights)
    optim: str = "adamw_torch"
    lora_rank: int | None = None          # None: full fine-tuning
    lora_targets: str | tuple[str, ...] = "all-linear"
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    devices: int = 1
    zero: int = 0                         # 0: plain/DDP; 2, 3: ZeRO stage (FSDP shard_grad_op / full_shard)
    fsdp: bool = False                    # FSDP (any sharding): its wrapped modules run as written, none lean
    loss_chunk: int = 0                   # tokens per loss chunk; 0 = logits materialised for all tokens
    device: str = "cuda"                  # cuda | cpu (only the optimizer's scratch space differs)

    def __post_init__(self) -> None:
        errors = []
        if self.zero not in (0, 2, 3):
            errors.append(f"zero stage must be 0, 2 or 3, got {self.zero}")
        if self.devices < 1:
            errors.append(f"devices must be >= 1, got {self.devices}")
        if self.weight_dtype not in _DTYPE_BYTES:
            errors.append(f"weight dtype must be one of {', '.join(_DTYPE_BYTES)}, got {self.weight_dtype}")
        if self.mixed_precision not in (None, "bf16", "fp16"):
            errors.append(f"mixed precision must be bf16, fp16 or none, got {self.mixed_precision}")
        if self.reference not in ("none", "copy", "adapters", "cached"):
            errors.append(f"reference must be none, copy, adapters or cached, got {self.reference}")
        if self.batch_size < 1 or self.seq_len < 1 or self.parts < 1:
            errors.append("batch size, sequence length and parts must be >= 1")
        if not 0 < self.labelled_fraction <= 1:
            errors.append(f"labelled fraction must be in (0, 1], got {self.labelled_fraction}")
        if errors:
            raise ValueError("; ".join(errors))


@dataclass(frozen=True)
class Component:
    name: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate's parts, the two phase peaks and the total (the larger peak), all in bytes per device."""

    components: tuple[Component, ...]
    forward_backward: int
    optimizer_step: int
    activations: int                  # as configured (with or without checkpointing)
    activations_full: int             # without gradient checkpointing
    activations_checkpointed: int     # with gradient checkpointing
    trainable_parameters: int

    @property
    def peak(self) -> int:
        return max(self.forward_backward, self.optimizer_step)

    def get(self, name: str) -> int:
        return sum(c.bytes for c in self.components if c.name == name)


def _optimizer_state_bytes(optim: str, param_bytes: int) -> tuple[int, str]:
    """(bytes per trainable parameter, description) of the optimizer's state under plain PyTorch."""
    o = optim.lower()
    if o in _EIGHT_BIT or "8bit" in o:
        return (1 if "lion" in o else 2), "8-bit states (bitsandbytes)"
    if o.startswith("sgd"):
        return 0, "plain SGD keeps no state"
    if "adafactor" in o:
        return 0, "factored second moments (a few bytes per row and column; counted as 0)"
    if "lion" in o:
        return param_bytes, "one moment"
    return 2 * param_bytes, "two moments (exp_avg, exp_avg_sq)"


# Linear layers of a Llama-style decoder layer that read the same input tensor: an adapter on any of them keeps
# that input once when no cast is needed (the attention output is also kept by attention itself).
_SHARED_INPUTS = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "attn_out",
                  "gate_proj": "mlp_in", "up_proj": "mlp_in"}


def layer_activation_bytes(shape: ModelShape, setup: TrainingSetup) -> float:
    """Bytes one decoder layer saves for backward, per token (see the module docstring).

    With LoRA the base weights are frozen, so a base linear layer keeps no input and an RMSNorm only its
    float32 input; each adapter keeps its input instead — a float32 copy per adapted layer when the base is
    16-bit (PEFT casts to the adapters' float32), a 16-bit copy under autocast (whatever the base dtype), the
    shared tensor itself when the base is float32 — and its rank-r intermediate.
    """
    H, q, I = shape.hidden_size, shape.num_heads * shape.head_dim, shape.intermediate_size
    small = 4 * (2 + shape.num_heads)         # two float32 rsqrt values and the attention's log-sum-exp per head
    w = _DTYPE_BYTES[setup.weight_dtype]
    autocast = w == 4 and setup.mixed_precision is not None
    targets = setup.lora_targets if isinstance(setup.lora_targets, str) else list(setup.lora_targets)
    adapted = shape.lora_inputs_per_layer(targets) if setup.lora_rank else []
    # Lean SwiGLU blocks (no autocast, weights not sharded, projections not adapted) keep one or two
    # tokens × intermediate tensors less: the SiLU output, and the product where down_proj's weight trains.
    lean = (shape.swiglu_blocks and _lean_engine(setup)
            and not any(n in ("gate_proj", "up_proj", "down_proj") for n, _ in adapted))
    # Lean RMSNorms (same conditions, adapters aside) keep their input as it comes instead of the float32 copy and
    # the normalised value.
    norms = lean_norms(shape, setup)
    if not setup.lora_rank:
        if autocast:
            return 26 * H + 8 * q + 8 * I + small
        mlp = 2 * I if lean else 4 * I
        if w == 4:
            return 4 * ((4 if norms else 6) * H + 4 * q + mlp) + small
        return 2 * ((4 if norms else 8) * H + 4 * q + mlp) + small
    r = setup.lora_rank
    if setup.mixed_precision is not None:  # autocast runs the adapters in 16 bits too, whatever the base dtype
        per = 2 * 4 * H + 8 * q + 6 * I + sum(2 * n for _, n in adapted) + 2 * r * len(adapted)
    elif w == 4:
        shared = {_SHARED_INPUTS.get(name, name): n for name, n in adapted}
        shared.pop("attn_out", None)
        per = 2 * 4 * H + 16 * q + 12 * I + sum(4 * n for n in shared.values()) + 4 * r * len(adapted)
    else:
        per = 2 * 4 * H + 8 * q + 6 * I + sum(4 * n for _, n in adapted) + 4 * r * len(adapted)
    if setup.lora_dropout > 0:                # a dropped-out float32 copy of each adapter's input, and its mask
        per += sum(5 * n for _, n in adapted)
    if lean:
        per -= w * I
    if norms:                                 # the frozen norms keep their input in its own dtype, not float32
        per -= 2 * (4 - w) * H
    return per + small


def lean_norms(shape: ModelShape, setup: TrainingSetup) -> bool:
    """Whether the trainer runs the model's RMSNorms lean (``obliviate.lean``): no autocast, weights not sharded."""
    return shape.rmsnorms and _lean_engine(setup)


def _lean_engine(setup: TrainingSetup) -> bool:
    """The trainer's condition for lean layers: no autocast, and neither ZeRO-3 nor FSDP."""
    return setup.mixed_precision is None and setup.zero < 3 and not setup.fsdp


def _residual_bytes(setup: TrainingSetup) -> int:
    return 4 if _DTYPE_BYTES[setup.weight_dtype] == 4 else 2


def estimate_memory(shape: ModelShape, setup: TrainingSetup) -> MemoryEstimate:
    """Peak memory per device of training ``shape`` as ``setup`` says (see the module docstring)."""
    s = setup
    N = s.devices
    psi = shape.parameters
    w = _DTYPE_BYTES[s.weight_dtype]
    lora = bool(s.lora_rank)
    targets = s.lora_targets if isinstance(s.lora_targets, str) else list(s.lora_targets)
    psi_t = shape.lora_parameters(s.lora_rank, targets) if lora else psi
    # PEFT keeps adapters in float32; full fine-tuning trains the weights in their own dtype.
    pt = 4 if lora else w
    sixteen_bit = w == 2 or s.mixed_precision is not None
    comps: list[Component] = []

    def add(name: str, value: float, note: str = "") -> int:
        value = int(math.ceil(value))
        comps.append(Component(name, value, note))
        return value

    if s.zero == 0:
        weights = add("weights", psi * w + (psi_t * 4 if lora else 0),
                      f"{_count(psi)} × {w} B" + (f" + {_count(psi_t)} adapters × 4 B" if lora else ""))
        cast = add("16-bit weight copies", shape.linear_parameters * 2,
                   "autocast keeps a 16-bit copy of each linear layer's float32 weights for backward") \
            if (s.mixed_precision and w == 4) else 0
        per_state, what = _optimizer_state_bytes(s.optim, pt)
        states = add("optimizer states", psi_t * per_state, f"{_count(psi_t)} trainable × {per_state} B, {what}")
        grads_all = psi_t * pt
        grads = add("gradients", grads_all, f"{_count(psi_t)} trainable × {pt} B")
        buckets = add("DDP gradient buckets", grads_all, "a flat copy of the gradients for the all-reduce") \
            if N > 1 else 0
        if per_state == 0:
            scratch = 0
        elif "fused" in s.optim or s.device == "cpu":
            # Fused kernels work in place; the per-tensor loop's temporaries are one tensor at a time.
            scratch = (shape.head_trainable if not lora else 0) * pt
        else:
            scratch = grads_all  # foreach AdamW: a full-size temporary (e.g. the square root of exp_avg_sq)
        gathered = 0
        static = weights + cast + states + buckets
    else:
        grad_b = 2 if sixteen_bit else 4
        weight_b = 2 if sixteen_bit else 4
        shard_w = N if s.zero == 3 else 1
        weights = add("weights", (psi * weight_b + (psi_t * 4 if lora else 0)) / shard_w,
                      f"{_count(psi)} × {weight_b} B" + (f" + {_count(psi_t)} adapters × 4 B" if lora else "")
                      + (f" / {N} devices" if shard_w > 1 else ""))
        cast = 0
        master = 4 if sixteen_bit else 0
        per_state, what = _optimizer_state_bytes(s.optim, 4)
        states = add("optimizer states", psi_t * (master + per_state) / N,
                     f"{_count(psi_t)} trainable × {master + per_state} B"
                     + (" (float32 master + " + what + ")" if master else f" ({what})") + f" / {N} devices")
        grads_all = psi_t * grad_b / N
        grads = add("gradients", grads_all, f"{_count(psi_t)} trainable × {grad_b} B / {N} devices")
        buckets = add("ZeRO-2 reduce bucket", 5e8 * grad_b, "DeepSpeed's default reduce_bucket_size, 5e8 elements") \
            if s.zero == 2 else 0
        gathered = add("ZeRO-3 gathered layers", max(2 * shape.largest_layer, shape.embedding_parameters)
                       * weight_b, "the layers being run, gathered from all devices") if s.zero == 3 else 0
        scratch = 0
        static = weights + states + buckets + gathered

    # Reference model.
    if s.reference == "copy":
        ref = add("reference model", psi * (2 if (sixteen_bit and s.zero) else w) / (N if s.zero == 3 else 1),
                  "frozen copy for the KL term" + (", sharded like the model" if s.zero == 3 else ""))
    elif s.reference == "cached":
        ref = add("reference log-probs", s.cached_items * 8,
                  "one cached number per forget item; the reference copy is freed before training")
    elif s.reference == "adapters":
        ref = add("reference model", 0, "the LoRA model with its adapters disabled: no copy")
    else:
        ref = 0

    # Activations.
    tokens = s.batch_size * s.parts * s.seq_len
    act_b = _residual_bytes(s)  # the residual stream keeps the weights' dtype, autocast or not
    per_layer = layer_activation_bytes(shape, s)
    H = shape.hidden_size
    norms = lean_norms(shape, s)
    if lora:  # frozen: the final norm keeps only its float32 input (lean: its input), the frozen head nothing
        final_norm = w * H if norms else 4 * H
    elif norms:                               # input and output
        final_norm = 2 * act_b * H
    else:
        final_norm = 10 * H if (w == 4 and s.mixed_precision) else {4: 12 * H, 2: 8 * H}[act_b]
    full = tokens * (shape.num_layers * per_layer + final_norm)
    ckpt = tokens * (shape.num_layers * H * act_b + per_layer + final_norm)
    act = add("activations", ckpt if s.gradient_checkpointing else full,
              f"{tokens} tokens; {_gib(full):.2f} GiB without, {_gib(ckpt):.2f} GiB with gradient checkpointing")

    # Loss buffers.
    V = shape.vocab_size
    logit_b = 2 if (w == 2 or s.mixed_precision) else 4
    labelled = tokens * s.labelled_fraction
    kl_tokens = s.batch_size * s.kl_parts * s.seq_len * s.labelled_fraction
    if s.loss_chunk <= 0:
        upcast = 4 if logit_b < 4 else 0
        loss = tokens * V * (logit_b + upcast) + labelled * V * 4 * 2 + tokens * V * 4
        # KL: the reference's logits (and their float32 copy), its gathered rows, both log-softmaxes and the
        # elementwise KL, per KL token.
        loss += s.batch_size * s.kl_parts * s.seq_len * V * (logit_b + upcast) + kl_tokens * V * 4 * 4
        note = "logits materialised for every token"
    else:
        # The final hidden states of the labelled positions (kept for backward, and their gradient), the
        # gradient of the whole final-norm output, and per chunk its float32 logits and one more float32 buffer
        # of the same size; a KL reference adds its hidden states and one float32 chunk of its logits.
        c = min(s.loss_chunk, tokens)
        H = shape.hidden_size
        loss = 2 * labelled * H * act_b + tokens * H * act_b + 2 * c * V * 4
        loss += (kl_tokens * H * act_b + c * V * 4) if kl_tokens else 0
        note = f"logits built {c} tokens at a time"
    loss_b = add("loss buffers", loss, note)
    head_acc = 0
    if s.loss_chunk > 0 and not lora and s.zero == 0:
        # The chunked output layer sums its weight's gradient over chunks in a float32 V × H accumulator. For
        # float32 weights the reductions of a forward share one, which becomes the gradient itself; 16-bit
        # weights get one per reduction (a term on a part), alive beside the gradient of the earlier ones.
        # 16-bit products add: the accumulator's cast back to 16-bit weights, per block of vocabulary rows the
        # 16-bit product and its float32 copy (≈ c × V each), and under autocast of float32 weights a 16-bit
        # copy of the weight for the products.
        VH = shape.head_trainable
        sixteen_mm = w == 2 or s.mixed_precision is not None
        head = 0 if w == 4 else 4 * VH
        if sixteen_mm:
            c = min(s.loss_chunk, tokens)
            head += 2 * VH + 6 * c * V
        head_acc = add("output-layer gradient accumulator", head,
                       "the chunked loss's float32 sum of the output layer's gradient over chunks"
                       + (" and its 16-bit casts" if sixteen_mm else ""))

    # Gradients alive during forward/backward: earlier micro-batches' under accumulation, else the output
    # head's, which backward produces first while every activation is still held.
    if s.gradient_accumulation_steps > 1:
        grads_fb = grads_all
    elif lora:
        grads_fb = 0
    else:
        grads_fb = shape.head_trainable * (grads_all / max(psi_t, 1))
    forward_backward = static + ref + act + loss_b + head_acc + int(grads_fb)
    optimizer_step = static - gathered + ref + grads + scratch
    if scratch:
        add("optimizer scratch", scratch, "temporaries of the optimizer step")
    return MemoryEstimate(tuple(comps), int(forward_backward), int(optimizer_step), act, int(full), int(ckpt),
                          psi_t)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else str(n)


def _gib(n: float) -> float:
    return n / GIB


# -- from a run config ----------------------------------------------------------------------------------------
def deepspeed_stage(path: str | None) -> int | None:
    """The ZeRO stage of a DeepSpeed JSON config, or None when there is none or it cannot be read."""
    if not path:
        return None
    try:
        stage = json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage")
    except (OSError, ValueError, AttributeError):
        return None
    return int(stage) if isinstance(stage, int) else None


def setup_from_config(cfg, *, devices: int = 1, zero: int | None = None, lora: bool | None = None,
                      seq_len: int | None = None, device: str = "cuda") -> TrainingSetup:
    """The :class:`TrainingSetup` of an unlearn or finetune config (``--devices``, ``--zero``, ``--lora`` and
    ``--seq-len`` override). ``model.dtype=auto`` counts as bfloat16 on a GPU and float32 on the CPU."""
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.objectives import resolve_method
    from obliviate.training.trainer import TrainingObjective

    t = cfg.train
    use_lora = cfg.lora.enabled if lora is None else lora
    if isinstance(cfg, UnlearnConfig):
        spec = resolve_method(cfg.method.name)
        objective = TrainingObjective(forget=spec.forget, regularizer=spec.regularizer)
    else:
        objective = TrainingObjective(forget=None, regularizer="gd")
    if objective.ref_logit_parts:
        reference = "adapters" if use_lora else "copy"
    elif objective.ref_logp_parts:
        reference = "cached"
    else:
        reference = "none"
    if zero is None:
        zero = deepspeed_stage(t.deepspeed) or 0
        if not zero and t.fsdp:
            zero = 3 if "full_shard" in t.fsdp else 2 if "shard_grad_op" in t.fsdp else 0
    dtype = cfg.model.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    targets = cfg.lora.target_modules
    return TrainingSetup(
        batch_size=t.batch_size, seq_len=seq_len or cfg.model.max_length, parts=len(objective.parts),
        kl_parts=len(objective.ref_logit_parts), reference=reference,
        cached_items=(cfg.data.limit or 0) if reference == "cached" else 0,
        weight_dtype=dtype, mixed_precision="bf16" if getattr(t, "bf16", False) else
        "fp16" if getattr(t, "fp16", False) else None,
        optim=t.optim, lora_rank=cfg.lora.r if use_lora else None,
        lora_targets=targets if isinstance(targets, str) else tuple(targets), lora_dropout=cfg.lora.dropout,
        gradient_checkpointing=t.gradient_checkpointing, gradient_accumulation_steps=t.gradient_accumulation_steps,
        devices=devices, zero=zero, fsdp=bool(t.fsdp) and not t.deepspeed, device=device,
        # Sharded engines gather weights inside their own forward only, so the loss reads materialised logits.
        loss_chunk=0 if (zero or t.fsdp or t.deepspeed) else int(getattr(t, "loss_chunk_size", 0) or 0))


def format_estimate(est: MemoryEstimate, shape: ModelShape, setup: TrainingSetup, *,
                    device_memory_gib: float = 80.0) -> str:
    """The estimate as the table ``--dry-run`` prints."""
    s = setup
    engine = {0: "DDP" if s.devices > 1 else "one process", 2: "ZeRO-2", 3: "ZeRO-3"}[s.zero]
    precision = s.weight_dtype + (f" weights, {s.mixed_precision} autocast" if s.mixed_precision else " weights")
    tuning = f"LoRA r={s.lora_rank} ({_count(est.trainable_parameters)} trainable)" if s.lora_rank \
        else "full fine-tuning"
    lines = [
        f"peak memory estimate per device — {shape.name} ({shape.model_type}, {_count(shape.parameters)} "
        f"parameters; shape from {shape.source})",
        f"  {s.devices} device{'s' if s.devices > 1 else ''}, {engine}, {tuning}, {precision}, {s.optim}, "
        f"gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}",
        f"  micro-batch: {s.batch_size} × {s.parts} part{'s' if s.parts > 1 else ''} × {s.seq_len} tokens "
        f"(every sequence counted at {s.seq_len} tokens; --seq-len to change), "
        f"gradient accumulation {s.gradient_accumulation_steps}",
    ]
    rows = [(c.name, c.bytes, c.note) for c in est.components]
    rows += [("peak, forward/backward", est.forward_backward, ""), ("peak, optimizer step", est.optimizer_step, "")]
    fits = est.peak <= device_memory_gib * GIB
    rows.append(("total (the larger peak)", est.peak,
                 f"{'fits' if fits else 'does NOT fit'} a {device_memory_gib:g} GiB device "
                 f"(plus the CUDA context, ~0.5–1 GiB)"))
    width = max(len(r[0]) for r in rows)
    lines += [f"  {name:<{width}}  {_gib(value):8.2f} GiB  {note}".rstrip() for name, value, note in rows]
    if not fits:
        hints = []
        if not s.gradient_checkpointing:
            hints.append(f"train.gradient_checkpointing=true (activations "
                         f"{_gib(est.activations_checkpointed):.1f} GiB)")
        if not s.lora_rank:
            hints.append("LoRA (--lora)")
        if s.zero < 3 and s.devices > 1:
            hints.append("ZeRO-3 (--zero 3)")
        if hints:
            lines.append("  to fit, try: " + "; ".join(hints))
    return "\n".join(lines)
