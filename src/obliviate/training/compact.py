"""Optimizer states in one buffer per kind, for training on the CPU.

Torch's optimizers create their per-parameter states (AdamW: ``exp_avg`` and ``exp_avg_sq``, one tensor each per
parameter) lazily, in the first step, in between the tensors that step freed. On the CPU those are ordinary
``malloc`` blocks: several hundred long-lived tensors of a few megabytes each end up scattered through the heap
that every following step fills with activations and gradients, and the C library can neither reuse the holes
around them for larger blocks nor return them (glibc only trims the heap's top).

:func:`flat_states_from_first_step` keeps them out of that heap: for torch's Adam and AdamW it creates the states
before the first step, as the optimizer would (zeros, the step count as a scalar tensor of the dtype and device
the optimizer picks), but each kind as views of one zero-filled buffer — large enough to be its own memory
mapping. Other optimizers, and states loaded from a checkpoint, are moved into such buffers after their first
step (:func:`compact_states`: values copied exactly), and the heap blocks they leave are handed back to the
system (:func:`release_free_memory`). The optimizer's own step reads and writes the views as it did separate
tensors; ``state_dict`` / ``load_state_dict`` work as before.

Measured on SmolLM2-135M, ME+GD, float32 AdamW (``bench/step_speed.py``; figures in docs/benchmarks.md). On a GPU
the caching allocator already keeps such blocks apart, and one buffer the size of all of a 7B model's moments
would have to be found in one piece: states on any other device are left as they are.
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
    groups: dict[tuple[str, torch.dtype], list[tuple[dict, str]]] = defaultdict(list)
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


_ADAM = (torch.optim.Adam, torch.optim.AdamW)
_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def create_adam_states(optimizer: torch.optim.Optimizer) -> int:
    """Create the states of a torch Adam/AdamW for every parameter that has a gradient and no state yet, as its
    step would (``torch.optim.Adam._init_group``), with ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``) as
    views of one zero-filled buffer each; returns how many parameters got states (0: left to the optimizer)."""
    if type(optimizer) not in _ADAM:
        return 0
    todo = [(group, p) for group in optimizer.param_groups for p in group["params"]
            if p.grad is not None and not optimizer.state.get(p)]
    if not todo or not all(p.device.type == "cpu" and p.dtype in _FLOATS and p.is_contiguous()
                           and not group.get("differentiable") for group, p in todo):
        return 0
    kinds = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if any(g["amsgrad"] for g, _ in todo) else [])
    buffers = {}
    for dtype in {p.dtype for _, p in todo}:
        numel = sum(p.numel() for _, p in todo if p.dtype == dtype)
        buffers[dtype] = {kind: torch.zeros(numel, dtype=dtype) for kind in kinds}
    offsets = dict.fromkeys(buffers, 0)
    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    for group, p in todo:
        state = optimizer.state[p]
        if group["capturable"] or group["fused"]:
            state["step"] = torch.zeros((), dtype=torch.float32 if group["fused"] else scalar, device=p.device)
        else:
            state["step"] = torch.tensor(0.0, dtype=scalar, device="cpu")
        start = offsets[p.dtype]
        for kind in kinds[:2] + (kinds[2:] if group["amsgrad"] else []):
            state[kind] = buffers[p.dtype][kind][start:start + p.numel()].view(p.shape)
        offsets[p.dtype] = start + p.numel()
    return len(todo)


def flat_states_from_first_step(optimizer: torch.optim.Optimizer) -> None:
    """Keep ``optimizer``'s states in one buffer per kind: created that way before its first step (torch's Adam
    and AdamW), else moved there right after it (:func:`compact_states`); states loaded from a checkpoint are
    moved after the first step that follows the load."""
    def before(opt, args, kwargs):
        create_adam_states(opt)
        first.remove()

    def after(opt, args, kwargs):
        compact_states(opt, release_every=RELEASE_EVERY)
        handles.pop().remove()

    def loaded(opt):
        if not handles:
            handles.append(opt.register_step_post_hook(after))

    first = optimizer.register_step_pre_hook(before)
    handles = [optimizer.register_step_post_hook(after)]
    optimizer.register_load_state_dict_post_hook(loaded)
