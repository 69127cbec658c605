"""WGA: token-weighted gradient ascent (docs/methods.md, "Newer methods")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from obliviate.objectives.logprobs import token_logprobs, token_mean
from obliviate.objectives.methods import register_method
from obliviate.objectives.params import param
from obliviate.objectives.registry import register_forget
from obliviate.objectives.terms import require
from obliviate.objectives.types import UnlearningInputs

PAPER = ("Wang, Zhou, Zhou, Shin, Han, Weinberger, 2025, Rethinking LLM Unlearning Objectives: A Gradient "
         "Perspective and Go Beyond, arXiv 2502.19301")


@dataclass(frozen=True)
class WGAParams:
    beta: float = param(1.0, ge=0, doc="exponent of the token weight p^β (open-unlearning's default)")


@register_forget(
    "wga",
    needs={"forget"},
    params=WGAParams,
    description="weighted gradient ascent: each forget token's log-probability weighted by p^β (no gradient)",
    paper=PAPER,
    formula="mean over forget tokens t of sg(p_t^β) · log p_t,  p_t = πθ(y_t|y_<t)",
    test="tests/unit/test_method_wga.py",
)
def wga(inputs: UnlearningInputs, params: WGAParams) -> Tensor:
    """Weighted gradient ascent (Wang et al., 2025)::

        L = mean over labelled forget tokens t of  w_t · log p_t,   w_t = sg(p_t)^β

    ``sg`` stops the gradient: the weight scales each token's ascent step, which fades once the token is
    unlikely (β = 0 is GA). A token mean honouring ``token_normalizer``.
    """
    forget = require(inputs, "forget")
    logp, mask = token_logprobs(forget.logits, forget.labels)
    weight = logp.detach().exp() ** params.beta
    return token_mean(weight * logp, mask, forget.token_normalizer)


register_method(
    "WGA+GD", "wga", "gd",
    description="weighted gradient ascent on forget, gradient descent on retain",
    paper=PAPER,
    forget_params={"beta": 1.0},
    aliases=("WGA",),
    test="tests/unit/test_method_wga.py",
)
