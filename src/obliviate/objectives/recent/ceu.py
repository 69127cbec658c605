"""CE-U: cross-entropy towards the model's own distribution with the forget token removed
(docs/methods.md, "Newer methods")."""

from __future__ import annotations

from torch import Tensor
import torch

from obliviate.objectives.logprobs import token_mean, token_rows
from obliviate.objectives.methods import register_method
from obliviate.objectives.registry import register_forget
from obliviate.objectives.terms import require
from obliviate.objectives.types import UnlearningInputs

PAPER = "Yang, 2025, CE-U: Cross Entropy Unlearning, arXiv 2503.01224"


def ceu_rows(z: Tensor, targets: Tensor, ref_z: Tensor | None) -> Tensor:
    """The row function: cross-entropy of softmax(z) against sg(softmax(z with the target's logit at −∞))."""
    masked = z.detach().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    q = torch.softmax(masked, dim=-1)
    log_p = torch.log_softmax(z, dim=-1)
    return -(q * log_p.masked_fill(q == 0, 0.0)).sum(dim=-1)


@register_forget(
    "ceu",
    needs={"forget"},
    description="cross-entropy towards the model's own next-token distribution without the forget token",
    paper=PAPER,
    formula="mean over forget tokens t of H(sg(softmax(z_t with z_t[y_t] = −∞)), p_t)",
    test="tests/unit/test_method_ceu.py",
)
def ceu(inputs: UnlearningInputs, params: object) -> Tensor:
    """CE-U (Yang, 2025)::

        L = mean over labelled forget tokens t of  −Σ_{v ≠ y_t} q_t(v) log p_t(v),
        q_t = sg(softmax(z_t − ∞·e_{y_t}))

    The target is the model's own distribution renormalised without the forget token (no gradient through it);
    the gradient with respect to the logits is ``p_t − q_t``, which stays bounded where gradient ascent's does not.
    """
    forget = require(inputs, "forget")
    ce, mask = token_rows(forget.logits, forget.labels, ceu_rows)
    return token_mean(ce, mask, forget.token_normalizer)


register_method(
    "CE-U", "ceu", "none",
    description="cross-entropy unlearning (no retain term)",
    paper=PAPER,
    aliases=("CEU",),
    test="tests/unit/test_method_ceu.py",
)
