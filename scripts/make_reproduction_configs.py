"""Write the CPU-scale reproduction configs under configs/reproduction/ (see docs/reproduction.md).

The built-in SmolLM2-135M-Instruct on a TOFU subset written by bench/prepare_tofu_subset.py into runs/repro/data:
fine-tune a target model (forget + retain authors) and a retain model (retain authors only), then unlearn the
forget01 authors with six methods of the paper, and with every newer method registered with ``register_method``
(its own parameter defaults, the same training settings), and evaluate each against the retain model.
"""

from __future__ import annotations

import sys
from pathlib import Path

from obliviate.config import write_config_files
from obliviate.objectives import all_methods, list_methods

ROOT = Path(__file__).resolve().parents[1] / "configs"
DATA = "runs/repro/data"
METHODS = ("GA+GD", "NPO+GD", "ME+GD", "IDK+GD", "IDK+KL", "IDK+AP")
NEWER = tuple(m for m in all_methods()[len(list_methods()):])
MODEL = {"name": "smollm2-135m-instruct", "dtype": "float32", "template": "chat"}
# 160 QA pairs / batch 8 = 20 optimizer steps per epoch; a 135M model needs a higher rate than the paper's 7B.
FINETUNE = {"learning_rate": 1e-4, "num_epochs": 5.0, "batch_size": 8, "gradient_accumulation_steps": 1,
            "weight_decay": 0.01, "warmup_epochs": 0.5, "seed": 0}
# 40 forget items / batch 4 = 10 optimizer steps per epoch, 50 in all; one epoch of warm-up as in the paper.
UNLEARN = {"learning_rate": 5e-5, "num_epochs": 5.0, "batch_size": 4, "gradient_accumulation_steps": 1,
           "weight_decay": 0.01, "warmup_epochs": 1.0, "seed": 0}
# 30 rows of each set; greedy answers up to 48 tokens (TOFU answers are ~30 tokens).
EVAL = {"set_size": 30, "max_new_tokens": 48, "batch_size": 16,
        "retain_results": "runs/repro/retain/results.json"}


def slug(method: str) -> str:
    return method.lower().replace("+", "_")


def configs() -> dict[str, dict]:
    out = {
        "reproduction/finetune_target.yaml": {
            "kind": "finetune", "output_dir": "runs/repro/target", "model": MODEL,
            "data": {"train": [f"{DATA}/forget.json", f"{DATA}/retain.json"]}, "train": FINETUNE},
        "reproduction/finetune_retain.yaml": {
            "kind": "finetune", "output_dir": "runs/repro/retain", "model": MODEL,
            "data": {"train": [f"{DATA}/retain.json"]}, "train": FINETUNE},
    }
    for m in METHODS:
        out[f"reproduction/{slug(m)}.yaml"] = {
            "kind": "unlearn", "output_dir": f"runs/repro/{slug(m)}",
            "model": {**MODEL, "name": "runs/repro/target/model"},
            "data": {"forget": f"{DATA}/forget.json", "retain": f"{DATA}/retain.json"},
            "method": {"name": m, "beta": 0.1}, "train": UNLEARN, "eval": EVAL}
    for m in NEWER:
        method: dict = {"name": m.name}
        for key in ("forget_params", "regularizer_params"):
            if getattr(m, key):
                method[key] = dict(getattr(m, key))
        out[f"reproduction/{slug(m.name)}.yaml"] = {
            "kind": "unlearn", "output_dir": f"runs/repro/{slug(m.name)}",
            "model": {**MODEL, "name": "runs/repro/target/model"},
            "data": {"forget": f"{DATA}/forget.json", "retain": f"{DATA}/retain.json"},
            "method": method, "train": UNLEARN, "eval": EVAL}
    return out


def main() -> int:
    print(f"wrote {write_config_files(configs(), ROOT)} configs under {ROOT / 'reproduction'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
