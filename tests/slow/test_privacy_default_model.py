"""Privacy attacks, memorisation and intervals with the real default model (SmolLM2-135M-Instruct) on the CPU.

The built-in model was fine-tuned on neither the synthetic forget set nor its holdout set: to it both are unseen
text of the same kind, so no attack can tell them apart beyond the noise of a small sample — every AUC's 95 %
interval holds 0.5. Run with ``pytest -m slow tests/slow``.
"""

from __future__ import annotations

import json

import pytest

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.cli import main
from obliviate.models import ensure_default_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("only_when_selected")]



def test_default_model_privacy_section(tmp_path) -> None:
    model = ensure_default_model()
    bench = generate_benchmark(authors=10, facts=3, seed=0, forget_authors=3, holdout_authors=3).write(
        tmp_path / "bench")
    out = tmp_path / "r" / "results.json"
    assert main(["eval", "--model", str(model), "--benchmark", "synthetic", "--data", str(bench), "--out", str(out),
                 "--max-new-tokens", "24", "--embedding-model", "none", "--nli-model", "none"]) == 0
    record = json.loads(out.read_text())
    privacy = record["privacy"]
    assert privacy["available"] and len(privacy["items"]["forget"]) == len(privacy["items"]["holdout"]) == 9
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"):
        entry = privacy["metrics"][f"auc_{attack}"]
        assert entry["ci"][0] <= 0.5 <= entry["ci"][1], (attack, entry)
    for name in ("forget", "retain"):
        em = record["sets"][name]["metrics"]["exact_memorization"]
        assert 0.0 <= em["ci"][0] <= em["value"] <= em["ci"][1] <= 1.0
