"""Aggregates (docs/metrics.md, Aggregates; results.md) against numbers worked out by hand."""

from __future__ import annotations

import pytest

from obliviate.evaluation.aggregates import (
    Aggregate,
    forget_efficacy,
    forget_quality,
    harmonic_mean,
    model_utility,
    model_utility_retain,
    model_utility_tofu,
)


def _set(rouge_l=0.5, probability=0.25, truth_ratio=1.0, token_entropy=0.5, cosine_similarity=1.0,
         entailment=None):
    return {"rouge_l": rouge_l, "rouge1": 0.9, "probability": probability, "truth_ratio": truth_ratio,
            "token_entropy": token_entropy, "cosine_similarity": cosine_similarity, "entailment": entailment}


# ------------------------------------------------------------------------------------------------ harmonic mean


def test_harmonic_mean_by_hand():
    """3 / (1/1 + 1/0.5 + 1/0.25) = 3 / (1 + 2 + 4) = 3/7 = 0.428571."""
    assert harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)


def test_harmonic_mean_with_a_zero_is_zero():
    assert harmonic_mean([0.9, 0.0, 0.8]) == 0.0


@pytest.mark.parametrize("values", [[], [0.5, -0.1], [float("nan")], [float("inf")]])
def test_harmonic_mean_rejects_empty_negative_and_non_finite(values):
    with pytest.raises(ValueError):
        harmonic_mean(values)


# ------------------------------------------------------------------------------------------------ model utility


def test_model_utility_with_entailment_missing_is_partial_over_15():
    """Entailment None on all three sets → 15 of 18 numbers.

    retain and real_authors: 0.5, 0.25, 1.0, 0.5, 1.0 → reciprocals 2 + 4 + 1 + 2 + 1 = 10 each;
    world_facts has rouge_l 0.25 → 4 + 4 + 1 + 2 + 1 = 12. MU = 15 / (10 + 10 + 12) = 15/32 = 0.46875.
    The rouge1 entries (0.9) are not an MU component and must not count.
    """
    sets = {"retain": _set(), "real_authors": _set(), "world_facts": _set(rouge_l=0.25)}
    agg = model_utility(sets)
    assert agg.value == pytest.approx(15 / 32)
    assert agg.value == pytest.approx(harmonic_mean([0.5, 0.25, 1.0, 0.5, 1.0] * 2 + [0.25, 0.25, 1.0, 0.5, 1.0]))
    assert agg.available and agg.partial
    assert agg.missing == ["retain.entailment", "real_authors.entailment", "world_facts.entailment"]
    assert len(agg.components) == 15 and "retain.rouge1" not in agg.components
    assert "15 of 18" in agg.note
    d = agg.to_dict()
    assert d["partial"] is True and d["higher_is_better"] is True and d["value"] == pytest.approx(0.46875)


def test_model_utility_all_18_is_not_partial():
    """All six metrics 0.5 on all three sets → harmonic mean 0.5 over 18 numbers, nothing missing."""
    half = dict.fromkeys(["rouge_l", "probability", "truth_ratio", "token_entropy", "cosine_similarity",
                          "entailment"], 0.5)
    agg = model_utility({"retain": half, "real_authors": half, "world_facts": half})
    assert agg.value == pytest.approx(0.5)
    assert not agg.partial and agg.missing == [] and len(agg.components) == 18
    assert "note" not in agg.to_dict()


def test_model_utility_with_a_zero_component_is_zero_and_says_so():
    sets = {"retain": _set(token_entropy=0.0), "real_authors": _set(), "world_facts": _set()}
    agg = model_utility(sets)
    assert agg.value == 0.0 and agg.available
    assert "retain.token_entropy is 0" in agg.note


def test_model_utility_without_a_set_is_unavailable():
    agg = model_utility({"retain": _set(), "real_authors": _set()})
    assert agg.value is None and not agg.available
    assert "world_facts" in agg.reason
    assert agg.to_dict()["reason"] == agg.reason and agg.to_dict()["value"] is None


def test_model_utility_tofu_uses_nine_numbers():
    """Probability, ROUGE-L, Truth ratio: retain 0.5 each (reciprocal 2), real authors 0.25 (4), world facts
    1.0 (1) → 9 / (3·2 + 3·4 + 3·1) = 9/21 = 0.428571. token_entropy is 0 on retain but is no TOFU component,
    so the result is not 0; entailment None does not make it partial."""
    sets = {
        "retain": _set(rouge_l=0.5, probability=0.5, truth_ratio=0.5, token_entropy=0.0),
        "real_authors": _set(rouge_l=0.25, probability=0.25, truth_ratio=0.25),
        "world_facts": _set(rouge_l=1.0, probability=1.0, truth_ratio=1.0),
    }
    agg = model_utility_tofu(sets)
    assert agg.value == pytest.approx(9 / 21)
    assert not agg.partial and len(agg.components) == 9


def test_model_utility_retain_needs_only_the_retain_set():
    """Retain 0.5, 0.25, 1.0, 0.5, 1.0, entailment 0.5 → 6 / (2 + 4 + 1 + 2 + 1 + 2) = 6/12 = 0.5."""
    agg = model_utility_retain({"retain": _set(entailment=0.5)})
    assert agg.value == pytest.approx(0.5)
    assert agg.available and not agg.partial
    assert all(c.startswith("retain.") for c in agg.components)


def test_model_utility_with_every_component_none_is_unavailable():
    none = dict.fromkeys(["rouge_l", "probability", "truth_ratio", "token_entropy", "cosine_similarity",
                          "entailment"])
    agg = model_utility_retain({"retain": none})
    assert not agg.available and "none of the 6" in agg.reason


# ------------------------------------------------------------------------------------------------ forget efficacy


def test_forget_efficacy_by_hand():
    """1 − (0.4 + 0.2 + 0.6 + 0.8 + 0.0)/5 = 1 − 2.0/5 = 0.6; token entropy (0.9) is not a component."""
    forget = {"rouge_l": 0.4, "probability": 0.2, "truth_ratio": 0.6, "cosine_similarity": 0.8,
              "entailment": 0.0, "token_entropy": 0.9}
    agg = forget_efficacy(forget)
    assert agg.value == pytest.approx(0.6)
    assert not agg.partial and "forget.token_entropy" not in agg.components


def test_forget_efficacy_partial_without_entailment():
    """Entailment None → 1 − (0.4 + 0.2 + 0.6 + 0.8)/4 = 1 − 0.5 = 0.5, marked partial."""
    forget = {"rouge_l": 0.4, "probability": 0.2, "truth_ratio": 0.6, "cosine_similarity": 0.8,
              "entailment": None}
    agg = forget_efficacy(forget)
    assert agg.value == pytest.approx(0.5)
    assert agg.partial and agg.missing == ["forget.entailment"] and "4 of 5" in agg.note


def test_forget_efficacy_without_forget_set_is_unavailable():
    agg = forget_efficacy(None)
    assert not agg.available and agg.value is None and agg.reason


# ------------------------------------------------------------------------------------------------ forget quality


def test_forget_quality_of_identical_samples_is_one():
    """KS statistic 0 between identical samples → p-value 1."""
    xs = [0.5, 1.0, 1.5, 2.0]
    agg = forget_quality(xs, list(xs), reason_if_missing="unused")
    assert agg.value == pytest.approx(1.0) and agg.available


def test_forget_quality_of_separated_samples_is_small():
    """20 values in [0.1, 2.0] against 20 in [10, 29]: the empirical CDFs are fully separated (statistic 1);
    the exact p-value is 2 / C(40, 20) ≈ 1.5e-11, far below 0.05."""
    agg = forget_quality([0.1 * i for i in range(1, 21)], [10.0 + i for i in range(20)], reason_if_missing="x")
    assert agg.value < 0.05
    assert agg.value == pytest.approx(2 / 137846528820, rel=1e-3)


def test_forget_quality_unavailable_carries_the_reason():
    reason = "no retain model: pass --retain-model or --retain-results"
    agg = forget_quality([0.5, 1.0], None, reason_if_missing=reason)
    d = agg.to_dict()
    assert d["value"] is None and d["available"] is False and d["reason"] == reason
    empty = forget_quality([], [1.0], reason_if_missing=reason)
    assert not empty.available and "unlearned model" in empty.reason


def test_aggregate_refuses_contradictory_fields():
    with pytest.raises(ValueError, match="no value"):
        Aggregate("x", None, True, True)
    with pytest.raises(ValueError, match="reason"):
        Aggregate("x", None, True, False)
    with pytest.raises(ValueError, match="note"):
        Aggregate("x", 0.5, True, True, partial=True)
