"""Aggregate scores over the per-set metrics (docs/metrics.md, Aggregates; results.md, "aggregates").

Model Utility (MU) is a harmonic mean over set × metric numbers, Forget Efficacy (FE) one minus a mean of
forget-set numbers, Forget Quality (FQ) a Kolmogorov–Smirnov p-value. Each returns an :class:`Aggregate`
that says what it was computed from: when a component is unavailable (None — e.g. no NLI model), it is
left out and the aggregate is marked ``partial`` with the missing components listed; when it cannot be
computed at all, its value is None, ``available`` is False and ``reason`` says why. A value is never
silently None and never a stand-in 0.

Papers: Yuan et al., 2024, arXiv 2410.08109 (18-number MU, FE); Maini et al., 2024, arXiv 2401.06121
(9-number MU, FQ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obliviate.evaluation.metrics import SIX

__all__ = [
    "FORGET_EFFICACY_METRICS",
    "MU_METRICS",
    "MU_SETS",
    "MU_TOFU_METRICS",
    "Aggregate",
    "forget_efficacy",
    "forget_quality",
    "harmonic_mean",
    "model_utility",
    "model_utility_retain",
    "model_utility_tofu",
]

# The non-forget sets of the TOFU evaluation, keyed as in results.md's "sets".
MU_SETS = ("retain", "real_authors", "world_facts")
# Yuan et al. 2024: six metrics per set, 3 × 6 = 18 numbers.
MU_METRICS = SIX
# TOFU (Maini et al. 2024): Probability, ROUGE and Truth ratio per set, 3 × 3 = 9 numbers.
MU_TOFU_METRICS = ("probability", "rouge_l", "truth_ratio")
# Yuan et al. 2024: FE averages the knowledge metrics on the forget set; token entropy measures fluency,
# not knowledge, so it is left out.
FORGET_EFFICACY_METRICS = ("rouge_l", "probability", "truth_ratio", "cosine_similarity", "entailment")

SetMetrics = Mapping[str, Mapping[str, "float | None"] | None]


def harmonic_mean(values: Sequence[float]) -> float:
    """``n / Σ 1/v`` over ``values``; 0.0 when any value is 0 (docs/metrics.md: report it, don't hide it).

    The limit as a component goes to 0 is 0, so a model that fails one metric entirely gets MU 0.

    Raises ValueError on an empty sequence or a negative or non-finite value: the metrics fed in lie
    in [0, 1], so either is a mistake upstream.
    """
    if len(values) == 0:
        raise ValueError("harmonic mean of no values")
    checked = []
    for i, v in enumerate(values):
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"harmonic mean needs finite non-negative values; value {i} is {v}")
        checked.append(v)
    if any(v == 0.0 for v in checked):
        return 0.0
    return len(checked) / sum(1.0 / v for v in checked)


@dataclass
class Aggregate:
    """One aggregate score and what it was computed from (results.md, "aggregates").

    ``components``: the ``"set.metric"`` numbers used; ``missing``: those that were wanted but
    unavailable. ``partial`` is True when the value rests on only some of the wanted components (and
    ``note`` then says so). An unavailable aggregate has ``value`` None and a ``reason``.

    Raises ValueError when the fields contradict each other (available without a value, unavailable
    without a reason, partial without a note).
    """

    name: str
    value: float | None
    higher_is_better: bool
    available: bool
    partial: bool = False
    components: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    note: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.available and self.value is None:
            raise ValueError(f"aggregate '{self.name}' is marked available but has no value")
        if not self.available and (self.value is not None or not self.reason):
            raise ValueError(f"unavailable aggregate '{self.name}' must have value None and a reason")
        if self.partial and not self.note:
            raise ValueError(f"partial aggregate '{self.name}' must carry a note saying what it left out")

    def to_dict(self) -> dict[str, Any]:
        """The results.json entry: value, direction, availability, components, and note/reason if set."""
        out: dict[str, Any] = {
            "value": self.value,
            "higher_is_better": self.higher_is_better,
            "available": self.available,
            "partial": self.partial,
            "components": list(self.components),
            "missing": list(self.missing),
        }
        if self.note is not None:
            out["note"] = self.note
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _harmonic_aggregate(
    name: str, set_metrics: SetMetrics, sets: Sequence[str], metrics: Sequence[str]
) -> Aggregate:
    """Harmonic mean of ``set.metric`` for every set × metric, leaving out unavailable (None) numbers.

    A set absent from ``set_metrics`` (or mapped to None) means it was not evaluated: the aggregate is
    then unavailable rather than quietly computed over the other sets.
    """
    wanted = [f"{s}.{m}" for s in sets for m in metrics]
    absent = [s for s in sets if set_metrics.get(s) is None]
    if absent:
        return Aggregate(
            name, None, True, False, components=[], missing=wanted,
            reason=f"set{'s' if len(absent) > 1 else ''} not evaluated: {', '.join(absent)}",
        )
    used: list[str] = []
    values: list[float] = []
    missing: list[str] = []
    for s in sets:
        row = set_metrics[s]
        for m in metrics:
            v = row.get(m)  # type: ignore[union-attr]  # absent sets returned above
            if v is None:
                missing.append(f"{s}.{m}")
            else:
                used.append(f"{s}.{m}")
                values.append(float(v))
    if not values:
        return Aggregate(
            name, None, True, False, components=[], missing=missing,
            reason=f"none of the {len(wanted)} components is available",
        )
    value = harmonic_mean(values)
    notes = []
    if missing:
        notes.append(f"computed over {len(values)} of {len(wanted)} numbers; unavailable: {', '.join(missing)}")
    zeros = [c for c, v in zip(used, values) if v == 0.0]
    if zeros:
        notes.append(f"{', '.join(zeros)} {'is' if len(zeros) == 1 else 'are'} 0, so the harmonic mean is 0")
    return Aggregate(
        name, value, True, True, partial=bool(missing), components=used, missing=missing,
        note="; ".join(notes) if notes else None,
    )


def model_utility(set_metrics: SetMetrics) -> Aggregate:
    """Model Utility: harmonic mean of the 18 numbers retain / real_authors / world_facts × the six metrics.

    docs/metrics.md; Yuan et al., 2024, arXiv 2410.08109. ``set_metrics`` maps a set name to its metric values
    (``{"retain": {"rouge_l": 0.8, ...}, ...}``); a None metric is left out and marks the result partial.
    """
    return _harmonic_aggregate("model_utility", set_metrics, MU_SETS, MU_METRICS)


def model_utility_tofu(set_metrics: SetMetrics) -> Aggregate:
    """TOFU's Model Utility: harmonic mean of Probability, ROUGE-L and Truth ratio on the three sets (9 numbers).

    docs/metrics.md; Maini et al., 2024, arXiv 2401.06121.
    """
    return _harmonic_aggregate("model_utility_tofu", set_metrics, MU_SETS, MU_TOFU_METRICS)


def model_utility_retain(set_metrics: SetMetrics) -> Aggregate:
    """Harmonic mean of the six metrics on the retain set alone, for runs without the utility sets
    (e.g. continual steps or the synthetic benchmark)."""
    return _harmonic_aggregate("model_utility_retain", set_metrics, ("retain",), MU_METRICS)


def forget_efficacy(forget_metrics: Mapping[str, float | None] | None) -> Aggregate:
    """Forget Efficacy ``1 − mean(forget ROUGE-L, Probability, Truth ratio, Cosine similarity, Entailment)``.

    docs/metrics.md; Yuan et al., 2024, arXiv 2410.08109. Token entropy is excluded. Unavailable (None) metrics
    are left out of the mean and mark the result partial; higher is better.
    """
    wanted = [f"forget.{m}" for m in FORGET_EFFICACY_METRICS]
    if forget_metrics is None:
        return Aggregate("forget_efficacy", None, True, False, missing=wanted,
                         reason="the forget set was not evaluated")
    used: list[str] = []
    values: list[float] = []
    missing: list[str] = []
    for m in FORGET_EFFICACY_METRICS:
        v = forget_metrics.get(m)
        if v is None:
            missing.append(f"forget.{m}")
            continue
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"forget.{m} is {v}; expected a finite number")
        used.append(f"forget.{m}")
        values.append(v)
    if not values:
        return Aggregate("forget_efficacy", None, True, False, missing=missing,
                         reason=f"none of the {len(wanted)} forget-set components is available")
    note = (f"computed over {len(values)} of {len(wanted)} numbers; unavailable: {', '.join(missing)}"
            if missing else None)
    return Aggregate("forget_efficacy", 1.0 - sum(values) / len(values), True, True, partial=bool(missing),
                     components=used, missing=missing, note=note)


def forget_quality(
    unlearned_x: Sequence[float] | None, retain_x: Sequence[float] | None, *, reason_if_missing: str
) -> Aggregate:
    """Forget Quality: p-value of a two-sample Kolmogorov–Smirnov test between the forget set's per-item
    truth-ratio ``x`` values of the unlearned model and of a retain model (docs/metrics.md; Maini et al., 2024).

    A high p-value means the two distributions cannot be told apart — the unlearned model looks like one
    never trained on the forget set. ``scipy.stats.ks_2samp`` with its defaults (exact p-value for small
    samples), as TOFU's released code. When either sample is None (no retain model), the aggregate is
    unavailable with ``reason_if_missing``; an empty sample is unavailable too.

    Raises ValueError on NaN values (x may be ``inf``, the limit of a huge NLL gap, which the test ranks).
    """
    components = ["forget.truth_ratio_x"]
    if unlearned_x is None or retain_x is None:
        return Aggregate("forget_quality", None, True, False, components=components, reason=reason_if_missing)
    if len(unlearned_x) == 0 or len(retain_x) == 0:
        which = "unlearned model" if len(unlearned_x) == 0 else "retain model"
        return Aggregate("forget_quality", None, True, False, components=components,
                         reason=f"no forget-set truth-ratio values for the {which}")
    for label, xs in (("unlearned", unlearned_x), ("retain", retain_x)):
        if any(math.isnan(float(x)) for x in xs):
            raise ValueError(f"the {label} model's truth-ratio values contain NaN")
    try:
        from scipy.stats import ks_2samp  # scipy is an evaluation extra; import only when FQ is computed
    except ImportError as err:
        return Aggregate("forget_quality", None, True, False, components=components,
                         reason=f"scipy is not installed ({err}): pip install 'obliviate[eval]'")

    result = ks_2samp([float(x) for x in unlearned_x], [float(x) for x in retain_x])
    return Aggregate(
        "forget_quality", float(result.pvalue), True, True, components=components,
        note=f"two-sample KS test, {len(unlearned_x)} vs {len(retain_x)} items, statistic {float(result.statistic):.4g}",
    )
