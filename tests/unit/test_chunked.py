"""The chunked output layer gives the materialised path's values and gradients, for every term.

The materialised path applies the output layer to every position and hands ``(B, T, V)`` logits to the terms;
the chunked path (:class:`HeadLogits`) keeps the hidden states of labelled positions and applies the layer a
few rows at a time, recomputing them in backward. Chunk sizes below are small (1, 3, 4) so every reduction
runs over several chunks with a ragged last one; 64 holds every row in one chunk, whose row gradients are kept
from forward instead. Each also runs with the fields' reductions sharing one weight-gradient buffer
(``share_weight_grad``). Float64 must agree to 1e-10; float32 to 1e-6 (relative).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from obliviate.objectives import (
    FORGET_TERMS,
    REGULARIZERS,
    HeadLogits,
    ObjectiveParams,
    OutputHead,
    SequenceOutputs,
    UnlearningInputs,
    compute_objective,
    get_forget,
    get_regularizer,
    list_methods,
    sequence_logprob,
    share_weight_grad,
    token_kl,
    token_logprobs,
    token_uniform_kl,
)

LN2 = math.log(2.0)
LN3 = math.log(3.0)
F64 = torch.float64
FIELDS = [f.name for f in dataclasses.fields(UnlearningInputs)]
# Terms of logits and log-probs; those reading hidden states (RMU) are checked in their own tests.
ALL_TERMS = [("forget", n) for n in FORGET_TERMS.names() if not get_forget(n).hidden] + \
    [("regularizer", n) for n in REGULARIZERS.names() if not get_regularizer(n).hidden]
PARAM_SETS = [ObjectiveParams(beta=0.1), ObjectiveParams(beta=0.7, me_direction="model_to_uniform")]
B, T, H, V = 3, 7, 5, 11
# Terms whose gradient is orders of magnitude below the logits (SatImp's weight p^5 (1 − p); CE-U's p − q, a
# difference of two near-equal distributions): float32 rounding of the logits themselves (~1e-7 of their size,
# different between a whole-batch and a per-chunk matrix product) is then above 1e-6 of the gradient's scale. They
# are held to 1e-10 in float64 (above and in their own tests).
ILL_CONDITIONED_IN_FLOAT32 = {"ceu", "satimp"}
FLOAT32_TERMS = [(k, n) for k, n in ALL_TERMS if n not in ILL_CONDITIONED_IN_FLOAT32]


def spec_of(kind: str, name: str):
    return get_forget(name) if kind == "forget" else get_regularizer(name)


@dataclasses.dataclass
class Case:
    """Hidden states per field, a policy head and a frozen reference head, all leaves of one graph."""

    hidden: dict[str, torch.Tensor]
    ref_hidden: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor | None
    ref_weight: torch.Tensor
    head_kwargs: dict

    def head(self) -> OutputHead:
        return OutputHead(weight=self.weight, bias=self.bias, **self.head_kwargs)

    def ref_head(self) -> OutputHead:
        return OutputHead(weight=self.ref_weight, **self.head_kwargs)

    def leaves(self) -> list[torch.Tensor]:
        extra = [self.bias] if self.bias is not None and self.bias.requires_grad else []
        weight = [self.weight] if self.weight.requires_grad else []
        return [self.hidden[f] for f in FIELDS] + weight + extra


def make_case(seed: int, dtype=F64, *, bias: bool = False, train_head: bool = True, **head_kwargs) -> Case:
    g = torch.Generator().manual_seed(seed)
    hidden, ref_hidden, labels = {}, {}, {}
    for i, f in enumerate(FIELDS):
        hidden[f] = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_()
        ref_hidden[f] = torch.randn(B, T, H, generator=g, dtype=dtype)
        lab = torch.randint(0, V, (B, T), generator=g)
        lab[:, :2] = -100                      # the question
        lab[1, 5:] = -100                      # a shorter answer (padding)
        lab[2, 3 + i % 2] = -100               # a hole in the middle
        labels[f] = lab
    weight = (torch.randn(V, H, generator=g, dtype=dtype) * 0.7).requires_grad_(train_head)
    b = (torch.randn(V, generator=g, dtype=dtype) * 0.3).requires_grad_(train_head) if bias else None
    ref_weight = torch.randn(V, H, generator=g, dtype=dtype) * 0.7
    return Case(hidden, ref_hidden, labels, weight, b, ref_weight, head_kwargs)


def inputs_for(case: Case, *, chunk: int | None, shared: bool = False) -> UnlearningInputs:
    """chunk=None: materialised logits; otherwise HeadLogits with that chunk size (``shared``: every field's
    reductions add into one weight-gradient buffer). Reference log-probs are computed the same way
    (materialised) for both, as the trainer caches them before training."""
    head, ref_head = case.head(), case.ref_head()
    if shared:
        head = share_weight_grad(head)
    fields = {}
    for f in FIELDS:
        lab = case.labels[f]
        with torch.no_grad():
            ref_dense = ref_head.logits(case.ref_hidden[f])
            ref_logps = sequence_logprob(ref_dense, lab)
        if chunk is None:
            logits, ref_logits = head.logits(case.hidden[f]), ref_dense
        else:
            logits = HeadLogits.from_hidden(case.hidden[f], lab, head, chunk_size=chunk)
            ref_logits = HeadLogits.from_hidden(case.ref_hidden[f], lab, ref_head, chunk_size=chunk)
        fields[f] = SequenceOutputs(logits, lab, ref_logps=ref_logps, ref_logits=ref_logits, token_normalizer=9)
    return UnlearningInputs(**fields)


def value_and_grads(fn, case: Case, chunk: int | None, shared: bool = False):
    for leaf in case.leaves():
        leaf.grad = None
    loss = fn(inputs_for(case, chunk=chunk, shared=shared))
    if loss.requires_grad:                     # "none" is a constant 0
        loss.backward()
    return loss.detach(), [leaf.grad.clone() if leaf.grad is not None else torch.zeros_like(leaf)
                           for leaf in case.leaves()]


def assert_same(a, b, *, rel: float, what: str) -> None:
    """Tensors equal up to ``rel`` of the larger one's scale (max-abs), the tolerance the chunked path promises."""
    scale = max(float(b.abs().max()), 1e-30) if b.numel() else 1.0
    err = float((a - b).abs().max()) if b.numel() else 0.0
    assert err <= rel * scale, f"{what}: max |chunked − materialised| = {err:.3e}, scale {scale:.3e}"


def check_term(fn, case: Case, rel: float, chunks=(1, 3, 4, 64), *, constant: bool = False) -> None:
    full_value, full_grads = value_and_grads(fn, case, None)
    assert constant or any(float(g.abs().max()) > 0 for g in full_grads), "the materialised path has no gradient"
    for chunk in chunks:
        for shared in (False, True):
            value, grads = value_and_grads(fn, case, chunk, shared)
            how = f"chunk {chunk}{', shared weight gradient' if shared else ''}"
            assert_same(value, full_value, rel=rel, what=f"value ({how})")
            names = [f"d hidden[{f}]" for f in FIELDS] + ["d weight", "d bias"]
            for name, g, full in zip(names, grads, full_grads):
                assert_same(g, full, rel=rel, what=f"{name} ({how})")


# ---------------------------------------------------------------- every term, both precisions


@pytest.mark.parametrize("params", PARAM_SETS, ids=["beta0.1-u2m", "beta0.7-m2u"])
@pytest.mark.parametrize("kind,name", ALL_TERMS)
def test_every_term_float64_values_and_gradients(kind, name, params):
    """Value and every gradient (hidden states of each field, head weight) within 1e-10 in float64."""
    fn = spec_of(kind, name).fn
    check_term(lambda inputs: fn(inputs, params), make_case(1), rel=1e-10, constant=name == "none")


@pytest.mark.parametrize("params", PARAM_SETS, ids=["beta0.1-u2m", "beta0.7-m2u"])
@pytest.mark.parametrize("kind,name", FLOAT32_TERMS)
def test_every_term_float32_values_and_gradients(kind, name, params):
    """The same in float32, within 1e-6 of the materialised value (relative to its magnitude)."""
    fn = spec_of(kind, name).fn
    check_term(lambda inputs: fn(inputs, params), make_case(2, torch.float32), rel=1e-6, constant=name == "none")


@pytest.mark.parametrize("method", list_methods(), ids=lambda m: m.name)
def test_every_named_method_composed(method):
    """The composed loss of every named method (both terms, their coefficients) through the chunked path."""
    def fn(inputs):
        return compute_objective(inputs, forget=method.forget, regularizer=method.regularizer,
                                 forget_coeff=method.forget_coeff, regularization_coeff=method.regularization_coeff,
                                 params=ObjectiveParams()).loss
    check_term(fn, make_case(3), rel=1e-10)


# ---------------------------------------------------------------- output layers of every shape


HEADS = {
    "bias": dict(bias=True),
    "softcap": dict(softcap=1.5),                  # Gemma 2: 1.5·tanh(z/1.5) bends these logits hard
    "scale": dict(scale=0.25),                     # Cohere's logit_scale, Granite's 1/logits_scaling
    "scale+softcap+bias": dict(bias=True, scale=2.0, softcap=3.0),
    "frozen": dict(train_head=False),              # LoRA: the output layer does not train
}


@pytest.mark.parametrize("head", list(HEADS), ids=list(HEADS))
@pytest.mark.parametrize("kind,name", [("forget", "npo"), ("forget", "me"), ("regularizer", "kl"),
                                       ("regularizer", "ap"), ("forget", "llmu")])
def test_head_variants(kind, name, head):
    """Bias, soft cap, logit scale and a frozen head: values and gradients (incl. the bias's) within 1e-10."""
    fn = spec_of(kind, name).fn
    params = ObjectiveParams(me_direction="model_to_uniform")
    check_term(lambda inputs: fn(inputs, params), make_case(4, **HEADS[head]), rel=1e-10)


def test_frozen_head_gets_no_gradient():
    case = make_case(5, train_head=False)
    out = HeadLogits.from_hidden(case.hidden["forget"], case.labels["forget"], case.head(), chunk_size=2)
    sequence_logprob(out, case.labels["forget"]).sum().backward()
    assert case.weight.grad is None and case.hidden["forget"].grad.abs().sum() > 0


def test_tied_embedding_collects_both_gradients():
    """With tied embeddings the output layer's weight is the input embedding: its gradient is the sum of the
    embedding lookup's and the loss's, the same through both paths (1e-10)."""
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(V, H, generator=g, dtype=F64, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100
    mix = torch.randn(H, H, generator=g, dtype=F64)

    def grad(chunk):
        emb.grad = None
        hidden = torch.tanh(emb[ids] @ mix)           # a one-layer "model" reading the same matrix
        head = OutputHead(weight=emb)
        logits = head.logits(hidden) if chunk is None else HeadLogits.from_hidden(hidden, labels, head, chunk_size=chunk)
        loss = -sequence_logprob(logits, labels).sum()
        loss.backward()
        return loss.detach(), emb.grad.clone()

    full_loss, full_grad = grad(None)
    for chunk in (1, 5):
        loss, gr = grad(chunk)
        assert_same(loss, full_loss, rel=1e-10, what="loss")
        assert_same(gr, full_grad, rel=1e-10, what="d embedding")


def _tied_setup(seed: int):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(V, H, generator=g, dtype=F64, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100
    mix = torch.randn(H, H, generator=g, dtype=F64)
    return emb, ids, labels, mix


def _shared_loss(emb, ids, labels, mix, *, shared: bool, chunk: int):
    """Three readers of one tied matrix: the embedding lookup, two chunked reductions, a materialised row."""
    hidden = torch.tanh(emb[ids] @ mix)
    head = OutputHead(weight=emb)
    if shared:
        head = share_weight_grad(head)
    logits = HeadLogits.from_hidden(hidden, labels, head, chunk_size=chunk)
    other = HeadLogits.from_hidden(hidden * 0.5, labels, head, chunk_size=chunk)
    return (-sequence_logprob(logits, labels).sum() + token_uniform_kl(other, labels, "uniform_to_model")[0].sum()
            + head.logits(hidden[0, :2]).square().sum()), hidden


@pytest.mark.parametrize("chunk", [2, 64])
def test_shared_weight_gradient_sums_every_reader(chunk):
    """One buffer for the reductions' weight gradient, plus what reached the weight another way (the lookup,
    a materialised row): the same gradient as one tensor per reduction (1e-12), and ``emb.grad`` is set once."""
    emb, ids, labels, mix = _tied_setup(8)
    grads = []
    for shared in (False, True):
        emb.grad = None
        loss, _ = _shared_loss(emb, ids, labels, mix, shared=shared, chunk=chunk)
        loss.backward()
        grads.append(emb.grad.clone())
    assert float(grads[0].abs().max()) > 0
    assert_same(grads[1], grads[0], rel=1e-12, what="d embedding, shared buffer")


def test_shared_weight_gradient_is_not_carried_into_another_backward():
    """A backward that asks for the hidden states only leaves nothing behind for the next one; a second
    backward of a retained graph (the kept row gradients are used up by the first) adds the same gradient again."""
    emb, ids, labels, mix = _tied_setup(9)
    emb.grad = None
    loss, _ = _shared_loss(emb, ids, labels, mix, shared=False, chunk=64)
    loss.backward()
    expected = emb.grad.clone()

    emb.grad = None
    loss, hidden = _shared_loss(emb, ids, labels, mix, shared=True, chunk=64)
    (d_hidden,) = torch.autograd.grad(loss, hidden, retain_graph=True)
    assert float(d_hidden.abs().max()) > 0 and emb.grad is None
    loss.backward(retain_graph=True)
    assert_same(emb.grad, expected, rel=1e-12, what="d embedding after a hidden-only backward")
    loss.backward()
    assert_same(emb.grad, 2 * expected, rel=1e-12, what="d embedding after a second backward")


class LowRankHead(torch.nn.Module):
    """A LoRA-style output layer: W x + (α/r) B A x, with trainable A and B, as peft builds it."""

    def __init__(self, weight: torch.Tensor, r: int = 2, seed: int = 7):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.base = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        self.base.weight.data.copy_(weight)
        self.base.weight.requires_grad_(False)
        self.a = torch.nn.Parameter(torch.randn(r, weight.shape[1], generator=g, dtype=weight.dtype))
        self.b = torch.nn.Parameter(torch.randn(weight.shape[0], r, generator=g, dtype=weight.dtype) * 0.1)

    def forward(self, x):
        return self.base(x) + 2.0 * (x @ self.a.t()) @ self.b.t()


@pytest.mark.parametrize("kind,name", [("forget", "ga"), ("forget", "me"), ("regularizer", "kl"), ("forget", "dpo")])
def test_module_head_through_checkpointing(kind, name):
    """A head that is not a plain linear layer runs through autograd per chunk (activation checkpointing):
    values and gradients of the hidden states and of the adapter matrices equal the materialised path's."""
    case = make_case(8)
    module = LowRankHead(case.weight.detach())
    fn = spec_of(kind, name).fn
    params = ObjectiveParams(me_direction="model_to_uniform")

    def run(chunk):
        for p in [module.a, module.b, *case.hidden.values()]:
            p.grad = None
        head = OutputHead(module=module, vocab_size=V)
        ref_head = case.ref_head()
        fields = {}
        for f in FIELDS:
            lab = case.labels[f]
            ref_dense = ref_head.logits(case.ref_hidden[f]).detach()
            ref_logps = sequence_logprob(ref_dense, lab)
            logits = head.logits(case.hidden[f]) if chunk is None else \
                HeadLogits.from_hidden(case.hidden[f], lab, head, chunk_size=chunk)
            fields[f] = SequenceOutputs(logits, lab, ref_logps=ref_logps, ref_logits=ref_dense)
        loss = fn(UnlearningInputs(**fields), params)
        loss.backward()
        return loss.detach(), [module.a.grad.clone(), module.b.grad.clone()] + \
            [case.hidden[f].grad.clone() if case.hidden[f].grad is not None else torch.zeros(1) for f in FIELDS]

    full_loss, full_grads = run(None)
    loss, grads = run(3)
    assert_same(loss, full_loss, rel=1e-10, what="loss")
    for g, fg in zip(grads, full_grads):
        assert_same(g, fg, rel=1e-10, what="gradient")
    assert full_grads[0].abs().sum() > 0


def test_map_rows_is_a_generic_reduction_with_autograd_gradients():
    """Any row function runs chunk by chunk: here Σ_v z_v² per row, whose gradient is 2z (through the head)."""
    case = make_case(9)
    lab = case.labels["forget"]
    hidden = case.hidden["forget"]
    out = HeadLogits.from_hidden(hidden, lab, case.head(), chunk_size=2)
    values = out.map_rows(lambda z, t, r: z.square().sum(-1))
    dense = case.head().logits(hidden)[:, :-1][lab[:, 1:] != -100]
    assert_same(values.detach(), dense.square().sum(-1).detach(), rel=1e-12, what="values")
    values.sum().backward()
    g_chunked = case.weight.grad.clone()
    case.weight.grad = None
    dense.square().sum().backward()
    assert_same(g_chunked, case.weight.grad, rel=1e-12, what="d weight")


# ---------------------------------------------------------------- the hand examples, through the chunked path


def identity_head_logits(logits: torch.Tensor, labels: torch.Tensor, chunk: int = 1) -> HeadLogits:
    """Logits (B, T, V) as hidden states under an identity output layer (H = V): the chunked path computes
    exactly the hand example's logits."""
    v = logits.shape[-1]
    return HeadLogits.from_hidden(logits, labels, OutputHead(weight=torch.eye(v, dtype=logits.dtype)), chunk_size=chunk)


def test_hand_values_through_the_chunked_path():
    """test_objectives.py's hand examples: tiny = logits (0, ln 3), (0, 0), garbage with labels (−100, 0, 1).
    log-probs (ln ¼, ln ½); ME uniform_to_model on labels (−100, 1, 0): ¼ ln(4/3) = 0.071921; model_to_uniform
    (¾ ln 3 − ln 2)/2 = 0.065406; KL against π_ref = (½, ½) at the one labelled position: ½ ln(4/3) = 0.143841."""
    logits = torch.tensor([[[0.0, LN3], [0.0, 0.0], [7.0, -5.0]]], dtype=F64)
    labels = torch.tensor([[-100, 0, 1]])
    logp, mask = token_logprobs(identity_head_logits(logits, labels), labels)
    torch.testing.assert_close(logp, torch.tensor([[-2 * LN2, -LN2]], dtype=F64), rtol=0, atol=1e-15)
    me_labels = torch.tensor([[-100, 1, 0]])
    for direction, expected in (("uniform_to_model", 0.25 * math.log(4 / 3)), ("model_to_uniform", (0.75 * LN3 - LN2) / 2)):
        out = SequenceOutputs(identity_head_logits(logits, me_labels), me_labels)
        value = get_forget("me").fn(UnlearningInputs(forget=out), ObjectiveParams(me_direction=direction))
        assert value.item() == pytest.approx(expected, abs=1e-15)
    kl_labels = torch.tensor([[-100, 0, -100]])
    ref = torch.tensor([[[0.0, 0.0], [-3.0, 9.0], [1.0, 2.0]]], dtype=F64)
    kl, _ = token_kl(identity_head_logits(ref, kl_labels), identity_head_logits(logits, kl_labels), kl_labels)
    assert kl[0, 0].item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-15) and kl[0, 1].item() == 0.0


def test_me_gradients_by_hand_through_the_chunked_path():
    """One token, z = (0, ln 3): ∂KL(U‖p)/∂z = p − ½ = (−¼, ¼); ∂KL(p‖U)/∂z = ±(3/16) ln 3 (see test_objectives)."""
    expected = {"uniform_to_model": [-0.25, 0.25], "model_to_uniform": [-3 / 16 * LN3, 3 / 16 * LN3]}
    for direction, grad in expected.items():
        hidden = torch.tensor([[[0.0, LN3], [7.0, -5.0]]], dtype=F64, requires_grad=True)
        labels = torch.tensor([[-100, 1]])
        kl, _ = token_uniform_kl(identity_head_logits(hidden, labels), labels, direction)
        kl.sum().backward()
        torch.testing.assert_close(hidden.grad[0, 0], torch.tensor(grad, dtype=F64), rtol=0, atol=1e-15)
        assert hidden.grad[0, 1].abs().sum() == 0          # the position past the end gets nothing


# ---------------------------------------------------------------- edges


def test_no_labelled_token_gives_zero_and_a_zero_gradient():
    case = make_case(10)
    lab = torch.full((B, T), -100)
    out = HeadLogits.from_hidden(case.hidden["forget"], lab, case.head(), chunk_size=2)
    logp, mask = token_logprobs(out, lab)
    assert not mask.any() and logp.abs().sum() == 0
    logp.sum().backward()
    assert case.hidden["forget"].grad.abs().sum() == 0


def test_labels_are_checked():
    case = make_case(11)
    lab = case.labels["forget"].clone()
    lab[0, 3] = V                                            # not a token id of this vocabulary
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        HeadLogits.from_hidden(case.hidden["forget"], lab, case.head())
    out = HeadLogits.from_hidden(case.hidden["forget"], case.labels["forget"], case.head())
    with pytest.raises(ValueError, match="other labels"):
        token_logprobs(out, case.labels["retain"])
    with pytest.raises(ValueError, match="same labelled positions"):
        token_kl(HeadLogits.from_hidden(case.ref_hidden["forget_idk"], case.labels["forget_idk"], case.ref_head()), out,
                 case.labels["forget"])


def test_without_gradient_nothing_is_recorded():
    """Reference and evaluation passes run under no_grad: the values come back detached."""
    case = make_case(12)
    out = HeadLogits.from_hidden(case.hidden["forget"], case.labels["forget"], case.head(), chunk_size=2)
    with torch.no_grad():
        logp, _ = token_logprobs(out, case.labels["forget"])
    assert not logp.requires_grad
    torch.testing.assert_close(logp, token_logprobs(case.head().logits(case.hidden["forget"]).detach(),
                                                    case.labels["forget"])[0], rtol=0, atol=1e-12)


def test_bfloat16_hidden_states_give_float32_values():
    """A bfloat16 model: the product runs in bfloat16 (as its own output layer would), the reduction in float32,
    matching the materialised path on the same bfloat16 logits upcast to float32."""
    case = make_case(13, torch.float32)
    hidden = case.hidden["forget"].detach().bfloat16()
    head = OutputHead(weight=case.weight.detach().bfloat16())
    lab = case.labels["forget"]
    chunked, _ = token_logprobs(HeadLogits.from_hidden(hidden, lab, head, chunk_size=3), lab)
    dense, _ = token_logprobs(head.logits(hidden), lab)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, dense, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["bf16-weights", "fp32-weights-bf16-autocast"])
def test_sixteen_bit_products_give_float32_sums_and_the_gradients(mode):
    """Products in bfloat16 (bfloat16 weights, or float32 weights under autocast), reductions and the weight's
    gradient accumulated in float32 — with chunk 1 the gradient is added a block of vocabulary rows at a time
    (V = 11, H = 5: blocks of 3). Values and gradients agree with float64 on the same bfloat16-rounded numbers
    within bfloat16's rounding of the logits (2e-2 of the scale), as the materialised bfloat16 path does."""
    case = make_case(17, torch.float32)
    lab = case.labels["forget"]
    dtype = torch.bfloat16 if mode == "bf16-weights" else torch.float32
    # Values every path can represent exactly: rounded to bfloat16 once.
    hidden0 = case.hidden["forget"].detach().bfloat16()
    weight0 = case.weight.detach().bfloat16()

    def run(chunk: int | None, precision: torch.dtype, autocast: bool):
        hidden = hidden0.to(precision).clone().requires_grad_()     # fresh leaves: no gradient carried over
        weight = weight0.to(precision).clone().requires_grad_()
        head = OutputHead(weight=weight)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = head.logits(hidden) if chunk is None else \
                HeadLogits.from_hidden(hidden, lab, head, chunk_size=chunk)
            logp, mask = token_logprobs(logits, lab)
            me, _ = token_uniform_kl(logits, lab, "model_to_uniform")
        loss = (logp * mask).sum() - 3 * (me * mask).sum()
        loss.backward()
        return loss.detach().double(), hidden.grad.double(), weight.grad.double(), loss.dtype

    truth = run(None, F64, False)
    autocast = mode.endswith("autocast")
    materialised = run(None, dtype, autocast)
    for chunk in (1, 4):
        value, d_hidden, d_weight, loss_dtype = run(chunk, dtype, autocast)
        assert loss_dtype == torch.float32
        for what, got, full, exact in (("value", value, materialised[0], truth[0]),
                                       ("d hidden", d_hidden, materialised[1], truth[1]),
                                       ("d weight", d_weight, materialised[2], truth[2])):
            assert_same(got, exact, rel=2e-2, what=f"{mode} {what} (chunk {chunk}) against float64")
            assert_same(got, full, rel=3e-2, what=f"{mode} {what} (chunk {chunk}) against materialised")
