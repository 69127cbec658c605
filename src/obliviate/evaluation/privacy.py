"""Membership-inference attacks and privacy leakage (docs/metrics.md, Privacy).

An attacker who can query the model scores each item; the forget set's items (members: the model was trained
on them) are compared with a holdout set's (non-members: never trained on). Every score here is oriented the
same way — **higher means more member-like** — so that one AUC definition serves every attack:

========================  =====================================================================================
``loss``                  ``−ℓ̄(a|q)``, the mean token log-probability (Yeom et al., 2018)
``zlib``                  ``−ℓ̄(a|q) / zlib(a)``, with ``zlib(a)`` the length in bytes of the zlib-compressed
                          UTF-8 answer (Carlini et al., 2021)
``min_k``                 mean of the lowest ``k`` fraction of token log-probabilities (Shi et al., 2024,
                          Min-K% Prob)
``min_k_plus_plus``       the same over ``(log p(y_t) − μ_t) / σ_t``, where ``μ_t``, ``σ_t²`` are the mean and
                          variance of ``log p(v)`` with ``v`` drawn from the model's own next-token distribution
                          (Zhang et al., 2024, Min-K%++)
``gradnorm``              ``−`` the mean over parameter tensors of the L2 norm of ``∇ℓ̄(a|q)`` (the gradient
                          norm attack as implemented in MIMIR, Duan et al., 2024)
``reference``             ``ℓ̄_ref(a|q) − ℓ̄(a|q)``: how much more likely the model finds the answer than a
                          reference model does (Carlini et al., 2021; the reference is the retain model)
========================  =====================================================================================

``k`` is the fraction of the answer's tokens kept, at least one: ``max(1, ⌊k·T⌋)`` tokens of ``T``;
:data:`MIN_K_FRACTION` = 0.4 is MUSE's choice for its privacy-leakage attack.

:func:`auc` is the area under the ROC curve of members against non-members: the probability that a random
forget item scores higher than a random holdout item, ties counting one half (1 = the attack recognises every
member, 0.5 = chance). :func:`privacy_leakage` is MUSE's PrivLeak (Shi et al., 2024, "MUSE: Machine
Unlearning Six-Way Evaluation for Language Models", arXiv 2407.06460): the relative difference in % between
the unlearned model's and the retain model's AUC. MUSE writes its AUC with the forget set as the class a
*loss-like* score ranks high, which is ``1 − auc`` here, so

    PrivLeak = ((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) · 100.

Near 0 is good (the attack sees the forget set as the retain model does); large negative means
under-unlearned (the forget set still looks like training data); large positive means over-unlearned (the
forget set looks *less* familiar than data never seen, itself a tell).

Papers: Yeom et al., 2018, arXiv 1709.01604; Carlini et al., 2021, "Extracting Training Data from Large
Language Models", USENIX Security; Shi et al., 2024, "Detecting Pretraining Data from Large Language Models",
arXiv 2310.16789; Zhang et al., 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large
Language Models", arXiv 2404.02936; Duan et al., 2024, "Do Membership Inference Attacks Work on Large
Language Models?", arXiv 2402.07841 (MIMIR).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from obliviate.evaluation.tokens import TokenStats

__all__ = [
    "ATTACKS",
    "ATTACK_TITLES",
    "HEADLINE_ATTACK",
    "MIN_K_FRACTION",
    "VARIANCE_FLOOR",
    "attack_scores",
    "auc",
    "auc_rows",
    "gradnorm_score",
    "loss_score",
    "min_k_plus_plus_score",
    "min_k_score",
    "privacy_leakage",
    "reference_score",
    "zlib_bytes",
    "zlib_score",
]

ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference")
"""Every attack, in the order reports list them."""

ATTACK_TITLES: dict[str, str] = {"loss": "LOSS", "zlib": "ZLib", "min_k": "Min-K%", "min_k_plus_plus": "Min-K%++",
                                 "gradnorm": "GradNorm", "reference": "Reference"}

HEADLINE_ATTACK = "min_k"
"""The attack behind the headline privacy leakage, as in MUSE (Min-K% Prob, k = 40 %)."""

MIN_K_FRACTION = 0.4
"""Fraction of an answer's tokens that Min-K% and Min-K%++ average (MUSE's default for PrivLeak)."""

VARIANCE_FLOOR = 1e-12
"""Min-K%++ divides by ``σ_t``; a next-token distribution with (numerically) all its mass on one token has
``σ_t² = 0``, and the floor keeps its score finite instead of NaN."""


def _check_logprobs(logprobs: Sequence[float]) -> list[float]:
    values = [float(v) for v in logprobs]
    if not values:
        raise ValueError("an answer without tokens cannot be scored")
    for i, v in enumerate(values):
        if math.isnan(v) or v > 1e-6:
            raise ValueError(f"token log-probability {i} is {v}; expected a number ≤ 0")
    return values


def _lowest_mean(values: Sequence[float], k: float) -> float:
    if not 0 < k <= 1:
        raise ValueError(f"k must lie in (0, 1], got {k}")
    count = max(1, math.floor(k * len(values)))
    return sum(sorted(values)[:count]) / count


def loss_score(logprobs: Sequence[float]) -> float:
    """LOSS: ``−ℓ̄(a|q)``, the mean token log-probability; higher = more member-like."""
    values = _check_logprobs(logprobs)
    return sum(values) / len(values)


def zlib_bytes(text: str) -> int:
    """Length in bytes of ``zlib.compress`` (default level) of the UTF-8 text: Carlini et al.'s zlib entropy."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(logprobs: Sequence[float], text: str) -> float:
    """ZLib: ``−ℓ̄(a|q) / zlib_bytes(a)``; higher = more member-like (a low loss the text's own
    compressibility does not explain)."""
    return loss_score(logprobs) / zlib_bytes(text)


def min_k_score(logprobs: Sequence[float], k: float = MIN_K_FRACTION) -> float:
    """Min-K% Prob: the mean of the ``max(1, ⌊k·T⌋)`` lowest token log-probabilities; higher = more member-like."""
    return _lowest_mean(_check_logprobs(logprobs), k)


def min_k_plus_plus_score(logprobs: Sequence[float], means: Sequence[float], variances: Sequence[float],
                          k: float = MIN_K_FRACTION) -> float:
    """Min-K%++: Min-K% over ``z_t = (log p(y_t) − μ_t) / σ_t`` with ``μ_t``, ``σ_t²`` the mean and variance of
    the log-probability under the model's next-token distribution at position ``t``.

    A training token tends to be a mode of its conditional distribution, so its ``z_t`` is high. ``σ_t²`` is
    floored at :data:`VARIANCE_FLOOR`. Higher = more member-like.
    """
    values = _check_logprobs(logprobs)
    if not len(values) == len(means) == len(variances):
        raise ValueError("one mean and one variance per token are needed")
    z = []
    for lp, mu, var in zip(values, means, variances):
        if math.isnan(mu) or math.isnan(var) or var < -1e-12:
            raise ValueError(f"invalid next-token mean {mu} or variance {var}")
        z.append((lp - float(mu)) / math.sqrt(max(float(var), VARIANCE_FLOOR)))
    return _lowest_mean(z, k)


def gradnorm_score(norm: float) -> float:
    """GradNorm: ``−`` the gradient norm (a member sits near a minimum of its loss: small gradient)."""
    norm = float(norm)
    if math.isnan(norm) or norm < 0:
        raise ValueError(f"a gradient norm is a non-negative number, got {norm}")
    return -norm


def reference_score(logprobs: Sequence[float], reference_logprobs: Sequence[float]) -> float:
    """Reference attack: ``ℓ̄_ref(a|q) − ℓ̄(a|q)`` = the model's mean token log-probability minus the reference's."""
    return loss_score(logprobs) - loss_score(reference_logprobs)


def attack_scores(stats: TokenStats, text: str, *, k: float = MIN_K_FRACTION, grad_norm: float | None = None,
                  reference: TokenStats | None = None) -> dict[str, float | None]:
    """Every attack's score for one answer; ``gradnorm``/``reference`` are None without their inputs."""
    return {
        "loss": loss_score(stats.logprobs),
        "zlib": zlib_score(stats.logprobs, text),
        "min_k": min_k_score(stats.logprobs, k),
        "min_k_plus_plus": min_k_plus_plus_score(stats.logprobs, stats.means, stats.variances, k),
        "gradnorm": gradnorm_score(grad_norm) if grad_norm is not None else None,
        "reference": reference_score(stats.logprobs, reference.logprobs) if reference is not None else None,
    }


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """Area under the ROC curve: ``P(member score > non-member score) + ½ P(equal)``.

    Computed from average ranks (the Mann–Whitney U statistic divided by ``n_members · n_nonmembers``), which
    is what ``sklearn.metrics.roc_auc_score`` returns with members as the positive class. Raises ValueError
    when either side is empty or a score is NaN.
    """
    members = [float(s) for s in member_scores]
    others = [float(s) for s in nonmember_scores]
    if not members or not others:
        raise ValueError("the AUC needs at least one member and one non-member score")
    if any(math.isnan(s) for s in members + others):
        raise ValueError("attack scores contain NaN")
    pooled = sorted([(s, 1) for s in members] + [(s, 0) for s in others], key=lambda t: t[0])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        average_rank = (i + j) / 2 + 1  # ranks i+1 .. j+1 share their mean
        rank_sum += average_rank * sum(label for _, label in pooled[i: j + 1])
        i = j + 1
    n1, n0 = len(members), len(others)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def auc_rows(members, nonmembers):
    """:func:`auc` of each row of two ``(B, n)`` score arrays at once (bootstrap resamples), as a ``(B,)`` array."""
    # Deferred: optional dependency: scipy (the eval extra).
    from scipy.stats import rankdata

    m, o = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    if m.ndim != 2 or o.ndim != 2 or m.shape[0] != o.shape[0] or not m.shape[1] or not o.shape[1]:
        raise ValueError("expected two non-empty (rows, items) arrays with the same number of rows")
    n1, n0 = m.shape[1], o.shape[1]
    ranks = rankdata(np.concatenate([m, o], axis=1), axis=1)   # average ranks: ties count one half
    return (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def privacy_leakage(model_auc: float, retain_auc: float) -> float:
    """MUSE's PrivLeak in %: ``((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) · 100`` (module docstring).

    Raises ValueError when ``retain_auc`` is 1 (the retain model recognises every forget item: no scale left
    to compare against) or an AUC lies outside [0, 1].
    """
    for name, value in (("model_auc", model_auc), ("retain_auc", retain_auc)):
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} is {value}; an AUC lies in [0, 1]")
    base = 1.0 - retain_auc
    if base == 0.0:
        raise ValueError("the retain model's AUC is 1, so privacy leakage (relative to 1 − AUC) is undefined")
    return ((1.0 - model_auc) - base) / base * 100.0
