"""Batched answer log-likelihoods under a model: the one place that runs a model to score fixed sequences.

Used to cache the reference model's log-probabilities of the forget items once before unlearning (NPO, DPO),
and by evaluation. Sequences are sorted by length before batching so that a batch holds sequences of similar
length (little padding); results come back in input order. Padding never changes a result: positions past a
sequence's end are masked out of attention and carry label -100.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from obliviate.data.collate import collate_examples
from obliviate.objectives import token_logprobs


@torch.no_grad()
def sequence_logprobs(model, examples: Sequence[dict], *, pad_token_id: int, batch_size: int = 16,
                      device: torch.device | str | None = None) -> tuple[list[float], list[int]]:
    """Summed log-probability of the labelled tokens of each example, and the number of labelled tokens.

    ``examples`` are dicts with ``input_ids`` and ``labels`` (lists of ints, -100 = not scored).
    Computed in float32 from the model's logits whatever the model's dtype.
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    sums: list[float] = [0.0] * len(examples)
    counts: list[int] = [0] * len(examples)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            batch = collate_examples([examples[i] for i in idx], pad_token_id)
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits.float()
            logp, mask = token_logprobs(logits, batch["labels"].to(device))
            for row, i in enumerate(idx):
                sums[i] = float(logp[row].sum())
                counts[i] = int(mask[row].sum())
    finally:
        model.train(was_training)
    return sums, counts
