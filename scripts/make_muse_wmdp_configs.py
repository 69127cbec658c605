"""Write the shipped MUSE and WMDP configs under configs/muse/ and configs/wmdp/ (one flat YAML file each).

Run from the repository root: ``python scripts/make_muse_wmdp_configs.py``. Same ``configs()`` shape as
make_configs.py. docs/muse_wmdp.md describes the settings and where they come from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from obliviate.config import write_config_files

ROOT = Path(__file__).resolve().parents[1] / "configs"

# MUSE (Shi et al., 2024, arXiv 2407.06460; its released baselines/scripts/unlearn_{news,books}.sh): the target
# models muse-bench/MUSE-News_target (Llama-2-7B) and muse-bench/MUSE-Books_target (ICLM-7B), each fine-tuned on
# its corpus and read with Llama-2's tokenizer,
# unlearned on raw/forget with raw/retain1 as the retain set, max length 2048 tokens, lr 1e-5, 10 epochs, 4 sequences
# per device on 8 GPUs (32 per optimizer step: here 4 × 8 accumulation steps on one device), NPO's beta 0.1. The
# script sets nothing else; the rest (AdamW, weight decay 0.01, linear schedule) is obliviate's default and the
# warm-up is left out. Text is trained on without a prompt template (plain), as MUSE does.
MUSE_CORPORA = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
MUSE_METHODS = ("GA", "GA+GD", "GA+KL", "NPO", "NPO+GD", "NPO+KL")
MUSE_TRAIN = {"learning_rate": 1e-5, "num_epochs": 10.0, "batch_size": 4, "gradient_accumulation_steps": 8,
              "weight_decay": 0.01, "warmup_epochs": 0.0, "seed": 1001}

# The tiny MUSE-layout example shipped inside the package, on the built-in 135M model on a CPU: a target model
# fine-tuned on its forget and retain text, then NPO+GD. Sized for a laptop (a few minutes).
EXAMPLE = "src/obliviate/resources/muse_example"
CPU_MODEL = {"name": "smollm2-135m-instruct", "dtype": "float32", "template": "plain", "max_length": 128}

# WMDP (Li et al., 2024, arXiv 2403.03218), the paper's RMU setting: zephyr-7b-beta, the bio and cyber forget
# corpora (cais/wmdp-bio-forget-corpus is gated: request access, download it, point data.forget at the file; the cyber
# corpus is cais/wmdp-corpora:cyber-forget-corpus) with Wikitext-2 (raw) as the retain corpus, lr 5e-5, batch 4,
# 150 batches per corpus, texts cut to 512 tokens; RMU's own settings (steering coefficient 6.5, alpha 1200, layer 7, updating
# layers 5-7) belong to the RMU method. Evaluated on wmdp_bio, wmdp_cyber and mmlu through lm-eval.
WMDP_MODEL = {"name": "HuggingFaceH4/zephyr-7b-beta", "dtype": "bfloat16", "template": "chat", "max_length": 512}
WMDP_TRAIN = {"learning_rate": 5e-5, "max_steps": 150, "batch_size": 4, "gradient_accumulation_steps": 1,
              "warmup_epochs": 0.0}
WMDP_CORPORA = {"bio": "data/wmdp/bio_remove_dataset.jsonl", "cyber": "cais/wmdp-corpora:cyber-forget-corpus"}
WMDP_RETAIN = {"bio": "Salesforce/wikitext:wikitext-2-raw-v1:test",
               "cyber": "Salesforce/wikitext:wikitext-2-raw-v1:test"}


def slug(method: str) -> str:
    return method.lower().replace("+", "_")


def configs() -> dict[str, dict]:
    """Relative path under configs/ → config dict, for every MUSE and WMDP config."""
    out: dict[str, dict] = {}
    for corpus, hub_id in MUSE_CORPORA.items():
        for method in MUSE_METHODS:
            out[f"muse/{corpus}_{slug(method)}.yaml"] = {
                "kind": "unlearn",
                "output_dir": f"runs/muse/{corpus}/{slug(method)}",
                "model": {"name": f"{hub_id}_target", "dtype": "bfloat16", "template": "plain",
                          "max_length": 2048},
                "data": {"forget": f"{hub_id}:raw:forget", "retain": f"{hub_id}:raw:retain1", "format": "text"},
                "method": {"name": method, "beta": 0.1},
                "train": MUSE_TRAIN,
                "eval": {"benchmark": "muse", "source": hub_id},
            }
    out["muse/cpu_example_target.yaml"] = {
        "kind": "finetune",
        "output_dir": "runs/muse_example/target",
        "model": CPU_MODEL,
        "data": {"train": [f"{EXAMPLE}/raw/forget.txt", f"{EXAMPLE}/raw/retain1.txt", f"{EXAMPLE}/raw/retain2.txt"],
                 "format": "text"},
        "train": {"learning_rate": 1e-4, "num_epochs": 10.0, "batch_size": 4, "gradient_accumulation_steps": 1,
                  "weight_decay": 0.01, "warmup_epochs": 0.0, "seed": 0},
    }
    out["muse/cpu_example_npo_gd.yaml"] = {
        "kind": "unlearn",
        "output_dir": "runs/muse_example/npo_gd",
        "model": {**CPU_MODEL, "name": "runs/muse_example/target/model"},
        "data": {"forget": f"{EXAMPLE}/raw/forget.txt", "retain": f"{EXAMPLE}/raw/retain1.txt", "format": "text"},
        "method": {"name": "NPO+GD", "beta": 0.1},
        "train": {"learning_rate": 1e-5, "num_epochs": 5.0, "batch_size": 4, "gradient_accumulation_steps": 1,
                  "weight_decay": 0.01, "warmup_epochs": 0.0, "seed": 0},
        "eval": {"benchmark": "muse", "source": EXAMPLE},
    }
    for corpus, forget in WMDP_CORPORA.items():
        out[f"wmdp/rmu_zephyr_{corpus}.yaml"] = {
            "kind": "unlearn",
            "output_dir": f"runs/wmdp/rmu_zephyr_{corpus}",
            "model": WMDP_MODEL,
            "data": {"forget": forget, "retain": WMDP_RETAIN[corpus], "format": "text"},
            "method": {"name": "RMU"},
            "train": WMDP_TRAIN,
            "eval": {"benchmark": "wmdp", "tasks": ["wmdp_bio", "wmdp_cyber", "mmlu"]},
        }
    return out


def main() -> int:
    print(f"wrote {write_config_files(configs(), ROOT)} configs under {ROOT / 'muse'} and {ROOT / 'wmdp'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
