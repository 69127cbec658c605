"""The peak-memory tables of docs/scaling.md: Llama-2-7B and Llama-3-8B, full fine-tuning and LoRA, DDP / ZeRO-2 /
ZeRO-3 on 1, 2, 4 and 8 GPUs of 80 GB, from obliviate's estimate (obliviate.memory, the numbers
``obliviate unlearn --dry-run`` prints).

    python bench/memory_table.py > tables.md

The paper's setting: bfloat16 weights with bf16 mixed precision, AdamW, 4 sequences per device of up to 512 tokens
(its code pads to 500), 32 sequences per optimizer step (gradient accumulation 32 / (4 × GPUs), at least 1).
Each cell: peak GiB per GPU without / with gradient checkpointing; ✓ marks what fits an 80 GB card with 1 GiB
left for the CUDA context.
"""

from __future__ import annotations

import sys

from obliviate.memory import GIB, KNOWN_CONFIGS, TrainingSetup, estimate_memory, shape_from_config

GPUS = (1, 2, 4, 8)
ENGINES = ((0, "DDP"), (2, "ZeRO-2"), (3, "ZeRO-3"))
METHODS = {"ME+GD": {"parts": 2, "kl_parts": 0, "reference": "none"},
           "NPO+KL": {"parts": 2, "kl_parts": 1, "reference": "copy"}}
CARD_GIB = 80.0


def cell(shape, method: str, lora: bool, zero: int, gpus: int) -> str:
    m = METHODS[method]
    reference = "adapters" if (lora and m["reference"] == "copy") else m["reference"]
    values = []
    for checkpointing in (False, True):
        setup = TrainingSetup(batch_size=4, seq_len=512, parts=m["parts"], kl_parts=m["kl_parts"],
                              reference=reference, weight_dtype="bfloat16", mixed_precision="bf16",
                              optim="adamw_torch", lora_rank=8 if lora else None,
                              gradient_checkpointing=checkpointing,
                              gradient_accumulation_steps=max(1, 32 // (4 * gpus)), devices=gpus, zero=zero)
        values.append(estimate_memory(shape, setup).peak / GIB)
    fits = lambda v: " ✓" if v + 1.0 <= CARD_GIB else ""  # noqa: E731
    return f"{values[0]:.0f}{fits(values[0])} / {values[1]:.0f}{fits(values[1])}"


def main() -> int:
    for key, title in (("llama-2-7b", "Llama-2-7B (TOFU)"), ("llama-3-8b", "Llama-3-8B (real-world)")):
        shape = shape_from_config(KNOWN_CONFIGS[key], name=key)
        for method in METHODS:
            print(f"\n**{title}, {method}** — peak GiB per GPU, without / with gradient checkpointing\n")
            print("| tuning | engine | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in GPUS) + " |")
            print("|---|---|" + "---:|" * len(GPUS))
            for lora in (False, True):
                for zero, engine in ENGINES:
                    cells = [cell(shape, method, lora, zero, n) for n in GPUS]
                    print(f"| {'LoRA r=8' if lora else 'full'} | {engine} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
