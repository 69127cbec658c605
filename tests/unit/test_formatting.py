"""Prompt formatting and label masking, on the tiny model's real ChatML chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from obliviate.data.collate import collate_examples, pad_sequences
from obliviate.data.formatting import IGNORE_INDEX, PromptFormatter
from obliviate.errors import ConfigError

Q, A = "Who wrote Hamlet?", "William Shakespeare wrote it."


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _answer_tokens(enc):
    return [t for t in enc.labels if t != IGNORE_INDEX]


def test_chat_template_masks_exactly_the_prompt(tok):
    f = PromptFormatter(tok, "chat")
    enc = f.encode(Q, A)
    prompt = tok.apply_chat_template([{"role": "user", "content": Q}], tokenize=False, add_generation_prompt=True)
    assert tok.decode(enc.input_ids[: enc.prompt_length]) == prompt
    assert tok.decode(_answer_tokens(enc)) == A + "<|im_end|>"
    # Every prompt position is masked, every answer position is labelled with its own token.
    assert enc.labels[: enc.prompt_length] == [IGNORE_INDEX] * enc.prompt_length
    assert enc.labels[enc.prompt_length:] == enc.input_ids[enc.prompt_length:]
    assert enc.full_labels == enc.input_ids
    # The generation prompt is exactly the training prompt.
    assert f.encode_prompt(Q) == enc.input_ids[: enc.prompt_length]


def test_system_prompt_goes_into_the_prompt_only(tok):
    enc = PromptFormatter(tok, "chat", system_prompt="Be brief.").encode(Q, A)
    assert "Be brief." in tok.decode(enc.input_ids[: enc.prompt_length])
    assert tok.decode(_answer_tokens(enc)) == A + "<|im_end|>"


@pytest.mark.parametrize("template, prompt, answer", [
    ("llama2", f"[INST] {Q} [/INST]", f" {A}<|im_end|>"),
    ("plain", f"Question: {Q}\nAnswer:", f" {A}<|im_end|>"),
    ("llama3", f"<|start_header_id|>user<|end_header_id|>\n\n{Q}<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n", f"{A}<|eot_id|>"),
])
def test_presets(tok, template, prompt, answer):
    enc = PromptFormatter(tok, template).encode(Q, A)
    assert tok.decode(enc.input_ids[: enc.prompt_length]) == prompt
    assert tok.decode(_answer_tokens(enc)) == answer


def test_truncation_keeps_the_prompt_and_cuts_the_answer(tok):
    full = PromptFormatter(tok, "chat").encode(Q, A)
    cut = PromptFormatter(tok, "chat", max_length=full.prompt_length + 3).encode(Q, A)
    assert len(cut.input_ids) == full.prompt_length + 3
    assert len(_answer_tokens(cut)) == 3


def test_prompt_longer_than_max_length_is_a_clear_error(tok):
    with pytest.raises(ConfigError, match="max_length"):
        PromptFormatter(tok, "chat", max_length=4).encode(Q, A)


def test_unknown_template_lists_the_valid_ones(tok):
    with pytest.raises(ConfigError, match="chat, llama2, llama3, plain"):
        PromptFormatter(tok, "alpaca")


def test_chat_needs_a_chat_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.raises(ConfigError, match="template=plain"):
        PromptFormatter(tok, "chat")


def test_dynamic_padding_pads_to_the_longest_in_the_batch(tok):
    f = PromptFormatter(tok, "chat")
    short, long = f.encode("Hi?", "Yes."), f.encode(Q, A + " And more words here.")
    batch = collate_examples([{"input_ids": short.input_ids, "labels": short.labels},
                              {"input_ids": long.input_ids, "labels": long.labels}], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(long.input_ids))
    n = len(short.input_ids)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert batch["labels"][0, n:].eq(IGNORE_INDEX).all()
    assert batch["input_ids"][0, n:].eq(tok.pad_token_id).all()


def test_left_padding_for_generation():
    assert pad_sequences([[1, 2], [3]], 0, side="left").tolist() == [[1, 2], [0, 3]]
