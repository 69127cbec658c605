"""Write the shipped continual-unlearning configs under configs/continual/ (one flat YAML file per experiment).

Run from the repository root: ``python scripts/make_continual_configs.py``. The files are committed; this script
keeps them consistent with the single-run configs. Same ``configs()`` shape as make_configs.py.

``data.tofu`` is ``./data/tofu``: a TOFU folder in the continual layout (forgetXX.json rows carry task_id; the
hub layout holds one task per split). The ``./`` keeps it from being read as a hub id when the folder is absent.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from obliviate.config import write_config_files

ROOT = Path(__file__).resolve().parents[1] / "configs"

# The paper's Llama-2-7B settings and the CPU settings, taken from the single-run generator so both stay equal.
_spec = importlib.util.spec_from_file_location("make_configs", Path(__file__).with_name("make_configs.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

METHODS = ("ME+GD", "IDK+AP", "NPO+GD")
CONTINUAL = {"steps": None, "fix_ref_model": False, "top_up": None}


def configs() -> dict[str, dict]:
    """Relative path under configs/ → config dict, for every continual config."""
    out: dict[str, dict] = {}
    for method in METHODS:
        out[f"continual/{_base.slug(method)}_forget01.yaml"] = {
            "kind": "continual",
            "output_dir": f"runs/continual/{_base.slug(method)}_forget01",
            "model": _base.PAPER_MODEL,
            "data": {"tofu": "./data/tofu", "split": "forget01"},
            "method": {"name": method, "beta": 0.1},
            "train": _base.PAPER_TRAIN,
            "continual": CONTINUAL,
        }
    # The demo's SmolLM2 target on the demo's synthetic benchmark (one task per forget author), with Forget
    # Quality against the demo's retain model; 48 new tokens cover the one-sentence synthetic answers.
    out["continual/cpu_synthetic_me_gd.yaml"] = {
        "kind": "continual",
        "output_dir": "runs/continual/cpu_synthetic_me_gd",
        "model": {"name": "demo_runs/target/model", "dtype": "float32", "template": "chat"},
        "data": {"forget": "demo_runs/benchmark/forget.json", "retain": "demo_runs/benchmark/retain.json"},
        "method": {"name": "ME+GD", "beta": 0.1},
        "train": _base.CPU_TRAIN,
        "eval": {"max_new_tokens": 48, "retain_results": "demo_runs/retain/results.json"},
        "continual": CONTINUAL,
    }
    return out


def main() -> int:
    print(f"wrote {write_config_files(configs(), ROOT)} configs under {ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
