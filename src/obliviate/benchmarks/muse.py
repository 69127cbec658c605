"""MUSE (Shi et al., 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", arXiv 2407.06460).

MUSE unlearns *text* — BBC news articles (MUSE-News) or the Harry Potter books (MUSE-Books) — from a model
trained on it, and measures (docs/muse_wmdp.md):

``verbmem_forget``  verbatim memorisation: the model continues a prefix of a forget text greedily for up to
                    128 tokens; ROUGE-L F1 of the continuation against the true continuation (its first 128
                    tokens). Lower is better.
``knowmem_forget``  knowledge memorisation: questions about the forget texts, asked with a few solved examples
                    in front (``Question: …\\nAnswer: …\\n\\n``), greedy answers of up to 32 tokens cut at the
                    next question; ROUGE-L F1 against the answer. Lower is better.
``knowmem_retain``  the same on questions about the retain texts: utility. Higher is better.
privacy leakage     Min-K% Prob (k = 40 %) membership inference on ``privleak/forget`` texts (members) against
                    ``privleak/holdout`` texts (non-members), the AUC relative to the retain model's (the
                    ``privacy`` section, :func:`muse_privacy`; docs/metrics.md). Each text is scored whole, cut
                    to :data:`PRIVLEAK_MAX_LENGTH` tokens.

Prompts are plain text with no chat template, as in MUSE's released evaluation; ROUGE is ``rouge_score``'s
ROUGE-L F1 without stemming (:func:`obliviate.evaluation.metrics.rouge_l_f1`). MUSE reports these numbers × 100.

Layouts read by :func:`load_muse`:

* a local folder in the published layout (MUSE's GitHub ``data/news`` or ``data/books``, or the hub configs
  saved one file per split): ``raw/{forget,retain1,retain2,holdout}.{txt,json,jsonl}``,
  ``verbmem/forget.json`` (rows with ``prompt`` and ``gt``), ``knowmem/{forget_qa,forget_qa_icl,retain_qa,
  retain_qa_icl}.json`` (``question``, ``answer``), ``privleak/{forget,retain,holdout}.json`` (strings or
  ``text`` rows). Each of ``verbmem``, ``knowmem`` and ``privleak`` may be absent; what it measures is then
  recorded as unavailable, with the reason.
* the hub ids ``muse-bench/MUSE-News`` and ``muse-bench/MUSE-Books`` (configs ``raw``, ``verbmem``,
  ``knowmem``, ``privleak`` with the splits above; ``privleak``'s ``retain`` is ``retain``, ``raw``'s are
  ``retain1``/``retain2``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.benchmarks.types import LoadedBenchmark
from obliviate.data.loading import decode_utf8, describe_value, format_problem, looks_like_hub_id, raise_problems
from obliviate.data.records import QARecord, TextRecord
from obliviate.errors import DataError, ObliviateError
from obliviate.evaluation import metrics as M
from obliviate.evaluation import privacy_eval
from obliviate.evaluation.privacy import HEADLINE_ATTACK, MIN_K_FRACTION

__all__ = ["HUB_IDS", "KNOWMEM_MAX_NEW_TOKENS", "MuseData", "PRIVLEAK_MAX_LENGTH", "VERBMEM_MAX_NEW_TOKENS",
           "evaluate_muse", "find_muse_root", "is_muse_folder", "knowmem_prompt", "load_muse", "muse_privacy",
           "muse_retain_scores", "muse_retain_scores_from_results"]

HUB_IDS: tuple[str, ...] = ("muse-bench/MUSE-News", "muse-bench/MUSE-Books")
"""The published MUSE corpora on the Hugging Face hub."""

VERBMEM_MAX_NEW_TOKENS = 128
"""MUSE's continuation length for verbatim memorisation (and the length of the reference it is scored against)."""

KNOWMEM_MAX_NEW_TOKENS = 32
"""MUSE's answer length for knowledge memorisation."""

PRIVLEAK_MAX_LENGTH = 2048
"""Tokens of each privleak text that are scored, at most (its first ones; fewer when the model has fewer
positions). MUSE scores each text whole within the model's context; its texts were cut to at most 2048 Llama
tokens, so 2048 scores them whole with MUSE's tokenizer."""

ANSWER_STOPS: tuple[str, ...] = ("\n\n", "\nQuestion", "Question:")
"""A knowledge answer is cut before the first of these (the model starting the next few-shot question)."""

SUBSETS: dict[str, tuple[str, ...]] = {
    "raw": ("forget", "retain1", "retain2", "holdout"),
    "verbmem": ("forget",),
    "knowmem": ("forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl"),
    "privleak": ("forget", "retain", "holdout"),
}
"""Configs (subsets) and splits of the published layout that obliviate reads."""

_SUFFIXES = (".json", ".jsonl", ".txt")


@dataclass
class MuseData:
    """The MUSE evaluation sets (and where they came from). A set that is absent is ``None``; ``missing`` says why."""

    source: str
    verbmem: list[tuple[str, str]] | None = None          # (prompt, true continuation)
    knowmem: dict[str, list[QARecord]] = field(default_factory=dict)   # forget_qa, forget_qa_icl, retain_qa, ...
    privleak: dict[str, list[TextRecord]] = field(default_factory=dict)  # forget, retain, holdout
    files: list[Path] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    def info(self) -> dict:
        return {"name": "muse", "source": self.source,
                "sets": {"verbmem": len(self.verbmem) if self.verbmem is not None else None,
                         **{f"knowmem.{k}": len(v) for k, v in self.knowmem.items()},
                         **{f"privleak.{k}": len(v) for k, v in self.privleak.items()}},
                "missing": dict(self.missing)}


# --- locating -----------------------------------------------------------------------------------------


def _split_file(folder: Path, subset: str, split: str) -> Path | None:
    for suffix in _SUFFIXES:
        path = folder / subset / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def is_muse_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds at least one MUSE evaluation subset (``verbmem``, ``knowmem`` or ``privleak``)."""
    folder = Path(folder)
    return folder.is_dir() and any(_split_file(folder, subset, split) is not None
                                   for subset in ("verbmem", "knowmem", "privleak") for split in SUBSETS[subset])


def find_muse_root(data_file: str | Path | None) -> Path | None:
    """The MUSE folder a training file belongs to (``<root>/raw/forget.txt`` → ``<root>``), or None."""
    if not data_file:
        return None
    path = Path(data_file).expanduser()
    for folder in (path.parent.parent, path.parent):
        if is_muse_folder(folder):
            return folder
    return None


# --- reading ------------------------------------------------------------------------------------------


def _rows(path: Path) -> list[tuple[Any, str]]:
    text = decode_utf8(path.read_bytes(), str(path))
    if path.suffix.lower() == ".txt":
        return [(text, "the file")]
    stripped = text.lstrip()
    if not stripped:
        raise DataError("the file is empty", path=str(path))
    if stripped[0] == "[":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON: {err.msg} (column {err.colno})", path=str(path), line=err.lineno) from err
        if not isinstance(values, list):
            raise DataError("expected a JSON array of rows", path=str(path))
        return [(v, f"element {i}") for i, v in enumerate(values)]
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                rows.append((json.loads(line), f"line {number}"))
            except json.JSONDecodeError as err:
                raise DataError(f"invalid JSON: {err.msg} (column {err.colno})", path=str(path), line=number) from err
    return rows


def _strings(rows: Sequence[tuple[Any, str]], origin: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """Every row as ``{field: text}``; a bare string is a one-field row (``text``). All problems at once."""
    problems, out = [], []
    for value, where in rows:
        if isinstance(value, str) and fields == ("text",):
            value = {"text": value}
        if not isinstance(value, Mapping):
            problems.append(format_problem(origin, where, None, f"expected an object with {', '.join(fields)}, "
                                                                f"got {describe_value(value)}"))
            continue
        row = {}
        for name in fields:
            item = value.get(name)
            if not (isinstance(item, str) and item.strip()):
                problems.append(format_problem(origin, where, name, "required field is missing" if item is None else
                                               f"must be a non-empty string, got {describe_value(item)}"))
            else:
                row[name] = item
        if len(row) == len(fields):
            out.append(row)
    if not rows:
        problems.append(format_problem(origin, None, None, "holds no rows"))
    if problems:
        raise_problems(origin, problems, what="MUSE data")
    return out


def _fields(subset: str) -> tuple[str, ...]:
    return {"verbmem": ("prompt", "gt"), "knowmem": ("question", "answer")}.get(subset, ("text",))


def _read_local(folder: Path, subset: str, split: str) -> tuple[list[dict[str, str]] | None, Path | None]:
    path = _split_file(folder, subset, split)
    if path is None:
        return None, None
    return _strings(_rows(path), str(path), _fields(subset)), path


def _read_hub(hub_id: str, subset: str, split: str) -> list[dict[str, str]] | None:
    # Deferred: datasets is heavy and only the hub path needs it.
    import datasets

    origin = f"{hub_id}[{subset}/{split}]"
    try:
        dataset = datasets.load_dataset(hub_id, subset, split=split)
    except datasets.exceptions.DatasetNotFoundError as err:
        raise ObliviateError(f"dataset {origin} was not found on the Hugging Face hub, or the hub could not be "
                             f"reached ({err}). To work offline, download MUSE and pass its local folder.") from err
    except OSError as err:
        raise ObliviateError(f"the Hugging Face hub could not be reached to load {origin} ({err}). To work "
                             f"offline, download MUSE and pass its local folder.") from err
    except ValueError:
        return None  # the corpus has no such config or split (MUSE-Books' knowmem, in some releases)
    rows = [(dict(row), f"row {i}") for i, row in enumerate(dataset)]
    return _strings(rows, origin, _fields(subset))


def load_muse(source: str | Path) -> MuseData:
    """The MUSE evaluation sets of a local folder or a hub id (module docstring)."""
    folder = Path(source).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise DataError("expected a MUSE folder (with verbmem/, knowmem/, privleak/), got a file",
                            path=str(source))
        if not is_muse_folder(folder):
            raise DataError("not a MUSE folder: none of verbmem/forget.json, knowmem/forget_qa.json, "
                            "knowmem/retain_qa.json, privleak/forget.json was found in it", path=str(source))

        def read(subset: str, split: str):
            rows, path = _read_local(folder, subset, split)
            if path is not None:
                data.files.append(path)
            return rows
    elif looks_like_hub_id(str(source)):
        def read(subset: str, split: str):
            return _read_hub(str(source), subset, split)
    else:
        raise DataError("no such folder (a MUSE folder, or a hub id such as muse-bench/MUSE-News)", path=str(source))
    data = MuseData(source=str(source))
    verbmem = read("verbmem", "forget")
    if verbmem is None:
        data.missing["verbmem_forget"] = f"{source} has no verbmem/forget split"
    else:
        data.verbmem = [(r["prompt"], r["gt"]) for r in verbmem]
    for split in SUBSETS["knowmem"]:
        rows = read("knowmem", split)
        if rows is not None:
            data.knowmem[split] = [QARecord(question=r["question"], answer=r["answer"]) for r in rows]
    for split in ("forget_qa", "retain_qa"):
        if split not in data.knowmem:
            data.missing[f"knowmem_{split.split('_')[0]}"] = f"{source} has no knowmem/{split} split"
    for split in SUBSETS["privleak"]:
        rows = read("privleak", split)
        if rows is not None:
            data.privleak[split] = [TextRecord(r["text"]) for r in rows]
    return data


# --- evaluation ---------------------------------------------------------------------------------------


def knowmem_prompt(question: str, examples: Sequence[QARecord]) -> str:
    """MUSE's few-shot knowledge prompt: the solved examples, then the question, then ``Answer: ``."""
    shots = "".join(f"Question: {r.question}\nAnswer: {r.answer}\n\n" for r in examples)
    return shots + f"Question: {question}\nAnswer: "


def _cut_answer(text: str) -> str:
    for stop in ANSWER_STOPS:
        text = text.split(stop)[0]
    return text


def _decode(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int) -> list[str]:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.generation import greedy_decode, stop_token_ids

    ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = greedy_decode(model, ids, max_new_tokens=max_new_tokens, stop_ids=stop_token_ids(tokenizer),
                        pad_token_id=pad, batch_size=batch_size)
    return [tokenizer.decode(t, skip_special_tokens=True) for t in out]


def _set(kind: str, values: list[float], items: list[dict], rows_available: int) -> dict:
    # Less memorisation is better on the forget texts; more knowledge is better on the retain texts (utility).
    return {"size": len(values), "rows_available": rows_available, "kind": kind,
            "metrics": {"rouge_l_f1": {"value": sum(values) / len(values), "higher_is_better": kind != "forget"}},
            "items": items}


def _limit(rows: list, set_size: int | None) -> list:
    return rows[:set_size] if set_size else list(rows)


def evaluate_muse(model, tokenizer, data: MuseData, *, set_size: int | None = None, batch_size: int = 16,
                  verbmem_max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
                  knowmem_max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS, gradnorm: bool = True,
                  privacy: bool = True, privleak_max_length: int = PRIVLEAK_MAX_LENGTH,
                  retain_privacy: privacy_eval.RetainScores | None = None) -> dict:
    """The ``sets``, ``aggregates`` and ``privacy`` sections of a MUSE results record for one model.

    ``set_size`` keeps the first N rows of each set (quick runs; not comparable with published numbers).
    ``privacy=False`` leaves the privacy attacks out (the section says so), for measurements that do not report
    them (the robustness probes). ``retain_privacy``: the retain model's attack scores of the same privleak texts (the privacy leakage's
    reference; :func:`muse_retain_scores`, :func:`muse_retain_scores_from_results`).
    """
    sets: dict[str, dict] = {}
    if data.verbmem is not None:
        rows = _limit(data.verbmem, set_size)
        outputs = _decode(model, tokenizer, [p for p, _ in rows], max_new_tokens=verbmem_max_new_tokens,
                          batch_size=batch_size)
        # The reference is the true continuation cut as MUSE's evaluation cuts it: tokenised with the tokenizer's
        # special tokens, its first max_new_tokens ids kept, decoded without them (with a Llama tokenizer, BOS takes
        # one of the 128 places).
        references = [tokenizer.decode(tokenizer(gt, add_special_tokens=True)["input_ids"][:verbmem_max_new_tokens],
                                       skip_special_tokens=True) for _, gt in rows]
        scores = M.rouge_l_f1(outputs, references)
        items = [{"question": p, "reference": ref, "generation": out, "rouge_l_f1": sc}
                 for (p, _), ref, out, sc in zip(rows, references, outputs, scores)]
        sets["verbmem_forget"] = _set("forget", scores, items, len(data.verbmem))
    for name, kind in (("forget", "forget"), ("retain", "retain")):
        qa = data.knowmem.get(f"{name}_qa")
        if not qa:
            continue
        shots = data.knowmem.get(f"{name}_qa_icl") or []
        rows = _limit(qa, set_size)
        prompts = [knowmem_prompt(r.question, shots) for r in rows]
        outputs = [_cut_answer(o) for o in _decode(model, tokenizer, prompts, max_new_tokens=knowmem_max_new_tokens,
                                                   batch_size=batch_size)]
        scores = M.rouge_l_f1(outputs, [r.answer for r in rows])
        items = [{"question": r.question, "reference": r.answer, "generation": out, "rouge_l_f1": sc}
                 for r, out, sc in zip(rows, outputs, scores)]
        sets[f"knowmem_{name}"] = _set(kind, scores, items, len(qa))
    if not sets:
        raise ObliviateError(f"{data.source}: no MUSE set to evaluate (verbmem/forget, knowmem/forget_qa, "
                             "knowmem/retain_qa are all absent)")
    aggregates = {name: {"value": s["metrics"]["rouge_l_f1"]["value"],
                         "higher_is_better": s["metrics"]["rouge_l_f1"]["higher_is_better"],
                         "note": "MUSE reports this × 100"}
                  for name, s in sets.items()}
    for name, reason in data.missing.items():
        aggregates.setdefault(name, {"value": None, "higher_is_better": name == "knowmem_retain",
                                     "available": False, "reason": reason})
    section = (muse_privacy(model, tokenizer, data, set_size=set_size, batch_size=batch_size, gradnorm=gradnorm,
                            max_length=privleak_max_length, retain=retain_privacy) if privacy
               else privacy_eval.unavailable_section("privacy attacks not run for this measurement"))
    return {"sets": sets, "aggregates": aggregates, "privacy": section}


def _text_ids(texts: Sequence[str]) -> list[dict[str, str]]:
    """What names a privleak text in results.json: its start, and the SHA-256 of its UTF-8 bytes."""
    return [{"text": t[:60], "sha256": "sha256:" + hashlib.sha256(t.encode("utf-8")).hexdigest()} for t in texts]


def _privleak_texts(data: MuseData, set_size: int | None) -> tuple[list[str], list[str]] | None:
    if "forget" not in data.privleak or "holdout" not in data.privleak:
        return None
    return ([r.text for r in _limit(data.privleak["forget"], set_size)],
            [r.text for r in _limit(data.privleak["holdout"], set_size)])


def _max_length(model, max_length: int) -> int:
    """``max_length``, or the model's number of positions when it has fewer."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(max_length, positions) if isinstance(positions, int) and positions > 0 else max_length


def _privleak_origin(data: MuseData, split: str) -> str:
    return next((str(p) for p in data.files if p.parent.name == "privleak" and p.stem == split),
                f"{data.source} privleak/{split}")


def _scores(model, tokenizer, data: MuseData, texts: Sequence[str], split: str, **kw) -> list[dict]:
    for i, text in enumerate(texts):
        if len(tokenizer(text, add_special_tokens=True)["input_ids"]) < 2:
            raise DataError(f"the text {text[:40]!r} is a single token: nothing to score after its first token",
                            path=_privleak_origin(data, split), field=f"element {i}")
    return privacy_eval.text_scores(model, tokenizer, texts, **kw)


def muse_retain_scores(model, tokenizer, data: MuseData, *, set_size: int | None = None, batch_size: int = 16,
                       gradnorm: bool = True, max_length: int = PRIVLEAK_MAX_LENGTH) -> privacy_eval.RetainScores:
    """A retain model's attack scores of the privleak forget and holdout texts (the reference of another
    model's privacy leakage); no scores, with the reason, when the data has no such texts."""
    texts = _privleak_texts(data, set_size)
    if texts is None:
        return privacy_eval.RetainScores(None, None, reason=f"{data.source} has no privleak/forget and "
                                                            "privleak/holdout splits")
    kw = {"max_length": _max_length(model, max_length), "batch_size": batch_size, "gradnorm": gradnorm}
    return privacy_eval.RetainScores(_scores(model, tokenizer, data, texts[0], "forget", **kw),
                                     _scores(model, tokenizer, data, texts[1], "holdout", **kw),
                                     source="retain model")


def muse_retain_scores_from_results(results: Mapping[str, Any], path: str, data: MuseData, *,
                                    set_size: int | None = None,
                                    max_length: int | None = None) -> privacy_eval.RetainScores:
    """A retain model's attack scores of the privleak texts from its MUSE ``results.json`` (``results``, read
    from ``path``).

    A record whose privacy section holds no scores gives none, with the reason. A record of another benchmark,
    of other texts (a different number of members or non-members, or texts whose SHA-256 differs) or cut to
    another ``max_length`` cannot be the reference: a :class:`DataError` naming ``path``.
    """
    bench = results.get("benchmark")
    name = bench.get("name") if isinstance(bench, Mapping) else None
    if name != "muse":
        raise DataError(f"is not a MUSE results record (benchmark: {name or 'none'}); the retain model's "
                        "reference for MUSE is its own obliviate eval --benchmark muse results", path=path,
                        field="benchmark.name")
    texts = _privleak_texts(data, set_size)
    privacy = results.get("privacy")
    if texts is None:
        return privacy_eval.RetainScores(None, None, reason=f"{data.source} has no privleak/forget and "
                                                            "privleak/holdout splits")
    if not isinstance(privacy, Mapping) or not privacy.get("available"):
        why = privacy.get("reason") if isinstance(privacy, Mapping) and privacy.get("reason") else \
            "it has no privacy section"
        return privacy_eval.RetainScores(None, None, reason=f"the retain results {path} have no attack scores "
                                                            f"({why}); re-evaluate the retain model on the same "
                                                            "MUSE data")
    items = privacy.get("items")
    counts = {}
    for split, evaluated in zip(("forget", "holdout"), texts):
        rows = items.get(split) if isinstance(items, Mapping) else None
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) and "sha256" in r for r in rows):
            raise DataError("has no per-text MUSE attack scores (each item with its sha256)", path=path,
                            field=f"privacy.items.{split}")
        counts[split] = len(rows)
        theirs = {r["sha256"] for r in rows}
        ours = _text_ids(evaluated)
        if len(rows) != len(evaluated) or any(i["sha256"] not in theirs for i in ours):
            differ = next((i["text"] for i in ours if i["sha256"] not in theirs), None)
            detail = (f"privleak/{split} text {differ!r}... is not among them" if differ is not None else
                      f"they hold {len(rows)} privleak/{split} texts and this evaluation scores {len(evaluated)}")
            raise DataError(f"scores other MUSE texts than this evaluation ({detail}); evaluate the retain model "
                            f"on the same MUSE data and set size", path=path, field=f"privacy.items.{split}")
    if max_length is not None and privacy.get("max_length") != max_length:
        raise DataError(f"scored the texts cut to {privacy.get('max_length')} tokens and this evaluation cuts them "
                        f"to {max_length}: the AUCs would not compare", path=path, field="privacy.max_length")
    return privacy_eval.retain_scores_from_results(results, path, [i["sha256"] for i in _text_ids(texts[0])],
                                                   [i["sha256"] for i in _text_ids(texts[1])], key="sha256",
                                                   noun="texts")


def muse_privacy(model, tokenizer, data: MuseData, *, set_size: int | None = None, batch_size: int = 16,
                 gradnorm: bool = True, max_length: int = PRIVLEAK_MAX_LENGTH,
                 retain: privacy_eval.RetainScores | None = None) -> dict:
    """MUSE's privacy leakage: membership inference on ``privleak/forget`` texts (members) against
    ``privleak/holdout`` texts (non-members), relative to the retain model (``retain``: its scores of the same
    texts).

    Each text is scored whole (no prompt; :func:`obliviate.evaluation.privacy_eval.text_pairs`), cut to its
    first ``max_length`` tokens (fewer when the model has fewer positions); every attack of TOFU's privacy
    section is run on it and the section is built the same way (docs/metrics.md, Privacy). MUSE's PrivLeak is
    the headline ``privacy_leakage``: Min-K% Prob with k = 40 %. Without the retain model's scores the AUCs are
    given and the leakage is unavailable, with the reason.
    """
    texts = _privleak_texts(data, set_size)
    if texts is None:
        return privacy_eval.unavailable_section(f"{data.source} has no privleak/forget and privleak/holdout splits")
    forget, holdout = texts
    length = _max_length(model, max_length)
    have_retain = retain is not None and retain.forget is not None and retain.holdout is not None
    kw = {"max_length": length, "batch_size": batch_size, "gradnorm": gradnorm}
    f = _scores(model, tokenizer, data, forget, "forget", reference=retain.forget if have_retain else None, **kw)
    h = _scores(model, tokenizer, data, holdout, "holdout", reference=retain.holdout if have_retain else None,
                **kw)
    if retain is None:
        retain = privacy_eval.RetainScores(None, None, reason="no retain model: pass --retain-model, or "
                                                              "--retain-results with its MUSE results.json")
    source = _privleak_origin(data, "holdout")
    return privacy_eval.privacy_section(
        f, h, forget_ids=_text_ids(forget), holdout_ids=_text_ids(holdout), members="privleak/forget",
        nonmembers="privleak/holdout", retain=retain, k=MIN_K_FRACTION,
        holdout_info={"source": source, "size": len(holdout), "rows_available": len(data.privleak["holdout"])},
        gradnorm_reason=None if gradnorm else "GradNorm switched off (eval.gradnorm: false)",
        info={"max_length": length, "scored": "each text whole: every token after the first, given the ones "
                                              "before it, no prompt",
              "forget": {"size": len(forget), "rows_available": len(data.privleak["forget"])},
              "muse_privleak": {"metric": "privacy_leakage", "attack": HEADLINE_ATTACK, "k": MIN_K_FRACTION}})


EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "resources" / "muse_example"
"""A tiny MUSE-layout folder shipped with obliviate (invented articles; tests and examples only)."""


def muse_benchmark(source: str | Path | None = None, *, verbmem_max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
                   knowmem_max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS,
                   privleak_max_length: int = PRIVLEAK_MAX_LENGTH):
    """A :class:`~obliviate.benchmarks.types.LoadedBenchmark` that evaluates MUSE (default: the shipped example).

    Its evaluator takes the retain model's reference for the privacy leakage as ``retain_results`` (the path
    of the retain model's MUSE ``results.json`` and its contents) or ``retain_model`` (the retain model and its
    tokenizer, scored here).
    """

    data = load_muse(source if source is not None else EXAMPLE_DIR)

    def evaluator(model, tokenizer, settings, *, retain_results: tuple[str, Mapping] | None = None,
                  retain_model: tuple[Any, Any] | None = None) -> dict:
        length = _max_length(model, privleak_max_length)
        retain = None
        if retain_results is not None:
            retain = muse_retain_scores_from_results(retain_results[1], retain_results[0], data,
                                                     set_size=settings.set_size, max_length=length)
        elif retain_model is not None:
            length = _max_length(retain_model[0], length)  # both models score the same tokens
            retain = muse_retain_scores(*retain_model, data, set_size=settings.set_size,
                                        batch_size=settings.batch_size, gradnorm=settings.gradnorm,
                                        max_length=length)
        return evaluate_muse(model, tokenizer, data, set_size=settings.set_size, batch_size=settings.batch_size,
                             verbmem_max_new_tokens=verbmem_max_new_tokens,
                             knowmem_max_new_tokens=knowmem_max_new_tokens, gradnorm=settings.gradnorm,
                             privacy=settings.privacy, privleak_max_length=length,
                             retain_privacy=retain)

    def check_retain_results(path: str, record: Mapping, settings) -> None:
        # Benchmark and texts; the cut (max_length) depends on the model and is checked by the evaluator.
        muse_retain_scores_from_results(record, path, data, set_size=settings.set_size)

    info = {**data.info(), "verbmem_max_new_tokens": verbmem_max_new_tokens,
            "knowmem_max_new_tokens": knowmem_max_new_tokens, "privleak_max_length": privleak_max_length}
    return LoadedBenchmark([], info, list(data.files), evaluator=evaluator,
                           check_retain_results=check_retain_results)
