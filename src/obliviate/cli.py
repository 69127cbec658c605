"""``obliviate <command>``: a thin layer that parses, validates and calls the library.

User mistakes (bad files, bad config values, missing models) end with one clear message on stderr and exit
status 2; an interrupted run says how to continue it and exits 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from obliviate import __version__
from obliviate.errors import ObliviateError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _cmd_methods(args: argparse.Namespace) -> int:
    from obliviate.objectives import list_methods
    from obliviate.objectives.registry import FORGET_TERMS, REGULARIZERS

    methods = list_methods()
    width = max(len(m.name) for m in methods)
    print("Named methods (any <forget>+<regularizer> pair also works, e.g. ME+KL):\n")
    for m in methods:
        kind = "targeted" if m.targeted else "untargeted"
        print(f"  {m.name:<{width}}  {kind:<10}  forget×{m.forget_coeff:g} + reg×{m.regularization_coeff:g}"
              f"  mask={'true' if m.mask else 'false'}")
        print(f"  {'':<{width}}  {m.description}  [{m.paper}]")
    print("\nForget terms: " + ", ".join(FORGET_TERMS.names()))
    print("Regularizers: " + ", ".join(REGULARIZERS.names()))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from obliviate.models import ensure_default_model, list_models

    if args.convert:
        path = ensure_default_model(force=args.force)
        print(f"default model ready: {path}")
    for info in list_models():
        print(f"{info.name:<28} {info.status:<9} {info.path or ''}")
        if info.description:
            print(f"{'':<28} {info.description}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from obliviate.benchmarks.synthetic import generate_benchmark

    bench = generate_benchmark(authors=args.authors, facts=args.facts, seed=args.seed,
                               forget_authors=args.forget_authors)
    out = bench.write(args.out, overwrite=args.overwrite)
    splits = bench.splits()
    print(f"wrote {out}: " + ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()))
    print("forget authors: " + ", ".join(bench.forget_author_names))
    return 0


def _run_training(kind: str, args: argparse.Namespace) -> int:
    from obliviate.config import load_config
    from obliviate.training.run import finetune, unlearn

    cfg = load_config(kind, args.config, args.overrides)
    if args.dry_run:
        print(f"config is valid: {args.config or '(defaults)'}")
        return 0
    run = unlearn if kind == "unlearn" else finetune
    try:
        result = run(cfg, resume=args.resume)
    except KeyboardInterrupt:
        print(f"\ninterrupted; checkpoints (if train.save_strategy is set) are in {cfg.output_dir}.partial — "
              f"rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"model saved to {result.model_dir}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from obliviate.demo import run_demo

    run_demo(Path(args.out), model=args.model, fresh=args.fresh)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obliviate", description="Machine unlearning for large language models.")
    parser.add_argument("--version", action="version", version=f"obliviate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("methods", help="list the unlearning methods, their defaults and papers")
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
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_synth)

    for kind, help_text in (("finetune", "fine-tune a model on a QA set (a target or a retain model)"),
                            ("unlearn", "unlearn a forget set with one method")):
        p = sub.add_parser(kind, help=help_text)
        p.add_argument("--config", "-c", default=None, help="YAML config file (configs/...)")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
        p.add_argument("--dry-run", action="store_true", help="validate the config and stop")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides with dotted keys, e.g. train.learning_rate=2e-5")
        p.set_defaults(func=lambda a, k=kind: _run_training(k, a))

    p = sub.add_parser("demo", help="synthetic benchmark → fine-tune → unlearn (ME+GD, IDK+AP) → before/after")
    p.add_argument("--out", default="demo_runs", help="working folder; finished steps are reused (default demo_runs)")
    p.add_argument("--model", default=None, help="model to start from (default: the built-in SmolLM2-135M)")
    p.add_argument("--fresh", action="store_true", help="redo every step instead of reusing finished ones")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ObliviateError as exc:
        print(f"obliviate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
