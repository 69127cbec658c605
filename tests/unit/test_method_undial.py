"""UNDIAL (docs/methods.md, "Newer methods"): hand value and gradient, the chunked path, its names."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.objectives import (SequenceOutputs, UnlearningInputs, get_forget, required_inputs,
                                  resolve_method)
from obliviate.objectives.recent.undial import UndialParams
from test_chunked import check_term, make_case

LN3, LN4 = math.log(3.0), math.log(4.0)


def case() -> SequenceOutputs:
    """One labelled token (target 0), V = 2. Policy logits (ln 3, 0): p = (3/4, 1/4). Reference logits (0, 0)."""
    logits = torch.zeros(1, 2, 2, dtype=torch.float64)
    logits[0, 0, 0] = LN3
    labels = torch.tensor([[-100, 0]])
    return SequenceOutputs(logits.requires_grad_(), labels, ref_logits=torch.zeros(1, 2, 2, dtype=torch.float64))


def test_hand_value_and_gradient():
    """β = ln 3: the target's reference logit goes to −ln 3, q = softmax(−ln 3, 0) = (1/4, 3/4).
    H(q, p) = −(1/4 ln 3/4 + 3/4 ln 1/4) = ln 4 − (1/4) ln 3 = 1.1116413; ∂/∂z = p − q = (1/2, −1/2)."""
    out = case()
    loss = get_forget("undial").fn(UnlearningInputs(forget=out), UndialParams(beta=LN3))
    assert loss.item() == pytest.approx(1.1116413, abs=1e-7)
    assert loss.item() == pytest.approx(LN4 - LN3 / 4, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(out.logits.grad[0, 0], torch.tensor([0.5, -0.5], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_beta_zero_is_distillation_to_the_reference():
    """β = 0: q = softmax(0, 0) = (1/2, 1/2); H(q, p) = −(ln 3/4 + ln 1/4)/2 = ln 4 − (1/2) ln 3 = 0.8369882."""
    loss = get_forget("undial").fn(UnlearningInputs(forget=case()), UndialParams(beta=0.0))
    assert loss.item() == pytest.approx(0.8369882, abs=1e-7)


def test_chunked_equals_materialised():
    """Reference logits chunked too (the trainer's path) and materialised: values and gradients agree."""
    p = UndialParams(beta=3.0)
    fn = get_forget("undial").fn
    check_term(lambda inputs: fn(inputs, p), make_case(41), rel=1e-10)
    check_term(lambda inputs: fn(inputs, p), make_case(42, torch.float32), rel=1e-6)


def test_names_and_what_it_reads():
    m = resolve_method("undial")
    assert (m.name, m.forget, m.regularizer, m.forget_params) == ("UNDIAL", "undial", "none", {"beta": 10.0})
    need = required_inputs("undial", "none")
    assert need.ref_logits == ("forget",) and need.needs_reference_model
