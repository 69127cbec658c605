"""The real-world scenario end to end on a tiny random model: evaluation against golden answers, the
entailment direction, and an unlearning run from the shipped CPU config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.benchmarks.real_world import load_real_world, real_world_aggregates, real_world_benchmark, write_example
from obliviate.config import load_config
from obliviate.evaluation import suite
from obliviate.evaluation.runner import evaluate
from obliviate.evaluation.scorers import Unavailable
from obliviate.evaluation.suite import EvalSettings, Scorers
from obliviate.training.run import unlearn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_example(tmp_path_factory.mktemp("real_world") / "data")


class RecordingNLI:
    """Stands in for the NLI model: records each (premises, hypotheses) call and calls every pair entailed."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def entails(self, premises, hypotheses, batch_size: int = 16) -> list[bool]:
        self.calls.append((list(premises), list(hypotheses)))
        return [True] * len(premises)


@pytest.fixture
def golden_generations(monkeypatch, folder):
    """Make the model "answer" every question with its golden answer, so that ROUGE tells which text it is
    compared with: recall 1 against the golden answer, well below 1 against the longer full answer."""
    s = load_real_world(folder)
    golden = {r.question: r.golden_answer for r in s.forget_eval + s.neighbor_eval}

    def fake_generate(model, formatter, questions, **kwargs):
        return [golden[q] for q in questions]

    monkeypatch.setattr(suite, "generate_answers", fake_generate)
    return golden


def _settings(**kw) -> EvalSettings:
    return EvalSettings(max_new_tokens=4, batch_size=16, embedding_model=None, nli_model=None, **kw)


def test_rouge_and_references_use_the_golden_answer(tiny_model_dir, folder, tmp_path, golden_generations):
    s = load_real_world(folder)
    record = evaluate(str(tiny_model_dir), real_world_benchmark(folder), tmp_path / "results.json",
                      settings=_settings(), dtype="float32")
    assert set(record["sets"]) == {"forget", "neighbor"}
    assert record["sets"]["forget"]["kind"] == "forget" and record["sets"]["neighbor"]["kind"] == "retain"
    for name, rows in (("forget", s.forget_eval), ("neighbor", s.neighbor_eval)):
        items = record["sets"][name]["items"]
        assert [it["reference"] for it in items] == [r.golden_answer for r in rows]
        assert [it["generation"] for it in items] == [r.golden_answer for r in rows]
        # Generation == golden answer → recall 1; against the full answer it would be far lower.
        assert all(it["rouge_l"] == pytest.approx(1.0) for it in items), name
        assert all(isinstance(it["truth_ratio_x"], float) for it in items)
    assert record["benchmark"]["name"] == "real_world" and record["settings"]["real_world"] is True
    assert set(record["data_hashes"]) == {"forget.json", "neighbor.json", "forget_perturbed.json",
                                          "neighbor_perturbed.json"}
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["sets"]["neighbor"]["items"][0]["reference"] == s.neighbor_eval[0].golden_answer


def test_generation_is_the_entailment_premise_on_both_sets(tiny_model_dir, folder, tmp_path, golden_generations):
    """docs/metrics.md: in the real-world scenario premise = generation, hypothesis = reference on every set (on TOFU's
    retain set it is the other way round). The settings say real_world=False: the benchmark turns it on."""
    s = load_real_world(folder)
    nli = RecordingNLI()
    scorers = Scorers(embedder=Unavailable("no embedding model in this test"), nli=nli)
    record = evaluate(str(tiny_model_dir), real_world_benchmark(folder), tmp_path / "results.json",
                      settings=_settings(real_world=False), dtype="float32", scorers=scorers)
    assert len(nli.calls) == 2
    by_premises = {tuple(p): h for p, h in nli.calls}
    for name, rows in (("forget", s.forget_eval), ("neighbor", s.neighbor_eval)):
        generations = tuple(it["generation"] for it in record["sets"][name]["items"])
        assert generations in by_premises, f"{name}: the generations were not the premises"
        # The hypothesis is the golden answer, the reference of every real-world metric (docs/real_world.md).
        assert by_premises[generations] == [r.golden_answer for r in rows]
        # Every pair entailed and ROUGE-L ≥ 0.1 → entailment score 1 on both sets.
        assert record["sets"][name]["metrics"]["entailment"]["value"] == pytest.approx(1.0)


def test_unlearning_from_the_cpu_config_evaluates_forget_and_neighbour_sets(tiny_model_dir, folder, tmp_path):
    """configs/real_world/cpu_me_gd.yaml on the tiny model: one optimizer step, then evaluation of both sets."""
    cfg = load_config("unlearn", ROOT / "configs" / "real_world" / "cpu_me_gd.yaml", [
        f"model.name={tiny_model_dir}", f"data.forget={folder / 'forget.json'}",
        f"data.retain={folder / 'neighbor.json'}", f"output_dir={tmp_path / 'run'}", "train.max_steps=1",
        "train.warmup_epochs=0", "eval.max_new_tokens=4", "eval.embedding_model=null", "eval.nli_model=null"])
    result = unlearn(cfg, benchmark=real_world_benchmark(folder))
    run = json.loads((result.output_dir / "run.json").read_text())
    assert run["status"] == "complete" and run["optimizer_steps"] == 1
    assert run["method"]["name"] == "ME+GD" and run["method"]["forget_coeff"] == 0.5 and run["method"]["mask"] is False
    assert (run["forget_items"], run["retain_items"]) == (12, 24)
    record = json.loads((result.output_dir / "results.json").read_text())
    assert {name: (s["kind"], s["size"]) for name, s in record["sets"].items()} == {
        "forget": ("forget", 12), "neighbor": ("retain", 24)}
    assert record["benchmark"]["forget_people"] == ["Marie Curie", "Charles Darwin", "Jane Austen"]
    assert record["settings"]["real_world"] is True and record["run"]["method"] == "ME+GD"
    aggregates = real_world_aggregates(record["sets"])
    # The record carries the real-world aggregates, not TOFU's, each with its bootstrap interval beside it.
    assert {k: {f: v for f, v in a.items() if f != "ci"} for k, a in record["aggregates"].items()} == aggregates
    assert record["aggregates"]["forget_efficacy"]["ci"][0] <= aggregates["forget_efficacy"]["value"] \
        <= record["aggregates"]["forget_efficacy"]["ci"][1]
    # No embedding or NLI model: four of the six neighbour numbers, three of five forget numbers.
    assert aggregates["model_utility"]["available"] and aggregates["model_utility"]["partial"]
    assert set(aggregates["model_utility"]["missing"]) == {"neighbor.cosine_similarity", "neighbor.entailment"}
    assert 0.0 <= aggregates["forget_efficacy"]["value"] <= 1.0
    assert aggregates["forget_quality"]["available"] is False


def test_the_paper_config_runs_on_a_folder_in_the_published_layout(tiny_model_dir, folder, tmp_path, capsys):
    """`obliviate unlearn -c configs/real_world/me_gd.yaml data.forget=… data.retain=…` on a folder in the paper's
    layout, made CPU-sized by overrides, then `obliviate report`: training reads forget.json and neighbor.json,
    evaluation the forget rows and the held-out neighbours (none of the people trained on), with golden answers."""
    from obliviate.cli import main

    run = tmp_path / "me_gd"
    assert main(["unlearn", "-c", str(ROOT / "configs" / "real_world" / "me_gd.yaml"),
                 f"data.forget={folder / 'forget.json'}", f"data.retain={folder / 'neighbor.json'}",
                 f"model.name={tiny_model_dir}", "model.template=chat", "model.dtype=float32", f"output_dir={run}",
                 "train.max_steps=2", "train.gradient_accumulation_steps=1", "train.warmup_epochs=0",
                 "eval.max_new_tokens=4", "eval.embedding_model=null", "eval.nli_model=null"]) == 0
    s = load_real_world(folder)
    training = json.loads((run / "run.json").read_text())
    assert training["status"] == "complete" and training["optimizer_steps"] == 2
    assert (training["forget_items"], training["retain_items"]) == (12, 24)
    assert training["method"]["name"] == "ME+GD" and training["method"]["forget_coeff"] == 0.5
    record = json.loads((run / "results.json").read_text())
    bench = record["benchmark"]
    assert bench["neighbor_layout"] == "held_out"
    assert bench["neighbor_people"] == s.neighbor_people and bench["neighbor_eval_people"] == s.neighbor_eval_people
    assert not set(bench["neighbor_people"]) & set(bench["neighbor_eval_people"])
    neighbor_items = record["sets"]["neighbor"]["items"]
    assert [it["question"] for it in neighbor_items] == [r.question for r in s.neighbor_eval]
    assert [it["reference"] for it in neighbor_items] == [r.golden_answer for r in s.neighbor_eval]
    assert [it["reference"] for it in record["sets"]["forget"]["items"]] == [r.golden_answer for r in s.forget_eval]
    mu = record["aggregates"]["model_utility"]
    assert mu["available"] and mu["partial"] and set(mu["missing"]) == {"neighbor.cosine_similarity",
                                                                         "neighbor.entailment"}
    assert record["aggregates"]["forget_quality"]["available"] is False

    report = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(report)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "| ME+GD |" in markdown and "neighbor ROUGE-L ↑" in markdown and "forget ROUGE-L ↓" in markdown
    assert "ME+GD" in report.read_text() and "report written to" in capsys.readouterr().out
