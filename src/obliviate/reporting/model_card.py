"""The model card of a saved model folder: ``README.md`` in the Hugging Face convention.

A model pushed to a hub then says what was forgotten and how. The card has YAML front matter — ``base_model``
(when the starting model is a hub repository), ``library_name``, ``pipeline_tag``, ``tags``, ``datasets`` (a hub
dataset trained on), and an ``obliviate`` block: the obliviate version, the run kind, the base model as
configured, the method and its settings, the training settings, the prompt format, the training data (rows,
a hash of the rows, the files and their hashes) and, once evaluated, the summary metrics — then a short
Markdown body rendered from that block. Everything the body says is in the front matter, so the card can be
read back (:func:`read_card`) and rewritten.

:func:`write_run_card` writes the card when a run saves its model; :func:`update_card_with_results` rewrites it
with the evaluation's summary numbers when a run's ``results.json`` is written beside its ``model/`` folder.
Both replace the file atomically. docs/results.md describes the card.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData

from obliviate import __version__
from obliviate.data.loading import looks_like_hub_id
from obliviate.data.records import QARecord, TextRecord
from obliviate.files import write_text_atomic
from obliviate.models import hub_id_of
from obliviate.reporting.summary import summary_metrics
from obliviate.reporting.table import format_value

__all__ = ["CARD_FILE", "read_card", "render_card", "rows_hash", "update_card_with_results", "write_run_card"]

CARD_FILE = "README.md"

_METHOD_KEYS = ("name", "forget", "regularizer", "forget_coeff", "regularization_coeff", "mask", "beta",
                "me_direction")
_TRAIN_KEYS = ("learning_rate", "num_epochs", "max_steps", "batch_size", "gradient_accumulation_steps",
               "weight_decay", "warmup_epochs", "lr_scheduler", "seed")


def rows_hash(records: Iterable[QARecord | TextRecord]) -> str:
    """``sha256:`` of the rows as trained on: one JSON line ``{"answer": …, "question": …}`` per row, in order
    (``{"text": …}`` per document for raw text).

    The same questions and answers give the same hash whichever file, layout or hub split they came from.
    """
    h = hashlib.sha256()
    for r in records:
        row = {"text": r.text} if isinstance(r, TextRecord) else {"question": r.question, "answer": r.answer}
        line = json.dumps(row, sort_keys=True, ensure_ascii=False)
        h.update(line.encode("utf-8") + b"\n")
    return "sha256:" + h.hexdigest()


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _training_data(data: Mapping[str, Any], sets: Mapping[str, Sequence[QARecord]]) -> dict[str, Any]:
    """Rows and row hashes of each training set, the local files the config names with their hashes, and the
    TOFU source when one was used."""
    out: dict[str, Any] = {name: {"rows": len(rows), "rows_hash": rows_hash(rows)} for name, rows in sets.items()}
    for name, rows in sets.items():
        if rows and isinstance(rows[0], TextRecord):
            out[name]["format"] = "text"  # rows are documents (MUSE, WMDP), not question-answer pairs
    named = [data.get("forget"), data.get("retain"), *(data.get("train") or []), data.get("refusals")]
    files = {str(p): _file_hash(Path(p)) for p in named if isinstance(p, str) and Path(p).is_file()}
    if files:
        out["files"] = files
    if data.get("tofu"):
        out["tofu"] = {"source": data["tofu"], "split": data.get("split"), "task": data.get("task")}
    if data.get("limit") is not None:
        out["limit"] = data["limit"]
    return out


def _hub_datasets(data: Mapping[str, Any]) -> list[str]:
    """Hub datasets among the training sources (``owner/name`` or ``owner/name:config``), for ``datasets:``."""
    specs = [data.get("tofu"), data.get("forget"), data.get("retain"), *(data.get("train") or [])]
    out = []
    for spec in specs:
        if not isinstance(spec, str) or Path(spec).exists():
            continue
        repo = spec.rpartition(":")[0] if ":" in spec else spec
        if looks_like_hub_id(repo) and repo not in out:
            out.append(repo)
    return out


def write_run_card(model_dir: str | Path, *, kind: str, config: Mapping[str, Any], summary: Mapping[str, Any],
                   forget: Sequence[QARecord], retain: Sequence[QARecord]) -> Path:
    """Write the card of a run's saved model (``kind`` unlearn or finetune) into ``model_dir/README.md``.

    ``config`` is the run's config as a plain mapping, ``summary`` what run.json records about the method and
    the prompt format, ``forget``/``retain`` the training sets (a fine-tuning run trains on ``retain``).
    """
    model = config.get("model", {})
    sets = {"forget": forget, "retain": retain} if kind == "unlearn" else {"train": retain}
    info: dict[str, Any] = {
        "version": __version__,
        "kind": kind,
        "base_model": model.get("name"),
        "training": {k: config.get("train", {}).get(k) for k in _TRAIN_KEYS},
        "lora": bool(config.get("lora", {}).get("enabled")),
        "data": _training_data(config.get("data", {}), sets),
    }
    if kind == "unlearn":
        info["method"] = {k: summary.get("method", {}).get(k) for k in _METHOD_KEYS}
    if summary.get("prompt_format"):
        info["prompt_format"] = dict(summary["prompt_format"])
    if summary.get("run_extra"):
        info["scenario"] = dict(summary["run_extra"])
    if summary.get("reference_model"):
        info["reference_model"] = summary["reference_model"]
    card = render_card(info, hub_base_model=hub_id_of(str(model.get("name", ""))),
                       datasets=_hub_datasets(config.get("data", {})))
    return write_text_atomic(Path(model_dir) / CARD_FILE, card, what="the model card")


def read_card(model_dir: str | Path) -> dict[str, Any] | None:
    """The front matter of ``model_dir``'s card, or None when it has no card written by obliviate."""
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        return None
    try:
        data = ModelCard.load(path).data.to_dict()
    except (ValueError, yaml.YAMLError, UnicodeDecodeError):
        return None  # a card someone else wrote, not ours to rewrite
    return data if isinstance(data.get("obliviate"), dict) else None


def update_card_with_results(results_path: str | Path, results: Mapping[str, Any]) -> Path | None:
    """Add the summary metrics of ``results`` to the card of the run whose ``results.json`` this is.

    The run folder holds ``results.json`` and ``model/``; a card there that obliviate wrote is rewritten with
    the numbers (and ``results_path``'s file name); anything else is left alone and None is returned.
    """
    results_path = Path(results_path)
    model_dir = results_path.parent / "model"
    meta = read_card(model_dir)
    if meta is None:
        return None
    info = dict(meta["obliviate"])
    info["evaluation"] = {
        "results": f"../{results_path.name}",
        "benchmark": (results.get("benchmark") or {}).get("name"),
        "metrics": {m["key"]: {"name": m["name"], "value": m["value"], "higher_is_better": m["higher_is_better"],
                               "partial": m["partial"]} for m in summary_metrics(results)},
    }
    card = render_card(info, hub_base_model=meta.get("base_model"), datasets=meta.get("datasets") or [])
    return write_text_atomic(model_dir / CARD_FILE, card, what="the model card")


# -- rendering ------------------------------------------------------------------------------------------------
def render_card(info: Mapping[str, Any], *, hub_base_model: str | None, datasets: Sequence[str]) -> str:
    """The card's text: front matter (with ``info`` as the ``obliviate`` block) and the Markdown body."""
    method = (info.get("method") or {}).get("name")
    tags = ["obliviate", "machine-unlearning" if info.get("kind") == "unlearn" else "fine-tuned"]
    if method:
        tags.append(method.lower().replace("+", "-"))
    data = ModelCardData(base_model=hub_base_model, library_name="transformers", pipeline_tag="text-generation",
                         tags=tags, datasets=list(datasets) or None, obliviate=_plain(info))
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(info)}"))


def _plain(value: Any) -> Any:
    """Tuples and other sequences as lists, so the YAML front matter holds plain lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _rows_kind(entry: Mapping[str, Any]) -> str:
    return "text documents" if entry.get("format") == "text" else "question–answer pairs"


def _body(info: Mapping[str, Any]) -> str:
    base = info.get("base_model") or "a model"
    data = info.get("data") or {}
    lines: list[str] = []
    if info.get("kind") == "unlearn":
        method = info.get("method") or {}
        forget, retain = data.get("forget", {}), data.get("retain", {})
        lines += [f"# {base}, after {method.get('name')} unlearning", "",
                  f"`{base}` with {forget.get('rows')} {_rows_kind(forget)} unlearned by {method.get('name')}, "
                  f"keeping {retain.get('rows')} others, with obliviate {info.get('version')}. Method, settings, "
                  f"data and results are below and, machine-readable, in this card's front matter.", "",
                  "## What was forgotten", ""]
    else:
        train = data.get("train", {})
        lines += [f"# {base}, fine-tuned", "",
                  f"`{base}` fine-tuned on {train.get('rows')} {_rows_kind(train)} with obliviate "
                  f"{info.get('version')}.", "", "## Training data", ""]
    for name in ("forget", "retain", "train"):
        if name in data:
            lines.append(f"- {name} set: {data[name]['rows']} rows, rows hash `{data[name]['rows_hash']}`")
    for path, digest in (data.get("files") or {}).items():
        lines.append(f"- file `{path}`: `{digest}`")
    if data.get("tofu"):
        t = data["tofu"]
        lines.append(f"- TOFU: `{t.get('source')}`, split {t.get('split')}, task {t.get('task')}")
    if data.get("limit") is not None:
        lines.append(f"- first {data['limit']} rows of each set")
    if info.get("scenario"):
        lines.append(f"- scenario: `{json.dumps(info['scenario'], sort_keys=True)}`")
    lines += ["", "The rows hash is the SHA-256 of the rows as trained on, one JSON line "
              '`{"answer": …, "question": …}` per row.', ""]

    lines += ["## How", "", "| setting | value |", "|---|---|"]
    for key, value in (info.get("method") or {}).items():
        lines.append(f"| method.{key} | {_fmt(value)} |")
    for key, value in (info.get("training") or {}).items():
        lines.append(f"| train.{key} | {_fmt(value)} |")
    lines.append(f"| LoRA | {'yes' if info.get('lora') else 'no'} |")
    if info.get("reference_model"):
        lines.append(f"| reference model | {_fmt(info['reference_model'])} |")
    prompt = info.get("prompt_format") or {}
    if prompt:
        lines.append(f"| prompt template | {_fmt(prompt.get('template'))} |")
        system = prompt.get("system_prompt")
        lines.append(f"| system prompt | {_fmt(system) if system else 'none'} |")
        if prompt.get("example"):
            lines += ["", "Every question was asked in this format (the example prompt, as the model saw it):", "",
                      "```text", prompt["example"].rstrip("\n"), "```"]
    lines.append("")

    evaluation = info.get("evaluation")
    lines += ["## Evaluation", ""]
    if not evaluation:
        lines += ["Not evaluated yet.", ""]
    else:
        lines += [f"Summary of `{evaluation.get('results')}` (benchmark {evaluation.get('benchmark')}); "
                  "↑ higher is better, ↓ lower is better, * computed over the available components only; "
                  "definitions in obliviate's docs/metrics.md.", "", "| metric | value |", "|---|---:|"]
        for key, m in (evaluation.get("metrics") or {}).items():
            arrow = "↑" if m.get("higher_is_better") else "↓"
            value = format_value(m.get("value"), key.rpartition(".")[2]) + ("*" if m.get("partial") else "")
            lines.append(f"| {_fmt(m.get('name') or key)} {arrow} | {value} |")
        lines.append("")
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")',
              'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")', "```", ""]
    return "\n".join(lines)
