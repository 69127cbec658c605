"""``obliviate <command>``: a thin layer that parses, validates and calls the library.

Exit status:

``0``    done
``2``    a user mistake (a bad file, config value or argument, a missing model, an output that another process
         is writing or that must not be replaced): one clear message on stderr, no traceback
``3``    training stopped by the non-finite guard (a NaN or inf loss or gradient, ``train.nan_policy``); the
         message names the step, the term and the last good checkpoint, which is kept (docs/reliability.md)
``130``  interrupted (Ctrl-C); the message says how to continue
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from obliviate import __version__
from obliviate.allocator import restart_with_allocator
from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.benchmarks.types import BenchmarkSpec
from obliviate.config import config_from_dict, load_config, read_config_file
from obliviate.errors import DataError, ModelLoadError, ObliviateError
from obliviate.evaluation.metrics import SIX
from obliviate.memory import (
    estimate_memory,
    format_estimate,
    load_config_file,
    read_model_config,
    setup_from_config,
    shape_from_config,
)
from obliviate.outputs import is_main_process
from obliviate.reporting import load_results, write_report
from obliviate.reporting.summary import full_table_hint, summary_table
from obliviate.reporting.write import check_report_path

EXIT_USER_ERROR = 2
EXIT_STOPPED = 3
FULL_HELP = "print the full table (every set × metric) instead of the summary"
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``obliviate eval: error: …``), like every other user mistake."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _describe_method(name: str) -> int:
    """Formula, parameters (defaults, ranges), paper and pinning test of one method."""
    # Deferred: imports torch, which this module otherwise avoids.
    from obliviate.objectives import describe_params, get_forget, get_regularizer, resolve_method

    m = resolve_method(name)
    print(f"{m.name}: {m.description}")
    if m.aliases:
        print(f"  also called: {', '.join(m.aliases)}")
    print(f"  paper: {m.paper or '—'}")
    print(f"  loss = {m.forget_coeff:g} · L_forget + {m.regularization_coeff:g} · L_reg"
          f"   (mask={'true' if m.mask else 'false'}: the forget term sees "
          f"{'answer tokens only' if m.mask else 'question and answer tokens'})")
    for role, spec, defaults, key in (("L_forget", get_forget(m.forget), m.forget_params, "forget_params"),
                                      ("L_reg", get_regularizer(m.regularizer), m.regularizer_params,
                                       "regularizer_params")):
        print(f"  {role} = {spec.name}: {spec.formula or spec.description}")
        shared = getattr(spec.params, "SHARED", ())
        for line in describe_params(spec.params):
            field = line.split(" ", 1)[0]
            where = f"method.{field}" if field in shared else f"method.{key}.{field}"
            extra = f" [this method: {defaults[field]!r}]" if field in defaults else ""
            print(f"      {where}: {line.split(' ', 1)[1]}{extra}")
        if spec.trainable is not None:
            print("      trains only the weights its parameter filter selects (see its parameters)")
        if spec.paper and spec.paper != m.paper:
            print(f"      paper: {spec.paper}")
    print(f"  pinned by: {m.test or spec.test or 'tests/unit/test_objectives.py'}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    # Deferred: imports torch, which this module otherwise avoids.
    from obliviate.objectives import all_methods
    from obliviate.objectives.registry import FORGET_TERMS, REGULARIZERS

    if args.name:
        return _describe_method(args.name)
    methods = all_methods()
    width = max(len(m.name) for m in methods)
    print("Named methods (any <forget>+<regularizer> pair also works, e.g. ME+KL):\n")
    for m in methods:
        kind = "targeted" if m.targeted else "untargeted"
        print(f"  {m.name:<{width}}  {kind:<10}  forget×{m.forget_coeff:g} + reg×{m.regularization_coeff:g}"
              f"  mask={'true' if m.mask else 'false'}")
        print(f"  {'':<{width}}  {m.description}  [{m.paper}]")
        if m.aliases:
            print(f"  {'':<{width}}  also called {', '.join(m.aliases)}")
    print("\nForget terms: " + ", ".join(FORGET_TERMS.names()))
    print("Regularizers: " + ", ".join(REGULARIZERS.names()))
    print("\n`obliviate methods NAME` prints a method's formula, parameters, paper and test.")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.models import ensure_default_model, list_models

    if args.force and not args.convert:
        raise ObliviateError("--force only applies with --convert (obliviate models --convert --force)")
    if args.convert:
        path = ensure_default_model(force=args.force)
        print(f"default model ready: {path}")
    for info in list_models():
        print(f"{info.name:<28} {info.status:<9} {info.path or ''}")
        if info.description:
            print(f"{'':<28} {info.description}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    bench = generate_benchmark(authors=args.authors, facts=args.facts, seed=args.seed,
                               forget_authors=args.forget_authors, holdout_authors=args.holdout_authors)
    out = bench.write(args.out, overwrite=args.overwrite)
    splits = bench.splits()
    print(f"wrote {out}: " + ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()))
    print("forget authors: " + ", ".join(bench.forget_author_names))
    if bench.holdout_author_names:
        print("holdout authors (in no training file): " + ", ".join(bench.holdout_author_names))
    return 0


def _run_training(kind: str, args: argparse.Namespace) -> int:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.training.run import finetune, unlearn

    cfg = load_config(kind, args.config, args.overrides)
    if args.dry_run:
        print(f"config is valid: {args.config or '(defaults)'}")
        _print_memory_estimate(cfg, args)
        return 0
    run = unlearn if kind == "unlearn" else finetune
    try:
        result = run(cfg, resume=args.resume)
    except KeyboardInterrupt:
        print(f"\ninterrupted; checkpoints (if train.save_strategy is set) are in {cfg.output_dir}.partial — "
              f"rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if is_main_process():  # under torchrun / accelerate every process runs this; one reports
        print(f"model saved to {result.model_dir}")
    return 0


def _print_memory_estimate(cfg, args: argparse.Namespace) -> None:
    """The dry run's peak-memory estimate per device (obliviate.memory; docs/scaling.md)."""
    try:
        if args.model_config:
            config, source = load_config_file(args.model_config)
        else:
            config, source = read_model_config(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
    except ModelLoadError as exc:
        print(f"memory estimate unavailable: {exc}", file=sys.stderr)
        return
    shape = shape_from_config(config, name=cfg.model.name, source=source)
    setup = setup_from_config(cfg, devices=args.devices, zero=args.zero, lora=True if args.lora else None,
                              seq_len=args.seq_len)
    print(format_estimate(estimate_memory(shape, setup), shape, setup, device_memory_gib=args.device_memory))


def _parse_files(items: list[str]) -> dict[str, str]:
    files = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ObliviateError(f"--file '{item}': expected NAME=PATH, e.g. forget=data/forget.json")
        files[name] = path
    return files


def _check_counts(args: argparse.Namespace) -> None:
    problems = [f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
                for name in ("batch_size", "max_new_tokens") if getattr(args, name) < 1]
    if args.set_size is not None and args.set_size < 1:
        problems.append(f"--set-size must be >= 1 (or left out for every row), got {args.set_size}")
    if getattr(args, "bootstrap", 0) < 0:
        problems.append(f"--bootstrap must be >= 0 (0 = no confidence intervals), got {args.bootstrap}")
    if problems:
        raise ObliviateError("; ".join(problems))


def _run_folder_info(run_dir: Path) -> tuple[dict, str | None]:
    """What an evaluation records about the run in ``run_dir``, and the prompt template it trained with."""
    path = run_dir / "run.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot be read ({exc})", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg}); the run may not have finished writing it",
                        path=str(path), line=exc.lineno) from None
    if not isinstance(record, dict):
        raise DataError("expected a JSON object (a run record)", path=str(path))
    method = record.get("method") or {}
    if not isinstance(method, dict):
        raise DataError(f"expected an object, got {type(method).__name__}", path=str(path), field="method")
    info = {"kind": record.get("kind"), "method": method.get("name"), "method_details": method,
            "output_dir": str(run_dir), "forget_items": record.get("forget_items"),
            "retain_items": record.get("retain_items")}
    cfg_path, template = run_dir / "config.yaml", None
    if cfg_path.is_file():
        try:
            config = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot be read ({exc})", path=str(cfg_path)) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise DataError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=str(cfg_path),
                            line=mark.line + 1 if mark is not None else None) from None
        if not isinstance(config, dict):
            raise DataError("expected a mapping of config sections", path=str(cfg_path))
        model = config.get("model") or {}
        if not isinstance(model, dict):
            raise DataError(f"expected a mapping (name, dtype, template, ...), got {model!r}", path=str(cfg_path),
                            field="model")
        template = model.get("template")
        if template is not None and not isinstance(template, str):
            raise DataError(f"expected a template name, got {template!r}", path=str(cfg_path),
                            field="model.template")
        info["config"] = config
    return info, template


def _cmd_eval(args: argparse.Namespace) -> int:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.evaluation.runner import evaluate
    from obliviate.evaluation.suite import EvalSettings

    _check_counts(args)
    model_spec, run_info, template, out = args.model, {}, args.template, args.out
    system_prompt = args.system_prompt
    run_dir = Path(args.model)
    if (run_dir / "run.json").is_file() and (run_dir / "model").is_dir():
        # A run folder: evaluate its model, record its method and config, write results.json beside it.
        model_spec = str(run_dir / "model")
        run_info, run_template = _run_folder_info(run_dir)
        template = template or run_template
        # The run's prompt format, unless the command line gives one: evaluate with the prompt trained on.
        if system_prompt is None:
            system_prompt = ((run_info.get("config") or {}).get("model") or {}).get("system_prompt")
        out = out or str(run_dir / "results.json")
    if out is None:
        raise ObliviateError("--out is required unless --model is a run folder")
    if Path(out).is_dir() or not out.endswith(".json"):
        out = str(Path(out) / "results.json")
    none = lambda v: None if v in (None, "none", "") else v  # noqa: E731
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, set_size=args.set_size,
                            embedding_model=none(args.embedding_model), nli_model=none(args.nli_model),
                            real_world=args.real_world, bootstrap=args.bootstrap, gradnorm=not args.no_gradnorm)
    if args.benchmark != "wmdp" and (args.tasks or args.include_path or args.limit is not None):
        raise ObliviateError("--tasks, --include-path and --limit are options of --benchmark wmdp")
    if args.limit is not None and args.limit < 1:
        raise ObliviateError(f"--limit must be >= 1, got {args.limit}")
    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    if args.tasks is not None and not tasks:
        raise ObliviateError("--tasks: give at least one lm-eval task name, e.g. --tasks wmdp_bio,mmlu")
    bench = BenchmarkSpec(kind=args.benchmark, source=args.data, split=args.split, task=args.task,
                          files=_parse_files(args.file), real_world=args.real_world, holdout=args.holdout,
                          tasks=tasks, include_path=args.include_path, limit=args.limit)
    results = evaluate(model_spec, bench, out, settings=settings, dtype=args.dtype, template=template or "chat",
                       system_prompt=system_prompt, retain_model=args.retain_model,
                       retain_results=args.retain_results, run_info=run_info, seed=args.seed)
    _print_results_summary(results)
    print(f"results written to {out}")
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.reporting.model_card import update_card_with_results
    if update_card_with_results(out, results) is not None:  # a run's results.json: its model card gets the numbers
        print(f"model card updated: {Path(out).parent / 'model' / 'README.md'}")
    return 0


def _print_results_summary(results: dict) -> None:
    names = SIX
    own = {n: s for n, s in results["sets"].items() if not any(m in s["metrics"] for m in names)}
    if len(own) < len(results["sets"]):  # the six-metric table, for the question-answer sets
        print(f"{'set':<14}" + "".join(f"{n[:12]:>13}" for n in names))
    for set_name, s in results["sets"].items():
        if set_name in own:
            continue
        cells = []
        for n in names:
            v = s["metrics"].get(n, {}).get("value")
            arrow = "↑" if s["metrics"].get(n, {}).get("higher_is_better") else "↓"
            cells.append(f"{'n/a' if v is None else f'{v:.3f}'}{arrow}".rjust(13))
        print(f"{set_name:<14}" + "".join(cells))
    for set_name, s in own.items():  # MUSE, WMDP: sets measured by their own metrics
        for metric, entry in s["metrics"].items():
            v = entry.get("value")
            arrow = "↑" if entry.get("higher_is_better") else "↓"
            print(f"{set_name:<22} {metric:<12} {'n/a' if v is None else f'{v:.3f}'}{arrow}  (n={s.get('size')})")
    for name, a in results["aggregates"].items():
        value = "n/a" if a.get("value") is None else f"{a['value']:.4g}"
        extra = a.get("reason") or a.get("note") or ""
        print(f"{name:<22} {value:>10}  {extra}")
    privacy = results.get("privacy") or {}
    if privacy:
        leak = (privacy.get("metrics") or {}).get("privacy_leakage") or {}
        value = "n/a" if leak.get("value") is None else f"{leak['value']:+.1f}%"
        why = privacy.get("reason") or leak.get("reason") or "Min-K% attack, against the retain model; 0 is ideal"
        print(f"{'privacy_leakage':<22} {value:>10}  {why}")


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Run several configs in order (finished runs are reused), then one report over every evaluated run."""
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.training.run import finetune, is_complete, unlearn

    # Validate every config (and the report's place) before running any, so a typo in the last one doesn't
    # waste the first ones' hours.
    check_report_path(args.report)
    plans = []
    for path in args.configs:
        raw = read_config_file(path)
        kind = raw.pop("kind", "unlearn")
        if kind not in ("unlearn", "finetune"):
            raise ObliviateError(f"{path}: sweep runs unlearn and finetune configs; this one is '{kind}' "
                                 f"(use `obliviate {kind}`)")
        plans.append((path, kind, config_from_dict(kind, raw, args.overrides, source=str(path))))
    evaluated = []
    for i, (path, kind, cfg) in enumerate(plans, 1):
        out = Path(cfg.output_dir)
        print(f"[{i}/{len(plans)}] {path} → {out}", flush=True)
        if is_complete(out):
            print("   finished before: reused")
        else:
            (unlearn if kind == "unlearn" else finetune)(cfg, resume=args.resume)
        if (out / "results.json").is_file():
            evaluated.append(out)
    if not evaluated:
        print("no run was evaluated; no report written")
        return 0
    markdown = str(Path(args.report).with_suffix(".md"))
    write_report(evaluated, args.report, markdown_out=markdown, title=args.title)
    _print_table(evaluated, markdown, args.report, full=args.full)
    print(f"report written to {args.report}")
    return 0


def _print_table(runs: list, markdown: str, html: str, *, full: bool) -> None:
    """The compact summary and where the full table is, or (``full``) the full Markdown table itself."""
    if full:
        print(Path(markdown).read_text(encoding="utf-8"))
        return

    print(summary_table([load_results(r) for r in runs]))
    print(full_table_hint(markdown, html) + "\n")


def _cmd_report(args: argparse.Namespace) -> int:
    markdown = args.markdown or str(Path(args.out).with_suffix(".md"))
    path = write_report(args.runs, args.out, markdown_out=markdown, title=args.title)
    _print_table(args.runs, markdown, str(path), full=args.full)
    print(f"report written to {path} (Markdown: {markdown})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate.demo import run_demo

    run_demo(Path(args.out), model=args.model, fresh=args.fresh, full=args.full)
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    """A robustness probe on an unlearning run, written into its results.json (docs/robustness.md)."""
    # Deferred: imports torch and transformers, which this module otherwise avoids.
    from obliviate import robustness as R

    for name in ("batch_size", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ObliviateError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.set_size is not None and args.set_size < 1:
        raise ObliviateError(f"--set-size must be >= 1 (or left out for every row), got {args.set_size}")
    none = lambda v: None if v in (None, "none", "") else v  # noqa: E731
    ctx = R.probe_context(args.run, target=args.target, retain=args.retain, results=args.results,
                          set_size=args.set_size, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          embedding_model=none(args.embedding_model), nli_model=none(args.nli_model))
    if args.probe == "relearn":
        section = R.relearn_probe(ctx, steps=args.steps, data=args.data, count=args.count, control=args.control,
                                  learning_rate=args.lr, batch_size=args.train_batch_size, seed=args.seed)
    elif args.probe == "paraphrase":
        section = R.paraphrase_probe(ctx)
    else:
        bits = []
        for item in args.bits.split(","):
            if item.strip() not in ("8", "4"):
                raise ObliviateError(f"--bits: expected a comma-separated list of 8 and 4, got {args.bits!r}")
            bits.append(int(item))
        if args.group_size is not None and args.group_size < 1:
            raise ObliviateError(f"--group-size must be >= 1, got {args.group_size}")
        section = R.quantization_probe(ctx, bits=bits, backend=args.backend, group_size=args.group_size)
    name = "quantization" if args.probe == "quantize" else args.probe
    R.add_probe_section(ctx.results_path, name, section)
    _print_probe(section)
    print(f"probe '{name}' written to {ctx.results_path} under probes.{name}")
    return 0


def _print_probe(section: dict) -> None:
    for row in section["rows"]:
        for set_name, metrics in row["sets"].items():
            cells = "  ".join(f"{m} {'n/a' if e.get('value') is None else format(e['value'], '.3f')}"
                              for m, e in metrics.items() if m in ("rouge_l", "probability", "truth_ratio",
                                                                   "rouge_l_f1", "accuracy"))
            print(f"{row['label']:<28} {set_name:<28} {cells}")
    for role, reason in section.get("anchors_unavailable", {}).items():
        print(f"{role}: not measured ({reason})")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="obliviate", description="Machine unlearning for large language models.")
    parser.add_argument("--version", action="version", version=f"obliviate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("methods", help="list the unlearning methods, their defaults and papers; "
                                       "with NAME: its formula, parameters, paper and test")
    p.add_argument("name", nargs="?", help="a method, e.g. SimNPO or NPO+GD")
    p.set_defaults(func=_cmd_methods)

    p = sub.add_parser("models", help="list built-in and cached models")
    p.add_argument("--convert", action="store_true", help="convert the built-in default model now")
    p.add_argument("--force", action="store_true", help="with --convert: convert again even if cached")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("synth", help="write a synthetic fictitious-author benchmark in the TOFU layout")
    p.add_argument("--authors", type=int, default=10, help="number of invented authors (default 10)")
    p.add_argument("--facts", type=int, default=10, help="facts (questions) per author (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--forget-authors", type=int, default=None, help="authors in the forget split (default 10%%)")
    p.add_argument("--holdout-authors", type=int, default=None,
                   help="authors in the holdout split, in no training file (default: as many as forget)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_synth)

    for kind, help_text in (("finetune", "fine-tune a model on a QA set (a target or a retain model)"),
                            ("unlearn", "unlearn a forget set with one method")):
        p = sub.add_parser(kind, help=help_text)
        p.add_argument("--config", "-c", default=None, help="YAML config file (configs/...)")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
        p.add_argument("--dry-run", action="store_true",
                       help="validate the config, print an estimate of peak memory per device, and stop")
        est = p.add_argument_group("memory estimate (with --dry-run; docs/scaling.md)")
        est.add_argument("--devices", type=_positive_int, default=1, help="number of devices (GPUs), default 1")
        est.add_argument("--zero", type=int, choices=(0, 2, 3), default=None,
                         help="ZeRO stage: 0 (DDP), 2 or 3; default: the config's train.deepspeed / train.fsdp")
        est.add_argument("--lora", action="store_true", help="estimate with LoRA adapters (lora.enabled=true)")
        est.add_argument("--seq-len", type=_positive_int, default=None,
                         help="tokens per sequence (default model.max_length, an upper bound)")
        est.add_argument("--device-memory", type=float, default=80.0,
                         help="memory per device in GiB (default 80, an 80 GB A100/H100)")
        est.add_argument("--model-config", default=None,
                         help="a config.json to estimate with, when the model's own cannot be read")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides with dotted keys, e.g. train.learning_rate=2e-5")
        p.set_defaults(func=lambda a, k=kind: _run_training(k, a))

    p = sub.add_parser("eval", help="evaluate a model or run folder: six metrics per set, MU, FE, FQ")
    p.add_argument("--model", required=True, help="run folder, model folder, .gguf file, alias or hub id")
    p.add_argument("--benchmark", default="tofu",
                   choices=["tofu", "synthetic", "real_world", "files", "muse", "wmdp"])
    p.add_argument("--data", default=None,
                   help="TOFU folder or locuslab/TOFU; synthetic, real-world or MUSE folder, or muse-bench/MUSE-News "
                        "(real_world, muse: default the shipped example)")
    p.add_argument("--split", default="forget05", help="TOFU forget split (forget01/05/10)")
    p.add_argument("--task", type=int, default=1, help="continual layout: the task that was forgotten")
    p.add_argument("--file", action="append", default=[], metavar="NAME=PATH",
                   help="files benchmark: a set (forget=…, retain=…, or any utility set name)")
    p.add_argument("--real-world", action="store_true", help="real-world entailment direction (generation → ref)")
    p.add_argument("--tasks", default=None,
                   help="wmdp: comma-separated lm-eval tasks (default wmdp_bio,wmdp_cyber,mmlu)")
    p.add_argument("--include-path", default=None, help="wmdp: folder of extra lm-eval task YAML files")
    p.add_argument("--limit", type=int, default=None, help="wmdp: first N documents per task (smoke tests only)")
    p.add_argument("--retain-model", default=None, help="retain model for Forget Quality")
    p.add_argument("--retain-results", default=None, help="results.json of a retain model, for Forget Quality")
    p.add_argument("--out", default=None, help="results.json path or folder (default: the run folder)")
    p.add_argument("--set-size", type=int, default=None, help="first N rows of each set (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--embedding-model", default="sentence-transformers/paraphrase-MiniLM-L6-v2",
                   help="sentence-embedding model for cosine similarity ('none' to skip)")
    p.add_argument("--nli-model", default="sileod/deberta-v3-base-tasksource-nli",
                   help="NLI model for the entailment score ('none' to skip)")
    p.add_argument("--holdout", default=None, metavar="FILE",
                   help="QA file of non-members for the privacy attacks (default: the benchmark's holdout set)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples per confidence interval (default 1000; 0 = none)")
    p.add_argument("--no-gradnorm", action="store_true",
                   help="skip the GradNorm attack (it takes one backward pass per forget and holdout item)")
    p.add_argument("--template", default=None, help="prompt template (default: the run's, else chat)")
    p.add_argument("--system-prompt", default=None,
                   help="system prompt (default: the run's, else none; a template's own default is left out)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("sweep", help="run several configs (finished runs reused), then one report over them")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML configs, e.g. configs/tofu/*_forget05.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every config, e.g. --set eval.retain_results=runs/retain95")
    p.add_argument("--report", default="report.html", help="HTML report to write (default report.html)")
    p.add_argument("--title", default="Unlearning sweep")
    p.add_argument("--resume", action="store_true", help="resume interrupted runs from their checkpoints")
    p.add_argument("--full", action="store_true", help=FULL_HELP)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("report", help="HTML + Markdown report comparing evaluated runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or results.json files")
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--markdown", default=None, help="Markdown table file (default: beside the HTML, .md)")
    p.add_argument("--title", default="Unlearning report")
    p.add_argument("--full", action="store_true", help=FULL_HELP)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("attack", help="robustness probes on an unlearning run: relearn, paraphrase, quantize "
                                      "(docs/robustness.md)")
    probes = p.add_subparsers(dest="probe", required=True, metavar="PROBE")
    helps = {"relearn": "fine-tune a few steps on part of the forget set (and on control data); measure the rest",
             "paraphrase": "the forget set asked with its rephrased questions as well as the original ones",
             "quantize": "the unlearned model after 8-bit and 4-bit weight quantisation"}
    for probe, text in helps.items():
        q = probes.add_parser(probe, help=text)
        q.add_argument("run", metavar="RUN", help="an unlearning run folder (run.json, config.yaml, model/)")
        q.add_argument("--target", default=None, help="target model anchor (default: the run's starting model)")
        q.add_argument("--retain", default=None, help="retain model anchor (default: the run's eval.retain_model)")
        q.add_argument("--results", default=None, help="results.json to add the probe to (default: the run's)")
        q.add_argument("--set-size", type=int, default=None, help="first N rows of each set (default: the run's)")
        q.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: the run's)")
        q.add_argument("--max-new-tokens", type=int, default=None, help="generation length (default: the run's)")
        q.add_argument("--embedding-model", default="none", help="for cosine similarity (default: none)")
        q.add_argument("--nli-model", default="none", help="for the entailment score (default: none)")
        if probe == "relearn":
            q.add_argument("--data", default=None, metavar="FORGET_SUBSET",
                           help="QA file of forget rows to relearn on")
            q.add_argument("--count", type=int, default=None, help="or: relearn on N forget rows drawn with --seed")
            q.add_argument("--steps", type=int, required=True, help="fine-tuning steps")
            q.add_argument("--lr", type=float, default=1e-5, help="learning rate (default 1e-5)")
            q.add_argument("--train-batch-size", type=int, default=4, help="rows per step (default 4)")
            q.add_argument("--control", default=None,
                           help="QA file of unrelated rows for the control (default: as many retain rows)")
            q.add_argument("--seed", type=int, default=0)
        if probe == "quantize":
            q.add_argument("--bits", default="8,4", help="comma-separated: 8 and/or 4 (default 8,4)")
            q.add_argument("--backend", default=None, choices=["torchao", "bitsandbytes"],
                           help="default: bitsandbytes on a CUDA machine that has it, else torchao")
            q.add_argument("--group-size", type=int, default=None, help="4-bit: weights per scale (default 128)")
        q.set_defaults(func=_cmd_attack)

    # -- scenario commands: each module adds its own subcommand (one line each) --
    __import__("obliviate.scenarios.continual", fromlist=["add_subcommand"]).add_subcommand(sub)
    __import__("obliviate.evaluation.general", fromlist=["add_subcommand"]).add_subcommand(sub)

    p = sub.add_parser("demo", help="synthetic benchmark → target + retain models → unlearn (ME+GD, IDK+AP) → evaluate → report")
    p.add_argument("--out", default="demo_runs", help="working folder; finished steps are reused (default demo_runs)")
    p.add_argument("--model", default=None, help="model to start from (default: the built-in SmolLM2-135M)")
    p.add_argument("--fresh", action="store_true", help="redo every step instead of reusing finished ones")
    p.add_argument("--full", action="store_true", help=FULL_HELP)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:            # run as a program: with tcmalloc where there is one (obliviate/allocator.py)
        restart_with_allocator(sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # torchao (the quantisation extra) logs at import, which transformers does on every model load: that its
        # GPU kernels are absent on a CPU machine. Nothing obliviate uses needs them (docs/robustness.md).
        for name in ("torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except ObliviateError as exc:
        code = getattr(exc, "exit_code", EXIT_USER_ERROR)
        print(f"obliviate {args.command}: {'stopped' if code == EXIT_STOPPED else 'error'}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
