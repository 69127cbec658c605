"""The ``privacy`` section of ``results.json``: membership-inference attacks on the forget set (members) against
a holdout set (non-members), their AUCs and the privacy leakage against the retain model (docs/metrics.md,
Privacy; docs/results.md, ``privacy``).

:func:`sequence_scores` runs a model over scored token sequences (per-token statistics, and one backward pass
per sequence for GradNorm); :func:`item_scores` hands it question-answer items (the answer is scored, the
prompt is its context) and :func:`text_scores` raw texts (MUSE: the whole text is scored).
:func:`privacy_section` turns per-item scores into AUCs and leakage — no model involved, so it is tested on
hand-made scores. :func:`retain_scores_from_results` reads a retain model's scores back from its own
``results.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.data.formatting import PromptFormatter
from obliviate.data.records import QARecord
from obliviate.errors import DataError
from obliviate.evaluation import privacy as P
from obliviate.evaluation.tokens import TokenStats

__all__ = [
    "RetainScores",
    "item_scores",
    "privacy_section",
    "retain_scores_from_results",
    "sequence_scores",
    "text_pairs",
    "text_scores",
    "unavailable_section",
]

# The reference attack scores the retain model against itself as 0 for every item: AUC exactly 1/2.
SELF_REFERENCE_AUC = 0.5

# Fields that name an item rather than score it (a question; a text's start and hash).
_NAMES = ("question", "text", "sha256")


@dataclass
class RetainScores:
    """A retain model's per-item attack scores on the same forget and holdout questions, and where they came from.

    ``reason`` says why there are none (``forget``/``holdout`` then None).
    """

    forget: list[dict[str, float | None]] | None
    holdout: list[dict[str, float | None]] | None
    source: str | None = None
    reason: str | None = None


def _pairs(formatter: PromptFormatter, records: Sequence[QARecord]) -> list[tuple[list[int], list[int]]]:
    pairs = []
    for r in records:
        e = formatter.encode(r.question, r.answer)
        pairs.append((e.input_ids[: e.prompt_length], e.input_ids[e.prompt_length:]))
    return pairs


def sequence_scores(model, pairs: Sequence[tuple[list[int], list[int]]], texts: Sequence[str], *,
                    pad_token_id: int, batch_size: int = 16, gradnorm: bool = True,
                    stats: Sequence[TokenStats] | None = None,
                    reference: Sequence[Mapping[str, float | None]] | None = None,
                    k: float = P.MIN_K_FRACTION) -> list[dict[str, float | None]]:
    """Every attack's score for each ``(context_ids, scored_ids)`` pair: the scored ids' token statistics given
    the context, ``texts[i]`` the scored text (ZLib compresses it).

    ``stats`` may pass token statistics already computed for the same pairs; ``reference`` the retain model's
    scores of the same items (its ``loss`` is the reference attack's baseline).
    """
    # Deferred: imports transformers and peft, which this module otherwise avoids.
    from obliviate.likelihood import answer_gradient_norms, answer_token_stats

    if stats is None:
        stats = answer_token_stats(model, pairs, pad_token_id=pad_token_id, batch_size=batch_size)
    norms = answer_gradient_norms(model, pairs) if gradnorm else [None] * len(pairs)
    out = []
    for i, (text, s, norm) in enumerate(zip(texts, stats, norms)):
        scores = P.attack_scores(s, text, k=k, grad_norm=norm)
        ref_loss = reference[i].get("loss") if reference is not None else None
        scores["reference"] = scores["loss"] - ref_loss if ref_loss is not None else None
        out.append(scores)
    return out


def item_scores(model, formatter: PromptFormatter, records: Sequence[QARecord], *, batch_size: int = 16,
                gradnorm: bool = True, stats: Sequence[TokenStats] | None = None,
                reference: Sequence[Mapping[str, float | None]] | None = None,
                k: float = P.MIN_K_FRACTION) -> list[dict[str, float | None]]:
    """Every attack's score for each record's answer (``r.answer``: the text the model was trained on), the
    formatted question its context.

    ``stats`` may pass token statistics already computed for the same answers; ``reference`` the retain
    model's scores of the same items (its ``loss`` is the reference attack's baseline).
    """
    return sequence_scores(model, _pairs(formatter, records), [r.answer for r in records],
                           pad_token_id=formatter.tokenizer.pad_token_id, batch_size=batch_size, gradnorm=gradnorm,
                           stats=stats, reference=reference, k=k)


def text_pairs(tokenizer, texts: Sequence[str], *, max_length: int) -> tuple[list[tuple[list[int], list[int]]],
                                                                           list[str]]:
    """Each raw text as a ``(context_ids, scored_ids)`` pair, and the text that is scored.

    The text is tokenised as the model reads it (``add_special_tokens=True``) and cut to its first
    ``max_length`` ids; the first id is the context and every later one is scored — with a tokenizer that adds
    a BOS token every token of the text is scored, as in MUSE's evaluation (``logits[:-1]`` against
    ``input_ids[1:]``). The scored text is the text itself, or the decoded kept ids when it was cut (ZLib
    compresses what was scored). A text of fewer than two ids has nothing to score: ValueError naming it.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (one context token, one scored token), got {max_length}")
    pairs, scored = [], []
    for i, text in enumerate(texts):
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if len(ids) < 2:
            raise ValueError(f"text {i} ({text[:40]!r}) is a single token: there is nothing to score after its "
                             f"first token")
        kept = ids[:max_length]
        pairs.append((kept[:1], kept[1:]))
        scored.append(text if len(kept) == len(ids) else tokenizer.decode(kept, skip_special_tokens=True))
    return pairs, scored


def text_scores(model, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int = 16,
                gradnorm: bool = True, reference: Sequence[Mapping[str, float | None]] | None = None,
                k: float = P.MIN_K_FRACTION) -> list[dict[str, float | None]]:
    """Every attack's score for each raw text (:func:`text_pairs`: the whole text, cut to ``max_length`` ids)."""
    pairs, scored = text_pairs(tokenizer, texts, max_length=max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return sequence_scores(model, pairs, scored, pad_token_id=pad if pad is not None else 0, batch_size=batch_size,
                           gradnorm=gradnorm, reference=reference, k=k)


def unavailable_section(reason: str, **info: Any) -> dict:
    """The ``privacy`` entry of a record whose privacy could not be evaluated, with the reason."""
    return {"available": False, "reason": reason, **info}


def _entry(value: float | None, *, target: float | None, reference: float | None = None,
           reason: str | None = None, **extra: Any) -> dict:
    entry: dict[str, Any] = {"value": value, "higher_is_better": None, "target": target}
    if reference is not None:
        entry["reference"] = reference
    if value is None:
        entry.update({"available": False, "reason": reason or "not computed"})
    entry.update(extra)
    return entry


def attack_column(scores: Sequence[Mapping[str, float | None]], attack: str) -> list[float] | None:
    values = [s.get(attack) for s in scores]
    return None if not values or any(v is None for v in values) else [float(v) for v in values]


def privacy_section(forget: Sequence[Mapping[str, float | None]], holdout: Sequence[Mapping[str, float | None]], *,
                    forget_questions: Sequence[str] | None = None, holdout_questions: Sequence[str] | None = None,
                    holdout_info: Mapping[str, Any], retain: RetainScores | None,
                    gradnorm_reason: str | None = None, k: float = P.MIN_K_FRACTION,
                    forget_ids: Sequence[Mapping[str, Any]] | None = None,
                    holdout_ids: Sequence[Mapping[str, Any]] | None = None,
                    members: str = "forget", nonmembers: str = "holdout",
                    info: Mapping[str, Any] | None = None) -> dict:
    """AUC and privacy leakage of every attack from per-item scores (higher = more member-like).

    ``retain`` holds the retain model's scores of the same items (None or with a ``reason`` when there is no
    retain model): its AUC is each AUC's reference and the base of the privacy leakage. An attack whose
    scores are missing (GradNorm switched off, no reference model) is unavailable, with the reason.

    Each item is named by its question (``forget_questions``, ``holdout_questions``) or, for items that are
    not questions (MUSE's texts), by the fields in ``forget_ids``/``holdout_ids``; ``members``/``nonmembers``
    name the two sets and ``info`` adds what else the section records (how the items were scored).
    """
    if forget_ids is None:
        forget_ids = [{"question": q} for q in forget_questions or ()]
    if holdout_ids is None:
        holdout_ids = [{"question": q} for q in holdout_questions or ()]
    if len(forget_ids) != len(forget) or len(holdout_ids) != len(holdout):
        raise ValueError("one name (question or identifying fields) per scored item is needed")
    retain_ok = retain is not None and retain.forget is not None and retain.holdout is not None
    no_retain = (retain.reason if retain is not None and retain.reason else
                 "no retain model: pass --retain-model or --retain-results")
    metrics: dict[str, dict] = {}
    for attack in P.ATTACKS:
        title = P.ATTACK_TITLES[attack]
        f_scores, h_scores = attack_column(forget, attack), attack_column(holdout, attack)
        if f_scores is None or h_scores is None:
            reason = (gradnorm_reason if attack == "gradnorm" and gradnorm_reason else
                      f"no reference model for the {title} attack ({no_retain})" if attack == "reference" else
                      f"{title} scores missing")
            metrics[f"auc_{attack}"] = _entry(None, target=None, reason=reason)
            metrics[f"privacy_leakage_{attack}"] = _entry(None, target=0.0, reason=reason)
            continue
        value = P.auc(f_scores, h_scores)
        retain_auc = None
        if attack == "reference":
            retain_auc = SELF_REFERENCE_AUC if retain_ok else None
        elif retain_ok:
            rf, rh = attack_column(retain.forget, attack), attack_column(retain.holdout, attack)
            retain_auc = P.auc(rf, rh) if rf is not None and rh is not None else None
        metrics[f"auc_{attack}"] = _entry(value, target=retain_auc if retain_auc is not None else 0.5,
                                          reference=retain_auc)
        if retain_auc is None:
            reason = no_retain if not retain_ok else f"the retain model has no {title} scores"
            metrics[f"privacy_leakage_{attack}"] = _entry(None, target=0.0, reason=reason)
        elif retain_auc == 1.0:
            metrics[f"privacy_leakage_{attack}"] = _entry(
                None, target=0.0, reason="the retain model's AUC is 1: leakage relative to 1 − AUC is undefined")
        else:
            metrics[f"privacy_leakage_{attack}"] = _entry(P.privacy_leakage(value, retain_auc), target=0.0,
                                                          retain_auc=retain_auc)
    headline = dict(metrics[f"privacy_leakage_{P.HEADLINE_ATTACK}"])
    headline["attack"] = P.HEADLINE_ATTACK
    metrics["privacy_leakage"] = headline
    section: dict[str, Any] = {
        "available": True,
        "members": members,
        "nonmembers": nonmembers,
        "holdout": dict(holdout_info),
        "min_k_fraction": k,
        **dict(info or {}),
        "retain_source": retain.source if retain_ok else None,
        "metrics": metrics,
        "items": {
            "forget": [{**dict(n), **s} for n, s in zip(forget_ids, forget)],
            "holdout": [{**dict(n), **s} for n, s in zip(holdout_ids, holdout)],
        },
    }
    if retain_ok:
        section["retain_items"] = {"forget": [dict(s) for s in retain.forget],
                                   "holdout": [dict(s) for s in retain.holdout]}
    return section


def retain_scores_from_results(data: Mapping[str, Any], path: str, forget_questions: Sequence[str],
                               holdout_questions: Sequence[str], *, key: str = "question",
                               noun: str = "questions") -> RetainScores:
    """The retain model's attack scores of these questions from its results record (``data``, read from ``path``).

    A record without a usable ``privacy`` section (written before privacy was evaluated, or without a holdout
    set) gives no scores and says why; scores for other questions are a :class:`DataError`, as for Forget
    Quality (evaluate the retain model on the same split and set size). Items are matched on their ``key``
    field (MUSE's texts: ``sha256``); ``noun`` names them in messages.
    """
    privacy = data.get("privacy")
    if not isinstance(privacy, Mapping) or not privacy.get("available"):
        why = privacy.get("reason") if isinstance(privacy, Mapping) and privacy.get("reason") else \
            "it has no privacy section"
        return RetainScores(None, None, reason=f"the retain results {path} have no attack scores ({why}); "
                                                "re-evaluate the retain model with a holdout set")
    items = privacy.get("items")
    try:
        by_set = {name: {it[key]: {k: v for k, v in it.items() if k not in (key, *_NAMES)} for it in items[name]}
                  for name in ("forget", "holdout")}
    except (KeyError, TypeError):
        raise DataError("has no per-item attack scores", path=path, field="privacy.items") from None
    out = []
    for name, questions in (("forget", forget_questions), ("holdout", holdout_questions)):
        missing = [q for q in questions if q not in by_set[name]]
        if missing:
            raise DataError(f"lacks attack scores for {len(missing)} of the evaluated {name} {noun} (first: "
                            f"{missing[0][:60]!r}); evaluate the retain model on the same sets and set size",
                            path=path, field=f"privacy.items.{name}")
        out.append([by_set[name][q] for q in questions])
    return RetainScores(out[0], out[1], source=path)
