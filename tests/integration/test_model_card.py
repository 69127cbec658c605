"""Model cards of saved models and the terminal summary, end to end on the tiny model and synthetic data."""

from __future__ import annotations

import json

import pytest

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.cli import main
from obliviate.config import config_from_dict
from obliviate.data.loading import load_qa
from obliviate.reporting.model_card import read_card, rows_hash
from obliviate.reporting.summary import summary_metrics
from obliviate.training.run import finetune, unlearn

pytestmark = pytest.mark.integration

FAST = ["--max-new-tokens", "4", "--batch-size", "8", "--embedding-model", "none", "--nli-model", "none"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return generate_benchmark(authors=4, facts=3, seed=0, forget_authors=1).write(
        tmp_path_factory.mktemp("synth") / "bench")


def _unlearn(model, bench, out, *, evaluate: bool):
    cfg = config_from_dict("unlearn", {
        "output_dir": str(out), "model": {"name": str(model)},
        "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
        "method": {"name": "NPO+GD"}, "train": {"max_steps": 1, "batch_size": 2, "warmup_epochs": 0.0},
        "eval": {"enabled": evaluate, "max_new_tokens": 4, "embedding_model": None, "nli_model": None}})
    return unlearn(cfg).output_dir


def test_an_unlearned_model_carries_its_card_with_the_run_summary(tiny_model_dir, bench, tmp_path):
    run = _unlearn(tiny_model_dir, bench, tmp_path / "run", evaluate=True)
    meta = read_card(run / "model")
    info = meta["obliviate"]
    assert info["kind"] == "unlearn" and info["base_model"] == str(tiny_model_dir) and "base_model" not in meta
    assert info["method"]["name"] == "NPO+GD" and info["method"]["beta"] == 0.1
    forget, retain = load_qa(bench / "forget.json"), load_qa(bench / "retain.json")
    assert info["data"]["forget"] == {"rows": len(forget), "rows_hash": rows_hash(forget)}
    assert info["data"]["retain"] == {"rows": len(retain), "rows_hash": rows_hash(retain)}
    assert set(info["data"]["files"]) == {str(bench / "forget.json"), str(bench / "retain.json")}
    run_json = json.loads((run / "run.json").read_text())
    assert info["prompt_format"] == run_json["prompt_format"]
    # Updated when the run's evaluation finished: the summary numbers of results.json.
    record = json.loads((run / "results.json").read_text())
    metrics = info["evaluation"]["metrics"]
    assert {k: v["value"] for k, v in metrics.items()} == {m["key"]: m["value"] for m in summary_metrics(record)}
    assert "| forget ROUGE-L ↓ |" in (run / "model" / "README.md").read_text()


def test_obliviate_eval_of_a_run_folder_fills_in_its_card(tiny_model_dir, bench, tmp_path, capsys):
    run = _unlearn(tiny_model_dir, bench, tmp_path / "run", evaluate=False)
    assert "Not evaluated yet." in (run / "model" / "README.md").read_text()
    assert "evaluation" not in read_card(run / "model")["obliviate"]
    assert main(["eval", "--model", str(run), "--benchmark", "synthetic", "--data", str(bench), *FAST]) == 0
    assert "model card updated" in capsys.readouterr().out
    evaluation = read_card(run / "model")["obliviate"]["evaluation"]
    assert evaluation["benchmark"] == "synthetic" and evaluation["results"] == "../results.json"
    assert "Not evaluated yet." not in (run / "model" / "README.md").read_text()


def test_a_fine_tuned_model_gets_a_card_too(tiny_model_dir, bench, tmp_path):
    cfg = config_from_dict("finetune", {"output_dir": str(tmp_path / "ft"), "model": {"name": str(tiny_model_dir)},
                                        "data": {"train": [str(bench / "retain.json")]},
                                        "train": {"max_steps": 1, "batch_size": 2, "warmup_epochs": 0.0}})
    model_dir = finetune(cfg).model_dir
    info = read_card(model_dir)["obliviate"]
    assert info["kind"] == "finetune" and info["data"]["train"]["rows"] == len(load_qa(bench / "retain.json"))


def test_report_prints_the_summary_and_the_full_table_on_request(tiny_model_dir, bench, tmp_path, capsys):
    run = _unlearn(tiny_model_dir, bench, tmp_path / "run", evaluate=True)
    html = tmp_path / "report.html"
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(html)]) == 0
    out = capsys.readouterr().out
    assert "| NPO+GD" in out and "forget ROUGE-L ↓" in out and "MU ↑" in out
    assert "forget Prob" not in out and "real_authors" not in out  # the full table's columns stay in the file
    assert f"Full table (every set × metric, with notes): {tmp_path / 'report.md'}" in out
    assert "forget Prob ↓" in (tmp_path / "report.md").read_text()
    assert main(["report", str(run), "--out", str(html), "--full"]) == 0
    out = capsys.readouterr().out
    assert "forget Prob ↓" in out and "real_authors ROUGE-L ↑" in out and "Full table" not in out
