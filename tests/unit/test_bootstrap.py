"""Bootstrap confidence intervals: coverage at the nominal rate, and intervals beside every value of a record."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from obliviate.evaluation import bootstrap as boot
from obliviate.evaluation import aggregates as agg


@pytest.mark.parametrize(("name", "draw", "true_mean", "sd"), [
    ("normal", lambda rng: rng.normal(1.0, 2.0, size=50), 1.0, 2.0),
    ("bernoulli", lambda rng: (rng.random(60) < 0.3).astype(float), 0.3, math.sqrt(0.3 * 0.7)),
])
def test_intervals_cover_the_true_mean_at_the_nominal_rate(name, draw, true_mean, sd) -> None:
    """100 samples with a fixed seed: at least 90 of the 95 % intervals hold the true mean, and they are no
    wider than they should be (mean width within 20 % of 2 · 1.96 · σ/√n)."""
    rng = np.random.default_rng(2024)
    covered, widths = 0, []
    for i in range(100):
        sample = draw(rng)
        lo, hi = boot.mean_interval(sample, resamples=1000, seed=i)
        covered += lo <= true_mean <= hi
        widths.append(hi - lo)
    assert covered >= 90, f"{name}: {covered} of 100 intervals cover the mean"
    expected = 2 * 1.959964 * sd / math.sqrt(len(sample))
    assert np.mean(widths) == pytest.approx(expected, rel=0.2)


def test_interval_and_resampling_checks() -> None:
    assert boot.interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.5) == (2.0, 4.0)
    with pytest.raises(ValueError):
        boot.interval([1.0, math.nan])
    with pytest.raises(ValueError):
        boot.resample_indices(0, 10, np.random.default_rng(0))
    idx = boot.resample_indices(4, 3, np.random.default_rng(0))
    assert idx.shape == (3, 4) and idx.min() >= 0 and idx.max() <= 3


def test_ks_pvalues_equal_scipy_on_every_resample() -> None:
    rng = np.random.default_rng(1)
    a, r = np.exp(rng.normal(size=30)), np.exp(rng.normal(0.4, size=30))
    a[3] = math.inf       # a huge NLL gap gives x = inf, which the KS test ranks
    idx = boot.resample_indices(30, 200, rng)
    expected = [ks_2samp(a[row], r[row]).pvalue for row in idx]
    assert boot._ks_pvalues(a, r, idx) == pytest.approx(expected, abs=0)


def _item(rouge: float, prob: float, x: float, em: float) -> dict:
    return {"question": "q", "rouge_l": rouge, "rouge1": rouge, "probability": prob, "truth_ratio_x": x,
            "token_entropy": 0.9, "cosine_similarity": None, "entailment": None, "exact_memorization": em,
            "extraction_strength": em}


def _set(kind: str, items: list[dict]) -> dict:
    def mean(key):
        return sum(it[key] for it in items) / len(items)
    xs = [it["truth_ratio_x"] for it in items]
    tr = (1 - sum(min(x, 1 / x) for x in xs) / len(xs)) if kind == "forget" else \
        sum(max(0.0, 1 - 1 / x) for x in xs) / len(xs)
    metrics = {m: {"value": mean(m), "higher_is_better": True} for m in
               ("rouge_l", "rouge1", "probability", "token_entropy", "exact_memorization", "extraction_strength")}
    metrics["truth_ratio"] = {"value": tr, "higher_is_better": kind != "forget"}
    if kind == "forget":   # TOFU's form, mean(min(x, 1/x)), recorded on the forget set only
        metrics["truth_ratio_tofu"] = {"value": 1 - tr, "higher_is_better": True}
    for m in ("cosine_similarity", "entailment"):
        metrics[m] = {"value": None, "higher_is_better": True, "available": False, "reason": "none"}
    return {"kind": kind, "size": len(items), "metrics": metrics, "items": items}


@pytest.fixture
def body() -> dict:
    rng = np.random.default_rng(0)
    sets = {}
    for name, kind in (("forget", "forget"), ("retain", "retain"), ("real_authors", "utility"),
                       ("world_facts", "utility")):
        sets[name] = _set(kind, [_item(float(rng.uniform(0.2, 1)), float(rng.uniform(0.1, 0.9)),
                                       float(np.exp(rng.normal())), float(rng.uniform())) for _ in range(25)])
    from obliviate.evaluation.suite import aggregates
    retain_x = [float(np.exp(rng.normal())) for _ in range(25)]
    return {"sets": sets, "aggregates": aggregates(sets, retain_truth_x=retain_x), "retain_x": retain_x}


def test_every_available_value_gets_an_interval(body: dict) -> None:
    retain_x = body.pop("retain_x")
    out = boot.add_intervals(body, resamples=300, seed=5, retain_truth_x=retain_x)
    for s in out["sets"].values():
        for name, entry in s["metrics"].items():
            if entry["value"] is None:
                assert "ci" not in entry, name
            else:
                lo, hi = entry["ci"]
                assert lo <= hi and lo <= entry["value"] + 1e-12 and entry["value"] <= hi + 1e-12, name
    for name in ("model_utility", "model_utility_tofu", "model_utility_retain", "forget_efficacy",
                 "forget_quality"):
        lo, hi = out["aggregates"][name]["ci"]
        assert 0.0 <= lo <= hi <= 1.0, name
    mu = out["aggregates"]["model_utility"]
    assert mu["ci"][0] <= mu["value"] <= mu["ci"][1]


def test_intervals_are_seeded_and_off_at_zero(body: dict) -> None:
    retain_x = body.pop("retain_x")
    kw = {"resamples": 200, "retain_truth_x": retain_x}
    a = boot.add_intervals(copy.deepcopy(body), seed=1, **kw)
    b = boot.add_intervals(copy.deepcopy(body), seed=1, **kw)
    c = boot.add_intervals(copy.deepcopy(body), seed=2, **kw)
    assert a == b
    assert a["sets"]["retain"]["metrics"]["rouge_l"]["ci"] != c["sets"]["retain"]["metrics"]["rouge_l"]["ci"]
    untouched = boot.add_intervals(copy.deepcopy(body), seed=1, **{**kw, "resamples": 0})
    assert untouched == body


def test_a_set_of_identical_items_has_a_point_interval() -> None:
    """Every resample of identical items is the same set: the interval is the value itself, for the truth
    ratio's forget form 1 − mean(min(x, 1/x)) = 1 − 1/2 with x = 2 as for any mean."""
    items = [_item(0.5, 0.25, 2.0, 1.0) for _ in range(6)]
    body = {"sets": {"forget": _set("forget", items)}, "aggregates": {}}
    boot.add_intervals(body, resamples=50, seed=0)
    metrics = body["sets"]["forget"]["metrics"]
    assert metrics["truth_ratio"]["value"] == pytest.approx(0.5)
    assert metrics["truth_ratio"]["ci"] == pytest.approx([0.5, 0.5])
    assert metrics["truth_ratio_tofu"]["ci"] == pytest.approx([0.5, 0.5])
    assert metrics["probability"]["ci"] == pytest.approx([0.25, 0.25])


def test_resampled_aggregates_equal_the_aggregate_functions_on_each_resample(body: dict) -> None:
    """The vectorised recomputation from the listed components equals calling model_utility, forget_efficacy, …
    on the set metrics of each resample, zero components included (a harmonic mean with a 0 is 0)."""
    body.pop("retain_x")
    # One item with a ROUGE-L above 0: a resample that misses it (about a third do) has ROUGE-L 0, so MU 0.
    for item in body["sets"]["world_facts"]["items"][1:]:
        item["rouge_l"] = 0.0
    samples = {name: boot.set_metric_samples(s, boot.resample_indices(len(s["items"]), 40, boot.set_rng(3, name)))
               for name, s in body["sets"].items()}
    functions = {"model_utility": agg.model_utility, "model_utility_tofu": agg.model_utility_tofu,
                 "model_utility_retain": agg.model_utility_retain,
                 "forget_efficacy": lambda v: agg.forget_efficacy(v["forget"])}
    for name, function in functions.items():
        components = function({s: {m: float(v.mean()) for m, v in ms.items()} for s, ms in samples.items()}).components
        vectorised = boot.aggregate_samples(name, components, samples)
        one_by_one = [function({s: {m: float(v[b]) for m, v in ms.items()} for s, ms in samples.items()}).value
                      for b in range(40)]
        assert vectorised == pytest.approx(one_by_one, abs=1e-12), name
        assert name != "model_utility" or min(one_by_one) == 0.0    # the zero case was exercised


def test_both_truth_ratio_forms_resample_the_same_items(body: dict) -> None:
    """On every resample of the forget set, TOFU's form mean(min(x, 1/x)) is 1 − the paper's form."""
    forget = body["sets"]["forget"]
    samples = boot.set_metric_samples(forget, boot.resample_indices(len(forget["items"]), 50, boot.set_rng(0, "f")))
    assert samples["truth_ratio_tofu"] == pytest.approx(1.0 - samples["truth_ratio"], abs=1e-12)
    assert samples["truth_ratio_tofu"].std() > 0


def test_an_aggregate_is_not_resampled_when_a_component_cannot_be(body: dict) -> None:
    """A metric with a value but without per-item values (a hand-made record) would make the resampled MU rest
    on fewer numbers than MU itself: MU then gets no interval rather than a wrong one."""
    body.pop("retain_x")
    for item in body["sets"]["retain"]["items"]:
        item["rouge_l"] = None
    boot.add_intervals(body, resamples=50, seed=0)
    assert "ci" not in body["sets"]["retain"]["metrics"]["rouge_l"]
    assert "ci" not in body["aggregates"]["model_utility"]
    assert "ci" in body["sets"]["retain"]["metrics"]["probability"]
