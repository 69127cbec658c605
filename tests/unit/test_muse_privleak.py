"""MUSE's privacy leakage from hand-computed numbers: raw texts through the text path of the attacks (a bigram
model whose log-probabilities are chosen), the section's AUC and leakage, and reading a retain model's scores
back from its MUSE results."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.benchmarks import muse
from obliviate.data.records import TextRecord
from obliviate.errors import DataError
from obliviate.evaluation.privacy import auc, privacy_leakage, zlib_score
from obliviate.evaluation.privacy_eval import RetainScores, text_pairs, text_scores

LN2 = math.log(2)


class CharTokenizer:
    """Letters a, b, c, d are token ids 0..3; no special tokens; 0 pads."""

    pad_token_id, eos_token_id = 0, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ["abcd".index(ch) for ch in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join("abcd"[i] for i in ids)


class Bigram(torch.nn.Module):
    """The next-token distribution after token ``i`` is row ``i`` of ``P`` (the logits are its logarithms), so
    every log-probability is known: p(b|a) = 1/4, p(a|b) = 1/8, p(d|b) = 1/2, p(c|d) = 1/4, p(a|c) = 1/2."""

    P = [[0.5, 0.25, 0.125, 0.125],
         [0.125, 0.125, 0.25, 0.5],
         [0.5, 0.25, 0.125, 0.125],
         [0.25, 0.25, 0.25, 0.25]]

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(self.P).log())

    def forward(self, input_ids, logits_to_keep=None, **_):
        logits = self.table[input_ids]
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})()


def test_text_is_scored_whole_after_its_first_token_and_cut_to_max_length() -> None:
    tok = CharTokenizer()
    pairs, scored = text_pairs(tok, ["abdcab", "abdcab"], max_length=6)
    assert pairs[0] == ([0], [1, 3, 2, 0, 1]) and scored[0] == "abdcab"
    pairs, scored = text_pairs(tok, ["abdcab"], max_length=3)
    assert pairs == [([0], [1, 3])] and scored == ["abd"]   # ZLib compresses what was scored
    with pytest.raises(ValueError, match="single token"):
        text_pairs(tok, ["a"], max_length=8)


def test_min_k_and_loss_of_texts_by_hand() -> None:
    """'abdcab' scores b|a, d|b, c|d, a|c, b|a: log-probs (−2, −1, −2, −1, −2)·ln 2. LOSS = mean = −8/5 ln 2;
    Min-K% (k = 0.4) keeps ⌊0.4·5⌋ = 2 lowest, both −2 ln 2. 'aba' (batched with it, so left-padded) scores
    b|a, a|b: (−2, −3)·ln 2; LOSS −5/2 ln 2, Min-K% keeps max(1, ⌊0.8⌋) = 1 token: −3 ln 2. Cut to 3 tokens,
    'abdcab' scores b|a, d|b only: LOSS −3/2 ln 2, Min-K% −2 ln 2."""
    model, tok = Bigram(), CharTokenizer()
    full, short = text_scores(model, tok, ["abdcab", "aba"], max_length=64, batch_size=2, gradnorm=False)
    assert full["loss"] == pytest.approx(-8 / 5 * LN2) and full["min_k"] == pytest.approx(-2 * LN2)
    assert full["zlib"] == pytest.approx(zlib_score([-2 * LN2, -LN2, -2 * LN2, -LN2, -2 * LN2], "abdcab"))
    assert short["loss"] == pytest.approx(-5 / 2 * LN2) and short["min_k"] == pytest.approx(-3 * LN2)
    assert full["gradnorm"] is None and full["reference"] is None
    (cut,) = text_scores(model, tok, ["abdcab"], max_length=3, gradnorm=False)
    assert cut["loss"] == pytest.approx(-3 / 2 * LN2) and cut["min_k"] == pytest.approx(-2 * LN2)
    # The reference attack: the model's mean log-probability minus the retain model's.
    (ref,) = text_scores(model, tok, ["aba"], max_length=64, gradnorm=False, reference=[{"loss": -1.0}])
    assert ref["reference"] == pytest.approx(-5 / 2 * LN2 + 1.0)


def _data(forget: list[str], holdout: list[str]) -> muse.MuseData:
    return muse.MuseData(source="hand", privleak={"forget": [TextRecord(t) for t in forget],
                                                  "holdout": [TextRecord(t) for t in holdout]})


def test_muse_privacy_section_auc_and_leakage_by_hand() -> None:
    """Min-K% scores: forget 'abdcab' −2 ln 2, 'abab' (b|a, a|b, b|a: −2, −3, −2; one lowest) −3 ln 2;
    holdout 'aba' (−2, −3; one lowest) −3 ln 2, 'dcab' (c|d, a|c, b|a: −2, −1, −2; one lowest) −2 ln 2.
    Pairs: −2 vs −3 wins, −2 vs −2 ties, −3 vs −3 ties, −3 vs −2 loses: AUC = (1 + ½ + ½) / 4 = 1/2. With a retain model whose
    Min-K% scores give AUC 1/4, PrivLeak = ((1 − 1/2) − (1 − 1/4)) / (1 − 1/4) · 100 = −100/3 %."""
    data = _data(["abdcab", "abab"], ["aba", "dcab"])
    retain = RetainScores([{"loss": -1.0, "min_k": -5.0}, {"loss": -1.0, "min_k": -4.0}],
                          [{"loss": -1.0, "min_k": -4.5}, {"loss": -1.0, "min_k": -1.0}], source="r.json")
    section = muse.muse_privacy(Bigram(), CharTokenizer(), data, gradnorm=False, retain=retain)
    m = section["metrics"]
    assert [it["min_k"] for it in section["items"]["forget"]] == pytest.approx([-2 * LN2, -3 * LN2])
    assert m["auc_min_k"]["value"] == pytest.approx(0.5)
    assert m["auc_min_k"]["reference"] == m["auc_min_k"]["target"] == auc([-5.0, -4.0], [-4.5, -1.0]) == 0.25
    assert m["privacy_leakage"]["value"] == pytest.approx(-100 / 3) == privacy_leakage(0.5, 0.25)
    assert m["privacy_leakage"]["attack"] == "min_k" and m["privacy_leakage"]["target"] == 0.0
    assert m["privacy_leakage"]["higher_is_better"] is None     # closest to its target (0) is best
    assert m["auc_gradnorm"]["value"] is None and "switched off" in m["auc_gradnorm"]["reason"]
    assert section["members"] == "privleak/forget" and section["nonmembers"] == "privleak/holdout"
    assert section["max_length"] == muse.PRIVLEAK_MAX_LENGTH and section["retain_source"] == "r.json"
    assert section["items"]["holdout"][0]["text"] == "aba"
    assert section["items"]["holdout"][0]["sha256"].startswith("sha256:")
    # set_size keeps the first texts of each side.
    small = muse.muse_privacy(Bigram(), CharTokenizer(), data, set_size=1, gradnorm=False)
    assert len(small["items"]["forget"]) == len(small["items"]["holdout"]) == 1
    assert small["holdout"]["size"] == 1 and small["holdout"]["rows_available"] == 2
    assert small["metrics"]["privacy_leakage"]["value"] is None
    assert "--retain-results" in small["metrics"]["privacy_leakage"]["reason"]


def test_without_privleak_texts_the_section_says_why() -> None:
    section = muse.muse_privacy(Bigram(), CharTokenizer(), muse.MuseData(source="folder"))
    assert section == {"available": False, "reason": "folder has no privleak/forget and privleak/holdout splits"}


def test_retain_scores_are_read_back_only_from_muse_results_over_the_same_texts() -> None:
    data = _data(["abdcab", "abab"], ["aba", "dcab"])
    section = muse.muse_privacy(Bigram(), CharTokenizer(), data, gradnorm=False)
    record = {"benchmark": {"name": "muse"}, "privacy": section}
    scores = muse.muse_retain_scores_from_results(record, "r.json", data, max_length=muse.PRIVLEAK_MAX_LENGTH)
    assert scores.forget[1]["min_k"] == pytest.approx(-3 * LN2) and scores.source == "r.json"
    assert "text" not in scores.forget[0] and "sha256" not in scores.forget[0]
    with pytest.raises(DataError, match=r"^r\.json, field 'benchmark.name': is not a MUSE results record"):
        muse.muse_retain_scores_from_results({**record, "benchmark": {"name": "tofu"}}, "r.json", data)
    with pytest.raises(DataError, match="they hold 2 privleak/forget texts and this evaluation scores 1"):
        muse.muse_retain_scores_from_results(record, "r.json", data, set_size=1)
    with pytest.raises(DataError, match="privleak/holdout text 'dcba'... is not among them"):
        muse.muse_retain_scores_from_results(record, "r.json", _data(["abdcab", "abab"], ["aba", "dcba"]))
    with pytest.raises(DataError, match="cut to 2048 tokens and this evaluation cuts them to 512"):
        muse.muse_retain_scores_from_results(record, "r.json", data, max_length=512)
    old = muse.muse_retain_scores_from_results(
        {"benchmark": {"name": "muse"}, "privacy": {"available": False, "reason": "not computed"}}, "old.json", data)
    assert old.forget is None and "not computed" in old.reason and "old.json" in old.reason


def test_a_text_with_nothing_to_score_is_a_data_error_naming_it() -> None:
    """'a' is one token: the first token is context, so nothing is left to score."""
    with pytest.raises(DataError, match=r"privleak/holdout, field 'element 1': the text 'a' is a single token"):
        muse.muse_privacy(Bigram(), CharTokenizer(), _data(["abab"], ["aba", "a"]), gradnorm=False)
