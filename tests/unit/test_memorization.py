"""Exact memorisation and extraction strength against hits worked out by hand.

``hits[t]`` says whether answer token ``t`` is the model's argmax under teacher forcing. EM is the fraction of
hits; ES is the length of the final run of hits over the answer length (greedy decoding from the true prefix
reproduces the rest exactly from the first position of that run on).
"""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.evaluation.memorization import exact_memorization, extraction_strength
from obliviate.evaluation.tokens import token_stats


@pytest.mark.parametrize(("hits", "em", "es"), [
    ([True, True, True, True], 1.0, 1.0),        # the question alone yields the whole answer: k* = 0
    ([False, False, False, False], 0.0, 0.0),    # even the last token needs the full answer: k* = T
    ([True, False, True, True], 0.75, 0.5),      # from token 2 on every token is the argmax: k* = 2 of 4
    ([True, True, False], 2 / 3, 0.0),           # the last token is wrong: k* = T = 3
    ([False, True], 0.5, 0.5),                   # k* = 1 of 2
    ([True], 1.0, 1.0),
])
def test_by_hand(hits: list[bool], em: float, es: float) -> None:
    assert exact_memorization(hits) == pytest.approx(em)
    assert extraction_strength(hits) == pytest.approx(es)


def test_empty_answer_is_an_error() -> None:
    with pytest.raises(ValueError):
        exact_memorization([])
    with pytest.raises(ValueError):
        extraction_strength([])


def test_from_tiny_logits() -> None:
    """Rows [0, 0, 0] (argmax 0, ties to the lowest id) and [ln 2, 0, 0] (argmax 0): targets (1, 0) hit once,
    at the end; targets (0, 0) hit twice; targets (1, 1) never."""
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0]])
    one = token_stats(logits, [1, 0]).hits
    assert (exact_memorization(one), extraction_strength(one)) == (0.5, 0.5)
    both = token_stats(logits, [0, 0]).hits
    assert (exact_memorization(both), extraction_strength(both)) == (1.0, 1.0)
    none = token_stats(logits, [1, 1]).hits
    assert (exact_memorization(none), extraction_strength(none)) == (0.0, 0.0)
