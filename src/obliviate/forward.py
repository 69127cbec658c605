"""One forward pass over many token sequences, returning the logits the losses and scorers read.

Two independent choices, both exact (they change float rounding only):

- **Layout.** *Packed*: sequences are laid end to end in rows, each with its own position ids (0, 1, …) and
  block-diagonal causal attention, so no padding token is computed (transformers builds the block-diagonal mask
  from restarting position ids when no 2-D attention mask is given; with ``sdpa`` attention each sequence then
  attends on its own, without computing the masked-out blocks: :mod:`obliviate.attention`). *Padded*: one
  sequence per row, right-padded to the longest, with an attention mask.
- **Output.** *Chunked* (default): the model runs with its output layer applied to one position per row only
  (``logits_to_keep=1``), the final hidden states are taken from its decoder by a forward hook, and the
  positions that predict a labelled token become a :class:`~obliviate.objectives.HeadLogits` — the output
  layer is applied to them a chunk at a time, by the loss. *Materialised*: the model's own ``(B, T, V)`` logits.

The model is always called as a whole (so DDP, PEFT and similar wrappers see an ordinary forward). Whether a
model's decoder output and output layer reproduce its logits, and whether its attention honours packed position
ids, is checked once per model on a short probe (:func:`inspect_model`); a model that fails a check runs the
materialised or padded way, with one log line saying why.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from obliviate.attention import forward_attention, packed_attention
from obliviate.models import inference, is_peft_model, unwrapped_causal_lm
from obliviate.objectives import DEFAULT_CHUNK_SIZE, HeadLogits, OutputHead, share_weight_grad
from obliviate.objectives.types import IGNORE_INDEX

log = logging.getLogger(__name__)

#: Longest packed row, in tokens. Sequences are packed first-fit (longest first) into rows of at most this
#: length (a longer sequence gets a row of its own); attention other than ``sdpa`` (eager, for one) computes the
#: whole row's square, so rows stay short enough that dropping the padding is not paid back in attention.
DEFAULT_PACK_LENGTH = 1024


# ---------------------------------------------------------------- the output layer, apart from the decoder


def _causal_lm(model: nn.Module) -> nn.Module:
    return model.get_base_model() if is_peft_model(model) else model


def _logit_transform(config) -> tuple[float, float | None]:
    """(scale, softcap) applied after the output layer by the architecture (1.0, None for most)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = 1.0
    if getattr(cfg, "logit_scale", None) is not None:           # Cohere: logits * logit_scale
        scale *= float(cfg.logit_scale)
    if getattr(cfg, "logits_scaling", None) is not None:        # Granite: logits / logits_scaling
        scale /= float(cfg.logits_scaling)
    softcap = getattr(cfg, "final_logit_softcapping", None)     # Gemma 2/3: c · tanh(logits / c)
    return scale, (float(softcap) if softcap else None)


def _reference_head(module: nn.Module) -> nn.Module:
    """The output layer as it is with adapters disabled (LoRA on the head, or the head in modules_to_save)."""
    if hasattr(module, "original_module"):        # peft ModulesToSaveWrapper
        return module.original_module
    if hasattr(module, "get_base_layer"):         # peft LoRA layer
        return module.get_base_layer()
    return module


@dataclass(frozen=True, eq=False)
class Split:
    """A causal LM seen as a decoder (→ final hidden states) and an output layer (→ logits)."""

    decoder: nn.Module
    head_module: nn.Module
    scale: float
    softcap: float | None
    vocab_size: int

    def head(self) -> OutputHead:
        """The output layer with the current weights (a plain linear layer goes through the fast chunked path)."""
        m = self.head_module
        if type(m) is nn.Linear:
            return OutputHead(weight=m.weight, bias=m.bias, scale=self.scale, softcap=self.softcap)
        return OutputHead(module=m, vocab_size=self.vocab_size, scale=self.scale, softcap=self.softcap)


def _find_split(model: nn.Module, reference: bool) -> Split | str:
    lm = _causal_lm(model)
    decoder = getattr(lm, "base_model", None)
    if not isinstance(decoder, nn.Module) or decoder is lm:
        return f"{type(lm).__name__} has no separate decoder module"
    get_head = getattr(lm, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return f"{type(lm).__name__} has no output layer"
    if reference:
        head = _reference_head(head)
    scale, softcap = _logit_transform(lm.config)
    vocab = getattr(head, "out_features", None) or getattr(lm.config, "vocab_size", None)
    return Split(decoder=decoder, head_module=head, scale=scale, softcap=softcap, vocab_size=int(vocab or 0))


@contextmanager
def capture_hidden(decoder: nn.Module):
    """Collects the decoder's output hidden states ``(B, T, H)`` of the next forward call into ``box["hidden"]``."""
    box: dict[str, Tensor] = {}

    def hook(module, args, output):
        box["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = decoder.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM, in order (``model.layers`` of Llama-style models, ``transformer.h`` of
    GPT-2-style ones); ValueError naming the model when none is found. A DDP wrapper is looked through."""
    lm = unwrapped_causal_lm(model)
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "layers", "h"):
        node: object = lm
        for name in path.split("."):
            node = getattr(node, name, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList) and len(node) > 0:
            return node
    raise ValueError(f"{type(lm).__name__}: cannot find its decoder blocks (model.layers, transformer.h, ...)")


@contextmanager
def capture_layers(model: nn.Module, layers: Sequence[int]):
    """Collects the outputs ``(R, L, H)`` of decoder blocks ``layers`` during the next forward call into
    ``box[layer]`` (a hook on those blocks only)."""
    box: dict[int, Tensor] = {}
    blocks = decoder_layers(model) if layers else None
    handles = []
    for layer in layers:
        def hook(module, args, output, layer=layer):
            box[layer] = output[0] if isinstance(output, (tuple, list)) else output
        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield box
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- checks, once per model


@dataclass(frozen=True)
class ModelForward:
    """What :func:`inspect_model` found: the split (None when the model must run materialised) and whether
    packed position ids are honoured, each with the reason when not."""

    split: Split | None
    split_problem: str | None
    packs: bool
    pack_problem: str | None


_INSPECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tolerance(dtype: torch.dtype) -> float:
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def _close(a: Tensor, b: Tensor, tolerance: float) -> bool:
    a, b = a.double(), b.double()
    return bool((a - b).abs().max() <= tolerance * (1 + b.abs().max()))


def inspect_model(model: nn.Module, *, reference: bool = False) -> ModelForward:
    """Check, on a short probe, that the decoder's hidden states through the output layer give the model's
    logits, and that a packed row gives each sequence's own logits. Cached per model object.

    ``reference=True`` takes the output layer as it is with adapters disabled (a LoRA model's reference).
    """
    cached = _INSPECTED.get(model, {})
    if reference in cached:
        return cached[reference]

    param = next(model.parameters())
    split = _find_split(model, reference)
    split_problem = split if isinstance(split, str) else None
    split = None if isinstance(split, str) else split
    vocab = split.vocab_size if split is not None else int(getattr(getattr(_causal_lm(model), "config", None), "vocab_size", 2))
    g = torch.Generator().manual_seed(0)
    first = torch.randint(0, max(vocab, 2), (1, 6), generator=g).to(param.device)
    second = torch.randint(0, max(vocab, 2), (1, 5), generator=g).to(param.device)
    tol = _tolerance(param.dtype)
    with inference(model):
        alone = [model(input_ids=s, use_cache=False).logits for s in (first, second)]
        if split is not None:
            try:
                with capture_hidden(split.decoder) as box:
                    model(input_ids=first, use_cache=False, logits_to_keep=1)
                if "hidden" not in box:
                    split_problem = "its decoder module was not called"
                elif not _close(split.head().logits(box["hidden"][0]), alone[0][0], tol):
                    split_problem = "its decoder output through its output layer does not give its logits"
            except (TypeError, ValueError, RuntimeError) as exc:   # e.g. no logits_to_keep argument
                split_problem = f"it cannot run with logits_to_keep=1 ({exc.__class__.__name__}: {exc})"
            if split_problem is not None:
                split = None
        pack_problem = None
        try:
            ids = torch.cat([first, second], dim=1)
            positions = torch.cat([torch.arange(6), torch.arange(5)]).unsqueeze(0).to(param.device)
            with packed_attention(model):
                packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits
            if not (_close(packed[:, :6], alone[0], tol) and _close(packed[:, 6:], alone[1], tol)):
                pack_problem = "its attention does not keep packed sequences apart"
        except (TypeError, ValueError, RuntimeError) as exc:
            pack_problem = f"it cannot take position ids ({exc.__class__.__name__}: {exc})"
    found = ModelForward(split=split, split_problem=split_problem, packs=pack_problem is None,
                         pack_problem=pack_problem)
    cached[reference] = found
    _INSPECTED[model] = cached
    return found


# ---------------------------------------------------------------- layout


@dataclass
class _Layout:
    input_ids: Tensor                 # (R, L)
    attention_mask: Tensor | None     # (R, L) for the padded layout
    position_ids: Tensor | None       # (R, L) for the packed layout
    starts: dict[str, Tensor]         # per part (B,): flat index (into R·L) of each sequence's first token
    lengths: dict[str, Tensor]        # per part (B,): real tokens per sequence


def _lengths(batch: Mapping[str, Tensor]) -> Tensor:
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions[None] < lengths[:, None]):
        raise ValueError("sequences must be right-padded (attention mask 1…1 0…0) to be packed")
    return lengths


def _first_fit(lengths: list[int], capacity: int) -> tuple[list[tuple[int, int]], list[int]]:
    """First-fit, longest first: each sequence's (row, offset), and each row's used length."""
    place: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    used: list[int] = []
    for k in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        n = lengths[k]
        row = next((r for r, u in enumerate(used) if u + n <= capacity), len(used))
        if row == len(used):
            used.append(0)
        place[k] = (row, used[row])
        used[row] += n
    return place, used


def _layout(inputs: Mapping[str, Mapping[str, Tensor]], parts: Sequence[str], *, pad_token_id: int, pack: bool,
            pack_length: int) -> _Layout:
    device = inputs[parts[0]]["input_ids"].device
    lengths = {p: _lengths(inputs[p]) for p in parts}
    if pack:
        seqs = [(p, i, n) for p in parts for i, n in enumerate(lengths[p].tolist())]
        longest = max(n for _, _, n in seqs)
        place, used = _first_fit([n for _, _, n in seqs], max(pack_length, longest))
        # Packing pays where it removes padding; sequences of one length would only lengthen the attention rows.
        pack = len(used) * max(used) < len(seqs) * longest
    if not pack:
        longest = max(inputs[p]["input_ids"].shape[1] for p in parts)
        ids, att, starts, row = [], [], {}, 0
        for p in parts:
            b, t = inputs[p]["input_ids"].shape
            ids.append(torch.nn.functional.pad(inputs[p]["input_ids"], (0, longest - t), value=pad_token_id))
            att.append(torch.nn.functional.pad(inputs[p]["attention_mask"], (0, longest - t), value=0))
            starts[p] = (torch.arange(b, device=device) + row) * longest
            row += b
        return _Layout(torch.cat(ids), torch.cat(att), None, starts, lengths)
    width = max(used)
    ids = torch.full((len(used), width), pad_token_id, dtype=torch.long, device=device)
    pos = torch.zeros((len(used), width), dtype=torch.long, device=device)
    starts = {p: torch.zeros(len(lengths[p]), dtype=torch.long, device=device) for p in parts}
    for (p, i, n), (r, offset) in zip(seqs, place):
        ids[r, offset: offset + n] = inputs[p]["input_ids"][i, :n]
        pos[r, offset: offset + n] = torch.arange(n, device=device)
        starts[p][i] = r * width + offset
    for r, u in enumerate(used):
        pos[r, u:] = torch.arange(width - u, device=device)     # the row's tail: a block of its own
    return _Layout(ids, None, pos, starts, lengths)


# ---------------------------------------------------------------- the forward pass


def _unpack(flat: Tensor, layout: _Layout, inputs: Mapping[str, Mapping[str, Tensor]], part: str) -> Tensor:
    """Rows of a flattened ``(R·L, D)`` output back to the part's ``(B, T, D)`` layout, zero past each end."""
    b, t = inputs[part]["input_ids"].shape
    offsets = torch.arange(t, device=flat.device)
    index = layout.starts[part][:, None] + offsets[None]
    valid = offsets[None] < layout.lengths[part][:, None]
    dense = flat.new_zeros(b, t, flat.shape[-1])
    dense[valid] = flat[index[valid]]
    return dense


def forward_parts(model: nn.Module, inputs: Mapping[str, Mapping[str, Tensor]], parts: Sequence[str], *,
                  split: Split | None, pad_token_id: int, pack: bool, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  pack_length: int = DEFAULT_PACK_LENGTH, layers: Sequence[int] = (),
                  hidden_out: dict[str, dict[int, Tensor]] | None = None) -> dict[str, Tensor | HeadLogits]:
    """ONE forward pass of ``model`` over every part; per part, logits aligned with its ``labels``.

    ``inputs[part]`` holds right-padded ``input_ids``, ``attention_mask`` and ``labels`` ``(B, T)``. With a
    ``split`` (see :func:`inspect_model`) each part comes back as a :class:`HeadLogits`; without, as
    materialised float32 logits ``(B, T, V)`` (float64 for a float64 model; zero past each sequence's end).
    ``pack`` lays the sequences end to end (only for models whose :func:`inspect_model` says they pack).
    ``layers``: decoder blocks whose outputs are also captured (hooks on those blocks only), into
    ``hidden_out[part][layer]`` as ``(B, T, H)`` (0 past each sequence's end).
    """
    parts = tuple(parts)
    layout = _layout(inputs, parts, pad_token_id=pad_token_id, pack=pack, pack_length=pack_length)
    kwargs = {"input_ids": layout.input_ids, "use_cache": False}
    if layout.attention_mask is not None:
        kwargs["attention_mask"] = layout.attention_mask
    if layout.position_ids is not None:
        kwargs["position_ids"] = layout.position_ids
    layers = tuple(layers)
    if layers and hidden_out is None:
        raise ValueError("layers given without hidden_out to collect them into")
    attention = forward_attention(model) if layout.position_ids is not None else nullcontext()
    if split is None:
        with capture_layers(model, layers) as blocks, attention:
            logits = model(**kwargs).logits
        _collect(blocks, layout, inputs, parts, hidden_out)
        flat = logits.reshape(-1, logits.shape[-1])
        out = {}
        for p in parts:
            dense = _unpack(flat, layout, inputs, p)
            out[p] = dense if dense.dtype == torch.float64 else dense.float()
        return out
    with capture_hidden(split.decoder) as box, capture_layers(model, layers) as blocks, attention:
        model(**kwargs, logits_to_keep=1)
    _collect(blocks, layout, inputs, parts, hidden_out)
    hidden = box["hidden"]
    flat = hidden.reshape(-1, hidden.shape[-1])
    head = share_weight_grad(split.head())          # one weight-gradient buffer for every part's reductions
    out = {}
    for p in parts:
        labels = inputs[p]["labels"]
        t = labels.shape[1]
        mask = labels[:, 1:] != IGNORE_INDEX
        index = (layout.starts[p][:, None] + torch.arange(t - 1, device=flat.device)[None])[mask]
        out[p] = HeadLogits(flat.index_select(0, index), labels, head, chunk_size=chunk_size)
    return out


def _collect(blocks: dict[int, Tensor], layout: _Layout, inputs: Mapping[str, Mapping[str, Tensor]],
             parts: Sequence[str], hidden_out: dict[str, dict[int, Tensor]] | None) -> None:
    if hidden_out is None or not blocks:
        return
    for p in parts:
        hidden_out[p] = {layer: _unpack(h.reshape(-1, h.shape[-1]), layout, inputs, p) for layer, h in blocks.items()}
