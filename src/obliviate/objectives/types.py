"""Typed inputs of the unlearning objectives.

The trainer runs each forward pass once and hands the resulting tensors to an objective in these
containers; an objective never calls a model. Which fields a method reads is declared by its terms
(see :func:`obliviate.objectives.methods.required_inputs`), so the trainer runs only those passes.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from torch import Tensor

from obliviate.data.formatting import IGNORE_INDEX
from obliviate.errors import ConfigError

if TYPE_CHECKING:
    from obliviate.objectives.chunked import HeadLogits

#: The two directions of the ME forget term (docs/methods.md). The first is the released code of Yuan et al.
#: (2024), which produced the published numbers; the second is the paper's equation.
ME_DIRECTIONS = ("uniform_to_model", "model_to_uniform")


@dataclass
class SequenceOutputs:
    """One forward pass on a batch of (question, answer) sequences.

    ``logits`` is ``(B, T, V)``, materialised or as a :class:`~obliviate.objectives.chunked.HeadLogits` (the
    final hidden states of the labelled positions and the output layer, applied a chunk of tokens at a time);
    ``labels`` is ``(B, T)`` in the Hugging Face convention, not shifted:
    the logits at position ``t`` predict ``labels[:, t + 1]`` and ``-100`` marks ignored positions.
    ``ref_logps`` (``(B,)``) is the summed log-probability of the labelled tokens under the frozen
    reference model (NPO, DPO); ``ref_logits`` (``(B, T, V)``, either form) are the reference model's logits
    (only the KL regularizer reads them). ``token_normalizer`` is the denominator of every token mean taken over
    this batch; ``None`` means the number of labelled tokens in this batch. Under gradient accumulation
    the trainer passes the labelled-token count of the whole accumulated batch, so that the sum of the
    micro-batch losses is the token mean of the accumulated batch.

    ``hidden`` / ``ref_hidden``: ``{layer: (B, T, H)}``, the output of decoder block ``layer`` (0-based) of the
    model / the frozen reference model at every position (0 past each sequence's end), filled only for the layers a
    term declares it reads (:func:`obliviate.objectives.registry.TermRegistry.register`, ``hidden_layers``).
    """

    logits: Tensor | HeadLogits
    labels: Tensor
    ref_logps: Tensor | None = None
    ref_logits: Tensor | HeadLogits | None = None
    token_normalizer: float | Tensor | None = None
    hidden: dict[int, Tensor] | None = None
    ref_hidden: dict[int, Tensor] | None = None

    def __post_init__(self) -> None:
        # Shape checks only: they cost no device synchronisation, and a wrong shape would otherwise
        # surface as a broadcasting result that is silently wrong.
        if self.logits.dim() != 3:
            raise ValueError(f"logits must be (batch, length, vocab), got shape {tuple(self.logits.shape)}")
        if self.labels.shape != self.logits.shape[:2]:
            raise ValueError(
                f"labels shape {tuple(self.labels.shape)} does not match logits shape "
                f"{tuple(self.logits.shape)}: expected (batch, length) = {tuple(self.logits.shape[:2])}"
            )
        if self.labels.is_floating_point() or self.labels.is_complex():
            raise ValueError(f"labels must hold integer token ids, got dtype {self.labels.dtype}")
        if self.ref_logps is not None and self.ref_logps.shape != self.logits.shape[:1]:
            raise ValueError(
                f"ref_logps must be (batch,) = {tuple(self.logits.shape[:1])}, got {tuple(self.ref_logps.shape)}"
            )
        if self.ref_logits is not None and self.ref_logits.shape != self.logits.shape:
            raise ValueError(
                f"ref_logits shape {tuple(self.ref_logits.shape)} must equal logits shape {tuple(self.logits.shape)}"
            )
        if isinstance(self.token_normalizer, Tensor):
            if self.token_normalizer.numel() != 1:
                raise ValueError(
                    f"token_normalizer must be a single number, got a tensor of shape "
                    f"{tuple(self.token_normalizer.shape)}"
                )
        elif self.token_normalizer is not None and not (
            math.isfinite(self.token_normalizer) and self.token_normalizer > 0
        ):
            raise ValueError(f"token_normalizer must be a positive token count, got {self.token_normalizer!r}")


@dataclass
class UnlearningInputs:
    """Every batch a method may read; a method's terms declare which ones they need.

    ``forget``: (forget question, forget answer). ``forget_idk``: (forget question, a refusal answer).
    ``retain``: (retain question, retain answer). ``retain_idk``: (retain question, a refusal answer),
    read by AP. ``forget_mismatch``: (forget question, a random retain answer), read by LLMU.
    """

    forget: SequenceOutputs | None = None
    forget_idk: SequenceOutputs | None = None
    retain: SequenceOutputs | None = None
    retain_idk: SequenceOutputs | None = None
    forget_mismatch: SequenceOutputs | None = None


#: The names of the :class:`UnlearningInputs` fields, in declaration order.
INPUT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UnlearningInputs))


@dataclass(frozen=True)
class ObjectiveParams:
    """Hyper-parameters shared by the terms.

    ``beta`` is the inverse temperature of NPO, DPO and AP (paper default 0.1). ``me_direction`` picks
    the KL direction of the ME term: ``"uniform_to_model"`` computes KL(U‖p_t) as the released code of
    Yuan et al. (2024) does (the default, reproduces the published numbers); ``"model_to_uniform"``
    computes KL(p_t‖U) = log V − H(p_t) as the paper's equation writes it.
    """

    beta: float = 0.1
    me_direction: str = "uniform_to_model"

    def __post_init__(self) -> None:
        errors: list[str] = []
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)):
            errors.append(f"beta must be a number, got {self.beta!r}")
        elif not (math.isfinite(self.beta) and self.beta > 0):
            errors.append(f"beta must be a positive finite number, got {self.beta!r}")
        if self.me_direction not in ME_DIRECTIONS:
            close = difflib.get_close_matches(str(self.me_direction), ME_DIRECTIONS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            errors.append(
                f"unknown me_direction {self.me_direction!r}; {hint}valid values: {', '.join(ME_DIRECTIONS)}"
            )
        if errors:
            raise ConfigError(errors)
