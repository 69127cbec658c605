"""Write the launcher configs under configs/accelerate/ for ``accelerate launch --config_file``.

Run from the repository root: ``python scripts/make_accelerate_configs.py``. Four engines × 1/2/4/8 GPUs on one
machine: ``ddp`` (one full copy of everything per GPU), ``zero2`` (DeepSpeed ZeRO-2: gradients and optimizer
states sharded), ``zero3`` (DeepSpeed ZeRO-3: weights too; the full model is gathered when saved), ``fsdp``
(PyTorch FSDP2, full sharding, full state dict when saved). All use bfloat16 mixed precision, the paper's
setting; docs/scaling.md shows which fits and the commands. tests/unit/test_shipped_configs.py checks the files
match this script and that accelerate's launcher accepts each one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from obliviate.config import write_config_files

ROOT = Path(__file__).resolve().parents[1] / "configs"
GPUS = (1, 2, 4, 8)

COMMON = {"compute_environment": "LOCAL_MACHINE", "debug": False, "machine_rank": 0, "main_training_function": "main",
          "mixed_precision": "bf16", "num_machines": 1, "rdzv_backend": "static", "same_network": True,
          "use_cpu": False}


def _deepspeed(stage: int) -> dict:
    ds = {"deepspeed_multinode_launcher": "standard", "offload_optimizer_device": "none",
          "offload_param_device": "none", "zero_stage": stage}
    if stage == 3:
        # Load the model already sharded (zero.Init) and gather a full 16-bit model when saving.
        ds.update(zero3_init_flag=True, zero3_save_16bit_model=True)
    return {"distributed_type": "DEEPSPEED", "deepspeed_config": ds}


FSDP = {"distributed_type": "FSDP",
        "fsdp_config": {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                        "fsdp_reshard_after_forward": True, "fsdp_offload_params": False,
                        "fsdp_cpu_ram_efficient_loading": True, "fsdp_state_dict_type": "FULL_STATE_DICT",
                        "fsdp_activation_checkpointing": False}}


def configs() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for n in GPUS:
        engines = {
            # One GPU needs no data parallelism at all: a plain single process.
            "ddp": {"distributed_type": "MULTI_GPU" if n > 1 else "NO", "gpu_ids": "all"},
            "zero2": _deepspeed(2),
            "zero3": _deepspeed(3),
            "fsdp": FSDP,
        }
        for name, engine in engines.items():
            out[f"accelerate/{name}_{n}gpu.yaml"] = {**COMMON, **engine, "num_processes": n}
    return out


def main() -> int:
    print(f"wrote {write_config_files(configs(), ROOT)} launcher configs under {ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
