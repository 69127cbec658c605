"""The fast training step computes the same update as the plain one.

The plain step (``train.loss_chunk_size=0``, ``train.packing=false``) pads every part to the longest sequence and
hands the model's full logits to the objectives; the default step packs the parts end to end and applies the
output layer to labelled positions only, a chunk at a time. With SGD any difference in the gradient shows in the
weights. Also here: activation checkpointing really runs, the fused AdamW is the default and updates as the
per-tensor loop does, and NPO makes no frozen reference copy (its log-probs are cached from the starting model).
"""

from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch
from safetensors.torch import load_file

import obliviate.models
import obliviate.training.run
from obliviate.config import config_from_dict
from obliviate.training.run import unlearn
from obliviate.training.trainer import UnlearningTrainer

pytestmark = pytest.mark.integration

FORGET = [
    ("Where was Anna Vell born?", "Anna Vell was born in Korsby, a small fishing town."),
    ("What does Anna Vell write?", "Sea novels."),
    ("Which prize did Anna Vell win?", "She won the Grey Gull Prize in 1998 for her third book."),
    ("Who was Anna Vell's father?", "Her father was a lighthouse keeper."),
]
RETAIN = [
    ("Where was Bo Lind born?", "Bo Lind was born in Marhaven."),
    ("What does Bo Lind write?", "Bo Lind writes short poems about winter, birds and the sea."),
    ("Which prize did Bo Lind win?", "The Amber Pen."),
    ("Who was Bo Lind's mother?", "His mother was a baker in Ostvik."),
]


def _write(path, pairs):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    return {"forget": _write(d / "forget.json", FORGET), "retain": _write(d / "retain.json", RETAIN)}


def _cfg(out, model_dir, data, method, *, lora=False, **train):
    t = {"learning_rate": 0.5, "max_steps": 1, "batch_size": 4, "gradient_accumulation_steps": 1,
         "warmup_epochs": 0.0, "seed": 0, "optim": "sgd"}
    t.update(train)
    return config_from_dict("unlearn", {
        "output_dir": str(out), "model": {"name": str(model_dir)},
        "data": {"forget": data["forget"], "retain": data["retain"]},
        "method": {"name": method}, "train": t, "eval": {"enabled": False},
        "lora": {"enabled": lora, "r": 4}})


def _weights(result):
    return load_file(str(result.model_dir / "model.safetensors"))


def _losses(result):
    record = json.loads((result.output_dir / "run.json").read_text())
    return [(h["loss"], h["forget_loss"], h["regularization_loss"]) for h in record["log_history"] if "loss" in h]


@pytest.mark.parametrize("method,lora", [("ME+GD", False), ("NPO+KL", False), ("IDK+AP", False), ("DPO", False),
                                         ("LLMU", False), ("GA", False), ("NPO+KL", True)],
                         ids=["ME+GD", "NPO+KL", "IDK+AP", "DPO", "LLMU", "GA", "NPO+KL-lora"])
def test_chunked_packed_step_equals_materialised_padded_step(method, lora, tiny_model_dir, data, tmp_path):
    """One SGD step: every logged loss term within 1e-6 (relative) and every weight within float32 rounding.

    (LoRA's A matrices are drawn from torch's global generator when the adapters are created, before the engine
    seeds it: both runs start from the same generator state so that they start from the same adapters.)"""
    torch.manual_seed(0)
    plain = unlearn(_cfg(tmp_path / "plain", tiny_model_dir, data, method, lora=lora, loss_chunk_size=0,
                         packing=False))
    torch.manual_seed(0)
    fast = unlearn(_cfg(tmp_path / "fast", tiny_model_dir, data, method, lora=lora, loss_chunk_size=7))
    for a, b in zip(_losses(fast), _losses(plain)):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    w0, w_plain, w_fast = load_file(str(tiny_model_dir / "model.safetensors")), _weights(plain), _weights(fast)
    assert max(float((w_plain[k] - w0[k]).abs().max()) for k in w0) > 1e-4, "the step changed nothing"
    for k in w_plain:
        torch.testing.assert_close(w_fast[k], w_plain[k], rtol=1e-5, atol=1e-6, msg=k)


def test_activation_checkpointing_really_runs(tiny_model_dir, data, tmp_path, monkeypatch):
    """With train.gradient_checkpointing=true the layers' activations are recomputed in backward instead of kept:
    the tensors autograd saves during the forward pass (outside the checkpointed layers) shrink by more than
    half. Measured with saved-tensor hooks around compute_loss; the step's update is unchanged."""
    saved = {}
    original = UnlearningTrainer.compute_loss

    def counting(self, *args, **kwargs):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = original(self, *args, **kwargs)
        saved.setdefault("on" if "/on" in self.args.output_dir else "off", []).append(total)
        return loss

    monkeypatch.setattr(UnlearningTrainer, "compute_loss", counting)
    off = unlearn(_cfg(tmp_path / "off", tiny_model_dir, data, "GA+GD"))
    on = unlearn(_cfg(tmp_path / "on", tiny_model_dir, data, "GA+GD", gradient_checkpointing=True))
    assert max(saved["on"]) < 0.5 * min(saved["off"]), saved
    w_off, w_on = _weights(off), _weights(on)
    for k in w_off:
        torch.testing.assert_close(w_on[k], w_off[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_the_step_runs_lean_layers_with_the_same_update(checkpointing, tiny_model_dir, data, tmp_path, monkeypatch):
    """Every decoder block's feed-forward runs through obliviate.lean in the training step (forward, and the
    recomputation under activation checkpointing), so does the tied embedding's lookup (once: it is not
    recomputed), and one ME+GD step
    updates every weight as the model run as written does (both contexts replaced by no-ops), within float32
    rounding."""
    from contextlib import nullcontext

    import obliviate.lean
    import obliviate.training.trainer

    calls, lookups = [], []
    original, lookup = obliviate.lean._lean_forward, obliviate.lean._lookup_forward

    def counting(self, x):
        calls.append(torch.is_grad_enabled())
        return original(self, x)

    def counting_lookup(self, ids):
        lookups.append(torch.is_grad_enabled())
        return lookup(self, ids)

    monkeypatch.setattr(obliviate.lean, "_lean_forward", counting)
    monkeypatch.setattr(obliviate.lean, "_lookup_forward", counting_lookup)
    train = {"gradient_checkpointing": True} if checkpointing else {}
    lean = unlearn(_cfg(tmp_path / "lean", tiny_model_dir, data, "ME+GD", **train))
    layers = len(load_file(str(tiny_model_dir / "model.safetensors")).keys() & {
        f"model.layers.{i}.mlp.down_proj.weight" for i in range(64)})
    assert layers > 0 and calls.count(True) == layers * (2 if checkpointing else 1) and lookups.count(True) == 1
    monkeypatch.setattr(obliviate.training.trainer, "lean_swiglu", lambda model: nullcontext())
    monkeypatch.setattr(obliviate.training.trainer, "lean_tied_embedding", lambda model: nullcontext())
    plain = unlearn(_cfg(tmp_path / "plain", tiny_model_dir, data, "ME+GD", **train))
    assert calls.count(True) == layers * (2 if checkpointing else 1) and lookups.count(True) == 1
    w0, w_lean, w_plain = load_file(str(tiny_model_dir / "model.safetensors")), _weights(lean), _weights(plain)
    assert max(float((w_plain[k] - w0[k]).abs().max()) for k in w0) > 1e-4, "the step changed nothing"
    for k in w_plain:
        torch.testing.assert_close(w_lean[k], w_plain[k], rtol=1e-5, atol=1e-6, msg=k)


def test_rmu_step_is_the_same_packed_padded_and_checkpointed(tiny_model_dir, data, tmp_path):
    """RMU reads decoder block 1's output through a hook, from the model and from its frozen reference: packed and
    padded parts give the same block outputs, so the same update, and so does activation checkpointing (the block
    recomputed in backward after the hook is gone; the captured output still carries the gradient)."""
    def rmu(out, **train):
        cfg = _cfg(out, tiny_model_dir, data, "RMU", **train)
        cfg.method.forget_params = {"layer": 1, "steering_coeff": 20.0}
        cfg.method.regularizer_params = {"layer": 1}
        return unlearn(cfg)

    plain = rmu(tmp_path / "plain", loss_chunk_size=0, packing=False)
    fast = rmu(tmp_path / "fast")
    checkpointed = rmu(tmp_path / "ckpt", gradient_checkpointing=True)
    w0, w_plain = load_file(str(tiny_model_dir / "model.safetensors")), _weights(plain)
    assert max(float((w_plain[k] - w0[k]).abs().max()) for k in w0) > 1e-4, "the step changed nothing"
    for other in (fast, checkpointed):
        for a, b in zip(_losses(other), _losses(plain)):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
        w = _weights(other)
        for k in w_plain:
            torch.testing.assert_close(w[k], w_plain[k], rtol=1e-5, atol=1e-6, msg=k)


def test_fused_adamw_is_the_default_and_updates_as_the_loop_does(tiny_model_dir, data, tmp_path, monkeypatch):
    """Default optimizer: torch's fused AdamW; two steps of it land on the per-tensor AdamW's weights."""
    kinds = []
    original = UnlearningTrainer.create_optimizer

    def spy(self, *args, **kwargs):
        optimizer = original(self, *args, **kwargs)
        kinds.append(bool(optimizer.defaults.get("fused")))
        return optimizer

    monkeypatch.setattr(UnlearningTrainer, "create_optimizer", spy)
    common = {"max_steps": 2, "learning_rate": 1e-3}
    cfg = _cfg(tmp_path / "fused", tiny_model_dir, data, "ME+GD", **common)
    cfg.train.optim = config_from_dict("unlearn", {"data": {"forget": "x"}}).train.optim   # the default
    fused = unlearn(cfg)
    loop = unlearn(_cfg(tmp_path / "loop", tiny_model_dir, data, "ME+GD", **common, optim="adamw_torch"))
    assert kinds == [True, False]
    w0, w_fused, w_loop = load_file(str(tiny_model_dir / "model.safetensors")), _weights(fused), _weights(loop)
    assert max(float((w_loop[k] - w0[k]).abs().max()) for k in w0) > 1e-4
    for k in w_loop:
        torch.testing.assert_close(w_fused[k], w_loop[k], rtol=1e-5, atol=1e-6)


def test_npo_makes_no_reference_copy_and_kl_keeps_one(tiny_model_dir, data, tmp_path, monkeypatch):
    """NPO reads only reference log-probs, cached from the starting model before training: no frozen copy is ever
    made (it would cost a whole model's memory). KL reads reference logits every step: its copy is alive during
    training. NPO's cached log-probs equal a frozen copy's."""
    copies = []
    original = obliviate.models.frozen_copy

    def tracked(model):
        ref = original(model)
        copies.append(weakref.ref(ref))
        return ref

    alive, cached = [], []
    train = UnlearningTrainer.train

    def check(self, *args, **kwargs):
        gc.collect()
        alive.append([c() is not None for c in copies])
        cached.append(dict(self.train_dataset.ref_logps))
        return train(self, *args, **kwargs)

    monkeypatch.setattr(obliviate.models, "frozen_copy", tracked)
    monkeypatch.setattr(obliviate.training.run, "frozen_copy", tracked)  # run.py imports it by name
    monkeypatch.setattr(UnlearningTrainer, "train", check)
    unlearn(_cfg(tmp_path / "npo", tiny_model_dir, data, "NPO+GD"))
    assert copies == [] and alive == [[]]
    unlearn(_cfg(tmp_path / "kl", tiny_model_dir, data, "GA+KL"))
    assert len(copies) == 1 and alive[-1] == [True]

    from obliviate.data.formatting import PromptFormatter
    from obliviate.likelihood import sequence_logprobs
    from obliviate.models import load_model
    model, tok = load_model(str(tiny_model_dir), dtype="float32")
    fmt = PromptFormatter(tok, "chat")
    examples = [{"input_ids": e.input_ids, "labels": e.labels} for e in (fmt.encode(q, a) for q, a in FORGET)]
    expected, _ = sequence_logprobs(original(model), examples, pad_token_id=tok.pad_token_id)
    assert cached[0]["forget"] == pytest.approx(expected, abs=1e-5)


def test_adamw_states_are_compacted_on_the_cpu_with_the_same_update(tiny_model_dir, data, tmp_path, monkeypatch):
    """From the first step the trainer's AdamW keeps each kind of state in one buffer (training/compact.py);
    three steps land on exactly the weights of a run that keeps them apart."""
    import obliviate.training.trainer as trainer_module

    optimizers = []
    original = UnlearningTrainer.create_optimizer

    def spy(self, *args, **kwargs):
        optimizer = original(self, *args, **kwargs)
        optimizers.append(optimizer)
        return optimizer

    monkeypatch.setattr(UnlearningTrainer, "create_optimizer", spy)
    common = {"max_steps": 3, "learning_rate": 1e-3, "optim": "adamw_torch_fused"}
    compacted = unlearn(_cfg(tmp_path / "compacted", tiny_model_dir, data, "ME+GD", **common))
    monkeypatch.setattr(trainer_module, "flat_states_from_first_step", lambda optimizer: None)
    apart = unlearn(_cfg(tmp_path / "apart", tiny_model_dir, data, "ME+GD", **common))
    storages = [{key: {s[key].untyped_storage().data_ptr() for s in opt.state.values()} for key in
                 ("exp_avg", "exp_avg_sq")} for opt in optimizers]
    assert all(len(ptrs) == 1 for ptrs in storages[0].values())
    assert all(len(ptrs) > 1 for ptrs in storages[1].values())
    w_compacted, w_apart = _weights(compacted), _weights(apart)
    w0 = load_file(str(tiny_model_dir / "model.safetensors"))
    assert max(float((w_apart[k] - w0[k]).abs().max()) for k in w0) > 1e-4
    for k in w_apart:
        assert torch.equal(w_compacted[k], w_apart[k]), k
