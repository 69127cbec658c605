"""MUSE's privacy leakage end to end: `obliviate eval --benchmark muse` on the shipped example with tiny models,
the retain model's reference from its results.json or from the model itself, the leakage recomputed by hand from
the two results files, mismatched references refused, and the report's privacy panel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from obliviate.benchmarks import muse
from obliviate.cli import main
from obliviate.config import config_from_dict
from obliviate.evaluation.privacy import ATTACKS, auc, privacy_leakage
from obliviate.reporting import write_report
from obliviate.testing import make_tiny_llama
from obliviate.training.run import unlearn

pytestmark = pytest.mark.integration

EXAMPLE = muse.EXAMPLE_DIR
TOFU_RESULTS = Path(__file__).resolve().parents[1] / "fixtures" / "results" / "retain" / "eval" / "results.json"


def _eval(model: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(model), "--benchmark", "muse", "--data", str(EXAMPLE), "--out", str(out),
                 "--batch-size", "4", *extra])


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """The tiny model as the retain model and a second one (same tokenizer, other weights) as the model under
    evaluation, with the retain model's MUSE results."""
    root = tmp_path_factory.mktemp("muse-privacy")
    other = make_tiny_llama(root / "other", seed=1)
    retain_results = root / "retain" / "results.json"
    assert _eval(tiny_model_dir, retain_results) == 0
    return tiny_model_dir, other, retain_results


def _column(results: dict, split: str, attack: str) -> list[float]:
    return [it[attack] for it in results["privacy"]["items"][split]]


def test_auc_of_every_attack_without_a_retain_model(models) -> None:
    _, _, retain_results = models
    results = json.loads(retain_results.read_text())
    privacy = results["privacy"]
    assert privacy["available"] is True
    assert (privacy["members"], privacy["nonmembers"]) == ("privleak/forget", "privleak/holdout")
    data = muse.load_muse(EXAMPLE)
    assert [it["text"] for it in privacy["items"]["forget"]] == [r.text[:60] for r in data.privleak["forget"]]
    assert len(privacy["items"]["holdout"]) == privacy["holdout"]["size"] == len(data.privleak["holdout"]) == 6
    assert privacy["max_length"] == 512   # the tiny model's positions, fewer than PRIVLEAK_MAX_LENGTH
    for attack in ATTACKS[:-1]:                                  # every attack but the reference one
        value = privacy["metrics"][f"auc_{attack}"]["value"]
        assert math.isfinite(value) and 0.0 <= value <= 1.0
        assert value == auc(_column(results, "forget", attack), _column(results, "holdout", attack))
    leak = privacy["metrics"]["privacy_leakage"]
    assert leak["value"] is None and leak["available"] is False and "--retain-results" in leak["reason"]
    assert privacy["metrics"]["auc_reference"]["value"] is None


def test_leakage_against_the_retain_results_equals_the_hand_computation(models, tmp_path, capsys) -> None:
    _, other, retain_results = models
    out = tmp_path / "results.json"
    assert _eval(other, out, "--retain-results", str(retain_results)) == 0
    assert "privacy_leakage" in capsys.readouterr().out
    results, retain = json.loads(out.read_text()), json.loads(retain_results.read_text())
    m = results["privacy"]["metrics"]
    assert results["privacy"]["retain_source"] == str(retain_results)
    model_auc = auc(_column(results, "forget", "min_k"), _column(results, "holdout", "min_k"))
    retain_auc = auc(_column(retain, "forget", "min_k"), _column(retain, "holdout", "min_k"))
    assert model_auc != retain_auc   # two different models: the leakage is not trivially 0
    assert m["auc_min_k"]["value"] == model_auc and m["auc_min_k"]["reference"] == retain_auc
    assert m["privacy_leakage"]["value"] == privacy_leakage(model_auc, retain_auc)
    assert m["privacy_leakage"]["attack"] == "min_k" and m["privacy_leakage"]["target"] == 0.0
    for attack in ("loss", "zlib", "min_k_plus_plus", "gradnorm"):
        a = auc(_column(results, "forget", attack), _column(results, "holdout", attack))
        r = auc(_column(retain, "forget", attack), _column(retain, "holdout", attack))
        if r == 1.0:   # (ZLib on random tiny models: the texts' compressed lengths alone separate the sets)
            assert m[f"privacy_leakage_{attack}"]["value"] is None
            assert "undefined" in m[f"privacy_leakage_{attack}"]["reason"]
        else:
            assert m[f"privacy_leakage_{attack}"]["value"] == privacy_leakage(a, r)
    # The reference attack: the model's LOSS score minus the retain model's, text by text.
    for split in ("forget", "holdout"):
        for it, ref in zip(results["privacy"]["items"][split], retain["privacy"]["items"][split]):
            assert it["sha256"] == ref["sha256"] and it["reference"] == it["loss"] - ref["loss"]
    # The report's privacy panel shows the MUSE leakage as it shows TOFU's.
    html = write_report([out], tmp_path / "r.html", markdown_out=tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    shown = f"{m['privacy_leakage']['value']:+.1f}%"
    assert "PrivLeak" in text and shown in text and shown in Path(html).read_text()


def test_retain_model_gives_the_same_leakage_as_its_results(models, tmp_path) -> None:
    retain_model, other, retain_results = models
    by_results, by_model = tmp_path / "a.json", tmp_path / "b.json"
    assert _eval(other, by_results, "--retain-results", str(retain_results)) == 0
    assert _eval(other, by_model, "--retain-model", str(retain_model)) == 0
    a = json.loads(by_results.read_text())["privacy"]["metrics"]
    b = json.loads(by_model.read_text())["privacy"]["metrics"]
    assert b["privacy_leakage"]["value"] is not None
    for name, entry in a.items():
        if entry.get("value") is None:
            assert b[name].get("value") is None and b[name]["reason"] == entry["reason"]
        else:
            assert b[name]["value"] == pytest.approx(entry["value"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", ["set_size", "tofu", "other_texts"])
def test_a_retain_results_file_for_other_texts_exits_2_naming_it(models, tmp_path, capsys, case) -> None:
    _, other, retain_results = models
    extra: list[str] = []
    if case == "set_size":
        path, extra, expected = retain_results, ["--set-size", "2"], "this evaluation scores 2"
    elif case == "tofu":
        path, expected = TOFU_RESULTS, "is not a MUSE results record"
    else:
        record = json.loads(retain_results.read_text())
        record["privacy"]["items"]["holdout"][3]["sha256"] = "sha256:" + "0" * 64
        path, expected = tmp_path / "edited.json", "is not among them"
        path.write_text(json.dumps(record))
    assert _eval(other, tmp_path / "out.json", "--retain-results", str(path), *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and expected in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out.json").exists()


def test_an_unlearning_run_uses_the_retain_model_its_config_names(models, tmp_path) -> None:
    """eval.retain_model in a MUSE unlearning run's config is the reference of its privacy leakage."""
    retain_model, other, _ = models
    run = unlearn(config_from_dict("unlearn", {
        "output_dir": str(tmp_path / "run"), "model": {"name": str(other), "max_length": 32},
        "data": {"forget": str(EXAMPLE / "raw" / "forget.txt"), "retain": str(EXAMPLE / "raw" / "retain1.txt")},
        "method": {"name": "GA+GD"},
        "train": {"learning_rate": 1e-4, "batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 1,
                  "warmup_epochs": 0.0, "seed": 0},
        "eval": {"embedding_model": None, "nli_model": None, "retain_model": str(retain_model)}}))
    results = json.loads((run.output_dir / "results.json").read_text())
    privacy = results["privacy"]
    assert results["benchmark"]["name"] == "muse" and privacy["retain_source"] == "retain model"
    leak = privacy["metrics"]["privacy_leakage"]
    assert leak["value"] == privacy_leakage(privacy["metrics"]["auc_min_k"]["value"],
                                            privacy["metrics"]["auc_min_k"]["reference"])


def test_muse_values_get_bootstrap_intervals(models, tmp_path) -> None:
    """MUSE's per-set ROUGE-L F1 and its privacy AUCs and leakage carry intervals like TOFU's; the identity
    resample gives each set's value back, and --bootstrap 0 turns them off."""
    import numpy as np

    from obliviate.evaluation.bootstrap import set_metric_samples

    _, other, retain_results = models
    out = tmp_path / "results.json"
    assert _eval(other, out, "--retain-results", str(retain_results)) == 0
    results = json.loads(out.read_text())
    assert results["settings"]["bootstrap"] == 1000
    assert set(results["sets"]) >= {"verbmem_forget", "knowmem_forget", "knowmem_retain"}
    for name, s in results["sets"].items():
        entry = s["metrics"]["rouge_l_f1"]
        low, high = entry["ci"]
        assert low <= entry["value"] <= high, name
        identity = np.arange(len(s["items"]))[None, :]
        assert set_metric_samples(s, identity)["rouge_l_f1"][0] == pytest.approx(entry["value"], rel=1e-12)
    metrics = results["privacy"]["metrics"]
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        low, high = metrics[f"auc_{attack}"]["ci"]
        assert 0.0 <= low <= metrics[f"auc_{attack}"]["value"] <= high <= 1.0, attack
    leak = metrics["privacy_leakage"]
    assert leak["value"] is not None and leak["ci"][0] <= leak["value"] <= leak["ci"][1]
    plain = tmp_path / "plain.json"
    assert _eval(other, plain, "--retain-results", str(retain_results), "--bootstrap", "0") == 0
    record = json.loads(plain.read_text())
    assert all("ci" not in s["metrics"]["rouge_l_f1"] for s in record["sets"].values())
    assert "ci" not in record["privacy"]["metrics"]["auc_min_k"]
