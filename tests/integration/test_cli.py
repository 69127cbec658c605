"""The command line: right exit codes, one clear message for user mistakes, nothing half-written."""

from __future__ import annotations

import json

import pytest

from obliviate.cli import main
from obliviate.objectives import all_methods, describe_params, get_forget, get_regularizer, list_methods

pytestmark = pytest.mark.integration


def test_methods_lists_every_named_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for m in list_methods():
        assert f"  {m.name} " in out
    assert "arXiv" in out or "2410.08109" in out


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_methods_name_prints_formula_parameters_paper_and_test(method, capsys):
    """`obliviate methods NAME` (any alias too): the terms' formulas, every parameter with its default and range
    under the config key that sets it, the paper, and the test file that pins the method (which exists)."""
    from pathlib import Path

    for name in (method.name, *method.aliases):
        assert main(["methods", name]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{method.name}: ")
        for spec in (get_forget(method.forget), get_regularizer(method.regularizer)):
            assert f"= {spec.name}: {spec.formula or spec.description}" in out
            for line in describe_params(spec.params):
                assert line.split(" ", 1)[1] in out
        if method.paper:
            assert method.paper in out
        pinned = out.rsplit("pinned by: ", 1)[1].strip()
        assert (Path(__file__).resolve().parents[2] / pinned).is_file(), pinned
    if method.forget_params:
        key, value = next(iter(method.forget_params.items()))
        assert f"method.forget_params.{key}: " in out and f"[this method: {value!r}]" in out


def test_bad_config_value_exits_2_with_all_errors(tmp_path, capsys):
    code = main(["unlearn", "data.forget=f.json", "train.learning_rate=-1", "method.name=NOP+GD", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train.learning_rate: must be > 0" in err and "did you mean" in err
    assert "Traceback" not in err


def test_bad_data_row_names_file_line_field_and_writes_nothing(tmp_path, capsys, tiny_model_dir):
    forget = tmp_path / "forget.json"
    forget.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n" + json.dumps({"question": "Q2?"}) + "\n")
    out = tmp_path / "run"
    code = main(["unlearn", f"data.forget={forget}", f"data.retain={forget}", f"output_dir={out}",
                 f"model.name={tiny_model_dir}", "method.name=GA"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(forget) in err and "line 2" in err and "'answer'" in err
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_missing_model_writes_nothing(tmp_path, capsys):
    forget = tmp_path / "forget.json"
    forget.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n")
    out = tmp_path / "run"
    code = main(["unlearn", f"data.forget={forget}", f"output_dir={out}", "model.name=/no/such/model",
                 "method.name=GA"])
    assert code == 2
    assert "/no/such/model" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_synth_writes_a_benchmark(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["synth", "--authors", "4", "--facts", "3", "--seed", "1", "--out", str(out)]) == 0
    manifest = json.loads((out / "benchmark.json").read_text())
    assert manifest["seed"] == 1
    assert sum(1 for _ in (out / "forget.json").open()) + sum(1 for _ in (out / "retain.json").open()) == 12
    # A second write to the same folder is refused without --overwrite.
    assert main(["synth", "--authors", "4", "--facts", "3", "--out", str(out)]) == 2
