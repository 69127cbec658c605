"""One forward pass over many sequences: the chunked output layer and packed rows give the plain model's numbers.

Tiny random models of several architectures (built in-process from configs, float64 so that every comparison can
be tight) check that the decoder's hidden states through the output layer reproduce each model's own logits —
including a Gemma 2 soft cap, Cohere's logit scale and Granite's logit scaling — and that sequences packed end to
end (per-sequence position ids, block-diagonal attention) score and train exactly as padded ones.
"""

from __future__ import annotations

import logging

import pytest
import torch
import transformers as T

from obliviate.forward import forward_parts, inspect_model
from obliviate.likelihood import sequence_logprobs
from obliviate.objectives import HeadLogits, OutputHead, sequence_logprob, token_logprobs

pytestmark = pytest.mark.integration

SMALL = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, max_position_embeddings=64)
ARCHS = {
    "llama-tied": lambda: T.LlamaConfig(**SMALL, tie_word_embeddings=True),
    "llama-untied": lambda: T.LlamaConfig(**SMALL, tie_word_embeddings=False),
    "qwen2": lambda: T.Qwen2Config(**SMALL, tie_word_embeddings=False),
    "gemma2-softcap": lambda: T.Gemma2Config(**SMALL, head_dim=8, final_logit_softcapping=3.0, sliding_window=16),
    "cohere-logit-scale": lambda: T.CohereConfig(**SMALL, logit_scale=0.25),
    "granite-logits-scaling": lambda: T.GraniteConfig(**SMALL, logits_scaling=4.0),
    "gpt2": lambda: T.GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=64),
}


def build(arch: str, attention: str | None = None, seed: int = 0):
    """``attention`` None: the architecture's default (Gemma 2 runs eager, its attention has a soft cap too)."""
    kwargs = {} if attention is None else {"attn_implementation": attention}
    model = T.AutoModelForCausalLM.from_config(ARCHS[arch](), dtype=torch.float64, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():              # larger than the initialiser's: logits that differ a lot
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return model.eval()


def batch(lengths, *, seed: int = 1, prompt: int = 2):
    """Right-padded sequences of the given lengths; the first ``prompt`` tokens of each are unlabelled."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    att = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 64, (n,), generator=g)
        att[i, :n] = 1
        labels[i, prompt:n] = ids[i, prompt:n]
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


def tolerance(model) -> float:
    """1e-10, except where eager attention takes its softmax in float32 even for a float64 model (transformers'
    eager kernels do): then rounding at 1e-7 shows wherever the masks or lengths differ (relative to a gradient's
    largest entry)."""
    return 1e-10 if model.config._attn_implementation == "sdpa" else 1e-6


def alone_logprobs(model, part) -> list[torch.Tensor]:
    """Each sequence on its own, unpadded, from the model's own logits: the independent reference."""
    out = []
    for i, n in enumerate(part["attention_mask"].sum(1).tolist()):
        logits = model(input_ids=part["input_ids"][i:i + 1, :n], use_cache=False).logits
        out.append(token_logprobs(logits, part["labels"][i:i + 1, :n])[0][0])
    return out


@pytest.mark.parametrize("arch", list(ARCHS))
def test_decoder_and_output_layer_reproduce_the_logits(arch):
    """The probe accepts every architecture here, with its own logit transform, and scores through the chunked
    output layer (packed and padded) equal each sequence scored alone from the model's logits (1e-10; eager
    attention: see ``tolerance``)."""
    model = build(arch)
    found = inspect_model(model)
    assert found.split is not None, found.split_problem
    assert found.packs, found.pack_problem
    parts = {"a": batch([9, 4, 12], seed=2), "b": batch([7, 11], seed=3)}
    expected = {p: alone_logprobs(model, parts[p]) for p in parts}
    with torch.no_grad():
        for pack in (False, True):
            out = forward_parts(model, parts, ("a", "b"), split=found.split, pad_token_id=0, pack=pack, chunk_size=3,
                                pack_length=16)
            for p in parts:
                assert isinstance(out[p], HeadLogits)
                logp, _ = token_logprobs(out[p], parts[p]["labels"])
                for row, ref in enumerate(expected[p]):
                    torch.testing.assert_close(logp[row, :len(ref)], ref, rtol=0, atol=tolerance(model))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "materialised"])
def test_packed_equals_padded_in_value_and_gradient(attention, chunked):
    """Same loss and the same gradient for every parameter (1e-10; eager: see ``tolerance``), packed into rows of
    at most 16 tokens or padded to the longest, for both attention implementations that take a custom mask."""
    model = build("llama-tied", attention).train()
    found = inspect_model(model)
    split = found.split if chunked else None
    parts = {"forget": batch([9, 4, 12], seed=4), "retain": batch([7, 11, 3, 8], seed=5)}

    def run(pack):
        model.zero_grad(set_to_none=True)
        out = forward_parts(model, parts, ("forget", "retain"), split=split, pad_token_id=0, pack=pack, chunk_size=5,
                            pack_length=16)
        loss = sum(-sequence_logprob(out[p], parts[p]["labels"]).sum() for p in parts)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    padded_loss, padded_grads = run(False)
    packed_loss, packed_grads = run(True)
    torch.testing.assert_close(packed_loss, padded_loss, rtol=0, atol=tolerance(model))
    for name, grad in padded_grads.items():
        scale = max(1.0, float(grad.abs().max()))
        torch.testing.assert_close(packed_grads[name], grad, rtol=0, atol=tolerance(model) * scale, msg=name)
    assert max(float(g.abs().max()) for g in padded_grads.values()) > 1e-3


def test_packed_rows_really_share_rows():
    """The packed layout holds several sequences per row (the equality above is not a one-per-row accident)."""
    from obliviate.forward import _layout

    parts = {"forget": batch([9, 4, 12]), "retain": batch([7, 11, 3, 8])}
    packed = _layout(parts, ("forget", "retain"), pad_token_id=0, pack=True, pack_length=16)
    padded = _layout(parts, ("forget", "retain"), pad_token_id=0, pack=False, pack_length=16)
    # 54 tokens in 7 sequences: padded 7 rows × 12; packed into rows of at most 16 tokens: 4 rows × 16.
    assert tuple(padded.input_ids.shape) == (7, 12) and tuple(packed.input_ids.shape) == (4, 16)
    assert packed.position_ids is not None and packed.attention_mask is None
    # Sequences of one length have no padding to remove: packing them would only lengthen attention rows.
    same = _layout({"x": batch([6, 6, 6])}, ("x",), pad_token_id=0, pack=True, pack_length=16)
    assert tuple(same.input_ids.shape) == (3, 6) and same.position_ids is None


def test_sequence_logprobs_equals_materialised_logits():
    """Evaluation's scorer through the chunked output layer equals the sums from the model's full logits."""
    model = build("gemma2-softcap")
    part = batch([5, 9, 13, 6], seed=6)
    examples = [{"input_ids": part["input_ids"][i, :n].tolist(), "labels": part["labels"][i, :n].tolist()}
                for i, n in enumerate(part["attention_mask"].sum(1).tolist())]
    sums, counts = sequence_logprobs(model, examples, pad_token_id=0, batch_size=3, chunk_size=2)
    expected = [float(lp.detach().sum()) for lp in alone_logprobs(model, part)]
    assert sums == pytest.approx(expected, abs=1e-10)
    assert counts == [n - 2 for n in (5, 9, 13, 6)]


def test_an_unmapped_output_transform_falls_back_to_materialised_logits(caplog):
    """A Llama whose config claims a soft cap its forward does not apply: the chunked head would compute other
    logits than the model, so the probe refuses the split and says why; the scorer still gives the model's
    numbers (from its materialised logits)."""
    model = build("llama-untied")
    model.config.final_logit_softcapping = 2.0
    found = inspect_model(model)
    assert found.split is None and "does not give its logits" in found.split_problem
    part = batch([6, 10], seed=7)
    examples = [{"input_ids": part["input_ids"][i, :n].tolist(), "labels": part["labels"][i, :n].tolist()}
                for i, n in enumerate(part["attention_mask"].sum(1).tolist())]
    sums, _ = sequence_logprobs(model, examples, pad_token_id=0)
    assert sums == pytest.approx([float(lp.detach().sum()) for lp in alone_logprobs(model, part)], abs=1e-10)


def test_lora_on_the_output_layer():
    """LoRA adapters on lm_head itself: the policy's head is the adapted layer (run per chunk through autograd),
    the reference's is its base layer; both reproduce the model's logits, and the adapter matrices get the
    materialised path's gradients."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build("llama-untied"), LoraConfig(r=2, target_modules=["lm_head", "q_proj"],
                                                             init_lora_weights=False))
    found = inspect_model(model)
    assert found.split is not None and found.split.head().module is not None
    with model.disable_adapter():
        ref_found = inspect_model(model, reference=True)
        assert ref_found.split is not None and ref_found.split.head().weight is not None
    part = batch([8, 5, 10], seed=8)
    model.train()

    def grads(split):
        model.zero_grad(set_to_none=True)
        out = forward_parts(model, {"x": part}, ("x",), split=split, pad_token_id=0, pack=True, chunk_size=4)["x"]
        loss = -sequence_logprob(out, part["labels"]).sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full_loss, full = grads(None)
    loss, chunked = grads(found.split)
    torch.testing.assert_close(loss, full_loss, rtol=0, atol=1e-10)
    assert any("lm_head.lora_A" in n for n in full) and full.keys() == chunked.keys()
    for name in full:
        torch.testing.assert_close(chunked[name], full[name], rtol=0, atol=1e-10, msg=name)


def test_output_head_needs_one_source():
    with pytest.raises(ValueError, match="either a weight matrix or a module"):
        OutputHead()
    with pytest.raises(ValueError, match="vocab_size"):
        OutputHead(module=torch.nn.Identity())


def test_fallback_is_logged_once_by_the_trainer(caplog, tiny_model_dir, tmp_path):
    """The trainer says in one line why it runs materialised logits."""
    from obliviate.training.trainer import TrainingObjective, UnlearningTrainer
    from transformers import TrainingArguments

    model = T.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.logit_scale = 3.0           # claimed, not applied by Llama's forward
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with caplog.at_level(logging.INFO, logger="obliviate.training.trainer"):
        UnlearningTrainer(model=model, args=args, objective=TrainingObjective(forget=None, regularizer="gd"))
    lines = [r.getMessage() for r in caplog.records if "materialised logits" in r.getMessage()]
    assert len(lines) == 1 and "does not give its logits" in lines[0]
