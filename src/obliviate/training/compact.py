"""Optimizer states in one buffer per kind, for training on the CPU.

Torch's optimizers create their per-parameter states (AdamW: ``exp_avg`` and ``exp_avg_sq``, one tensor each per
parameter) lazily, in the first step, in between the tensors that step freed. On the CPU those are ordinary
``malloc`` blocks: several hundred long-lived tensors of a few megabytes each end up scattered through the heap
that every following step fills with activations and gradients, and the C library can neither reuse the holes
around them for larger blocks nor return them (glibc only trims the heap's top). :func:`compact_states` moves each
kind of state into one contiguous buffer — large enough to be its own memory mapping, outside that heap — and
leaves every state tensor a view of it, with its values unchanged; the heap blocks they leave are handed back to
the system (:func:`release_free_memory`). The optimizer's own step reads and writes the
views as it did the separate tensors, and ``state_dict`` / ``load_state_dict`` work as before (a loaded state is
per-parameter again until it is compacted).

Measured on SmolLM2-135M, ME+GD, float32 AdamW (``bench/step_speed.py``; figures in docs/benchmarks.md): the
resident-set peak of a step falls by about 0.1 GB and the step takes no longer. On a GPU the caching allocator
already keeps such blocks apart, and one buffer the size of all of a 7B model's moments would have to be found
in one piece: states on any other device are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections import defaultdict

import torch
from torch import Tensor


#: bytes of states moved between two hand-backs of the freed heap blocks during a compaction
RELEASE_EVERY = 64 * 2**20


def _plain(t: object) -> bool:
    return type(t) is Tensor and t.layout == torch.strided and t.device.type == "cpu"


def compact_states(optimizer: torch.optim.Optimizer, *, release_every: int = 0) -> int:
    """Move every parameter-shaped CPU state of ``optimizer`` into one buffer per (state name, dtype); returns
    the number of bytes moved (0 when there is nothing, or only one tensor, of each kind). Values are copied
    exactly; scalar states (AdamW's ``step``) and anything that is not a plain, contiguous CPU tensor stay as they
    are. With ``release_every`` > 0 the freed heap blocks are handed back (:func:`release_free_memory`) each time
    that many more bytes have moved, and at the end: the move then needs that much memory more, not all of it."""
    groups: dict[tuple[str, torch.dtype], list[tuple[dict, Tensor]]] = defaultdict(list)
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            for name, value in state.items():
                if _plain(value) and value.shape == p.shape and value.dim() > 0 and value.is_contiguous():
                    groups[(name, value.dtype)].append((state, name))
    moved = released = 0
    for (name, dtype), members in groups.items():
        if len(members) < 2 or _one_buffer([state[key] for state, key in members]):
            continue
        flat = torch.empty(sum(state[key].numel() for state, key in members), dtype=dtype)
        offset = 0
        for state, key in members:
            old = state[key]
            view = flat[offset:offset + old.numel()].view(old.shape)
            view.copy_(old)
            state[key] = view
            offset += old.numel()
            moved += old.numel() * old.element_size()
            del old
            if release_every and moved - released >= release_every:
                release_free_memory()
                released = moved
    if release_every and moved > released:
        release_free_memory()
    return moved


def release_free_memory() -> bool:
    """Hand the pages of the C heap's free blocks back to the system (glibc's ``malloc_trim``): after a
    compaction, the blocks the states left behind would otherwise stay resident until reused. False where the C
    library has no such call (not Linux/glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def _one_buffer(tensors: list[Tensor]) -> bool:
    first = tensors[0].untyped_storage().data_ptr()
    return all(t.untyped_storage().data_ptr() == first for t in tensors)


def compact_after_first_step(optimizer: torch.optim.Optimizer) -> None:
    """Compact ``optimizer``'s states (:func:`compact_states`) once, right after its next step — the step that
    creates them, or the first one after a checkpoint's states were loaded."""
    def hook(opt, args, kwargs):
        compact_states(opt, release_every=RELEASE_EVERY)
        handle.remove()

    handle = optimizer.register_step_post_hook(hook)
