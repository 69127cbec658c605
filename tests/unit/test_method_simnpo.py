"""SimNPO (docs/methods.md, "Newer methods"): hand values, the chunked path, its config and names."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.config import config_from_dict
from obliviate.errors import ConfigError
from obliviate.objectives import SequenceOutputs, UnlearningInputs, compute_objective, get_forget, resolve_method
from obliviate.objectives.recent.simnpo import SimNPOParams
from test_chunked import check_term, make_case

LN2, LN3 = math.log(2.0), math.log(3.0)


def forget_batch() -> SequenceOutputs:
    """Sequence A: one labelled token with p = 1/2 (logits (ln 3, 0, 0, 0), target 0) → ℓ̄ = ln 2.
    Sequence B: two labelled tokens, p = 1/2 and p = 1/4 (all-zero logits) → ℓ̄ = (ln 2 + ln 4)/2 = 1.5 ln 2.
    Position 0 is the question (label −100); A is padded after its token."""
    logits = torch.zeros(2, 3, 4, dtype=torch.float64)
    logits[0, 0, 0] = LN3
    logits[1, 0, 0] = LN3
    labels = torch.tensor([[-100, 0, -100], [-100, 0, 2]])
    return SequenceOutputs(logits.requires_grad_(), labels)


def test_hand_value_length_normalised():
    """β = 1, γ = 0: L = −2 · mean(log σ(ln 2), log σ(1.5 ln 2)); σ(ln 2) = 2/3, σ(1.5 ln 2) = 2√2/(1 + 2√2)
    = 0.7387961; logs −0.4054651, −0.3027333; L = −2 · (−0.3540992) = 0.7081984."""
    loss = get_forget("simnpo").fn(UnlearningInputs(forget=forget_batch()), SimNPOParams(beta=1.0, gamma=0.0))
    assert loss.item() == pytest.approx(0.7081984, abs=1e-7)
    s = 2 * math.sqrt(2)
    assert loss.item() == pytest.approx(-(math.log(2 / 3) + math.log(s / (1 + s))), abs=1e-12)


def test_hand_value_margin():
    """Uniform logits over V = 4: every token has ℓ = ln 4, so ℓ̄ = ln 4 whatever the length. β = 2: γ = 0 gives
    −(2/2) log σ(2 ln 4) = log(17/16) = 0.0606246; γ = 2 ln 4 puts the argument at 0: −log σ(0) = ln 2."""
    labels = torch.tensor([[-100, 1, 3], [-100, 2, -100]])
    out = SequenceOutputs(torch.zeros(2, 3, 4, dtype=torch.float64), labels)
    fn = get_forget("simnpo").fn
    assert fn(UnlearningInputs(forget=out), SimNPOParams(beta=2.0)).item() == pytest.approx(0.0606246, abs=1e-7)
    assert fn(UnlearningInputs(forget=out), SimNPOParams(beta=2.0, gamma=2 * math.log(4))).item() == \
        pytest.approx(LN2, abs=1e-12)


def test_chunked_equals_materialised():
    """Values and gradients of the chunked output layer within 1e-10 (float64) and 1e-6 (float32)."""
    p = SimNPOParams(beta=2.5, gamma=0.3)
    fn = get_forget("simnpo").fn
    check_term(lambda inputs: fn(inputs, p), make_case(11), rel=1e-10)
    check_term(lambda inputs: fn(inputs, p), make_case(12, torch.float32), rel=1e-6)


def test_method_names_defaults_and_config():
    """open-unlearning's 'SimNPO' (with its retain term) is SimNPO+GD, with the authors' TOFU forget05 setting
    (β = 2.5, γ = 0, λ = 0.1375; forget10's β = 4.5, λ = 0.125 go into its shipped configs); the parameters are
    checked at config time."""
    m = resolve_method("SimNPO")
    assert (m.name, m.forget, m.regularizer, m.forget_coeff, m.regularization_coeff) == \
        ("SimNPO+GD", "simnpo", "gd", 1.0, 0.1375)
    assert dict(m.forget_params) == {"beta": 2.5, "gamma": 0.0}
    assert m.tofu_splits["forget10"] == {"forget_params": {"beta": 4.5}, "regularization_coeff": 0.125}
    assert resolve_method("simnpo+gd") is m
    base = {"data": {"forget": "f.json"}, "output_dir": "/tmp/obliviate-test-simnpo"}
    cfg = config_from_dict("unlearn", base, ["method.name=SimNPO", "method.forget_params={beta: 2.5, gamma: 0.5}"])
    assert cfg.method.forget_params == {"beta": 2.5, "gamma": 0.5}
    with pytest.raises(ConfigError, match=r"method.forget_params.gama: unknown parameter \(did you mean "
                                          r"'method.forget_params.gamma'\?\)"):
        config_from_dict("unlearn", base, ["method.name=SimNPO", "method.forget_params={gama: 1}"])
    with pytest.raises(ConfigError, match=r"method.forget_params.beta: must be > 0"):
        config_from_dict("unlearn", base, ["method.name=SimNPO", "method.forget_params={beta: 0}"])
    with pytest.raises(ConfigError, match="method.beta: SimNPO\\+GD does not read it"):
        config_from_dict("unlearn", base, ["method.name=SimNPO", "method.beta=0.5"])


def test_composed_with_gd():
    """SimNPO+GD = simnpo + 0.1375 · gd; on the forget batch as retain too (β = 1): 0.7081984 + 0.1375 · mean NLL
    (ln 2 + ln 2 + ln 4)/3 = 0.7081984 + 0.1375 · (4/3) ln 2 = 0.8352754."""
    out = forget_batch()
    m = resolve_method("SimNPO")
    result = compute_objective(UnlearningInputs(forget=out, retain=out), forget=m.forget, regularizer=m.regularizer,
                               forget_coeff=m.forget_coeff, regularization_coeff=m.regularization_coeff,
                               forget_params=SimNPOParams(beta=1.0))
    assert result.loss.item() == pytest.approx(0.8352754, abs=1e-7)
    assert result.loss.item() == pytest.approx(0.7081984 + 0.1375 * 4 / 3 * LN2, abs=1e-7)
