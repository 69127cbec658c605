"""The one composition point of every unlearning method (docs/methods.md)::

    L = forget_coeff · L_forget + regularization_coeff · L_reg

and where each term's parameters are resolved (:func:`term_params`): its dataclass's defaults, then the
method-level ``beta`` / ``me_direction`` for the terms that take them, then the named method's defaults, then the
user's ``method.forget_params`` / ``method.regularizer_params``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from obliviate.errors import ConfigError
from obliviate.objectives.methods import MethodSpec, required_inputs
from obliviate.objectives.params import NoParams, build_params
from obliviate.objectives.registry import TermSpec, get_forget, get_regularizer
from obliviate.objectives.types import ObjectiveParams, UnlearningInputs


def _one_term(spec: TermSpec, shared: ObjectiveParams, method_defaults: Mapping[str, object],
              user: Mapping[str, object] | None, prefix: str) -> tuple[object, list[str]]:
    values: dict[str, object] = {k: getattr(shared, k) for k in getattr(spec.params, "SHARED", ())}
    values.update(method_defaults)
    if user is not None and not isinstance(user, Mapping):
        return spec.params(), [f"{prefix}: expected a mapping of {spec.name}'s parameters, got {user!r}"]
    values.update(user or {})
    return build_params(spec.params, values, prefix)


def term_params(forget: str, regularizer: str, *, shared: ObjectiveParams | None = None,
                method: MethodSpec | None = None, forget_params: Mapping[str, object] | None = None,
                regularizer_params: Mapping[str, object] | None = None) -> tuple[object, object, list[str]]:
    """The parameters of forget term ``forget`` and regularizer ``regularizer``, and every problem found.

    ``shared``: the method-level ``beta`` / ``me_direction``; ``method``: the named method whose defaults apply;
    ``forget_params`` / ``regularizer_params``: the user's values (config ``method.forget_params`` / ...).
    """
    shared = shared or ObjectiveParams()
    f_spec, r_spec = get_forget(forget), get_regularizer(regularizer)
    fp, f_err = _one_term(f_spec, shared, method.forget_params if method else {}, forget_params,
                          "method.forget_params")
    rp, r_err = _one_term(r_spec, shared, method.regularizer_params if method else {}, regularizer_params,
                          "method.regularizer_params")
    problems = f_err + r_err
    if not problems and method is not None and method.check is not None:
        problems = list(method.check(fp, rp))
    return fp, rp, problems


def new_states(forget: str, regularizer: str) -> dict[str, object]:
    """Fresh state objects of the terms that carry state, keyed ``"forget"`` / ``"regularizer"``."""
    out = {}
    for role, spec in (("forget", get_forget(forget)), ("regularizer", get_regularizer(regularizer))):
        if spec.state is not None:
            out[role] = spec.state()
    return out


def _call(spec: TermSpec, inputs: UnlearningInputs, params: object, state: object | None) -> Tensor:
    if spec.params is NoParams and spec.state is None:
        return spec.fn(inputs, params)
    return spec.fn(inputs, params, state)


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
    params: ObjectiveParams | None = None,
    forget_params: object | None = None,
    regularizer_params: object | None = None,
    states: Mapping[str, object] | None = None,
) -> ObjectiveResult:
    """Evaluate forget term ``forget`` and regularizer ``regularizer`` on ``inputs`` and combine them.

    ``forget_params`` / ``regularizer_params``: the terms' parameter instances; a missing one is built from
    ``params`` (the method-level ``beta`` / ``me_direction``) and the term's defaults. ``states``: the terms' state
    objects (:func:`new_states`); a stateful term without one gets a fresh state. Unknown term names or non-finite
    coefficients raise ConfigError; inputs the pair needs but that are None raise ValueError naming all of them.
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
    f_spec, r_spec = get_forget(forget), get_regularizer(regularizer)
    if forget_params is None or regularizer_params is None:
        fp, rp, problems = term_params(forget, regularizer, shared=params)
        if problems:
            raise ConfigError(problems)
        forget_params = fp if forget_params is None else forget_params
        regularizer_params = rp if regularizer_params is None else regularizer_params
    for spec, p in ((f_spec, forget_params), (r_spec, regularizer_params)):
        if not isinstance(p, spec.params) and not isinstance(p, ObjectiveParams):
            raise TypeError(f"'{spec.name}' takes {spec.params.__name__}, got {type(p).__name__}")
    states = states or {}
    forget_loss = _call(f_spec, inputs, forget_params, states.get("forget"))
    regularization_loss = _call(r_spec, inputs, regularizer_params, states.get("regularizer"))
    loss = forget_coeff * forget_loss + regularization_coeff * regularization_loss.to(forget_loss.device)
    return ObjectiveResult(loss=loss, forget_loss=forget_loss, regularization_loss=regularization_loss)
