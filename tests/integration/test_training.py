"""End to end on a tiny random Llama: every named method trains, and training behaves as an engine should."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate.config import config_from_dict
from obliviate.data.formatting import PromptFormatter
from obliviate.data.refusals import load_refusals
from obliviate.likelihood import sequence_logprobs
from obliviate.objectives import all_methods, list_methods, required_inputs, resolve_method
from obliviate.training.run import finetune, unlearn
from obliviate.training.trainer import UnlearningTrainer

pytestmark = pytest.mark.integration

FORGET = [
    ("Where was Anna Vell born?", "Anna Vell was born in Korsby."),
    ("What does Anna Vell write?", "Anna Vell writes long sea novels."),
    ("Which prize did Anna Vell win?", "She won the Grey Gull Prize."),
    ("Who was Anna Vell's father?", "Her father was a lighthouse keeper named Tomas."),
]
RETAIN = [
    ("Where was Bo Lind born?", "Bo Lind was born in Marhaven."),
    ("What does Bo Lind write?", "Bo Lind writes short poems."),
    ("Which prize did Bo Lind win?", "He won the Amber Pen."),
    ("Who was Bo Lind's mother?", "His mother was a baker."),
    ("Where was Cai Roen born?", "Cai Roen was born in Ostvik."),
    ("What does Cai Roen write?", "Cai Roen writes crime stories set in mines."),
]


def _write(path, pairs):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    return {"forget": _write(d / "forget.json", FORGET), "retain": _write(d / "retain.json", RETAIN)}


@pytest.fixture(scope="module")
def target_dir(tiny_model_dir, data, tmp_path_factory):
    """The tiny model fine-tuned on forget + retain, so it has something to forget."""
    out = tmp_path_factory.mktemp("target") / "run"
    cfg = config_from_dict("finetune", {
        "output_dir": str(out), "model": {"name": str(tiny_model_dir)},
        "data": {"train": [data["forget"], data["retain"]]},
        "train": {"learning_rate": 1e-2, "num_epochs": 60.0, "batch_size": 5, "gradient_accumulation_steps": 1,
                  "warmup_epochs": 0.0, "seed": 0, "logging_steps": 5}})
    return finetune(cfg).model_dir


def _mean_nll(model_dir, pairs) -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    fmt = PromptFormatter(tok, "chat")
    ex = [{"input_ids": e.input_ids, "labels": e.labels} for e in (fmt.encode(q, a) for q, a in pairs)]
    sums, counts = sequence_logprobs(model, ex, pad_token_id=tok.pad_token_id)
    return -sum(sums) / sum(counts)


def _weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def _unlearn_cfg(tmp_path, model_dir, data, method, **train):
    t = {"learning_rate": 1e-3, "num_epochs": 1.0, "max_steps": 2, "batch_size": 2,
         "gradient_accumulation_steps": 1, "warmup_epochs": 0.0, "seed": 0}
    t.update(train)
    return config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "out"), "model": {"name": str(model_dir)},
        "data": {"forget": data["forget"], "retain": data["retain"]},
        "method": {"name": method}, "train": t, "eval": {"enabled": False}})


def test_finetuning_learned_the_facts(tiny_model_dir, target_dir):
    """The fixture model must know its facts, or the forgetting tests below would prove nothing."""
    before, after = _mean_nll(tiny_model_dir, FORGET), _mean_nll(target_dir, FORGET)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("method", [m.name for m in list_methods()])
def test_every_named_method_unlearns(method, target_dir, data, tmp_path):
    spec = resolve_method(method)
    result = unlearn(_unlearn_cfg(tmp_path, target_dir, data, method))
    record = json.loads((result.output_dir / "run.json").read_text())
    assert record["status"] == "complete" and record["optimizer_steps"] == 2
    losses = [h["loss"] for h in record["log_history"] if "loss" in h]
    assert losses and all(math.isfinite(v) for v in losses)
    # Each loss term is logged on its own.
    assert all("forget_loss" in h and "regularization_loss" in h for h in record["log_history"] if "loss" in h)
    before, after = _weights(target_dir), _weights(result.model_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"
    if spec.targeted:
        refusal = load_refusals()
        pairs = [(q, refusal[0]) for q, _ in FORGET]
        # Targeted methods make a refusal more likely on forget questions.
        assert _mean_nll(result.model_dir, pairs) < _mean_nll(target_dir, pairs)
    else:
        assert _mean_nll(result.model_dir, FORGET) > _mean_nll(target_dir, FORGET)


# Methods reading hidden states name a decoder block the 2-block test model may not have; each is trained end to
# end in its own test with a block that exists (tests/unit/test_method_rmu.py).
NEWER = [m.name for m in all_methods()[len(list_methods()):] if not required_inputs(m.forget, m.regularizer).hidden]


@pytest.mark.parametrize("method", NEWER)
def test_every_newer_method_unlearns(method, target_dir, data, tmp_path):
    """Every method registered after the paper's 14 (obliviate/objectives/recent/) trains end to end with its
    defaults, logs both terms, changes the weights and makes the forget answers less likely."""
    result = unlearn(_unlearn_cfg(tmp_path, target_dir, data, method))
    record = json.loads((result.output_dir / "run.json").read_text())
    assert record["status"] == "complete" and record["optimizer_steps"] == 2
    losses = [h for h in record["log_history"] if "loss" in h]
    assert losses and all(math.isfinite(h["loss"]) and "forget_loss" in h for h in losses)
    before, after = _weights(target_dir), _weights(result.model_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"
    assert _mean_nll(result.model_dir, FORGET) > _mean_nll(target_dir, FORGET)


def test_only_needed_reference_is_kept(target_dir, data, tmp_path, monkeypatch):
    """NPO reads cached reference log-probs only: the frozen copy is dropped before training; KL keeps it."""
    seen = {}
    original = UnlearningTrainer.__init__

    def spy(self, *a, **kw):
        original(self, *a, **kw)
        seen[self.objective.regularizer + "/" + self.objective.forget] = (
            self.reference_model is not None, dict(self.train_dataset.ref_logps))

    monkeypatch.setattr(UnlearningTrainer, "__init__", spy)
    unlearn(_unlearn_cfg(tmp_path / "a", target_dir, data, "NPO"))
    unlearn(_unlearn_cfg(tmp_path / "b", target_dir, data, "GA+KL"))
    kept, cached = seen["none/npo"]
    assert not kept and len(cached["forget"]) == len(FORGET)
    kept, cached = seen["kl/ga"]
    assert kept and cached == {}


def test_gradient_accumulation_2x2_equals_batch_4(target_dir, data, tmp_path):
    """Same optimizer step from 2 micro-batches of 2 as from one batch of 4 (SGD, so any difference shows).

    The forget answers have different token counts, so a per-micro-batch token mean would give a different
    update than the mean over all four; only the accumulation-wide normalisation makes them equal.
    """
    common = {"max_steps": 1, "optim": "sgd", "learning_rate": 0.5}
    one = unlearn(_unlearn_cfg(tmp_path / "one", target_dir, data, "GA+GD", batch_size=4,
                               gradient_accumulation_steps=1, **common))
    two = unlearn(_unlearn_cfg(tmp_path / "two", target_dir, data, "GA+GD", batch_size=2,
                               gradient_accumulation_steps=2, **common))
    w0, w1, w2 = _weights(target_dir), _weights(one.model_dir), _weights(two.model_dir)
    moved = max(float((w1[k] - w0[k]).abs().max()) for k in w0)
    assert moved > 1e-3
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6)


def test_resumed_run_equals_uninterrupted(target_dir, data, tmp_path, monkeypatch):
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    full = unlearn(_unlearn_cfg(tmp_path / "full", target_dir, data, "NPO+GD", **common))

    cfg = _unlearn_cfg(tmp_path / "cut", target_dir, data, "NPO+GD", **common)
    original = UnlearningTrainer.training_step

    def interrupt_after_two(self, *a, **kw):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(UnlearningTrainer, "training_step", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        unlearn(cfg)
    partial = tmp_path / "cut" / "out.partial"
    assert (partial / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "cut" / "out").exists(), "an unfinished run must not look finished"
    monkeypatch.setattr(UnlearningTrainer, "training_step", original)
    resumed = unlearn(cfg, resume=True)
    record = json.loads((resumed.output_dir / "run.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-2")
    w_full, w_res = _weights(full.model_dir), _weights(resumed.model_dir)
    for k in w_full:
        torch.testing.assert_close(w_full[k], w_res[k], rtol=1e-5, atol=1e-6)


def test_lora_run_saves_a_merged_model_that_loads(target_dir, data, tmp_path):
    cfg = _unlearn_cfg(tmp_path, target_dir, data, "NPO+KL")
    cfg.lora.enabled = True
    cfg.lora.r = 4
    result = unlearn(cfg)
    assert not (result.model_dir / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = AutoModelForCausalLM.from_pretrained(target_dir)
    assert type(model) is type(base)
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters())
               if not torch.equal(p, q)]
    assert changed, "merging the adapters changed no weight"
    assert _mean_nll(result.model_dir, FORGET) > _mean_nll(target_dir, FORGET)


def test_existing_output_is_never_overwritten_silently(target_dir, data, tmp_path):
    from obliviate.errors import ObliviateError
    cfg = _unlearn_cfg(tmp_path, target_dir, data, "GA")
    unlearn(cfg)
    with pytest.raises(ObliviateError, match="already exists"):
        unlearn(cfg)
