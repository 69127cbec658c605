"""Prompt formatting and label masking, on the tiny model's real ChatML chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from obliviate.data.collate import collate_examples, pad_sequences
from obliviate.data.formatting import (
    EXAMPLE_QUESTION,
    IGNORE_INDEX,
    DefaultSystemTurn,
    PromptFormatter,
    default_system_turn,
)
from obliviate.errors import ConfigError
from obliviate.testing import SMOLLM2_CHAT_TEMPLATE, SMOLLM2_DEFAULT_SYSTEM_PROMPT

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


# -- no hidden system prompt -------------------------------------------------------------------------------------

SMOLLM_TURN = f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"


@pytest.fixture(scope="module")
def smollm_tok(tiny_model_dir):
    """The tiny tokenizer with SmolLM2's own chat template, which inserts a default system turn."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = SMOLLM2_CHAT_TEMPLATE
    return tok


def test_the_templates_default_system_turn_is_found(smollm_tok, tok):
    """Rendered as the template writes it, a user message alone gets SmolLM's system turn in front."""
    rendered = smollm_tok.apply_chat_template([{"role": "user", "content": Q}], tokenize=False,
                                              add_generation_prompt=True)
    assert rendered.startswith(SMOLLM_TURN)  # what the default model saw before
    assert default_system_turn(smollm_tok) == DefaultSystemTurn(lead="", turn=SMOLLM_TURN,
                                                                 content=SMOLLM2_DEFAULT_SYSTEM_PROMPT)
    assert default_system_turn(tok) is None  # the plain ChatML template inserts nothing


def test_no_system_prompt_means_no_system_turn(smollm_tok, tok):
    """Prompt and answer tokens with SmolLM2's template equal those of ChatML without a default, token for token:
    the ~20-token default turn is neither trained on nor evaluated with."""
    f = PromptFormatter(smollm_tok, "chat")
    plain = PromptFormatter(tok, "chat")
    assert f.prompt_text(Q) == f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n" == plain.prompt_text(Q)
    assert f.answer_text(Q, A) == f"{A}<|im_end|>"
    enc = f.encode(Q, A)
    assert enc == plain.encode(Q, A)
    assert "SmolLM" not in smollm_tok.decode(enc.input_ids) and "system" not in smollm_tok.decode(enc.input_ids)
    assert f.encode_prompt(Q) == enc.input_ids[: enc.prompt_length]
    # mask=false sees the whole sequence: still no system tokens in it.
    assert smollm_tok.decode(enc.full_labels).startswith("<|im_start|>user\n")


def test_an_explicit_system_prompt_replaces_the_default(smollm_tok):
    f = PromptFormatter(smollm_tok, "chat", system_prompt="Answer in one sentence.")
    prompt = f.prompt_text(Q)
    assert prompt.startswith("<|im_start|>system\nAnswer in one sentence.<|im_end|>\n<|im_start|>user\n")
    assert "SmolLM" not in prompt
    # The template's own default is an explicit setting too: the prompt the default model had before.
    kept = PromptFormatter(smollm_tok, "chat", system_prompt=SMOLLM2_DEFAULT_SYSTEM_PROMPT)
    assert kept.prompt_text(Q) == smollm_tok.apply_chat_template(
        [{"role": "user", "content": Q}], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("template", ["llama2", "llama3", "plain"])
def test_presets_have_no_system_turn_by_default(smollm_tok, template):
    prompt = PromptFormatter(smollm_tok, template).prompt_text(Q)
    assert "SmolLM" not in prompt and "<<SYS>>" not in prompt and "system" not in prompt


# Llama-3.1's template, shortened: BOS, then a system turn with a date header that it writes whether or not the
# messages have a system message.
LLAMA31_LIKE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def test_a_bos_written_before_the_default_turn_is_kept(tiny_model_dir):
    """A template that writes BOS, then an (empty-content) system turn: the turn goes, the BOS stays."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = LLAMA31_LIKE
    tok.bos_token = "<|endoftext|>"  # a BOS that does not open every turn, as Llama-3's <|begin_of_text|>
    found = default_system_turn(tok)
    assert found == DefaultSystemTurn(
        lead="<|endoftext|>", content="",
        turn="<|start_header_id|>system<|end_header_id|>\n\nToday Date: 26 Jul 2024\n\n<|eot_id|>")
    f = PromptFormatter(tok, "chat")
    assert f.prompt_text(Q) == (f"<|endoftext|><|start_header_id|>user<|end_header_id|>\n\n{Q}<|eot_id|>"
                                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert f.answer_text(Q, A) == f"{A}<|eot_id|>"


def test_describe_records_the_prompt_format(smollm_tok, tok):
    described = PromptFormatter(smollm_tok, "chat").describe()
    assert described == {"template": "chat", "system_prompt": None,
                         "template_default_system_prompt": SMOLLM2_DEFAULT_SYSTEM_PROMPT,
                         "example": f"<|im_start|>user\n{EXAMPLE_QUESTION}<|im_end|>\n<|im_start|>assistant\n"}
    assert PromptFormatter(tok, "llama2", system_prompt="Be brief.").describe() == {
        "template": "llama2", "system_prompt": "Be brief.", "template_default_system_prompt": None,
        "example": f"[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n{EXAMPLE_QUESTION} [/INST]"}
