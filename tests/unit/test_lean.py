"""Layers that keep less for backward (obliviate.lean): SwiGLU blocks that keep two activations, RMSNorms that
keep their input only, and a tied embedding that adds into the output layer's gradient buffer give the plain path's values and gradients, keep less,
and are left as they were outside the context or where they are not eligible."""

from __future__ import annotations

import contextlib

import pytest
import torch
import transformers as T

from obliviate.lean import (_RMSNorm, eligible, lean_rmsnorm, lean_swiglu, lean_tied_embedding, norm_eligible,
                            tied_embedding)

F64 = torch.float64


def _model(*, bias: bool = False, act: str = "silu", seed: int = 0, checkpointing: bool = False):
    torch.manual_seed(seed)
    config = T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, mlp_bias=bias, hidden_act=act,
                           attn_implementation="sdpa")
    model = T.LlamaForCausalLM(config).to(F64)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def _loss_and_grads(model, *, lean: bool):
    model.zero_grad(set_to_none=True)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    if lean:
        with lean_swiglu(model) as blocks:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        assert blocks == 2
    else:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_lean_blocks_give_the_blocks_values_and_gradients(bias, checkpointing):
    """Loss and the gradient of every parameter (all three projections, their biases) within 1e-12 in float64."""
    model = _model(bias=bias, checkpointing=checkpointing)
    loss, grads = _loss_and_grads(model, lean=False)
    lean_loss, lean_grads = _loss_and_grads(model, lean=True)
    assert torch.equal(lean_loss, loss)
    assert grads.keys() == lean_grads.keys() and any("down_proj.bias" in n for n in grads) == bias
    for name, g in grads.items():
        assert float(g.abs().max()) > 0, name
        torch.testing.assert_close(lean_grads[name], g, rtol=1e-12, atol=1e-12, msg=name)


def _saved_bytes(model, *, lean: bool) -> int:
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if lean:
            with lean_swiglu(model):
                model(input_ids=ids, labels=ids).loss
        else:
            model(input_ids=ids, labels=ids).loss
    return sum(total)


def test_lean_blocks_keep_two_fewer_activations_per_block():
    """What autograd keeps for backward shrinks by two (tokens × intermediate) tensors per block, and the
    tensors each block then keeps are gate(x) and up(x), not more."""
    model = _model()
    plain, lean = _saved_bytes(model, lean=False), _saved_bytes(model, lean=True)
    tokens, inter, layers = 2 * 9, model.config.intermediate_size, model.config.num_hidden_layers
    assert plain - lean == 2 * tokens * inter * layers * 8


@pytest.mark.parametrize("context,module", [(lean_swiglu, lambda m: m.model.layers[0].mlp),
                                            (lean_rmsnorm, lambda m: m.model.layers[0].input_layernorm)],
                         ids=["swiglu", "rmsnorm"])
def test_the_forward_is_restored_after_an_error(context, module):
    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        with context(model):
            assert "forward" in module(model).__dict__
            raise RuntimeError("boom")
    assert "forward" not in module(model).__dict__


def test_plain_paths_stay_plain():
    model = _model()
    ids = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with lean_swiglu(model):
            assert torch.equal(model(input_ids=ids).logits, plain)       # no gradient: the block as written
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        auto = model.float()(input_ids=ids).logits
    with lean_swiglu(model), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(input_ids=ids).logits.detach(), auto)  # autocast: the block as written


def test_blocks_that_are_not_plain_swiglu_are_left_alone():
    """A GELU block, a hooked projection and an adapter-wrapped projection run as written."""
    assert not eligible(_model(act="gelu").model.layers[0].mlp)
    model = _model()
    assert eligible(model.model.layers[0].mlp)
    handle = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda *a: None)
    assert not eligible(model.model.layers[0].mlp) and eligible(model.model.layers[1].mlp)
    with lean_swiglu(model) as blocks:
        assert blocks == 1
    handle.remove()

    class Wrapped(torch.nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base

        def forward(self, x):
            return self.base(x)

    model.model.layers[1].mlp.up_proj = Wrapped(model.model.layers[1].mlp.up_proj)
    assert not eligible(model.model.layers[1].mlp)


def test_a_frozen_down_projection_gets_no_gradient():
    model = _model()
    for layer in model.model.layers:
        layer.mlp.down_proj.weight.requires_grad_(False)
    loss, grads = _loss_and_grads(model, lean=False)
    lean_loss, lean_grads = _loss_and_grads(model, lean=True)
    assert not any("down_proj" in n for n in lean_grads) and lean_grads.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(lean_grads[name], g, rtol=1e-12, atol=1e-12, msg=name)


# ---------------------------------------------------------------- a tied input embedding


def _tied_model(*, tied: bool = True):
    torch.manual_seed(3)
    config = T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied, pad_token_id=0,
                           attn_implementation="sdpa")
    return T.LlamaForCausalLM(config).to(F64).train()


def _chunked_step(model, *, lean: bool):
    """The trainer's chunked loss on two parts of one packed forward (the padding id 0 occurs in the input)."""
    from obliviate.forward import forward_parts, inspect_model
    from obliviate.objectives import sequence_logprob

    g = torch.Generator().manual_seed(4)
    parts = {}
    for name in ("forget", "retain"):
        ids = torch.randint(0, 64, (2, 8), generator=g)
        ids[0, 2] = 0
        labels = ids.clone()
        labels[:, :3] = -100
        parts[name] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    split = inspect_model(model).split
    model.zero_grad(set_to_none=True)
    context = lean_tied_embedding(model) if lean else contextlib.nullcontext(False)
    with context as found:
        out = forward_parts(model, parts, ("forget", "retain"), split=split, pad_token_id=0, pack=True)
        loss = -sequence_logprob(out["forget"], parts["forget"]["labels"]).sum() \
            + 0.5 * sequence_logprob(out["retain"], parts["retain"]["labels"]).sum()
        loss.backward()
    nodes, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            nodes.add(type(node).__name__)
            stack.extend(n for n, _ in node.next_functions)
    return found, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, nodes


def test_a_tied_embedding_adds_into_the_output_layers_buffer():
    """With the context the lookup's backward is the grouped one (no EmbeddingBackward, so no V × H buffer of its
    own), and the loss and every gradient, the tied matrix's included, equal the plain path (float64, 1e-12)."""
    model = _tied_model()
    assert tied_embedding(model) is model.model.embed_tokens
    _, loss, grads, nodes = _chunked_step(model, lean=False)
    found, lean_loss, lean_grads, lean_nodes = _chunked_step(model, lean=True)
    assert found and "EmbeddingBackward0" in nodes and "EmbeddingBackward0" not in lean_nodes
    assert "_GroupedLookupBackward" in lean_nodes
    assert torch.equal(lean_loss, loss)
    for name, g in grads.items():
        assert float(g.abs().max()) > 0, name
        torch.testing.assert_close(lean_grads[name], g, rtol=1e-12, atol=1e-12, msg=name)
    assert "forward" not in model.model.embed_tokens.__dict__


def test_an_untied_or_replaced_embedding_is_left_alone_and_hooks_still_run():
    assert tied_embedding(_tied_model(tied=False)) is None
    model = _tied_model()
    fired = []
    handle = model.model.embed_tokens.register_forward_hook(lambda *a: fired.append(1))
    with lean_tied_embedding(model) as found:
        model(input_ids=torch.randint(1, 64, (1, 4))).logits.sum().backward()
    assert found and fired == [1]
    handle.remove()
    emb = model.model.embed_tokens
    emb.forward = emb.forward                     # replaced by someone else, as an offloading hook does
    assert tied_embedding(model) is None
    with lean_tied_embedding(model) as found:
        assert not found


def test_a_grouped_lookup_gives_nothing_to_a_backward_that_does_not_ask_for_the_matrix():
    """autograd.grad for the hidden states only leaves no buffer behind: the next full backward's gradient of the
    tied matrix is the plain one."""
    model = _tied_model()
    _, _, grads, _ = _chunked_step(model, lean=False)
    ids = torch.randint(1, 64, (1, 6))
    with lean_tied_embedding(model):
        hidden = model.model(input_ids=ids).last_hidden_state
        (d_first,) = torch.autograd.grad(hidden.sum(), model.model.layers[0].mlp.down_proj.weight)
    assert float(d_first.abs().max()) > 0
    _, _, again, _ = _chunked_step(model, lean=True)
    torch.testing.assert_close(again["model.embed_tokens.weight"], grads["model.embed_tokens.weight"],
                               rtol=1e-12, atol=1e-12)


# -- RMSNorms that keep their input only ------------------------------------------------------------------------

def _norm_run(model, ids, *, lean: bool):
    model.zero_grad(set_to_none=True)
    ctx = lean_rmsnorm(model) if lean else contextlib.nullcontext()
    with ctx:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_lean_norms_give_the_norms_values_and_gradients(checkpointing):
    """float64: loss bit-equal, every gradient (norm weights included) within 1e-12; with the SwiGLU blocks lean too."""
    model = _model(checkpointing=checkpointing)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(3))
    loss, grads = _norm_run(model, ids, lean=False)
    with lean_rmsnorm(model) as norms:
        assert norms == 2 * 2 + 1                             # two per layer and the final one
    lean_loss, lean_grads = _norm_run(model, ids, lean=True)
    assert torch.equal(lean_loss, loss)
    assert any("layernorm" in n for n in grads) and grads.keys() == lean_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(lean_grads[name], g, rtol=1e-12, atol=1e-12, msg=name)
    model.zero_grad(set_to_none=True)
    with lean_rmsnorm(model), lean_swiglu(model):
        both = model(input_ids=ids, labels=ids).loss
        both.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("weight_grad", [True, False], ids=["trained", "frozen"])
def test_the_norm_function_against_autograd_in_low_precision(dtype, weight_grad):
    """Input and weight gradients of one norm within the dtype's rounding of the plain module's (float32 math)."""
    norm = T.models.llama.modeling_llama.LlamaRMSNorm(16, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 16))
    norm.weight.requires_grad_(weight_grad)
    x = (torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(4)) * 3).to(dtype).requires_grad_()
    g = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(5)).to(dtype)
    y = norm(x)
    wanted = torch.autograd.grad(y, [x, norm.weight] if weight_grad else [x], g)
    y_lean = _RMSNorm.apply(x, norm.weight, norm.variance_epsilon)
    assert torch.equal(y_lean, y)
    got = torch.autograd.grad(y_lean, [x, norm.weight] if weight_grad else [x], g)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    for a, b in zip(got, wanted):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_lean_norms_keep_one_hidden_sized_tensor_less_per_norm():
    """Full training of a float64 model (whose norms compute in float32): each norm stops keeping the normalised
    x·r and the float32 copy of its input, and keeps its input as it came instead."""
    model = _model()
    total = {}
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(2))
    for lean in (False, True):
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        ctx = lean_rmsnorm(model) if lean else contextlib.nullcontext()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
            model(input_ids=ids, labels=ids).loss
        total[lean] = sum(sizes)
    norms = 2 * model.config.num_hidden_layers + 1
    # as written (counted per save): pow and mul keep the float32 copy x32, rsqrt and mul r (float32), the weight
    # product the weight and (x32·r) cast back to float64; lean: x (float64), r and the weight
    T, H = 2 * 9, model.config.hidden_size
    plain_norm = 2 * T * H * 4 + 2 * T * 4 + H * 8 + T * H * 8
    lean_norm = T * H * 8 + T * 4 + H * 8
    assert total[False] - total[True] == norms * (plain_norm - lean_norm)


def test_norms_left_alone_where_they_must_be():
    model = _model()
    norm = model.model.layers[0].input_layernorm
    assert norm_eligible(norm)
    handle = norm.register_forward_pre_hook(lambda *a: None)
    assert not norm_eligible(norm)
    with lean_rmsnorm(model) as count:
        assert count == 4 and "forward" not in norm.__dict__
    handle.remove()
    ids = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    with lean_rmsnorm(model):
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, plain)
        x = torch.randn(2, 32, dtype=F64, requires_grad=True)
        out = norm(x)
        assert type(out.grad_fn).__name__ == "_RMSNormBackward"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert type(norm(x.float()).grad_fn).__name__ != "_RMSNormBackward"
    assert not norm_eligible(T.models.gemma.modeling_gemma.GemmaRMSNorm(8))
