"""WGA (docs/methods.md, "Newer methods"): hand values and gradient, the chunked path, its names."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.objectives import SequenceOutputs, UnlearningInputs, get_forget, resolve_method
from obliviate.objectives.recent.wga import WGAParams
from test_chunked import check_term, make_case

LN4 = math.log(4.0)


def uniform() -> SequenceOutputs:
    """All-zero logits over V = 4: every labelled token (3 of them) has p = 1/4, log p = −ln 4."""
    labels = torch.tensor([[-100, 1, 3], [-100, 2, -100]])
    return SequenceOutputs(torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True), labels)


def test_hand_values():
    """β = 1: w = 1/4, w · log p = −ln 4 / 4 = −0.3465736; β = 2: −ln 4 / 16 = −0.0866434; β = 0 is GA: −ln 4."""
    fn = get_forget("wga").fn
    out = uniform()
    assert fn(UnlearningInputs(forget=out), WGAParams(beta=1.0)).item() == pytest.approx(-0.3465736, abs=1e-7)
    assert fn(UnlearningInputs(forget=out), WGAParams(beta=2.0)).item() == pytest.approx(-0.0866434, abs=1e-7)
    assert fn(UnlearningInputs(forget=out), WGAParams(beta=0.0)).item() == pytest.approx(-LN4, abs=1e-12)


def test_gradient_is_weighted_ascent():
    """The weight carries no gradient: ∂L/∂z_t = w_t (e_y − p_t) / N with N = 3 tokens. At β = 1, position (0, 0)
    predicting token 1: (1/4)(e_1 − 1/4) / 3 → 0.0625 at token 1 and −0.0208333 elsewhere."""
    out = uniform()
    get_forget("wga").fn(UnlearningInputs(forget=out), WGAParams(beta=1.0)).backward()
    g = out.logits.grad[0, 0]
    expected = torch.full((4,), -1 / 48, dtype=torch.float64)
    expected[1] = 3 / 48
    torch.testing.assert_close(g, expected, atol=1e-12, rtol=0)


def test_chunked_equals_materialised():
    p = WGAParams(beta=1.5)
    fn = get_forget("wga").fn
    check_term(lambda inputs: fn(inputs, p), make_case(21), rel=1e-10)
    check_term(lambda inputs: fn(inputs, p), make_case(22, torch.float32), rel=1e-6)


def test_names():
    m = resolve_method("WGA")
    assert (m.name, m.forget, m.regularizer, m.forget_coeff, m.regularization_coeff, m.mask) == \
        ("WGA+GD", "wga", "gd", 1.0, 1.0, True)
