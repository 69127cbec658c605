"""PDU (docs/methods.md, "Newer methods"): hand values, the dual update, the chunked path, and an interrupted run
resumed from its checkpoint equal to an uninterrupted one (the dual variable travels in the checkpoint)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from obliviate.config import config_from_dict
from obliviate.objectives import (SequenceOutputs, UnlearningInputs, compute_objective, get_forget, get_regularizer,
                                  new_states, resolve_method)
from obliviate.objectives.recent.pdu import DualVariable, PDUParams
from obliviate.training.run import unlearn
from obliviate.training.trainer import UnlearningTrainer
from test_chunked import check_term, make_case

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_margin_flattening_hand_value():
    """Rows (2, 0, 1) and (0, 0, 0): (max − mean)² = (2 − 1)² = 1 and 0; mean over 2 tokens 0.5."""
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]], dtype=torch.float64)
    out = SequenceOutputs(logits, torch.tensor([[-100, 1, 2]]))
    assert get_forget("lmf").fn(UnlearningInputs(forget=out), None).item() == pytest.approx(0.5, abs=1e-12)


def test_dual_term_and_update():
    """Retain: position 0 predicts token 1 under logits (0, 0, 0): p = 1/3; position 1 predicts token 0 under
    (ln 2, 0, 0): p = 2/4 = 1/2. ℓ̄ = (ln 3 + ln 2)/2 = 0.8958797. ε = 0.5, λ0 = 2: value 2 · 0.3958797 = 0.7917595.
    After the step, with η = 0.5: λ = 2 + 0.5 · 0.3958797 = 2.1979399; with two micro-batches of violations
    0.3958797 and −4: the mean −1.8020601 gives λ = max(0, 2 − 0.9010301) = 1.0989699; a violation of −10 gives 0."""
    logits = torch.zeros(1, 3, 3, dtype=torch.float64)
    logits[0, 1, 0] = LN2
    out = SequenceOutputs(logits, torch.tensor([[-100, 1, 0]]))
    state = DualVariable()
    p = PDUParams(epsilon=0.5, dual_step=0.5, initial_dual=2.0)
    value = get_regularizer("pdu").fn(UnlearningInputs(retain=out), p, state)
    nll = (LN2 + LN3) / 2
    assert value.item() == pytest.approx(2 * (nll - 0.5), abs=1e-12)
    assert value.item() == pytest.approx(0.7917595, abs=1e-7)
    state.end_step()
    assert state.value == pytest.approx(2.1979399, abs=1e-7) and state.pending == []
    state.value = 2.0
    state.pending = [nll - 0.5, -4.0]
    state.end_step()
    assert state.value == pytest.approx(1.0989699, abs=1e-7)
    state.pending = [-10.0]
    state.end_step()
    assert state.value == 0.0
    state.value, state.pending = 2.0, [0.5, float("nan")]   # a step the non-finite guard withholds: λ stays
    state.end_step()
    assert state.value == 2.0 and state.pending == []


def test_synchronise_moves_every_process_by_the_whole_step():
    """Two processes: means 0.5 (values 0.25, 0.75) and 1.5 (value 1.5) average to ℓ̄ = 1.0, so with λ0 = 2 and
    η = 0.5 both reach λ = 2.5 (each on its own: 2.25 and 2.75). A non-finite value on one process leaves λ at 2 on
    both."""
    def two(pending_a, pending_b):
        states = [DualVariable(), DualVariable()]
        for s, pending in zip(states, (pending_a, pending_b)):
            s.value, s.step_size, s.pending = 2.0, 0.5, list(pending)
        locals_ = [sum(s.pending) / len(s.pending) for s in states]
        for s in states:   # the mean of the processes' own means, as the all-reduce gives it to each of them
            s.synchronise(lambda values: [sum(locals_) / len(locals_)])
            s.end_step()
        return [s.value for s in states]

    assert two([0.25, 0.75], [1.5]) == [pytest.approx(2.5, abs=1e-12)] * 2
    nan = float("nan")
    states = [DualVariable(), DualVariable()]
    states[0].value, states[0].step_size, states[0].pending = 2.0, 0.5, [0.5, nan]
    states[1].value, states[1].step_size, states[1].pending = 2.0, 0.5, [1.5]
    seen = []
    for s in states:   # the first process hands NaN to the mean, so the mean is NaN on both
        s.synchronise(lambda values: seen.append(values[0]) or [nan])
        s.end_step()
    assert math.isnan(seen[0]) and seen[1] == 1.5
    assert [s.value for s in states] == [2.0, 2.0] and all(s.pending == [] for s in states)


def test_state_round_trip_and_fresh_states():
    s = DualVariable()
    s.value, s.step_size, s.pending = 1.5, 0.25, [0.1]
    t = DualVariable()
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.state_dict() == s.state_dict()
    assert set(new_states("lmf", "pdu")) == {"regularizer"}


def test_chunked_equals_materialised():
    fn = get_forget("lmf").fn
    check_term(lambda inputs: fn(inputs, None), make_case(61), rel=1e-10)
    check_term(lambda inputs: fn(inputs, None), make_case(62, torch.float32), rel=1e-6)

    def composed(inputs):
        m = resolve_method("PDU")
        return compute_objective(inputs, forget=m.forget, regularizer=m.regularizer, forget_coeff=1.0,
                                 regularization_coeff=1.0, regularizer_params=PDUParams(initial_dual=0.7)).loss
    check_term(composed, make_case(63), rel=1e-10)


@pytest.mark.integration
def test_resumed_run_equals_uninterrupted(tiny_model_dir, tmp_path, monkeypatch):
    """4 steps with a checkpoint every 2, against a run killed after step 2 and resumed: the same weights, because
    λ (which moved by then) is restored from checkpoint-2 — with λ reset on resume the weights would differ."""
    rows = {"forget": [("Where was Anna Vell born?", "In Korsby."), ("What does Anna Vell write?", "Sea novels.")],
            "retain": [("Where was Bo Lind born?", "In Marhaven."), ("What does Bo Lind write?", "Short poems.")]}
    files = {}
    for name, pairs in rows.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))

    def cfg(out):
        return config_from_dict("unlearn", {
            "output_dir": str(tmp_path / out), "model": {"name": str(tiny_model_dir)},
            "data": {"forget": str(files["forget"]), "retain": str(files["retain"])},
            "method": {"name": "PDU", "regularizer_params": {"epsilon": 0.0, "dual_step": 5.0}},
            "train": {"learning_rate": 1e-2, "max_steps": 4, "batch_size": 2, "gradient_accumulation_steps": 1,
                      "warmup_epochs": 0.0, "seed": 0, "save_strategy": "steps", "save_steps": 2},
            "eval": {"enabled": False}})

    full = unlearn(cfg("full"))
    original = UnlearningTrainer.training_step

    def interrupt_after_two(self, *a, **kw):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(UnlearningTrainer, "training_step", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        unlearn(cfg("cut"))
    saved = json.loads((tmp_path / "cut.partial" / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    dual = saved["stateful_callbacks"]["TermStates"]["attributes"]["values"]["regularizer"]["value"]
    assert dual > 1.0 + 1e-6, dual   # λ moved from 1 in two steps (η = 5, retain NLL > 0)
    monkeypatch.setattr(UnlearningTrainer, "training_step", original)
    resumed = unlearn(cfg("cut"), resume=True)
    w_full = load_file(str(full.model_dir / "model.safetensors"))
    w_res = load_file(str(resumed.model_dir / "model.safetensors"))
    for k in w_full:
        torch.testing.assert_close(w_full[k], w_res[k], rtol=1e-5, atol=1e-6)
