"""Batched evaluation equals a straightforward one-item-at-a-time computation on real TOFU rows.

The reference computation below is written independently of the library's batching: one sequence per
forward pass, no padding, float64 log-softmax, the docs/metrics.md formulas spelled out.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate.benchmarks.tofu import load_tofu
from obliviate.benchmarks.types import EvalSet
from obliviate.data.formatting import PromptFormatter
from obliviate.evaluation.suite import EvalSettings, Scorers, evaluate_set
from obliviate.evaluation.scorers import Unavailable
from obliviate.likelihood import sequence_logprobs

pytestmark = pytest.mark.integration
N = 6  # rows per set


@pytest.fixture(scope="module")
def model_and_formatter(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model, PromptFormatter(tok, "chat")


@pytest.fixture(scope="module")
def tofu(shared_data_dir):
    return load_tofu(shared_data_dir / "tofu", "forget01")


def _mean_nll_one(model, fmt, q, a) -> float:
    """ℓ̄(a|q): one unpadded sequence, float64 log-softmax over the answer positions."""
    enc = fmt.encode(q, a)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    targets = ids[0, 1:]
    positions = [t for t in range(len(targets)) if enc.labels[t + 1] != -100]
    return -sum(float(logp[t, targets[t]]) for t in positions) / len(positions)


def _greedy_one(model, fmt, q, max_new_tokens) -> str:
    ids = torch.tensor([fmt.encode_prompt(q)])
    tok = fmt.tokenizer
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("set_name", ["forget", "retain", "real_authors", "world_facts"])
def test_batched_equals_one_at_a_time(set_name, model_and_formatter, tofu):
    model, fmt = model_and_formatter
    rows = {"forget": tofu.forget_eval, "retain": tofu.retain_eval, "real_authors": tofu.real_authors,
            "world_facts": tofu.world_facts}[set_name][:N]
    eval_set = EvalSet(set_name, rows)
    scorers = Scorers(embedder=Unavailable("not used here"), nli=Unavailable("not used here"))
    settings = EvalSettings(max_new_tokens=12, batch_size=4, embedding_model=None, nli_model=None)
    result = evaluate_set(model, fmt, eval_set, scorers, settings)

    xs = []
    for item, r in zip(result["items"], rows):
        nll = _mean_nll_one(model, fmt, r.question, r.eval_answer)
        perturbed = [_mean_nll_one(model, fmt, r.question, p) for p in r.perturbed_answers]
        if set_name in ("forget", "retain"):
            assert item["probability"] == pytest.approx(math.exp(-nll), rel=1e-5, abs=1e-9)
            para = _mean_nll_one(model, fmt, r.question, r.paraphrased_answer)
        else:
            p_true = math.exp(-nll)
            expected = p_true / (p_true + sum(math.exp(-v) for v in perturbed))
            assert item["probability"] == pytest.approx(expected, rel=1e-5)
            para = nll
        x = math.exp(sum(perturbed) / len(perturbed) - para)
        assert item["truth_ratio_x"] == pytest.approx(x, rel=1e-5)
        xs.append(x)
        assert item["generation"] == _greedy_one(model, fmt, r.question, 12)

    if set_name == "forget":
        expected_tr = 1 - sum(min(x, 1 / x) for x in xs) / len(xs)
    else:
        expected_tr = sum(max(0.0, 1 - 1 / x) for x in xs) / len(xs)
    # x ≈ 1 on a random model, so 1 − 1/x is a small difference: compare it to 1e-5 absolute.
    assert result["metrics"]["truth_ratio"]["value"] == pytest.approx(expected_tr, abs=1e-5)
    assert result["metrics"]["cosine_similarity"]["value"] is None
    assert result["metrics"]["cosine_similarity"]["reason"] == "not used here"


def test_probability_does_not_depend_on_batching(model_and_formatter, tofu):
    """Same answer, different batch sizes and batch companions: the same log-prob to 1e-5."""
    model, fmt = model_and_formatter
    rows = tofu.retain_eval[:9]
    ex = [{"input_ids": e.input_ids, "labels": e.labels} for e in (fmt.encode(r.question, r.answer) for r in rows)]
    pad = fmt.tokenizer.pad_token_id
    alone = [sequence_logprobs(model, [e], pad_token_id=pad)[0][0] for e in ex]
    for batch_size in (2, 4, 9):
        together, _ = sequence_logprobs(model, ex, pad_token_id=pad, batch_size=batch_size)
        assert together == pytest.approx(alone, abs=1e-5)
    # Reversed order puts every item next to different neighbours.
    reversed_, _ = sequence_logprobs(model, ex[::-1], pad_token_id=pad, batch_size=3)
    assert reversed_[::-1] == pytest.approx(alone, abs=1e-5)


def test_shared_prompt_scoring_equals_full_sequences(model_and_formatter, tofu):
    """Prompt run once + cached, answers batched: same log-probs as scoring each full sequence alone."""
    from obliviate.likelihood import shared_prompt_logprobs

    model, fmt = model_and_formatter
    rows = tofu.forget_eval[:3] + tofu.world_facts[:3]
    groups, full = [], []
    for i, r in enumerate(rows):
        answers = [r.answer, *r.perturbed_answers][: 2 + i % 3]   # 2, 3 or 4 answers: mixed group sizes
        enc = [fmt.encode(r.question, a) for a in answers]
        groups.append((enc[0].input_ids[: enc[0].prompt_length], [e.input_ids[e.prompt_length:] for e in enc]))
        full.append([{"input_ids": e.input_ids, "labels": e.labels} for e in enc])
    pad = fmt.tokenizer.pad_token_id
    shared = shared_prompt_logprobs(model, groups, pad_token_id=pad, batch_size=5)
    for got, examples in zip(shared, full):
        sums, counts = sequence_logprobs(model, examples, pad_token_id=pad, batch_size=1)
        assert [c for _, c in got] == counts
        assert [s for s, _ in got] == pytest.approx(sums, abs=1e-4)
