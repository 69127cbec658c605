"""Evaluation's per-token statistics and gradient norms from hidden states, the output layer applied a chunk of
positions at a time: same values as the model's own logits, and no ``(B, T, V)`` logits on the way."""

from __future__ import annotations

import pytest
import torch

from obliviate.data.formatting import PromptFormatter
from obliviate.evaluation.tokens import token_stats
from obliviate.forward import inspect_model
from obliviate.likelihood import answer_gradient_norms, answer_token_stats
from obliviate.models import load_model

pytestmark = pytest.mark.integration

QA = [("Who wrote The Silent River?", "Her first book was The Silent River."),
      ("Where was he born?", "He was born in London, England."),
      ("What genre?", "Historical fiction."),
      ("Has the author won any awards?", "Yes, he received the Prix Goncourt in 1998 for his second book.")]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    m, tok = load_model(str(tiny_model_dir))
    fmt = PromptFormatter(tok, "chat")
    pairs = []
    for q, a in QA:
        e = fmt.encode(q, a)
        pairs.append((e.input_ids[: e.prompt_length], e.input_ids[e.prompt_length:]))
    assert inspect_model(m).split is not None      # the tiny model takes the chunked path
    return m, tok, pairs


class _HeadCalls:
    """Records the number of positions each call of the model's output layer received."""

    def __init__(self, head: torch.nn.Module):
        self.positions: list[int] = []
        self.handle = head.register_forward_hook(lambda mod, args, out: self.positions.append(args[0].shape[-2]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("chunk_size", [1, 5, 512])
def test_chunked_token_stats_equal_the_model_logits(model, chunk_size) -> None:
    m, tok, pairs = model
    with _HeadCalls(m.get_output_embeddings()) as calls:
        stats = answer_token_stats(m, pairs, pad_token_id=tok.pad_token_id, batch_size=3, chunk_size=chunk_size)
    assert calls.positions and set(calls.positions) == {1}     # the model's own head ran on one position per row
    for (prompt, answer), s in zip(pairs, stats):
        with torch.no_grad():
            logits = m(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1]
        full = token_stats(logits, answer)
        assert len(s) == len(answer)
        assert s.logprobs == pytest.approx(full.logprobs, rel=1e-6, abs=1e-6)
        assert s.means == pytest.approx(full.means, rel=1e-6, abs=1e-6)
        assert s.variances == pytest.approx(full.variances, rel=1e-5, abs=1e-6)
        assert s.hits == full.hits


def test_token_stats_refuse_an_empty_prompt(model) -> None:
    m, tok, pairs = model
    with pytest.raises(ValueError, match="prompt of at least one token"):
        answer_token_stats(m, [([], pairs[0][1])], pad_token_id=tok.pad_token_id)


def test_chunked_gradient_norms_equal_the_materialised_backward(model) -> None:
    m, _, pairs = model
    with _HeadCalls(m.get_output_embeddings()) as calls:
        norms = answer_gradient_norms(m, pairs[:2], chunk_size=4)
    assert set(calls.positions) == {1}
    for (prompt, answer), norm in zip(pairs, norms):
        params = [p for p in m.parameters() if p.is_floating_point()]
        logits = m(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1].float()
        nll = -(logits.log_softmax(-1).gather(-1, torch.tensor(answer)[:, None])).mean()
        grads = torch.autograd.grad(nll, params, allow_unused=True)
        expected = float(torch.stack([g.norm() for g in grads if g is not None]).mean())
        assert norm == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is None for p in m.parameters())
