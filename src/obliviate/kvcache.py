"""Key/value cache plumbing shared by generation and scoring, across the transformers releases we support.

transformers 5 renamed the forward argument ``past_key_values`` to ``cache``; both releases accept a
:class:`~transformers.DynamicCache` created by the caller and fill it in place, so callers create the cache
themselves and pass it under whichever name the model's forward takes.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
from transformers import DynamicCache


@lru_cache(maxsize=None)
def _cache_argument(forward_type: type) -> str:
    params = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model, cache: DynamicCache) -> dict:
    """``{name: cache}`` for ``model(...)``: the keyword this model's forward takes its cache under."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_argument(type(base)): cache, "use_cache": True}


def cache_layers(cache: DynamicCache):
    """The per-layer key/value holders (``.keys`` and ``.values``, shaped batch × heads × length × dim)."""
    return cache.layers


def left_pad_cache(cache: DynamicCache, length: int) -> None:
    """Grow every layer to ``length`` positions by adding zeros on the left (positions the mask hides)."""
    for layer in cache_layers(cache):
        if layer.keys is None or layer.keys.numel() == 0:
            continue
        missing = length - layer.keys.shape[-2]
        if missing > 0:
            pad = layer.keys.new_zeros(*layer.keys.shape[:-2], missing, layer.keys.shape[-1])
            layer.keys = torch.cat([pad, layer.keys], dim=-2)
            pad = layer.values.new_zeros(*layer.values.shape[:-2], missing, layer.values.shape[-1])
            layer.values = torch.cat([pad, layer.values], dim=-2)


def trim_left(cache: DynamicCache, positions: int) -> None:
    """Drop the first ``positions`` positions of every layer (columns no sequence attends to any more)."""
    for layer in cache_layers(cache):
        layer.keys, layer.values = layer.keys[..., positions:, :], layer.values[..., positions:, :]


def concat_caches(first: DynamicCache, second: DynamicCache) -> None:
    """Append ``second``'s rows to ``first`` (both already the same length), in place."""
    for a, b in zip(cache_layers(first), cache_layers(second)):
        a.keys = torch.cat([a.keys, b.keys], dim=0)
        a.values = torch.cat([a.values, b.values], dim=0)
