"""Batching with dynamic padding: every batch is padded to its own longest sequence, never to a fixed length.

TOFU items are about 55 tokens long; padding them to a fixed 500 (as the paper's released code does) spends
most of the compute on padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from obliviate.data.formatting import IGNORE_INDEX


def pad_sequences(sequences: Sequence[Sequence[int]], value: int, *, side: str = "right") -> torch.Tensor:
    """Stack integer sequences into a (B, T) tensor, padding with ``value`` to the longest one."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        if not seq:
            continue
        row = torch.as_tensor(list(seq), dtype=torch.long)
        if side == "right":
            out[i, : len(seq)] = row
        else:
            out[i, longest - len(seq):] = row
    return out


def collate_examples(examples: Sequence[dict], pad_token_id: int, *, side: str = "right") -> dict[str, torch.Tensor]:
    """Collate dicts with ``input_ids`` and ``labels`` (lists of ints) and optional float ``ref_logp``.

    Returns ``input_ids``, ``attention_mask`` (1 on real tokens), ``labels`` (``IGNORE_INDEX`` on padding), and
    ``ref_logps`` (B,) when every example carries ``ref_logp``.
    """
    ids = [e["input_ids"] for e in examples]
    batch = {
        "input_ids": pad_sequences(ids, pad_token_id, side=side),
        "attention_mask": pad_sequences([[1] * len(s) for s in ids], 0, side=side),
        "labels": pad_sequences([e["labels"] for e in examples], IGNORE_INDEX, side=side),
    }
    if all("ref_logp" in e for e in examples):
        batch["ref_logps"] = torch.tensor([float(e["ref_logp"]) for e in examples], dtype=torch.float32)
    return batch
