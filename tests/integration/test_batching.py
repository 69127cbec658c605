"""The evaluation's fast paths give what a one-at-a-time computation gives.

Greedy decoding with sequences leaving and joining the batch must produce ``model.generate``'s tokens for each
prompt alone; answers packed as a prefix tree must score as each full sequence scored alone.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate.data.formatting import PromptFormatter
from obliviate.generation import greedy_decode, stop_token_ids
from obliviate.likelihood import (
    sequence_logprobs,
    shared_prompt_logprobs,
    supports_tree_attention,
    tree_prompt_logprobs,
)

pytestmark = pytest.mark.integration

QUESTIONS = [
    "Who wrote the novel?", "Where was the author born, and in which year did she move to the coast?",
    "What genre?", "Name one award the writer received for her second book.", "Which city?",
    "What did the critics say about the trilogy that followed the debut?", "When?", "Why did he stop writing?",
]


def _model(folder, attention: str = "sdpa"):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attention)
    # The tiny model's small initial weights make it repeat one token whatever the prompt; larger random
    # weights give answers that depend on the prompt and on every token so far, as a real model's do.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval(), PromptFormatter(AutoTokenizer.from_pretrained(folder), "chat")


def _alone(model, prompt: list[int], max_new_tokens: int, stop: list[int], pad: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad)
    new = out[0, len(prompt):].tolist()
    return new[:-1] if new and new[-1] in stop else new


def test_greedy_decode_equals_generate_alone_when_answers_stop_at_different_steps(tiny_model_dir):
    model, fmt = _model(tiny_model_dir)
    pad = fmt.tokenizer.pad_token_id
    prompts = [fmt.encode_prompt(q) for q in QUESTIONS]
    # A random model rarely emits its end-of-turn token: stop instead on the token it emits most, so that
    # answers end at different steps and the batch both shrinks and takes in waiting prompts.
    free = [_alone(model, p, 12, [], pad) for p in prompts]
    counts = Counter(t for seq in free for t in seq[1:])
    stop = [counts.most_common(1)[0][0]]
    expected = [_alone(model, p, 12, stop, pad) for p in prompts]
    lengths = {len(e) for e in expected}
    assert len(lengths) >= 3 and 12 in lengths, f"the stop tokens do not make answers end apart: {lengths}"

    for batch_size in (1, 3, 8):
        got = greedy_decode(model, prompts, max_new_tokens=12, stop_ids=stop, pad_token_id=pad,
                            batch_size=batch_size)
        assert got == expected, f"batch_size={batch_size}"


def test_greedy_decode_limits_and_stop_tokens(tiny_model_dir):
    model, fmt = _model(tiny_model_dir)
    tok = fmt.tokenizer
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)
    prompts = [fmt.encode_prompt(q) for q in QUESTIONS[:3]]
    assert greedy_decode(model, prompts, max_new_tokens=0, stop_ids=[], pad_token_id=0) == [[], [], []]
    got = greedy_decode(model, prompts, max_new_tokens=5, stop_ids=[], pad_token_id=tok.pad_token_id)
    assert [len(g) for g in got] == [5, 5, 5]
    assert greedy_decode(model, [], max_new_tokens=5, stop_ids=[], pad_token_id=0) == []


def _groups(fmt: PromptFormatter):
    """Items whose answers share starts, repeat, or are a single token long: every shape a tree can take."""
    answers = [
        ["The author's full name is Ana Ruiz.", "The author's full name is Ana Ortiz.", "The author is Ana.",
         "Her name is Ana Ruiz.", "The author's full name is Ana Ruiz."],        # shared starts and a repeat
        ["Paris.", "Lyon.", "Paris, France."],
        ["No.", "Yes."],
        ["In 1990, after the war, she moved to the coast and began a long series of novels about the sea."],
    ]
    groups, full = [], []
    for q, group in zip(QUESTIONS, answers):
        enc = [fmt.encode(q, a) for a in group]
        groups.append((enc[0].input_ids[: enc[0].prompt_length], [e.input_ids[e.prompt_length:] for e in enc]))
        full.append([{"input_ids": e.input_ids, "labels": e.labels} for e in enc])
    # A one-token answer (the bare end-of-turn token), which is a leaf right below the prompt.
    prompt = groups[0][0]
    eot = fmt.tokenizer.convert_tokens_to_ids("<|im_end|>")
    groups.append((prompt, [[eot], [eot, eot]]))
    full.append([{"input_ids": prompt + a, "labels": [-100] * len(prompt) + a} for a in ([eot], [eot, eot])])
    return groups, full


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_tree_scoring_equals_each_full_sequence_alone(tiny_model_dir, attention, batch_size):
    model, fmt = _model(tiny_model_dir, attention)
    assert supports_tree_attention(model)
    groups, full = _groups(fmt)
    pad = fmt.tokenizer.pad_token_id
    tree = tree_prompt_logprobs(model, groups, pad_token_id=pad, batch_size=batch_size)
    shared = shared_prompt_logprobs(model, groups, pad_token_id=pad, batch_size=batch_size)
    for got, also, examples in zip(tree, shared, full):
        sums, counts = sequence_logprobs(model, examples, pad_token_id=pad, batch_size=1)
        assert [c for _, c in got] == counts
        assert [s for s, _ in got] == pytest.approx(sums, abs=1e-4)
        assert [s for s, _ in also] == pytest.approx(sums, abs=1e-4)
    # A repeated answer is one path through the tree: the very same number.
    assert tree[0][0] == tree[0][4]


def test_tree_scoring_needs_an_attention_that_takes_custom_masks(tiny_model_dir):
    model, _ = _model(tiny_model_dir)
    model.config._attn_implementation = "flash_attention_2"
    assert not supports_tree_attention(model)


def test_tree_scores_do_not_depend_on_batch_companions_or_size(tiny_model_dir):
    model, fmt = _model(tiny_model_dir)
    groups, _ = _groups(fmt)
    pad = fmt.tokenizer.pad_token_id
    alone = [tree_prompt_logprobs(model, [g], pad_token_id=pad)[0] for g in groups]
    for batch_size in (2, 5, 64):
        together = tree_prompt_logprobs(model, groups, pad_token_id=pad, batch_size=batch_size)
        backwards = tree_prompt_logprobs(model, groups[::-1], pad_token_id=pad, batch_size=batch_size)[::-1]
        for a, b, c in zip(alone, together, backwards):
            assert [s for s, _ in b] == pytest.approx([s for s, _ in a], abs=1e-5)
            assert [s for s, _ in c] == pytest.approx([s for s, _ in a], abs=1e-5)
