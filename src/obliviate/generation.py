"""Batched greedy generation: the one place that generates answers.

Prompts are formatted by the same :class:`PromptFormatter` used in training, sorted by length, left-padded
(so every prompt ends where generation starts) and decoded greedily with the KV cache on. Answers come back in
input order, without the prompt and without special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from obliviate.data.collate import pad_sequences
from obliviate.data.formatting import PromptFormatter


@torch.no_grad()
def generate_answers(model, formatter: PromptFormatter, questions: Sequence[str], *, max_new_tokens: int = 64,
                     batch_size: int = 16, device: torch.device | str | None = None) -> list[str]:
    tokenizer = formatter.tokenizer
    if device is None:
        device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [formatter.encode_prompt(q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    # Stop at the end-of-sequence token and, for chat formats, at the end-of-turn token if it differs.
    stop_ids = {tokenizer.eos_token_id}
    for marker in ("<|im_end|>", "<|eot_id|>", "</s>"):
        tid = tokenizer.convert_tokens_to_ids(marker) if marker in tokenizer.get_vocab() else None
        if tid is not None:
            stop_ids.add(tid)
    stop_ids.discard(None)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            ids = pad_sequences([prompts[i] for i in idx], pad_id, side="left")
            mask = pad_sequences([[1] * len(prompts[i]) for i in idx], 0, side="left")
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=sorted(stop_ids),
                                 pad_token_id=pad_id, use_cache=True)
            new = out[:, ids.shape[1]:]
            for row, i in enumerate(idx):
                answers[i] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return answers
