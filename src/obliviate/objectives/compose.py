"""The one composition point of every unlearning method (docs/methods.md)::

    L = forget_coeff · L_forget + regularization_coeff · L_reg
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from obliviate.errors import ConfigError
from obliviate.objectives.methods import required_inputs
from obliviate.objectives.registry import get_forget, get_regularizer
from obliviate.objectives.types import ObjectiveParams, UnlearningInputs


@dataclass
class ObjectiveResult:
    """The total loss and its two parts, all scalar tensors still attached to the graph.

    ``loss = forget_coeff · forget_loss + regularization_coeff · regularization_loss``; the parts are
    unweighted, for logging (call ``.item()`` or ``.detach()`` before keeping them).
    """

    loss: Tensor
    forget_loss: Tensor
    regularization_loss: Tensor


def _missing(inputs: UnlearningInputs, forget: str, regularizer: str) -> list[str]:
    """Every input the pair needs that ``inputs`` lacks, so they are all reported at once."""
    needed = required_inputs(forget, regularizer)
    missing = []
    for field in needed.fields:
        out = getattr(inputs, field)
        if out is None:
            missing.append(field)
            continue
        if field in needed.ref_logps and out.ref_logps is None:
            missing.append(f"{field}.ref_logps")
        if field in needed.ref_logits and out.ref_logits is None:
            missing.append(f"{field}.ref_logits")
    return missing


def compute_objective(
    inputs: UnlearningInputs,
    *,
    forget: str,
    regularizer: str,
    forget_coeff: float,
    regularization_coeff: float,
    params: ObjectiveParams,
) -> ObjectiveResult:
    """Evaluate forget term ``forget`` and regularizer ``regularizer`` on ``inputs`` and combine them.

    Unknown term names or non-finite coefficients raise ConfigError; inputs the pair needs but that are
    None raise ValueError naming all of them.
    """
    errors = [
        f"{label} must be a finite number, got {value!r}"
        for label, value in (("forget_coeff", forget_coeff), ("regularization_coeff", regularization_coeff))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ]
    if errors:
        raise ConfigError(errors)
    missing = _missing(inputs, forget, regularizer)
    if missing:
        raise ValueError(
            f"forget term '{forget}' with regularizer '{regularizer}' needs UnlearningInputs "
            f"{', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} None"
        )
    forget_loss = get_forget(forget).fn(inputs, params)
    regularization_loss = get_regularizer(regularizer).fn(inputs, params)
    loss = forget_coeff * forget_loss + regularization_coeff * regularization_loss.to(forget_loss.device)
    return ObjectiveResult(loss=loss, forget_loss=forget_loss, regularization_loss=regularization_loss)
