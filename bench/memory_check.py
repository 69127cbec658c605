"""Check the peak-memory estimate (obliviate.memory, printed by ``--dry-run``) against real CPU runs.

    python bench/memory_check.py [--sizes 135m,360m] [--steps 3] [--out memory_check.json]

For each model size it writes a random-weight float32 model in the shape of SmolLM2-135M or SmolLM2-360M
(vocabulary 49,152) and runs ``obliviate unlearn`` (ME+GD, AdamW, evaluation off) on TOFU questions whose answers
are lengthened so every sequence is exactly ``--seq-len`` tokens (no padding: the shapes the estimate is given
are the shapes that ran). Each run is a fresh process that records its resident set size (RSS) after the
imports and data (its baseline, which the estimate does not cover) and its peak RSS (``ru_maxrss``). The check:
estimate + baseline against the peak, within 25 %. Figures and the command are in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "135m": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
             "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
             "tie_word_embeddings": True},
    "360m": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 960, "intermediate_size": 2560,
             "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
             "tie_word_embeddings": True},
}
BATCH = {"135m": 4, "360m": 2}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(spec_path: str) -> None:
    """One measured run (a fresh process): baseline RSS after imports and data, then the run, then peak RSS."""
    spec = json.loads(Path(spec_path).read_text())
    from obliviate.config import config_from_dict
    from obliviate.training.run import load_unlearning_data, unlearn

    cfg = config_from_dict("unlearn", spec["config"])
    load_unlearning_data(cfg)
    baseline = _rss_bytes()
    started = time.perf_counter()
    unlearn(cfg)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(spec["result"]).write_text(json.dumps({"baseline_rss": baseline, "peak_rss": peak,
                                                "seconds": round(seconds, 1)}))


def _write_model(shape: dict, folder: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    raw = dict(shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(raw.pop("model_type"), **raw),
                                             dtype=torch.float32)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)


def _data(work: Path, seq_len: int, tokenizer_dir: Path) -> tuple[str, str, float]:
    """Forget and retain files whose every item formats to at least ``seq_len`` tokens, and the share of
    labelled tokens in a ME+GD micro-batch (forget: all but the first token; retain: the answer)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_check import lengthened, load_data
    from transformers import AutoTokenizer

    from obliviate.data.formatting import PromptFormatter

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    forget, retain, _, _ = load_data(ROOT.parent / "shared" / "data" / "tofu")
    forget, retain = lengthened(forget[:40], tokenizer, seq_len), lengthened(retain[:80], tokenizer, seq_len)
    paths = []
    for name, rows in (("forget", forget), ("retain", retain)):
        path = work / f"{name}.json"
        path.write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n" for r in rows))
        paths.append(str(path))
    fmt = PromptFormatter(tokenizer, "chat", max_length=seq_len)
    lengths = [len(fmt.encode(r.question, r.answer).input_ids) for r in forget + retain]
    if not min(lengths) == max(lengths) == seq_len:
        raise SystemExit(f"items should all be {seq_len} tokens, got {min(lengths)}..{max(lengths)}")
    retain_labelled = sum(sum(1 for x in fmt.encode(r.question, r.answer).labels[1:] if x != -100)
                          for r in retain) / len(retain)
    fraction = ((seq_len - 1) + retain_labelled) / (2 * seq_len)
    return paths[0], paths[1], fraction


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="135m,360m")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--out", default="memory_check.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a.child)
        return 0
    from obliviate.config import config_from_dict
    from obliviate.memory import GIB, estimate_memory, setup_from_config, shape_from_config
    from obliviate.testing import make_tiny_llama

    results = []
    with tempfile.TemporaryDirectory(prefix="obliviate-memory-check-") as work:
        work = Path(work)
        tok_dir = make_tiny_llama(work / "tokenizer", hidden_size=4, num_layers=1)
        forget, retain, fraction = _data(work, a.seq_len, tok_dir)
        for size in a.sizes.split(","):
            model_dir = work / f"model-{size}"
            _write_model(SHAPES[size], model_dir, tok_dir)
            raw = {"output_dir": str(work / f"run-{size}"), "model": {"name": str(model_dir), "dtype": "float32",
                                                                     "max_length": a.seq_len},
                   "data": {"forget": forget, "retain": retain}, "method": {"name": "ME+GD"},
                   "train": {"batch_size": BATCH[size], "gradient_accumulation_steps": 1, "max_steps": a.steps,
                             "learning_rate": 1e-5, "warmup_epochs": 0.0, "logging_steps": 1},
                   "eval": {"enabled": False}}
            spec = work / f"spec-{size}.json"
            spec.write_text(json.dumps({"config": raw, "result": str(work / f"result-{size}.json")}))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
            subprocess.run([sys.executable, __file__, "--child", str(spec)], env=env, check=True)
            measured = json.loads((work / f"result-{size}.json").read_text())
            cfg = config_from_dict("unlearn", raw)
            setup = setup_from_config(cfg, device="cpu", seq_len=a.seq_len)
            setup = type(setup)(**{**setup.__dict__, "labelled_fraction": fraction})
            est = estimate_memory(shape_from_config(SHAPES[size]), setup)
            predicted = est.peak + measured["baseline_rss"]
            row = {"size": size, "parameters": shape_from_config(SHAPES[size]).parameters,
                   "batch": BATCH[size], "seq_len": a.seq_len, "steps": a.steps,
                   "labelled_fraction": round(fraction, 3),
                   "estimate_gib": round(est.peak / GIB, 3),
                   "estimate_parts_gib": {c.name: round(c.bytes / GIB, 3) for c in est.components},
                   "estimate_phases_gib": {"forward_backward": round(est.forward_backward / GIB, 3),
                                           "optimizer_step": round(est.optimizer_step / GIB, 3)},
                   "baseline_rss_gib": round(measured["baseline_rss"] / GIB, 3),
                   "peak_rss_gib": round(measured["peak_rss"] / GIB, 3),
                   "predicted_rss_gib": round(predicted / GIB, 3),
                   "ratio": round(predicted / measured["peak_rss"], 3), "seconds": measured["seconds"]}
            results.append(row)
            print(f"{size}: estimate {row['estimate_gib']:.2f} GiB + baseline {row['baseline_rss_gib']:.2f} GiB = "
                  f"{row['predicted_rss_gib']:.2f} GiB; measured peak RSS {row['peak_rss_gib']:.2f} GiB; "
                  f"ratio {row['ratio']:.3f}", flush=True)
    Path(a.out).write_text(json.dumps({"check": "memory_check", "runs": results}, indent=2))
    worst = max(abs(r["ratio"] - 1) for r in results)
    print(f"largest deviation {100 * worst:.1f} % (target: within 25 %); written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
