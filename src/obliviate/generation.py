"""Batched greedy generation: the one place that generates answers.

Prompts are formatted by the same :class:`PromptFormatter` used in training and decoded greedily (argmax at
every step, the model's KV cache reused). Decoding keeps a working batch of at most ``batch_size`` sequences:

* a sequence leaves the batch the step it emits a stop token (end of sequence, or the chat template's end of
  turn) or reaches ``max_new_tokens``, so no step is spent on answers that are already complete;
* when the batch has shrunk to half its size, waiting prompts (taken shortest first) are run through the
  model together and join it: their caches are left-padded to the batch's length and hidden by the attention
  mask, and explicit position ids keep every sequence at positions 0, 1, 2, … of its own.

A sequence's tokens therefore never depend on which others share its batch, beyond float rounding in the
matrix products (the evaluation tests check the answers equal one-at-a-time ``model.generate``). Answers come
back in input order, without the prompt and without the stop token. Generation-config extras such as a
repetition penalty are not applied: evaluation generations are plain greedy decodes, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from obliviate.data.collate import pad_sequences
from obliviate.data.formatting import PromptFormatter
from obliviate.kvcache import cache_kwargs, concat_caches, left_pad_cache, trim_left
from obliviate.models import inference


def stop_token_ids(tokenizer) -> list[int]:
    """The end-of-sequence token and, for chat formats, the end-of-turn token if it differs."""
    stop = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "</s>"):
        if marker in vocab:
            stop.add(vocab[marker])
    stop.discard(None)
    return sorted(stop)


def generate_answers(model, formatter: PromptFormatter, questions: Sequence[str], *, max_new_tokens: int = 64,
                     batch_size: int = 16, device: torch.device | str | None = None) -> list[str]:
    """Greedy answers to ``questions``, in input order."""
    tokenizer = formatter.tokenizer
    prompts = [formatter.encode_prompt(q) for q in questions]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = greedy_decode(model, prompts, max_new_tokens=max_new_tokens, stop_ids=stop_token_ids(tokenizer),
                           pad_token_id=pad_id, batch_size=batch_size, device=device)
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]


def greedy_decode(model, prompts: Sequence[list[int]], *, max_new_tokens: int, stop_ids: Sequence[int],
                  pad_token_id: int, batch_size: int = 16, device: torch.device | str | None = None
                  ) -> list[list[int]]:
    """Greedy continuation token ids of each prompt (stop token excluded), in input order."""
    if device is None:
        device = next(model.parameters()).device
    results: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens <= 0 or not prompts:
        return results
    waiting = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)  # pop() = shortest
    stop = set(stop_ids)
    batch = _Batch(model, device)
    with inference(model):
        while waiting or batch.size:
            if waiting and batch.size <= batch_size // 2:
                take = [waiting.pop() for _ in range(min(batch_size - batch.size, len(waiting)))]
                batch.admit([prompts[i] for i in take], take, pad_token_id)
            # Every row holds a predicted next token: record it (a stop token ends the row instead), then
            # retire the rows that are complete.
            keep = []
            for item, token in zip(batch.items, batch.next_token.tolist()):
                if token not in stop:
                    results[item].append(token)
                keep.append(token not in stop and len(results[item]) < max_new_tokens)
            if not all(keep):
                batch.keep(torch.tensor(keep, device=device))
            if batch.size:
                batch.step()
    return results


class _Batch:
    """The sequences being decoded: their cache, attention mask, next positions and predicted next tokens."""

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.items: list[int] = []
        self.cache: DynamicCache | None = None
        self.mask = self.positions = self.next_token = None

    @property
    def size(self) -> int:
        return len(self.items)

    def _forward(self, input_ids, mask, positions, cache) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                         **cache_kwargs(self.model, cache))
        return out.logits[:, -1].argmax(-1)

    def admit(self, prompts: list[list[int]], items: list[int], pad_token_id: int) -> None:
        ids = pad_sequences(prompts, pad_token_id, side="left").to(self.device)
        mask = pad_sequences([[1] * len(p) for p in prompts], 0, side="left").to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        token = self._forward(ids, mask, positions, cache)
        next_pos = positions[:, -1] + 1
        if not self.size:
            self.items, self.cache, self.mask, self.positions, self.next_token = items, cache, mask, next_pos, token
            return
        # Bring both to one length by padding the shorter on the left, then stack the rows.
        length = max(self.mask.shape[1], mask.shape[1])
        left_pad_cache(self.cache, length)
        left_pad_cache(cache, length)
        concat_caches(self.cache, cache)
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(mask, length)])
        self.positions = torch.cat([self.positions, next_pos])
        self.next_token = torch.cat([self.next_token, token])
        self.items = self.items + items

    def keep(self, rows: torch.Tensor) -> None:
        index = rows.nonzero().squeeze(-1)
        self.items = [self.items[i] for i in index.tolist()]
        if not self.items:
            self.cache = self.mask = self.positions = self.next_token = None
            return
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.next_token = self.mask[index], self.positions[index], self.next_token[index]
        # Columns no remaining row attends to (left padding of sequences that have left) are dropped.
        first = int(self.mask.any(0).nonzero()[0])
        if first:
            self.mask = self.mask[:, first:]
            trim_left(self.cache, first)

    def step(self) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        self.next_token = self._forward(self.next_token[:, None], self.mask, self.positions[:, None], self.cache)
        self.positions = self.positions + 1


def _left_pad(mask: torch.Tensor, length: int) -> torch.Tensor:
    return torch.cat([mask.new_zeros(mask.shape[0], length - mask.shape[1]), mask], dim=1)
