"""Cost of one greedy decoding step against batch size: why full decoding batches pay, even on a CPU.

    python bench/decode_step.py                 # built-in SmolLM2-135M-Instruct, cache of 80 positions

Prints, per batch size, the median time of one step (one new token for every sequence, KV cache on) and the
time per sequence.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DynamicCache

from obliviate.kvcache import cache_kwargs
from obliviate.models import ensure_default_model, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--context", type=int, default=80, help="positions already in the cache")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model, _ = load_model(args.model or str(ensure_default_model()), dtype="float32")
    model.eval()
    for b in (int(x) for x in args.batch_sizes.split(",")):
        cache = DynamicCache()
        model(input_ids=torch.randint(100, 1000, (b, args.context)), logits_to_keep=1, **cache_kwargs(model, cache))
        token, mask, times = torch.randint(100, 1000, (b, 1)), torch.ones(b, args.context + 1), []
        for i in range(args.steps):
            t0 = time.perf_counter()
            model(input_ids=token, attention_mask=mask, position_ids=torch.full((b, 1), args.context + i),
                  logits_to_keep=1, **cache_kwargs(model, cache))
            times.append(time.perf_counter() - t0)
            mask = torch.cat([mask, torch.ones(b, 1)], 1)
        step = sorted(times)[len(times) // 2]
        print(f"batch {b:3d}: {1000 * step:6.1f} ms per step, {1000 * step / b:5.1f} ms per sequence")


if __name__ == "__main__":
    main()
