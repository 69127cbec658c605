"""The open objective interface: term parameters (types, ranges, did-you-mean), the method-level keys that set the
paper's terms as before, the order in which defaults apply, declarations checked at registration, term state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from obliviate.errors import ConfigError
from obliviate.objectives import (ObjectiveParams, TermRegistry, build_params, describe_params, new_states, param,
                                  resolve_method, term_params)
from obliviate.objectives.registry import coerce_params
from obliviate.objectives.terms import BetaParams, MEParams
from obliviate.training.trainer import TermStates, TrainingObjective


@dataclass(frozen=True)
class Example:
    rate: float = param(0.5, gt=0, le=1, doc="a rate")
    steps: int = param(3, ge=1, doc="a count")
    mode: str = param("fast", choices=("fast", "exact"), doc="a choice")
    flag: bool = param(False, doc="a switch")
    blocks: tuple[int, ...] = param((), doc="some blocks")


def test_build_params_converts_and_checks_every_field():
    p, errors = build_params(Example, {"rate": 1, "steps": 2, "mode": "exact", "flag": True, "blocks": [4, 5]}, "m.p")
    assert errors == [] and p == Example(rate=1.0, steps=2, mode="exact", flag=True, blocks=(4, 5))
    assert isinstance(p.rate, float)
    _, errors = build_params(Example, {"rate": 0, "steps": 1.5, "mode": "exakt", "flag": "yes", "blocks": [1, "x"],
                                       "rte": 0.1}, "m.p")
    assert errors == [
        "m.p.rate: must be > 0 and <= 1, got 0.0",
        "m.p.steps: expected an integer, got 1.5",
        "m.p.mode: 'exakt' is not one of fast, exact (did you mean 'exact'?)",
        "m.p.flag: expected true or false, got 'yes'",
        "m.p.blocks: expected a list of integers, got [1, 'x']",
        "m.p.rte: unknown parameter (did you mean 'm.p.rate'?); valid parameters: rate, steps, mode, flag, blocks",
    ]
    _, errors = build_params(Example, {"rate": float("nan")}, "m.p")
    assert errors == ["m.p.rate: must be a finite number, got nan"]


def test_describe_params_lists_defaults_and_ranges():
    assert describe_params(Example) == [
        "rate (float, default 0.5, > 0 and <= 1): a rate",
        "steps (int, default 3, >= 1): a count",
        "mode (str, default 'fast', one of fast, exact): a choice",
        "flag (bool, default False, any): a switch",
        "blocks (list of int, default [], any): some blocks",
    ]


def test_method_level_keys_set_the_papers_terms_as_before():
    """method.beta is β of NPO, DPO and AP; method.me_direction ME's direction; a term's own mapping wins."""
    fp, rp, errors = term_params("npo", "ap", shared=ObjectiveParams(beta=0.3))
    assert errors == [] and fp == BetaParams(beta=0.3) and rp == BetaParams(beta=0.3)
    fp, _, _ = term_params("me", "gd", shared=ObjectiveParams(me_direction="model_to_uniform"))
    assert fp == MEParams(me_direction="model_to_uniform")
    fp, _, _ = term_params("npo", "gd", shared=ObjectiveParams(beta=0.3), forget_params={"beta": 0.9})
    assert fp == BetaParams(beta=0.9)
    assert coerce_params(BetaParams, ObjectiveParams(beta=0.2, me_direction="model_to_uniform")) == BetaParams(0.2)
    assert coerce_params(MEParams, None) == MEParams()


def test_defaults_apply_in_order():
    """Term class default < named method's default < the user's value."""
    m = dataclasses.replace(resolve_method("SimNPO"), forget_params={"beta": 4.0})
    fp, _, _ = term_params(m.forget, m.regularizer)
    assert (fp.beta, fp.gamma) == (2.5, 0.0)
    fp, _, _ = term_params(m.forget, m.regularizer, method=m)
    assert (fp.beta, fp.gamma) == (4.0, 0.0)
    fp, _, _ = term_params(m.forget, m.regularizer, method=m, forget_params={"gamma": 0.4})
    assert (fp.beta, fp.gamma) == (4.0, 0.4)
    _, _, errors = term_params(m.forget, m.regularizer, method=m, regularizer_params={"beta": 1})
    assert errors == ["method.regularizer_params.beta: unknown parameter; valid parameters: none (this term has no "
                      "parameters)"]
    _, _, errors = term_params(m.forget, m.regularizer, method=m, forget_params=[1, 2])
    assert errors == ["method.forget_params: expected a mapping of simnpo's parameters, got [1, 2]"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(needs={"forget"}, hidden={"forget"}), "hidden_layers go together"),
    (dict(needs={"forget"}, hidden_layers=lambda p: (1,)), "hidden_layers go together"),
    (dict(needs={"forget"}, ref_hidden={"retain"}, hidden_layers=lambda p: (1,)), "not the fields themselves"),
    (dict(needs={"forget"}, params=dict), "params must be a dataclass"),
])
def test_registration_checks_declarations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TermRegistry("forget term").register("t", description="", paper="", **kwargs)


def test_training_objective_asks_the_terms():
    """What the trainer computes comes from the terms: RMU reads block 7's states (policy on forget and retain, the
    frozen model's on retain) and trains block 5-7 MLPs; NPO+GD reads none, trains everything, runs no frozen model
    per step; PDU carries a state."""
    rmu = TrainingObjective(forget="rmu", regularizer="rmu_retain")
    assert rmu.layers == (7,) and rmu.hidden_parts == {"forget", "retain"} and rmu.ref_hidden_parts == {"retain"}
    assert rmu.reads_reference_each_step and rmu.needs_reference
    keep = rmu.trainable()
    assert keep("model.layers.6.mlp.up_proj.weight") and not keep("model.layers.6.self_attn.o_proj.weight")
    npo = TrainingObjective(forget="npo", regularizer="gd")
    assert npo.layers == () and npo.trainable() is None and not npo.reads_reference_each_step
    assert set(new_states("lmf", "pdu")) == {"regularizer"} and new_states("npo", "gd") == {}


def test_term_states_round_trip_through_the_engine_state():
    """TermStates exports the states as the engine saves them in trainer_state.json and loads them back at train
    begin (what resuming from a checkpoint does)."""
    from transformers import TrainerState

    states = new_states("lmf", "pdu")
    states["regularizer"].value, states["regularizer"].step_size, states["regularizer"].pending = 3.5, 2.0, [0.25]
    saved = TrainerState(stateful_callbacks=[TermStates(states)]).stateful_callbacks
    fresh = new_states("lmf", "pdu")
    TermStates(fresh).on_train_begin(None, TrainerState(stateful_callbacks=saved), None)
    assert fresh["regularizer"].state_dict() == states["regularizer"].state_dict()
    TermStates(fresh).on_step_end(None, None, None)     # λ ← 3.5 + 2.0 · 0.25 after the optimizer step
    assert fresh["regularizer"].value == pytest.approx(4.0) and fresh["regularizer"].pending == []


def test_config_time_errors_for_the_method_level_keys():
    from obliviate.config import config_from_dict

    base = {"data": {"forget": "f.json"}, "output_dir": "/tmp/obliviate-test-params"}
    with pytest.raises(ConfigError, match="method.me_direction: WGA\\+GD does not read it"):
        config_from_dict("unlearn", base, ["method.name=WGA", "method.me_direction=model_to_uniform"])
    cfg = config_from_dict("unlearn", base, ["method.name=NPO+GD", "method.beta=0.3"])
    assert cfg.method.beta == 0.3


def test_hidden_states_of_the_asked_blocks_only(tmp_path):
    """forward_parts hooks exactly the blocks asked for and returns each part's (B, T, H) states at those blocks,
    equal to the model's own output_hidden_states (block ℓ's output is hidden_states[ℓ + 1], except for the last
    block, whose entry there has the final norm applied), 0 past each end; found through a DDP wrapper too."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    from obliviate.forward import capture_layers, decoder_layers, forward_parts, inspect_model
    from obliviate.testing import make_tiny_llama

    model = AutoModelForCausalLM.from_pretrained(make_tiny_llama(tmp_path / "m"), dtype=torch.float64).eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    att = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    labels = torch.tensor([[-100, 6, 7, 8], [-100, 10, -100, -100]])
    inputs = {"forget": {"input_ids": ids, "attention_mask": att, "labels": labels}}
    info = inspect_model(model)
    blocks = decoder_layers(model)
    with capture_layers(model, (0,)):
        assert [len(b._forward_hooks) for b in blocks] == [1, 0]     # a hook on the asked block only
    assert [len(b._forward_hooks) for b in blocks] == [0, 0]         # and removed afterwards
    hidden: dict = {}
    with torch.no_grad():
        forward_parts(model, inputs, ("forget",), split=info.split, pad_token_id=0, pack=info.packs, layers=(0,),
                      hidden_out=hidden)
        full = [model(input_ids=ids[i:i + 1, :n], output_hidden_states=True).hidden_states[1][0]
                for i, n in enumerate((4, 2))]
    h = hidden["forget"][0]
    assert set(hidden["forget"]) == {0} and h.shape == (2, 4, 32)
    torch.testing.assert_close(h[0], full[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h[1, :2], full[1], rtol=1e-9, atol=1e-9)
    assert h[1, 2:].abs().sum() == 0

    class DistributedDataParallel(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert decoder_layers(DistributedDataParallel(model)) is decoder_layers(model)
