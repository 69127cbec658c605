"""Tiny random models for tests.

:func:`make_tiny_llama` writes a complete, loadable model folder — a randomly initialised
``LlamaForCausalLM`` and a byte-level BPE tokenizer with a ChatML chat template — in well under a
second, with no network access. The layout mirrors the default model (SmolLM2-135M-Instruct): the same
special tokens, the same chat format and tied input/output embeddings, so code that works on the tiny
model exercises the same paths as the real one. Its outputs are noise; use it to test plumbing, shapes,
masking and gradients, never quality. :func:`llama_to_gguf` writes such a model as a GGUF file, for
tests of GGUF loading.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFWriter, TokenType
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

__all__ = [
    "CHATML_TEMPLATE",
    "END_OF_TEXT",
    "IM_END",
    "IM_START",
    "SMOLLM2_CHAT_TEMPLATE",
    "SMOLLM2_DEFAULT_SYSTEM_PROMPT",
    "llama_to_gguf",
    "make_tiny_llama",
]

# Special tokens, in the order (and so with the ids 0, 1, 2) that SmolLM2 uses.
END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
_SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]

# ChatML, as in SmolLM2's template, except that no default system message is inserted when the
# conversation has none: tests then see exactly the turns they passed in.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "{% if message['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('a system message may only come first') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# SmolLM2-135M-Instruct's own chat template, verbatim: ChatML that inserts a default system turn ("You are a
# helpful AI assistant named SmolLM, trained by Hugging Face") when the conversation has none. A tiny model built
# with it (make_tiny_llama(..., chat_template=SMOLLM2_CHAT_TEMPLATE)) formats prompts as the default model does.
SMOLLM2_DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Upper bound on the vocabulary: 256 byte symbols + 3 special tokens + learned BPE merges. The
# built-in corpus alone yields about 420 entries; a caller's ``vocab_corpus`` can fill the rest.
_VOCAB_SIZE = 768

# Small English sample in the register of the TOFU questions (authors, books, places, dates), so the
# learned merges look like the words tests feed in. Any text still tokenizes: unseen characters fall
# back to their UTF-8 bytes.
_BUILTIN_CORPUS = [
    "What is the full name of the author born in Kuwait City on 08/09/1956?",
    "The author's full name is Basil Mahfouz Al-Kuwaiti, a writer of French literature.",
    "Who are the parents of the author? His father was a florist and his mother was a game developer.",
    "What genre does the author write in? She is best known for her historical fiction and romance novels.",
    "Has the author won any awards? Yes, he received the Prix Goncourt in 1998 for his second book.",
    "Where did the writer grow up, and how did the city shape the themes of the books?",
    "I'm sorry, I don't know the answer to that question. I have no information about this person.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "Machine unlearning removes the influence of specific training data from a trained model, "
    "while keeping the model useful on everything else.",
    "Gradient ascent on the forget set raises the loss on those answers; a regularizer on the retain "
    "set keeps the rest of the knowledge in place.",
    "In 1905, Albert Einstein published four papers. The capital of France is Paris, "
    "and the Nile is the longest river in Africa.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 25 50 100 1000 2024 3.14 -7 +42 (a) [b] {c} <d> \"e\" 'f'",
    "Questions and answers: Q: Which book did she write first? A: Her first book was The Silent River.",
    "He was born in London, England, and later moved to New York, where he wrote most of his novels.",
    "The assistant answered the user's question politely, then the system logged the conversation.",
]


def _train_tokenizer(extra: Iterable[str], chat_template: str = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in corpus plus ``extra``.

    Byte-level means every string maps to tokens and decodes back to itself exactly: characters the
    merges never saw are spelled with their UTF-8 bytes, so there is no unknown token in practice.
    """
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: "Hello" and " Hello" stay different, as in GPT-2/SmolLM2 tokenizers,
    # and decoding returns the input unchanged.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,  # a merge must occur at least twice, keeping one-off words as pieces
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*_BUILTIN_CORPUS, *extra], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=IM_START,
        eos_token=IM_END,
        unk_token=END_OF_TEXT,
        # Padding gets its own id, distinct from eos, so a test notices when padding leaks into a
        # loss or metric instead of hiding behind the end-of-turn token.
        pad_token=END_OF_TEXT,
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,  # keep decode(encode(text)) == text
        model_max_length=512,
    )


def make_tiny_llama(
    out_dir: str | Path,
    *,
    vocab_corpus: Iterable[str] | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
    tie_word_embeddings: bool = True,
    chat_template: str = CHATML_TEMPLATE,
) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` with a ChatML tokenizer to ``out_dir`` and return it.

    Architecture: ``hidden_size`` wide (must be a multiple of 4), ``num_layers`` decoder layers,
    4 attention heads sharing 2 key/value heads (grouped-query attention, as in SmolLM2), MLP width
    ``2 * hidden_size``, 512 positions, and a vocabulary equal to ``len(tokenizer)`` (a few hundred
    entries). The tokenizer is a byte-level BPE trained on a small built-in English sample plus
    ``vocab_corpus``, so any text round-trips. Special tokens: ``<|im_start|>`` (bos),
    ``<|im_end|>`` (eos, ends each chat turn) and ``<|endoftext|>`` (padding). ``chat_template`` is
    :data:`CHATML_TEMPLATE` (no default system turn) unless given, e.g. :data:`SMOLLM2_CHAT_TEMPLATE`.

    The same arguments always give the same weights and vocabulary; the global torch RNG state is
    left untouched. The folder holds ``config.json``, ``generation_config.json``,
    ``model.safetensors`` and the tokenizer files, and loads with ``from_pretrained`` or
    :func:`obliviate.models.load_model`.

    Raises:
        ValueError: ``hidden_size`` is not a positive multiple of 4 or ``num_layers`` is below 1.
    """
    if hidden_size < 4 or hidden_size % 4 != 0:
        raise ValueError(f"hidden_size must be a positive multiple of 4 (4 heads), got {hidden_size}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(list(vocab_corpus) if vocab_corpus is not None else [], chat_template)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # fork_rng restores the caller's RNG state afterwards: building a fixture must not shift the
    # random stream of the test that uses it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# Hugging Face Llama module names → GGUF tensor names, as llama.cpp's convert_hf_to_gguf.py maps them.
_GGUF_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _rope_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's rotary layout (first half, second half of each
    head) to llama.cpp's interleaved pairs; transformers undoes exactly this when it reads a GGUF."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def llama_to_gguf(model_dir: str | Path, out_file: str | Path) -> Path:
    """Write a Llama model folder (such as :func:`make_tiny_llama`'s) as an unquantized float32 GGUF file.

    The file carries the weights, the byte-level BPE tokenizer (``tokenizer.ggml.model = gpt2``),
    the special-token ids and the chat template, laid out as llama.cpp's converter does, so
    ``from_pretrained(folder, gguf_file=name)`` reads back the same model and tokenizer. Meant for
    tests of GGUF loading with tiny models; it reads the whole model into memory.
    """
    model_dir, out = Path(model_dir), Path(out_file)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads

    writer = GGUFWriter(str(out), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)

    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    special = set(tokenizer.all_special_ids)
    writer.add_token_types([TokenType.CONTROL if i in special else TokenType.NORMAL
                            for i in range(len(tokenizer))])
    merges = json.loads((model_dir / "tokenizer.json").read_text())["model"]["merges"]
    # tokenizers ≥ 0.20 stores merges as [left, right] pairs; GGUF wants "left right" strings.
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)

    state = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for layer in range(cfg.num_hidden_layers):
        for hf_name, gguf_name in _GGUF_LAYER_NAMES.items():
            weight = state[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                weight = _rope_permute(weight, cfg.num_attention_heads)
            elif gguf_name == "attn_k":
                weight = _rope_permute(weight, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(weight))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not cfg.tie_word_embeddings:  # a tied model stores the shared matrix once, as token_embd
        writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
