"""Every shipped config loads and validates, and the TOFU set covers the paper's grid."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from obliviate.config import FinetuneConfig, UnlearnConfig, load_config, render_config
from obliviate.objectives import list_methods, resolve_method

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def _kind(path: Path) -> str:
    return yaml.safe_load(path.read_text())["kind"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_loads_and_validates(path, monkeypatch):
    if path.parent.name == "accelerate":  # launcher configs for `accelerate launch`, not run configs
        _check_launcher_config(path, monkeypatch)
        return
    kind = _kind(path)
    if kind == "continual":
        from obliviate.config import ContinualConfig, load_continual_config
        assert isinstance(load_continual_config(path), ContinualConfig)
        return
    cfg = load_config(kind, path)
    assert isinstance(cfg, UnlearnConfig if kind == "unlearn" else FinetuneConfig)


def test_paper_grid_is_complete():
    """14 methods × 3 TOFU splits with the paper's hyperparameters (docs/methods.md)."""
    for m in list_methods():
        for split in ("forget01", "forget05", "forget10"):
            cfg = load_config("unlearn", ROOT / "configs" / "tofu" / f"{m.name.lower().replace('+', '_')}_{split}.yaml")
            assert resolve_method(cfg.method.name).name == m.name
            assert cfg.data.split == split
            t = cfg.train
            assert (t.learning_rate, t.num_epochs, t.batch_size, t.gradient_accumulation_steps) == (1e-5, 5, 4, 4)
            assert (t.weight_decay, t.warmup_epochs, t.seed, cfg.method.beta) == (0.01, 1.0, 1001, 0.1)
            # Coefficients and mask come from the method's paper defaults (ME+GD: 0.1 / 1.0 / mask false).
            assert cfg.method.forget_coeff is None and cfg.method.mask is None


def _generators():
    for script in sorted((ROOT / "scripts").glob("make_*configs.py")):
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def test_files_match_their_generators():
    """Every file under configs/ comes from a generator script in scripts/, and says what it generates."""
    expected = {}
    for module in _generators():
        for rel, cfg in module.configs().items():
            assert rel not in expected, f"{rel} is generated twice"
            expected[rel] = (module, cfg)
    on_disk = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    assert on_disk == set(expected)
    for rel, (module, cfg) in expected.items():
        assert (ROOT / "configs" / rel).read_text() == render_config(cfg), rel


def _check_launcher_config(path: Path, monkeypatch) -> None:
    """What `accelerate launch --config_file PATH` does before it starts processes: parse the file, validate the
    launch, build the environment the processes get; then the engine plugins each process builds from it."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import (prepare_deepspeed_cmd_env, prepare_multi_gpu_env,
                                         prepare_simple_launcher_cmd_env)

    from obliviate.training.distributed import deepspeed_reference_config

    engine, gpus = path.stem.rsplit("_", 1)
    n = int(gpus.removesuffix("gpu"))
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "obliviate.cli", "unlearn"])
    args, defaults, _ = _validate_launch_command(args)
    assert defaults.num_processes == n and defaults.mixed_precision == "bf16"
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.use_fsdp or args.multi_gpu:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected = {"ddp": DistributedType.MULTI_GPU if n > 1 else DistributedType.NO, "zero2": DistributedType.DEEPSPEED,
                "zero3": DistributedType.DEEPSPEED, "fsdp": DistributedType.FSDP}[engine]
    assert defaults.distributed_type == expected
    if engine.startswith("zero"):
        plugin = DeepSpeedPlugin()
        stage = int(engine[-1])
        zero = plugin.deepspeed_config["zero_optimization"]
        assert plugin.zero_stage == stage and zero["stage"] == stage
        # ZeRO-3 saves a gathered model; the KL reference is sharded like the model (stage 3), else a full copy.
        assert zero["stage3_gather_16bit_weights_on_model_save"] == (stage == 3)
        ref = deepspeed_reference_config(plugin.deepspeed_config, hidden_size=4096, micro_batch=4, processes=n)
        assert ref["zero_optimization"]["stage"] == (3 if stage == 3 else 0)
    if engine == "fsdp":
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and "FULL_STATE_DICT" in str(plugin.state_dict_type)
        assert plugin.reshard_after_forward is True  # full sharding
