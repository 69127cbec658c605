"""SatImp (docs/methods.md, "Newer methods"): hand values and gradient, the chunked path, its names."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.objectives import SequenceOutputs, UnlearningInputs, get_forget, resolve_method
from obliviate.objectives.recent.satimp import SatImpParams
from test_chunked import check_term, make_case

LN2 = math.log(2.0)


def halves() -> SequenceOutputs:
    """All-zero logits over V = 2: each of the 2 labelled tokens has p = 1/2."""
    labels = torch.tensor([[-100, 1, 0]])
    return SequenceOutputs(torch.zeros(1, 3, 2, dtype=torch.float64, requires_grad=True), labels)


def test_hand_values():
    """β1 = 5, β2 = 1: w = (1/2)^5 (1/2) = 1/64, L = −ln 2 / 64 = −0.0108304. β1 = 0, β2 = 2: w = 1/4,
    L = −ln 2 / 4 = −0.1732868. β1 = β2 = 0 is GA: −ln 2."""
    fn = get_forget("satimp").fn
    out = halves()
    assert fn(UnlearningInputs(forget=out), SatImpParams()).item() == pytest.approx(-0.0108304, abs=1e-7)
    assert fn(UnlearningInputs(forget=out), SatImpParams(beta1=0.0, beta2=2.0)).item() == \
        pytest.approx(-0.1732868, abs=1e-7)
    assert fn(UnlearningInputs(forget=out), SatImpParams(beta1=0.0, beta2=0.0)).item() == pytest.approx(-LN2)


def test_gradient_has_no_term_from_the_weight():
    """∂L/∂z_t = w_t (e_y − p_t) / N: at the defaults, (1/64)(e_1 − 1/2)/2 → ±1/256 at position 0."""
    out = halves()
    get_forget("satimp").fn(UnlearningInputs(forget=out), SatImpParams()).backward()
    torch.testing.assert_close(out.logits.grad[0, 0], torch.tensor([-1 / 256, 1 / 256], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_chunked_equals_materialised():
    """Float64, 1e-10 (float32 is ill-conditioned for this term: see tests/unit/test_chunked.py)."""
    p = SatImpParams(beta1=2.0, beta2=1.0)
    fn = get_forget("satimp").fn
    check_term(lambda inputs: fn(inputs, p), make_case(31), rel=1e-10)


def test_names():
    """open-unlearning's SatImp: forget × 0.1 + retain NLL × 1 (its configs/trainer/SatImp.yaml)."""
    m = resolve_method("SatImp")
    assert (m.name, m.forget, m.regularizer, m.forget_coeff, m.regularization_coeff) == \
        ("SatImp+GD", "satimp", "gd", 0.1, 1.0)
