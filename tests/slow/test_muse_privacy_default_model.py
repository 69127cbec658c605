"""MUSE's privacy leakage with the real default model (SmolLM2-135M-Instruct) on the CPU, on the shipped example.

The model is its own retain model here: every attack then sees the forget texts exactly as the reference does,
so every defined leakage is 0 and the reference attack's scores (the model's loss minus its own) are 0. Run with
``pytest -m slow tests/slow``.
"""

from __future__ import annotations

import json
import math

import pytest

from obliviate.benchmarks import muse
from obliviate.cli import main
from obliviate.models import ensure_default_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("only_when_selected")]



def test_default_model_muse_privacy_against_itself(tmp_path) -> None:
    model = ensure_default_model()
    base = ["eval", "--model", str(model), "--benchmark", "muse", "--data", str(muse.EXAMPLE_DIR), "--batch-size", "6"]
    first, second = tmp_path / "a" / "results.json", tmp_path / "b" / "results.json"
    assert main([*base, "--out", str(first)]) == 0
    assert main([*base, "--out", str(second), "--retain-results", str(first)]) == 0
    privacy = json.loads(second.read_text())["privacy"]
    assert privacy["available"] and privacy["retain_source"] == str(first)
    assert privacy["max_length"] == muse.PRIVLEAK_MAX_LENGTH     # SmolLM2 has 8192 positions
    m = privacy["metrics"]
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"):
        value = m[f"auc_{attack}"]["value"]
        assert math.isfinite(value) and 0.0 <= value <= 1.0
        assert value == pytest.approx(m[f"auc_{attack}"]["reference"], abs=1e-12)
        if m[f"auc_{attack}"]["reference"] < 1.0:
            assert m[f"privacy_leakage_{attack}"]["value"] == pytest.approx(0.0, abs=1e-9)
    # The reference attack's score is the model's LOSS score minus its own: 0 up to float32 matmul rounding (the
    # CPU BLAS may pick other kernels in another process), so its AUC is not asserted.
    for split in ("forget", "holdout"):
        assert all(abs(it["reference"]) < 1e-5 for it in privacy["items"][split])
    assert m["privacy_leakage"]["value"] == pytest.approx(0.0, abs=1e-9)
