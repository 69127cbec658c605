"""Sharded engines on the CPU: DeepSpeed ZeRO-3 over gloo (two processes) gives the same update as one process,
shards the KL reference like the model, caches NPO's reference log-probs through the engine with LoRA, and saves
one gathered safetensors model; the FSDP reference path shards and matches the unsharded model.

accelerate enables FSDP only on accelerator devices, so FSDP training itself is left to the GPU check
(docs/scaling.md); the reference wrapping below is the same code, run with torch's FSDP over gloo.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from test_distributed import _config, _max_diff, _one_process, _torchrun, _weights, data  # noqa: F401

pytestmark = pytest.mark.integration

deepspeed = pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra (pip install obliviate[deepspeed])")


@pytest.fixture(scope="module")
def zero3_runs(tiny_model_dir, data, tmp_path_factory):  # noqa: F811
    """One torchrun launch under ZeRO-3 (float32, SGD): NPO+KL with full fine-tuning (b = 1 × 2 accumulation
    steps) and NPO+GD with LoRA (b = 2)."""
    tmp = tmp_path_factory.mktemp("zero3")
    ds = tmp / "zero3.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                              "train_batch_size": "auto", "gradient_clipping": "auto",
                              "zero_optimization": {"stage": 3}}))
    full = _config(tmp / "npo_kl", tiny_model_dir, data, "NPO+KL", batch_size=1, gradient_accumulation_steps=2,
                   deepspeed=str(ds))
    lora = _config(tmp / "npo_gd_lora", tiny_model_dir, data, "NPO+GD", batch_size=2, gradient_accumulation_steps=1,
                   deepspeed=str(ds))
    lora["lora"] = {"enabled": True, "r": 4}
    _torchrun(tmp, [{"config": full, "record": str(tmp / "reference.json")}, {"config": lora}])
    return tmp


def test_zero3_equals_one_process_and_shards_the_reference(zero3_runs, tiny_model_dir, data, tmp_path):  # noqa: F811
    one = _weights(_one_process(tmp_path, tiny_model_dir, data, "NPO+KL"))
    sharded = _weights(zero3_runs / "npo_kl")
    assert set(sharded) == set(one) and all(sharded[k].shape == one[k].shape for k in one)  # gathered, whole
    assert _max_diff(one, sharded) <= 1e-6
    records = [json.loads((zero3_runs / f"reference.json.rank{r}").read_text()) for r in (0, 1)]
    for rec in records:
        assert rec["type"] == "DeepSpeedEngine" and not rec["training"] and not rec["requires_grad"]
        assert rec["local"] < 0.75 * rec["full"], rec  # each process holds about half of the reference
    assert AutoModelForCausalLM.from_pretrained(zero3_runs / "npo_kl" / "model") is not None


def test_zero3_lora_caches_reference_logprobs_and_saves_a_merged_model(zero3_runs, tiny_model_dir, data,  # noqa: F811
                                                                      tmp_path):
    cfg = _config(tmp_path / "one", tiny_model_dir, data, "NPO+GD", batch_size=4, gradient_accumulation_steps=1)
    cfg["lora"] = {"enabled": True, "r": 4}
    from obliviate.config import config_from_dict
    from obliviate.training.run import unlearn
    one = _weights(unlearn(config_from_dict("unlearn", cfg)).output_dir)
    run = zero3_runs / "npo_gd_lora"
    assert not (run / "model" / "adapter_config.json").exists()  # merged into a plain model
    merged = _weights(run)
    assert set(merged) == set(one)
    assert _max_diff(one, merged) <= 1e-6
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert _max_diff(start, merged) > 1e-3


def test_fsdp_reference_is_sharded_and_gives_the_same_logits(tiny_model_dir, tmp_path):
    """prepare_reference under FSDP (versions 1 and 2), two processes over gloo, against the whole model."""
    script = tmp_path / "fsdp_check.py"
    script.write_text(FSDP_CHECK)
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tiny_model_dir), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    for version in (1, 2):
        for rank in (0, 1):
            rec = json.loads((tmp_path / f"fsdp{version}.rank{rank}").read_text())
            assert rec["max_diff"] <= 1e-6 and rec["local"] < 0.75 * rec["full"] and not rec["training"], rec


FSDP_CHECK = r"""
import json, sys
from types import SimpleNamespace
import torch, torch.distributed as dist
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from transformers import AutoModelForCausalLM
from obliviate.training.distributed import prepare_reference

dist.init_process_group("gloo")
rank = dist.get_rank()
model_dir, out = sys.argv[1], sys.argv[2]
ids = torch.tensor([[5, 9, 33, 41, 7, 12, 60, 2], [8, 3, 19, 27, 44, 1, 0, 0]])
mask = torch.tensor([[1] * 8, [1] * 6 + [0] * 2])
whole = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
with torch.no_grad():
    expected = whole(input_ids=ids, attention_mask=mask).logits
for version in (1, 2):
    plugin = FullyShardedDataParallelPlugin(fsdp_version=version, auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
                                            reshard_after_forward=True if version == 2 else "FULL_SHARD",
                                            state_dict_type="FULL_STATE_DICT")
    accelerator = SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin),
                                  device=torch.device("cpu"), num_processes=2, is_fsdp2=version == 2,
                                  mixed_precision="no", is_main_process=rank == 0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    full = sum(p.numel() for p in model.parameters())
    ref = prepare_reference(model, accelerator)
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in ref.parameters())
    with torch.no_grad():
        got = ref(input_ids=ids, attention_mask=mask).logits
    rows = mask.bool()
    diff = float((got[rows] - expected[rows]).abs().max())
    json.dump({"max_diff": diff, "local": local, "full": full, "training": ref.training},
              open(f"{out}/fsdp{version}.rank{rank}", "w"))
dist.destroy_process_group()
"""
