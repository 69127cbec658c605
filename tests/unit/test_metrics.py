"""Per-item metrics (docs/metrics.md) against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
from transformers import AutoTokenizer

from obliviate.errors import ConfigError
from obliviate.evaluation.metrics import (
    METRICS,
    MetricSpec,
    entailment_items,
    get_metric,
    higher_is_better,
    normalized_probability_items,
    probability_items,
    register_metric,
    rouge_recall,
    token_entropy,
    truth_ratio_forget,
    truth_ratio_forget_items,
    truth_ratio_other,
    truth_ratio_other_items,
    truth_ratio_tofu,
    truth_ratio_x,
)

E = math.e


class WhitespaceTokenizer:
    """Splits on whitespace, so token counts in the tests below can be read off the strings."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_every_metric():
    assert set(METRICS) == {"rouge_l", "rouge1", "probability", "truth_ratio", "truth_ratio_tofu", "token_entropy",
                            "cosine_similarity", "entailment", "exact_memorization", "extraction_strength",
                            "rouge_l_f1", "accuracy"}
    assert all(spec.description for spec in METRICS.values())


@pytest.mark.parametrize("metric", ["rouge_l", "rouge1", "probability", "truth_ratio", "cosine_similarity",
                                    "entailment", "exact_memorization", "extraction_strength"])
def test_knowledge_metrics_are_lower_is_better_only_on_forget(metric):
    """results.md: on the forget set less knowledge is better; on retain/utility sets more is."""
    assert higher_is_better(metric, "forget") is False
    assert higher_is_better(metric, "retain") is True
    assert higher_is_better(metric, "utility") is True


def test_tofus_truth_ratio_is_higher_is_better_on_the_forget_set():
    """mean(min(x, 1/x)) is 1 when the model cannot tell true from perturbed: more forgetting is a higher value."""
    assert higher_is_better("truth_ratio_tofu", "forget") is True
    assert higher_is_better("truth_ratio", "forget") is False


def test_token_entropy_is_higher_is_better_everywhere():
    """Low entropy flags repetitive output on every set, the forget set included."""
    assert [higher_is_better("token_entropy", k) for k in ("forget", "retain", "utility")] == [True, True, True]


def test_unknown_metric_suggests_the_close_name():
    with pytest.raises(ConfigError, match="did you mean 'rouge_l'"):
        get_metric("rouge-l")
    assert get_metric(" ROUGE_L ").name == "rouge_l"  # case and surrounding space are ignored


def test_unknown_set_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="forget, retain, utility"):
        higher_is_better("rouge_l", "world_facts")


def test_duplicate_or_malformed_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_metric(MetricSpec("rouge_l", "again", False, True))
    with pytest.raises(ValueError, match="lower case"):
        register_metric(MetricSpec("Rouge L", "bad name", False, True))
    assert METRICS["rouge_l"].description != "again"


# ------------------------------------------------------------------------------------------------ ROUGE


def test_rouge_recall_hand_example():
    """Reference "the cat sat on the mat" has 6 tokens.

    "the cat sat": unigram overlap the/cat/sat = 3 → ROUGE-1 recall 3/6 = 0.5; LCS "the cat sat" = 3 → 0.5.
    "mat the cat": overlap mat/the/cat = 3 → 0.5; LCS "the cat" = 2 → 2/6 = 1/3 (order matters for L only).
    """
    out = rouge_recall(["the cat sat", "mat the cat"], ["the cat sat on the mat"] * 2)
    assert out["rouge1"] == pytest.approx([0.5, 0.5])
    assert out["rouge_l"] == pytest.approx([0.5, 1 / 3])


def test_rouge_uses_the_stemmer():
    """Porter stems: cats → cat, sitting → sit, sits → sit; so "cats sitting" recalls all of "cat sits" (1.0)."""
    out = rouge_recall(["cats sitting"], ["cat sits"])
    assert out == {"rouge1": [1.0], "rouge_l": [1.0]}


def test_rouge_length_mismatch_raises():
    with pytest.raises(ValueError, match="1 items but references has 2"):
        rouge_recall(["a"], ["a", "b"])


# ------------------------------------------------------------------------------------------------ probability


def test_probability_items_by_hand():
    """exp(sum/count): (−2 ln 2)/2 = −ln 2 → 0.5; 0/3 → 1.0; (−3)/1 → e^−3 = 0.049787."""
    out = probability_items([-2 * math.log(2), 0.0, -3.0], [2, 3, 1])
    assert out == pytest.approx([0.5, 1.0, math.exp(-3)])


def test_probability_items_rejects_nll_and_empty_answers():
    with pytest.raises(ValueError, match="not an NLL"):
        probability_items([2.0], [2])  # a positive "log-prob" is an NLL passed by mistake
    with pytest.raises(ValueError, match="at least one token"):
        probability_items([-1.0], [0])


def test_normalized_probability_by_hand():
    """P(a)/(P(a)+ΣP(pert)).

    Item 1: 0.5 / (0.5 + 0.25 + 0.25) = 0.5. Item 2: 0.2 / (0.2 + 0.6) = 0.25.
    Item 3 (stability): e^−800 underflows in float64, but e^−800 / (e^−800 + e^−801) = 1 / (1 + e^−1) = 0.731059.
    """
    out = normalized_probability_items(
        [math.log(0.5), math.log(0.2), -800.0],
        [[math.log(0.25), math.log(0.25)], [math.log(0.6)], [-801.0]],
    )
    assert out == pytest.approx([0.5, 0.25, 1 / (1 + math.exp(-1))])


def test_normalized_probability_needs_perturbed_answers():
    with pytest.raises(ValueError, match=r"perturbed_mean_logps\[0\] is empty"):
        normalized_probability_items([-1.0], [[]])


# ------------------------------------------------------------------------------------------------ truth ratio


def test_truth_ratio_with_three_perturbed_answers():
    """Item 1: para ℓ̄ = 1.0, perturbed ℓ̄ = 1.5, 2.0, 2.5 (mean 2.0) → x = exp(2.0 − 1.0) = e = 2.718282.
    Item 2: para ℓ̄ = 2.0, perturbed 1.0, 1.0, 1.0 → x = exp(−1) = 0.367879.
    Item 3: para ℓ̄ = 0.5, perturbed 0.2, 0.5, 0.8 (mean 0.5) → x = 1.

    Forget items min(x, 1/x): 1/e, 1/e, 1 → forget truth ratio 1 − (2/e + 1)/3 = 1 − 0.578586 = 0.421414.
    Other items max(0, 1 − 1/x): 1 − 1/e = 0.632121, max(0, 1 − e) = 0, 0 → mean 0.210707.
    """
    xs = truth_ratio_x([1.0, 2.0, 0.5], [[1.5, 2.0, 2.5], [1.0, 1.0, 1.0], [0.2, 0.5, 0.8]])
    assert xs == pytest.approx([E, 1 / E, 1.0])
    assert truth_ratio_forget_items(xs) == pytest.approx([1 / E, 1 / E, 1.0])
    assert truth_ratio_other_items(xs) == pytest.approx([1 - 1 / E, 0.0, 0.0], abs=1e-12)
    assert truth_ratio_forget(xs) == pytest.approx(1 - (2 / E + 1) / 3)
    assert truth_ratio_other(xs) == pytest.approx((1 - 1 / E) / 3)


def test_truth_ratio_in_tofus_convention():
    """The items of the test above, min(x, 1/x) = 1/e, 1/e, 1: TOFU's form is their mean, (2/e + 1)/3 = 0.578586,
    and the paper's code's form is 1 minus it, 0.421414. x = 2, 0.5, 1, 4 → 0.5, 0.5, 1, 0.25 → 2.25/4 = 0.5625."""
    xs = truth_ratio_x([1.0, 2.0, 0.5], [[1.5, 2.0, 2.5], [1.0, 1.0, 1.0], [0.2, 0.5, 0.8]])
    assert truth_ratio_tofu(xs) == pytest.approx((2 / E + 1) / 3)
    assert truth_ratio_tofu(xs) + truth_ratio_forget(xs) == pytest.approx(1.0, abs=1e-15)
    assert truth_ratio_tofu([2.0, 0.5, 1.0, 4.0]) == 0.5625
    assert truth_ratio_tofu([math.inf, 0.0]) == 0.0
    with pytest.raises(ValueError, match="set is empty"):
        truth_ratio_tofu([])


def test_truth_ratio_limits_for_huge_gaps():
    """ℓ̄ gap 1000 nats: exp overflows, x = inf; min(x, 1/x) → 0 and 1 − 1/x → 1. x = 0: both forms give 0."""
    xs = truth_ratio_x([0.0], [[1000.0]])
    assert xs == [math.inf]
    assert truth_ratio_forget_items([math.inf, 0.0]) == [0.0, 0.0]
    assert truth_ratio_other_items([math.inf, 0.0]) == [1.0, 0.0]


def test_truth_ratio_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        truth_ratio_x([1.0], [[]])
    with pytest.raises(ValueError, match="negative or NaN"):
        truth_ratio_forget([-1.0])
    with pytest.raises(ValueError, match="set is empty"):
        truth_ratio_other([])


# ------------------------------------------------------------------------------------------------ token entropy


def test_token_entropy_by_hand():
    """"a a a a": one token type → H = 0. "a b c d": four types of p = 1/4 → H = 2 bits / log2 4 = 1.
    "a a b b": H = 1 bit / log2 4 = 0.5. "a a b": H = −(2/3 log2 2/3 + 1/3 log2 1/3) = 0.918296, / log2 3
    (1.584963) = 0.579380. "a" and "": N ≤ 1 → 0.
    """
    out = token_entropy(["a a a a", "a b c d", "a a b b", "a a b", "a", ""], WhitespaceTokenizer())
    assert out == pytest.approx([0.0, 1.0, 0.5, 0.918296 / 1.584963, 0.0, 0.0], abs=1e-6)


def test_token_entropy_with_the_tiny_tokenizer(tiny_model_dir):
    """Smoke check with a real tokenizer: repetition scores lower than a varied sentence, both in [0, 1]."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    repetitive, varied = token_entropy(
        ["the the the the the the the the", "The author was born in Kuwait City in 1956."], tokenizer
    )
    assert 0.0 <= repetitive < varied <= 1.0


# ------------------------------------------------------------------------------------------------ entailment


def test_entailment_is_gated_by_rouge_l():
    """Entailed with ROUGE-L 0.5 → 1; entailed but ROUGE-L 0.05 < 0.1 → 0; not entailed → 0 whatever the ROUGE;
    entailed with ROUGE-L exactly 0.1 → 1 (the threshold is inclusive)."""
    out = entailment_items([True, True, False, True], [0.5, 0.05, 0.9, 0.1])
    assert out == [1.0, 0.0, 0.0, 1.0]


def test_entailment_without_labels_is_none_not_zero():
    assert entailment_items(None, [0.5, 0.5]) is None
    with pytest.raises(ValueError):
        entailment_items([True], [0.5, 0.5])
