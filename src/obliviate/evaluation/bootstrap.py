"""Seeded bootstrap confidence intervals for every per-set metric and every aggregate (docs/metrics.md,
Confidence intervals).

One evaluation scores a sample of questions; a different sample of the same size would give other numbers.
The bootstrap (Efron & Tibshirani, 1993, "An Introduction to the Bootstrap") estimates that spread by
recomputing each number on ``B`` resamples of the items — ``n`` items drawn with replacement from the ``n``
evaluated — and reporting the central ``level`` fraction of the ``B`` values (the percentile interval).

What is resampled:

* a per-set metric: the set's items. Every metric of a set, and every aggregate built from it, uses the same
  ``B`` resamples of that set, so the metrics of one resample describe one alternative set of questions;
* an aggregate over several sets (MU): each set's items, independently, then the aggregate is recomputed from
  the resampled values of the components it lists, in the same way (harmonic mean, or one minus a mean); a
  component without per-item values leaves the aggregate without an interval;
* Forget Quality: the forget questions, carrying both models' truth-ratio values at each drawn question (the
  KS test is then run on the resampled pair of samples);
* a membership-inference AUC: the forget items (with the forget set's resamples) and the holdout items
  (independently); privacy leakage resamples the retain model's scores at the same items.

Seeding: each set's resamples come from ``numpy.random.default_rng([seed, crc32(set name)])``, so the
intervals of a set do not depend on which other sets were evaluated or in which order.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from obliviate.evaluation import metrics as M
from obliviate.evaluation import privacy as P
from obliviate.evaluation import privacy_eval as PE

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "ITEM_METRICS",
    "add_intervals",
    "aggregate_samples",
    "interval",
    "mean_interval",
    "privacy_intervals",
    "resample_indices",
    "set_rng",
    "set_metric_samples",
]

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95

# Per-set metric -> the item field it is computed from (the metric registry, evaluation/metrics.py).
ITEM_METRICS: dict[str, str] = {name: spec.item_field for name, spec in M.METRICS.items() if spec.item_field}


def set_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one set's resamples: seeded by the evaluation seed and the set's name."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def resample_indices(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(resamples, n)`` item indices, each row ``n`` draws with replacement from ``range(n)``."""
    if n < 1:
        raise ValueError("cannot resample an empty set")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return rng.integers(0, n, size=(resamples, n))


def interval(samples: Sequence[float] | np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The percentile interval: the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of the bootstrap values."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    values = np.asarray(samples, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("bootstrap values must be finite and non-empty")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_interval(values: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Bootstrap interval of the mean of ``values`` (items resampled with replacement)."""
    data = np.asarray(values, dtype=float)
    idx = resample_indices(len(data), resamples, np.random.default_rng(seed))
    return interval(data[idx].mean(axis=1), level)


def set_metric_samples(set_entry: Mapping[str, Any], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each per-set metric recomputed on every resample ``idx`` of the set's items: ``{metric: (B,) values}``.

    Only metrics whose value is available and whose per-item values are all recorded are resampled; the
    set's value is always the mean of its items' values (for the truth ratio, of ``min(x, 1/x)`` on the forget
    set, subtracted from 1, and of ``max(0, 1 − 1/x)`` elsewhere; for TOFU's form of it, of ``min(x, 1/x)`` —
    docs/metrics.md).
    """
    items = set_entry.get("items") or []
    metrics = set_entry.get("metrics") or {}
    out: dict[str, np.ndarray] = {}
    kind = set_entry.get("kind")
    for metric, field in ITEM_METRICS.items():
        entry = metrics.get(metric)
        if not isinstance(entry, Mapping) or entry.get("value") is None:
            continue
        raw = [it.get(field) for it in items]
        if not raw or any(v is None for v in raw) or len(raw) != idx.shape[1]:
            continue
        spec = M.METRICS[metric]
        contrib = np.asarray(spec.per_item(raw, kind) if spec.per_item else raw, dtype=float)
        means = contrib[idx].mean(axis=1)
        out[metric] = 1.0 - means if spec.complement_on_forget and kind == "forget" else means
    return out


# How each aggregate combines its components ("set.metric" values): a harmonic mean (0 when a component is 0)
# or one minus a mean (docs/metrics.md, Aggregates). Aggregates not named here get no interval.
HARMONIC_AGGREGATES = ("model_utility", "model_utility_tofu", "model_utility_retain")
COMPLEMENT_AGGREGATES = ("forget_efficacy",)


def aggregate_samples(name: str, components: Sequence[str],
                      samples: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray | None:
    """The aggregate ``name`` recomputed on every resample from its components' resampled values, or None when
    a component has no resamples. Vectorised over the resamples; equal to calling the aggregate's function on
    each resample's set metrics (tests/unit/test_bootstrap.py)."""
    rows = []
    for component in components:
        set_name, _, metric = component.partition(".")
        values = samples.get(set_name, {}).get(metric)
        if values is None:
            return None
        rows.append(values)
    if not rows:
        return None
    stack = np.vstack(rows)
    if name in HARMONIC_AGGREGATES:
        zero = (stack == 0.0).any(axis=0)
        with np.errstate(divide="ignore"):
            harmonic = len(rows) / (1.0 / np.where(zero, 1.0, stack)).sum(axis=0)
        return np.where(zero, 0.0, harmonic)
    if name in COMPLEMENT_AGGREGATES:
        return 1.0 - stack.mean(axis=0)
    return None


def add_intervals(body: dict, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL,
                  retain_truth_x: Sequence[float] | None = None) -> dict:
    """Add ``"ci": [low, high]`` beside the value of every per-set metric and aggregate in ``body`` (in place).

    ``body`` holds ``sets`` and ``aggregates`` as written to results.json (and optionally ``privacy``). An
    aggregate is recomputed from the resampled values of the components it lists; ``retain_truth_x`` (the
    retain model's forget-set truth-ratio values, in forget-item order) lets Forget Quality be resampled.
    ``resamples = 0`` leaves ``body`` unchanged. Returns ``body``.
    """
    if resamples <= 0:
        return body
    sets = body.get("sets") or {}
    indices: dict[str, np.ndarray] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for name, entry in sets.items():
        n = len(entry.get("items") or [])
        if n == 0:
            continue
        indices[name] = resample_indices(n, resamples, set_rng(seed, name))
        samples[name] = set_metric_samples(entry, indices[name])
        for metric, values in samples[name].items():
            entry["metrics"][metric]["ci"] = list(interval(values, level))

    aggregates = body.get("aggregates") or {}
    for name, entry in aggregates.items():
        if not isinstance(entry, dict) or entry.get("value") is None:
            continue
        values = aggregate_samples(name, entry.get("components") or [], samples)
        if values is not None:
            entry["ci"] = list(interval(values, level))

    fq = aggregates.get("forget_quality")
    forget = sets.get("forget")
    if (retain_truth_x is not None and isinstance(fq, dict) and fq.get("value") is not None
            and forget is not None and "forget" in indices):
        xs = [it.get("truth_ratio_x") for it in forget.get("items") or []]
        if len(xs) == len(retain_truth_x) and all(x is not None for x in xs):
            fq["ci"] = list(interval(_ks_pvalues(xs, retain_truth_x, indices["forget"]), level))

    privacy = body.get("privacy")
    if isinstance(privacy, dict):
        privacy_intervals(privacy, forget_indices=indices.get("forget"), resamples=resamples, seed=seed,
                          level=level)
    return body


def _ks_pvalues(unlearned_x: Sequence[float], retain_x: Sequence[float], idx: np.ndarray) -> np.ndarray:
    """The two-sample KS p-value (as Forget Quality computes it) on each resample of the forget questions.

    ``scipy.stats.ks_2samp``'s p-value depends only on the statistic ``D`` and the two sample sizes, and ``D``
    takes at most ``n1·n2`` distinct values: ``D`` is computed for every resample at once (the largest gap
    between the two empirical CDFs, read after each run of tied values, as scipy does) and scipy runs once per
    distinct ``D``.
    """
    # Deferred: optional dependency: scipy (the eval extra).
    from scipy.stats import ks_2samp

    a, r = np.asarray(unlearned_x, dtype=float)[idx], np.asarray(retain_x, dtype=float)[idx]
    n1, n2 = a.shape[1], r.shape[1]
    pooled = np.concatenate([a, r], axis=1)
    order = np.argsort(pooled, axis=1, kind="stable")
    values = np.take_along_axis(pooled, order, axis=1)
    from_a = order < n1
    # D·n1·n2 as an exact integer: |n2·#a ≤ v − n1·#r ≤ v| at the last position of each distinct value v.
    gap = np.abs(np.cumsum(from_a, axis=1) * n2 - np.cumsum(~from_a, axis=1) * n1)
    last = np.ones_like(values, dtype=bool)
    last[:, :-1] = values[:, 1:] != values[:, :-1]
    keys = np.where(last, gap, 0).max(axis=1)
    pvalues = np.empty(len(idx))
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        pvalues[rows] = ks_2samp(a[rows[0]], r[rows[0]]).pvalue
    return pvalues


def privacy_intervals(privacy: dict, *, forget_indices: np.ndarray | None, resamples: int, seed: int,
                      level: float) -> None:
    """Add ``"ci"`` to every available AUC and privacy leakage (docs/metrics.md, Confidence intervals), in place.

    Forget items are resampled with ``forget_indices`` (the forget set's own resamples), holdout items
    independently; the retain model's scores of the same items are resampled alongside for the leakage.
    """
    if not privacy.get("available"):
        return
    items = privacy.get("items") or {}
    forget, holdout = items.get("forget") or [], items.get("holdout") or []
    if not forget or not holdout:
        return
    if forget_indices is None or forget_indices.shape[1] != len(forget):
        forget_indices = resample_indices(len(forget), resamples, set_rng(seed, "forget"))
    holdout_indices = resample_indices(len(holdout), resamples, set_rng(seed, "holdout"))
    retain_items = privacy.get("retain_items") or {}
    metrics = privacy.get("metrics") or {}
    for attack in P.ATTACKS:
        auc_entry = metrics.get(f"auc_{attack}")
        if not auc_entry or auc_entry.get("value") is None:
            continue
        f = np.asarray(PE.attack_column(forget, attack), dtype=float)
        h = np.asarray(PE.attack_column(holdout, attack), dtype=float)
        aucs = P.auc_rows(f[forget_indices], h[holdout_indices])
        auc_entry["ci"] = list(interval(aucs, level))
        leak = metrics.get(f"privacy_leakage_{attack}")
        if not leak or leak.get("value") is None:
            continue
        if attack == "reference":
            retain_aucs = np.full(len(aucs), PE.SELF_REFERENCE_AUC)
        else:
            rf = PE.attack_column(retain_items.get("forget") or [], attack)
            rh = PE.attack_column(retain_items.get("holdout") or [], attack)
            if rf is None or rh is None or len(rf) != len(f) or len(rh) != len(h):
                continue
            rf_a, rh_a = np.asarray(rf, dtype=float), np.asarray(rh, dtype=float)
            retain_aucs = P.auc_rows(rf_a[forget_indices], rh_a[holdout_indices])
        if np.any(retain_aucs >= 1.0):
            leak["ci_note"] = "no interval: the retain model's AUC reaches 1 on some resamples"
            continue
        leaks = [P.privacy_leakage(a, r) for a, r in zip(aucs, retain_aucs)]
        leak["ci"] = list(interval(leaks, level))
    headline = metrics.get("privacy_leakage")
    source = metrics.get(f"privacy_leakage_{headline.get('attack', P.HEADLINE_ATTACK)}") if headline else None
    if headline is not None and source is not None and "ci" in source:
        headline["ci"] = list(source["ci"])
