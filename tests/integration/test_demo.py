"""The demo pipeline end to end on the tiny model: four evaluated models, the table, the report, reuse on rerun."""

from __future__ import annotations

import json

import pytest

from obliviate import demo
from obliviate.reporting.model_card import read_card

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_reuses_finished_steps(tiny_model_dir, tmp_path, capsys, monkeypatch):
    # Keep the tiny run short: fewer facts and tokens; the pipeline is what is under test.
    monkeypatch.setattr(demo, "FACTS", 3)
    monkeypatch.setattr(demo, "EVAL", {**demo.EVAL, "max_new_tokens": 6, "embedding_model": None, "nli_model": None})
    results = demo.run_demo(tmp_path / "demo", model=str(tiny_model_dir))
    out = capsys.readouterr().out
    assert set(results) == {"target", "retain", "ME+GD", "IDK+AP"}
    for name in ("ME+GD", "IDK+AP", "target"):
        fq = results[name]["aggregates"]["forget_quality"]
        assert fq["available"] is True and 0.0 <= fq["value"] <= 1.0  # against the demo's own retain model
    assert "| ME+GD" in out and "[forget] Q:" in out
    # The compact summary and where the full table is; the full table's other columns stay in the file.
    assert "forget ROUGE-L ↓" in out and "FQ ↑" in out and "forget Prob" not in out
    assert f"Full table (every set × metric, with notes): {tmp_path / 'demo' / 'report.md'}" in out
    assert "forget Prob ↓" in (tmp_path / "demo" / "report.md").read_text()
    # Every saved model carries its card, with the summary numbers once evaluated.
    for folder, kind in (("target", "finetune"), ("retain", "finetune"), ("me_gd", "unlearn"), ("idk_ap", "unlearn")):
        info = read_card(tmp_path / "demo" / folder / "model")["obliviate"]
        assert info["kind"] == kind and set(info["evaluation"]["metrics"]) >= {"forget.rouge_l", "model_utility"}
    fq = read_card(tmp_path / "demo" / "me_gd" / "model")["obliviate"]["evaluation"]["metrics"]["forget_quality"]
    assert fq["value"] == results["ME+GD"]["aggregates"]["forget_quality"]["value"]
    # The demo's synthetic benchmark has holdout authors: every model gets a privacy section, the unlearned
    # ones against the demo's retain model (its AUC as each AUC's reference), and intervals beside the values.
    for name in ("ME+GD", "IDK+AP", "target"):
        privacy = results[name]["privacy"]
        assert privacy["available"] is True and privacy["holdout"]["source"].endswith("holdout_perturbed.json")
        auc = privacy["metrics"]["auc_min_k"]
        assert 0.0 <= auc["value"] <= 1.0 and auc["reference"] is not None and auc["ci"][0] <= auc["ci"][1]
        leak = privacy["metrics"]["privacy_leakage"]
        assert leak["value"] is not None or "AUC is 1" in leak["reason"]
        assert "ci" in results[name]["aggregates"]["forget_quality"]
    report_md = (tmp_path / "demo" / "report.md").read_text()
    assert "### Privacy and memorisation" in report_md and "### 95 % confidence intervals" in report_md
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "IDK+AP" in html and "<svg" in html
    stamp = (tmp_path / "demo" / "me_gd" / "results.json").stat().st_mtime_ns

    demo.run_demo(tmp_path / "demo", model=str(tiny_model_dir), full=True)
    out = capsys.readouterr().out
    assert out.count("reusing") >= 4
    assert "forget Prob ↓" in out and "Full table" not in out  # full=True prints the whole table
    assert (tmp_path / "demo" / "me_gd" / "results.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "demo" / "me_gd" / "run.json").read_text())["status"] == "complete"
