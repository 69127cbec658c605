"""`obliviate eval` and evaluation at the end of unlearning, end to end on a tiny model and synthetic data."""

from __future__ import annotations

import json

import pytest

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.cli import main
from obliviate.config import config_from_dict
from obliviate.training.run import unlearn

pytestmark = pytest.mark.integration

FAST = ["--max-new-tokens", "8", "--batch-size", "8", "--embedding-model", "none"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return generate_benchmark(authors=4, facts=3, seed=0, forget_authors=1).write(
        tmp_path_factory.mktemp("synth") / "bench")


def _eval(model, bench, out, *extra):
    return main(["eval", "--model", str(model), "--benchmark", "synthetic", "--data", str(bench), "--out", str(out),
                 "--nli-model", str(out.parent / "no-such-nli"), *FAST, *extra])


def test_eval_writes_a_self_describing_record(tiny_model_dir, bench, tmp_path, capsys):
    out = tmp_path / "a" / "results.json"
    assert _eval(tiny_model_dir, bench, out) == 0
    r = json.loads(out.read_text())
    assert r["schema_version"] == 1
    assert set(r["sets"]) == {"forget", "retain", "real_authors", "world_facts"}
    assert r["sets"]["forget"]["size"] == 3 and r["sets"]["retain"]["size"] == 9
    assert set(r["data_hashes"]) == {"forget_perturbed.json", "retain_perturbed.json",
                                     "real_authors_perturbed.json", "world_facts_perturbed.json"}
    assert all(h.startswith("sha256:") for h in r["data_hashes"].values())
    assert r["environment"]["torch"] and r["benchmark"]["name"] == "synthetic"
    forget, retain = r["sets"]["forget"]["metrics"], r["sets"]["retain"]["metrics"]
    # Directions: less knowledge is better on the forget set, more elsewhere; entropy always higher-is-better.
    assert forget["rouge_l"]["higher_is_better"] is False and retain["rouge_l"]["higher_is_better"] is True
    assert forget["token_entropy"]["higher_is_better"] is True
    # Unavailable helper models are reported with their reasons, never as made-up numbers.
    assert forget["entailment"]["value"] is None and "no-such-nli" in forget["entailment"]["reason"]
    assert forget["cosine_similarity"]["value"] is None and forget["cosine_similarity"]["reason"]
    fq = r["aggregates"]["forget_quality"]
    assert fq["value"] is None and fq["available"] is False and "retain" in fq["reason"]
    mu = r["aggregates"]["model_utility"]
    assert mu["partial"] is True and "retain.entailment" in mu["missing"]
    items = r["sets"]["forget"]["items"]
    assert len(items) == 3 and all(isinstance(it["truth_ratio_x"], float) for it in items)
    assert "results written to" in capsys.readouterr().out


def test_forget_quality_from_retain_results(tiny_model_dir, bench, tmp_path):
    first = tmp_path / "first" / "results.json"
    assert _eval(tiny_model_dir, bench, first) == 0
    second = tmp_path / "second" / "results.json"
    # The same model as its own "retain model": identical truth-ratio samples, KS p-value 1.
    assert _eval(tiny_model_dir, bench, second, "--retain-results", str(first)) == 0
    fq = json.loads(second.read_text())["aggregates"]["forget_quality"]
    assert fq["available"] is True and fq["value"] == pytest.approx(1.0)


def test_retain_results_for_other_questions_is_a_clear_error(tiny_model_dir, bench, tmp_path, capsys):
    other = generate_benchmark(authors=4, facts=3, seed=7, forget_authors=1).write(tmp_path / "other")
    first = tmp_path / "first" / "results.json"
    assert _eval(tiny_model_dir, other, first) == 0
    second = tmp_path / "second" / "results.json"
    assert _eval(tiny_model_dir, bench, second, "--retain-results", str(first)) == 2
    assert "sets.forget.items" in capsys.readouterr().err
    assert not second.exists()


def test_unlearning_evaluates_at_the_end_and_every_epoch(tiny_model_dir, bench, tmp_path):
    cfg = config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "run"), "model": {"name": str(tiny_model_dir)},
        "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
        "method": {"name": "GA+GD"},
        "train": {"learning_rate": 1e-3, "num_epochs": 2.0, "batch_size": 3, "gradient_accumulation_steps": 1,
                  "warmup_epochs": 0.0},
        "eval": {"every_epoch": True, "max_new_tokens": 6, "embedding_model": None, "nli_model": None}})
    result = unlearn(cfg)
    r = json.loads((result.output_dir / "results.json").read_text())
    assert r["run"]["method"] == "GA+GD" and r["benchmark"]["name"] == "synthetic"
    assert r["sets"]["forget"]["metrics"]["entailment"]["reason"] == "no NLI model configured"
    epochs = sorted(p.name for p in (result.output_dir / "eval").iterdir())
    assert epochs == ["epoch_1.json", "epoch_2.json"]
    assert json.loads((result.output_dir / "eval" / "epoch_1.json").read_text())["sets"]["forget"]["size"] == 3


def test_eval_of_a_run_folder_writes_beside_it(tiny_model_dir, bench, tmp_path):
    cfg = config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "run"), "model": {"name": str(tiny_model_dir)},
        "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
        "method": {"name": "NPO"}, "train": {"max_steps": 1, "batch_size": 2, "warmup_epochs": 0.0},
        "eval": {"enabled": False}})
    run = unlearn(cfg).output_dir
    assert not (run / "results.json").exists()
    assert main(["eval", "--model", str(run), "--benchmark", "synthetic", "--data", str(bench),
                 "--nli-model", "none", *FAST]) == 0
    r = json.loads((run / "results.json").read_text())
    assert r["run"]["method"] == "NPO" and r["model"]["spec"].endswith("model")


def test_reevaluation_keeps_general_ability_of_the_same_model_only(tiny_model_dir, bench, tmp_path):
    out = tmp_path / "r" / "results.json"
    assert _eval(tiny_model_dir, bench, out) == 0
    record = json.loads(out.read_text())
    record["general_ability"] = {"tasks": {"arc_challenge": {"acc": {"value": 0.25}}}}
    out.write_text(json.dumps(record))
    assert _eval(tiny_model_dir, bench, out) == 0
    assert json.loads(out.read_text())["general_ability"]["tasks"]["arc_challenge"]["acc"]["value"] == 0.25
    # Another model written to the same file: the old model's scores do not describe it.
    other = tmp_path / "other-model"
    import shutil
    shutil.copytree(tiny_model_dir, other)
    assert _eval(other, bench, out) == 0
    assert "general_ability" not in json.loads(out.read_text())


def test_prompt_format_is_recorded_and_carries_over_to_a_later_eval(bench, tmp_path, monkeypatch):
    """A model whose chat template inserts SmolLM2's default system turn: training and evaluation run without it
    (the recorded example prompt has no system turn); a run with an explicit system prompt records it, and
    `obliviate eval` of that run folder evaluates with the run's prompt, as the questions it generates from show."""
    from obliviate.evaluation import suite
    from obliviate.testing import SMOLLM2_CHAT_TEMPLATE, SMOLLM2_DEFAULT_SYSTEM_PROMPT, make_tiny_llama

    model = make_tiny_llama(tmp_path / "smollm-like", chat_template=SMOLLM2_CHAT_TEMPLATE)
    prompts: list[str] = []
    real_generate = suite.generate_answers

    def recording_generate(model_, formatter, questions, **kwargs):
        prompts.extend(formatter.prompt_text(q) for q in questions)
        return real_generate(model_, formatter, questions, **kwargs)

    monkeypatch.setattr(suite, "generate_answers", recording_generate)

    def run(name: str, system_prompt: str | None, evaluate_now: bool):
        cfg = config_from_dict("unlearn", {
            "output_dir": str(tmp_path / name), "model": {"name": str(model), "system_prompt": system_prompt},
            "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
            "method": {"name": "GA+GD"}, "train": {"max_steps": 1, "batch_size": 2, "warmup_epochs": 0.0},
            "eval": {"enabled": evaluate_now, "max_new_tokens": 4, "embedding_model": None, "nli_model": None}})
        return unlearn(cfg).output_dir

    plain = run("plain", None, True)
    record = json.loads((plain / "results.json").read_text())
    example = record["prompt_format"]["example"]
    assert record["prompt_format"]["system_prompt"] is None
    assert record["prompt_format"]["template_default_system_prompt"] == SMOLLM2_DEFAULT_SYSTEM_PROMPT
    assert example.startswith("<|im_start|>user\n") and "SmolLM" not in example
    assert json.loads((plain / "run.json").read_text())["prompt_format"] == record["prompt_format"]
    assert prompts and not any("SmolLM" in p or "system" in p for p in prompts)

    prompts.clear()
    briefed = run("briefed", "Answer briefly.", False)
    assert main(["eval", "--model", str(briefed), "--benchmark", "synthetic", "--data", str(bench),
                 "--nli-model", "none", *FAST]) == 0
    record = json.loads((briefed / "results.json").read_text())
    assert record["prompt_format"]["system_prompt"] == "Answer briefly."
    assert record["prompt_format"]["example"].startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n")
    assert prompts and all(p.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n") for p in prompts)


def test_tofus_truth_ratio_is_recorded_next_to_ours_on_the_forget_set(tiny_model_dir, bench, tmp_path):
    """forget.truth_ratio_tofu = mean(min(x, 1/x)) of the recorded per-item x (higher is better), forget.truth_ratio
    = 1 − that (lower is better); other sets have only truth_ratio; FE still uses truth_ratio."""
    out = tmp_path / "results.json"
    assert _eval(tiny_model_dir, bench, out) == 0
    r = json.loads(out.read_text())
    forget = r["sets"]["forget"]
    xs = [it["truth_ratio_x"] for it in forget["items"]]
    tofu = forget["metrics"]["truth_ratio_tofu"]
    assert tofu["higher_is_better"] is True and forget["metrics"]["truth_ratio"]["higher_is_better"] is False
    assert tofu["value"] == pytest.approx(sum(min(x, 1 / x) for x in xs) / len(xs), abs=1e-12)
    assert tofu["value"] + forget["metrics"]["truth_ratio"]["value"] == pytest.approx(1.0, abs=1e-12)
    others = ("retain", "real_authors", "world_facts")
    assert all("truth_ratio_tofu" not in r["sets"][name]["metrics"] for name in others)
    fe = r["aggregates"]["forget_efficacy"]
    used = [forget["metrics"][m]["value"] for m in ("rouge_l", "probability", "truth_ratio")]
    assert fe["value"] == pytest.approx(1 - sum(used) / 3) and "forget.truth_ratio_tofu" not in fe["components"]
