"""General ability through lm-evaluation-harness, on the tiny random model and tiny local tasks.

The tasks live in tests/fixtures/lm_eval (a 4-question, 3-choice multiple-choice task, a 3-question
generate-until task, and a group of the two); their YAML names the data by absolute path, so the fixture
copies them into a temporary folder and fills that path in. Tests that run lm-eval are skipped when the
``lm-eval`` extra is not installed; the missing-extra message and the report rendering are tested always.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from obliviate.cli import main
from obliviate.errors import ConfigError, DataError, ObliviateError
from obliviate.evaluation.general import (
    INSTALL_HINT,
    PAPER_METRICS,
    PAPER_TASKS,
    add_general_ability,
    check_tasks,
    run_general_ability,
)
from obliviate.models import LoraSettings, apply_lora, is_peft_model, load_model
from obliviate.reporting import html_report, markdown_table, write_report

pytestmark = pytest.mark.integration



def _lm_eval_installed() -> bool:
    try:
        return importlib.util.find_spec("lm_eval") is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a placeholder in sys.modules
        return False


needs_lm_eval = pytest.mark.skipif(not _lm_eval_installed(),
                                   reason="the lm-eval extra is not installed (pip install 'obliviate[lm-eval]')")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TASK_TEMPLATES = FIXTURES / "lm_eval"
RESULTS_FIXTURE = FIXTURES / "results" / "me_gd" / "results.json"
MC, GEN, GROUP = "obliviate_tiny_mc", "obliviate_tiny_gen", "obliviate_tiny_group"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (TASK_TEMPLATES / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The fixture tasks, with their data paths pointing at a temporary copy of the data."""
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    for source in TASK_TEMPLATES.iterdir():
        text = source.read_text().replace("@DATA_DIR@", str(folder))
        (folder / source.name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    return model, tokenizer


@pytest.fixture(scope="module")
def record(tiny, task_dir) -> dict:
    """Both tiny tasks scored once on the tiny model (shared by the tests that only read the record)."""
    model, tokenizer = tiny
    return run_general_ability(model, tokenizer, [MC, GEN], include_path=task_dir, batch_size=4)


# --- running ----------------------------------------------------------------------------------------


@needs_lm_eval
def test_record_has_every_metric_in_range_with_counts_and_settings(record):
    import lm_eval

    assert record["lm_eval_version"] == lm_eval.__version__
    assert record["task_names"] == [MC, GEN]
    assert record["limit"] is None and record["num_fewshot"] is None and record["batch_size"] == 4
    assert set(record["top_level"]) == {MC, GEN}
    mc, gen = record["tasks"][MC], record["tasks"][GEN]
    assert set(mc["metrics"]) == {"acc", "acc_norm"}
    assert set(gen["metrics"]) == {"exact_match"}
    for task in (mc, gen):
        assert task["num_fewshot"] == 0 and task["group"] is None and task["subtasks"] == []
        for entry in task["metrics"].values():
            assert 0.0 <= entry["value"] <= 1.0
            assert entry["stderr"] is not None and entry["stderr"] >= 0.0
            assert entry["higher_is_better"] is True
    # Every document was scored: 4 multiple-choice questions, 3 generations.
    assert (mc["n_samples"], mc["n_available"]) == (4, 4)
    assert (gen["n_samples"], gen["n_available"]) == (3, 3)
    # Accuracy over 4 questions is a multiple of 1/4; exact match over 3 a multiple of 1/3.
    assert (mc["metrics"]["acc"]["value"] * 4) % 1 == pytest.approx(0.0, abs=1e-9)
    assert (gen["metrics"]["exact_match"]["value"] * 3) % 1 == pytest.approx(0.0, abs=1e-9)
    assert record["model"]["peft"] is False and record["model"]["class"] == "LlamaForCausalLM"
    json.dumps(record, allow_nan=False)  # the record is plain, finite JSON


def _choice_logprobs(model, tokenizer, question: str, choices: list[str]) -> list[float]:
    """Sum of log p(" choice" | "Question: …\\nAnswer:") per choice, computed here without lm-eval.

    Tokenized as lm-eval does for causal models: encode context + continuation together and take the
    tokens after the context's own encoding as the continuation.
    """
    context = f"Question: {question}\nAnswer:"
    out = []
    for choice in choices:
        ctx = tokenizer.encode(context)
        whole = tokenizer.encode(context + " " + choice)
        ids = torch.tensor([whole])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        out.append(sum(logp[pos - 1, whole[pos]].item() for pos in range(len(ctx), len(whole))))
    return out


@needs_lm_eval
def test_accuracy_equals_an_independent_likelihood_argmax(tiny, record):
    """acc = share of questions whose gold choice has the highest summed log-likelihood; acc_norm divides
    each log-likelihood by the choice's length in characters first (lm-eval's definition)."""
    model, tokenizer = tiny
    hits, hits_norm = 0, 0
    for row in _rows("tiny_mc.jsonl"):
        lls = _choice_logprobs(model, tokenizer, row["question"], row["choices"])
        hits += max(range(3), key=lambda i: lls[i]) == row["answer"]
        hits_norm += max(range(3), key=lambda i: lls[i] / len(row["choices"][i])) == row["answer"]
    metrics = record["tasks"][MC]["metrics"]
    assert metrics["acc"]["value"] == pytest.approx(hits / 4)
    assert metrics["acc_norm"]["value"] == pytest.approx(hits_norm / 4)
    # The standard error of a mean of 0/1 values with n = 4: sqrt(p(1-p)/(n-1)).
    p = hits / 4
    assert metrics["acc"]["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 3))


@needs_lm_eval
def test_limit_and_fewshot_are_applied_and_recorded(tiny, task_dir):
    model, tokenizer = tiny
    out = run_general_ability(model, tokenizer, [MC], include_path=task_dir, limit=2, num_fewshot=1, batch_size=2)
    task = out["tasks"][MC]
    assert (task["n_samples"], task["n_available"]) == (2, 4)
    assert task["num_fewshot"] == 1 and out["num_fewshot"] == 1 and out["limit"] == 2
    assert (task["metrics"]["acc"]["value"] * 2) % 1 == pytest.approx(0.0, abs=1e-9)


@needs_lm_eval
def test_peft_model_runs_unmerged_and_matches_its_base(tiny_model_dir, task_dir, record):
    """Fresh LoRA adapters are a no-op (B = 0), so the wrapped model scores exactly like its base."""
    base, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    peft_model = apply_lora(base, LoraSettings(r=4, alpha=8))
    peft_model.train()
    out = run_general_ability(peft_model, tokenizer, [MC], include_path=task_dir, batch_size=4)
    assert out["model"]["peft"] is True
    assert is_peft_model(peft_model) and peft_model.training, "the wrapper and its train mode are kept"
    for metric in ("acc", "acc_norm"):
        assert out["tasks"][MC]["metrics"][metric]["value"] == record["tasks"][MC]["metrics"][metric]["value"]


@needs_lm_eval
def test_group_reports_one_top_level_row_over_its_tasks(tiny, task_dir):
    model, tokenizer = tiny
    out = run_general_ability(model, tokenizer, [GROUP], include_path=task_dir, batch_size=4)
    assert out["top_level"] == [GROUP]
    group = out["tasks"][GROUP]
    assert sorted(group["subtasks"]) == sorted([MC, GEN])
    assert (group["n_samples"], group["n_available"]) == (7, 7)  # 4 + 3 documents
    assert out["tasks"][MC]["group"] == GROUP and out["tasks"][GEN]["group"] == GROUP
    # The group's acc is aggregated over the tasks that have acc: here the multiple-choice task alone.
    assert group["metrics"]["acc"]["value"] == pytest.approx(out["tasks"][MC]["metrics"]["acc"]["value"])


# --- mistakes ---------------------------------------------------------------------------------------


@needs_lm_eval
def test_unknown_tasks_are_listed_with_close_matches(tiny, task_dir):
    model, tokenizer = tiny
    with pytest.raises(ObliviateError) as err:
        run_general_ability(model, tokenizer, ["obliviate_tiny_mcq", "arc_chalenge"], include_path=task_dir)
    text = str(err.value)
    assert "'obliviate_tiny_mcq': did you mean obliviate_tiny_mc" in text
    assert "'arc_chalenge': did you mean arc_challenge" in text


@needs_lm_eval
def test_the_paper_tasks_are_known_to_the_installed_lm_eval():
    manager = check_tasks(PAPER_TASKS)
    assert set(PAPER_TASKS) <= set(manager.all_tasks)
    assert list(PAPER_METRICS) == PAPER_TASKS


@needs_lm_eval
def test_missing_data_file_is_a_clear_error(tiny, tmp_path):
    text = (TASK_TEMPLATES / "tiny_mc.yaml").read_text().replace("@DATA_DIR@", str(tmp_path))
    (tmp_path / "tiny_mc.yaml").write_text(text)  # the YAML without its data file beside it
    model, tokenizer = tiny
    with pytest.raises(ObliviateError, match=r"could not load the data of obliviate_tiny_mc"):
        run_general_ability(model, tokenizer, [MC], include_path=tmp_path)


def test_bad_arguments_are_all_reported_before_anything_runs(tiny):
    model, tokenizer = tiny
    with pytest.raises(ConfigError) as err:
        run_general_ability(model, tokenizer, [MC, MC], limit=0, batch_size=0, num_fewshot=-1)
    assert len(err.value.errors) == 4
    assert any("named twice" in e for e in err.value.errors)
    assert any(e.startswith("limit:") for e in err.value.errors)


def _hide_lm_eval(monkeypatch) -> None:
    """Make every ``import lm_eval…`` fail, as in an environment without the extra."""
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    for name in [n for n in sys.modules if n.startswith("lm_eval.")]:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_lm_eval_says_how_to_install(tiny, tiny_model_dir, tmp_path, monkeypatch, capsys):
    _hide_lm_eval(monkeypatch)
    model, tokenizer = tiny
    with pytest.raises(ObliviateError, match=r"pip install 'obliviate\[lm-eval\]'"):
        run_general_ability(model, tokenizer, ["arc_challenge"])
    code = main(["general", "--model", str(tiny_model_dir), "--tasks", "arc_challenge",
                 "--out", str(tmp_path / "g.json")])
    assert code == 2
    assert INSTALL_HINT in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_incompatible_lm_eval_release_says_which_versions_work(tiny, tmp_path, monkeypatch):
    """lm-eval 0.4.9 fails at import beside transformers 5 with an AttributeError; a stand-in package that
    fails the same way must give the install message, not a traceback."""
    fake = tmp_path / "fake" / "lm_eval"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "evaluator.py").write_text("import transformers\ntransformers.AutoModelForVision2Seq\n")
    # setitem records each entry (or its absence) so that the undo restores the real modules and drops the
    # stand-in; the plain del then lets the import below find the stand-in on sys.path.
    for name in {"lm_eval", "lm_eval.evaluator", *(n for n in sys.modules if n.startswith("lm_eval."))}:
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(fake.parent))
    model, tokenizer = tiny
    with pytest.raises(ObliviateError) as err:
        run_general_ability(model, tokenizer, ["arc_challenge"])
    assert "AttributeError" in str(err.value) and "lm-eval>=0.4.10,<0.5" in str(err.value)
    assert INSTALL_HINT in str(err.value)


# --- results.json and the report --------------------------------------------------------------------


def _hand_record(acc: float, limit: int | None = None) -> dict:
    """A general-ability record written out by hand, as run_general_ability lays it out."""
    return {
        "record_version": 1, "lm_eval_version": "0.4.13", "task_names": ["arc_challenge", "gsm8k"],
        "limit": limit, "num_fewshot": None, "batch_size": 8, "include_path": None,
        "top_level": ["arc_challenge", "gsm8k"],
        "tasks": {
            "arc_challenge": {"metrics": {
                "acc": {"value": acc, "stderr": 0.0125, "higher_is_better": True},
                "acc_norm": {"value": 0.3, "stderr": None, "higher_is_better": True}},
                "n_samples": 1172, "n_available": 1172, "num_fewshot": 0, "group": None, "subtasks": []},
            "gsm8k": {"metrics": {
                "exact_match,strict-match": {"value": None, "stderr": None, "higher_is_better": True,
                                             "available": False, "reason": "lm-eval returned 'N/A'"}},
                "n_samples": 1319, "n_available": 1319, "num_fewshot": 5, "group": None, "subtasks": []},
        },
    }


def _with_general(name: str, general: dict | None) -> dict:
    results = json.loads(RESULTS_FIXTURE.read_text())
    results["run"]["method"] = name
    if general is not None:
        results["general_ability"] = general
    return results


def test_report_renders_the_general_ability_table_only_when_present():
    a = _with_general("ME+GD", _hand_record(0.4125))
    b = _with_general("IDK+AP", _hand_record(0.35, limit=10))
    plain = _with_general("GA+GD", None)

    md = markdown_table([a, b, plain])
    assert "### General ability" in md
    assert "| model | arc_challenge acc ↑ | arc_challenge acc_norm ↑ | gsm8k exact_match,strict-match ↑ |" in md
    assert "| ME+GD | 0.412 ± 0.013 | 0.300 | n/a |" in md
    assert "| IDK+AP | 0.350 ± 0.013 |" in md
    assert "GA+GD |" not in md.split("### General ability")[1], "a model without the section gets no row"
    assert "not comparable with published ones" in md  # one record used --limit
    assert "IDK+AP: lm-eval 0.4.13, each task’s default shots, first 10 documents per task" in md

    page = html_report([a, b, plain])
    section = page.split('<section id="general">')[1].split("</section>")[0]
    assert "<h2>General ability</h2>" in section
    assert '<td class="best">0.412 ± 0.013</td>' in section  # higher is better: ME+GD's 0.412 beats 0.350
    assert "lm-eval returned &#x27;N/A&#x27;" in section  # the reason of an unavailable value, escaped

    without = markdown_table([plain])
    assert "General ability" not in without and "General ability" not in html_report([plain])


def test_report_rejects_a_malformed_section_naming_the_field():
    bad = _hand_record(0.4)
    bad["tasks"]["arc_challenge"]["metrics"]["acc"]["value"] = "high"
    with pytest.raises(DataError, match=r"general_ability\.tasks\.arc_challenge\.metrics\.acc\.value"):
        markdown_table([_with_general("ME+GD", bad)])


def test_merge_keeps_the_rest_of_the_record(tmp_path):
    path = tmp_path / "results.json"
    shutil.copy(RESULTS_FIXTURE, path)
    before = json.loads(path.read_text())
    general = _hand_record(0.4)
    merged = add_general_ability(tmp_path, general)  # a run folder is accepted as well as the file
    after = json.loads(path.read_text())
    assert after == merged
    assert after.pop("general_ability") == general
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "no temporary file left behind"
    # Merging again replaces the section rather than nesting or duplicating it.
    add_general_ability(path, _hand_record(0.5))
    assert json.loads(path.read_text())["general_ability"]["tasks"]["arc_challenge"]["metrics"]["acc"]["value"] == 0.5


def test_merge_refuses_files_that_are_not_evaluation_records(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="not an evaluation record"):
        add_general_ability(other, _hand_record(0.4))
    assert json.loads(other.read_text()) == {"hello": 1}
    with pytest.raises(DataError, match="no such file"):
        add_general_ability(tmp_path / "missing.json", _hand_record(0.4))


@needs_lm_eval
def test_real_record_merges_and_renders(record, tmp_path):
    path = tmp_path / "results.json"
    shutil.copy(RESULTS_FIXTURE, path)
    add_general_ability(path, copy.deepcopy(record))
    md_path = tmp_path / "report.md"
    write_report([path], tmp_path / "report.html", markdown_out=md_path)
    md = md_path.read_text()
    acc = record["tasks"][MC]["metrics"]["acc"]
    assert f"{MC} acc ↑" in md and f"{acc['value']:.3f} ± {acc['stderr']:.3f}" in md
    assert f"{GEN} exact_match ↑" in md
    assert "General ability" in (tmp_path / "report.html").read_text()


# --- command line -----------------------------------------------------------------------------------


def _run_folder(tiny_model_dir: Path, root: Path, *, with_results: bool) -> Path:
    """A minimal finished run folder: run.json and model/, and optionally an evaluation results.json."""
    run = root / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "run.json").write_text(json.dumps({"kind": "unlearn", "method": {"name": "ME+GD"}}))
    if with_results:
        shutil.copy(RESULTS_FIXTURE, run / "results.json")
    return run


@needs_lm_eval
def test_cli_on_a_run_folder_writes_and_merges(tiny_model_dir, task_dir, tmp_path, capsys):
    run = _run_folder(tiny_model_dir, tmp_path, with_results=True)
    code = main(["general", "--model", str(run), "--tasks", f"{MC},{GEN}", "--include-path", str(task_dir),
                 "--limit", "2", "--batch-size", "2"])
    assert code == 0
    standalone = json.loads((run / "general_ability.json").read_text())
    merged = json.loads((run / "results.json").read_text())
    assert merged["general_ability"] == standalone
    assert merged["sets"] == json.loads(RESULTS_FIXTURE.read_text())["sets"]
    assert standalone["tasks"][MC]["n_samples"] == 2 and standalone["tasks"][GEN]["n_samples"] == 2
    assert standalone["model"]["spec"] == str(run / "model")
    out = capsys.readouterr().out
    assert MC in out and "merged into" in out
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "### General ability" in capsys.readouterr().out


@needs_lm_eval
def test_cli_without_results_writes_the_standalone_record_only(tiny_model_dir, task_dir, tmp_path):
    run = _run_folder(tiny_model_dir, tmp_path, with_results=False)
    assert main(["general", "--model", str(run), "--tasks", MC, "--include-path", str(task_dir), "--limit", "1"]) == 0
    assert (run / "general_ability.json").is_file() and not (run / "results.json").exists()


def test_cli_user_mistakes_exit_2(tiny_model_dir, tmp_path, capsys):
    precious = tmp_path / "precious.json"
    precious.write_text(json.dumps({"keep": True}))
    assert main(["general", "--model", str(tiny_model_dir), "--tasks", MC, "--out", str(precious)]) == 2
    assert "not overwriting" in capsys.readouterr().err
    assert json.loads(precious.read_text()) == {"keep": True}
    assert main(["general", "--model", str(tiny_model_dir), "--tasks", MC]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert main(["general", "--model", str(tiny_model_dir), "--tasks", " , ", "--out", str(tmp_path / "g.json")]) == 2
    assert "--tasks" in capsys.readouterr().err
