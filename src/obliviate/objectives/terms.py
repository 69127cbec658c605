"""Forget terms and regularizers (docs/methods.md), each a pure function of logits, labels and log-probs.

Every term has the signature ``fn(inputs: UnlearningInputs, params) -> Tensor`` (a scalar in nats) and is
registered at its definition with the inputs it reads and its parameters (NPO, DPO and AP: :class:`BetaParams`,
set by ``method.beta``; ME: :class:`MEParams`, set by ``method.me_direction``). Token-level terms
(GA, IDK, ME, GD, KL, LLMU) are token means honouring ``token_normalizer``; sequence-level terms (NPO,
DPO, AP) are plain means over the batch of a function of summed log-probabilities.

Notation: ``ℓ(a|q)`` is the summed token NLL of the answer, ``log π(a|q) = −ℓ(a|q)``, ``β`` is
``params.beta``, ``σ`` the logistic function. ``log σ`` is computed with ``F.logsigmoid``, which stays
finite where ``log(sigmoid(x))`` underflows to −inf (x ≲ −104 in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from obliviate.objectives.logprobs import mean_token_nll, sequence_logprob, token_kl, token_mean, token_uniform_kl
from obliviate.objectives.params import NoParams, param
from obliviate.objectives.registry import register_forget, register_regularizer
from obliviate.objectives.types import ME_DIRECTIONS, INPUT_FIELDS, SequenceOutputs, UnlearningInputs

PAPER_YUAN = "Yuan et al., 2024, A Closer Look at Machine Unlearning for Large Language Models, arXiv 2410.08109"
PAPER_TOFU = "Maini et al., 2024, TOFU: A Task of Fictitious Unlearning for LLMs, arXiv 2401.06121"
PAPER_GA = "Jang et al., 2023, Knowledge Unlearning for Mitigating Privacy Risks in Language Models, arXiv 2210.01504"
PAPER_NPO = (
    "Zhang, Lin, Bai, Mei, 2024, Negative Preference Optimization: From Catastrophic Collapse to Effective "
    "Unlearning, arXiv 2404.05868"
)
PAPER_DPO = "Rafailov et al., 2023, Direct Preference Optimization, arXiv 2305.18290"
PAPER_GD = "Liu, Liu, Stone, 2022, Continual Learning and Private Unlearning, arXiv 2203.12817"
PAPER_LLMU = "Yao, Xu, Liu, 2023, Large Language Model Unlearning, arXiv 2310.10683"


@dataclass(frozen=True)
class BetaParams:
    """The inverse temperature of NPO, DPO and AP; ``method.beta`` sets it."""

    SHARED: ClassVar[tuple[str, ...]] = ("beta",)
    beta: float = param(0.1, gt=0, doc="inverse temperature β (paper default 0.1; method.beta)")


@dataclass(frozen=True)
class MEParams:
    """The KL direction of ME; ``method.me_direction`` sets it."""

    SHARED: ClassVar[tuple[str, ...]] = ("me_direction",)
    me_direction: str = param("uniform_to_model", choices=ME_DIRECTIONS,
                              doc="KL(U‖p_t) as the released code (default) or KL(p_t‖U) as the paper's equation "
                                  "(method.me_direction)")


def require(inputs: UnlearningInputs, field: str) -> SequenceOutputs:
    """``getattr(inputs, field)``, raising ValueError if that batch was not provided."""
    if field not in INPUT_FIELDS:
        raise ValueError(f"unknown UnlearningInputs field {field!r}; valid: {', '.join(INPUT_FIELDS)}")
    out = getattr(inputs, field)
    if out is None:
        raise ValueError(f"this objective needs UnlearningInputs.{field}, which is None")
    return out


def require_ref_logps(inputs: UnlearningInputs, field: str, like: Tensor) -> Tensor:
    """The reference log-probs ``(B,)`` of ``inputs.<field>``, detached, on the device and dtype of ``like``.

    The reference model is frozen: detaching guarantees no gradient reaches it, and the cast lets a
    bfloat16 reference be compared with float32 policy log-probs. ValueError if they were not provided.
    """
    ref = require(inputs, field).ref_logps
    if ref is None:
        raise ValueError(f"this objective needs UnlearningInputs.{field}.ref_logps (reference model), which is None")
    return ref.detach().to(device=like.device, dtype=like.dtype)


def require_ref_logits(inputs: UnlearningInputs, field: str) -> Tensor:
    """The reference logits ``(B, T, V)`` of ``inputs.<field>``; ValueError if they were not provided."""
    ref = require(inputs, field).ref_logits
    if ref is None:
        raise ValueError(f"this objective needs UnlearningInputs.{field}.ref_logits (reference model), which is None")
    return ref


# ---------------------------------------------------------------- forget terms


@register_forget(
    "ga",
    needs={"forget"},
    description="gradient ascent: −mean token NLL(a_f|q_f)",
    paper=PAPER_GA,
)
def ga(inputs: UnlearningInputs, params: NoParams) -> Tensor:
    """Gradient ascent on the forget answers: ``L = −ℓ̄(a_f|q_f)`` (Jang et al., 2023; docs/methods.md, GA).

    Minimising it maximises the token NLL of the forget answers; it is unbounded below.
    """
    return -mean_token_nll(require(inputs, "forget"))


@register_forget(
    "npo",
    params=BetaParams,
    needs={"forget"},
    needs_ref_logps={"forget"},
    description="negative preference optimisation against the reference model",
    paper=PAPER_NPO,
)
def npo(inputs: UnlearningInputs, params: BetaParams) -> Tensor:
    """Negative preference optimisation (Zhang et al., 2024; docs/methods.md, NPO)::

        L = −(2/β) · mean_batch log σ(−β · (log πθ(a_f|q_f) − log π_ref(a_f|q_f)))

    with summed log-probabilities. At ``πθ = π_ref`` it equals ``(2/β) log 2``; it tends to 0 as the
    forget answers become unlikely, so unlike GA it is bounded below.
    """
    forget = require(inputs, "forget")
    policy = sequence_logprob(forget.logits, forget.labels)
    log_ratio = policy - require_ref_logps(inputs, "forget", like=policy)
    return -(2.0 / params.beta) * F.logsigmoid(-params.beta * log_ratio).mean()


@register_forget(
    "dpo",
    params=BetaParams,
    needs={"forget", "forget_idk"},
    needs_ref_logps={"forget", "forget_idk"},
    description="direct preference optimisation: prefer a refusal over the forget answer",
    paper=PAPER_DPO,
)
def dpo(inputs: UnlearningInputs, params: BetaParams) -> Tensor:
    """DPO with the refusal as the preferred and the forget answer as the rejected answer
    (Rafailov et al., 2023, as used for unlearning in TOFU; docs/methods.md, DPO)::

        L = −(2/β) · mean_batch log σ(β · [(log πθ(idk|q_f) − log πθ(a_f|q_f))
                                           − (log π_ref(idk|q_f) − log π_ref(a_f|q_f))])

    The factor 2/β follows the released code of Yuan et al. (2024). With all four log-probabilities
    equal it is ``(2/β) log 2``.
    """
    forget = require(inputs, "forget")
    refusal = require(inputs, "forget_idk")
    policy_forget = sequence_logprob(forget.logits, forget.labels)
    policy_refusal = sequence_logprob(refusal.logits, refusal.labels)
    policy_margin = policy_refusal - policy_forget
    ref_margin = require_ref_logps(inputs, "forget_idk", like=policy_refusal) - require_ref_logps(
        inputs, "forget", like=policy_forget
    )
    return -(2.0 / params.beta) * F.logsigmoid(params.beta * (policy_margin - ref_margin)).mean()


@register_forget(
    "idk",
    needs={"forget_idk"},
    description="fine-tune on a refusal: mean token NLL(idk|q_f)",
    paper=PAPER_TOFU,
)
def idk(inputs: UnlearningInputs, params: NoParams) -> Tensor:
    """IDK fine-tuning (Maini et al., 2024; docs/methods.md, IDK): ``L = ℓ̄(idk|q_f)``, the mean token NLL of a
    refusal answer to the forget question."""
    return mean_token_nll(require(inputs, "forget_idk"))


@register_forget(
    "me",
    params=MEParams,
    needs={"forget"},
    description="maximise entropy: mean over forget tokens of KL between p_t and uniform",
    paper=PAPER_YUAN,
)
def me(inputs: UnlearningInputs, params: MEParams) -> Tensor:
    """Maximising entropy (Yuan et al., 2024, the ME objective; docs/methods.md, ME)::

        L = mean over labelled forget tokens t of KL(U ‖ p_t)   (params.me_direction = "uniform_to_model")
        L = mean over labelled forget tokens t of KL(p_t ‖ U)   (params.me_direction = "model_to_uniform")

    ``KL(U‖p_t) = logsumexp(z_t) − mean_v(z_t) − log V`` is what the released code computes and is the
    default; ``KL(p_t‖U) = log V − H(p_t)`` is the paper's equation. Both are 0 exactly at ``p_t = U``.
    Which tokens count (answer only, or question and answer) is decided by the labels the trainer
    builds; padding never counts.
    """
    forget = require(inputs, "forget")
    kl, mask = token_uniform_kl(forget.logits, forget.labels, params.me_direction)
    return token_mean(kl, mask, forget.token_normalizer)


@register_forget(
    "llmu",
    needs={"forget", "forget_mismatch"},
    description="GA on the forget answer + NLL of a random retain answer to the forget question",
    paper=PAPER_LLMU,
)
def llmu(inputs: UnlearningInputs, params: NoParams) -> Tensor:
    """The forget part of LLMU (Yao et al., 2023)::

        L = −ℓ̄(a_f|q_f) + ℓ̄(a_r'|q_f)

    gradient ascent on the forget answer plus the mean token NLL of a randomly drawn retain answer
    ``a_r'`` given the forget question (the "mismatch" term, weight 1 as in the released code of Yuan et
    al., 2024). The method LLMU adds the KL regularizer on retain.
    """
    return -mean_token_nll(require(inputs, "forget")) + mean_token_nll(require(inputs, "forget_mismatch"))


# ---------------------------------------------------------------- regularizers


@register_regularizer(
    "gd",
    needs={"retain"},
    description="gradient descent on retain: mean token NLL(a_r|q_r)",
    paper=PAPER_GD,
)
def gd(inputs: UnlearningInputs, params: NoParams) -> Tensor:
    """Gradient descent on the retain set (gradient difference; Liu et al., 2022; docs/methods.md, GD):
    ``L = ℓ̄(a_r|q_r)``."""
    return mean_token_nll(require(inputs, "retain"))


@register_regularizer(
    "kl",
    needs={"retain"},
    needs_ref_logits={"retain"},
    description="KL(π_ref ‖ πθ) of next-token distributions over retain answer tokens",
    paper=PAPER_TOFU,
)
def kl(inputs: UnlearningInputs, params: NoParams) -> Tensor:
    """KL minimisation on the retain set (Maini et al., 2024; docs/methods.md, KL)::

        L = mean over labelled retain tokens t of KL(π_ref(·|y_≤t) ‖ πθ(·|y_≤t))

    Averaged over labelled tokens only (never padding, unlike a ``batchmean`` over all positions).
    Zero when the policy's logits equal the reference's.
    """
    retain = require(inputs, "retain")
    per_token, mask = token_kl(require_ref_logits(inputs, "retain"), retain.logits, retain.labels)
    return token_mean(per_token, mask, retain.token_normalizer)


@register_regularizer(
    "ap",
    params=BetaParams,
    needs={"retain", "retain_idk"},
    description="answer preservation: keep the retain answer more likely than a refusal",
    paper=PAPER_YUAN,
)
def ap(inputs: UnlearningInputs, params: BetaParams) -> Tensor:
    """Answer preservation (Yuan et al., 2024, the AP loss; docs/methods.md, AP)::

        L = −(1/β) · mean_batch log σ(β · (ℓθ(idk|q_r) − ℓθ(a_r|q_r)))

    with summed NLLs. It pushes the refusal's NLL above the true answer's on retain questions, without a
    reference model. With equal likelihoods it is ``log(2)/β``.
    """
    retain = require(inputs, "retain")
    refusal = require(inputs, "retain_idk")
    nll_answer = -sequence_logprob(retain.logits, retain.labels)
    nll_refusal = -sequence_logprob(refusal.logits, refusal.labels)
    return -(1.0 / params.beta) * F.logsigmoid(params.beta * (nll_refusal - nll_answer)).mean()


@register_regularizer(
    "none",
    needs=(),
    description="no regularization: 0",
    paper="",
)
def no_regularizer(inputs: UnlearningInputs, params: NoParams) -> Tensor:
    """No regularizer: a 0 scalar on the device of the inputs (CPU when there are none)."""
    for field in INPUT_FIELDS:
        out = getattr(inputs, field)
        if out is not None:
            return torch.zeros((), device=out.logits.device)
    return torch.zeros(())
