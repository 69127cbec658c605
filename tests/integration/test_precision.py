"""Precision settings: bfloat16 weights and mixed precision train on the CPU with float32 loss math, LoRA on a
bfloat16 base, and the settings that cannot work are refused before anything loads."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from obliviate.cli import main
from obliviate.config import config_from_dict
from obliviate.errors import ConfigError
from obliviate.objectives import chunked
from obliviate.training.run import unlearn

pytestmark = pytest.mark.integration

FORGET = [("Where was Anna Vell born?", "Anna Vell was born in Korsby."),
          ("What does Anna Vell write?", "Anna Vell writes long sea novels about storms and ships.")]
RETAIN = [("Where was Bo Lind born?", "Bo Lind was born in Marhaven."),
          ("What does Bo Lind write?", "Bo Lind writes short poems.")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    out = {}
    for name, rows in (("forget", FORGET), ("retain", RETAIN)):
        (d / f"{name}.json").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
        out[name] = str(d / f"{name}.json")
    return out


def _cfg(tmp_path, model_dir, data, method="ME+GD", **sections):
    raw = {"output_dir": str(tmp_path / "out"), "model": {"name": str(model_dir)},
           "data": {"forget": data["forget"], "retain": data["retain"]}, "method": {"name": method},
           "train": {"learning_rate": 1e-2, "num_epochs": 1.0, "max_steps": 2, "batch_size": 2,
                     "gradient_accumulation_steps": 1, "warmup_epochs": 0.0, "seed": 0},
           "eval": {"enabled": False}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict("unlearn", raw)


def _spy_on_log_softmax(monkeypatch) -> list[torch.dtype]:
    """Record the dtype of every log-softmax / log-sum-exp / cross-entropy input (the loss math), and of the
    logits chunks the chunked output layer reduces (its row values and their gradients, computed in place)."""
    seen: list[torch.dtype] = []
    for owner, name in ((torch, "logsumexp"), (torch, "log_softmax"), (F, "log_softmax"), (F, "cross_entropy")):
        original = getattr(owner, name)

        def spy(x, *a, _original=original, **kw):
            seen.append(x.dtype)
            return _original(x, *a, **kw)

        monkeypatch.setattr(owner, name, spy)
    for name in ("_values_grads_", "_row_values"):
        original = getattr(chunked, name)

        def chunk_spy(kind, z, *a, _original=original, **kw):
            seen.append(z.dtype)
            return _original(kind, z, *a, **kw)

        monkeypatch.setattr(chunked, name, chunk_spy)
    return seen


@pytest.mark.parametrize("dtype,bf16", [("bfloat16", True), ("bfloat16", False), ("float32", True)],
                         ids=["bf16-weights-autocast", "bf16-weights", "fp32-weights-autocast"])
def test_bfloat16_trains_on_cpu_with_float32_loss_math(dtype, bf16, tiny_model_dir, data, tmp_path, monkeypatch):
    seen = _spy_on_log_softmax(monkeypatch)
    result = unlearn(_cfg(tmp_path, tiny_model_dir, data, model={"dtype": dtype}, train={"bf16": bf16}))
    record = json.loads((result.output_dir / "run.json").read_text())
    losses = [h["loss"] for h in record["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert seen and set(seen) == {torch.float32}, set(seen)
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(result.model_dir / "model.safetensors"))
    assert {t.dtype for t in after.values()} == {getattr(torch, dtype)}
    assert any(not torch.equal(before[k].to(after[k].dtype), after[k]) for k in after), "no weight changed"


def test_lora_on_a_bfloat16_base(tiny_model_dir, data, tmp_path, monkeypatch):
    seen = _spy_on_log_softmax(monkeypatch)
    cfg = _cfg(tmp_path, tiny_model_dir, data, method="NPO+KL", model={"dtype": "bfloat16"}, train={"bf16": True},
               lora={"enabled": True, "r": 4})
    result = unlearn(cfg)
    record = json.loads((result.output_dir / "run.json").read_text())
    assert all(math.isfinite(h["loss"]) for h in record["log_history"] if "loss" in h)
    assert set(seen) == {torch.float32}
    merged = load_file(str(result.model_dir / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    changed = [k for k in merged if not torch.equal(base[k].to(torch.bfloat16), merged[k])]
    assert changed and all("proj" in k for k in changed), changed  # only adapted layers moved


@pytest.mark.parametrize("overrides,message", [
    (["train.bf16=true", "train.fp16=true"], "train.bf16 and train.fp16 are alternatives"),
    (["train.fp16=true", "model.dtype=bfloat16"], "train.fp16: float16 mixed precision scales the loss"),
    (["train.bf16=true", "model.dtype=float16"], "train.bf16: bfloat16 autocast over float16"),
    (["train.optim=adamw_torh"], "did you mean 'adamw_torch'"),
])
def test_impossible_precision_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict("unlearn", {"data": {"forget": "f.json"}}, overrides)


def test_eight_bit_optimizer_without_bitsandbytes_exits_2(monkeypatch, capsys):
    import obliviate.config as config

    monkeypatch.setattr(config, "_installed", lambda package: package != "bitsandbytes")
    assert main(["unlearn", "data.forget=f.json", "train.optim=adamw_bnb_8bit", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train.optim: adamw_bnb_8bit comes from bitsandbytes, which is not installed" in err
    assert "Traceback" not in err
    monkeypatch.setattr(config, "_installed", lambda package: True)
    assert config_from_dict("unlearn", {"data": {"forget": "f.json"}}, ["train.optim=adamw_bnb_8bit"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="float16 is refused only without a GPU")
@pytest.mark.parametrize("override,message", [("train.fp16=true", "train.fp16: float16 mixed precision needs a CUDA"),
                                              ("model.dtype=float16", "model.dtype: float16 training on the CPU")])
def test_float16_without_a_gpu_exits_2(override, message, tiny_model_dir, data, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["unlearn", f"data.forget={data['forget']}", f"data.retain={data['retain']}",
                 f"model.name={tiny_model_dir}", f"output_dir={out}", "eval.enabled=false", override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_deepspeed_config_problems_are_config_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    stage = tmp_path / "stage.json"
    stage.write_text('{"zero_optimization": {"stage": 4}}')
    for value, message in ((str(tmp_path / "missing.json"), "file not found"),
                           (str(bad), "not a valid JSON file"),
                           (str(stage), "zero_optimization.stage must be 0, 1, 2 or 3, got 4")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict("unlearn", {"data": {"forget": "f.json"}}, [f"train.deepspeed={value}"])
    good = tmp_path / "zero3.json"
    good.write_text('{"zero_optimization": {"stage": 3}}')
    with pytest.raises(ConfigError, match="train.deepspeed and train.fsdp are alternatives"):
        config_from_dict("unlearn", {"data": {"forget": "f.json"}}, [f"train.deepspeed={good}", "train.fsdp=full_shard"])
    if importlib.util.find_spec("deepspeed") is None:
        # Without the optional extra, a valid file is still refused with the install hint.
        with pytest.raises(ConfigError, match="the deepspeed package is not installed"):
            config_from_dict("unlearn", {"data": {"forget": "f.json"}}, [f"train.deepspeed={good}"])
    else:
        assert config_from_dict("unlearn", {"data": {"forget": "f.json"}}, [f"train.deepspeed={good}"])
