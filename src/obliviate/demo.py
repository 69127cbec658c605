"""The built-in demo: synthetic benchmark → fine-tuned target model → unlearning with ME+GD and IDK+AP.

Everything runs on a laptop CPU with the built-in SmolLM2-135M-Instruct. Each finished step is kept in the
working folder and reused on a rerun (``--fresh`` redoes them). At the end, for every model, the demo prints
how likely the model finds the true answers of the forget author and of the retain authors, how likely it finds
a refusal, and a few greedy answers side by side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from obliviate.config import config_from_dict
from obliviate.data.formatting import PromptFormatter
from obliviate.data.loading import load_qa
from obliviate.data.refusals import load_refusals
from obliviate.data.records import QARecord
from obliviate.generation import generate_answers
from obliviate.likelihood import sequence_logprobs
from obliviate.training.run import finetune, is_complete, unlearn

# Sized to finish in well under 15 minutes on a 2-core CPU: 10 authors × 8 facts = 80 QA pairs.
AUTHORS, FACTS, FORGET_AUTHORS, SEED = 10, 8, 1, 0
# A 135M model memorises short facts quickly at a higher learning rate than the paper's 7B (1e-5).
FINETUNE = {"learning_rate": 1e-4, "num_epochs": 6.0, "batch_size": 8, "gradient_accumulation_steps": 1,
            "warmup_epochs": 0.5, "seed": SEED}
UNLEARN = {"learning_rate": 3e-5, "num_epochs": 5.0, "batch_size": 4, "gradient_accumulation_steps": 1,
           "warmup_epochs": 1.0, "seed": SEED}
METHODS = {"me_gd": "ME+GD", "idk_ap": "IDK+AP"}
SHOW = 2  # generations shown per set and model


@dataclass
class ModelSummary:
    name: str
    forget_prob: float
    retain_prob: float
    refusal_prob: float
    forget_answers: list[str]
    retain_answers: list[str]


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.time()


def _mean_prob(model, formatter: PromptFormatter, pairs: list[tuple[str, str]]) -> float:
    """Mean over items of P(a|q) = exp(mean token log-prob of the answer) (SPEC: Probability)."""
    examples = []
    for q, a in pairs:
        enc = formatter.encode(q, a)
        examples.append({"input_ids": enc.input_ids, "labels": enc.labels})
    sums, counts = sequence_logprobs(model, examples, pad_token_id=formatter.tokenizer.pad_token_id)
    return sum(math.exp(s / max(c, 1)) for s, c in zip(sums, counts)) / len(pairs)


def summarize(name: str, model_dir: str | Path, forget: list[QARecord], retain: list[QARecord],
              refusal: str) -> ModelSummary:
    from obliviate.models import load_model

    model, tokenizer = load_model(str(model_dir), dtype="float32")
    formatter = PromptFormatter(tokenizer, "chat")
    shown = forget[:SHOW] + retain[:SHOW]
    answers = generate_answers(model, formatter, [r.question for r in shown], max_new_tokens=40)
    return ModelSummary(
        name=name,
        forget_prob=_mean_prob(model, formatter, [(r.question, r.answer) for r in forget]),
        retain_prob=_mean_prob(model, formatter, [(r.question, r.answer) for r in retain]),
        refusal_prob=_mean_prob(model, formatter, [(r.question, refusal) for r in forget]),
        forget_answers=answers[:SHOW], retain_answers=answers[SHOW:])


def _print_summaries(summaries: list[ModelSummary], forget: list[QARecord], retain: list[QARecord]) -> None:
    print("\nMean answer probability P(a|q) (forget: lower is better after unlearning; retain: higher is better)\n")
    print(f"  {'model':<10} {'forget':>8} {'retain':>8} {'refusal on forget':>18}")
    for s in summaries:
        print(f"  {s.name:<10} {s.forget_prob:8.3f} {s.retain_prob:8.3f} {s.refusal_prob:18.3f}")
    for label, rows, attr in (("forget", forget, "forget_answers"), ("retain", retain, "retain_answers")):
        for i, row in enumerate(rows[:SHOW]):
            print(f"\n[{label}] Q: {row.question}\n  reference : {row.answer}")
            for s in summaries:
                print(f"  {s.name:<10}: {getattr(s, attr)[i]}")


def run_demo(out: Path, *, model: str | None = None, fresh: bool = False) -> list[ModelSummary]:
    from obliviate.benchmarks.synthetic import generate_benchmark
    from obliviate.models import DEFAULT_MODEL, ensure_default_model

    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bench_dir = out / "benchmark"
    t = _step(f"synthetic benchmark: {AUTHORS} authors × {FACTS} facts, {FORGET_AUTHORS} to forget")
    if fresh or not (bench_dir / "benchmark.json").is_file():
        generate_benchmark(authors=AUTHORS, facts=FACTS, seed=SEED, forget_authors=FORGET_AUTHORS).write(
            bench_dir, overwrite=True)
    forget = load_qa(bench_dir / "forget.json")
    retain = load_qa(bench_dir / "retain.json")
    print(f"   {len(forget)} forget and {len(retain)} retain questions in {bench_dir} ({time.time() - t:.0f}s)")

    base = model
    if base is None:
        t = _step("built-in model SmolLM2-135M-Instruct")
        base = str(ensure_default_model())
        print(f"   {base} ({time.time() - t:.0f}s)")

    target = out / "target"
    t = _step("fine-tune the target model on every author")
    if fresh or not is_complete(target):
        cfg = config_from_dict("finetune", {
            "output_dir": str(target), "overwrite": True, "model": {"name": base},
            "data": {"train": [str(bench_dir / "forget.json"), str(bench_dir / "retain.json")]},
            "train": FINETUNE})
        finetune(cfg)
        print(f"   done ({time.time() - t:.0f}s)")
    else:
        print(f"   reusing {target}")

    for folder, method in METHODS.items():
        run_dir = out / folder
        t = _step(f"unlearn the forget author with {method}")
        if fresh or not is_complete(run_dir):
            cfg = config_from_dict("unlearn", {
                "output_dir": str(run_dir), "overwrite": True, "model": {"name": str(target / "model")},
                "data": {"forget": str(bench_dir / "forget.json"), "retain": str(bench_dir / "retain.json")},
                "method": {"name": method}, "train": UNLEARN})
            unlearn(cfg)
            print(f"   done ({time.time() - t:.0f}s)")
        else:
            print(f"   reusing {run_dir}")

    t = _step("before / after")
    refusal = load_refusals()[0]
    models = [("base", base), ("target", target / "model")] + \
             [(folder, out / folder / "model") for folder in METHODS]
    summaries = [summarize(name, path, forget, retain, refusal) for name, path in models]
    _print_summaries(summaries, forget, retain)
    print(f"\ndemo finished in {time.time() - started:.0f}s; runs are in {out}"
          f"{'' if model else f' (model: {DEFAULT_MODEL})'}")
    return summaries
