"""Privacy attacks, memorisation and confidence intervals end to end on the tiny model and a synthetic benchmark."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.cli import main
from obliviate.data.formatting import PromptFormatter
from obliviate.evaluation.bootstrap import set_metric_samples
from obliviate.likelihood import answer_gradient_norms, answer_token_stats, tree_prompt_logprobs
from obliviate.models import load_model

pytestmark = pytest.mark.integration

FAST = ["--max-new-tokens", "6", "--batch-size", "8", "--embedding-model", "none", "--nli-model", "none"]
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return generate_benchmark(authors=5, facts=3, seed=1, forget_authors=1, holdout_authors=2).write(
        tmp_path_factory.mktemp("synth") / "bench")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    m, tok = load_model(str(tiny_model_dir))
    return m, PromptFormatter(tok, "chat")


def _pairs(fmt, n=5):
    qa = [("Who wrote The Silent River?", "Her first book was The Silent River."),
          ("Where was he born?", "He was born in London, England."),
          ("What genre?", "Historical fiction."),
          ("Has the author won any awards?", "Yes, he received the Prix Goncourt in 1998 for his second book."),
          ("Q?", "A.")][:n]
    out = []
    for q, a in qa:
        e = fmt.encode(q, a)
        out.append((e.input_ids[: e.prompt_length], e.input_ids[e.prompt_length:]))
    return out


def test_token_stats_match_the_scorer_and_one_unpadded_pass(model) -> None:
    m, fmt = model
    pairs = _pairs(fmt)
    stats = answer_token_stats(m, pairs, pad_token_id=fmt.tokenizer.pad_token_id, batch_size=3)
    sums = tree_prompt_logprobs(m, [(p, [a]) for p, a in pairs], pad_token_id=fmt.tokenizer.pad_token_id)
    for (prompt, answer), s, ((total, count),) in zip(pairs, stats, sums):
        assert len(s) == count == len(answer)
        assert sum(s.logprobs) == pytest.approx(total, abs=1e-4)
        with torch.no_grad():
            logits = m(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1].double()
        logp = logits.log_softmax(-1)
        assert s.logprobs == pytest.approx(logp.gather(-1, torch.tensor(answer)[:, None]).squeeze(-1).tolist(),
                                           abs=1e-4)
        assert list(s.hits) == (logits.argmax(-1) == torch.tensor(answer)).tolist()
        assert s.means == pytest.approx((logp.exp() * logp).sum(-1).tolist(), abs=1e-4)


def test_gradient_norms_by_hand_on_a_bigram_table() -> None:
    """A model whose logits at a position are row ``W[token]`` of a 3 × 3 table, W = 0 (uniform). For prompt
    [0] and answer [1] the mean NLL is −log softmax(W[0])[1], whose gradient is softmax(W[0]) − e_1 =
    (1/3, −2/3, 1/3) in row 0 and 0 elsewhere: norm √(1/9 + 4/9 + 1/9) = √6/3 (one parameter tensor)."""

    class Bigram(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(3, 3), requires_grad=False)   # frozen, as in LoRA

        def forward(self, input_ids, **_):
            return type("Out", (), {"logits": self.table[input_ids]})()

    bigram = Bigram()
    assert answer_gradient_norms(bigram, [([0], [1])]) == [pytest.approx(math.sqrt(6) / 3)]
    # Two answer tokens [1, 2] after [0]: rows 0 and 1 each get half of (1/3 − e_y): √6/6 each, norm √(12)/6.
    assert answer_gradient_norms(bigram, [([0], [1, 2])]) == [pytest.approx(math.sqrt(12) / 6)]
    assert bigram.table.requires_grad is False and bigram.table.grad is None


def test_gradient_norms_on_the_tiny_model_match_backward(model) -> None:
    m, fmt = model
    (prompt, answer), = _pairs(fmt, 1)
    (norm,) = answer_gradient_norms(m, [(prompt, answer)])
    m.zero_grad(set_to_none=True)
    logits = m(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1].float()
    (-(logits.log_softmax(-1).gather(-1, torch.tensor(answer)[:, None])).mean()).backward()
    norms = [p.grad.norm() for p in m.parameters() if p.grad is not None]
    assert norm == pytest.approx(float(torch.stack(norms).mean()), rel=1e-5)
    m.zero_grad(set_to_none=True)


def test_gradient_norm_of_a_lora_model_equals_the_merged_model(tiny_model_dir) -> None:
    """The adapters are left out and a base weight's gradient is the merged weight's: same norm either way."""
    from obliviate.models import LoraSettings, apply_lora

    base, tok = load_model(str(tiny_model_dir))
    fmt = PromptFormatter(tok, "chat")
    pairs = _pairs(fmt, 2)
    peft = apply_lora(base, LoraSettings(r=4, alpha=8))
    with torch.no_grad():   # a trained adapter: B no longer zero
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    wrapped = answer_gradient_norms(peft, pairs)
    merged = answer_gradient_norms(peft.merge_and_unload(), pairs)
    assert wrapped == pytest.approx(merged, rel=1e-4)


def _eval(model_dir, bench, out, *extra):
    return main(["eval", "--model", str(model_dir), "--benchmark", "synthetic", "--data", str(bench),
                 "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def records(tiny_model_dir, bench, tmp_path_factory):
    """The tiny model evaluated alone, then against itself as the retain model (from its results and loaded)."""
    root = tmp_path_factory.mktemp("privacy")
    assert _eval(tiny_model_dir, bench, root / "alone") == 0
    assert _eval(tiny_model_dir, bench, root / "results", "--retain-results", str(root / "alone")) == 0
    assert _eval(tiny_model_dir, bench, root / "model", "--retain-model", str(tiny_model_dir)) == 0
    return {name: json.loads((root / name / "results.json").read_text()) for name in ("alone", "results", "model")}


def test_privacy_section_of_a_model_alone(records, bench) -> None:
    privacy = records["alone"]["privacy"]
    assert privacy["available"] is True and (privacy["members"], privacy["nonmembers"]) == ("forget", "holdout")
    assert privacy["holdout"]["source"].endswith("holdout_perturbed.json") and privacy["holdout"]["size"] == 6
    assert privacy["holdout"]["sha256"].startswith("sha256:")
    assert len(privacy["items"]["forget"]) == 3 and len(privacy["items"]["holdout"]) == 6
    m = privacy["metrics"]
    for attack in ATTACKS[:-1]:
        entry = m[f"auc_{attack}"]
        assert 0.0 <= entry["value"] <= 1.0 and entry["higher_is_better"] is None and entry["target"] == 0.5
        assert entry["ci"][0] <= entry["ci"][1]
    # No retain model: no reference attack and no leakage, each with the reason.
    assert m["auc_reference"]["value"] is None and "retain" in m["auc_reference"]["reason"]
    assert m["privacy_leakage"]["value"] is None and "--retain-model" in m["privacy_leakage"]["reason"]
    # Memorisation on every set, per item and per set, with its direction.
    for name, s in records["alone"]["sets"].items():
        em = s["metrics"]["exact_memorization"]
        assert em["higher_is_better"] is (name != "forget")
        assert em["value"] == pytest.approx(sum(it["exact_memorization"] for it in s["items"]) / len(s["items"]))
        assert 0.0 <= s["metrics"]["extraction_strength"]["value"] <= 1.0


@pytest.mark.parametrize("name", ["results", "model"])
def test_the_model_against_itself_leaks_nothing(records, name) -> None:
    """The same model as its own retain model: identical scores, identical AUCs, leakage exactly 0; the
    reference attack scores every item 0 (AUC 1/2); Forget Quality 1; the forget EM's reference is its own."""
    record = records[name]
    m = record["privacy"]["metrics"]
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"):
        assert m[f"auc_{attack}"]["reference"] == pytest.approx(m[f"auc_{attack}"]["value"], abs=1e-12)
        leak = m[f"privacy_leakage_{attack}"]
        assert leak["value"] == pytest.approx(0.0, abs=1e-9) or "AUC is 1" in leak.get("reason", "")
    assert m["auc_reference"]["value"] == 0.5
    references = [it["reference"] for it in record["privacy"]["items"]["forget"]]
    assert references == pytest.approx([0.0] * len(references), abs=1e-5), references
    assert record["aggregates"]["forget_quality"]["value"] == pytest.approx(1.0)
    assert record["aggregates"]["forget_quality"]["ci"] == pytest.approx([1.0, 1.0])
    em = record["sets"]["forget"]["metrics"]["exact_memorization"]
    assert em["reference"] == pytest.approx(em["value"], abs=1e-12)


def test_every_value_has_an_interval_and_bootstrap_zero_turns_them_off(records, tiny_model_dir, bench, tmp_path):
    record = records["results"]
    assert record["settings"]["bootstrap"] == 1000 and record["settings"]["confidence_level"] == 0.95
    for s in record["sets"].values():
        for name, entry in s["metrics"].items():
            assert ("ci" in entry) is (entry["value"] is not None), name
    for name in ("model_utility", "model_utility_tofu", "forget_efficacy", "forget_quality"):
        assert "ci" in record["aggregates"][name], name
    # The bootstrap recomputes each metric as the evaluation computed its value: the identity "resample" (every
    # item once, in order) gives back every recorded value, truth ratio and utility-set probability included.
    for set_name, s in record["sets"].items():
        identity = np.arange(len(s["items"]))[None, :]
        recomputed = set_metric_samples(s, identity)
        assert set(recomputed) == {m for m, e in s["metrics"].items() if e["value"] is not None}, set_name
        for metric, values in recomputed.items():
            assert values[0] == pytest.approx(s["metrics"][metric]["value"], rel=1e-12, abs=1e-15), (set_name, metric)
    assert _eval(tiny_model_dir, bench, tmp_path / "r", "--bootstrap", "0", "--no-gradnorm") == 0
    plain = json.loads((tmp_path / "r" / "results.json").read_text())
    assert '"ci"' not in json.dumps(plain["sets"]) and '"ci"' not in json.dumps(plain["aggregates"])
    gradnorm = plain["privacy"]["metrics"]["auc_gradnorm"]
    assert gradnorm["value"] is None and "switched off" in gradnorm["reason"]
    assert all(it["gradnorm"] is None for it in plain["privacy"]["items"]["forget"])


def test_holdout_file_for_the_files_benchmark_and_clear_errors(tiny_model_dir, bench, tmp_path, capsys) -> None:
    out = tmp_path / "files"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "files", "--file",
                 f"forget={bench / 'forget_perturbed.json'}", "--file", f"holdout={bench / 'holdout.json'}",
                 "--out", str(out), *FAST]) == 0
    record = json.loads((out / "results.json").read_text())
    assert set(record["sets"]) == {"forget"} and record["privacy"]["holdout"]["size"] == 6
    assert _eval(tiny_model_dir, bench, tmp_path / "x", "--holdout", str(tmp_path / "missing.json")) == 2
    assert "missing.json" in capsys.readouterr().err
    assert _eval(tiny_model_dir, bench, tmp_path / "y", "--bootstrap", "-1") == 2
    assert "--bootstrap" in capsys.readouterr().err


def test_a_benchmark_without_holdout_says_so(tiny_model_dir, tmp_path) -> None:
    old = generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1, holdout_authors=0).write(tmp_path / "b")
    assert _eval(tiny_model_dir, old, tmp_path / "r") == 0
    privacy = json.loads((tmp_path / "r" / "results.json").read_text())["privacy"]
    assert privacy["available"] is False and "holdout_perturbed.json" in privacy["reason"]


def test_report_over_runs_that_differ_only_in_seed(tiny_model_dir, bench, tmp_path, capsys) -> None:
    """`obliviate unlearn` twice with only train.seed changed, then `obliviate report` over both folders: the
    runs form one seed group (mean ± sample std of each headline number), and the report says whether their
    intervals overlap."""
    folders = []
    for seed in (1, 2):
        out = tmp_path / f"ga-gd-{seed}"
        config = tmp_path / f"seed{seed}.yaml"
        config.write_text(yaml.safe_dump({
            "kind": "unlearn", "output_dir": str(out), "model": {"name": str(tiny_model_dir)},
            "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
            "method": {"name": "GA+GD"}, "train": {"max_steps": 2, "batch_size": 2, "warmup_epochs": 0.0, "seed": seed},
            "eval": {"max_new_tokens": 2, "batch_size": 8, "set_size": 3, "embedding_model": None, "nli_model": None,
                     "bootstrap": 200, "gradnorm": False}}))
        assert main(["unlearn", "--config", str(config)]) == 0
        folders.append(out)
    records = [json.loads((f / "results.json").read_text()) for f in folders]
    assert [r["seed"] for r in records] == [1, 2] and all(r["privacy"]["available"] for r in records)
    fe = [r["aggregates"]["forget_efficacy"]["value"] for r in records]
    mu = [r["aggregates"]["model_utility"]["value"] for r in records]
    assert fe[0] != fe[1]      # the seed changed the run (batch order), so the spread is a real one
    capsys.readouterr()
    assert main(["report", *map(str, folders), "--out", str(tmp_path / "report.html")]) == 0
    table = (tmp_path / "report.md").read_text()

    def mean_std(values):      # sample standard deviation of two values: |a − b| / √2
        return f"{sum(values) / 2:.3f} ± {abs(values[0] - values[1]) / math.sqrt(2):.3f}"

    assert "### Across seeds" in table
    assert f"| GA+GD | 1, 2 | {mean_std(mu)} | {mean_std(fe)} | n/a | n/a |" in table
    # Both runs carry MU and FE intervals: the report states, for each, whether the two overlap.
    pair = "GA+GD (ga-gd-1) – GA+GD (ga-gd-2)"
    for short in ("MU", "FE"):
        (lo1, hi1), (lo2, hi2) = (r["aggregates"]["model_utility" if short == "MU" else "forget_efficacy"]["ci"]
                                  for r in records)
        expected = f"overlap {pair}; separate none" if lo1 <= hi2 and lo2 <= hi1 else f"overlap none; separate {pair}"
        assert f"- {short}: {expected}" in table
    page = (tmp_path / "report.html").read_text()
    assert 'id="uncertainty"' in page and "Across seeds" in page and 'class="errorbar"' in page
