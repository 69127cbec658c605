"""Packed rows attend one sequence at a time (obliviate.attention): same values and gradients as transformers'
masked ``sdpa``, taken only where the mask is exactly the rows' block-diagonal causal mask."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import obliviate.attention as A
from obliviate.forward import forward_parts, inspect_model
from obliviate.objectives import sequence_logprob


class _Attn(torch.nn.Module):
    """What the attention function reads from its module: the key/value grouping and causality."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _inputs(lengths_per_row, *, heads=4, kv_heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows, width = len(lengths_per_row), sum(lengths_per_row[0])
    assert all(sum(r) == width for r in lengths_per_row)
    q = torch.randn(rows, heads, width, dim, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(rows, kv_heads, width, dim, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(rows, kv_heads, width, dim, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.stack([torch.cat([torch.arange(n) for n in r]) for r in lengths_per_row])
    seg = torch.stack([torch.repeat_interleave(torch.arange(len(r)), torch.tensor(r)) for r in lengths_per_row])
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]
    return q, k, v, pos, mask


def _count_fallbacks(monkeypatch) -> list:
    """A list that gets one entry per call the module hands to transformers' masked sdpa."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return sdpa_attention_forward(*args, **kwargs)

    monkeypatch.setattr(A, "sdpa_attention_forward", counted)
    return calls


def _run(fn, q, k, v, mask, pos, groups):
    for t in (q, k, v):
        t.grad = None
    out, _ = fn(_Attn(groups), q, k, v, mask, scaling=0.3, position_ids=pos)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), [t.grad.clone() for t in (q, k, v)]


def test_per_sequence_attention_equals_the_masked_kernel(monkeypatch):
    """Two rows of several sequences each (one of length 1), grouped keys: output and the gradients of query, key
    and value equal transformers' sdpa with the block-diagonal mask (float64, 1e-12), and the masked kernel is
    not called on the way."""
    q, k, v, pos, mask = _inputs([[5, 1, 7, 3], [4, 8, 4]])
    expected, expected_grads = _run(sdpa_attention_forward, q, k, v, mask, pos, 2)
    calls = _count_fallbacks(monkeypatch)
    got, grads = _run(A.packed_sdpa_attention, q, k, v, mask, pos, 2)
    assert calls == []
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


def test_any_other_mask_goes_to_the_masked_kernel(monkeypatch):
    """A sliding window inside the sequences, padding, or no position ids: the call goes to transformers' sdpa with
    its mask (same result as calling it), never the per-sequence path."""
    q, k, v, pos, mask = _inputs([[6, 6], [12]])
    window = mask & (torch.arange(12)[:, None] - torch.arange(12)[None, :] < 3)
    padded = mask.clone()
    padded[1, :, :, 10:] = False
    calls = _count_fallbacks(monkeypatch)
    for m, p in ((window, pos), (padded, pos), (mask, None)):
        got, _ = A.packed_sdpa_attention(_Attn(2), q, k, v, m, scaling=0.3, position_ids=p)
        expected, _ = sdpa_attention_forward(_Attn(2), q, k, v, m, scaling=0.3, position_ids=p)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert len(calls) == 3


def _gqa_llama(attention: str = "sdpa"):
    config = T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return T.AutoModelForCausalLM.from_config(config, dtype=torch.float64, attn_implementation=attention)


def _parts():
    g = torch.Generator().manual_seed(3)
    out = {}
    for name, lengths in (("forget", [9, 4, 12]), ("retain", [7, 11, 3])):
        ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, n in enumerate(lengths):
            ids[i, :n] = torch.randint(1, 64, (n,), generator=g)
            att[i, :n] = 1
        labels = torch.where(att.bool(), ids, torch.full_like(ids, -100))
        labels[:, :2] = -100
        out[name] = {"input_ids": ids, "attention_mask": att, "labels": labels}
    return out


def test_a_packed_training_forward_takes_the_per_sequence_path(monkeypatch):
    """forward_parts with packing runs every layer's attention per sequence (the masked kernel is not called), the
    model's own implementation is back to sdpa afterwards, and loss and gradients equal the padded layout
    (float64, 1e-10)."""
    model = _gqa_llama().train()
    split = inspect_model(model).split
    parts = _parts()
    calls, found = _count_fallbacks(monkeypatch), []
    segments = A._block_segments
    monkeypatch.setattr(A, "_block_segments", lambda *a: found.append(segments(*a)) or found[-1])

    def step(pack):
        model.zero_grad(set_to_none=True)
        out = forward_parts(model, parts, ("forget", "retain"), split=split, pad_token_id=0, pack=pack,
                            pack_length=24)
        loss = sum(-sequence_logprob(out[p], parts[p]["labels"]).sum() for p in parts)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    packed_loss, packed_grads = step(True)
    # Both layers found the rows' sequences (6 sequences in 2 rows of at most 24 tokens) and none fell back.
    assert len(found) == 2 and all(sum(len(row) for row in f) >= 6 for f in found) and calls == []
    assert model.config._attn_implementation == "sdpa"
    padded_loss, padded_grads = step(False)
    assert len(found) == 2                        # padded: the model's own sdpa, not this module
    torch.testing.assert_close(packed_loss, padded_loss, rtol=0, atol=1e-10)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=0, atol=1e-10, msg=name)


def test_the_switch_is_undone_on_error_and_leaves_other_implementations_alone():
    model = _gqa_llama()
    with pytest.raises(RuntimeError):
        with A.packed_attention(model):
            assert model.config._attn_implementation == A.PACKED_SDPA
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    eager = _gqa_llama("eager")
    with A.packed_attention(eager):
        assert eager.config._attn_implementation == "eager"
