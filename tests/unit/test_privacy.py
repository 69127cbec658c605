"""Membership-inference attack scores, AUC and privacy leakage against numbers worked out by hand.

The tiny logits used throughout (vocabulary of 3, an answer of 2 tokens):

* row 0 = [0, 0, 0]: uniform, every log-prob is −ln 3; mean −ln 3, variance 0; argmax token 0 (ties → lowest id).
* row 1 = [ln 2, 0, 0]: p = (1/2, 1/4, 1/4), log-probs (−ln 2, −2 ln 2, −2 ln 2); mean = ½(−ln 2) + ½(−2 ln 2)
  = −1.5 ln 2; variance = ½(0.5 ln 2)² + ½(0.5 ln 2)² = 0.25 ln² 2; argmax token 0.

With targets (1, 0): log-probs (−ln 3, −ln 2), hits (False, True).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from obliviate.evaluation import privacy as P
from obliviate.evaluation.privacy_eval import RetainScores, privacy_section, retain_scores_from_results
from obliviate.evaluation.tokens import TokenStats, token_stats
from obliviate.errors import DataError

LN2, LN3 = math.log(2), math.log(3)
LOGITS = torch.tensor([[0.0, 0.0, 0.0], [LN2, 0.0, 0.0]], dtype=torch.float64)


@pytest.fixture
def stats() -> TokenStats:
    return token_stats(LOGITS, [1, 0])


# --- per-token statistics -----------------------------------------------------------------------------


def test_token_stats_by_hand(stats: TokenStats) -> None:
    assert stats.logprobs == pytest.approx((-LN3, -LN2), abs=1e-15)
    assert stats.hits == (False, True)
    assert stats.means == pytest.approx((-LN3, -1.5 * LN2), abs=1e-15)
    assert stats.variances == pytest.approx((0.0, 0.25 * LN2 ** 2), abs=1e-15)
    assert stats.mean_logprob == pytest.approx(-math.log(6) / 2, abs=1e-15)


def test_token_stats_ignore_masked_tokens_and_check_shapes() -> None:
    """A token a model masks with -inf has p = 0 and adds nothing: row [0, 0, -inf] is uniform over two."""
    s = token_stats(torch.tensor([[0.0, 0.0, -math.inf]]), [0])
    assert s.logprobs == pytest.approx((-LN2,)) and s.means == pytest.approx((-LN2,))
    assert s.variances == pytest.approx((0.0,), abs=1e-15)
    with pytest.raises(ValueError, match="rows of logits"):
        token_stats(LOGITS, [0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        token_stats(LOGITS, [0, 3])


# --- attack scores --------------------------------------------------------------------------------------


def test_loss_is_the_mean_token_logprob(stats: TokenStats) -> None:
    assert P.loss_score(stats.logprobs) == pytest.approx(-(LN3 + LN2) / 2, abs=1e-15)


def test_zlib_divides_by_the_compressed_length(stats: TokenStats) -> None:
    # zlib.compress(b"aaaa") is 12 bytes: 2 header bytes, 6 of deflate data, 4 of Adler-32.
    assert P.zlib_bytes("aaaa") == 12 == len(zlib.compress(b"aaaa"))
    assert P.zlib_score(stats.logprobs, "aaaa") == pytest.approx(-(LN3 + LN2) / 2 / 12, abs=1e-15)


def test_min_k_keeps_the_lowest_fraction(stats: TokenStats) -> None:
    # k = 0.4 of 2 tokens: floor(0.8) = 0, at least one token is kept: the lowest, −ln 3.
    assert P.min_k_score(stats.logprobs) == pytest.approx(-LN3)
    assert P.min_k_score(stats.logprobs, k=1.0) == pytest.approx(-(LN3 + LN2) / 2)
    # 5 tokens at k = 0.4: the two lowest.
    assert P.min_k_score([-1.0, -5.0, -2.0, -4.0, -3.0], k=0.4) == pytest.approx(-4.5)
    with pytest.raises(ValueError, match="k must lie"):
        P.min_k_score(stats.logprobs, k=0.0)


def test_min_k_plus_plus_normalises_by_the_next_token_distribution(stats: TokenStats) -> None:
    """z_0 = (−ln 3 − (−ln 3)) / σ = 0 (σ² = 0, floored); z_1 = (−ln 2 + 1.5 ln 2) / (0.5 ln 2) = 1."""
    assert P.min_k_plus_plus_score(stats.logprobs, stats.means, stats.variances) == pytest.approx(0.0, abs=1e-9)
    assert P.min_k_plus_plus_score(stats.logprobs, stats.means, stats.variances, k=1.0) == pytest.approx(0.5)
    # The true token being the mode scores high even when its probability is low.
    assert P.min_k_plus_plus_score([-2.0], [-3.0], [4.0], k=1.0) == pytest.approx(0.5)


def test_gradnorm_and_reference_scores() -> None:
    assert P.gradnorm_score(3.0) == -3.0
    with pytest.raises(ValueError):
        P.gradnorm_score(-1.0)
    # Mean log-prob −1 under the model, −3 under the reference: 2 nats per token more familiar.
    assert P.reference_score([-0.5, -1.5], [-3.0, -3.0]) == pytest.approx(2.0)


def test_attack_scores_bundle(stats: TokenStats) -> None:
    scores = P.attack_scores(stats, "aaaa", grad_norm=0.25, reference=token_stats(LOGITS, [0, 0]))
    assert scores["loss"] == pytest.approx(-(LN3 + LN2) / 2)
    assert scores["gradnorm"] == -0.25
    # Reference answer (0, 0): log-probs (−ln 3, −ln 2), the same mean: no difference.
    assert scores["reference"] == pytest.approx(0.0, abs=1e-15)
    assert P.attack_scores(stats, "aaaa")["gradnorm"] is None


def test_scores_reject_impossible_logprobs() -> None:
    with pytest.raises(ValueError, match="≤ 0"):
        P.loss_score([0.5])
    with pytest.raises(ValueError, match="without tokens"):
        P.loss_score([])


# --- AUC and privacy leakage -----------------------------------------------------------------------------


def test_auc_by_hand_with_a_tie() -> None:
    """Pairs (3,1) (3,2) (2,1) count 1, the tie (2,2) counts ½: 3.5 / 4."""
    assert P.auc([3.0, 2.0], [1.0, 2.0]) == 0.875
    assert P.auc([1.0], [2.0]) == 0.0 and P.auc([5.0, 5.0], [5.0]) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_mann_whitney_statistic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    members = rng.normal(0.3, 1.0, size=37).round(1)   # rounding makes ties
    others = rng.normal(0.0, 1.0, size=23).round(1)
    u = mannwhitneyu(members, others).statistic
    assert P.auc(members, others) == pytest.approx(u / (37 * 23), abs=1e-12)
    rows = P.auc_rows(np.stack([members, members[::-1]]), np.stack([others, others]))
    assert rows == pytest.approx([P.auc(members, others)] * 2, abs=1e-12)


def test_auc_equals_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    members, others = rng.integers(0, 5, size=40), rng.integers(0, 6, size=30)
    expected = metrics.roc_auc_score([1] * 40 + [0] * 30, np.concatenate([members, others]))
    assert P.auc(members, others) == pytest.approx(expected, abs=1e-12)


def test_privacy_leakage_by_hand() -> None:
    """MUSE: ((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) · 100."""
    assert P.privacy_leakage(0.9, 0.5) == pytest.approx(-80.0)      # forget set still recognised: under
    assert P.privacy_leakage(0.2, 0.5) == pytest.approx(60.0)       # looks less familiar than unseen: over
    assert P.privacy_leakage(0.6, 0.6) == 0.0
    with pytest.raises(ValueError, match="AUC is 1"):
        P.privacy_leakage(0.9, 1.0)


# --- the privacy section from per-item scores ------------------------------------------------------------


def _scores(loss: list[float], grad: list[float] | None = None) -> list[dict]:
    out = []
    for i, v in enumerate(loss):
        out.append({"loss": v, "zlib": v / 10, "min_k": v, "min_k_plus_plus": v, "reference": None,
                    "gradnorm": -grad[i] if grad else None})
    return out


def test_privacy_section_aucs_leakage_and_reasons() -> None:
    forget = _scores([-0.1, -0.2, -0.3], grad=[1.0, 2.0, 3.0])
    holdout = _scores([-1.0, -0.25, -2.0], grad=[0.5, 9.0, 9.0])
    retain = RetainScores(_scores([-1.0, -1.2, -0.9]), _scores([-1.1, -0.8, -1.5]), source="retain.json")
    section = privacy_section(forget, holdout, forget_questions=["f1", "f2", "f3"],
                              holdout_questions=["h1", "h2", "h3"], holdout_info={"source": "h.json"},
                              retain=retain)
    m = section["metrics"]
    # Forget losses all above the holdout's except -0.3 < -0.25: 8 of 9 pairs.
    assert m["auc_loss"]["value"] == pytest.approx(8 / 9)
    # Retain: forget (-1.0, -1.2, -0.9) vs holdout (-1.1, -0.8, -1.5): wins 2 + 1 + 2 = 5 of 9.
    assert m["auc_loss"]["reference"] == m["auc_loss"]["target"] == pytest.approx(5 / 9)
    assert m["auc_loss"]["higher_is_better"] is None
    assert m["privacy_leakage_loss"]["value"] == pytest.approx(((1 - 8 / 9) - (4 / 9)) / (4 / 9) * 100)
    # The headline is Min-K%, with its attack named.
    assert m["privacy_leakage"]["attack"] == "min_k" and m["privacy_leakage"]["target"] == 0.0
    assert m["privacy_leakage"]["value"] == m["privacy_leakage_min_k"]["value"]
    # GradNorm scores of the model but none for the retain model: AUC yes, leakage no.
    # Scores −1, −2, −3 against −0.5, −9, −9: each beats the two −9s only, 6 of 9 pairs.
    assert m["auc_gradnorm"]["value"] == pytest.approx(6 / 9)
    assert m["privacy_leakage_gradnorm"]["value"] is None and "GradNorm" in m["privacy_leakage_gradnorm"]["reason"]
    assert m["auc_reference"]["value"] is None and m["auc_reference"]["available"] is False
    assert section["items"]["forget"][0] == {"question": "f1", **forget[0]}
    assert section["retain_items"]["holdout"] == retain.holdout


def test_privacy_section_without_a_retain_model() -> None:
    section = privacy_section(_scores([-0.1]), _scores([-0.5]), forget_questions=["f"], holdout_questions=["h"],
                              holdout_info={}, retain=None)
    m = section["metrics"]
    assert m["auc_loss"]["value"] == 1.0 and m["auc_loss"]["target"] == 0.5 and "reference" not in m["auc_loss"]
    assert m["privacy_leakage"]["value"] is None and "--retain-model" in m["privacy_leakage"]["reason"]
    assert "retain_items" not in section and section["retain_source"] is None


def test_retain_scores_read_back_by_question() -> None:
    record = {"privacy": {"available": True, "items": {
        "forget": [{"question": "b", "loss": -2.0}, {"question": "a", "loss": -1.0}],
        "holdout": [{"question": "h", "loss": -3.0}]}}}
    scores = retain_scores_from_results(record, "r.json", ["a", "b"], ["h"])
    assert scores.forget == [{"loss": -1.0}, {"loss": -2.0}] and scores.holdout == [{"loss": -3.0}]
    with pytest.raises(DataError, match="privacy.items.holdout"):
        retain_scores_from_results(record, "r.json", ["a"], ["other"])
    old = retain_scores_from_results({"sets": {}}, "old.json", ["a"], ["h"])
    assert old.forget is None and "no privacy section" in old.reason
