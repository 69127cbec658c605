"""RMU (docs/methods.md, "Newer methods"): hand values of both terms, the parameter filter, and one run end to end
on the tiny model (hidden states of one block through hooks, the frozen model's hidden states, only the chosen
MLPs trained)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from obliviate.config import config_from_dict
from obliviate.errors import ConfigError
from obliviate.objectives import (SequenceOutputs, UnlearningInputs, get_forget, get_regularizer, required_inputs,
                                  resolve_method)
from obliviate.objectives.recent.rmu import RMUParams, RMURetainParams, control_vector
from obliviate.training.run import unlearn

F64 = torch.float64


def outputs(hidden: torch.Tensor, labels: torch.Tensor, ref_hidden: torch.Tensor | None = None) -> SequenceOutputs:
    b, t = labels.shape
    return SequenceOutputs(torch.zeros(b, t, 3, dtype=F64), labels, hidden={1: hidden},
                           ref_hidden=None if ref_hidden is None else {1: ref_hidden})


def test_forget_hand_value():
    """H = 2. Sequence 1: two counted tokens, one at c·u, one at c·u + (1, 2): ‖·‖² = 5 → 5/2 per sequence.
    Sequence 2: at c·u everywhere → 0; its last position is padding (−100) at 100, which must not count.
    Mean over sequences: 1.25; with the released code's mean over the hidden dimension: 5/2/2/2 = 0.625."""
    p = RMUParams(layer=1, steering_coeff=3.0, seed=5)
    cu = control_vector(p, 2, torch.zeros(1, dtype=F64))
    assert float(cu.norm()) == pytest.approx(3.0, abs=1e-12) and bool((cu > 0).all())
    h = cu.expand(2, 2, 2).clone()
    h[0, 1] += torch.tensor([1.0, 2.0], dtype=F64)
    h[1, 1] = 100.0
    labels = torch.tensor([[5, 6], [7, -100]])
    fn = get_forget("rmu").fn
    assert fn(UnlearningInputs(forget=outputs(h, labels)), p).item() == pytest.approx(1.25, abs=1e-12)
    mean = RMUParams(layer=1, steering_coeff=3.0, seed=5, hidden_reduction="mean")
    assert fn(UnlearningInputs(forget=outputs(h, labels)), mean).item() == pytest.approx(0.625, abs=1e-12)


def test_retain_hand_value_and_no_gradient_to_the_frozen_model():
    """Sequence 1 differs from the frozen states by (3, 4) at its one counted token: 25; sequence 2 by nothing:
    mean 12.5. The gradient reaches the policy's states only: 2·(3, 4)/2 = (3, 4) at that token."""
    ref = torch.zeros(2, 2, 2, dtype=F64, requires_grad=True)
    h = torch.zeros(2, 2, 2, dtype=F64)
    h[0, 1] = torch.tensor([3.0, 4.0], dtype=F64)
    h.requires_grad_()
    labels = torch.tensor([[-100, 1], [-100, 2]])
    loss = get_regularizer("rmu_retain").fn(UnlearningInputs(retain=outputs(h, labels, ref)), RMURetainParams(layer=1))
    assert loss.item() == pytest.approx(12.5, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(h.grad[0, 1], torch.tensor([3.0, 4.0], dtype=F64))
    assert ref.grad is None


def test_missing_hidden_states_are_named():
    labels = torch.tensor([[1, 2]])
    out = SequenceOutputs(torch.zeros(1, 2, 3), labels)
    with pytest.raises(ValueError, match=r"forget.hidden\[7\]"):
        get_forget("rmu").fn(UnlearningInputs(forget=out), RMUParams())


def test_what_it_reads_and_trains():
    need = required_inputs("rmu", "rmu_retain")
    assert need.hidden == ("forget", "retain") and need.ref_hidden == ("retain",) and need.needs_reference_model
    assert need.ref_logits == () and need.ref_logps == ()
    keep = get_forget("rmu").trainable(RMUParams(layer=7))
    assert keep("model.layers.5.mlp.down_proj.weight") and keep("model.layers.7.mlp.gate_proj.weight")
    assert keep("base_model.model.model.layers.6.mlp.up_proj.lora_A.default.weight")
    assert not keep("model.layers.4.mlp.down_proj.weight") and not keep("model.layers.7.self_attn.q_proj.weight")
    assert not keep("model.layers.17.mlp.down_proj.weight") and not keep("lm_head.weight")
    code = get_forget("rmu").trainable(RMUParams(layer=7, trainable_modules=r"mlp\.down_proj"))
    assert code("model.layers.6.mlp.down_proj.weight") and not code("model.layers.6.mlp.up_proj.weight")
    m = resolve_method("rmu")
    assert (m.name, m.forget, m.regularizer, m.regularization_coeff, m.mask) == ("RMU", "rmu", "rmu_retain", 1200.0,
                                                                                 False)


def test_config_checks_its_parameters():
    base = {"data": {"forget": "f.json"}, "output_dir": "/tmp/obliviate-test-rmu"}
    with pytest.raises(ConfigError, match="method.forget_params.hidden_reduction: 'men' is not one of sum, mean"):
        config_from_dict("unlearn", base, ["method.name=RMU", "method.forget_params={hidden_reduction: men}"])
    with pytest.raises(ConfigError, match="method.forget_params.layer: must be >= 0"):
        config_from_dict("unlearn", base, ["method.name=RMU", "method.forget_params={layer: -1}"])
    with pytest.raises(ConfigError,
                       match="method.regularizer_params.layer: 7 differs from method.forget_params.layer 5"):
        config_from_dict("unlearn", base, ["method.name=RMU", "method.forget_params={layer: 5}"])
    cfg = config_from_dict("unlearn", base, ["method.name=RMU", "method.forget_params={layer: 5}",
                                             "method.regularizer_params={layer: 5}"])
    assert cfg.method.forget_params == {"layer": 5}


def _write_sets(tmp_path):
    """A two-question forget set and a two-question retain set about other people, as JSON Lines files."""
    pairs = [("Where was Anna Vell born?", "In Korsby."), ("What does Anna Vell write?", "Sea novels.")]
    others = [("Where was Bo Lind born?", "In Marhaven."), ("What does Bo Lind write?", "Short poems.")]
    files = {}
    for name, rows in (("forget", pairs), ("retain", others)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return files


@pytest.mark.integration
def test_end_to_end_trains_only_the_chosen_mlp(tiny_model_dir, tmp_path):
    """Two steps on the 2-block test model with ℓ = 1 and only block 1's MLP trainable: every other weight is
    bit-identical afterwards, block 1's MLP moved, both terms are logged and finite, and the retain term is 0 at the
    first step up to rounding (the model still equals the frozen copy; the policy's pass packs forget and retain
    sequences together, the frozen model's only the retain ones, so the sums round differently)."""
    files = _write_sets(tmp_path)
    cfg = config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "out"), "model": {"name": str(tiny_model_dir)},
        "data": {"forget": str(files["forget"]), "retain": str(files["retain"])},
        "method": {"name": "RMU", "forget_params": {"layer": 1, "trainable_layers": [1], "steering_coeff": 20.0},
                   "regularizer_params": {"layer": 1}},
        "train": {"learning_rate": 1e-2, "max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1,
                  "warmup_epochs": 0.0, "seed": 0},
        "eval": {"enabled": False}})
    result = unlearn(cfg)
    record = json.loads((result.output_dir / "run.json").read_text())
    logged = [h for h in record["log_history"] if "loss" in h]
    assert record["status"] == "complete" and len(logged) == 2
    assert all(torch.isfinite(torch.tensor([h["forget_loss"], h["regularization_loss"]])).all() for h in logged)
    assert abs(logged[0]["regularization_loss"]) < 1e-10 and logged[0]["forget_loss"] > 0
    assert logged[1]["regularization_loss"] > 1e-8  # block 1 moved, so its retain states left the frozen ones
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(result.model_dir /
                                                                                       "model.safetensors"))
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith("model.layers.1.mlp.") for k in changed), changed


@pytest.mark.integration
def test_end_to_end_with_lora_trains_only_the_chosen_blocks_adapters(tiny_model_dir, tmp_path):
    """RMU on a LoRA model: only the adapters of block 1's MLP train (the method's selection narrows the adapters),
    the frozen reference is the base model with adapters off (retain term 0 at the first step, when B = 0), and
    the merged model differs from the base in block 1's MLP weights only."""
    files = _write_sets(tmp_path)
    cfg = config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "out"), "model": {"name": str(tiny_model_dir)},
        "data": {"forget": str(files["forget"]), "retain": str(files["retain"])},
        "lora": {"enabled": True, "r": 4, "alpha": 8},
        "method": {"name": "RMU", "forget_params": {"layer": 1, "trainable_layers": [1], "steering_coeff": 20.0},
                   "regularizer_params": {"layer": 1}},
        "train": {"learning_rate": 1e-2, "max_steps": 3, "batch_size": 2, "gradient_accumulation_steps": 1,
                  "warmup_epochs": 0.0, "seed": 0},
        "eval": {"enabled": False}})
    result = unlearn(cfg)
    record = json.loads((result.output_dir / "run.json").read_text())
    logged = [h for h in record["log_history"] if "loss" in h]
    assert record["status"] == "complete" and len(logged) == 3
    assert abs(logged[0]["regularization_loss"]) < 1e-10 and logged[0]["forget_loss"] > 0
    assert logged[2]["regularization_loss"] > 1e-10      # the adapters moved block 1 away from the frozen base
    assert logged[2]["forget_loss"] < logged[0]["forget_loss"]
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(result.model_dir /
                                                                                       "model.safetensors"))
    assert before.keys() == after.keys()                 # merged: a plain model, no adapter weights
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith("model.layers.1.mlp.") for k in changed), changed
