"""RMU: steer one decoder block's activations on forget data towards a fixed random direction, keep them equal to
the frozen model's on retain data, and train only a few blocks' MLPs (docs/methods.md, "Newer methods")."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from obliviate.objectives.methods import register_method
from obliviate.objectives.params import param
from obliviate.objectives.registry import register_forget, register_regularizer
from obliviate.objectives.terms import require
from obliviate.objectives.types import IGNORE_INDEX, SequenceOutputs, UnlearningInputs

PAPER = ("Li et al., 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning, "
         "arXiv 2403.03218")
REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class RMUParams:
    layer: int = param(7, ge=0, doc="decoder block ℓ (0-based) whose output is steered and preserved")
    steering_coeff: float = param(6.5, gt=0, doc="c, the length of the random control vector (Zephyr-7B: 6.5)")
    seed: int = param(0, ge=0, doc="seed of the random direction u (uniform in [0, 1)^H, normalised)")
    trainable_layers: tuple[int, ...] = param((), doc="blocks whose modules train; empty: ℓ−2, ℓ−1, ℓ")
    trainable_modules: str = param("mlp", doc="which modules of those blocks train (a regular expression on the "
                                              "name after 'layers.N.'; the released code: 'mlp.down_proj')")
    hidden_reduction: str = param("sum", choices=REDUCTIONS,
                                  doc="over the hidden dimension: sum (‖·‖², the paper) or mean (the released code)")

    def __post_init__(self) -> None:
        try:
            re.compile(self.trainable_modules)
        except re.error as exc:
            raise ValueError(f"trainable_modules is not a regular expression ({exc})") from None

    def blocks(self) -> tuple[int, ...]:
        return self.trainable_layers or tuple(i for i in (self.layer - 2, self.layer - 1, self.layer) if i >= 0)


@dataclass(frozen=True)
class RMURetainParams:
    layer: int = param(7, ge=0, doc="decoder block ℓ (0-based) preserved; the same ℓ as the forget term's")
    hidden_reduction: str = param("sum", choices=REDUCTIONS,
                                  doc="over the hidden dimension: sum (‖·‖², the paper) or mean (the released code)")


def control_vector(params: RMUParams, size: int, like: Tensor) -> Tensor:
    """``c · u``: u drawn uniform in [0, 1)^H from ``params.seed`` and normalised (the released code's draw)."""
    u = torch.rand(size, generator=torch.Generator().manual_seed(params.seed), dtype=torch.float64)
    return (u / u.norm() * params.steering_coeff).to(device=like.device, dtype=like.dtype)


def _layer(out: SequenceOutputs, params: RMUParams | RMURetainParams, attr: str, field: str) -> Tensor:
    states = getattr(out, attr)
    if states is None or params.layer not in states:
        raise ValueError(f"this objective needs UnlearningInputs.{field}.{attr}[{params.layer}] "
                         f"(the output of decoder block {params.layer}), which is None")
    return states[params.layer]


def sequence_mean_sq(diff: Tensor, labels: Tensor, reduction: str) -> Tensor:
    """``mean over sequences of (1/L_x) Σ_t ‖diff_t‖²`` (or the mean over the hidden dimension instead of the sum)
    over each sequence's labelled positions ``t`` (its own label not −100: with ``mask = false`` every token of
    question and answer, else the answer's)."""
    mask = labels != IGNORE_INDEX
    sq = diff.float().square() if diff.dtype in (torch.float16, torch.bfloat16) else diff.square()
    per_token = sq.sum(dim=-1) if reduction == "sum" else sq.mean(dim=-1)
    per_seq = (per_token * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return per_seq.mean()


def _trainable(params: RMUParams):
    blocks = "|".join(str(i) for i in params.blocks())
    pattern = re.compile(rf"(^|\.)layers\.({blocks})\.({params.trainable_modules})(\.|$)")
    return lambda name: pattern.search(name) is not None


@register_forget(
    "rmu",
    needs={"forget"},
    hidden={"forget"},
    hidden_layers=lambda p: (p.layer,),
    trainable=_trainable,
    params=RMUParams,
    description="push the forget activations of block ℓ towards c·u (a fixed random unit vector u)",
    paper=PAPER,
    formula="mean over forget sequences of (1/L) Σ_t ‖h_ℓ,t − c·u‖²",
    test="tests/unit/test_method_rmu.py",
)
def rmu(inputs: UnlearningInputs, params: RMUParams) -> Tensor:
    """RMU's forget loss (Li et al., 2024, eq. 1): ``mean over forget sequences x of (1/L_x) Σ_t ‖h_ℓ,t − c·u‖²``,
    with ``h_ℓ,t`` the output of decoder block ℓ at token t of x."""
    forget = require(inputs, "forget")
    h = _layer(forget, params, "hidden", "forget")
    return sequence_mean_sq(h - control_vector(params, h.shape[-1], h), forget.labels, params.hidden_reduction)


@register_regularizer(
    "rmu_retain",
    needs={"retain"},
    hidden={"retain"},
    ref_hidden={"retain"},
    hidden_layers=lambda p: (p.layer,),
    params=RMURetainParams,
    description="keep the retain activations of block ℓ equal to the frozen model's",
    paper=PAPER,
    formula="mean over retain sequences of (1/L) Σ_t ‖h_ℓ,t − h_ℓ,t^frozen‖²",
    test="tests/unit/test_method_rmu.py",
)
def rmu_retain(inputs: UnlearningInputs, params: RMURetainParams) -> Tensor:
    """RMU's retain loss (Li et al., 2024, eq. 2): ``mean over retain sequences x of (1/L_x) Σ_t
    ‖h_ℓ,t − h_ℓ,t^frozen‖²``, the frozen (starting) model's activations read without gradient."""
    retain = require(inputs, "retain")
    h = _layer(retain, params, "hidden", "retain")
    ref = _layer(retain, params, "ref_hidden", "retain").detach().to(h.dtype)
    return sequence_mean_sq(h - ref, retain.labels, params.hidden_reduction)


def _same_block(forget: RMUParams, retain: RMURetainParams) -> list[str]:
    if forget.layer != retain.layer:
        return [f"method.regularizer_params.layer: {retain.layer} differs from method.forget_params.layer "
                f"{forget.layer}; RMU steers and preserves the same block, set both"]
    return []


register_method(
    "RMU", "rmu", "rmu_retain",
    check=_same_block,
    description="representation misdirection: steer block ℓ on forget, preserve it on retain; only ℓ−2..ℓ's MLPs train",
    paper=PAPER,
    regularization_coeff=1200.0,
    mask=False,
    test="tests/unit/test_method_rmu.py",
    train={"learning_rate": 5e-5},
)
