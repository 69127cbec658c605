"""Attention over packed rows, one sequence at a time.

A packed row lays several sequences end to end, each with position ids restarting at 0 (:mod:`obliviate.forward`).
transformers' ``sdpa`` attention turns the restarting position ids into a block-diagonal causal mask over the
whole row and computes every query against every key of the row, the other sequences' included, masked out
afterwards: a row of S sequences of length n costs ``(S·n)²`` instead of ``S·n²``, and the masked kernel is slower
than the causal one. :func:`packed_attention` runs a model's forward with ``packed_sdpa`` instead: where the mask
it is given is exactly the block-diagonal causal mask of the row's position ids, it calls
``scaled_dot_product_attention(is_causal=True)`` on each sequence's own queries, keys and values — the same
quantity without the masked-out work. Any other mask (padding, sliding windows, a cache), or a call with
arguments it does not handle, goes to transformers' ``sdpa`` unchanged.

The mask is still built, so a forward recomputed later under plain ``sdpa`` (activation checkpointing in
backward, outside the context) computes the same values.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from obliviate.models import unwrapped_causal_lm

#: The attention implementation's registered name.
PACKED_SDPA = "obliviate_packed_sdpa"

#: Keyword arguments that change what attention computes; with any of them set the call goes to ``sdpa``.
_UNHANDLED = ("softcap", "position_bias", "sliding_window", "s_aux", "sinks", "head_mask")

# The segments of the last (mask, position ids) pair seen: every layer of a forward gets the same two tensors.
_last: tuple[weakref.ref, weakref.ref, list[list[tuple[int, int]]] | None] | None = None


def _segments(position_ids: Tensor) -> tuple[Tensor, list[list[tuple[int, int]]]]:
    """Per row, the ``(start, stop)`` of each sequence (a new one wherever the position id does not go up by one),
    and the segment index of every position ``(R, L)``."""
    pos = position_ids
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    seg = starts.long().cumsum(dim=1)
    rows = []
    length = pos.shape[1]
    for row in starts.tolist():
        first = [t for t, s in enumerate(row) if s]
        rows.append(list(zip(first, first[1:] + [length])))
    return seg, rows


def _block_segments(mask: Tensor, position_ids: Tensor) -> list[list[tuple[int, int]]] | None:
    """The rows' sequences when ``mask`` is exactly their block-diagonal causal mask, else None."""
    global _last
    if _last is not None and _last[0]() is mask and _last[1]() is position_ids:
        return _last[2]
    found = None
    rows, length = position_ids.shape
    if mask.dtype == torch.bool and mask.dim() == 4 and tuple(mask.shape) == (rows, 1, length, length):
        seg, segments = _segments(position_ids)
        causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril_()
        expected = (seg[:, :, None] == seg[:, None, :]) & causal
        if torch.equal(mask[:, 0], expected):
            found = segments
    _last = (weakref.ref(mask), weakref.ref(position_ids), found)
    return found


def packed_sdpa_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                          dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
                          **kwargs) -> tuple[Tensor, None]:
    """transformers' attention-function signature: ``query`` ``(R, heads, L, D)``, ``key``/``value``
    ``(R, kv_heads, L, D)`` → ``((R, L, heads, D), None)``. See the module docstring for when it takes the
    per-sequence path."""
    position_ids = kwargs.get("position_ids")
    segments = None
    if (attention_mask is not None and position_ids is not None and position_ids.dim() == 2
            and query.shape[2] == key.shape[2] == position_ids.shape[1] and query.shape[0] == position_ids.shape[0]
            and is_causal is not False and getattr(module, "is_causal", True)
            and not kwargs.get("output_attentions") and all(kwargs.get(k) is None for k in _UNHANDLED)):
        segments = _block_segments(attention_mask, position_ids)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    rows = []
    # split, not slices: the backward of a split concatenates the pieces' gradients, where each slice's backward
    # would fill a zero tensor the size of the whole row.
    for q, k, v, spans in zip(query.split(1), key.split(1), value.split(1), segments):
        lengths = [b - a for a, b in spans]
        rows.append(torch.cat([F.scaled_dot_product_attention(
            qs, ks, vs, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
            for qs, ks, vs in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))], dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)


def _configs(model: nn.Module) -> list:
    """The configs whose attention implementation a forward of ``model`` reads (wrappers looked through)."""
    config = getattr(unwrapped_causal_lm(model), "config", None)
    if config is None:
        return []
    found = [config]
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if text is not config:
        found.append(text)
    return found


@contextmanager
def packed_attention(model: nn.Module):
    """Within the context, ``model``'s ``sdpa`` attention runs as ``packed_sdpa`` (other implementations —
    eager, flash attention, which already reads packed position ids — are left as they are)."""
    switched = [c for c in _configs(model) if getattr(c, "_attn_implementation", None) == "sdpa"]
    for c in switched:
        c._attn_implementation_internal = PACKED_SDPA
    try:
        yield
    finally:
        for c in switched:
            c._attn_implementation_internal = "sdpa"


def forward_attention(model: nn.Module):
    """The context for one packed forward of ``model``: :func:`packed_attention`, unless the forward records
    layers to recompute in backward (activation checkpointing with gradients on) — the recomputation would run
    outside the context, with another attention; the caller then switches around forward and backward both, as
    the trainer's step does."""
    if torch.is_grad_enabled() and getattr(unwrapped_causal_lm(model), "is_gradient_checkpointing", False):
        return nullcontext()
    return packed_attention(model)
