"""PDU: forget by flattening the logit margin, keep the retain loss under ε with a learned dual variable
(docs/methods.md, "Newer methods")."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from obliviate.objectives.logprobs import mean_token_nll, token_mean, token_rows
from obliviate.objectives.methods import register_method
from obliviate.objectives.params import param
from obliviate.objectives.registry import register_forget, register_regularizer
from obliviate.objectives.terms import require
from obliviate.objectives.types import UnlearningInputs

PAPER = ("Entesari, Hatami, Khaziev, Ramakrishna, Fazlyab, 2025, Constrained Entropic Unlearning: A Primal-Dual "
         "Framework for Large Language Models, arXiv 2506.05314")


def _margin_rows(z: Tensor, targets: Tensor, ref_z: Tensor | None) -> Tensor:
    return (z.amax(dim=-1) - z.mean(dim=-1)).square()


@register_forget(
    "lmf",
    needs={"forget"},
    description="logit-margin flattening: (max_v z_t − mean_v z_t)² on forget tokens, 0 only at a flat row",
    paper=PAPER,
    formula="mean over forget tokens t of (max_v z_t,v − mean_v z_t,v)²",
    test="tests/unit/test_method_pdu.py",
)
def lmf(inputs: UnlearningInputs, params: object) -> Tensor:
    """Logit-margin flattening (Entesari et al., 2025): ``mean over labelled forget tokens t of
    (max_v z_t,v − mean_v z_t,v)²``, softmax-free; 0 exactly when the row is flat (the uniform distribution)."""
    forget = require(inputs, "forget")
    values, mask = token_rows(forget.logits, forget.labels, _margin_rows)
    return token_mean(values, mask, forget.token_normalizer)


@dataclass(frozen=True)
class PDUParams:
    epsilon: float = param(0.0, ge=0, doc="ε, the bound on the retain loss (mean token NLL)")
    dual_step: float = param(1.0, ge=0, doc="η, the dual ascent step (0 keeps λ fixed: a plain weighted sum)")
    initial_dual: float = param(1.0, ge=0, doc="λ at the start")


class DualVariable:
    """λ and the constraint values seen during the current optimizer step; λ ← max(0, λ + η · mean(ℓ̄ − ε)) once per
    step (:meth:`end_step`), whatever the number of micro-batches and of processes (:meth:`synchronise`). A step
    with a non-finite constraint value (one the non-finite guard withholds or stops on) leaves λ unchanged. Saved
    in every checkpoint."""

    def __init__(self) -> None:
        self.value: float | None = None   # λ; set from PDUParams.initial_dual at the first call
        self.step_size = 0.0
        self.pending: list[float] = []

    def synchronise(self, mean) -> None:
        """With several processes: the step's constraint value over all of them. Each process's values carry its
        share of the step's token normaliser (the trainer's, times the number of processes), so the mean over
        processes of their means is the whole step's ℓ̄; a non-finite value anywhere makes it non-finite
        everywhere."""
        if self.value is None or not self.pending:
            return
        local = sum(self.pending) / len(self.pending) if all(math.isfinite(v) for v in self.pending) else math.nan
        self.pending = [float(mean([local])[0])]

    def end_step(self) -> None:
        if self.value is not None and self.pending and all(math.isfinite(v) for v in self.pending):
            self.value = max(0.0, self.value + self.step_size * sum(self.pending) / len(self.pending))
        self.pending = []

    def state_dict(self) -> dict:
        return {"value": self.value, "step_size": self.step_size, "pending": list(self.pending)}

    def load_state_dict(self, d: dict) -> None:
        self.value, self.step_size, self.pending = d["value"], d["step_size"], list(d["pending"])


@register_regularizer(
    "pdu",
    needs={"retain"},
    params=PDUParams,
    state=DualVariable,
    description="the retain constraint ℓ̄(a_r|q_r) ≤ ε with a dual variable λ updated by dual ascent",
    paper=PAPER,
    formula="λ · (ℓ̄(a_r|q_r) − ε),  λ ← max(0, λ + η(ℓ̄ − ε)) after every optimizer step",
    test="tests/unit/test_method_pdu.py",
)
def pdu(inputs: UnlearningInputs, params: PDUParams, state: DualVariable) -> Tensor:
    """The Lagrangian's constraint part (Entesari et al., 2025): ``λ · (ℓ̄(a_r|q_r) − ε)`` with λ held in
    ``state`` (no gradient through λ). The constraint value of each micro-batch is recorded; under gradient
    accumulation their mean is the accumulated batch's ℓ̄ (token means over the whole accumulated batch), and λ
    moves once per optimizer step by η times it."""
    if state.value is None:
        state.value = params.initial_dual
    state.step_size = params.dual_step
    violation = mean_token_nll(require(inputs, "retain")) - params.epsilon
    state.pending.append(float(violation.detach()))
    return state.value * violation


register_method(
    "PDU", "lmf", "pdu",
    description="constrained unlearning: logit-margin flattening on forget, retain loss ≤ ε by a primal-dual method",
    paper=PAPER,
    test="tests/unit/test_method_pdu.py",
)
