"""The built-in demo: synthetic benchmark → target and retain models → ME+GD and IDK+AP → evaluation → report.

Everything runs on a laptop CPU with the built-in SmolLM2-135M-Instruct:

1. a synthetic fictitious-author benchmark (8 authors × 8 facts; one author to forget);
2. the *target* model: SmolLM2 fine-tuned on every author; the *retain* model: fine-tuned on the other authors
   only (the reference point for Forget Quality);
3. unlearning the forget author from the target with ME+GD (untargeted) and IDK+AP (targeted);
4. the full evaluation of all four models (six metrics × four sets, MU, FE, FQ); a compact summary on the
   terminal (the paper-style table with ``full=True``), written out in full as Markdown and as an HTML report
   with the scatter plot and side-by-side answers.

Each finished step is kept in the working folder and reused on a rerun (``fresh=True`` redoes them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.benchmarks.types import BenchmarkSpec
from obliviate.config import config_from_dict
from obliviate.errors import ObliviateError
from obliviate.evaluation.runner import evaluate
from obliviate.evaluation.suite import EvalSettings, Scorers
from obliviate.models import ensure_default_model, resolve_model
from obliviate.outputs import creation_problem
from obliviate.reporting import markdown_table, write_report
from obliviate.reporting.model_card import update_card_with_results
from obliviate.reporting.summary import full_table_hint, summary_table
from obliviate.training.run import finetune, is_complete, unlearn

# Sized to finish in under 15 minutes on a 2-core CPU: 8 authors × 8 facts = 64 QA pairs.
AUTHORS, FACTS, FORGET_AUTHORS, SEED = 8, 8, 1, 0
# A 135M model memorises short facts in a few epochs at a higher learning rate than the paper's 7B (1e-5).
FINETUNE = {"learning_rate": 1e-4, "num_epochs": 5.0, "batch_size": 8, "gradient_accumulation_steps": 1,
            "warmup_epochs": 0.5, "seed": SEED}
# 8 forget items, batch 4 → 2 optimizer steps per epoch, 10 in all.
UNLEARN = {"learning_rate": 1e-4, "num_epochs": 5.0, "batch_size": 4, "gradient_accumulation_steps": 1,
           "warmup_epochs": 1.0, "seed": SEED}
METHODS = {"me_gd": "ME+GD", "idk_ap": "IDK+AP"}
# Synthetic answers are one sentence (≤ 30 tokens): 40 new tokens leave room without paying for 200. The first
# 24 rows of each set (all 8 forget rows, 24 of 56 retain rows, 20 + 20 utility rows) keep a CPU evaluation short.
EVAL = {"max_new_tokens": 40, "batch_size": 16, "set_size": 24}
SHOW = 2  # questions shown side by side per set


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.time()


def _done(t: float, what: str = "done") -> None:
    print(f"   {what} ({time.time() - t:.0f}s)", flush=True)


def _finetune(out: Path, base: str, files: list[Path], fresh: bool) -> None:
    if not fresh and is_complete(out):
        print(f"   reusing {out}")
        return
    t = time.time()
    finetune(config_from_dict("finetune", {
        "output_dir": str(out), "overwrite": True, "model": {"name": base},
        "data": {"train": [str(f) for f in files]}, "train": FINETUNE}))
    _done(t)


def _print_side_by_side(results: dict[str, dict]) -> None:
    for set_name in ("forget", "retain"):
        first = next(iter(results.values()))["sets"][set_name]["items"]
        for i in range(min(SHOW, len(first))):
            print(f"\n[{set_name}] Q: {first[i]['question']}\n  {'reference':<10}: {first[i]['reference']}")
            for name, r in results.items():
                print(f"  {name:<10}: {r['sets'][set_name]['items'][i]['generation']}")


def run_demo(out: Path, *, model: str | None = None, fresh: bool = False, full: bool = False) -> dict[str, dict]:
    """Run (or reuse) every step and print the results: the compact summary, or with ``full`` the whole table."""
    problem = creation_problem(out)
    if problem or not (out.is_dir() or not out.exists()):
        raise ObliviateError(f"--out {out}: cannot use it as the demo's working folder: {problem or 'not a folder'}")
    if model is not None:
        resolve_model(model)  # a typo in --model is reported before anything is written
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bench = out / "benchmark"
    t = _step(f"synthetic benchmark: {AUTHORS} authors × {FACTS} facts, {FORGET_AUTHORS} to forget")
    if fresh or not (bench / "benchmark.json").is_file():
        generate_benchmark(authors=AUTHORS, facts=FACTS, seed=SEED, forget_authors=FORGET_AUTHORS).write(
            bench, overwrite=True)
    _done(t, f"{bench}")

    base = model
    if base is None:
        t = _step("built-in model SmolLM2-135M-Instruct")
        base = str(ensure_default_model())
        _done(t, base)

    _step("fine-tune the target model on every author")
    _finetune(out / "target", base, [bench / "forget.json", bench / "retain.json"], fresh)
    _step("fine-tune the retain model on the other authors only (the reference for Forget Quality)")
    _finetune(out / "retain", base, [bench / "retain.json"], fresh)

    settings = EvalSettings(**EVAL)
    scorers = Scorers.load(settings)
    spec = BenchmarkSpec(kind="synthetic", source=str(bench))
    results: dict[str, dict] = {}
    for name in ("retain", "target"):
        t = _step(f"evaluate the {name} model")
        path = out / name / "results.json"
        if fresh or not path.is_file():
            retain_results = None if name == "retain" else out / "retain" / "results.json"
            record = evaluate(str(out / name / "model"), spec, path, settings=settings, scorers=scorers,
                              retain_results=retain_results, run_info={"kind": "finetune", "method": name}, seed=SEED)
            update_card_with_results(path, record)
        results[name] = json.loads(path.read_text())
        _done(t)

    for folder, method in METHODS.items():
        run_dir = out / folder
        t = _step(f"unlearn the forget author with {method}, then evaluate")
        if fresh or not is_complete(run_dir) or not (run_dir / "results.json").is_file():
            unlearn(config_from_dict("unlearn", {
                "output_dir": str(run_dir), "overwrite": True, "model": {"name": str(out / "target" / "model")},
                "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
                "method": {"name": method}, "train": UNLEARN,
                "eval": {**EVAL, "retain_results": str(out / "retain" / "results.json")}}))
            _done(t)
        else:
            print(f"   reusing {run_dir}")
        results[method] = json.loads((run_dir / "results.json").read_text())

    _step("results")
    order = ["target", "retain", *METHODS.values()]
    report = write_report([out / "target", out / "retain", *(out / f for f in METHODS)], out / "report.html",
                          markdown_out=out / "report.md", title="obliviate demo: synthetic authors, SmolLM2-135M")
    if full:
        print(markdown_table([results[k] for k in order]))
    else:
        print(summary_table([results[k] for k in order]))
        print(full_table_hint(out / "report.md", report))
    _print_side_by_side({k: results[k] for k in order})
    print(f"\nreport: {report}\ndemo finished in {time.time() - started:.0f}s; runs are in {out}")
    return results
