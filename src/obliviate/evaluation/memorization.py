"""Memorisation of an answer, read off the model's argmax under teacher forcing (docs/metrics.md, Memorisation).

Both metrics take, for each answer token ``y_t``, whether it is the argmax of ``p(· | q, y_<t)`` (``hits[t]``,
see :mod:`obliviate.evaluation.tokens`):

* **Exact memorisation** (EM): the fraction of answer tokens that are the argmax, ``Σ_t hits[t] / T``
  (Tirumala et al., 2022, "Memorization Without Overfitting", arXiv 2205.10770).
* **Extraction strength** (ES): ``1 − k*/T``, where ``k*`` is the length of the shortest answer prefix after
  which greedy decoding reproduces the rest of the answer (Wang et al., 2024, "Towards Effective Evaluations
  and Comparisons for LLM Unlearning Methods", arXiv 2406.09179). Greedy decoding from the true prefix ``y_<k``
  reproduces ``y_k … y_{T−1}`` exactly when every one of those tokens is the argmax given the true context, so
  ``k*`` is ``T`` minus the length of the longest run of hits at the *end* of the answer, and ``ES`` = that run's
  length ``/ T``: 1 when the question alone makes the model say the whole answer, 0 when not even the last token
  is its argmax (the full answer must then be given: ``k* = T``).

Both lie in [0, 1]; on the forget set lower is better (less left to extract), elsewhere higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["exact_memorization", "extraction_strength"]


def _check(hits: Sequence[bool]) -> list[bool]:
    if len(hits) == 0:
        raise ValueError("an answer without tokens has no memorisation score")
    return [bool(h) for h in hits]


def exact_memorization(hits: Sequence[bool]) -> float:
    """Fraction of answer tokens that are the model's argmax under teacher forcing."""
    values = _check(hits)
    return sum(values) / len(values)


def extraction_strength(hits: Sequence[bool]) -> float:
    """``1 − k*/T`` with ``k*`` the shortest prefix after which greedy decoding reproduces the rest (module doc)."""
    values = _check(hits)
    run = 0
    for hit in reversed(values):
        if not hit:
            break
        run += 1
    return run / len(values)
