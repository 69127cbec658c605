"""UNDIAL: self-distillation towards the frozen model's logits with the target token's logit lowered
(docs/methods.md, "Newer methods")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from obliviate.objectives.logprobs import token_mean, token_rows
from obliviate.objectives.methods import register_method
from obliviate.objectives.params import param
from obliviate.objectives.registry import register_forget
from obliviate.objectives.terms import require, require_ref_logits
from obliviate.objectives.types import UnlearningInputs

PAPER = ("Dong, Lin, Belkin, Huerta, Vulić, 2024, UNDIAL: Self-Distillation with Adjusted Logits for Robust "
         "Unlearning in Large Language Models, arXiv 2402.10052")


@dataclass(frozen=True)
class UndialParams:
    beta: float = param(10.0, ge=0, doc="how far the target token's logit is lowered (open-unlearning's TOFU value)")


def undial_rows(beta: float):
    """The row function: cross-entropy of the policy's row against softmax(ref row − β·onehot(target))."""
    def fn(z: Tensor, targets: Tensor, ref_z: Tensor) -> Tensor:
        adjusted = ref_z.to(z.dtype).scatter_add(
            -1, targets.unsqueeze(-1), torch.full_like(targets, -beta, dtype=z.dtype).unsqueeze(-1))
        q = torch.softmax(adjusted, dim=-1)
        return -(q * torch.log_softmax(z, dim=-1)).sum(dim=-1)
    return fn


@register_forget(
    "undial",
    needs={"forget"},
    needs_ref_logits={"forget"},
    params=UndialParams,
    description="distil from the frozen model's next-token distribution with the forget token's logit lowered by β",
    paper=PAPER,
    formula="mean over forget tokens t of H(softmax(z_ref,t − β·e_{y_t}), p_t)",
    test="tests/unit/test_method_undial.py",
)
def undial(inputs: UnlearningInputs, params: UndialParams) -> Tensor:
    """UNDIAL (Dong et al., 2024)::

        L = mean over labelled forget tokens t of  −Σ_v q_t(v) log p_t(v),   q_t = softmax(z_ref,t − β·e_{y_t})

    ``z_ref,t`` are the frozen starting model's logits at t, ``e_{y_t}`` the one-hot of the forget token: the
    target keeps everything the model knew except the forget token's logit, lowered by β. The cross-entropy has the
    gradient of KL(q_t ‖ p_t) (they differ by the entropy of the fixed q_t). Chunked like every token term.
    """
    forget = require(inputs, "forget")
    ce, mask = token_rows(forget.logits, forget.labels, undial_rows(params.beta),
                          ref_logits=require_ref_logits(inputs, "forget"))
    return token_mean(ce, mask, forget.token_normalizer)


register_method(
    "UNDIAL", "undial", "none",
    description="self-distillation on adjusted logits (no retain term)",
    paper=PAPER,
    forget_params={"beta": 10.0},
    test="tests/unit/test_method_undial.py",
    train={"learning_rate": 1e-4, "num_epochs": 10.0, "batch_size": 2, "gradient_accumulation_steps": 8},
)
