"""The real-world scenario's data (docs/real_world.md): strict loading, the shipped example, aggregates and configs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from obliviate.benchmarks.real_world import (
    FQ_REASON,
    example_folder,
    is_real_world_folder,
    load_real_world,
    main,
    real_world_aggregates,
    write_example,
)
from obliviate.config import load_config, render_config
from obliviate.errors import DataError, ObliviateError

ROOT = Path(__file__).resolve().parents[2]
# neighbor_perturbed.json in the repeated layout: the shipped neighbor.json rows, same order, with paraphrases and
# wrong answers (the example's neighbour file before it held held-out people).
REPEATED_NEIGHBORS = ROOT / "tests" / "fixtures" / "real_world" / "neighbor_perturbed_repeated.json"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable real-world folder in the repeated layout: the shipped example, with neighbor_perturbed.json
    repeating neighbor.json row for row (the neighbour set is then both retain and evaluation set)."""
    out = write_example(tmp_path / "rw")
    (out / "neighbor_perturbed.json").write_text(REPEATED_NEIGHBORS.read_text(encoding="utf-8"), encoding="utf-8")
    return out


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """A writable copy of the shipped example, which is in the paper's published layout: forget.json with string
    task ids, forget_perturbed.json repeating it (integer task ids, plus paraphrased_question), neighbor.json
    without task ids or wrong answers, and neighbor_perturbed.json holding other people (held-out neighbours)."""
    return write_example(tmp_path / "published")


# -- the shipped example ---------------------------------------------------------------------------------------


def test_shipped_example_loads_with_the_documented_shape():
    """3 forgotten people × 4 facts, 6 neighbours × 4 facts to train on and 6 held-out neighbours × 4 facts to
    evaluate on, nobody in two groups; one task per forgotten person, numbered 1..3."""
    s = load_real_world()
    assert is_real_world_folder(example_folder())
    assert (len(s.forget), len(s.forget_eval), len(s.neighbor), len(s.neighbor_eval)) == (12, 12, 24, 24)
    assert len(s.forget_people) == 3 and len(s.neighbor_people) == 6
    assert not {p.casefold() for p in s.forget_people} & {p.casefold() for p in s.neighbor_people}
    for person in s.forget_people + s.neighbor_people:
        rows = [r for r in s.forget + s.neighbor if r.name == person]
        assert len(rows) == 4, person
    tasks = {r.name: {x.task_id for x in s.forget if x.name == r.name} for r in s.forget}
    assert sorted(t for ids in tasks.values() for t in ids) == [1, 2, 3]
    # The held-out neighbours: six other people, four facts each.
    assert s.neighbor_layout == "held_out" and len(s.neighbor_eval_people) == 6
    groups = [{p.casefold() for p in people} for people in (s.forget_people, s.neighbor_people, s.neighbor_eval_people)]
    assert not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    for person in s.neighbor_eval_people:
        assert len([r for r in s.neighbor_eval if r.name == person]) == 4, person


def _check_evaluation_rows(rows) -> None:
    """Every evaluation row has a paraphrase and 3+ distinct wrong answers, none equal to the true ones;
    evaluation compares with the short golden answer."""
    for p in rows:
        assert p.paraphrased_answer and p.paraphrased_answer != p.golden_answer
        assert len(p.perturbed_answers) >= 3 and len(set(p.perturbed_answers)) == len(p.perturbed_answers)
        assert not {p.golden_answer, p.paraphrased_answer, p.answer} & set(p.perturbed_answers)
        assert p.eval_answer == p.golden_answer and p.golden_answer != p.answer


def test_shipped_example_is_internally_consistent():
    """forget_perturbed repeats forget row for row; every evaluation row (forget and held-out neighbours) is
    well formed; each question names the person it is about, and no question is asked twice."""
    s = load_real_world()
    for b, p in zip(s.forget, s.forget_eval):
        assert (b.question, b.name, b.answer, b.golden_answer) == (p.question, p.name, p.answer, p.golden_answer)
    _check_evaluation_rows(s.forget_eval + s.neighbor_eval)
    for r in s.forget + s.neighbor + s.neighbor_eval:
        assert r.name in r.question, r.question  # each question names the person it is about
    questions = [r.question for r in s.forget + s.neighbor + s.neighbor_eval]
    assert len(set(questions)) == len(questions)


def test_repeated_layout_fixture_is_internally_consistent(folder):
    """The repeated-layout neighbour file repeats neighbor.json's rows, with well-formed evaluation fields."""
    s = load_real_world(folder)
    assert s.neighbor_layout == "repeated" and s.neighbor_eval_people == s.neighbor_people
    for b, p in zip(s.neighbor, s.neighbor_eval):
        assert (b.question, b.name, b.answer, b.golden_answer) == (p.question, p.name, p.answer, p.golden_answer)
    _check_evaluation_rows(s.neighbor_eval)


# -- the published layout ----------------------------------------------------------------------------------------


def test_published_layout_as_the_paper_writes_it(published):
    """The raw files have the paper's quirks: string task ids in forget.json, integers in forget_perturbed.json,
    no task_id and no wrong answers in neighbor.json, and other people in neighbor_perturbed.json."""
    forget, forget_pert = _rows(published / "forget.json"), _rows(published / "forget_perturbed.json")
    assert {type(r["task_id"]) for r in forget} == {str} and {type(r["task_id"]) for r in forget_pert} == {int}
    assert all("paraphrased_question" in r for r in _rows(published / "neighbor_perturbed.json"))
    assert not any({"task_id", "perturbed_answer", "paraphrased_answer"} & set(r)
                   for r in _rows(published / "neighbor.json"))
    s = load_real_world(published)
    assert s.neighbor_layout == "held_out"
    assert [r.task_id for r in s.forget] == [r.task_id for r in s.forget_eval] == [1] * 4 + [2] * 4 + [3] * 4
    assert not {r.question for r in s.neighbor} & {r.question for r in s.neighbor_eval}


def test_held_out_neighbours_need_no_row_order(published):
    """Held-out rows pair with nothing in neighbor.json, so their order is free (the forget pair's is not)."""
    rows = _rows(published / "neighbor_perturbed.json")
    _write(published / "neighbor_perturbed.json", rows[::-1])
    assert load_real_world(published).neighbor_eval[0].question == rows[-1]["question"]


def test_task_ids_must_agree_as_numbers(published):
    rows = _rows(published / "forget_perturbed.json")
    rows[5]["task_id"] = "3"  # forget.json says "2"
    _write(published / "forget_perturbed.json", rows)
    with pytest.raises(DataError, match=r"forget_perturbed\.json, line 6, field 'task_id': 3 differs from forget\.json "
                                        r"line 6 \(2\)"):
        load_real_world(published)


def test_a_forgotten_person_among_the_held_out_neighbours_is_rejected(published):
    """The check against both neighbour files: Jane Austen added to the held-out evaluation neighbours only."""
    extra = {**_rows(published / "forget_perturbed.json")[-1], "question": "Which Jane Austen novel came first?"}
    extra.pop("task_id")
    _write(published / "neighbor_perturbed.json", _rows(published / "neighbor_perturbed.json") + [extra])
    with pytest.raises(DataError) as err:
        load_real_world(published)
    msg = str(err.value)
    assert "forget.json, line 9, field 'name': 'Jane Austen' is also a neighbour" in msg
    assert "neighbor_perturbed.json, line 25" in msg and "neighbor.json," not in msg


def test_a_forgotten_person_in_both_neighbour_files_is_one_problem(folder):
    forget = _rows(folder / "forget_perturbed.json")[0]
    extra = {**forget, "name": "Marie Curie", "question": "What did Marie Curie study in Paris?"}
    extra.pop("task_id")
    _write(folder / "neighbor_perturbed.json", _rows(folder / "neighbor_perturbed.json") + [extra])
    base = {k: v for k, v in extra.items() if k not in ("paraphrased_answer", "perturbed_answer")}
    _write(folder / "neighbor.json", _rows(folder / "neighbor.json") + [base])
    with pytest.raises(DataError) as err:
        load_real_world(folder)
    msg = str(err.value)
    assert msg.count("is also a neighbour") == 1 and "1 problem in" in msg
    assert "neighbor.json, line 25; " in msg and "neighbor_perturbed.json, line 25)" in msg


def test_neighbour_files_sharing_only_some_people_are_rejected(published):
    """Neither layout: the held-out file plus one fact about a training neighbour (Isaac Newton)."""
    newton = {**_rows(REPEATED_NEIGHBORS)[0]}
    _write(published / "neighbor_perturbed.json", _rows(published / "neighbor_perturbed.json") + [newton])
    with pytest.raises(DataError) as err:
        load_real_world(published)
    msg = str(err.value)
    assert "1 problem in" in msg
    assert ("neighbor_perturbed.json, line 25, field 'name': 1 of its 7 people is also in neighbor.json "
            "(first: 'Isaac Newton', neighbor.json line 1)") in msg
    assert "held-out neighbours" in msg and "repeats neighbor.json's rows in the same order" in msg


# -- strict loading ----------------------------------------------------------------------------------------------


def test_missing_golden_answer_names_file_line_and_field(folder):
    rows = _rows(folder / "neighbor.json")
    del rows[2]["golden_answer"]
    _write(folder / "neighbor.json", rows)
    with pytest.raises(DataError) as err:
        load_real_world(folder)
    msg = str(err.value)
    assert "neighbor.json, line 3, field 'golden_answer'" in msg and "real_world layout" in msg


def test_missing_name_is_an_error_too(folder):
    rows = _rows(folder / "forget.json")
    rows[0]["name"] = ""
    _write(folder / "forget.json", rows)
    with pytest.raises(DataError, match=r"forget\.json, line 1, field 'name': must be a non-empty string"):
        load_real_world(folder)


def test_problems_in_two_files_are_reported_together(folder):
    for name in ("forget.json", "neighbor_perturbed.json"):
        rows = _rows(folder / name)
        del rows[-1]["golden_answer"]
        _write(folder / name, rows)
    with pytest.raises(DataError) as err:
        load_real_world(folder)
    msg = str(err.value)
    assert msg.startswith(str(folder)) and "2 files have problems" in msg
    assert "forget.json, line 12, field 'golden_answer'" in msg
    assert "neighbor_perturbed.json, line 24, field 'golden_answer'" in msg


def test_a_person_in_both_sets_is_rejected(folder):
    """Marie Curie (forgotten) added as a neighbour, consistently in both neighbour files."""
    forget = _rows(folder / "forget_perturbed.json")[0]
    extra = {**forget, "name": "  marie   CURIE ", "question": "What did Marie Curie study in Paris?"}
    extra.pop("task_id")
    _write(folder / "neighbor_perturbed.json", _rows(folder / "neighbor_perturbed.json") + [extra])
    base = {k: v for k, v in extra.items() if k not in ("paraphrased_answer", "perturbed_answer")}
    _write(folder / "neighbor.json", _rows(folder / "neighbor.json") + [base])
    with pytest.raises(DataError) as err:
        load_real_world(folder)
    msg = str(err.value)
    assert "forget.json, line 1, field 'name': 'Marie Curie' is also a neighbour" in msg
    assert "neighbor.json" in msg and "line 25" in msg


def test_perturbed_file_with_another_question_is_rejected(folder):
    rows = _rows(folder / "forget_perturbed.json")
    rows[1]["question"] = "Which element did Marie Curie name after Poland?"
    _write(folder / "forget_perturbed.json", rows)
    with pytest.raises(DataError) as err:
        load_real_world(folder)
    msg = str(err.value)
    assert "forget_perturbed.json, line 2, field 'question'" in msg and "forget.json line 2" in msg


def test_perturbed_file_with_rows_in_another_order_is_rejected(folder):
    rows = _rows(folder / "neighbor_perturbed.json")
    rows[0], rows[1] = rows[1], rows[0]
    _write(folder / "neighbor_perturbed.json", rows)
    with pytest.raises(DataError, match=r"neighbor_perturbed\.json, line 1, field 'question'.*same order"):
        load_real_world(folder)


def test_perturbed_file_with_a_row_missing_is_rejected(folder):
    _write(folder / "forget_perturbed.json", _rows(folder / "forget_perturbed.json")[:-1])
    with pytest.raises(DataError, match=r"has 11 rows but forget\.json has 12"):
        load_real_world(folder)


def test_perturbed_row_needs_paraphrase_and_wrong_answers(folder):
    rows = _rows(folder / "neighbor_perturbed.json")
    del rows[4]["perturbed_answer"]
    del rows[6]["paraphrased_answer"]
    _write(folder / "neighbor_perturbed.json", rows)
    with pytest.raises(DataError) as err:
        load_real_world(folder)
    msg = str(err.value)
    assert "2 problems" in msg
    assert "neighbor_perturbed.json, line 5, field 'perturbed_answer'" in msg
    assert "neighbor_perturbed.json, line 7, field 'paraphrased_answer'" in msg


def test_missing_files_and_wrong_sources_are_clear(folder, tmp_path):
    (folder / "neighbor_perturbed.json").unlink()
    assert not is_real_world_folder(folder)
    with pytest.raises(DataError, match=r"missing neighbor_perturbed\.json"):
        load_real_world(folder)
    with pytest.raises(DataError, match="folder not found"):
        load_real_world(tmp_path / "nowhere")
    with pytest.raises(DataError, match="is a file"):
        load_real_world(folder / "forget.json")


def test_jsonl_suffix_and_json_arrays_are_accepted(folder):
    (folder / "forget.json").rename(folder / "forget.jsonl")
    rows = _rows(folder / "neighbor.json")
    (folder / "neighbor.json").write_text(json.dumps(rows), encoding="utf-8")
    s = load_real_world(folder)
    assert s.files["forget"].name == "forget.jsonl" and len(s.neighbor) == 24


# -- writing the example -----------------------------------------------------------------------------------------


def test_write_example_refuses_to_replace_other_files(tmp_path, capsys):
    target = tmp_path / "ex"
    assert main([str(target)]) == 0
    assert "12 forget rows" in capsys.readouterr().out
    assert main([str(target)]) == 0  # the same content again is not a clash
    (target / "forget.json").write_text("{}\n", encoding="utf-8")
    assert main([str(target)]) == 2
    assert "forget.json" in capsys.readouterr().err
    with pytest.raises(ObliviateError):
        write_example(target)
    assert main([str(target), "--force"]) == 0
    assert len(load_real_world(target).forget) == 12


# -- aggregates --------------------------------------------------------------------------------------------------


def _sets(forget: dict, neighbor: dict | None) -> dict:
    out = {"forget": {"metrics": {m: {"value": v} for m, v in forget.items()}}}
    if neighbor is not None:
        out["neighbor"] = {"metrics": {m: {"value": v} for m, v in neighbor.items()}}
    return out


FORGET = {"rouge_l": 0.2, "probability": 0.1, "truth_ratio": 0.3, "token_entropy": 0.9,
          "cosine_similarity": 0.4, "entailment": None}


def test_aggregates_partial_mu_over_the_neighbour_set():
    """Neighbour metrics 0.5, 0.25, 0.5, 1.0, 0.5 and no entailment: MU = 5 / (2 + 4 + 2 + 1 + 2) = 5/11.
    FE = 1 − mean(0.2, 0.1, 0.3, 0.4) = 0.75 (token entropy excluded, entailment unavailable)."""
    neighbor = {"rouge_l": 0.5, "probability": 0.25, "truth_ratio": 0.5, "token_entropy": 1.0,
                "cosine_similarity": 0.5, "entailment": None}
    a = real_world_aggregates(_sets(FORGET, neighbor))
    mu = a["model_utility"]
    assert mu["value"] == pytest.approx(5 / 11) and mu["available"] and mu["partial"]
    assert mu["missing"] == ["neighbor.entailment"] and "neighbor.rouge_l" in mu["components"]
    assert "real-world scenario" in mu["note"] and "5 of 6" in mu["note"]
    assert a["model_utility_retain"]["value"] == pytest.approx(5 / 11)
    fe = a["forget_efficacy"]
    assert fe["value"] == pytest.approx(0.75) and fe["partial"] and fe["missing"] == ["forget.entailment"]
    assert a["forget_quality"] == {"value": None, "higher_is_better": True, "available": False, "partial": False,
                                   "components": ["forget.truth_ratio_x"], "missing": [], "reason": FQ_REASON}
    assert a["model_utility_tofu"]["available"] is False and "neighbour" in a["model_utility_tofu"]["reason"]


def test_aggregates_complete_mu_is_not_partial_and_a_zero_makes_it_zero():
    """All six neighbour numbers 0.5 → MU 0.5, complete (the paper's real-world MU is exactly these six);
    one of them 0 → MU 0, said in the note."""
    full = dict.fromkeys(FORGET, 0.5)
    mu = real_world_aggregates(_sets(FORGET, full))["model_utility"]
    assert mu["value"] == pytest.approx(0.5) and mu["partial"] is False and mu["missing"] == []
    zero = real_world_aggregates(_sets(FORGET, {**full, "truth_ratio": 0.0}))["model_utility"]
    assert zero["value"] == 0.0 and "neighbor.truth_ratio is 0" in zero["note"]


def test_aggregates_without_a_neighbour_set_say_so():
    mu = real_world_aggregates(_sets(FORGET, None))["model_utility"]
    assert mu["value"] is None and mu["available"] is False and "not evaluated" in mu["reason"]


# -- configs -----------------------------------------------------------------------------------------------------


def _generator():
    spec = importlib.util.spec_from_file_location("make_real_world_configs",
                                                  ROOT / "scripts" / "make_real_world_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_world_configs_match_their_generator():
    module = _generator()
    expected = module.configs()
    on_disk = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs" / "real_world").glob("*.yaml")}
    assert on_disk == set(expected)
    for rel, cfg in expected.items():
        assert (ROOT / "configs" / rel).read_text() == render_config(cfg), rel


@pytest.mark.parametrize("method", ["ME+GD", "IDK+AP", "GA+GD", "NPO+GD", "IDK+GD"])
def test_real_world_configs_carry_the_paper_hyperparameters(method):
    """docs/methods.md: real-world lr 5e-6, ME+GD forget_coeff 0.5, everything else as on TOFU."""
    cfg = load_config("unlearn", ROOT / "configs" / "real_world" / f"{method.lower().replace('+', '_')}.yaml")
    t = cfg.train
    assert cfg.method.name == method and cfg.eval.real_world is True
    assert (t.learning_rate, t.num_epochs, t.batch_size, t.gradient_accumulation_steps) == (5e-6, 5, 4, 4)
    assert (t.weight_decay, t.warmup_epochs, t.seed, cfg.method.beta) == (0.01, 1.0, 1001, 0.1)
    assert cfg.method.forget_coeff == (0.5 if method == "ME+GD" else None)
    assert cfg.method.regularization_coeff is None and cfg.method.mask is None
    assert Path(cfg.data.forget).name == "forget.json" and Path(cfg.data.retain).name == "neighbor.json"
    assert Path(cfg.data.forget).parent == Path(cfg.data.retain).parent
