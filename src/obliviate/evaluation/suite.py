"""The evaluation pass: six metrics on each evaluation set, computed the way the paper computes them.

One pass over a model for all sets together: greedy generations for every question (batched, finished answers
leaving the batch and waiting prompts joining it, KV cache on), then every answer likelihood the metrics need —
answer, paraphrase, perturbed answers — scored with each item's prompt run once and its answers packed as a
prefix tree (a start shared by several answers is computed once), items batched by length. The embedding and
NLI models are loaded once per run (:class:`Scorers`) and reused for every set and every model.

Which answer is compared with what (docs/metrics.md):

* forget / retain sets: ROUGE, Probability and Cosine similarity against ``answer``; Truth ratio between
  ``paraphrased_answer`` and the ``perturbed_answers``; Probability is P(a|q).
* utility sets (real authors, world facts): ROUGE, Probability and Truth ratio use the short answer
  (``eval_answer``); Probability is normalised over the answer and its perturbed options; Cosine similarity
  and entailment use the full-sentence answer (``answer``).
* Entailment premise/hypothesis: forget set — generation entails reference; other TOFU sets — reference entails
  generation; real-world scenario — generation entails reference on every set.

Beyond the six: exact memorisation and extraction strength of the scored answer on every set (from per-token
statistics, :mod:`obliviate.evaluation.memorization`); membership-inference attacks of the forget set against a
holdout set (the ``privacy`` section, :mod:`obliviate.evaluation.privacy_eval`); and a bootstrap confidence
interval beside every per-set metric and aggregate (:mod:`obliviate.evaluation.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from obliviate.benchmarks.types import Aggregation, EvalSet, Holdout
from obliviate.data.formatting import PromptFormatter
from obliviate.data.records import QARecord
from obliviate.evaluation import aggregates as agg
from obliviate.evaluation import bootstrap as boot
from obliviate.evaluation import memorization as MEM
from obliviate.evaluation import metrics as M
from obliviate.evaluation import privacy_eval
from obliviate.evaluation.scorers import DEFAULT_EMBEDDING_MODEL, DEFAULT_NLI_MODEL, Embedder, NLIScorer, Unavailable
from obliviate.errors import ConfigError, ObliviateError, PickleWeightsError
from obliviate.generation import generate_answers
from obliviate.evaluation.tokens import TokenStats
from obliviate.likelihood import (
    answer_token_stats,
    shared_prompt_logprobs,
    supports_tree_attention,
    tree_prompt_logprobs,
)



@dataclass
class EvalSettings:
    max_new_tokens: int = 200          # the paper's generation length limit
    batch_size: int = 16
    set_size: int | None = None        # first N rows of each set; None = all rows (the paper used 300)
    embedding_model: str | None = DEFAULT_EMBEDDING_MODEL
    nli_model: str | None = DEFAULT_NLI_MODEL
    real_world: bool = False           # entailment direction of the real-world scenario
    bootstrap: int = boot.DEFAULT_RESAMPLES   # resamples per confidence interval; 0 = no intervals
    confidence_level: float = boot.DEFAULT_LEVEL
    gradnorm: bool = True              # the GradNorm attack (one backward pass per forget and holdout item)
    privacy: bool = True               # a benchmark's own privacy attacks (MUSE); the probes measure without them

    def __post_init__(self):
        # A negative set_size would slice rows off the end and 0 would mean "all": neither is what was asked.
        errors = [f"{name}: must be >= 1, got {getattr(self, name)}" for name in ("max_new_tokens", "batch_size")
                  if getattr(self, name) < 1]
        if self.set_size is not None and self.set_size < 1:
            errors.append(f"set_size: must be >= 1 or None (every row), got {self.set_size}")
        if self.bootstrap < 0:
            errors.append(f"bootstrap: must be >= 0 (0 = no confidence intervals), got {self.bootstrap}")
        if not 0 < self.confidence_level < 1:
            errors.append(f"confidence_level: must lie in (0, 1), got {self.confidence_level}")
        if errors:
            raise ConfigError(errors)


@dataclass
class Scorers:
    """The models behind metrics (embeddings, NLI), loaded once per run; either may be unavailable, with the reason."""

    embedder: Embedder | Unavailable
    nli: NLIScorer | Unavailable
    settings: dict = field(default_factory=dict)

    @classmethod
    def load(cls, settings: EvalSettings) -> "Scorers":
        info: dict = {"embedding_model": settings.embedding_model, "nli_model": settings.nli_model}
        if settings.embedding_model is None:
            embedder: Embedder | Unavailable = Unavailable("no embedding model configured")
        else:
            try:
                embedder = Embedder.load(settings.embedding_model)
                info.update({f"embedding_{k}": v for k, v in embedder.describe().items()})
            except PickleWeightsError:
                raise  # refused on purpose: an error, not an unavailable metric
            except ObliviateError as exc:
                embedder = Unavailable(str(exc))
        nli = NLIScorer.load(settings.nli_model) if settings.nli_model else Unavailable("no NLI model configured")
        if isinstance(embedder, Unavailable):
            info["embedding_unavailable"] = embedder.reason
        if isinstance(nli, Unavailable):
            info["nli_unavailable"] = nli.reason
        return cls(embedder=embedder, nli=nli, settings=info)


def _likelihood_groups(formatter: PromptFormatter, records: Sequence[QARecord], kind: str):
    """Each item's prompt and the answers scored after it: answer, paraphrase (not on utility sets), perturbed."""
    groups, has_para = [], []
    for r in records:
        para = kind != "utility" and r.paraphrased_answer is not None
        answers = [r.eval_answer] + ([r.paraphrased_answer] if para else []) + list(r.perturbed_answers)
        encoded = [formatter.encode(r.question, a) for a in answers]
        prompt = encoded[0].input_ids[: encoded[0].prompt_length]
        groups.append((prompt, [e.input_ids[e.prompt_length:] for e in encoded]))
        has_para.append(para)
    return groups, has_para


@dataclass
class _ModelOutputs:
    """What the model produced for one set: greedy generations and mean token log-probs of every answer."""

    generations: list[str] | None
    answer_lp: list[float]
    para_lp: list[float]
    pert_lp: list[list[float]]
    answer_stats: list[TokenStats] | None = None   # per-token statistics of the scored answer (memorisation)


def _run_model(model, formatter: PromptFormatter, parts: Sequence[tuple[list[QARecord], str]],
               settings: EvalSettings, *, generate: bool = True, token_stats: bool = True) -> list[_ModelOutputs]:
    """Generations and likelihoods for several sets in ONE generation pass and ONE scoring pass.

    Pooling the sets keeps the batches full: a small set (forget01 has 40 rows) would otherwise decode alone
    until its longest answer stops. The answers of one item share its question's prompt, which is run once
    (tree_prompt_logprobs). On utility sets the (short) answer itself plays the paraphrase's part (docs/metrics.md).
    """
    groups, has_para, bounds = [], [], []
    for records, kind in parts:
        g, p = _likelihood_groups(formatter, records, kind)
        bounds.append((len(groups), len(groups) + len(g)))
        groups += g
        has_para += p
    generations = None
    if generate:
        generations = generate_answers(model, formatter, [r.question for records, _ in parts for r in records],
                                       max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)
    # Answers of an item packed as a prefix tree where the attention takes custom masks; otherwise the
    # shared prompt's cache is reused for each answer (flash attention, for one). Both give the same numbers.
    score = tree_prompt_logprobs if supports_tree_attention(model) else shared_prompt_logprobs
    scored = score(model, groups, pad_token_id=formatter.tokenizer.pad_token_id, batch_size=settings.batch_size)
    _check_finite_scores(scored, [r for records, _ in parts for r in records])
    stats = None
    if token_stats:
        # Each group's first answer is the item's eval_answer, already encoded after its prompt.
        pairs = [(prompt, answers[0]) for prompt, answers in groups]
        stats = answer_token_stats(model, pairs, pad_token_id=formatter.tokenizer.pad_token_id,
                                   batch_size=settings.batch_size)
    out = []
    for lo, hi in bounds:
        answer_lp, para_lp, pert_lp = [], [], []
        for item, para in zip(scored[lo:hi], has_para[lo:hi]):
            means = [s / max(c, 1) for s, c in item]
            answer_lp.append(means[0])
            para_lp.append(means[1] if para else means[0])
            pert_lp.append(means[2:] if para else means[1:])
        out.append(_ModelOutputs(generations[lo:hi] if generations is not None else None,
                                 answer_lp, para_lp, pert_lp, stats[lo:hi] if stats is not None else None))
    return out


def _check_finite_scores(scored, records: Sequence[QARecord]) -> None:
    """A NaN or inf log-likelihood means the model's numbers overflow: no metric of it means anything."""
    bad = [r for item, r in zip(scored, records) if not all(math.isfinite(s) for s, _ in item)]
    if bad:
        raise ObliviateError(f"the model's answer log-probabilities are not finite (NaN or inf) for {len(bad)} of "
                             f"{len(records)} questions (first: {bad[0].source or bad[0].question!r}); its weights "
                             f"or its precision overflow. Evaluate it in float32 (--dtype float32), or check the "
                             f"run that produced it")


def _truth_x(para_lp: list[float], pert_lp: list[list[float]]) -> list[float] | None:
    if not all(pert_lp):
        return None
    return M.truth_ratio_x([-v for v in para_lp], [[-v for v in ps] for ps in pert_lp])


def _records(eval_set: EvalSet, settings: EvalSettings) -> list[QARecord]:
    records = eval_set.records[: settings.set_size] if settings.set_size else list(eval_set.records)
    if not records:
        raise ObliviateError(f"evaluation set '{eval_set.name}' is empty")
    return records


@dataclass
class RetainReference:
    """What a retain model contributes to another model's evaluation.

    ``truth_x``: its forget-set truth-ratio values (Forget Quality); ``forget_metrics``: its values of forget-set
    metrics (shown as each metric's ``reference``); ``privacy``: its attack scores of the forget and holdout
    items (privacy leakage, and the baseline of the reference attack).
    """

    truth_x: list[float] | None = None
    forget_metrics: dict[str, float] = field(default_factory=dict)
    privacy: privacy_eval.RetainScores | None = None


def _holdout_records(holdout: Holdout | None, settings: EvalSettings) -> list[QARecord] | None:
    if holdout is None or not holdout.records:
        return None
    return holdout.records[: settings.set_size] if settings.set_size else list(holdout.records)


def _privacy_scores(model, formatter: PromptFormatter, forget: list[QARecord], holdout: list[QARecord],
                    settings: EvalSettings, forget_stats: list[TokenStats] | None,
                    retain: privacy_eval.RetainScores | None = None):
    """Attack scores of the forget and holdout items; ``forget_stats`` are reused when they score ``answer``."""
    reuse = forget_stats if forget_stats is not None and all(r.eval_answer == r.answer for r in forget) else None
    kw = {"batch_size": settings.batch_size, "gradnorm": settings.gradnorm}
    have_retain = retain is not None and retain.forget is not None
    f = privacy_eval.item_scores(model, formatter, forget, stats=reuse,
                                 reference=retain.forget if have_retain else None, **kw)
    h = privacy_eval.item_scores(model, formatter, holdout, reference=retain.holdout if have_retain else None, **kw)
    return f, h


def retain_reference(model, formatter: PromptFormatter, forget_set: EvalSet, settings: EvalSettings,
                     holdout: Holdout | None = None) -> RetainReference:
    """Evaluate a retain model for another model's evaluation: truth-ratio values, memorisation and attack
    scores on the forget set (and the holdout set), without generating."""
    records = _records(forget_set, settings)
    outputs = _run_model(model, formatter, [(records, forget_set.kind)], settings, generate=False)[0]
    xs = _truth_x(outputs.para_lp, outputs.pert_lp)
    if xs is None:
        raise ObliviateError(f"set '{forget_set.name}' has no perturbed answers: Forget Quality needs them")
    stats = outputs.answer_stats or []
    forget_metrics = {
        "exact_memorization": sum(MEM.exact_memorization(s.hits) for s in stats) / len(stats),
        "extraction_strength": sum(MEM.extraction_strength(s.hits) for s in stats) / len(stats),
    }
    privacy = None
    held = _holdout_records(holdout, settings)
    if held is not None:
        f, h = _privacy_scores(model, formatter, records, held, settings, outputs.answer_stats)
        privacy = privacy_eval.RetainScores(f, h, source="retain model")
    return RetainReference(truth_x=xs, forget_metrics=forget_metrics, privacy=privacy)


def evaluate_set(model, formatter: PromptFormatter, eval_set: EvalSet, scorers: Scorers,
                 settings: EvalSettings) -> dict:
    """Per-item values and set-level metrics of one set, in the shape of ``results.json``'s ``sets`` entries."""
    records = _records(eval_set, settings)
    outputs = _run_model(model, formatter, [(records, eval_set.kind)], settings)[0]
    return _set_result(formatter, eval_set, records, outputs, scorers, settings)


def _set_result(formatter: PromptFormatter, eval_set: EvalSet, records: list[QARecord], outputs: _ModelOutputs,
                scorers: Scorers, settings: EvalSettings) -> dict:
    rows_available = len(eval_set.records)
    kind = eval_set.kind
    short = [r.eval_answer for r in records]
    sentence = [r.answer for r in records]
    generations, answer_lp, para_lp, pert_lp = (outputs.generations, outputs.answer_lp, outputs.para_lp,
                                                outputs.pert_lp)

    rouge = M.rouge_recall(generations, short)
    if kind == "utility":
        probability = M.normalized_probability_items(answer_lp, pert_lp)
    else:
        probability = [math.exp(lp) for lp in answer_lp]
    truth_x = _truth_x(para_lp, pert_lp)
    entropy = M.token_entropy(generations, formatter.tokenizer)

    stats = outputs.answer_stats
    em = es = None
    if stats is not None:
        em = [MEM.exact_memorization(s.hits) for s in stats]
        es = [MEM.extraction_strength(s.hits) for s in stats]

    cosine = None
    if not isinstance(scorers.embedder, Unavailable):
        cosine = scorers.embedder.cosine(generations, sentence)

    entail = None
    if not isinstance(scorers.nli, Unavailable):
        gen_premise = kind == "forget" or settings.real_world
        # Real-world scenario: the golden answer is the reference (as in the paper's released code).
        reference = short if settings.real_world else sentence
        premises, hypotheses = (generations, reference) if gen_premise else (reference, generations)
        entail = M.entailment_items(scorers.nli.entails(premises, hypotheses, batch_size=settings.batch_size),
                                    rouge["rouge_l"])

    # Each item field, or None with the reason it is missing; every registered metric is computed from its field
    # as the registry declares (metrics.set_value), the same way the bootstrap recomputes it from resampled items.
    no_stats = "no per-token statistics were computed"
    columns: dict[str, tuple[list[float] | None, str | None]] = {
        "rouge_l": (rouge["rouge_l"], None), "rouge1": (rouge["rouge1"], None),
        "probability": (probability, None), "truth_ratio_x": (truth_x, "the set has no perturbed answers"),
        "token_entropy": (entropy, None),
        "exact_memorization": (em, no_stats), "extraction_strength": (es, no_stats),
        "cosine_similarity": (cosine, getattr(scorers.embedder, "reason", None)),
        "entailment": (entail, getattr(scorers.nli, "reason", None)),
    }
    metrics: dict[str, dict] = {}
    for name, spec in M.METRICS.items():
        if spec.item_field not in columns or (spec.forget_only and kind != "forget"):
            continue
        values, reason = columns[spec.item_field]
        entry = {"value": None if values is None else M.set_value(name, values, kind),
                 "higher_is_better": M.higher_is_better(name, kind)}
        if values is None:
            entry.update({"available": False, "reason": reason})
        metrics[name] = entry

    items = []
    for i, r in enumerate(records):
        items.append({
            "question": r.question, "reference": short[i], "generation": generations[i],
            "rouge_l": rouge["rouge_l"][i], "rouge1": rouge["rouge1"][i], "probability": probability[i],
            "truth_ratio_x": truth_x[i] if truth_x is not None else None,
            "token_entropy": entropy[i],
            "cosine_similarity": cosine[i] if cosine is not None else None,
            "entailment": entail[i] if entail is not None else None,
            "exact_memorization": em[i] if em is not None else None,
            "extraction_strength": es[i] if es is not None else None,
        })
    return {"size": len(records), "rows_available": rows_available, "kind": kind, "metrics": metrics,
            "items": items}


def aggregates(sets: dict[str, dict], *, retain_truth_x: list[float] | None = None,
               fq_reason: str = "no retain model: pass --retain-model or --retain-results") -> dict[str, dict]:
    """MU (18 numbers), MU-TOFU (9), MU-retain (6), FE and FQ from the ``sets`` section."""
    values = {name: {m: s["metrics"][m]["value"] for m in M.SIX if m in s["metrics"]} for name, s in sets.items()}
    out = {
        "model_utility": agg.model_utility(values),
        "model_utility_tofu": agg.model_utility_tofu(values),
        "model_utility_retain": agg.model_utility_retain(values),
    }
    forget = sets.get("forget")
    if forget is not None:
        out["forget_efficacy"] = agg.forget_efficacy(values["forget"])
        unlearned_x = [it["truth_ratio_x"] for it in forget["items"]]
        if any(x is None for x in unlearned_x):
            unlearned_x = None
        out["forget_quality"] = agg.forget_quality(unlearned_x, retain_truth_x, reason_if_missing=fq_reason)
    return {name: a.to_dict() for name, a in out.items()}


def _privacy(model, formatter: PromptFormatter, sets: Sequence[EvalSet], records: list[list[QARecord]],
             outputs: list[_ModelOutputs], settings: EvalSettings, holdout: Holdout | None,
             retain: RetainReference | None) -> dict:
    """The ``privacy`` section: attacks on the forget set against the holdout set, or why there are none."""
    where = next((i for i, s in enumerate(sets) if s.kind == "forget"), None)
    info = dict(holdout.info) if holdout is not None else {}
    reason = info.pop("reason", None)
    if where is None:
        return privacy_eval.unavailable_section("no forget set was evaluated (the members)", holdout=info)
    held = _holdout_records(holdout, settings)
    if held is None:
        return privacy_eval.unavailable_section(
            reason or "no holdout set (non-members): give one with --holdout or eval.holdout", holdout=info)
    forget = records[where]
    retain_scores = retain.privacy if retain is not None else None
    if retain is not None and retain_scores is None:
        retain_scores = privacy_eval.RetainScores(None, None, reason="the retain model was not scored on a "
                                                                     "holdout set")
    f, h = _privacy_scores(model, formatter, forget, held, settings, outputs[where].answer_stats, retain_scores)
    info.update(size=len(held), rows_available=len(holdout.records))
    return privacy_eval.privacy_section(
        f, h, forget_questions=[r.question for r in forget], holdout_questions=[r.question for r in held],
        holdout_info=info, retain=retain_scores,
        gradnorm_reason=None if settings.gradnorm else "GradNorm switched off (eval.gradnorm: false)")


def evaluate_model(model, formatter: PromptFormatter, sets: Sequence[EvalSet], *, scorers: Scorers,
                   settings: EvalSettings, retain_truth_x: list[float] | None = None,
                   fq_reason: str | None = None, holdout: Holdout | None = None,
                   retain: RetainReference | None = None, seed: int = 0,
                   aggregate: Aggregation | None = None) -> dict:
    """The ``sets``, ``aggregates`` and ``privacy`` sections of a results record for one model.

    ``aggregate`` is the benchmark's own ``aggregates`` section (the real-world scenario's MU over the
    neighbour set, :class:`~obliviate.benchmarks.types.LoadedBenchmark`); by default TOFU's (:func:`aggregates`).

    ``retain`` (a retain model's truth-ratio values, memorisation and attack scores) supplies Forget
    Quality, the forget-set references and the privacy leakage; ``retain_truth_x`` alone still serves Forget
    Quality. ``seed`` seeds the bootstrap intervals (``settings.bootstrap`` resamples; 0 = none).
    """
    if retain is not None and retain_truth_x is None:
        retain_truth_x = retain.truth_x
    records = [_records(s, settings) for s in sets]
    outputs = _run_model(model, formatter, [(r, s.kind) for r, s in zip(records, sets)], settings)
    out_sets = {s.name: _set_result(formatter, s, r, o, scorers, settings) for s, r, o in zip(sets, records, outputs)}
    forget = next((out_sets[s.name] for s in sets if s.kind == "forget"), None)
    if retain is not None and forget is not None:
        for metric, value in retain.forget_metrics.items():
            entry = forget["metrics"].get(metric)
            if entry is not None and value is not None:
                entry["reference"] = value
    if aggregate is not None:
        body = {"sets": out_sets, "aggregates": aggregate(out_sets)}
    else:
        kwargs = {"fq_reason": fq_reason} if fq_reason else {}
        body = {"sets": out_sets, "aggregates": aggregates(out_sets, retain_truth_x=retain_truth_x, **kwargs)}
    body["privacy"] = _privacy(model, formatter, sets, records, outputs, settings, holdout, retain)
    boot.add_intervals(body, resamples=settings.bootstrap, seed=seed, level=settings.confidence_level,
                       retain_truth_x=retain_truth_x)
    return body
