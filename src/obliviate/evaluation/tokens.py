"""Per-token statistics of an answer under teacher forcing, computed from the logits that predict its tokens.

Membership-inference attacks (:mod:`obliviate.evaluation.privacy`) and memorisation metrics
(:mod:`obliviate.evaluation.memorization`) read an answer token by token: the log-probability of the true token,
whether it is the model's argmax, and — for Min-K%++ — the mean and variance of the log-probabilities under the
model's own next-token distribution at that position. This module turns a ``(T, V)`` block of logits (row ``t``
predicts answer token ``t``) into those four sequences; it never calls a model, so every value can be checked
by hand on tiny logits (tests/unit/test_privacy.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TokenStats", "row_stats", "stats_from_columns", "token_stats"]


@dataclass(frozen=True)
class TokenStats:
    """One answer's per-token values, in answer order (nats).

    ``logprobs[t] = log p(y_t | y_<t)``; ``hits[t]`` is True when ``y_t`` is the argmax of that distribution
    (ties go to the lowest token id, as ``torch.argmax``); ``means[t] = Σ_v p(v) log p(v)`` and
    ``variances[t] = Σ_v p(v) (log p(v) − means[t])²`` are the mean and variance of the log-probability under
    the next-token distribution ``p = p(· | y_<t)`` itself (Zhang et al., 2024, Min-K%++).
    """

    logprobs: tuple[float, ...]
    hits: tuple[bool, ...]
    means: tuple[float, ...]
    variances: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.logprobs)
        if not (len(self.hits) == len(self.means) == len(self.variances) == n):
            raise ValueError("token statistics must have one value of each kind per token")

    def __len__(self) -> int:
        return len(self.logprobs)

    @property
    def mean_logprob(self) -> float:
        """``−ℓ̄(a|q)``: the mean token log-probability (docs/metrics.md notation)."""
        if not self.logprobs:
            raise ValueError("an answer without tokens has no mean log-probability")
        return sum(self.logprobs) / len(self.logprobs)


def token_stats(logits: Tensor, targets: Tensor | Sequence[int]) -> TokenStats:
    """The :class:`TokenStats` of one answer from the ``(T, V)`` logits that predict its ``T`` tokens.

    Computed in float64 whatever the logits' dtype (a 50k-token vocabulary sum in float32 keeps about five
    digits). Raises ValueError on mismatched shapes or a target outside the vocabulary.
    """
    if logits.dim() != 2:
        raise ValueError(f"expected logits of shape (tokens, vocab), got {tuple(logits.shape)}")
    targets = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits for {targets.shape[0]} target tokens")
    vocab = logits.shape[-1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"target token ids must lie in [0, {vocab})")
    return stats_from_columns(*row_stats(logits, targets))


def row_stats(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row of ``logits`` ``(n, V)``: the target's log-probability, whether it is the argmax, and the mean and
    variance of the log-probability under the row's distribution (float64; see :class:`TokenStats`).

    The building block of :func:`token_stats`, also applied a chunk of rows at a time by the chunked scorer
    (:func:`obliviate.likelihood.answer_token_stats`), so both paths share one definition.
    """
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = logp.exp()
    # Tokens a model masks with -inf logits have p = 0 and contribute nothing (0 · log 0 = 0, not NaN).
    finite = torch.where(p > 0, logp, torch.zeros_like(logp))
    means = (p * finite).sum(-1)
    variances = (p * (finite - means[:, None]).square()).sum(-1)
    picked = logp.gather(-1, targets[:, None]).squeeze(-1)
    hits = logits.argmax(-1) == targets
    return picked, hits, means, variances


def stats_from_columns(logprobs: Tensor, hits: Tensor, means: Tensor, variances: Tensor) -> TokenStats:
    """A :class:`TokenStats` from the four per-token columns of :func:`row_stats` (one answer's rows)."""
    return TokenStats(tuple(logprobs.tolist()), tuple(bool(h) for h in hits.tolist()), tuple(means.tolist()),
                      tuple(variances.tolist()))
