"""Peak memory and time of one training step: the chunked output layer against materialised logits.

A random-weight Llama-shaped model with Llama 3's vocabulary (128,256 entries, hidden size 1024, 2 layers,
untied output layer, float32) takes one full training step — forward, backward, fused AdamW — on random token
sequences, once with the model's full logits handed to the objectives (``train.loss_chunk_size=0``, padded
batches: the plain path) and once through the chunked output layer (the default). The parts are laid out as the
trainer lays them out, and the loss is obliviate's (``forward.forward_parts`` → ``objectives.compute_objective``,
what ``UnlearningTrainer.compute_loss`` runs). Methods: ME+GD (forget sequences fully labelled, as ME+GD's
``mask=false``; retain answers labelled) and NPO+KL (answers labelled; NPO against cached reference log-probs,
KL against a frozen reference model run every step). A sequence is ``--length`` tokens, the answer its second
half.

Each (method, path) runs in a fresh process: a warm-up step (so gradients and AdamW's states exist, as in any
step after the first), then ``--repeats`` measured steps. Memory is the process's resident set (``VmHWM`` of
``/proc/self/status``, reset before the measured steps): ``peak`` is the largest resident set during the measured
steps, ``added`` that peak minus the resident set just before them (what the step itself allocates: activations,
logits or their chunks, gradients, optimizer temporaries; weights and AdamW states are already resident).
Time is the median measured step.

    python bench/loss_memory.py                       # B = 8 sequences per step (4 forget + 4 retain), T = 512
    python bench/loss_memory.py --batch 8             # 8 forget + 8 retain
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

METHODS = {"ME+GD": ("me", "gd", 0.1, False), "NPO+KL": ("npo", "kl", 1.0, True)}
PATHS = {"materialised": (0, False), "chunked": (512, True)}   # (loss_chunk_size, packing), as train.* sets them


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:      # "5" resets VmHWM to the current resident set
        f.write("5")


def child(args) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from obliviate.forward import forward_parts, inspect_model
    from obliviate.models import frozen_copy
    from obliviate.objectives import ObjectiveParams, SequenceOutputs, UnlearningInputs, compute_objective
    from obliviate.objectives import sequence_logprob

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    forget_term, regularizer, forget_coeff, uses_ref = METHODS[args.method]
    chunk, pack = PATHS[args.path]
    config = LlamaConfig(vocab_size=128256, hidden_size=1024, intermediate_size=3584, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=args.length,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).train()
    reference = frozen_copy(model) if uses_ref else None

    g = torch.Generator().manual_seed(1)
    answer_from = args.length // 2

    def part(all_labelled: bool) -> dict:
        ids = torch.randint(0, config.vocab_size, (args.batch, args.length), generator=g)
        labels = ids.clone()
        if not all_labelled:
            labels[:, :answer_from] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    inputs = {"forget": part(all_labelled=args.method == "ME+GD"), "retain": part(all_labelled=False)}
    parts = ("forget", "retain")
    split = inspect_model(model).split if chunk else None
    ref_split = inspect_model(reference).split if (chunk and reference is not None) else None
    if forget_term == "npo":
        # Cached reference log-probs, as the trainer computes them once before training.
        with torch.no_grad():
            out = forward_parts(model, {"forget": inputs["forget"]}, ("forget",), split=inspect_model(model).split,
                                pad_token_id=0, pack=False)["forget"]
            inputs["forget"]["ref_logps"] = sequence_logprob(out, inputs["forget"]["labels"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    counts = {p: int((inputs[p]["labels"][:, 1:] != -100).sum()) for p in parts}

    def step() -> list[float]:
        logits = forward_parts(model, inputs, parts, split=split, pad_token_id=0, pack=pack, chunk_size=chunk or 512)
        ref_logits = {}
        if reference is not None:
            with torch.no_grad():
                ref_logits = forward_parts(reference, inputs, ("retain",), split=ref_split, pad_token_id=0, pack=pack,
                                           chunk_size=chunk or 512)
        outputs = UnlearningInputs(**{
            p: SequenceOutputs(logits=logits[p], labels=inputs[p]["labels"], ref_logps=inputs[p].get("ref_logps"),
                               ref_logits=ref_logits.get(p), token_normalizer=counts[p]) for p in parts})
        result = compute_objective(outputs, forget=forget_term, regularizer=regularizer, forget_coeff=forget_coeff,
                                   regularization_coeff=1.0, params=ObjectiveParams())
        result.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return [float(result.loss), float(result.forget_loss), float(result.regularization_loss)]

    losses = [step()]                         # warm-up: allocates gradients and AdamW's states
    rss_before = _status("VmRSS")
    _reset_peak()
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        losses.append(step())
        seconds.append(time.perf_counter() - t0)
    peak = _status("VmHWM")
    return {"method": args.method, "path": args.path, "seconds": statistics.median(seconds), "all_seconds": seconds,
            "peak_bytes": peak, "added_bytes": peak - rss_before, "rss_before_bytes": rss_before,
            "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="sequences per part (forget and retain each)")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="measured steps per (method, path)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.method, args.path = args.child
        print(json.dumps(child(args)))
        return
    results = {}
    for method in args.methods:
        for path in PATHS:
            cmd = [sys.executable, __file__, "--child", method, path, "--batch", str(args.batch), "--length",
                   str(args.length), "--threads", str(args.threads), "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
            results[(method, path)] = json.loads(out)
            r = results[(method, path)]
            print(f"{method:7s} {path:12s} step {r['seconds']:7.2f} s {r['all_seconds']}  peak "
                  f"{r['peak_bytes'] / 2**30:6.2f} GiB  added {r['added_bytes'] / 2**30:6.2f} GiB", flush=True)
    summary = {"batch_per_part": args.batch, "length": args.length, "threads": args.threads, "methods": {}}
    for method in args.methods:
        m, c = results[(method, "materialised")], results[(method, "chunked")]
        # (loss, forget term, regularizer) of every step. KL is ~1e-8 on the first step (the reference is the
        # starting model), so differences are taken relative to max(|value|, 1e-3).
        loss_rel = max(abs(a - b) / max(abs(b), 1e-3) for sc, sm in zip(c["losses"], m["losses"])
                       for a, b in zip(sc, sm))
        summary["methods"][method] = {
            "time_ratio": c["seconds"] / m["seconds"],
            "peak_ratio": c["peak_bytes"] / m["peak_bytes"],
            "added_ratio": c["added_bytes"] / m["added_bytes"],
            "loss_max_rel_diff": loss_rel,
            "materialised": m, "chunked": c}
        s = summary["methods"][method]
        print(f"{method}: chunked / materialised  time {s['time_ratio']:.3f}  peak {s['peak_ratio']:.3f}  "
              f"added {s['added_ratio']:.3f}  losses of every step equal to {loss_rel:.1e} (relative)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
