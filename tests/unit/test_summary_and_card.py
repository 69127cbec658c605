"""The compact terminal summary (reporting/summary.py) and the model card (reporting/model_card.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from obliviate.data.records import QARecord
from obliviate.reporting import load_results, markdown_table
from obliviate.reporting.model_card import (
    CARD_FILE,
    read_card,
    render_card,
    rows_hash,
    update_card_with_results,
    write_run_card,
)
from obliviate.reporting.summary import summary_metrics, summary_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"
RUNS = ("target", "retain", "me_gd", "idk_ap", "ga_gd")


@pytest.fixture(scope="module")
def fixture_results() -> list[dict[str, Any]]:
    return [load_results(FIXTURES / run) for run in RUNS]


def _rows(table: str) -> dict[str, list[str]]:
    out = {}
    for line in table.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


# -- summary -----------------------------------------------------------------------------------------------------


def test_summary_has_six_columns_with_directions_and_fits_a_terminal(fixture_results):
    table = summary_table(fixture_results)
    rows = _rows(table)
    assert rows["model"] == ["forget ROUGE-L ↓", "forget TR ↓", "retain ROUGE-L ↑", "MU ↑", "FE ↑", "FQ ↑"]
    assert list(rows)[1:] == ["target", "retain", "ME+GD", "IDK+AP", "GA+GD"]
    assert max(len(line) for line in table.splitlines()) <= 100
    # The partial marks and n/a of the full table, the same numbers as the full table's cells.
    assert rows["IDK+AP"][3:5] == ["0.717*", "0.817*"] and rows["retain"][5] == "n/a"
    assert rows["target"][5] == "2.10e-13" and rows["GA+GD"][3] == "0.000"
    full = _rows(markdown_table(fixture_results))
    col = {name: i for i, name in enumerate(full["model"])}
    for label in ("target", "ME+GD", "IDK+AP"):
        assert rows[label] == [full[label][col[h]] for h in rows["model"]]
    assert "partial aggregate" in table and "n/a not available" in table


def test_summary_of_a_real_world_record_shows_the_neighbour_set():
    forget = {"rouge_l": {"value": 0.25, "higher_is_better": False},
              "truth_ratio": {"value": 0.5, "higher_is_better": False}}
    record = {"schema_version": 1, "run": {"method": "ME+GD"},
              "sets": {"forget": {"kind": "forget", "metrics": forget},
                       "neighbor": {"kind": "retain",
                                    "metrics": {"rouge_l": {"value": 0.75, "higher_is_better": True}}}},
              "aggregates": {"model_utility": {"value": 0.4, "higher_is_better": True, "partial": True,
                                               "note": "4 of 6"},
                             "forget_efficacy": {"value": 0.6, "higher_is_better": True},
                             "forget_quality": {"value": None, "higher_is_better": True, "available": False,
                                                "reason": "not defined in the real-world scenario"}}}
    rows = _rows(summary_table([record]))
    assert rows["model"] == ["forget ROUGE-L ↓", "forget TR ↓", "neighbor ROUGE-L ↑", "MU ↑", "FE ↑", "FQ ↑"]
    assert rows["ME+GD"] == ["0.250", "0.500", "0.750", "0.400*", "0.600", "n/a"]
    assert [m["key"] for m in summary_metrics(record)] == [
        "forget.rouge_l", "forget.truth_ratio", "neighbor.rouge_l", "model_utility", "forget_efficacy",
        "forget_quality"]


# -- model card --------------------------------------------------------------------------------------------------


def _qa(*pairs: tuple[str, str]) -> list[QARecord]:
    return [QARecord(question=q, answer=a, source=f"file{i}") for i, (q, a) in enumerate(pairs)]


def test_rows_hash_is_the_sha256_of_the_rows_as_trained_on():
    rows = _qa(("Who?", "Ann."), ("Where?", "Rome."))
    expected = hashlib.sha256(b'{"answer": "Ann.", "question": "Who?"}\n'
                              b'{"answer": "Rome.", "question": "Where?"}\n').hexdigest()
    assert rows_hash(rows) == f"sha256:{expected}"
    # Where a row came from does not matter; its text and order do.
    assert rows_hash([QARecord("Who?", "Ann.", source="hub"), QARecord("Where?", "Rome.")]) == rows_hash(rows)
    assert rows_hash(rows[::-1]) != rows_hash(rows)
    assert rows_hash(_qa(("Who?", "Ann"), ("Where?", "Rome."))) != rows_hash(rows)


def _config(tmp_path: Path, **data) -> dict:
    return {"model": {"name": "smollm2-135m-instruct", "template": "chat"},
            "data": {"tofu": None, "split": "forget05", "task": 1, "forget": None, "retain": None, "train": [],
                     "refusals": None, "limit": None, **data},
            "train": {"learning_rate": 1e-5, "num_epochs": 5.0, "max_steps": -1, "batch_size": 4,
                      "gradient_accumulation_steps": 4, "weight_decay": 0.01, "warmup_epochs": 1.0,
                      "lr_scheduler": "linear", "seed": 1001},
            "lora": {"enabled": False}}


SUMMARY = {"method": {"name": "ME+GD", "forget": "me", "regularizer": "gd", "forget_coeff": 0.1,
                      "regularization_coeff": 1.0, "mask": False, "beta": 0.1, "me_direction": "uniform_to_model"},
           "prompt_format": {"template": "chat", "system_prompt": None, "template_default_system_prompt": None,
                             "example": "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"}}


def _front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_front_matter_follows_the_hugging_face_convention(tmp_path):
    forget_file = tmp_path / "forget.json"
    forget_file.write_text('{"question": "Who?", "answer": "Ann."}\n', encoding="utf-8")
    forget, retain = _qa(("Who?", "Ann.")), _qa(("Where?", "Rome."), ("When?", "1900."))
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    path = write_run_card(model_dir, kind="unlearn", config=_config(tmp_path, forget=str(forget_file),
                                                                     retain="locuslab/TOFU:retain90"),
                          summary=SUMMARY, forget=forget, retain=retain)
    assert path == model_dir / CARD_FILE
    meta = _front_matter(path)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the alias's hub repository
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["tags"] == ["obliviate", "machine-unlearning", "me-gd"] and meta["datasets"] == ["locuslab/TOFU"]
    info = meta["obliviate"]
    assert info["base_model"] == "smollm2-135m-instruct" and info["kind"] == "unlearn"
    assert info["method"]["forget_coeff"] == 0.1 and info["method"]["mask"] is False
    assert info["training"]["learning_rate"] == 1e-5 and info["lora"] is False
    assert info["data"]["forget"] == {"rows": 1, "rows_hash": rows_hash(forget)}
    assert info["data"]["retain"] == {"rows": 2, "rows_hash": rows_hash(retain)}
    expected = "sha256:" + hashlib.sha256(forget_file.read_bytes()).hexdigest()
    assert info["data"]["files"] == {str(forget_file): expected}
    assert info["prompt_format"]["example"] == SUMMARY["prompt_format"]["example"]
    assert read_card(model_dir)["obliviate"] == info
    body = path.read_text(encoding="utf-8")
    assert "1 question–answer pairs unlearned by ME+GD" in body and "Not evaluated yet." in body
    assert [p.name for p in model_dir.iterdir()] == [CARD_FILE]  # written atomically: no temporary file left


def test_a_local_base_model_is_named_in_the_body_only(tmp_path):
    local = tmp_path / "target-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    config = _config(tmp_path)
    config["model"]["name"] = str(local)
    path = write_run_card(tmp_path / "m", kind="finetune", config=config, summary={}, forget=[],
                          retain=_qa(("Who?", "Ann.")))
    meta = _front_matter(path)
    assert "base_model" not in meta and meta["tags"] == ["obliviate", "fine-tuned"]
    assert meta["obliviate"]["base_model"] == str(local) and "method" not in meta["obliviate"]
    assert meta["obliviate"]["data"]["train"]["rows"] == 1
    assert f"`{local}` fine-tuned on 1 question–answer pairs" in path.read_text()


def test_results_beside_the_model_update_its_card(tmp_path, fixture_results):
    run = tmp_path / "run"
    write_run_card(run / "model", kind="unlearn", config=_config(tmp_path), summary=SUMMARY,
                   forget=_qa(("Who?", "Ann.")), retain=_qa(("Where?", "Rome.")))
    before = read_card(run / "model")["obliviate"]
    record = fixture_results[3]  # IDK+AP: partial MU and FE
    assert update_card_with_results(run / "results.json", record) == run / "model" / CARD_FILE
    after = read_card(run / "model")["obliviate"]
    assert {k: v for k, v in after.items() if k != "evaluation"} == before
    metrics = after["evaluation"]["metrics"]
    assert after["evaluation"]["results"] == "../results.json"
    expected = {m["key"]: m for m in summary_metrics(record)}
    assert {k: v["value"] for k, v in metrics.items()} == {k: m["value"] for k, m in expected.items()}
    assert metrics["model_utility"]["partial"] is True and metrics["forget.rouge_l"]["higher_is_better"] is False
    body = (run / "model" / CARD_FILE).read_text()
    assert "| MU ↑ | 0.717* |" in body and "| FQ ↑ | 0.004 |" in body and "Not evaluated yet." not in body
    # No card, or a card obliviate did not write: nothing is touched.
    assert update_card_with_results(tmp_path / "other" / "results.json", record) is None
    foreign = tmp_path / "foreign" / "model"
    foreign.mkdir(parents=True)
    (foreign / CARD_FILE).write_text("---\nlicense: mit\n---\n# Someone else's card\n")
    assert update_card_with_results(foreign.parent / "results.json", record) is None
    assert (foreign / CARD_FILE).read_text().endswith("# Someone else's card\n")


def test_render_card_round_trips_through_the_front_matter():
    info = {"version": "0.1.0", "kind": "unlearn", "base_model": "x/y", "method": {"name": "GA+GD"},
            "data": {"forget": {"rows": 2, "rows_hash": "sha256:00"}}, "training": {"seed": 1}}
    text = render_card(info, hub_base_model="x/y", datasets=[])
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["obliviate"] == info and meta["base_model"] == "x/y" and "datasets" not in meta
    assert json.dumps(meta["obliviate"], sort_keys=True) == json.dumps(info, sort_keys=True)
