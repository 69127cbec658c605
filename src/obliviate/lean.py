"""Layers that keep less for backward, switched on for the time of a training step.

**SwiGLU blocks keep two of their four activations.** A Llama-style feed-forward block computes
``down(silu(gate(x)) ⊙ up(x))``. Run as written, autograd keeps four ``tokens × intermediate`` tensors of it for
backward: ``gate(x)`` (for the SiLU's gradient), ``silu(gate(x))`` and ``up(x)`` (for the product's), and the
product (for ``down``'s weight gradient) — at SmolLM2-135M's sizes about half of a decoder layer's activations.
:func:`lean_swiglu` runs such blocks through one autograd function that keeps ``gate(x)`` and ``up(x)`` and
recomputes the SiLU and the product in backward (elementwise work, no matrix product). The values are the block's
own; the gradients are the same formulas (``silu'(g) = σ(g)(1 + g(1 − σ(g)))``, as PyTorch's SiLU backward), equal
to autograd's up to rounding (``tests/unit/test_lean.py``).

A block runs the lean way only where nothing else could be relying on its parts being called as modules: its
class is one whose forward is exactly the formula above (:data:`SWIGLU_BLOCKS`), the activation is SiLU, the three
projections are plain ``nn.Linear`` layers (not adapters, not quantized), and no hooks sit on the block or the
projections (sharding and offloading engines attach theirs there). Under autocast, and without gradients, a
block runs as written.

**RMSNorms keep their input only.** transformers' Llama-style RMSNorm, ``w ⊙ (x · r)`` with
``r = 1/sqrt(mean(x²) + ε)`` computed in float32, keeps for backward its (float32) input, ``r`` and the normalised
``x · r`` — the last one ``tokens × hidden`` per norm, two norms a layer. :func:`lean_rmsnorm` runs such norms
(:data:`RMSNORMS`) through one autograd function that keeps the input as it came and ``r``, and forms ``x · r``
again in backward. Same rules as for the SwiGLU blocks: no hooks, no autocast, gradients enabled.

**A tied input embedding adds its gradient into the output layer's buffer.** Where the input embedding and the
output layer are one matrix (SmolLM2, Llama-3.2-1B), the embedding lookup's backward builds a dense
``V × H`` gradient (zero-filled, then the looked-up rows added) and autograd adds it to the output layer's. With
:func:`lean_tied_embedding` the lookup reads the matrix through the same grouped view as the chunked output layer
(:func:`obliviate.objectives.chunked.grouped_weight`) and adds its rows into that one buffer.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from obliviate.objectives import forget_grouped_weight, grouped_weight

#: transformers' feed-forward classes whose forward is ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``.
SWIGLU_BLOCKS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})

_ACTIVATIONS = frozenset({"SiLU", "SiLUActivation"})

#: transformers' norm classes whose forward is ``weight * (x.float() * rsqrt(mean(x.float()²) + eps)).to(x.dtype)``.
RMSNORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})


class _SwiGLUDown(torch.autograd.Function):
    """``F.linear(silu(gate) * up, weight, bias)``, keeping ``gate`` and ``up`` (not the SiLU or the product)."""

    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(gate, up, weight)
        return F.linear(F.silu(gate).mul_(up), weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        gate, up, weight = ctx.saved_tensors
        need_gate, need_up, need_weight, need_bias = ctx.needs_input_grad
        g = grad_out.reshape(-1, grad_out.shape[-1])
        sig = torch.sigmoid(gate)
        silu = gate * sig
        d_product = (g @ weight).view_as(gate)
        d_up = d_product * silu if need_up else None
        d_weight = g.t() @ silu.mul_(up).view(-1, gate.shape[-1]) if need_weight else None
        d_bias = g.sum(dim=0) if need_bias else None
        d_gate = None
        if need_gate:
            # silu'(g) = σ(g) (1 + g (1 − σ(g)))
            d_gate = d_product.mul_(up).mul_(sig.neg().add_(1.0).mul_(gate).add_(1.0).mul_(sig))
        return d_gate, d_up, d_weight, d_bias


def _lean_forward(self: nn.Module, x: Tensor) -> Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    if not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
        return self.down_proj(self.act_fn(gate) * up)
    return _SwiGLUDown.apply(gate, up, self.down_proj.weight, self.down_proj.bias)


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None) or "forward" in module.__dict__)


def eligible(module: nn.Module) -> bool:
    """Whether ``module`` is a SwiGLU block that :func:`lean_swiglu` runs the lean way (see the module docstring)."""
    if type(module).__name__ not in SWIGLU_BLOCKS or _hooked(module):
        return False
    if type(getattr(module, "act_fn", None)).__name__ not in _ACTIVATIONS:
        return False
    projections = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    return all(type(p) is nn.Linear and not _hooked(p) for p in projections)


def _blocks(model: nn.Module) -> Iterator[nn.Module]:
    return (m for m in model.modules() if eligible(m))


@contextmanager
def lean_swiglu(model: nn.Module):
    """Within the context, ``model``'s eligible SwiGLU blocks keep two activations instead of four; yields how
    many blocks that is. Their forward is restored on exit, also after an exception."""
    with _forward_swapped(list(_blocks(model)), _lean_forward) as count:
        yield count


@contextmanager
def _forward_swapped(modules: list[nn.Module], forward):
    """``forward`` as each of ``modules``' forward within the context (yields how many); theirs again on exit."""
    for module in modules:
        module.forward = types.MethodType(forward, module)
    try:
        yield len(modules)
    finally:
        for module in modules:
            del module.forward


class _RMSNorm(torch.autograd.Function):
    """``weight * (x32 * r).to(x.dtype)``, ``r = rsqrt(mean(x32²) + eps)``, ``x32 = x.float()``; keeps ``x`` and ``r``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        x32 = x.to(torch.float32)
        r = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, r, weight)
        return weight * (x32 * r).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, r, weight = ctx.saved_tensors
        need_x, need_weight, _ = ctx.needs_input_grad
        x32 = x.to(torch.float32)
        normed = (x32 * r).to(x.dtype)
        d_weight = None
        if need_weight:      # as autograd's mul: the product in the promoted dtype, summed to the weight's shape
            d_weight = (grad_out * normed).sum_to_size(weight.shape).to(weight.dtype)
        d_x = None
        if need_x:
            # d(x·r)/dx with r = (mean(x²) + ε)^(-1/2):  g·r − x·r³·mean(g·x)
            g = (grad_out * weight).to(x.dtype).to(torch.float32)
            dot = (g * x32).sum(-1, keepdim=True)
            d_x = (g * r).sub_(x32 * (dot * r.pow(3) / x.shape[-1])).to(x.dtype)
        return d_x, d_weight, None


def _norm_forward(self: nn.Module, x: Tensor) -> Tensor:
    if not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
        return type(self).forward(self, x)
    return _RMSNorm.apply(x, self.weight, self.variance_epsilon)


def norm_eligible(module: nn.Module) -> bool:
    """Whether ``module`` is an RMSNorm that :func:`lean_rmsnorm` runs the lean way."""
    return (type(module).__name__ in RMSNORMS and not _hooked(module)
            and isinstance(getattr(module, "weight", None), nn.Parameter)
            and isinstance(getattr(module, "variance_epsilon", None), float))


@contextmanager
def lean_rmsnorm(model: nn.Module):
    """Within the context, ``model``'s eligible RMSNorms keep their input and ``r`` only; yields how many norms
    that is. Their forward is restored on exit, also after an exception."""
    with _forward_swapped([m for m in model.modules() if norm_eligible(m)], _norm_forward) as count:
        yield count


class _GroupedLookup(torch.autograd.Function):
    """``F.embedding(ids, view)``; backward adds the rows' gradients into the view's group buffer."""

    @staticmethod
    def forward(ctx, ids: Tensor, view: Tensor, group, padding_idx: int | None) -> Tensor:
        ctx.save_for_backward(ids, view)
        ctx.group, ctx.padding_idx = group, padding_idx
        return F.embedding(ids, view, padding_idx)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        ids, view = ctx.saved_tensors
        group = ctx.group
        if not ctx.needs_input_grad[1] or not group.hands_on(view):
            return None, None, None, None
        rows, grads = ids.reshape(-1), grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.padding_idx is not None:                 # as F.embedding: the padding row gets no gradient
            keep = rows != ctx.padding_idx
            rows, grads = rows[keep], grads[keep]
        buffer = group.current()
        if buffer is None:
            buffer = torch.zeros(view.shape, dtype=view.dtype, device=view.device)
        group.keep(buffer.index_add_(0, rows, grads.to(buffer.dtype)))
        return None, None, None, None


def _lookup_forward(self: nn.Embedding, ids: Tensor) -> Tensor:
    if not torch.is_grad_enabled() or not self.weight.requires_grad:
        return nn.Embedding.forward(self, ids)
    view, group = grouped_weight(self.weight)
    return _GroupedLookup.apply(ids, view, group, self.padding_idx)


def tied_embedding(model: nn.Module) -> nn.Embedding | None:
    """``model``'s input embedding when it is a plain ``nn.Embedding`` sharing its matrix with a plain linear
    output layer, with its own forward and no max-norm or frequency scaling; else None."""
    get_in, get_out = getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)
    if not callable(get_in) or not callable(get_out):
        return None
    emb, head = get_in(), get_out()
    if type(emb) is not nn.Embedding or type(head) is not nn.Linear or head.weight is not emb.weight:
        return None
    # Hooks on the embedding still run around the lookup (activation checkpointing puts one there); a forward
    # replaced by someone else (an offloading hook) is left to them.
    if emb.max_norm is not None or emb.scale_grad_by_freq or emb.sparse or "forward" in emb.__dict__:
        return None
    return emb


@contextmanager
def lean_tied_embedding(model: nn.Module):
    """Within the context, a tied input embedding (:func:`tied_embedding`) adds its gradient into the output
    layer's grouped buffer; yields whether there is one. Its forward is restored on exit."""
    emb = tied_embedding(model)
    if emb is not None:
        emb.forward = types.MethodType(_lookup_forward, emb)
    try:
        yield emb is not None
    finally:
        if emb is not None:
            del emb.forward
            forget_grouped_weight(emb.weight)
