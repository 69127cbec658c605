"""bench/gpu_check.py --tiny: the GPU check's code runs end to end on the CPU, so it cannot rot before a GPU."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def test_gpu_check_tiny_runs_every_measurement(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "check.json"
    assert module.main(["--tiny", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    runs = {(r["model"], r["method"], r["tuning"]): r for r in record["training"]}
    expected = {(m, method, t) for m in ("1b", "8b") for method in ("ME+GD", "IDK+AP", "NPO+KL")
                for t in ("full", "lora") if not (m == "8b" and t == "full" and method != "ME+GD")}
    assert set(runs) == expected
    for r in runs.values():
        assert r["timed_steps"] == 1 and r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["loss_finite"]
        assert r["mfu"] is None  # no known peak FLOP/s for a CPU
        assert r["flops_per_token"] == (4 if r["tuning"] == "lora" else 6) * r["parameters"]
        assert r["estimate_gib"] > 0
        if r["tuning"] == "lora":
            assert r["trainable_parameters"] < r["parameters"] / 5
    fit = record["fit_check"]
    assert fit["longest_sequence"] == 192 and fit["batch_per_part"] == 4 and fit["loss_finite"]
    assert [e["model"] for e in record["evaluation"]] == ["1b", "8b"]
    assert all(e["items"] == 4 and e["items_per_s"] > 0 and math.isfinite(e["seconds"]) for e in record["evaluation"])
    printed = capsys.readouterr().out
    assert "fit check (8B LoRA ME+GD" in printed and "evaluation 8b" in printed


def test_known_cards_have_their_peak():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert module.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert module.peak_flops("NVIDIA H200") == 989e12
    assert module.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert module.peak_flops("NVIDIA L40S") == 362e12 and module.peak_flops("NVIDIA L4") == 121e12
    assert module.peak_flops("Some Future Card") is None
