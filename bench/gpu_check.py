"""One-command GPU check: throughput, MFU and peak memory of obliviate's training step and evaluation at scale.

    python bench/gpu_check.py --out gpu_check.json          # one 80–140 GB GPU, under 8 minutes, no network
    python bench/gpu_check.py --tiny --out /tmp/check.json  # the same code on the CPU in seconds (a test runs it)

It builds random-weight models from known shapes (obliviate.memory.KNOWN_CONFIGS): a ~1B Llama-shaped model
(Llama-3.2-1B: hidden 2048, 16 layers, vocabulary 128,256) and an 8B Llama-3-shaped one, in bfloat16. For each it
trains ME+GD, IDK+AP and NPO+KL for a few optimizer steps through obliviate's own trainer (UnlearningTrainer,
the objectives, the data set and collator that ``obliviate unlearn`` uses), full fine-tuning and LoRA, on TOFU
batches (forget10 and its retain set from ``--data``, default ../shared/data/tofu; a synthetic benchmark
when absent), then runs one evaluation pass (greedy answers and answer likelihoods on the forget and retain
evaluation sets). It also checks that the 8B ME+GD step with LoRA at B = 4 sequences × T = 512 tokens per part
fits an 80 GB card.

Per run it records tokens/s (non-padding tokens of the trained model's forward passes, after warm-up steps),
MFU = flops_per_token · tokens / seconds / the card's peak dense bf16 FLOP/s (flops_per_token = 6N for full
fine-tuning, 4N for LoRA, whose backward pass computes no weight gradients of the frozen N; a KL reference's
extra forward pass is not counted), the peak memory the CUDA allocator handed out, and obliviate's estimate of
it (``obliviate unlearn --dry-run``) for the same shapes. The 8B full fine-tuning run is tried only when the
estimate says it fits the card. One JSON file holds everything (written after every run, so a crash keeps what
was measured); a table is printed at the end. docs/scaling.md says how to read it.

The tokenizer is a byte-level BPE trained on the benchmark's own text (obliviate.testing), since no model's
tokenizer can be downloaded here; token counts per item are therefore close to, not equal to, Llama's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from obliviate.memory import GIB, KNOWN_CONFIGS, TrainingSetup, estimate_memory, shape_from_config

# Peak dense (no sparsity) bfloat16 tensor FLOP/s, matched in order against torch.cuda.get_device_name().
PEAK_BF16 = (
    ("GH200", 989e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
    ("H800", 989e12), ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12),
    ("L4", 121e12), ("A10", 125e12), ("MI300X", 1307e12), ("MI250X", 383e12),
)

MODELS = {"1b": KNOWN_CONFIGS["llama-3.2-1b"], "8b": KNOWN_CONFIGS["llama-3-8b"]}
TINY_MODELS = {
    "1b": {"model_type": "llama", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "8b": {"model_type": "llama", "vocab_size": 1536, "hidden_size": 96, "intermediate_size": 192,
           "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False},
}
METHODS = ("ME+GD", "IDK+AP", "NPO+KL")
ROOT = Path(__file__).resolve().parents[1]


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16:
        if key.lower() in device_name.lower():
            return flops
    return None


# -- data -----------------------------------------------------------------------------------------------------
def load_data(data_dir: Path):
    """(forget, retain, eval sets, description): TOFU forget10 when the folder has it, else synthetic."""
    from obliviate.evaluation.suite import EvalSet

    if (data_dir / "forget10.json").is_file():
        from obliviate.benchmarks.tofu import load_tofu
        s = load_tofu(str(data_dir), "forget10")
        sets = [EvalSet("forget", s.forget_eval or s.forget), EvalSet("retain", s.retain_eval or s.retain[:400])]
        return s.forget, s.retain, sets, f"TOFU forget10 from {data_dir}"
    from obliviate.benchmarks.synthetic import generate_benchmark
    b = generate_benchmark(authors=40, facts=10, seed=0, forget_authors=4).splits()
    sets = [EvalSet("forget", b["forget_perturbed"]), EvalSet("retain", b["retain_perturbed"])]
    return b["forget"], b["retain"], sets, f"synthetic stand-in ({data_dir} has no TOFU)"


def build_tokenizer(records, folder: Path):
    from transformers import AutoTokenizer

    from obliviate.testing import make_tiny_llama
    texts = [f"{r.question} {r.answer}" for r in records[:2000]]
    return AutoTokenizer.from_pretrained(make_tiny_llama(folder, vocab_corpus=texts, hidden_size=4, num_layers=1))


def lengthened(records, tokenizer, tokens: int):
    """Copies of ``records`` whose answers run on (answers of the following items appended) past ``tokens``
    tokens, for the fixed-length fit check (the formatter truncates them to exactly ``tokens``)."""
    from obliviate.data.records import QARecord
    out = []
    for i, r in enumerate(records):
        answer, j = r.answer, i + 1
        while len(tokenizer(answer)["input_ids"]) < tokens:
            answer += " " + records[j % len(records)].answer
            j += 1
        out.append(QARecord(question=r.question, answer=answer))
    return out


# -- models ---------------------------------------------------------------------------------------------------
def build_model(config: dict, dtype: torch.dtype, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = dict(config)
    cfg = AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model


class _StepTimer:
    """Times optimizer steps after the warm-up ones and counts the tokens their forward passes read."""

    def __init__(self, warmup: int, cuda: bool):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer.begin(state.global_step)

            def on_step_end(self, args, state, control, **kw):
                timer.end(state.global_step)

        self.callback = Callback()
        self.warmup, self.cuda = warmup, cuda
        self.seconds, self.tokens, self.pending, self.steps, self.started = 0.0, 0, 0, 0, None

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def begin(self, step: int):
        self.pending = 0
        if step >= self.warmup:
            self._sync()
            self.started = time.perf_counter()

    def end(self, step: int):
        if self.started is not None:
            self._sync()
            self.seconds += time.perf_counter() - self.started
            self.tokens += self.pending
            self.steps += 1
            self.started = None


def train_run(name: str, config: dict, method: str, lora: bool, data, tokenizer, a, work: Path,
              batch: int, seq_len: int | None = None) -> dict:
    from transformers import TrainingArguments

    from obliviate.data.formatting import PromptFormatter
    from obliviate.data.refusals import load_refusals
    from obliviate.models import LoraSettings, apply_lora, frozen_copy
    from obliviate.objectives import ObjectiveParams, resolve_method
    from obliviate.training.data import PartsCollator, UnlearningDataset
    from obliviate.training.trainer import TrainingObjective, UnlearningTrainer

    cuda = a.device == "cuda"
    forget, retain = data
    spec = resolve_method(method)
    objective = TrainingObjective(forget=spec.forget, regularizer=spec.regularizer, forget_coeff=spec.forget_coeff,
                                  regularization_coeff=spec.regularization_coeff, params=ObjectiveParams(beta=0.1))
    model = build_model(config, a.dtype, a.device)
    n_params = sum(p.numel() for p in model.parameters())
    if lora:
        model = apply_lora(model, LoraSettings(r=a.lora_rank))
    formatter = PromptFormatter(tokenizer, "chat", max_length=seq_len or 512)
    refusals = load_refusals() if any(p.endswith("_idk") for p in objective.parts) else []
    dataset = UnlearningDataset(forget, retain, formatter, parts=objective.parts, mask=spec.mask, refusals=refusals,
                                seed=0)
    reference = frozen_copy(model) if objective.needs_reference and not lora else None
    gc_on = a.gradient_checkpointing or (name == "8b" and not lora and not a.tiny)
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        max_steps=a.warmup + a.steps, learning_rate=1e-5, lr_scheduler_type="constant", weight_decay=0.0,
        bf16=cuda, use_cpu=not cuda, optim="adamw_torch_fused" if cuda else "adamw_torch",
        gradient_checkpointing=gc_on, save_strategy="no", report_to=[], logging_steps=10_000, seed=0,
        remove_unused_columns=False, label_names=[], disable_tqdm=True, dataloader_num_workers=0)
    trainer = UnlearningTrainer(model=model, args=args, train_dataset=dataset,
                                data_collator=PartsCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                                objective=objective, reference_model=reference)
    timer = _StepTimer(a.warmup, cuda)
    trainer.add_callback(timer.callback)
    longest = [0]
    compute_loss = trainer.compute_loss

    def counted(model_, inputs, **kw):
        timer.pending += sum(int(inputs[p]["attention_mask"].sum()) for p in objective.parts)
        longest[0] = max(longest[0], max(int(inputs[p]["input_ids"].shape[1]) for p in objective.parts))
        return compute_loss(model_, inputs, **kw)

    trainer.compute_loss = counted
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - started
    flops_per_token = (4 if lora else 6) * n_params
    peak = a.peak_flops
    tokens_per_s = timer.tokens / timer.seconds if timer.seconds else None
    setup = TrainingSetup(batch_size=batch, seq_len=longest[0], parts=len(objective.parts),
                          kl_parts=len(objective.ref_logit_parts),
                          reference="adapters" if (lora and objective.ref_logit_parts) else
                          "copy" if objective.ref_logit_parts else "cached" if objective.ref_logp_parts else "none",
                          weight_dtype={torch.bfloat16: "bfloat16", torch.float32: "float32"}[a.dtype],
                          mixed_precision="bf16" if cuda else None, optim=args.optim.value if hasattr(args.optim, "value")
                          else str(args.optim), lora_rank=a.lora_rank if lora else None,
                          gradient_checkpointing=gc_on, device=a.device,
                          loss_chunk=int(getattr(trainer, "loss_chunk_size", 0) or 0))
    estimate = estimate_memory(shape_from_config(config), setup).peak
    result = {
        "model": name, "method": method, "tuning": "lora" if lora else "full", "parameters": n_params,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "batch_per_part": batch, "parts": list(objective.parts), "longest_sequence": longest[0],
        "gradient_checkpointing": gc_on, "timed_steps": timer.steps, "timed_seconds": round(timer.seconds, 4),
        "tokens": timer.tokens, "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
        "flops_per_token": flops_per_token,
        "mfu": round(flops_per_token * tokens_per_s / peak, 4) if (peak and tokens_per_s) else None,
        "train_loss": out.training_loss, "loss_finite": math.isfinite(out.training_loss), "wall_seconds": round(wall, 1),
        "estimate_gib": round(estimate / GIB, 2),
    }
    if cuda:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
    else:
        result["peak_rss_gib_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)
    del trainer, model, reference
    _free(cuda)
    return result


def eval_run(name: str, config: dict, tokenizer, sets, a) -> dict:
    from obliviate.data.formatting import PromptFormatter
    from obliviate.evaluation.suite import EvalSet, EvalSettings, Scorers, evaluate_model

    cuda = a.device == "cuda"
    model = build_model(config, a.dtype, a.device)
    model.eval()
    settings = EvalSettings(max_new_tokens=a.eval_new_tokens, batch_size=a.eval_batch, set_size=a.eval_items,
                            embedding_model=None, nli_model=None)
    chosen = [EvalSet(s.name, s.records[: a.eval_items], s.kind) for s in sets]
    items = sum(len(s.records) for s in chosen)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    started = time.perf_counter()
    evaluate_model(model, PromptFormatter(tokenizer, "chat"), chosen, scorers=Scorers.load(settings),
                   settings=settings)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = {"model": name, "items": items, "max_new_tokens": a.eval_new_tokens, "seconds": round(seconds, 2),
              "items_per_s": round(items / seconds, 2)}
    if cuda:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    del model
    _free(cuda)
    return result


def _free(cuda: bool) -> None:
    import gc
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


# -- the check ------------------------------------------------------------------------------------------------
def _environment(a) -> dict:
    import transformers

    import obliviate
    env = {"obliviate": obliviate.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "device": a.device_name, "peak_bf16_flops": a.peak_flops}
    if a.device == "cuda":
        env["cuda"] = torch.version.cuda
        env["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json", help="JSON file to write")
    p.add_argument("--tiny", action="store_true", help="tiny models on the CPU (seconds): the same code, no GPU")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tofu"), help="TOFU folder")
    p.add_argument("--models", default="1b,8b", help="which shapes, of 1b and 8b")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; tiny 1)")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps per run (default 4; tiny 1)")
    p.add_argument("--batch-1b", type=int, default=None, help="sequences per part per step, 1B (default 16)")
    p.add_argument("--batch-8b", type=int, default=None, help="sequences per part per step, 8B (default 4)")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--gradient-checkpointing", action="store_true", help="for every run (8B full always has it)")
    p.add_argument("--eval-items", type=int, default=None, help="items per evaluation set (default 64; tiny 2)")
    p.add_argument("--eval-new-tokens", type=int, default=None, help="greedy tokens per answer (default 64)")
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 TFLOP/s, if not known")
    a = p.parse_args(argv)
    a.device = "cpu" if a.tiny else "cuda"
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here; --tiny runs the same code on the CPU")
    a.dtype = torch.float32 if a.tiny else torch.bfloat16
    small = a.tiny
    a.warmup = a.warmup if a.warmup is not None else (1 if small else 2)
    a.steps = a.steps if a.steps is not None else (1 if small else 4)
    a.batch_1b = a.batch_1b or (2 if small else 16)
    a.batch_8b = a.batch_8b or (2 if small else 4)
    a.eval_items = a.eval_items or (2 if small else 64)
    a.eval_new_tokens = a.eval_new_tokens or (4 if small else 64)
    a.device_name = torch.cuda.get_device_name(0) if a.device == "cuda" else platform.processor() or "cpu"
    a.peak_flops = a.peak_tflops * 1e12 if a.peak_tflops else (peak_flops(a.device_name) if a.device == "cuda" else None)
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    threads = torch.get_num_threads()
    if a.tiny:
        torch.set_num_threads(1)  # tiny matrices: more threads only add synchronisation
    try:
        return _check(a)
    finally:
        torch.set_num_threads(threads)


def _check(a: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    configs = TINY_MODELS if a.tiny else MODELS
    record = {"check": "gpu_check", "tiny": a.tiny, "environment": _environment(a),
              "mfu_formula": "flops_per_token * tokens / seconds / peak_bf16_flops; flops_per_token = 6N (full) "
                             "or 4N (LoRA), N = all parameters", "training": [], "fit_check": None, "evaluation": []}

    def save():
        record["total_seconds"] = round(time.perf_counter() - started, 1)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, out)

    with tempfile.TemporaryDirectory(prefix="obliviate-gpu-check-") as work:
        work = Path(work)
        forget, retain, sets, source = load_data(Path(a.data))
        if a.tiny:  # a handful of items: every code path, seconds of work
            forget, retain = forget[:8], retain[:16]
        record["data"] = source
        tokenizer = build_tokenizer(forget + retain, work / "tokenizer")
        device_gib = (torch.cuda.get_device_properties(0).total_memory / GIB) if a.device == "cuda" else None
        for name in a.models.split(","):
            config = configs[name]
            batch = a.batch_1b if name == "1b" else a.batch_8b
            for lora in (False, True):
                for method in a.methods.split(","):
                    if name == "8b" and not lora and method != "ME+GD":
                        continue  # full fine-tuning of 8B: one method is enough to show whether it fits
                    entry = {"model": name, "method": method, "tuning": "lora" if lora else "full"}
                    try:
                        if name == "8b" and not lora and device_gib is not None:
                            setup = TrainingSetup(batch_size=batch, seq_len=256, parts=2, weight_dtype="bfloat16",
                                                  mixed_precision="bf16", optim="adamw_torch_fused",
                                                  gradient_checkpointing=True)
                            need = estimate_memory(shape_from_config(config), setup).peak / GIB
                            if need > 0.95 * device_gib:
                                entry["skipped"] = (f"estimated peak {need:.1f} GiB does not fit this card's "
                                                    f"{device_gib:.1f} GiB")
                                record["training"].append(entry)
                                save()
                                continue
                        entry = train_run(name, config, method, lora, (forget, retain), tokenizer, a, work, batch)
                    except torch.cuda.OutOfMemoryError as exc:
                        entry["error"] = f"out of memory: {str(exc).splitlines()[0]}"
                        _free(True)
                    record["training"].append(entry)
                    save()
            try:
                record["evaluation"].append(eval_run(name, config, tokenizer, sets, a))
            except torch.cuda.OutOfMemoryError as exc:
                record["evaluation"].append({"model": name, "error": f"out of memory: {str(exc).splitlines()[0]}"})
                _free(True)
            save()
        # The fit target: the 8B ME+GD step with LoRA, 4 sequences × 512 tokens per part, on an 80 GB card.
        if "8b" in a.models.split(","):
            seq = 192 if a.tiny else 512
            long_forget = lengthened(forget[:64], tokenizer, seq)
            long_retain = lengthened(retain[:64], tokenizer, seq)
            try:
                fit = train_run("8b", configs["8b"], "ME+GD", True, (long_forget, long_retain), tokenizer, a, work,
                                batch=4, seq_len=seq)
                if "peak_memory_gib" in fit:
                    fit["fits_80gb"] = fit["peak_reserved_gib"] + 1.0 <= 80.0  # plus the CUDA context
            except torch.cuda.OutOfMemoryError as exc:
                fit = {"error": f"out of memory: {str(exc).splitlines()[0]}", "fits_80gb": False}
                _free(True)
            record["fit_check"] = fit
        save()
    print_table(record)
    print(f"written to {out}")
    return 0


def print_table(record: dict) -> None:
    print(f"\n{record['environment']['device']}  ({record['data']})")
    head = f"{'model':<5} {'method':<7} {'tuning':<5} {'tok/s':>10} {'MFU':>6} {'peak GiB':>9} {'est. GiB':>9} {'loss':>8}"
    print(head)
    print("-" * len(head))
    for r in record["training"]:
        if "skipped" in r or "error" in r:
            print(f"{r['model']:<5} {r['method']:<7} {r['tuning']:<5} {r.get('skipped') or r.get('error')}")
            continue
        peak = r.get("peak_memory_gib", r.get("peak_rss_gib_process"))
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{r['model']:<5} {r['method']:<7} {r['tuning']:<5} {r['tokens_per_s'] or 0:>10.0f} {mfu:>6} "
              f"{peak:>9.2f} {r['estimate_gib']:>9.2f} {r['train_loss']:>8.3f}")
    fit = record.get("fit_check")
    if fit:
        if "error" in fit:
            print(f"fit check (8B LoRA ME+GD, 4 × 512 tokens): {fit['error']}")
        else:
            verdict = {True: "fits 80 GB", False: "does NOT fit 80 GB", None: "n/a"}[fit.get("fits_80gb")]
            print(f"fit check (8B LoRA ME+GD, 4 × {fit['longest_sequence']} tokens): peak "
                  f"{fit.get('peak_memory_gib', fit.get('peak_rss_gib_process'))} GiB, estimate {fit['estimate_gib']} "
                  f"GiB — {verdict}")
    for e in record["evaluation"]:
        if "error" in e:
            print(f"evaluation {e['model']}: {e['error']}")
        else:
            print(f"evaluation {e['model']}: {e['items']} items, {e['items_per_s']} items/s "
                  f"({e['max_new_tokens']} new tokens each)")
    print(f"total {record['total_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
