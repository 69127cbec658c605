"""MUSE and WMDP end to end on their fixtures with the tiny model: training on raw text, the evaluation through
the CLI, the numbers checked against an independent one-at-a-time computation, and the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate.benchmarks import muse
from obliviate.cli import main
from obliviate.config import config_from_dict
from obliviate.evaluation.metrics import rouge_l_f1
from obliviate.reporting import write_report
from obliviate.reporting.summary import summary_metrics, summary_table
from obliviate.training.run import finetune, unlearn

pytestmark = pytest.mark.integration

EXAMPLE = muse.EXAMPLE_DIR
WMDP_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval_wmdp"
TRAIN = {"learning_rate": 1e-2, "batch_size": 4, "gradient_accumulation_steps": 1, "warmup_epochs": 0.0, "seed": 0,
         "logging_steps": 50}


@pytest.fixture(scope="module")
def muse_runs(tiny_model_dir, tmp_path_factory):
    """A target model trained on the example's forget and retain text, and GA+GD unlearning of the forget text."""
    root = tmp_path_factory.mktemp("muse")
    target = finetune(config_from_dict("finetune", {
        "output_dir": str(root / "target"), "model": {"name": str(tiny_model_dir), "max_length": 64},
        "data": {"train": [str(EXAMPLE / "raw" / "forget.txt"), str(EXAMPLE / "raw" / "retain1.txt")]},
        "train": {**TRAIN, "num_epochs": 15.0}}))
    run = unlearn(config_from_dict("unlearn", {
        "output_dir": str(root / "ga_gd"), "model": {"name": str(target.model_dir), "max_length": 64},
        "data": {"forget": str(EXAMPLE / "raw" / "forget.txt"), "retain": str(EXAMPLE / "raw" / "retain1.txt")},
        "method": {"name": "GA+GD"}, "train": {**TRAIN, "learning_rate": 1e-3, "num_epochs": 1.0},
        "eval": {"embedding_model": None, "nli_model": None}}))
    return root, target, run


def test_training_on_text_chunks_every_document_and_evaluates_on_muse(muse_runs):
    root, target, run = muse_runs
    record = json.loads((root / "ga_gd" / "run.json").read_text())
    assert record["forget_items"] == 1  # forget.txt is one document ...
    assert record["examples"] > 10     # ... cut into chunks of 64 tokens
    results = json.loads((root / "ga_gd" / "results.json").read_text())
    assert results["benchmark"]["name"] == "muse" and results["benchmark"]["source"] == str(EXAMPLE)
    assert set(results["sets"]) == {"verbmem_forget", "knowmem_forget", "knowmem_retain"}
    for name, kind in (("verbmem_forget", "forget"), ("knowmem_forget", "forget"), ("knowmem_retain", "retain")):
        entry = results["sets"][name]
        assert entry["kind"] == kind
        assert entry["metrics"]["rouge_l_f1"]["higher_is_better"] is (kind == "retain")
        values = [it["rouge_l_f1"] for it in entry["items"]]
        assert entry["metrics"]["rouge_l_f1"]["value"] == pytest.approx(sum(values) / len(values))
        assert results["aggregates"][name]["value"] == entry["metrics"]["rouge_l_f1"]["value"]
    # Privacy leakage is computed on privleak/forget against privleak/holdout; without a retain model the AUCs
    # are there and the leakage says what it needs.
    privacy = results["privacy"]
    assert privacy["available"] is True and privacy["members"] == "privleak/forget"
    assert 0.0 <= privacy["metrics"]["auc_min_k"]["value"] <= 1.0
    assert privacy["metrics"]["privacy_leakage"]["value"] is None
    assert "--retain-results" in privacy["metrics"]["privacy_leakage"]["reason"]


def test_muse_numbers_equal_a_one_at_a_time_generate_loop(muse_runs, tmp_path, capsys):
    """MUSE's released evaluation generates one prompt at a time with model.generate; the batched decoder and
    the ROUGE-L F1 must give the same numbers."""
    _, target, _ = muse_runs
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(target.model_dir), "--benchmark", "muse", "--data", str(EXAMPLE),
                 "--out", str(out), "--batch-size", "4"]) == 0
    results = json.loads(out.read_text())
    # The summary lists MUSE's sets by their own metric, without the question-answer table's six columns.
    printed = capsys.readouterr().out
    assert "verbmem_forget" in printed and "rouge_l_f1" in printed and "truth_ratio" not in printed
    model = AutoModelForCausalLM.from_pretrained(target.model_dir)
    tok = AutoTokenizer.from_pretrained(target.model_dir)
    data = muse.load_muse(EXAMPLE)

    def generate(prompt: str, n: int) -> str:
        ids = tok(prompt, return_tensors="pt", add_special_tokens=True).input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
        return tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)

    verb = results["sets"]["verbmem_forget"]["items"]
    for (prompt, gt), item in list(zip(data.verbmem, verb))[:3]:
        reference = tok.decode(tok(gt, add_special_tokens=True)["input_ids"][:128], skip_special_tokens=True)
        output = generate(prompt, 128)
        assert item["generation"] == output and item["reference"] == reference
        assert item["rouge_l_f1"] == pytest.approx(rouge_l_f1([output], [reference])[0])
    shots = data.knowmem["forget_qa_icl"]
    for record, item in list(zip(data.knowmem["forget_qa"], results["sets"]["knowmem_forget"]["items"]))[:3]:
        answer = muse._cut_answer(generate(muse.knowmem_prompt(record.question, shots), 32))
        assert item["generation"] == answer
    # The trained target has learnt some of its text: its verbatim score is above zero.
    assert results["sets"]["verbmem_forget"]["metrics"]["rouge_l_f1"]["value"] > 0


def test_muse_report_shows_its_own_columns(muse_runs, tmp_path):
    root, _, _ = muse_runs
    html = write_report([root / "ga_gd"], tmp_path / "r.html", markdown_out=tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "ROUGE-L F1" in text and "verbmem" in text.lower()
    assert "Verbmem forget" in Path(html).read_text() or "verbmem" in Path(html).read_text().lower()
    # The compact summary (obliviate report, the model card) shows each MUSE set's one number.
    results = json.loads((root / "ga_gd" / "results.json").read_text())
    summary = {m["key"]: m["value"] for m in summary_metrics(results)}
    for name in ("verbmem_forget", "knowmem_forget", "knowmem_retain"):
        assert summary[f"{name}.rouge_l_f1"] == results["sets"][name]["metrics"]["rouge_l_f1"]["value"]
    assert "verbmem_forget ROUGE-L F1" in summary_table([results])
    card = (root / "ga_gd" / "model" / "README.md").read_text()
    assert "verbmem_forget.rouge_l_f1" in card and "text documents unlearned by GA+GD" in card
    # Text is trained on and MUSE evaluated without a prompt template: no question-answer example is shown.
    assert "Every question was asked in this format" not in card
    assert results["prompt_format"]["template"] is None


def _task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    shutil.copytree(WMDP_FIXTURES, folder)
    for path in folder.glob("*.yaml"):
        path.write_text(path.read_text().replace("@DATA_DIR@", str(folder)))
    return folder


def test_wmdp_accuracy_through_lm_eval(tiny_model_dir, tmp_path):
    pytest.importorskip("lm_eval")
    tasks = _task_dir(tmp_path)
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "wmdp", "--tasks",
                 "wmdp_bio_tiny,wmdp_cyber_tiny,mmlu_tiny", "--include-path", str(tasks), "--out", str(out),
                 "--batch-size", "4"]) == 0
    results = json.loads(out.read_text())
    assert list(results["sets"]) == ["wmdp_bio_tiny", "wmdp_cyber_tiny", "mmlu_tiny"]
    lm = results["wmdp"]["tasks"]
    for name, size in (("wmdp_bio_tiny", 3), ("wmdp_cyber_tiny", 3), ("mmlu_tiny", 4)):
        entry = results["sets"][name]
        acc = entry["metrics"]["accuracy"]
        assert entry["size"] == size and acc["value"] == lm[name]["metrics"]["acc"]["value"]
        assert acc["value"] * size == pytest.approx(round(acc["value"] * size))  # a count of right answers
        forget = name.startswith("wmdp")
        assert entry["kind"] == ("forget" if forget else "utility")
        assert acc["higher_is_better"] is (not forget)
        assert acc.get("target") == (0.25 if forget else None)
        # Each question's accuracy (0 or 1) is kept, in document order, and the bootstrap interval is drawn from
        # them: the identity resample gives the accuracy back.
        items = entry["items"]
        assert len(items) == size and all(it["accuracy"] in (0.0, 1.0) for it in items)
        assert sum(it["accuracy"] for it in items) / size == pytest.approx(acc["value"], rel=1e-12)
        assert all(isinstance(it["question"], str) and it["question"] for it in items)
        low, high = acc["ci"]
        assert 0.0 <= low <= acc["value"] <= high <= 1.0
    assert "sample_scores" not in results["wmdp"]
    write_report([out], tmp_path / "r.html", markdown_out=tmp_path / "r.md")
    assert "Acc" in (tmp_path / "r.md").read_text()


def test_wmdp_config_runs_on_text_with_lm_eval_evaluation(tiny_model_dir, tmp_path):
    """An unlearning run on a raw-text forget corpus evaluated on WMDP-style tasks (eval.benchmark=wmdp)."""
    pytest.importorskip("lm_eval")
    tasks = _task_dir(tmp_path)
    corpus = tmp_path / "bio-forget-corpus.jsonl"
    corpus.write_text("".join(json.dumps({"title": f"Paper {i}", "text": t}) + "\n" for i, t in enumerate(
        ["Mitochondria make most of the cell's energy.", "Haemoglobin carries oxygen in the blood.",
         "DNA holds the genetic information of a cell."])))
    retain = tmp_path / "retain-corpus.jsonl"
    retain.write_text("".join(json.dumps({"text": t}) + "\n" for t in
                              ["Paris is the capital of France.", "A triangle has three sides."]))
    run = unlearn(config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "run"), "model": {"name": str(tiny_model_dir), "max_length": 32},
        "data": {"forget": str(corpus), "retain": str(retain)}, "method": {"name": "NPO+GD"},
        "train": {**TRAIN, "learning_rate": 1e-3, "max_steps": 2},
        "eval": {"benchmark": "wmdp", "tasks": ["wmdp_bio_tiny", "mmlu_tiny"], "include_path": str(tasks),
                 "embedding_model": None, "nli_model": None}}))
    results = json.loads((run.output_dir / "results.json").read_text())
    assert set(results["sets"]) == {"wmdp_bio_tiny", "mmlu_tiny"}
    assert results["run"]["method"] == "NPO+GD"


def test_quantization_probe_on_a_muse_run(muse_runs, monkeypatch):
    """The probe measures MUSE runs with MUSE's own sets; the target anchor is the model the run started from.
    It reports no privacy numbers, so MUSE's attacks are not run for it."""
    pytest.importorskip("torchao")
    from obliviate.benchmarks import muse

    def no_attacks(*args, **kwargs):
        raise AssertionError("the probe ran MUSE's privacy attacks")

    monkeypatch.setattr(muse, "muse_privacy", no_attacks)
    root, target, _ = muse_runs
    assert main(["attack", "quantize", str(root / "ga_gd"), "--bits", "8", "--group-size", "16"]) == 0
    section = json.loads((root / "ga_gd" / "results.json").read_text())["probes"]["quantization"]
    assert [r["label"] for r in section["rows"]] == ["unlearned", "unlearned, int8", "target"]
    assert section["benchmark"] == "muse" and "retain" in section["anchors_unavailable"]
    for row in section["rows"]:
        assert set(row["sets"]) == {"verbmem_forget", "knowmem_forget", "knowmem_retain"}
    assert section["rows"][2]["model"] == str(target.model_dir)
    assert section["recovery_sets"] == ["verbmem_forget", "knowmem_forget"]
    assert set(section["recovery"]["unlearned, int8"]["verbmem_forget"]) == {"rouge_l_f1"}


def test_warm_up_on_text_counts_chunks_not_documents(tiny_model_dir, tmp_path):
    """train.warmup_epochs is in epochs of training items: for text, one epoch is every chunk of every document
    (forget.txt is one document cut into many chunks), not one step per document."""
    result = finetune(config_from_dict("finetune", {
        "output_dir": str(tmp_path / "ft"), "model": {"name": str(tiny_model_dir), "max_length": 32},
        "data": {"train": [str(EXAMPLE / "raw" / "forget.txt")]},
        "train": {**TRAIN, "learning_rate": 1e-3, "warmup_epochs": 1.0, "batch_size": 2, "max_steps": 2,
                  "logging_steps": 1}}))
    chunks = json.loads((tmp_path / "ft" / "run.json").read_text())["examples"]
    warmup = -(-chunks // 2)  # optimizer steps in one epoch of chunks
    assert chunks > 10 and warmup > 2
    rates = [entry["learning_rate"] for entry in result.log_history if "learning_rate" in entry]
    # Linear warm-up: step s (from 0) trains at s / warmup of the full rate.
    assert rates[:2] == pytest.approx([0.0, 1e-3 / warmup])
