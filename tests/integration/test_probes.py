"""The robustness probes end to end on the tiny model: a target and a retain model, an unlearning run, then
``obliviate attack relearn | paraphrase | quantize`` into its results.json, and the report panel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.cli import main
from obliviate.config import config_from_dict
from obliviate.reporting import write_report
from obliviate.training.run import finetune, unlearn

pytestmark = pytest.mark.integration

FORGET = [
    ("Where was Anna Vell born?", "Anna Vell was born in Korsby.", "In which town was Anna Vell born?"),
    ("What does Anna Vell write?", "Anna Vell writes long sea novels.", "What kind of books does Anna Vell write?"),
    ("Which prize did Anna Vell win?", "She won the Grey Gull Prize.", "What award did Anna Vell receive?"),
    ("Who was Anna Vell's father?", "Her father was a lighthouse keeper.", "Who is Anna Vell's dad?"),
]
RETAIN = [("Where was Bo Lind born?", "Bo Lind was born in Marhaven."),
          ("What does Bo Lind write?", "Bo Lind writes short poems."),
          ("Which prize did Bo Lind win?", "He won the Amber Pen."),
          ("Who was Bo Lind's mother?", "His mother was a baker.")]
TRAIN = {"learning_rate": 1e-2, "num_epochs": 25.0, "batch_size": 4, "gradient_accumulation_steps": 1,
         "warmup_epochs": 0.0, "seed": 0, "logging_steps": 50}


def _row(q, a, p=None):
    row = {"question": q, "answer": a, "paraphrased_answer": a, "perturbed_answer": [a[::-1]]}
    if p:
        row.update(paraphrased_question=p, casual_question=f"hey, {q.lower()}")
    return json.dumps(row) + "\n"


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    (root / "forget.json").write_text("".join(_row(*r) for r in FORGET))
    (root / "retain.json").write_text("".join(_row(*r) for r in RETAIN))
    target = finetune(config_from_dict("finetune", {
        "output_dir": str(root / "target"), "model": {"name": str(tiny_model_dir)},
        "data": {"train": [str(root / "forget.json"), str(root / "retain.json")]}, "train": TRAIN})).model_dir
    retain = finetune(config_from_dict("finetune", {
        "output_dir": str(root / "retain"), "model": {"name": str(tiny_model_dir)},
        "data": {"train": [str(root / "retain.json")]}, "train": TRAIN})).model_dir
    unlearn(config_from_dict("unlearn", {
        "output_dir": str(root / "ga_gd"), "model": {"name": str(target)},
        "data": {"forget": str(root / "forget.json"), "retain": str(root / "retain.json")},
        "method": {"name": "GA+GD"}, "train": {**TRAIN, "learning_rate": 5e-3, "num_epochs": 3.0},
        "eval": {"embedding_model": None, "nli_model": None, "max_new_tokens": 12, "retain_model": str(retain)}}))
    return root, target, retain


def _probe(root: Path, name: str) -> dict:
    return json.loads((root / "ga_gd" / "results.json").read_text())["probes"][name]


def _value(row: dict, set_name: str, metric: str) -> float:
    return row["sets"][set_name][metric]["value"]


def test_quantization_probe(run):
    pytest.importorskip("torchao")
    root, target, retain = run
    assert main(["attack", "quantize", str(root / "ga_gd"), "--bits", "8,4", "--group-size", "16"]) == 0
    section = _probe(root, "quantization")
    labels = [r["label"] for r in section["rows"]]
    assert labels == ["unlearned", "unlearned, int8", "unlearned, int4", "target", "retain"]
    rows = {r["label"]: r for r in section["rows"]}
    assert rows["target"]["model"] == str(target) and rows["retain"]["model"] == str(retain)
    assert section["settings"]["backend"] == "torchao" and section["settings"]["bits"] == [8, 4]
    # The full-precision row is the run's own evaluation of the same sets.
    results = json.loads((root / "ga_gd" / "results.json").read_text())
    for metric in ("rouge_l", "probability", "truth_ratio"):
        assert _value(rows["unlearned"], "forget", metric) == pytest.approx(
            results["sets"]["forget"]["metrics"][metric]["value"], abs=1e-6)
    # Rounding moves the answer likelihoods, 4-bit more than 8-bit.
    p = {label: _value(rows[label], "forget", "probability") for label in rows}
    assert abs(p["unlearned, int8"] - p["unlearned"]) <= abs(p["unlearned, int4"] - p["unlearned"])
    assert p["unlearned, int4"] != p["unlearned"]
    gap = p["target"] - p["unlearned"]
    assert section["recovery"]["unlearned, int4"]["forget"]["probability"] == pytest.approx(
        (p["unlearned, int4"] - p["unlearned"]) / gap)


def test_paraphrase_probe_asks_every_rephrasing(run):
    root, _, _ = run
    assert main(["attack", "paraphrase", str(root / "ga_gd")]) == 0
    section = _probe(root, "paraphrase")
    assert section["settings"]["variants"] == ["question", "paraphrased_question", "casual_question"]
    for row in section["rows"]:
        assert set(row["sets"]) == {"forget:question", "forget:paraphrased_question", "forget:casual_question"}
        gap = section["gap"][row["label"]]["paraphrased_question"]["probability"]
        assert gap == pytest.approx(_value(row, "forget:paraphrased_question", "probability")
                                    - _value(row, "forget:question", "probability"))
    # The same answers asked differently: the target model's answer likelihood changes with the wording.
    target = next(r for r in section["rows"] if r["label"] == "target")
    assert _value(target, "forget:question", "probability") != _value(target, "forget:paraphrased_question",
                                                                      "probability")


def test_relearn_probe_measures_the_rest(run, tmp_path):
    root, _, _ = run
    subset = tmp_path / "subset.json"
    subset.write_text("".join(_row(*r) for r in FORGET[:2]))
    assert main(["attack", "relearn", str(root / "ga_gd"), "--data", str(subset), "--steps", "6", "--lr", "1e-2",
                 "--train-batch-size", "2"]) == 0
    section = _probe(root, "relearn")
    s = section["settings"]
    assert (s["relearn_rows"], s["measured_rows"], s["control_rows"], s["steps"]) == (2, 2, 2, 6)
    labels = [r["label"] for r in section["rows"]]
    assert labels == ["unlearned", "relearned on forget rows", "relearned on control data", "target", "retain"]
    for label, losses in s["losses"].items():
        assert len(losses) == 6 and losses[-1] < losses[0]  # the fine-tuning really trained
    # Every row was measured on the two forget rows left out of the relearning data.
    results = json.loads((root / "ga_gd" / "results.json").read_text())
    assert results["probes"]["relearn"]["rows"][0]["sets"]["forget"]["probability"]["value"] is not None
    relearned = next(r for r in section["rows"] if r["label"] == "relearned on forget rows")
    unlearned = section["rows"][0]
    assert _value(relearned, "forget", "probability") != _value(unlearned, "forget", "probability")
    # The other probes written before are kept beside it.
    assert {"relearn", "paraphrase"} <= set(results["probes"])


def test_report_has_a_probe_panel(run, tmp_path):
    root, _, _ = run
    if "probes" not in json.loads((root / "ga_gd" / "results.json").read_text()):
        main(["attack", "paraphrase", str(root / "ga_gd")])
    page = Path(write_report([root / "ga_gd"], tmp_path / "r.html", markdown_out=tmp_path / "r.md")).read_text()
    assert '<section id="probes">' in page and "(anchor)" in page
    assert "### Robustness probes" in (tmp_path / "r.md").read_text()
