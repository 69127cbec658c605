"""Write the shipped real-world configs under configs/real_world/ (one flat YAML file per experiment).

Run from the repository root: ``python scripts/make_real_world_configs.py``. The files are committed; this
script keeps them consistent with each other. Same ``configs()`` shape as make_configs.py.

The data paths point at a real-world folder (forget.json, neighbor.json and their _perturbed files; see
docs/real_world.md): ``data/real_world`` for your own data, ``data/real_world_example`` for the shipped
example, written with ``python -m obliviate.benchmarks.real_world data/real_world_example``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from obliviate.config import write_config_files

ROOT = Path(__file__).resolve().parents[1] / "configs"

# Yuan et al. 2024, real-world scenario (docs/methods.md; the released config/real_world.yaml): Llama-3-8B-Instruct,
# lr 5e-6, 5 epochs, batch 4 per device × 4 accumulation steps × 2 GPUs = 32 sequences per optimizer step,
# AdamW with weight decay 0.01, one epoch of linear warm-up, seed 1001, bfloat16 mixed precision.
PAPER_TRAIN = {"learning_rate": 5e-6, "num_epochs": 5.0, "batch_size": 4, "gradient_accumulation_steps": 4,
               "weight_decay": 0.01, "warmup_epochs": 1.0, "seed": 1001, "bf16": True}
PAPER_MODEL = {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "dtype": "bfloat16", "template": "llama3"}
PAPER_DATA = {"forget": "data/real_world/forget.json", "retain": "data/real_world/neighbor.json"}

# The methods the paper runs in this scenario. ME+GD's forget coefficient is 0.5 here (0.1 on TOFU); every
# other coefficient and mask is the method's default (docs/methods.md).
METHODS: dict[str, dict] = {
    "ME+GD": {"forget_coeff": 0.5},
    "IDK+AP": {},
    "GA+GD": {},
    "NPO+GD": {},
    "IDK+GD": {},
}

# The built-in 135M model on a CPU, on the shipped example (12 forget and 24 neighbour rows): 3 optimizer
# steps per epoch at batch 4. lr 5e-6 barely moves a model in 15 steps, so the CPU lr is the one the other
# CPU configs use.
CPU_MODEL = {"name": "smollm2-135m-instruct", "dtype": "float32", "template": "chat"}
CPU_DATA = {"forget": "data/real_world_example/forget.json", "retain": "data/real_world_example/neighbor.json"}
CPU_TRAIN = {"learning_rate": 3e-5, "num_epochs": 5.0, "batch_size": 4, "gradient_accumulation_steps": 1,
             "weight_decay": 0.01, "warmup_epochs": 1.0, "seed": 0}


def slug(method: str) -> str:
    return method.lower().replace("+", "_")


def configs() -> dict[str, dict]:
    """Relative path under configs/ → config dict, for every real-world config."""
    out: dict[str, dict] = {}
    for name, extra in METHODS.items():
        out[f"real_world/{slug(name)}.yaml"] = {
            "kind": "unlearn",
            "output_dir": f"runs/real_world/{slug(name)}",
            "model": PAPER_MODEL,
            "data": PAPER_DATA,
            "method": {"name": name, **extra, "beta": 0.1},
            "train": PAPER_TRAIN,
            "eval": {"real_world": True},
        }
    out["real_world/cpu_me_gd.yaml"] = {
        "kind": "unlearn",
        "output_dir": "runs/real_world/cpu_me_gd",
        "model": CPU_MODEL,
        "data": CPU_DATA,
        "method": {"name": "ME+GD", **METHODS["ME+GD"], "beta": 0.1},
        "train": CPU_TRAIN,
        "eval": {"real_world": True},
    }
    return out


def main() -> int:
    print(f"wrote {write_config_files(configs(), ROOT)} configs under {ROOT / 'real_world'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
