"""Evaluation speed: the batched suite against a straightforward one-item-at-a-time loop, in one run.

Both compute the same per-item quantities on the same model and sets — a greedy generation per question, the
log-likelihood of every answer, paraphrase and perturbed answer, and the memorisation of the scored answer —
and the script checks they agree before reporting the time ratio. Helper models (embeddings, NLI) are left out
of both: they cost the same either way.

    python bench/eval_speed.py --data ../shared/data/tofu --split forget01 --retain-size 300
    python bench/eval_speed.py --data ../shared/data/tofu --set-size 20 --max-new-tokens 32   # quick look

Default model: the built-in SmolLM2-135M-Instruct. Prints one JSON line with the timings and the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import contextmanager

import torch

from obliviate.benchmarks.tofu import load_tofu
from obliviate.data.formatting import PromptFormatter
from obliviate.evaluation import suite
from obliviate.evaluation.memorization import exact_memorization, extraction_strength
from obliviate.evaluation.suite import EvalSet, EvalSettings, Scorers, evaluate_model
from obliviate.evaluation.scorers import Unavailable
from obliviate.models import ensure_default_model, load_model


PHASES = {"generation": 0.0, "likelihood": 0.0, "token_stats": 0.0}


@contextmanager
def phase(name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name] += time.perf_counter() - t0


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        with phase(name):
            return fn(*args, **kwargs)
    return wrapper


def naive_set(model, fmt: PromptFormatter, eval_set: EvalSet, max_new_tokens: int) -> list[dict]:
    """One item at a time: one generate call per question, one forward pass per scored answer."""
    tok = fmt.tokenizer
    out = []
    for r in eval_set.records:
        ids = torch.tensor([fmt.encode_prompt(r.question)])
        with phase("generation"):
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        text = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip()

        hits: list[bool] = []

        def mean_logp(answer: str, question: str = r.question, keep_hits: bool = False) -> float:
            enc = fmt.encode(question, answer)
            x = torch.tensor([enc.input_ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), -1)
            labels = torch.tensor(enc.labels[1:])
            keep = labels != -100
            if keep_hits:  # memorisation reads the same forward pass: argmax hits of the answer's tokens
                hits.extend((logp[keep].argmax(-1) == labels[keep]).tolist())
            return float(logp[keep].gather(-1, labels[keep].unsqueeze(-1)).mean())

        with phase("likelihood"):
            answer = mean_logp(r.eval_answer, keep_hits=True)
            para = (mean_logp(r.paraphrased_answer) if eval_set.kind != "utility" and r.paraphrased_answer
                    else answer)
            pert = [mean_logp(p) for p in r.perturbed_answers]
        x = math.exp(sum(-p for p in pert) / len(pert) + para)
        out.append({"generation": text, "answer_logp": answer, "truth_ratio_x": x,
                    "exact_memorization": exact_memorization(hits), "extraction_strength": extraction_strength(hits)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="TOFU folder")
    ap.add_argument("--split", default="forget01")
    ap.add_argument("--model", default=None)
    ap.add_argument("--set-size", type=int, default=None, help="rows per set (default: all; retain: --retain-size)")
    ap.add_argument("--retain-size", type=int, default=300, help="retain rows (the paper evaluates 300)")
    ap.add_argument("--fraction", type=float, default=None,
                    help="first ceil(F x rows) of every set: a proportional sample of the full suite")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    model, tok = load_model(args.model or str(ensure_default_model()), dtype="float32")
    fmt = PromptFormatter(tok, "chat")
    s = load_tofu(args.data, args.split)
    limit = args.set_size
    full = {"forget": s.forget_eval, "retain": s.retain_eval[: args.retain_size], "real_authors": s.real_authors,
            "world_facts": s.world_facts}
    if args.fraction:
        sets = [EvalSet(name, rows[: math.ceil(args.fraction * len(rows))]) for name, rows in full.items()]
    else:
        sets = [EvalSet(name, rows[:limit]) for name, rows in full.items()]
    scorers = Scorers(embedder=Unavailable("excluded from the timing"), nli=Unavailable("excluded from the timing"))
    # No holdout set and no intervals: the privacy attacks and the bootstrap have no counterpart in the loop.
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, bootstrap=0)

    # Phase timers around the suite's two model-running calls (the rest is metric arithmetic).
    suite.generate_answers = timed("generation", suite.generate_answers)
    suite.shared_prompt_logprobs = timed("likelihood", suite.shared_prompt_logprobs)
    suite.tree_prompt_logprobs = timed("likelihood", suite.tree_prompt_logprobs)
    # The per-token pass behind exact memorisation and extraction strength (the loop reads them off the
    # likelihood pass it already runs).
    suite.answer_token_stats = timed("token_stats", suite.answer_token_stats)
    t0 = time.perf_counter()
    ours = evaluate_model(model, fmt, sets, scorers=scorers, settings=settings)["sets"]
    t_ours = time.perf_counter() - t0
    phases_ours = dict(PHASES)
    PHASES.update(generation=0.0, likelihood=0.0, token_stats=0.0)
    t0 = time.perf_counter()
    naive = {e.name: naive_set(model, fmt, e, args.max_new_tokens) for e in sets}
    t_naive = time.perf_counter() - t0
    phases_naive = dict(PHASES)

    gen_same = sum(a["generation"] == b["generation"] for e in sets
                   for a, b in zip(ours[e.name]["items"], naive[e.name]))
    worst_x = max(abs(a["truth_ratio_x"] - b["truth_ratio_x"]) / max(abs(b["truth_ratio_x"]), 1e-12)
                  for e in sets for a, b in zip(ours[e.name]["items"], naive[e.name]))
    worst_em = max(abs(a[k] - b[k]) for e in sets for a, b in zip(ours[e.name]["items"], naive[e.name])
                   for k in ("exact_memorization", "extraction_strength"))
    n = sum(len(e.records) for e in sets)
    print(json.dumps({"items": n, "sets": {e.name: len(e.records) for e in sets},
                      "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                      "seconds_batched": round(t_ours, 1), "seconds_one_at_a_time": round(t_naive, 1),
                      "ratio": round(t_ours / t_naive, 3),
                      "phases_batched": {k: round(v, 1) for k, v in phases_ours.items()},
                      "phases_one_at_a_time": {k: round(v, 1) for k, v in phases_naive.items()},
                      "identical_generations": f"{gen_same}/{n}",
                      "max_rel_diff_truth_ratio_x": worst_x,
                      "max_abs_diff_memorization": worst_em,
                      "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
