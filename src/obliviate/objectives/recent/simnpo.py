"""SimNPO: reference-free, length-normalised NPO with a reward margin (docs/methods.md, "Newer methods")."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from obliviate.objectives.logprobs import sequence_logprob
from obliviate.objectives.methods import register_method
from obliviate.objectives.params import param
from obliviate.objectives.registry import register_forget
from obliviate.objectives.terms import require
from obliviate.objectives.types import IGNORE_INDEX, UnlearningInputs

PAPER = ("Fan, Liu, Lin, Jia, Zhang, Mei, Liu, 2024, Simplicity Prevails: Rethinking Negative Preference "
         "Optimization for LLM Unlearning, arXiv 2410.07163")


@dataclass(frozen=True)
class SimNPOParams:
    beta: float = param(2.5, gt=0, doc="inverse temperature β (the authors' TOFU forget05 model: 2.5)")
    gamma: float = param(0.0, ge=0, doc="reward margin γ, outside β as in the paper (open-unlearning's δ = γ/β)")


@register_forget(
    "simnpo",
    needs={"forget"},
    params=SimNPOParams,
    description="SimNPO: NPO without a reference, on the length-normalised log-probability, with margin γ",
    paper=PAPER,
    formula="−(2/β)·mean_batch log σ(β·ℓ̄(a_f|q_f) − γ),  ℓ̄ = ℓ(a_f|q_f)/|a_f| per sequence",
    test="tests/unit/test_method_simnpo.py",
)
def simnpo(inputs: UnlearningInputs, params: SimNPOParams) -> Tensor:
    """SimNPO (Fan et al., 2024, eq. 4)::

        L = −(2/β) · mean_batch log σ(−(β/|a_f|) · log πθ(a_f|q_f) − γ)

    with ``|a_f|`` the number of labelled tokens of each forget sequence (a sequence without any counts as one,
    giving log π = 0). Like NPO it tends to 0 as the forget answers become unlikely; no reference model is read.
    """
    forget = require(inputs, "forget")
    logp = sequence_logprob(forget.logits, forget.labels)
    length = (forget.labels[:, 1:] != IGNORE_INDEX).sum(dim=-1).clamp(min=1).to(logp.dtype)
    return -(2.0 / params.beta) * F.logsigmoid(-params.beta * logp / length - params.gamma).mean()


# The authors' released TOFU models (Llama-2-7B-chat, lr 1e-5): forget05 β = 2.5, λ = 0.1375, γ = 0; forget10
# β = 4.5, λ = 0.125, γ = 0. None is published for forget01, which takes forget05's.
register_method(
    "SimNPO+GD", "simnpo", "gd",
    description="SimNPO on forget, gradient descent on retain",
    paper=PAPER,
    regularization_coeff=0.1375,
    forget_params={"beta": 2.5, "gamma": 0.0},
    tofu_splits={"forget10": {"forget_params": {"beta": 4.5}, "regularization_coeff": 0.125}},
    aliases=("SimNPO",),
    test="tests/unit/test_method_simnpo.py",
)
