"""Unlearning objectives against numbers worked out by hand (docs/methods.md).

Most hand examples use a vocabulary of two tokens, where softmax((0, ln 3)) = (1/4, 3/4) and
softmax((0, 0)) = (1/2, 1/2), so every value has a closed form in ln 2 and ln 3. Tensors are float64 so
that the comparisons can be tight.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from obliviate.errors import ConfigError
from obliviate.objectives import (
    FORGET_TERMS,
    REGULARIZERS,
    ObjectiveParams,
    SequenceOutputs,
    TermRegistry,
    UnlearningInputs,
    compute_objective,
    get_forget,
    get_regularizer,
    list_methods,
    mean_token_nll,
    register_forget,
    required_inputs,
    resolve_method,
    sequence_logprob,
    token_kl,
    token_logprobs,
    token_mean,
    token_nll_sum_and_count,
    token_uniform_kl,
)

LN2 = math.log(2.0)
LN3 = math.log(3.0)
F64 = torch.float64
GARBAGE = [7.0, -5.0]  # logits at a position that predicts nothing; must never matter


def tiny_logits() -> torch.Tensor:
    """(1, 3, 2): position 0 → (0, ln 3) i.e. p = (1/4, 3/4); position 1 → (0, 0) i.e. p = (1/2, 1/2);
    position 2 predicts past the end of the sequence and carries garbage."""
    return torch.tensor([[[0.0, LN3], [0.0, 0.0], GARBAGE]], dtype=F64)


def tiny(**kwargs) -> SequenceOutputs:
    """Labels (−100, 0, 1): position 0 predicts token 0 with p = 1/4 (NLL ln 4 = 2 ln 2), position 1
    predicts token 1 with p = 1/2 (NLL ln 2). Summed NLL 3 ln 2, mean NLL 1.5 ln 2 ≈ 1.039721."""
    return SequenceOutputs(tiny_logits().requires_grad_(), torch.tensor([[-100, 0, 1]]), **kwargs)


def uniform_pair(**kwargs) -> SequenceOutputs:
    """Logits (0, 0) everywhere, labels (−100, 1, 0): two tokens of NLL ln 2 each, summed 2 ln 2."""
    return SequenceOutputs(torch.zeros(1, 3, 2, dtype=F64, requires_grad=True), torch.tensor([[-100, 1, 0]]), **kwargs)


def random_outputs(seed: int, *, batch: int = 2, length: int = 6, vocab: int = 7, ref: bool = True) -> SequenceOutputs:
    """Random logits; labels ignore the first two positions (question) and part of the second row."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g, dtype=F64)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[:, :2] = -100
    labels[1, 4:] = -100
    ref_logits = torch.randn(batch, length, vocab, generator=g, dtype=F64) if ref else None
    ref_logps = sequence_logprob(ref_logits, labels) if ref else None
    return SequenceOutputs(logits.requires_grad_(), labels, ref_logps=ref_logps, ref_logits=ref_logits)


def random_inputs(seed: int = 0) -> UnlearningInputs:
    names = [f.name for f in dataclasses.fields(UnlearningInputs)]
    return UnlearningInputs(**{name: random_outputs(seed + i) for i, name in enumerate(names)})


def pad(out: SequenceOutputs, extra: int, *, left: bool, seed: int = 99) -> SequenceOutputs:
    """Append (or prepend) ``extra`` positions with huge random logits and label −100."""
    g = torch.Generator().manual_seed(seed)
    b, _, v = out.logits.shape

    def cat(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y, x] if left else [x, y], dim=1)

    junk = lambda: 100.0 * torch.randn(b, extra, v, generator=g, dtype=F64)  # noqa: E731
    return SequenceOutputs(
        cat(out.logits.detach(), junk()).requires_grad_(),
        cat(out.labels, torch.full((b, extra), -100)),
        ref_logps=out.ref_logps,
        ref_logits=None if out.ref_logits is None else cat(out.ref_logits, junk()),
        token_normalizer=out.token_normalizer,
    )


# Terms of logits and log-probs; those reading hidden states (RMU) are checked in their own tests.
ALL_TERMS = [("forget", n) for n in FORGET_TERMS.names() if not get_forget(n).hidden] + \
    [("regularizer", n) for n in REGULARIZERS.names() if not get_regularizer(n).hidden]
PARAM_SETS = [ObjectiveParams(beta=0.1), ObjectiveParams(beta=0.7, me_direction="model_to_uniform")]


def spec_of(kind: str, name: str):
    return get_forget(name) if kind == "forget" else get_regularizer(name)


# ---------------------------------------------------------------- logprobs: the narrow door


def test_token_logprobs_hand_values():
    """Row 1 is :func:`tiny`: logp = (ln 1/4, ln 1/2) = (−1.386294, −0.693147). Row 2 has labels
    (−100, −100, 0): only position 1 counts, logits (0, 0) → ln 1/2; position 0 gives 0 and mask False."""
    logits = torch.cat([tiny_logits(), tiny_logits()])
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 0]])
    logp, mask = token_logprobs(logits, labels)
    assert mask.tolist() == [[True, True], [False, True]]
    torch.testing.assert_close(logp, torch.tensor([[-2 * LN2, -LN2], [0.0, -LN2]], dtype=F64))


def test_token_logprobs_equals_full_log_softmax_gather():
    """The selective form (target logit − logsumexp) equals gathering from a full log_softmax."""
    out = random_outputs(1)
    logp, mask = token_logprobs(out.logits, out.labels)
    full = F.log_softmax(out.logits[:, :-1], dim=-1)
    targets = out.labels[:, 1:].clamp(min=0)
    expected = torch.where(mask, full.gather(-1, targets.unsqueeze(-1)).squeeze(-1), 0.0)
    torch.testing.assert_close(logp, expected)


def test_token_logprobs_upcasts_half_precision():
    """bfloat16 logits give float32 log-probs, computed exactly from the bf16 values: bf16 rounds
    ln 3 = 1.098612 to 1.1015625, so tiny's first token has p = 1/(1 + e^1.1015625) = 1/4.008864 =
    0.249447 and log-prob −1.388508 (a bf16 logsumexp would be off in the third digit)."""
    logp, _ = token_logprobs(tiny_logits().bfloat16(), torch.tensor([[-100, 0, 1]]))
    assert logp.dtype == torch.float32
    assert logp[0, 0].item() == pytest.approx(-1.388508, abs=1e-6)


def test_sequence_logprob_and_nll_sum_count():
    """tiny: summed log-prob ln(1/4) + ln(1/2) = −3 ln 2 = −2.079442; NLL sum 3 ln 2 over 2 tokens."""
    out = tiny()
    torch.testing.assert_close(sequence_logprob(out.logits, out.labels), torch.tensor([-3 * LN2], dtype=F64))
    nll_sum, count = token_nll_sum_and_count(out.logits, out.labels)
    assert nll_sum.item() == pytest.approx(3 * LN2)
    assert count.item() == 2


def test_mean_token_nll_and_token_normalizer():
    """tiny: mean NLL 3 ln 2 / 2 = 1.039721; with token_normalizer 4 (a float or a tensor) the same sum
    is divided by 4: 3 ln 2 / 4 = 0.519860."""
    assert mean_token_nll(tiny()).item() == pytest.approx(1.5 * LN2)
    assert mean_token_nll(tiny(token_normalizer=4.0)).item() == pytest.approx(0.75 * LN2)
    assert mean_token_nll(tiny(token_normalizer=torch.tensor(4))).item() == pytest.approx(0.75 * LN2)


def test_token_mean_rejects_non_positive_normalizer():
    """A normalizer of 0 would divide a sum by zero; it is refused, at construction and in token_mean."""
    with pytest.raises(ValueError, match="token_normalizer"):
        tiny(token_normalizer=0)
    with pytest.raises(ValueError, match="token_normalizer"):
        token_mean(torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), -3.0)


@pytest.mark.parametrize("kind,name", ALL_TERMS)
def test_no_labelled_token_gives_finite_loss_and_zero_gradient(kind, name):
    """All labels −100. Token means: 0/1 = 0 (no 0/0 NaN). Sequence terms see log π = 0 for every
    sequence, policy and reference: NPO and DPO give −(2/β) log σ(0) = (2/β) ln 2 = 13.862944 at
    β = 0.1, AP gives ln 2/β = 6.931472; their gradient is zero as well, since no logit enters any
    labelled position. SimNPO (its own β = 2.5, γ = 0; method.beta is NPO's) sees ℓ̄ = 0:
    −(2/2.5) log σ(0) = 0.8 ln 2."""
    inputs = random_inputs()
    for f in dataclasses.fields(UnlearningInputs):
        out = getattr(inputs, f.name)
        out.labels.fill_(-100)
        out.ref_logps = torch.zeros_like(out.ref_logps)  # the reference also sums over no token
    params = ObjectiveParams(beta=0.1)
    loss = spec_of(kind, name).fn(inputs, params)
    expected = {"npo": 2 * LN2 / 0.1, "dpo": 2 * LN2 / 0.1, "ap": LN2 / 0.1, "simnpo": 0.8 * LN2}.get(name, 0.0)
    assert loss.item() == pytest.approx(expected)
    if loss.requires_grad:
        loss.backward()
        for f in dataclasses.fields(UnlearningInputs):
            grad = getattr(inputs, f.name).logits.grad
            assert grad is None or (torch.isfinite(grad).all() and grad.abs().max() == 0)


def test_invalid_labels_and_shapes_raise():
    """Label 2 with V = 2 and label −1 are neither token ids nor −100; mismatched shapes are refused."""
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        token_logprobs(tiny_logits(), torch.tensor([[-100, 2, 0]]))
    with pytest.raises(ValueError, match="-100"):
        token_logprobs(tiny_logits(), torch.tensor([[-100, -1, 0]]))
    with pytest.raises(ValueError, match="labels shape"):
        SequenceOutputs(tiny_logits(), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="ref_logps"):
        SequenceOutputs(tiny_logits(), torch.tensor([[-100, 0, 1]]), ref_logps=torch.zeros(2))
    with pytest.raises(ValueError, match="integer"):
        SequenceOutputs(tiny_logits(), torch.tensor([[-100.0, 0.0, 1.0]]))


# ---------------------------------------------------------------- forget terms


def test_ga_idk_gd_equal_known_nll():
    """On tiny the mean token NLL is 1.5 ln 2 = 1.039721: GA = −1.039721, IDK (on forget_idk) and GD
    (on retain) = +1.039721."""
    p = ObjectiveParams()
    assert get_forget("ga").fn(UnlearningInputs(forget=tiny()), p).item() == pytest.approx(-1.5 * LN2)
    assert get_forget("idk").fn(UnlearningInputs(forget_idk=tiny()), p).item() == pytest.approx(1.5 * LN2)
    assert get_regularizer("gd").fn(UnlearningInputs(retain=tiny()), p).item() == pytest.approx(1.5 * LN2)


def test_npo_policy_equals_reference():
    """log πθ − log π_ref = 0 → −(2/β) log σ(0) = (2/β) ln 2; β = 0.1 → 20 · 0.693147 = 13.862944."""
    inputs = UnlearningInputs(forget=tiny(ref_logps=torch.tensor([-3 * LN2], dtype=F64)))
    assert get_forget("npo").fn(inputs, ObjectiveParams(beta=0.1)).item() == pytest.approx(13.862944, abs=1e-6)


def test_npo_hand_value():
    """β = 1, log πθ = −3 ln 2 (tiny), log π_ref = −3 ln 2 − ln 3, so the log ratio is ln 3:
    −2 log σ(−ln 3) = −2 ln(1/(1 + 3)) = 2 ln 4 = 2.772589."""
    inputs = UnlearningInputs(forget=tiny(ref_logps=torch.tensor([-3 * LN2 - LN3], dtype=F64)))
    assert get_forget("npo").fn(inputs, ObjectiveParams(beta=1.0)).item() == pytest.approx(2.772589, abs=1e-6)


def test_dpo_all_four_equal():
    """All four log-probs −3 ln 2: the margin is 0 → −(2/β) log σ(0) = (2/β) ln 2 = 13.862944 at β = 0.1."""
    ref = torch.tensor([-3 * LN2], dtype=F64)
    inputs = UnlearningInputs(forget=tiny(ref_logps=ref), forget_idk=tiny(ref_logps=ref))
    assert get_forget("dpo").fn(inputs, ObjectiveParams(beta=0.1)).item() == pytest.approx(13.862944, abs=1e-6)


def test_dpo_hand_value():
    """β = 1. Policy: log π(idk) = log π(a_f) = −3 ln 2, margin 0. Reference: log π(idk) = −3 ln 2 − ln 3,
    log π(a_f) = −3 ln 2, margin −ln 3. Argument 0 − (−ln 3) = ln 3: −2 log σ(ln 3) = −2 ln(3/4) =
    2 ln(4/3) = 0.575364."""
    inputs = UnlearningInputs(
        forget=tiny(ref_logps=torch.tensor([-3 * LN2], dtype=F64)),
        forget_idk=tiny(ref_logps=torch.tensor([-3 * LN2 - LN3], dtype=F64)),
    )
    assert get_forget("dpo").fn(inputs, ObjectiveParams(beta=1.0)).item() == pytest.approx(0.575364, abs=1e-6)


@pytest.mark.parametrize("direction", ["uniform_to_model", "model_to_uniform"])
def test_me_uniform_logits_give_zero(direction):
    """Constant logits (3.7 everywhere, V = 5) are the uniform distribution: KL = 0 in both directions
    (uniform_to_model: logsumexp = 3.7 + ln 5, mean = 3.7, minus ln 5 → 0)."""
    out = SequenceOutputs(torch.full((2, 4, 5), 3.7, dtype=F64), torch.tensor([[-100, 1, 2, 3], [-100, 0, 4, -100]]))
    loss = get_forget("me").fn(UnlearningInputs(forget=out), ObjectiveParams(me_direction=direction))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def me_two_token_example(**kwargs) -> SequenceOutputs:
    """Labels (−100, 1, 0): position 0 has p = (1/4, 3/4), position 1 is uniform (KL 0)."""
    return SequenceOutputs(tiny_logits().requires_grad_(), torch.tensor([[-100, 1, 0]]), **kwargs)


def test_me_uniform_to_model_hand_value():
    """KL(U‖p) at p = (1/4, 3/4): ½ ln(½ / ¼) + ½ ln(½ / ¾) = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3) = 0.143841
    (equivalently logsumexp(0, ln 3) − mean(0, ln 3) − ln 2 = ln 4 − ½ ln 3 − ln 2). Position 1 is uniform
    (0), so the mean over the 2 tokens is ¼ ln(4/3) = 0.071921; with token_normalizer 4 it is
    ½ ln(4/3) / 4 = 0.035960."""
    p = ObjectiveParams(me_direction="uniform_to_model")
    me = get_forget("me").fn
    assert me(UnlearningInputs(forget=me_two_token_example()), p).item() == pytest.approx(0.071921, abs=1e-6)
    normalized = UnlearningInputs(forget=me_two_token_example(token_normalizer=4))
    assert me(normalized, p).item() == pytest.approx(0.035960, abs=1e-6)


def test_me_model_to_uniform_hand_value():
    """KL(p‖U) at p = (1/4, 3/4): ¼ ln(¼ / ½) + ¾ ln(¾ / ½) = −¼ ln 2 + ¾ ln(3/2) = ¾ ln 3 − ln 2
    = 0.130812 (= ln 2 − H(p), H(p) = 0.562335). Mean with the uniform position 1: 0.065406."""
    p = ObjectiveParams(me_direction="model_to_uniform")
    loss = get_forget("me").fn(UnlearningInputs(forget=me_two_token_example()), p)
    assert loss.item() == pytest.approx(0.065406, abs=1e-6)


def test_token_uniform_kl_per_token_values():
    """Per token, on the two-token example: position 0 has p = (¼, ¾), giving ½ ln(4/3) = 0.143841
    (uniform_to_model) and ¾ ln 3 − ln 2 = 0.130812 (model_to_uniform); position 1 is uniform, 0.
    An unknown direction is refused."""
    out = me_two_token_example()
    kl, mask = token_uniform_kl(out.logits, out.labels, "uniform_to_model")
    torch.testing.assert_close(kl, torch.tensor([[0.5 * math.log(4 / 3), 0.0]], dtype=F64))
    kl, _ = token_uniform_kl(out.logits, out.labels, "model_to_uniform")
    torch.testing.assert_close(kl, torch.tensor([[0.75 * LN3 - LN2, 0.0]], dtype=F64))
    assert mask.tolist() == [[True, True]]
    with pytest.raises(ValueError, match="unknown ME direction"):
        token_uniform_kl(out.logits, out.labels, "both")


def test_me_directions_have_different_gradients():
    """One token, z = (0, ln 3), p = (1/4, 3/4).
    uniform_to_model: ∂/∂z_k [logsumexp(z) − mean(z)] = p_k − 1/V = (−1/4, +1/4).
    model_to_uniform: ∂/∂z_k Σ p log p = p_k (log p_k + H), H = 2 ln 2 − ¾ ln 3:
    k=0: ¼ (−2 ln 2 + H) = −(3/16) ln 3 = −0.205990; k=1: ¾ (ln 3 − 2 ln 2 + H) = +(3/16) ln 3."""
    grads = {}
    for direction in ("uniform_to_model", "model_to_uniform"):
        logits = torch.tensor([[[0.0, LN3], GARBAGE]], dtype=F64, requires_grad=True)
        out = SequenceOutputs(logits, torch.tensor([[-100, 1]]))
        get_forget("me").fn(UnlearningInputs(forget=out), ObjectiveParams(me_direction=direction)).backward()
        grads[direction] = logits.grad[0, 0]
    torch.testing.assert_close(grads["uniform_to_model"], torch.tensor([-0.25, 0.25], dtype=F64))
    torch.testing.assert_close(grads["model_to_uniform"], torch.tensor([-3 / 16 * LN3, 3 / 16 * LN3], dtype=F64))


def test_me_directions_share_the_uniform_minimiser():
    """Both KLs are ≥ 0 with equality only at p = U. Gradient descent (lr 1, 500 steps) from
    z = (0, ln 3, −1) reaches p = (1/3, 1/3, 1/3) within 1e-4 in both directions, where the loss is 0."""
    for direction in ("uniform_to_model", "model_to_uniform"):
        z = torch.tensor([[[0.0, LN3, -1.0], [0.0, 0.0, 0.0]]], dtype=F64, requires_grad=True)
        params = ObjectiveParams(me_direction=direction)
        for _ in range(500):
            z.grad = None
            loss = get_forget("me").fn(UnlearningInputs(forget=SequenceOutputs(z, torch.tensor([[-100, 0]]))), params)
            loss.backward()
            with torch.no_grad():
                z -= 1.0 * z.grad
        probs = torch.softmax(z[0, 0].detach(), dim=-1)
        torch.testing.assert_close(probs, torch.full((3,), 1 / 3, dtype=F64), atol=1e-4, rtol=0)
        assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_llmu_hand_value():
    """GA on tiny (−1.5 ln 2) plus the mean NLL of the mismatch answer (two tokens at p = ½: ln 2):
    −1.5 ln 2 + ln 2 = −½ ln 2 = −0.346574."""
    inputs = UnlearningInputs(forget=tiny(), forget_mismatch=uniform_pair())
    assert get_forget("llmu").fn(inputs, ObjectiveParams()).item() == pytest.approx(-0.5 * LN2)


# ---------------------------------------------------------------- regularizers


def test_kl_zero_when_logits_equal():
    """π_ref = πθ at every position → KL 0, whatever the logits."""
    out = random_outputs(3)
    out.ref_logits = out.logits.detach().clone()
    loss = get_regularizer("kl").fn(UnlearningInputs(retain=out), ObjectiveParams())
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_kl_two_token_hand_value_and_no_gradient_to_reference():
    """One labelled token: π_ref = softmax(0, 0) = (½, ½), πθ = softmax(0, ln 3) = (¼, ¾).
    KL(ref‖θ) = ½ ln(½ / ¼) + ½ ln(½ / ¾) = ½ ln(4/3) = 0.143841; the other direction, KL(θ‖ref) =
    ¾ ln 3 − ln 2 = 0.130812, would be wrong. The reference logits receive no gradient."""
    ref_logits = torch.tensor([[[0.0, 0.0], GARBAGE, [-3.0, 9.0]]], dtype=F64, requires_grad=True)
    logits = torch.tensor([[[0.0, LN3], [1.0, 2.0], GARBAGE]], dtype=F64, requires_grad=True)
    out = SequenceOutputs(logits, torch.tensor([[-100, 0, -100]]), ref_logits=ref_logits)
    loss = get_regularizer("kl").fn(UnlearningInputs(retain=out), ObjectiveParams())
    assert loss.item() == pytest.approx(0.143841, abs=1e-6)
    loss.backward()
    assert ref_logits.grad is None
    assert logits.grad[0, 0].abs().sum() > 0


def test_token_kl_matches_definition():
    """Per token, token_kl = Σ_v π_ref (log π_ref − log πθ), checked against the definition on random logits."""
    out = random_outputs(5)
    kl, mask = token_kl(out.ref_logits, out.logits, out.labels)
    log_ref = F.log_softmax(out.ref_logits[:, :-1], -1)
    log_p = F.log_softmax(out.logits[:, :-1], -1)
    expected = torch.where(mask, (log_ref.exp() * (log_ref - log_p)).sum(-1), 0.0)
    torch.testing.assert_close(kl, expected)


def test_ap_equal_likelihoods():
    """ℓ(idk) = ℓ(a_r) → −(1/β) log σ(0) = ln 2 / β; β = 0.1 → 6.931472."""
    inputs = UnlearningInputs(retain=tiny(), retain_idk=tiny())
    assert get_regularizer("ap").fn(inputs, ObjectiveParams(beta=0.1)).item() == pytest.approx(6.931472, abs=1e-6)


def test_ap_hand_value():
    """β = 1. ℓ(a_r) = 3 ln 2 (tiny). The refusal has one token at p = 1/24 (logits (0, ln 23), label 0),
    so ℓ(idk) = ln 24 = 3 ln 2 + ln 3. −log σ(ln 3) = −ln(3/4) = 0.287682."""
    refusal = SequenceOutputs(torch.tensor([[[0.0, math.log(23)], GARBAGE]], dtype=F64), torch.tensor([[-100, 0]]))
    inputs = UnlearningInputs(retain=tiny(), retain_idk=refusal)
    assert get_regularizer("ap").fn(inputs, ObjectiveParams(beta=1.0)).item() == pytest.approx(0.287682, abs=1e-6)


def test_no_regularizer_is_zero_on_the_inputs_device():
    """'none' is 0 on the device of the first given input (here the meta device), CPU without inputs."""
    meta = SequenceOutputs(torch.zeros(1, 2, 3, device="meta"), torch.zeros(1, 2, dtype=torch.long, device="meta"))
    assert get_regularizer("none").fn(UnlearningInputs(retain=meta), ObjectiveParams()).device.type == "meta"
    zero = get_regularizer("none").fn(UnlearningInputs(), ObjectiveParams())
    assert zero.device.type == "cpu" and zero.item() == 0.0


# ---------------------------------------------------------------- invariances


@pytest.mark.parametrize("params", PARAM_SETS, ids=["beta0.1-u2m", "beta0.7-m2u"])
@pytest.mark.parametrize("kind,name", ALL_TERMS)
@pytest.mark.parametrize("left", [False, True], ids=["right-pad", "left-pad"])
def test_padding_never_changes_a_value(kind, name, params, left):
    """Padding positions (label −100, logits ~100·N(0,1)) added on either side leave every term unchanged.
    (Left padding is safe because the first real label is −100, as for any answer-only label row.)"""
    inputs = random_inputs(10)
    padded = UnlearningInputs(**{
        f.name: pad(getattr(inputs, f.name), 3, left=left) for f in dataclasses.fields(UnlearningInputs)
    })
    fn = spec_of(kind, name).fn
    torch.testing.assert_close(fn(padded, params), fn(inputs, params))


@pytest.mark.parametrize("name", ["ga", "idk", "me", "llmu", "gd", "kl"])
def test_token_normalizer_makes_accumulated_micro_batches_equal_the_full_batch(name):
    """Token-mean terms: splitting a batch of 2 sequences with 4 and 2 labelled (shifted) tokens into two
    micro-batches, each with token_normalizer = 6 (the total), and summing the two losses gives the
    full-batch token mean (Σ over 6 tokens / 6) — not the mean of the two micro-batch means."""
    full = random_inputs(20)
    kind = "forget" if name in FORGET_TERMS else "regularizer"
    fn = spec_of(kind, name).fn
    params = ObjectiveParams(me_direction="model_to_uniform")

    def part(i: int) -> UnlearningInputs:
        fields = {}
        for f in dataclasses.fields(UnlearningInputs):
            o = getattr(full, f.name)
            total = int((o.labels[:, 1:] != -100).sum())
            fields[f.name] = SequenceOutputs(
                o.logits[i:i + 1], o.labels[i:i + 1], ref_logps=o.ref_logps[i:i + 1],
                ref_logits=o.ref_logits[i:i + 1], token_normalizer=total,
            )
        return UnlearningInputs(**fields)

    assert int((full.forget.labels[:, 1:] != -100).sum()) == 6  # rows hold 4 and 2 labelled tokens
    torch.testing.assert_close(fn(part(0), params) + fn(part(1), params), fn(full, params))


# ---------------------------------------------------------------- composition


def test_compute_objective_formula():
    """GA on tiny (−1.5 ln 2) and GD on tiny (1.5 ln 2) with coefficients 0.3 and 2.0:
    0.3·(−1.5 ln 2) + 2.0·(1.5 ln 2) = 2.55 ln 2 = 1.767525."""
    result = compute_objective(
        UnlearningInputs(forget=tiny(), retain=tiny()),
        forget="ga", regularizer="gd", forget_coeff=0.3, regularization_coeff=2.0, params=ObjectiveParams(),
    )
    assert result.forget_loss.item() == pytest.approx(-1.5 * LN2)
    assert result.regularization_loss.item() == pytest.approx(1.5 * LN2)
    assert result.loss.item() == pytest.approx(1.767525, abs=1e-6)


@pytest.mark.parametrize("method", list_methods(), ids=lambda m: m.name)
def test_compute_objective_every_named_method_is_finite_and_differentiable(method):
    """Every named method runs on full random inputs, gives a finite loss equal to its weighted parts,
    and sends a non-zero gradient into the forget logits."""
    inputs = random_inputs(30)
    result = compute_objective(
        inputs, forget=method.forget, regularizer=method.regularizer, forget_coeff=method.forget_coeff,
        regularization_coeff=method.regularization_coeff, params=ObjectiveParams(),
    )
    expected = method.forget_coeff * result.forget_loss + method.regularization_coeff * result.regularization_loss
    torch.testing.assert_close(result.loss, expected)
    assert torch.isfinite(result.loss)
    result.loss.backward()
    field = "forget_idk" if method.forget == "idk" else "forget"
    assert getattr(inputs, field).logits.grad.abs().sum() > 0


def test_compute_objective_reports_every_missing_input():
    """NPO+KL without inputs: forget and retain are both named; with them but without reference
    outputs: forget.ref_logps and retain.ref_logits are both named."""
    kwargs = dict(forget="npo", regularizer="kl", forget_coeff=1.0, regularization_coeff=1.0, params=ObjectiveParams())
    with pytest.raises(ValueError, match="forget, retain, which are None"):
        compute_objective(UnlearningInputs(), **kwargs)
    with pytest.raises(ValueError, match=r"forget\.ref_logps, retain\.ref_logits"):
        compute_objective(UnlearningInputs(forget=tiny(), retain=tiny()), **kwargs)


def test_compute_objective_rejects_bad_names_and_coefficients():
    """An unknown term is a ConfigError with a suggestion; a NaN coefficient is a ConfigError."""
    with pytest.raises(ConfigError, match="did you mean 'npo'"):
        compute_objective(UnlearningInputs(forget=tiny()), forget="nop", regularizer="none", forget_coeff=1.0,
                          regularization_coeff=1.0, params=ObjectiveParams())
    with pytest.raises(ConfigError, match="forget_coeff"):
        compute_objective(UnlearningInputs(forget=tiny()), forget="ga", regularizer="none", forget_coeff=math.nan,
                          regularization_coeff=1.0, params=ObjectiveParams())


def test_objective_params_lists_all_errors():
    """beta ≤ 0 and a misspelt direction are both reported, the direction with its suggestion."""
    with pytest.raises(ConfigError) as info:
        ObjectiveParams(beta=0.0, me_direction="uniform_to_modle")
    assert len(info.value.errors) == 2
    assert "did you mean 'uniform_to_model'" in str(info.value)


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("kind,name", ALL_TERMS)
def test_declared_needs_are_exactly_what_each_term_reads(kind, name):
    """With only the declared fields present a term runs; removing any declared field, or the declared
    reference output of a field, raises ValueError. So the trainer can trust ``required_inputs``."""
    spec = spec_of(kind, name)
    full = random_inputs(40)
    only = UnlearningInputs(**{f: getattr(full, f) for f in spec.needs})
    assert torch.isfinite(spec.fn(only, ObjectiveParams()))
    for field in spec.needs:
        with pytest.raises(ValueError, match=field):
            spec.fn(dataclasses.replace(only, **{field: None}), ObjectiveParams())
    refs = [(f, "ref_logps") for f in spec.needs_ref_logps] + [(f, "ref_logits") for f in spec.needs_ref_logits]
    for field, attr in refs:
        stripped = dataclasses.replace(getattr(only, field), **{attr: None})
        with pytest.raises(ValueError, match=attr):
            spec.fn(dataclasses.replace(only, **{field: stripped}), ObjectiveParams())


def test_registering_a_duplicate_name_raises():
    """'ga' exists; registering it again names the existing function and leaves the registry unchanged."""
    before = get_forget("ga")
    with pytest.raises(ValueError, match="already registered"):
        register_forget("ga", needs={"forget"}, description="again", paper="")(lambda inputs, params: torch.zeros(()))
    assert get_forget("ga") is before


def test_registry_lookup_and_did_you_mean():
    """A fresh registry: lookup is case-insensitive; a miss suggests the closest name and lists all."""
    reg = TermRegistry("forget term")

    @reg.register("alpha", needs={"forget"}, description="d", paper="p")
    def alpha(inputs, params):
        return torch.zeros(())

    assert reg.get(" ALPHA ").fn is alpha
    with pytest.raises(ConfigError, match=r"did you mean 'alpha'\? valid forget terms: alpha"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", needs=(), description="", paper="")(alpha)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="a+b", needs=()), "without spaces or '\\+'"),
    (dict(name="Upper", needs=()), "lower case"),
    (dict(name="x", needs={"forgett"}), "unknown input fields"),
    (dict(name="x", needs=(), needs_ref_logps={"forget"}), "not the fields themselves"),
])
def test_registry_rejects_malformed_declarations(kwargs, match):
    """A '+' would make method names ambiguous; fields must exist; a ref output implies its field."""
    with pytest.raises(ValueError, match=match):
        TermRegistry("forget term").register(description="", paper="", **kwargs)


def test_a_user_registered_term_becomes_a_method(monkeypatch):
    """Registering 'half_ga' (½·GA) makes 'half_ga+gd' resolvable and computable: on tiny,
    ½·(−1.5 ln 2) + 1.5 ln 2 = 0.75 ln 2 = 0.519860. (The registry is copied so the test leaves no trace.)"""
    monkeypatch.setattr(FORGET_TERMS, "_specs", dict(FORGET_TERMS._specs))

    @register_forget("half_ga", needs={"forget"}, description="half of GA", paper="")
    def half_ga(inputs, params):
        return 0.5 * get_forget("ga").fn(inputs, params)

    method = resolve_method("HALF_GA+GD")
    assert (method.forget, method.regularizer, method.forget_coeff, method.mask) == ("half_ga", "gd", 1.0, True)
    result = compute_objective(UnlearningInputs(forget=tiny(), retain=tiny()), forget=method.forget,
                               regularizer=method.regularizer, forget_coeff=method.forget_coeff,
                               regularization_coeff=method.regularization_coeff, params=ObjectiveParams())
    assert result.loss.item() == pytest.approx(0.75 * LN2)


# ---------------------------------------------------------------- methods


NAMED = [
    # name, forget, regularizer, forget_coeff, mask, targeted (docs/methods.md defaults)
    ("GA", "ga", "none", 1.0, True, False),
    ("GA+GD", "ga", "gd", 1.0, True, False),
    ("GA+KL", "ga", "kl", 1.0, True, False),
    ("NPO", "npo", "none", 1.0, True, False),
    ("NPO+GD", "npo", "gd", 1.0, True, False),
    ("NPO+KL", "npo", "kl", 1.0, True, False),
    ("DPO", "dpo", "none", 1.0, True, True),
    ("DPO+GD", "dpo", "gd", 1.0, True, True),
    ("DPO+KL", "dpo", "kl", 1.0, True, True),
    ("IDK+GD", "idk", "gd", 1.0, True, True),
    ("IDK+KL", "idk", "kl", 1.0, True, True),
    ("LLMU", "llmu", "kl", 1.0, True, False),
    ("ME+GD", "me", "gd", 0.1, False, False),
    ("IDK+AP", "idk", "ap", 1.0, True, True),
]


def test_list_methods_is_the_papers_fourteen_in_order():
    assert [m.name for m in list_methods()] == [row[0] for row in NAMED]


@pytest.mark.parametrize("row", NAMED, ids=[row[0] for row in NAMED])
def test_resolve_named_method(row):
    """Each named method, looked up in lower case, carries docs/methods.md's defaults (regularization_coeff 1.0)."""
    name, forget, regularizer, forget_coeff, mask, targeted = row
    method = resolve_method(name.lower())
    assert (method.name, method.forget, method.regularizer) == (name, forget, regularizer)
    assert (method.forget_coeff, method.regularization_coeff, method.mask, method.targeted) == (
        forget_coeff, 1.0, mask, targeted)
    assert method.paper


@pytest.mark.parametrize("text,expected", [
    ("me+kl", ("ME+KL", "me", "kl", 0.1, False, False)),
    (" Npo + Ap ", ("NPO+AP", "npo", "ap", 1.0, True, False)),
    ("idk", ("IDK", "idk", "none", 1.0, True, True)),
    ("ga+none", ("GA", "ga", "none", 1.0, True, False)),
    ("llmu+kl", ("LLMU", "llmu", "kl", 1.0, True, False)),
    ("LLMU+GD", ("LLMU+GD", "llmu", "gd", 1.0, True, False)),
])
def test_resolve_arbitrary_pairs(text, expected):
    """Pairs outside the named list get the defaults (ME pairs: 0.1 and mask False, like ME+GD); a pair
    equal to a named method returns that method."""
    m = resolve_method(text)
    assert (m.name, m.forget, m.regularizer, m.forget_coeff, m.mask, m.targeted) == expected


@pytest.mark.parametrize("text,suggestion", [("NPO+GF", "NPO+GD"), ("IDK+PA", "IDK+AP"), ("nop", "NPO")])
def test_resolve_typo_suggests(text, suggestion):
    with pytest.raises(ConfigError) as info:
        resolve_method(text)
    message = str(info.value)
    assert f"did you mean '{suggestion}'" in message
    assert "ME+GD" in message and "forget terms ga, npo" in message


@pytest.mark.parametrize("text", ["ME+GD+KL", "", "+gd", "ga+"])
def test_resolve_malformed_names(text):
    with pytest.raises(ConfigError):
        resolve_method(text)


@pytest.mark.parametrize("forget,regularizer,fields,ref_logps,ref_logits", [
    ("npo", "none", ("forget",), ("forget",), ()),
    ("dpo", "none", ("forget", "forget_idk"), ("forget", "forget_idk"), ()),
    ("ga", "kl", ("forget", "retain"), (), ("retain",)),
    ("idk", "ap", ("forget_idk", "retain", "retain_idk"), (), ()),
    ("llmu", "kl", ("forget", "retain", "forget_mismatch"), (), ("retain",)),
    ("me", "gd", ("forget", "retain"), (), ()),
])
def test_required_inputs(forget, regularizer, fields, ref_logps, ref_logits):
    need = required_inputs(forget, regularizer)
    assert (need.fields, need.ref_logps, need.ref_logits) == (fields, ref_logps, ref_logits)
    assert need.needs_reference_model == bool(ref_logps or ref_logits)


def test_only_npo_dpo_kl_llmu_need_a_reference_model():
    for m in list_methods():
        expected = m.forget in {"npo", "dpo"} or m.regularizer == "kl"
        assert required_inputs(m.forget, m.regularizer).needs_reference_model == expected, m.name


def test_required_inputs_unknown_names_report_both():
    with pytest.raises(ConfigError) as info:
        required_inputs("gaa", "gdd")
    assert len(info.value.errors) == 2
    assert "did you mean 'ga'" in info.value.errors[0] and "did you mean 'gd'" in info.value.errors[1]
