"""The peak-memory tables of docs/scaling.md: Llama-2-7B and Llama-3-8B, full fine-tuning and LoRA, DDP / ZeRO-2 /
ZeRO-3 on 1, 2, 4 and 8 GPUs of 80 GB — the numbers ``obliviate unlearn --dry-run`` prints for the shipped paper
configs.

    python bench/memory_table.py > tables.md

Each cell is the estimate for ``configs/tofu/me_gd_forget05.yaml`` (Llama-2-7B) or
``configs/real_world/me_gd.yaml`` (Llama-3-8B), with ``method.name`` ME+GD or NPO+KL, the paper's 32 sequences per
optimizer step (gradient accumulation 32 / (4 × GPUs), at least 1), every sequence counted at 512 tokens (the
paper's code pads to 500): peak GiB per GPU without / with gradient checkpointing; ✓ marks what fits an 80 GB
card with 1 GiB left for the CUDA context. Everything else — dtype, mixed precision, optimizer, how the loss
reads the logits — is the config's and the trainer's default, so the tables follow them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from obliviate.config import load_config
from obliviate.memory import GIB, estimate_memory, read_model_config, setup_from_config, shape_from_config

ROOT = Path(__file__).resolve().parents[1]
GPUS = (1, 2, 4, 8)
ENGINES = ((0, "DDP"), (2, "ZeRO-2"), (3, "ZeRO-3"))
METHODS = ("ME+GD", "NPO+KL")
CARD_GIB = 80.0


def cell(config: Path, shape, method: str, lora: bool, zero: int, gpus: int) -> str:
    values = []
    for checkpointing in (False, True):
        cfg = load_config("unlearn", config, [f"method.name={method}", f"lora.enabled={str(lora).lower()}",
                                              f"train.gradient_checkpointing={str(checkpointing).lower()}",
                                              f"train.gradient_accumulation_steps={max(1, 32 // (4 * gpus))}"])
        setup = setup_from_config(cfg, devices=gpus, zero=zero, seq_len=512)
        values.append(estimate_memory(shape, setup).peak / GIB)
    fits = lambda v: " ✓" if v + 1.0 <= CARD_GIB else ""  # noqa: E731
    return f"{values[0]:.0f}{fits(values[0])} / {values[1]:.0f}{fits(values[1])}"


def main() -> int:
    for rel, title in (("configs/tofu/me_gd_forget05.yaml", "Llama-2-7B (TOFU)"),
                       ("configs/real_world/me_gd.yaml", "Llama-3-8B (real-world)")):
        config = ROOT / rel
        name = load_config("unlearn", config).model.name
        shape = shape_from_config(read_model_config(name)[0], name=name)
        for method in METHODS:
            print(f"\n**{title}, {method}** — peak GiB per GPU, without / with gradient checkpointing\n")
            print("| tuning | engine | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in GPUS) + " |")
            print("|---|---|" + "---:|" * len(GPUS))
            for lora in (False, True):
                for zero, engine in ENGINES:
                    cells = [cell(config, shape, method, lora, zero, n) for n in GPUS]
                    print(f"| {'LoRA r=8' if lora else 'full'} | {engine} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
