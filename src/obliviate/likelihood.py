"""Batched answer log-likelihoods under a model: the one place that runs a model to score fixed sequences.

Used to cache the reference model's log-probabilities of the forget items once before unlearning (NPO, DPO),
and by evaluation. Sequences are sorted by length before batching so that a batch holds sequences of similar
length (little padding); results come back in input order. Padding never changes a result: positions past a
sequence's end are masked out of attention and carry label -100.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from transformers import DynamicCache

from obliviate.data.collate import collate_examples, pad_sequences
from obliviate.kvcache import cache_kwargs
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


@torch.no_grad()
def shared_prompt_logprobs(model, groups: Sequence[tuple[list[int], Sequence[list[int]]]], *, pad_token_id: int,
                           batch_size: int = 16, device: torch.device | str | None = None
                           ) -> list[list[tuple[float, int]]]:
    """Summed log-probability (and token count) of several answers to the same prompt, the prompt run once.

    ``groups`` holds ``(prompt_ids, [answer_ids, ...])``: every answer token is scored, given the prompt. An
    evaluation item asks for its answer, its paraphrase and several perturbed answers after one question, so
    running the shared prompt once and reusing its key/value cache for every answer saves most of the prompt's
    compute (a chat prompt is often longer than the answer). Items are batched: prompts left-padded with
    explicit position ids, the cache repeated once per answer, answers right-padded. Results equal
    :func:`sequence_logprobs` on the concatenated sequences up to float rounding.
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: list[list[tuple[float, int]]] = [[] for _ in groups]
    # Chunks of items with the same number of answers, so one cache repeat factor serves the whole chunk.
    by_count: dict[int, list[int]] = {}
    for i, (_, answers) in enumerate(groups):
        by_count.setdefault(len(answers), []).append(i)
    try:
        for n, members in by_count.items():
            if n == 0:
                continue
            members.sort(key=lambda i: len(groups[i][0]))
            per_chunk = max(1, batch_size // n)
            for start in range(0, len(members), per_chunk):
                chunk = members[start: start + per_chunk]
                _score_chunk(model, [groups[i] for i in chunk], n, pad_token_id, device,
                             [results[i] for i in chunk])
    finally:
        model.train(was_training)
    return results


def _score_chunk(model, chunk, n: int, pad_token_id: int, device, out: list[list[tuple[float, int]]]) -> None:
    prompts = [p for p, _ in chunk]
    prompt_ids = pad_sequences(prompts, pad_token_id, side="left").to(device)
    prompt_mask = pad_sequences([[1] * len(p) for p in prompts], 0, side="left").to(device)
    # Left padding shifts every token right; explicit positions keep each prompt at 0, 1, 2, ...
    prompt_pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    # Only the last prompt position's logits are read: skip the vocabulary projection everywhere else.
    cache = DynamicCache()
    first = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_pos, logits_to_keep=1,
                  **cache_kwargs(model, cache))
    cache.batch_repeat_interleave(n)
    last = first.logits[:, -1:].float().repeat_interleave(n, dim=0)       # predicts each answer's first token
    answers = [a for _, group in chunk for a in group]
    answer_ids = pad_sequences(answers, pad_token_id).to(device)
    answer_mask = pad_sequences([[1] * len(a) for a in answers], 0).to(device)
    lengths = torch.tensor([len(p) for p in prompts], device=device).repeat_interleave(n)
    positions = lengths[:, None] + torch.arange(answer_ids.shape[1], device=device)[None]
    second = model(input_ids=answer_ids, attention_mask=torch.cat([prompt_mask.repeat_interleave(n, 0), answer_mask], 1),
                   position_ids=positions, **cache_kwargs(model, cache))
    logits = torch.cat([last, second.logits[:, :-1].float()], dim=1)      # position t predicts answer token t
    logp = logits.gather(-1, answer_ids[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    logp = logp * answer_mask
    for row, a in enumerate(answers):
        out[row // n].append((float(logp[row].sum()), len(a)))
