"""SatImp: gradient ascent weighted by saturation × importance (docs/methods.md, "Newer methods")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from obliviate.objectives.logprobs import token_logprobs, token_mean
from obliviate.objectives.methods import register_method
from obliviate.objectives.params import param
from obliviate.objectives.registry import register_forget
from obliviate.objectives.terms import require
from obliviate.objectives.types import UnlearningInputs

PAPER = ("Yang, Wang, Huang, Liu, Zhang, Han, 2025, Exploring Criteria of Loss Reweighting to Enhance LLM "
         "Unlearning, arXiv 2505.11953")


@dataclass(frozen=True)
class SatImpParams:
    beta1: float = param(5.0, ge=0, doc="exponent of p_t in the weight (open-unlearning's default)")
    beta2: float = param(1.0, ge=0, doc="exponent of 1 − p_t in the weight (open-unlearning's default)")


@register_forget(
    "satimp",
    needs={"forget"},
    params=SatImpParams,
    description="gradient ascent with token weights p^β1 (1 − p)^β2 (no gradient through the weights)",
    paper=PAPER,
    formula="mean over forget tokens t of sg(p_t^β1 (1 − p_t)^β2) · log p_t",
    test="tests/unit/test_method_satimp.py",
)
def satimp(inputs: UnlearningInputs, params: SatImpParams) -> Tensor:
    """SatImp (Yang et al., 2025)::

        L = mean over labelled forget tokens t of  w_t · log p_t,   w_t = sg(p_t^β1 · (1 − p_t)^β2)

    The weight multiplies a saturation factor (p^β1) and an importance factor ((1 − p)^β2), as open-unlearning
    computes them. A token mean honouring ``token_normalizer``.
    """
    forget = require(inputs, "forget")
    logp, mask = token_logprobs(forget.logits, forget.labels)
    p = logp.detach().exp()
    weight = p ** params.beta1 * (1.0 - p) ** params.beta2
    return token_mean(weight * logp, mask, forget.token_normalizer)


register_method(
    "SatImp+GD", "satimp", "gd",
    description="saturation × importance weighted gradient ascent on forget, gradient descent on retain",
    paper=PAPER,
    forget_coeff=0.1,
    forget_params={"beta1": 5.0, "beta2": 1.0},
    aliases=("SatImp",),
    test="tests/unit/test_method_satimp.py",
)
