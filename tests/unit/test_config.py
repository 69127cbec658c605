"""Config loading, overrides and validation (every error at once, with the valid choices)."""

from __future__ import annotations

import pytest

from obliviate.config import FinetuneConfig, UnlearnConfig, config_from_dict, load_config, parse_overrides
from obliviate.errors import ConfigError


def test_defaults_plus_overrides():
    cfg = config_from_dict("unlearn", {"data": {"forget": "f.json", "retain": "r.json"}},
                           ["train.learning_rate=2e-5", "method.name=NPO+GD", "lora.enabled=true",
                            "lora.target_modules=[q_proj, v_proj]"])
    assert isinstance(cfg, UnlearnConfig)
    assert cfg.train.learning_rate == pytest.approx(2e-5)
    assert cfg.method.name == "NPO+GD"
    assert cfg.lora.enabled is True and cfg.lora.target_modules == ["q_proj", "v_proj"]
    # Untouched values keep the paper's defaults.
    assert (cfg.train.batch_size, cfg.train.gradient_accumulation_steps, cfg.train.seed) == (4, 4, 1001)


def test_yaml_reads_1e_minus_5_as_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: out\ndata:\n  forget: f.json\ntrain:\n  learning_rate: 1e-5\n")
    assert load_config("unlearn", path).train.learning_rate == pytest.approx(1e-5)


def test_all_errors_are_listed_at_once():
    raw = {"data": {"forget": "f.json", "splt": "forget05"},
           "train": {"learning_rate": -1.0, "batch_size": 0, "save_strategy": "sometimes"},
           "model": {"dtype": "float8"}}
    with pytest.raises(ConfigError) as info:
        config_from_dict("unlearn", raw)
    text = str(info.value)
    # The unknown key is reported with a suggestion; type/range/choice errors only come after keys are fixed.
    assert "data.splt: unknown key (did you mean 'data.split'?)" in text
    raw["data"].pop("splt")
    with pytest.raises(ConfigError) as info:
        config_from_dict("unlearn", raw)
    errors = info.value.errors
    assert len(errors) == 4, errors
    text = "\n".join(errors)
    assert "train.learning_rate: must be > 0" in text
    assert "train.batch_size: must be >= 1" in text
    assert "train.save_strategy: 'sometimes' is not one of no, epoch, steps" in text
    assert "model.dtype: 'float8' is not one of auto, float32, bfloat16, float16" in text


def test_type_errors_name_the_expected_type():
    with pytest.raises(ConfigError, match=r"train.batch_size: expected int, got 'four'"):
        config_from_dict("unlearn", {"data": {"forget": "f"}, "train": {"batch_size": "four"}})


def test_unknown_method_suggests_the_closest():
    with pytest.raises(ConfigError, match="method.name") as info:
        config_from_dict("unlearn", {"data": {"forget": "f"}, "method": {"name": "NPO+GDD"}})
    assert "NPO+GD" in str(info.value)


def test_data_sources_are_checked():
    with pytest.raises(ConfigError, match="data.tofu .* or data.forget"):
        config_from_dict("unlearn", {})
    with pytest.raises(ConfigError, match="alternatives"):
        config_from_dict("unlearn", {"data": {"forget": "f", "tofu": "locuslab/TOFU"}})
    with pytest.raises(ConfigError, match="data.split: 'forget5' is not one of .*did you mean 'forget05'"):
        config_from_dict("unlearn", {"data": {"tofu": "x", "split": "forget5"}})


def test_finetune_config():
    cfg = config_from_dict("finetune", {"data": {"train": ["a.json", "b.json"]}})
    assert isinstance(cfg, FinetuneConfig) and cfg.data.train == ["a.json", "b.json"]
    with pytest.raises(ConfigError, match="finetune_on"):
        config_from_dict("finetune", {"data": {"tofu": "x", "finetune_on": "forget"}})


def test_bad_overrides_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["learning_rate"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("unlearn", tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("unlearn", bad)


def test_evaluation_intervals_holdout_and_gradnorm_settings():
    cfg = config_from_dict("unlearn", {"data": {"forget": "f.json"}},
                           ["eval.bootstrap=200", "eval.holdout=h.json", "eval.gradnorm=false"])
    assert (cfg.eval.bootstrap, cfg.eval.holdout, cfg.eval.gradnorm) == (200, "h.json", False)
    assert config_from_dict("unlearn", {"data": {"forget": "f.json"}}).eval.bootstrap == 1000
    with pytest.raises(ConfigError, match=r"eval.bootstrap: must be >= 0 \(0 = no confidence intervals\), got -5"):
        config_from_dict("unlearn", {"data": {"forget": "f.json"}}, ["eval.bootstrap=-5"])


def test_training_step_defaults_and_the_plain_path():
    """The default step: chunked loss (512 tokens of logits at a time), packed parts, fused AdamW. The plain path
    is two overrides away; a negative chunk size is refused."""
    t = config_from_dict("unlearn", {"data": {"forget": "f.json"}}).train
    assert (t.loss_chunk_size, t.packing, t.optim, t.gradient_checkpointing) == (512, True, "adamw_torch_fused", False)
    plain = config_from_dict("unlearn", {"data": {"forget": "f.json"}},
                             ["train.loss_chunk_size=0", "train.packing=false"]).train
    assert (plain.loss_chunk_size, plain.packing) == (0, False)
    with pytest.raises(ConfigError, match=r"train.loss_chunk_size: must be >= 0 \(0 = materialised logits\), got -1"):
        config_from_dict("unlearn", {"data": {"forget": "f.json"}}, ["train.loss_chunk_size=-1"])


def test_a_tofu_layout_folder_supplies_its_holdout_set_to_the_unlearning_evaluation(tmp_path):
    from obliviate.training.run import eval_benchmark

    folder = tmp_path / "tofu_like"
    folder.mkdir()
    for name in ("forget.json", "retain.json", "forget_perturbed.json", "retain_perturbed.json"):
        (folder / name).write_text("[]")
    cfg = config_from_dict("unlearn", {"data": {"forget": str(folder / "forget.json"),
                                                "retain": str(folder / "retain.json")}})
    assert "holdout" not in eval_benchmark(cfg).files          # no holdout file: none invented
    (folder / "holdout.json").write_text("[]")
    assert eval_benchmark(cfg).files["holdout"] == str(folder / "holdout.json")
    (folder / "holdout_perturbed.json").write_text("[]")
    spec = eval_benchmark(cfg)
    assert spec.kind == "files" and spec.files["holdout"] == str(folder / "holdout_perturbed.json")
    assert spec.files["forget"] == str(folder / "forget_perturbed.json")
    # An explicit eval.holdout still wins.
    cfg = config_from_dict("unlearn", {"data": {"forget": str(folder / "forget.json")},
                                       "eval": {"holdout": str(tmp_path / "mine.json")}})
    assert eval_benchmark(cfg).holdout == str(tmp_path / "mine.json")
