"""CE-U (docs/methods.md, "Newer methods"): hand value and gradient, the chunked path, its names."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.objectives import SequenceOutputs, UnlearningInputs, get_forget, required_inputs, resolve_method
from test_chunked import check_term, make_case

LN2, LN3, LN6 = math.log(2.0), math.log(3.0), math.log(6.0)


def case() -> SequenceOutputs:
    """One labelled token (target 0), V = 3, logits (ln 2, 0, ln 3): p = (2/6, 1/6, 3/6)."""
    logits = torch.tensor([[[LN2, 0.0, LN3], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    return SequenceOutputs(logits.requires_grad_(), torch.tensor([[-100, 0]]))


def test_hand_value_and_gradient():
    """The target drops token 0: q ∝ (0, 1, 3) = (0, 1/4, 3/4). H(q, p) = −(1/4 ln 1/6 + 3/4 ln 1/2)
    = (1/4) ln 6 + (3/4) ln 2 = 0.9678003; ∂/∂z = p − q = (1/3, −1/12, −1/4) (no gradient through q)."""
    out = case()
    loss = get_forget("ceu").fn(UnlearningInputs(forget=out), None)
    assert loss.item() == pytest.approx(0.9678003, abs=1e-7)
    assert loss.item() == pytest.approx(LN6 / 4 + 3 * LN2 / 4, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(out.logits.grad[0, 0], torch.tensor([1 / 3, -1 / 12, -1 / 4], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_chunked_equals_materialised():
    """Float64, 1e-10 (float32 is ill-conditioned for this term: see tests/unit/test_chunked.py)."""
    fn = get_forget("ceu").fn
    check_term(lambda inputs: fn(inputs, None), make_case(51), rel=1e-10)


def test_names():
    m = resolve_method("CEU")
    assert (m.name, m.forget, m.regularizer) == ("CE-U", "ceu", "none")
    assert not required_inputs("ceu", "none").needs_reference_model
