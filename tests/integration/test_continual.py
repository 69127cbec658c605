"""Continual unlearning (docs/continual.md): task order, shrinking retain sets, references, resuming, summary, report.

Split assembly is checked on tiny continual-layout data written here (and, where present, on the shared TOFU
data, without training). Training runs use the tiny random Llama for two steps of one or two optimizer steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.benchmarks.tofu import continual_splits
from obliviate.cli import main
from obliviate.config import ContinualConfig, continual_config_from_dict, load_continual_config
from obliviate.errors import ConfigError, DataError, ObliviateError
from obliviate.models import is_peft_model
from obliviate.reporting import html_report, load_results
from obliviate.reporting.continual import continual_markdown
from obliviate.scenarios.continual import plan_continual, run_continual
from obliviate.training import run as run_mod
from obliviate.training.run import is_complete

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TASKS, ROWS_PER_TASK = 3, 2
# A weight every tiny-Llama checkpoint has, to compare models without loading them.
PROBE = "model.layers.0.self_attn.q_proj.weight"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _qa(tag: str, i: int) -> dict:
    return {"question": f"What did author {tag}{i} write?", "answer": f"Author {tag}{i} wrote book number {i}."}


def _perturbed(row: dict) -> dict:
    return {**row, "paraphrased_answer": row["answer"].replace("wrote", "is the author of"),
            "perturbed_answer": [row["answer"].replace("book", "poem"), row["answer"].replace("book", "play")]}


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory) -> Path:
    """A tiny TOFU folder in the continual layout: forget01 with 3 tasks of 2 rows, retain90 with 3 rows."""
    d = tmp_path_factory.mktemp("tofu")
    forget = [{"task_id": str(t), **_qa(f"T{t}-", i)} for t in range(1, TASKS + 1) for i in range(ROWS_PER_TASK)]
    retain = [_qa("R", i) for i in range(3)]
    _jsonl(d / "forget01.json", forget)
    _jsonl(d / "forget01_perturbed.json", [_perturbed(r) for r in forget])
    _jsonl(d / "retain90.json", retain)
    _jsonl(d / "retain_perturbed.json", [_perturbed(r) for r in retain[:2]])
    _jsonl(d / "real_authors_perturbed.json", [
        {"question": "Who wrote 'Hamlet'?", "answer": "William Shakespeare",
         "perturbed_answer": ["Charles Dickens", "Mark Twain"],
         "original_answer": "'Hamlet' was written by William Shakespeare."}])
    _jsonl(d / "world_facts_perturbed.json", [
        {"question": "What is the capital of France?", "answer": "Paris", "perturbed_answer": ["Rome", "Oslo"],
         "original_answer": "The capital of France is Paris."}])
    return d


@pytest.fixture(scope="module")
def top_up_file(tmp_path_factory) -> Path:
    return _jsonl(tmp_path_factory.mktemp("topup") / "top_up.json", [_qa("X", i) for i in range(2)])


def _questions(rows) -> list[str]:
    return [r.question for r in rows]


def _tofu_cfg(tofu_dir: Path, out: Path | str = "unused", **sections) -> ContinualConfig:
    raw = {"output_dir": str(out), "data": {"tofu": str(tofu_dir), "split": "forget01"}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return continual_config_from_dict(raw)


# -- the plan: which rows each step sees --------------------------------------------------------------------
def test_step_k_forgets_task_k_and_retain_shrinks_by_the_next_task(tofu_dir, top_up_file):
    plan = plan_continual(_tofu_cfg(tofu_dir, continual={"top_up": str(top_up_file)}))
    assert plan.total_tasks == TASKS and [s.step for s in plan.steps] == [1, 2, 3]
    task_q = {t: [f"What did author T{t}-{i} write?" for i in range(ROWS_PER_TASK)] for t in range(1, TASKS + 1)}
    base_q = [f"What did author R{i} write?" for i in range(3)]
    top_q = [f"What did author X{i} write?" for i in range(2)]
    for s in plan.steps:
        k = s.step
        assert _questions(s.forget) == task_q[k]
        assert s.tasks_forgotten == list(range(1, k + 1))
        later = [q for t in range(k + 1, TASKS + 1) for q in task_q[t]]
        # Base rows, then the tasks not yet forgotten, then the top-up: nothing forgotten so far is retained.
        assert _questions(s.retain) == base_q + later + top_q
        assert (s.retain_base_items, s.retain_pending_items, s.top_up_items) == (3, len(later), 2)
        # The same sets as the TOFU module's own continual split.
        forget, retain = continual_splits(tofu_dir, "forget01", k, top_up=s.retain[-2:])
        assert _questions(forget) == _questions(s.forget) and _questions(retain) == _questions(s.retain)
        # Evaluation after step k: the perturbed rows of every task forgotten so far.
        sets = {e.name: e for e in s.benchmark.sets}
        assert _questions(sets["forget"].records) == [q for t in range(1, k + 1) for q in task_q[t]]
        assert all(r.perturbed_answers for r in sets["forget"].records)
        assert set(sets) == {"forget", "retain", "real_authors", "world_facts"}
        assert s.benchmark.info["tasks"] == list(range(1, k + 1)) and "task" not in s.benchmark.info
    sizes = [len(s.retain) for s in plan.steps]
    assert [a - b for a, b in zip(sizes, sizes[1:])] == [ROWS_PER_TASK, ROWS_PER_TASK]


def test_steps_and_limit_cut_the_plan(tofu_dir):
    plan = plan_continual(_tofu_cfg(tofu_dir, continual={"steps": 2}, data={"limit": 1}))
    assert len(plan.steps) == 2 and plan.total_tasks == TASKS
    # limit keeps the first row of each task and of the base set, so retain still loses one task per step.
    assert [len(s.forget) for s in plan.steps] == [1, 1]
    assert [len(s.retain) for s in plan.steps] == [1 + 2, 1 + 1]


def test_synthetic_benchmark_tasks_come_from_task_id(tmp_path):
    bench = generate_benchmark(authors=4, facts=2, seed=0, forget_authors=3).write(tmp_path / "bench")
    cfg = continual_config_from_dict({"output_dir": str(tmp_path / "run"), "data": {
        "forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")}})
    plan = plan_continual(cfg)
    forget_rows = [json.loads(line) for line in (bench / "forget.json").read_text().splitlines()]
    retain_rows = [json.loads(line) for line in (bench / "retain.json").read_text().splitlines()]
    assert plan.data["kind"] == "synthetic" and plan.total_tasks == 3
    for s in plan.steps:
        assert {r.task_id for r in s.forget} == {s.step}
        assert _questions(s.forget) == [r["question"] for r in forget_rows if int(r["task_id"]) == s.step]
        assert _questions(s.retain) == ([r["question"] for r in retain_rows]
                                        + [r["question"] for r in forget_rows if int(r["task_id"]) > s.step])
        forget_eval = next(e for e in s.benchmark.sets if e.name == "forget").records
        assert {r.task_id for r in forget_eval} == set(range(1, s.step + 1))
        assert all(r.paraphrased_answer for r in forget_eval)


def test_forget_rows_without_task_id_or_with_gaps_are_data_errors(tmp_path):
    rows = [_qa("A", 0), {**_qa("A", 1), "task_id": 1}]
    cfg = continual_config_from_dict({"data": {"forget": str(_jsonl(tmp_path / "f.json", rows))}})
    with pytest.raises(DataError, match="task_id"):
        plan_continual(cfg)
    rows = [{**_qa("A", 0), "task_id": 1}, {**_qa("A", 1), "task_id": 3}]
    cfg = continual_config_from_dict({"data": {"forget": str(_jsonl(tmp_path / "g.json", rows))}})
    with pytest.raises(DataError, match=r"1..K without gaps; found \[1, 3\]"):
        plan_continual(cfg)


def test_more_steps_than_tasks_is_a_config_error(tofu_dir, tmp_path):
    with pytest.raises(ConfigError, match="has 3"):
        plan_continual(_tofu_cfg(tofu_dir, continual={"steps": 4}))
    # The hub layout holds one forget set per split: a second step has nothing to forget.
    hub = tmp_path / "hub"
    hub.mkdir()
    _jsonl(hub / "forget01.json", [_qa("H", 0)])
    _jsonl(hub / "retain99.json", [_qa("R", 0)])
    assert len(plan_continual(_tofu_cfg(hub, continual={"steps": 1})).steps) == 1
    with pytest.raises(ConfigError, match="hub layout"):
        plan_continual(_tofu_cfg(hub, continual={"steps": 2}))


def test_top_up_with_a_row_to_forget_is_refused_before_training(tofu_dir, tmp_path):
    leak = _jsonl(tmp_path / "leak.json", [_qa("X", 0), _qa("T2-", 1)])  # a row of task 2
    with pytest.raises(DataError, match="forget row"):
        plan_continual(_tofu_cfg(tofu_dir, continual={"top_up": str(leak)}))
    # Forgetting task 1 only, task 2's rows are still to be kept: the same file is a valid top-up.
    plan = plan_continual(_tofu_cfg(tofu_dir, continual={"top_up": str(leak), "steps": 1}))
    assert plan.steps[0].top_up_items == 2


def test_config_validation_lists_every_error():
    with pytest.raises(ConfigError) as err:
        continual_config_from_dict({"continual": {"steps": 0}, "lora": {"enabled": True, "merge": False},
                                    "data": {"task": 2}, "train": {"learning_rate": 0}})
    text = str(err.value)
    assert len(err.value.errors) == 5, text
    for needle in ("continual.steps", "lora.merge", "data.task", "data.tofu", "train.learning_rate"):
        assert needle in text
    with pytest.raises(ConfigError, match="continual.top_up"):
        continual_config_from_dict({"data": {"tofu": "x", "retain": "r.json"}})
    with pytest.raises(ConfigError, match="did you mean 'continual.steps'"):
        continual_config_from_dict({"data": {"tofu": "x"}, "continual": {"stepz": 2}})
    with pytest.raises(ConfigError, match="continual.fix_ref_model: expected bool"):
        continual_config_from_dict({"data": {"tofu": "x"}}, ["continual.fix_ref_model=maybe"])


def test_shipped_continual_configs_validate():
    paths = sorted((ROOT / "configs" / "continual").glob("*.yaml"))
    assert {p.name for p in paths} >= {"me_gd_forget01.yaml", "idk_ap_forget01.yaml", "npo_gd_forget01.yaml",
                                       "cpu_synthetic_me_gd.yaml"}
    for path in paths:
        cfg = load_continual_config(path)
        assert isinstance(cfg, ContinualConfig) and cfg.continual.fix_ref_model is False
        if path.name.endswith("_forget01.yaml"):
            # The paper's Llama-2-7B settings, as in configs/tofu/.
            t = cfg.train
            assert (t.learning_rate, t.num_epochs, t.batch_size, t.gradient_accumulation_steps) == (1e-5, 5, 4, 4)
            assert cfg.data.split == "forget01" and cfg.model.name == "locuslab/tofu_ft_llama2-7b"
    with pytest.raises(ConfigError, match="kind is 'unlearn'"):
        load_continual_config(ROOT / "configs" / "tofu" / "me_gd_forget01.yaml")


def test_tofu_shared_data_continual_layout(shared_data_dir):
    """Split assembly on the real TOFU files: every split's tasks, sizes and disjointness (no training)."""
    tofu = shared_data_dir / "tofu"
    if not (tofu / "forget01.json").is_file():
        pytest.skip("TOFU continual layout not in the shared data folder")
    for split, tasks, per_task, base in (("forget01", 10, 40, 3600), ("forget05", 10, 200, 2000),
                                         ("forget10", 9, 400, 400)):
        plan = plan_continual(continual_config_from_dict({"data": {"tofu": str(tofu), "split": split}}))
        assert plan.total_tasks == tasks and len(plan.steps) == tasks
        for s in plan.steps:
            assert len(s.forget) == per_task and {r.task_id for r in s.forget} == {s.step}
            assert s.retain_base_items == base
            assert len(s.retain) == base + per_task * (tasks - s.step)
            assert s.eval_forget_items == per_task * s.step
            retained = {(r.question, r.answer) for r in s.retain}
            forgotten = {(r.question, r.answer) for t in plan.steps[: s.step] for r in t.forget}
            assert not retained & forgotten
        # Step 1 is the standard split: 99/95/90 % of TOFU's 4,000 rows are retained.
        assert len(plan.steps[0].retain) == 4000 - per_task


def test_cli_dry_run_prints_the_plan_and_bad_configs_exit_2(tofu_dir, tmp_path, capsys):
    out_dir = tmp_path / "dry"
    assert main(["continual", f"data.tofu={tofu_dir}", "data.split=forget01", f"output_dir={out_dir}",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 task(s)" in out and "config and data are valid" in out
    assert not out_dir.exists()  # a dry run writes nothing
    assert main(["continual", f"data.tofu={tofu_dir}", "data.split=forget01", "continual.steps=9",
                 f"output_dir={tmp_path / 'x'}"]) == 2
    assert "continual.steps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# -- training runs ------------------------------------------------------------------------------------------
def _train_sections(tiny_model_dir: Path, method: str, **train) -> dict:
    return {
        "model": {"name": str(tiny_model_dir), "dtype": "float32"},
        "method": {"name": method},
        "train": {"learning_rate": 1e-3, "num_epochs": 1.0, "max_steps": 1, "batch_size": 2,
                  "gradient_accumulation_steps": 1, "warmup_epochs": 0.0, "seed": 0, **train},
        "eval": {"max_new_tokens": 4, "batch_size": 8, "embedding_model": None, "nli_model": None},
    }


@pytest.fixture
def reference_spy(monkeypatch):
    """Records, for every trainer built, its output folder and the reference model's PROBE weight (or None).

    NPO and DPO given no other reference model make no frozen copy: they cache their reference log-probs from the
    starting model itself, before it trains — then the reference is the model handed to the trainer, as it is."""
    seen: list[tuple[str, object]] = []

    class Spy(run_mod.UnlearningTrainer):
        def __init__(self, *args, reference_model=None, **kwargs):
            reference = reference_model
            objective, model = kwargs["objective"], kwargs["model"]
            if reference is None and objective.ref_logp_parts and not objective.ref_logit_parts \
                    and not is_peft_model(model):
                reference = model
            probe = None if reference is None else reference.state_dict()[PROBE].detach().clone()
            seen.append((str(kwargs["args"].output_dir), probe))
            super().__init__(*args, reference_model=reference_model, **kwargs)

    monkeypatch.setattr(run_mod, "UnlearningTrainer", Spy)
    return seen


def _probe(model_dir: Path):
    return load_file(str(model_dir / "model.safetensors"))[PROBE]


def test_two_steps_chain_models_record_results_summary_and_report(tiny_model_dir, tofu_dir, tmp_path,
                                                                  reference_spy, capsys):
    out = tmp_path / "run"
    raw = {"kind": "continual", "output_dir": str(out), "data": {"tofu": str(tofu_dir), "split": "forget01"},
           "continual": {"steps": 2}, **_train_sections(tiny_model_dir, "NPO+GD")}
    config = tmp_path / "continual.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["continual", "-c", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed

    step1, step2 = out / "step_01", out / "step_02"
    assert is_complete(step1) and is_complete(step2) and not (out / "step_03").exists()
    # Step 2 starts from step 1's model, and (fix_ref_model off) its reference is that model too.
    assert yaml.safe_load((step2 / "config.yaml").read_text())["model"]["name"] == str(step1 / "model")
    assert [Path(d).parent.name for d, _ in reference_spy] == ["step_01.partial", "step_02.partial"]
    ref_step2 = reference_spy[1][1]
    assert ref_step2 is not None and ref_step2.equal(_probe(step1 / "model"))
    assert not ref_step2.equal(_probe(tiny_model_dir))

    summary = json.loads((out / "continual.json").read_text())
    assert summary["status"] == "complete" and [s["step"] for s in summary["steps"]] == [1, 2]
    for k, folder in ((1, step1), (2, step2)):
        results = json.loads((folder / "results.json").read_text())
        info = results["run"]["continual"]
        assert info["step"] == k and info["tasks_forgotten"] == list(range(1, k + 1))
        assert info["fix_ref_model"] is False
        expected_start = str(tiny_model_dir) if k == 1 else str(step1 / "model")
        assert info["start_model"] == expected_start and info["reference_model"] == expected_start
        # The forget set after step k is every task forgotten so far.
        forget = results["sets"]["forget"]
        assert forget["size"] == ROWS_PER_TASK * k
        assert [it["question"] for it in forget["items"]] == [
            f"What did author T{t}-{i} write?" for t in range(1, k + 1) for i in range(ROWS_PER_TASK)]
        entry = summary["steps"][k - 1]
        assert entry["folder"] == folder.name and entry["forget_items"] == ROWS_PER_TASK
        assert entry["retain_items"] == 3 + ROWS_PER_TASK * (TASKS - k)
        for name in ("model_utility", "forget_efficacy", "forget_quality"):
            assert entry[name].get("value") == results["aggregates"][name]["value"]
            assert entry[name].get("available") == results["aggregates"][name].get("available")
        assert entry["forget_efficacy"]["value"] is not None

    page = (out / "report.html").read_text()
    assert '<section id="continual">' in page and '<svg class="continual"' in page
    for series in ("MU", "FE"):
        for tasks in (1, 2):
            assert f'data-series="{series}" data-tasks="{tasks}"' in page
    assert 'class="line" data-series="FE"' in page  # two available FE values are joined by a line
    markdown = (out / "report.md").read_text()
    assert "Continual unlearning, after each step" in markdown and "| 2 | 2 |" in markdown


def test_fixed_reference_is_the_original_model_and_lora_steps_are_merged(tiny_model_dir, tofu_dir, tmp_path,
                                                                         reference_spy):
    out = tmp_path / "run"
    cfg = _tofu_cfg(tofu_dir, out, continual={"steps": 2, "fix_ref_model": True},
                    lora={"enabled": True, "r": 4}, **_train_sections(tiny_model_dir, "NPO+GD"))
    result = run_continual(cfg)
    step1 = out / "step_01"
    original = _probe(tiny_model_dir)
    assert len(reference_spy) == 2
    for _, probe in reference_spy:
        assert probe is not None and probe.equal(original)
    # Each step's adapters are merged into a plain model, and the next step starts from it.
    assert not (step1 / "model" / "adapter_config.json").exists()
    assert not _probe(step1 / "model").equal(original)
    assert yaml.safe_load((out / "step_02" / "config.yaml").read_text())["model"]["name"] == str(step1 / "model")
    info = json.loads((out / "step_02" / "results.json").read_text())["run"]["continual"]
    assert info["fix_ref_model"] is True and info["reference_model"] == str(tiny_model_dir)
    assert result.model_dir == out / "step_02" / "model"


def test_interrupted_run_continues_from_the_last_finished_step(tiny_model_dir, tofu_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = _tofu_cfg(tofu_dir, out, continual={"steps": 2},
                    **_train_sections(tiny_model_dir, "ME+GD", max_steps=2, save_strategy="steps", save_steps=1))
    real_step = run_mod.UnlearningTrainer.training_step

    def interrupt_in_step_2(self, *args, **kwargs):
        # After step 2's first optimizer step (and its checkpoint), as if the user pressed Ctrl-C.
        if "step_02" in str(self.args.output_dir) and self.state.global_step == 1:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(run_mod.UnlearningTrainer, "training_step", interrupt_in_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_continual(cfg)
    step1 = out / "step_01"
    assert is_complete(step1) and not (out / "step_02").exists()
    assert (out / "step_02.partial" / "checkpoints" / "checkpoint-1").is_dir()
    summary = json.loads((out / "continual.json").read_text())
    assert summary["status"] == "running" and [s["step"] for s in summary["steps"]] == [1]
    files = [step1 / "run.json", step1 / "results.json", step1 / "model" / "model.safetensors"]
    before = {f: f.stat().st_mtime_ns for f in files}
    weights = _probe(step1 / "model")

    monkeypatch.setattr(run_mod.UnlearningTrainer, "training_step", real_step)
    result = run_continual(cfg, resume=True)
    assert [s.skipped for s in result.steps] == [True, False]
    assert {f: f.stat().st_mtime_ns for f in files} == before and _probe(step1 / "model").equal(weights)
    run2 = json.loads((out / "step_02" / "run.json").read_text())
    assert run2["resumed_from"].endswith("checkpoint-1") and run2["optimizer_steps"] == 2
    summary = json.loads((out / "continual.json").read_text())
    assert summary["status"] == "complete" and [s["step"] for s in summary["steps"]] == [1, 2]


def test_a_different_run_in_the_output_folder_is_refused(tofu_dir, tmp_path):
    out = tmp_path / "run"
    (out / "step_01").mkdir(parents=True)
    (out / "continual.json").write_text(json.dumps({"kind": "continual", "config": {"method": {"name": "GA"}}}))
    with pytest.raises(ObliviateError, match="different config"):
        run_continual(_tofu_cfg(tofu_dir, out))
    (out / "continual.json").unlink()
    with pytest.raises(ObliviateError, match="no readable continual.json"):
        run_continual(_tofu_cfg(tofu_dir, out))


def test_retain_results_must_cover_every_forget_question_before_step_1(tofu_dir, tmp_path):
    """Forget Quality compares against a retain model's values for all tasks 1..N: checked before training."""
    partial = tmp_path / "retain_results.json"
    partial.write_text(json.dumps({"sets": {"forget": {"items": [
        {"question": "What did author T1-0 write?", "truth_ratio_x": 0.5}]}}}))
    out = tmp_path / "run"
    with pytest.raises(DataError, match="lacks truth-ratio values"):
        run_continual(_tofu_cfg(tofu_dir, out, eval={"retain_results": str(partial)}))
    assert not out.exists()


# -- the report's continual section, on the shipped example records -----------------------------------------
def _fixture_steps(run_dir: str = "runs/c") -> list[dict]:
    records = [load_results(ROOT / "tests" / "fixtures" / "results" / name) for name in ("me_gd", "ga_gd")]
    for k, record in enumerate(records, start=1):
        record["run"]["continual"] = {"step": k, "tasks_forgotten": list(range(1, k + 1)), "run_dir": run_dir}
    return records


def test_report_plots_one_continual_run_and_names_other_records():
    target = load_results(ROOT / "tests" / "fixtures" / "results" / "target")
    steps = _fixture_steps()
    page = html_report([target, *steps])
    assert '<svg class="continual"' in page
    for k, record in enumerate(steps, start=1):
        mu = record["aggregates"]["model_utility"]["value"]
        assert f'data-series="MU" data-tasks="{k}"' in page and f"{mu:.3f}" in page
    assert "not plotted:" in page.split('<section id="continual">')[1].split("</section>")[0]
    assert "| 1 | 1 |" in continual_markdown(steps)


def test_report_has_no_continual_plot_without_one_continual_run():
    plain = [load_results(ROOT / "tests" / "fixtures" / "results" / name) for name in ("target", "me_gd")]
    assert '<section id="continual">' not in html_report(plain)
    assert continual_markdown(plain) == ""
    mixed = _fixture_steps("runs/a")[:1] + _fixture_steps("runs/b")[1:]
    assert '<section id="continual">' not in html_report(mixed)
