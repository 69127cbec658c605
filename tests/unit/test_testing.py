"""The tiny random test model: loadable, deterministic, and its tokenizer round-trips any text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from jinja2.exceptions import TemplateError
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate.testing import IM_END, IM_START, make_tiny_llama

TEXTS = [
    "What is the full name of the author born in Kuwait City?",
    "  leading spaces, trailing spaces  ",
    "tabs\tand\nnew lines\r\n",
    "Ünïcödé, 中文, emoji 🙂🚀, math ∑√π",
    "zxqvjk wordsneverseenbefore 0123456789 !!??",
    "",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            AutoTokenizer.from_pretrained(tiny_model_dir))


def test_folder_has_safetensors_and_tokenizer(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith(".bin") for n in names)


def test_architecture_and_vocab(tiny) -> None:
    model, tok = tiny
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.max_position_embeddings) == (32, 2, 4, 2, 64, 512)
    assert cfg.vocab_size == len(tok)
    assert 300 <= len(tok) <= 1000
    # Tied like SmolLM2: the output layer is the embedding matrix itself.
    assert cfg.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_special_tokens(tiny) -> None:
    model, tok = tiny
    assert tok.eos_token == IM_END and tok.bos_token == IM_START
    assert tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    # A special token in text is one token, not its spelling.
    assert tok(IM_END, add_special_tokens=False)["input_ids"] == [tok.eos_token_id]


@pytest.mark.parametrize("text", TEXTS)
def test_any_text_round_trips(tiny, text: str) -> None:
    _, tok = tiny
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert all(0 <= i < len(tok) for i in ids)
    assert tok.decode(ids) == text


def test_chat_template(tiny) -> None:
    _, tok = tiny
    turns = [{"role": "user", "content": "Who wrote it?"}]
    prompt = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWho wrote it?<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.endswith("<|im_start|>assistant\n")

    full = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *turns, {"role": "assistant", "content": "Her."}],
        tokenize=False,
    )
    assert full == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho wrote it?<|im_end|>\n"
                    "<|im_start|>assistant\nHer.<|im_end|>\n")


def test_chat_template_rejects_unknown_role(tiny) -> None:
    _, tok = tiny
    with pytest.raises(TemplateError, match="unknown chat role"):
        tok.apply_chat_template([{"role": "narrator", "content": "x"}], tokenize=False)


def test_forward_shapes(tiny) -> None:
    model, tok = tiny
    batch = tok(["a b c", "longer text here"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path: Path) -> None:
    a = make_tiny_llama(tmp_path / "a", seed=3)
    b = make_tiny_llama(tmp_path / "b", seed=3)
    c = make_tiny_llama(tmp_path / "c", seed=4)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_does_not_disturb_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_llama(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_vocab_corpus_and_size_options(tmp_path: Path) -> None:
    word = "Xylophonequartz"
    base = AutoTokenizer.from_pretrained(make_tiny_llama(tmp_path / "base"))
    out = make_tiny_llama(tmp_path / "big", vocab_corpus=[f"{word} {word}. "] * 20, hidden_size=16,
                          num_layers=1)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    # The extra corpus teaches merges, so its word takes fewer tokens than with the base vocabulary.
    assert len(tok.tokenize(word)) < len(base.tokenize(word))
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (16, 1)
    assert model.config.vocab_size == len(tok)


@pytest.mark.parametrize("kwargs", [{"hidden_size": 30}, {"hidden_size": 0}, {"num_layers": 0}])
def test_rejects_bad_sizes(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_tiny_llama(tmp_path, **kwargs)


def test_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    make_tiny_llama(tmp_path)
    assert time.perf_counter() - start < 2.0
