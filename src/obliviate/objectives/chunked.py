"""Logits of labelled positions, computed a chunk of tokens at a time.

Every token-level quantity the objectives and the evaluation read is a reduction of ONE logits row: the
log-probability of the next token, a divergence from the uniform distribution, a divergence from a reference
model's row. :class:`HeadLogits` stands for a batch's ``(B, T, V)`` logits without holding them: it keeps the
final hidden states of the positions that predict a labelled token (``N × H``) and the output layer
(:class:`OutputHead`). A reduction applies the output layer to ``chunk_size`` rows at a time, reduces each row
to one number and drops the chunk's logits; in backward the chunk is recomputed (a custom autograd function),
so the loss holds at most ``chunk_size × V`` logits at once instead of ``B × T × V``, and never computes the
output layer on question or padding positions. A reduction of at most ``chunk_size`` rows (one chunk) keeps its
rows' gradients from forward instead — the same ``chunk_size × V`` bound, held until backward — and skips the
recomputation.

The reductions of one forward share one gradient buffer for the output layer's weight
(:func:`share_weight_grad`): each adds its chunks into it, and autograd gets one ``V × H`` gradient instead of one
per reduction (at V = 49,152 and H = 576, 113 MB each).

The values equal the materialised path of :mod:`obliviate.objectives.logprobs` (same formulas on the same rows,
in float32, or float64 for float64 models), and so do the gradients with respect to the hidden states and the
output layer's weight and bias (``tests/unit/test_chunked.py``).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from obliviate.objectives.types import IGNORE_INDEX, ME_DIRECTIONS

#: Rows of logits computed at once. At a vocabulary of 128,256 a float32 chunk of 512 rows is 263 MB.
DEFAULT_CHUNK_SIZE = 512

#: Row reductions with a hand-written gradient (the fast path).
KINDS = ("logp", *ME_DIRECTIONS, "ref_kl")


@dataclass(frozen=True, eq=False)
class OutputHead:
    """A model's output layer: ``logits = softcap(scale · (hidden @ weight.T + bias))``.

    ``weight`` is ``(V, H)`` (a tied input embedding is fine); ``bias`` is ``(V,)`` or None. ``scale``
    multiplies the logits (Cohere's ``logit_scale``, Granite's ``1 / logits_scaling``); ``softcap`` is Gemma 2's
    final ``c · tanh(z / c)``. A head that is not a plain linear layer (LoRA on the output layer, a wrapper) is
    given as ``module`` with its ``vocab_size`` instead of ``weight``: it is called on each chunk under
    activation checkpointing, with autograd's gradients, so it costs more but is just as exact.
    """

    weight: Tensor | None = None
    bias: Tensor | None = None
    module: Callable[[Tensor], Tensor] | None = None
    scale: float = 1.0
    softcap: float | None = None
    vocab_size: int = field(default=0)
    #: Set by :func:`share_weight_grad`: where the chunked reductions add the weight's gradient.
    grad_group: _WeightGradGroup | None = None

    def __post_init__(self) -> None:
        if (self.weight is None) == (self.module is None):
            raise ValueError("an OutputHead takes either a weight matrix or a module, not both or neither")
        if self.weight is not None:
            if self.weight.dim() != 2:
                raise ValueError(f"head weight must be (vocab, hidden), got shape {tuple(self.weight.shape)}")
            object.__setattr__(self, "vocab_size", int(self.weight.shape[0]))
        elif self.vocab_size < 1:
            raise ValueError("a module head needs its vocab_size")
        if self.softcap is not None and not self.softcap > 0:
            raise ValueError(f"softcap must be positive, got {self.softcap!r}")

    def logits(self, hidden: Tensor) -> Tensor:
        """The logits of ``hidden`` rows ``(n, H)`` → ``(n, V)``, float32 (float64 for a float64 model).

        Differentiable; this is also the materialised reference the chunked path is tested against.
        """
        if self.module is not None:
            return self._transform(self.module(hidden))
        return self._transform(F.linear(hidden, self.weight, self.bias))

    def _transform(self, raw: Tensor) -> Tensor:
        z = raw if raw.dtype == torch.float64 else raw.float()
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z


# ---------------------------------------------------------------- row reductions


def _row_values(kind: str, z: Tensor, targets: Tensor, ref_z: Tensor | None) -> Tensor:
    """One number per logits row, by the formulas of :mod:`obliviate.objectives.logprobs` (differentiable).

    The reference form, used where autograd gives the gradient (module heads, :meth:`HeadLogits.map_rows`).
    """
    if kind == "logp":
        return z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)
    if kind == "uniform_to_model":
        return torch.logsumexp(z, dim=-1) - z.mean(dim=-1) - math.log(z.shape[-1])
    if kind == "model_to_uniform":
        log_p = z - torch.logsumexp(z, dim=-1, keepdim=True)
        return (log_p.exp() * log_p).sum(dim=-1) + math.log(z.shape[-1])
    if kind == "ref_kl":
        log_p = torch.log_softmax(z, dim=-1)
        log_ref = torch.log_softmax(ref_z.to(log_p.dtype), dim=-1)
        return F.kl_div(log_p, log_ref, reduction="none", log_target=True).sum(dim=-1)
    raise ValueError(f"unknown row reduction {kind!r}; valid: {', '.join(KINDS)}")


# The in-place forms below compute the same quantities on buffers the chunked path owns (the chunk's logits, the
# reference's), overwriting them: a reduction then holds one or two (n, V) buffers instead of four to six.


def _finite_max(z: Tensor) -> Tensor:
    """Each row's max, 0 where it is not finite (such rows are left unshifted)."""
    m = z.amax(dim=-1)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _shift_(z: Tensor, m: Tensor | None = None) -> Tensor:
    """``z − max`` in place (``m``: the rows' :func:`_finite_max`, when already known)."""
    return z.sub_((_finite_max(z) if m is None else m).unsqueeze(-1))


def _log_softmax_(z: Tensor, scratch: Tensor | None = None) -> Tensor:
    """``log_softmax(z)`` in place; ``scratch`` (same shape, may be overwritten) saves a temporary."""
    shifted = _shift_(z)
    e = torch.exp(shifted, out=scratch) if scratch is not None else shifted.exp()
    return shifted.sub_(e.sum(dim=-1, keepdim=True).log_())


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products ``Σ_v a_v b_v`` without an (n, V) temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(-1)).reshape(-1)


def _values_grads_(kind: str, z: Tensor, targets: Tensor, ref_z: Tensor | None,
                   grads: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`_row_values` of every row, in place (no autograd), and with ``grads`` each row's gradient
    ``∂value_i/∂z_i`` in place of ``z`` (hand-derived; ``p = softmax(z)``):

    logp ``onehot(y) − p``; KL(U‖p) ``p − 1/V``; KL(p‖U) ``p ⊙ (log p − Σ p log p)``; KL(ref‖p) ``p − softmax(z_ref)``.
    ``z`` (and ``ref_z``) are overwritten either way.
    """
    vocab = z.shape[-1]
    if kind in ("logp", "uniform_to_model"):
        first = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) if kind == "logp" else z.mean(dim=-1)
        m = _finite_max(z)
        e = _shift_(z, m).exp_()
        total = e.sum(dim=-1)
        lse = total.log().add_(m)
        values = first.sub_(lse) if kind == "logp" else lse.sub_(first).sub_(math.log(vocab))
        if not grads:
            return values, None
        p = e.div_(total.unsqueeze(-1))
        if kind == "logp":
            return values, p.neg_().scatter_add_(-1, targets.unsqueeze(-1), torch.ones_like(p[:, :1]))
        return values, p.sub_(1.0 / vocab)
    if kind == "model_to_uniform":
        p = torch.empty_like(z)
        log_p = _log_softmax_(z, scratch=p)
        torch.exp(log_p, out=p)
        entropy_term = _dot(p, log_p)
        values = entropy_term + math.log(vocab)
        return values, (log_p.sub_(entropy_term.unsqueeze(-1)).mul_(p) if grads else None)
    if kind == "ref_kl":
        r = torch.empty_like(z)
        log_p = _log_softmax_(z, scratch=r)
        log_r = _log_softmax_(ref_z.to(z.dtype), scratch=r)
        torch.exp(log_r, out=r)
        values = _dot(r, log_r.sub_(log_p))
        return values, (log_p.exp_().sub_(r) if grads else None)
    raise ValueError(f"unknown row reduction {kind!r}; valid: {', '.join(KINDS)}")


# ---------------------------------------------------------------- the chunked output layer


def _matmul_dtype(device: torch.device, weight: Tensor) -> torch.dtype:
    """The dtype the output layer's matrix products run in: the autocast dtype where autocast is on."""
    if torch.is_autocast_enabled(device.type) and weight.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


@dataclass(eq=False)
class _Plan:
    """What one chunked reduction computes: fixed at forward and reused in backward."""

    kind: str
    head: OutputHead
    targets: Tensor
    ref: Callable[[int, int], Tensor] | None
    chunk: int
    mm_dtype: torch.dtype

    def logits(self, hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The chunk's logits; ``weight`` and ``bias`` already in ``mm_dtype`` (cast once per reduction)."""
        with torch.autocast(hidden.device.type, enabled=False):
            raw = F.linear(hidden.to(self.mm_dtype), weight, bias)
        return self.head._transform(raw)

    def cast(self, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The head's parameters in ``mm_dtype`` (no copy when they already are)."""
        return weight.to(self.mm_dtype), None if bias is None else bias.to(self.mm_dtype)

    def reduce(self, z: Tensor, start: int, stop: int, grads: bool) -> tuple[Tensor, Tensor | None]:
        """The values of the chunk's logits ``z`` (rows ``start:stop``) and, with ``grads``, their gradients
        with respect to ``hidden @ W.T + b`` (overwriting ``z``): the row gradient through the soft cap
        (``1 − (z/c)²``) and the scale."""
        cap = None if not grads or self.head.softcap is None else (z / self.head.softcap).square_().neg_().add_(1.0)
        ref = self.ref(start, stop) if self.ref is not None else None
        values, dz = _values_grads_(self.kind, z, self.targets[start:stop], ref, grads)
        if dz is not None:
            if cap is not None:
                dz.mul_(cap)
            if self.head.scale != 1.0:
                dz.mul_(self.head.scale)
        return values, dz


class _WeightGradGroup:
    """The output layer weight's gradient, summed over the chunked reductions of one backward pass.

    Each reduction's backward adds its chunks into :attr:`buffer` (tagged with the backward pass it belongs to)
    and gives autograd no weight gradient of its own; :class:`_GroupedWeight`, through which every reduction
    reads the weight, runs after all of them (autograd's dependency order) and hands the sum on. A reader adds
    into the group only where :meth:`hands_on` says the view's backward runs in this pass.
    """

    def __init__(self) -> None:
        self.task: int | None = None
        self.buffer: Tensor | None = None

    def current(self) -> Tensor | None:
        """The sum so far in this backward pass (None at its first reduction)."""
        return self.buffer if self.task == torch._C._current_graph_task_id() else None

    def keep(self, buffer: Tensor) -> None:
        self.task, self.buffer = torch._C._current_graph_task_id(), buffer

    def take(self) -> Tensor | None:
        found, self.task, self.buffer = self.current(), None, None
        return found

    @staticmethod
    def hands_on(view: Tensor) -> bool:
        """Whether the backward pass running now will run ``view``'s :class:`_GroupedWeight` (not, say, an
        autograd.grad call that asks for other inputs only)."""
        return view.grad_fn is not None and torch._C._will_engine_execute_node(view.grad_fn)


class _GroupedWeight(torch.autograd.Function):
    """The weight, unchanged; its gradient is the group's sum plus whatever else read it (a module path)."""

    @staticmethod
    def forward(ctx, weight: Tensor, group: _WeightGradGroup) -> Tensor:
        ctx.group = group
        ctx.set_materialize_grads(False)
        return weight.view_as(weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor | None):
        summed = ctx.group.take()
        if summed is None or grad is None:
            return (grad if summed is None else summed), None
        return summed.add_(grad), None


# The grouped view of a weight that another reader made in the current forward (a tied input embedding,
# obliviate.lean), by id of the weight: the output layer's reductions then add into the same buffer.
_grouped: dict[int, tuple[weakref.ref, Tensor, _WeightGradGroup]] = {}


def grouped_weight(weight: Tensor) -> tuple[Tensor, _WeightGradGroup]:
    """A view of ``weight`` whose gradient is the sum its readers add into the returned group (plus what reaches
    the view through autograd), remembered for :func:`share_weight_grad` of a head with the same weight until
    :func:`forget_grouped_weight`."""
    view, group = _new_group(weight)
    _grouped[id(weight)] = (weakref.ref(weight), view, group)
    return view, group


def _new_group(weight: Tensor) -> tuple[Tensor, _WeightGradGroup]:
    group = _WeightGradGroup()
    return _GroupedWeight.apply(weight, group), group


def forget_grouped_weight(weight: Tensor) -> None:
    _grouped.pop(id(weight), None)


def share_weight_grad(head: OutputHead) -> OutputHead:
    """``head`` with one weight-gradient buffer for all its chunked reductions in a backward pass (the same
    gradient, summed in place instead of one ``V × H`` tensor per reduction) — the buffer of the weight's
    :func:`grouped_weight` view when the forward made one; ``head`` itself when there is no gradient to share
    (no grad mode, a frozen weight, a module head)."""
    if head.weight is None or not torch.is_grad_enabled() or not head.weight.requires_grad:
        return head
    known = _grouped.get(id(head.weight))
    if known is not None and known[0]() is head.weight:
        view, group = known[1], known[2]
    else:
        view, group = _new_group(head.weight)
    return dataclasses.replace(head, weight=view, grad_group=group)


def _add_weight_grad(d_weight: Tensor | None, dz_mm: Tensor, h: Tensor, acc_dtype: torch.dtype,
                     shape: torch.Size, block: int) -> Tensor:
    """``d_weight + dz_mmᵀ h`` accumulated in ``acc_dtype`` (``d_weight`` None: the product alone, no zero fill)."""
    if dz_mm.dtype == acc_dtype:
        return torch.mm(dz_mm.t(), h) if d_weight is None else d_weight.addmm_(dz_mm.t(), h)
    # A 16-bit product cannot be added into the float32 accumulator in place: it is formed a block of
    # vocabulary rows at a time, so its temporaries stay about the size of a chunk of logits, not V × H.
    if d_weight is None:
        d_weight = torch.zeros(shape, dtype=acc_dtype, device=h.device)
    for v in range(0, shape[0], block):
        d_weight[v:v + block].add_((dz_mm[:, v:v + block].t() @ h).to(acc_dtype))
    return d_weight


class _ChunkedHeadReduction(torch.autograd.Function):
    """Row values of ``plan.kind`` from hidden rows and the head's weight, ``chunk`` rows at a time.

    Forward keeps nothing of size V, unless all rows fit in one chunk: then it keeps their gradients
    ``∂value_i/∂z_i`` (computed from the logits it has anyway). Backward scales the kept gradients, or recomputes
    each chunk's logits, and accumulates the gradients of the hidden rows, the weight and the bias.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, plan: _Plan) -> Tensor:
        values = torch.empty(hidden.shape[0], dtype=torch.float64 if plan.mm_dtype == torch.float64 else torch.float32,
                             device=hidden.device)
        w_mm, b_mm = plan.cast(weight, bias)
        keep = not isinstance(ctx, _NoContext) and 0 < hidden.shape[0] <= plan.chunk
        ctx.row_grads = None
        for start in range(0, hidden.shape[0], plan.chunk):
            stop = min(start + plan.chunk, hidden.shape[0])
            z = plan.logits(hidden[start:stop], w_mm, b_mm)
            values[start:stop], ctx.row_grads = plan.reduce(z, start, stop, grads=keep)
        ctx.plan = plan
        ctx.save_for_backward(hidden, weight, bias)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values: Tensor):
        plan: _Plan = ctx.plan
        hidden, weight, bias = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        acc_dtype = torch.float64 if plan.mm_dtype == torch.float64 else torch.float32
        group = plan.head.grad_group
        # The shared buffer only where its sum is handed on in this backward pass (not, say, in an autograd.grad
        # call that asks for the hidden states alone) and needs no cast to the weight's dtype.
        grouped = need_weight and group is not None and acc_dtype == weight.dtype and group.hands_on(weight)
        d_hidden = torch.empty_like(hidden) if need_hidden else None
        d_weight = group.current() if grouped else None
        d_bias = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device) if need_bias else None
        w_mm, b_mm = plan.cast(weight, bias)
        block = max(1, -(-plan.chunk * weight.shape[0] // weight.shape[1]))
        kept, ctx.row_grads = ctx.row_grads, None           # a second backward (retain_graph) recomputes
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], plan.chunk):
                stop = min(start + plan.chunk, hidden.shape[0])
                h = hidden[start:stop].to(plan.mm_dtype)
                dz = kept if kept is not None else plan.reduce(plan.logits(h, w_mm, b_mm), start, stop, True)[1]
                dz.mul_(grad_values[start:stop].to(dz.dtype).unsqueeze(-1))
                dz_mm = dz.to(plan.mm_dtype)
                if need_hidden:
                    d_hidden[start:stop] = (dz_mm @ w_mm).to(hidden.dtype)
                if need_weight:
                    d_weight = _add_weight_grad(d_weight, dz_mm, h, acc_dtype, weight.shape, block)
                if need_bias:
                    d_bias.add_(dz.sum(dim=0).to(acc_dtype))
        if grouped:
            group.keep(d_weight)
            d_weight = None
        elif need_weight and d_weight is None:                      # no rows
            d_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device)
        return (d_hidden,
                None if d_weight is None else d_weight.to(weight.dtype),
                None if d_bias is None else d_bias.to(bias.dtype),
                None)


def _module_reduction(kind: str, head: OutputHead, hidden: Tensor, targets: Tensor,
                      ref: Callable[[int, int], Tensor] | None, chunk: int,
                      fn: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None = None) -> Tensor:
    """The same reduction through ``head.logits`` and autograd, each chunk under activation checkpointing.

    For heads given as a module, and for any row function ``fn(z, targets, ref_z) → (n,)``.
    """
    reduce = fn if fn is not None else (lambda z, t, r: _row_values(kind, z, t, r))
    out = []
    for start in range(0, hidden.shape[0], chunk):
        stop = min(start + chunk, hidden.shape[0])
        t = targets[start:stop]
        r = ref(start, stop) if ref is not None else None

        def chunk_values(h: Tensor, t: Tensor = t, r: Tensor | None = r) -> Tensor:
            return reduce(head.logits(h), t, r)

        if torch.is_grad_enabled():
            out.append(checkpoint(chunk_values, hidden[start:stop], use_reentrant=False))
        else:
            out.append(chunk_values(hidden[start:stop]))
    if not out:
        return hidden.new_zeros(0, dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32)
    return torch.cat(out)


def reduce_rows(kind: str, hidden: Tensor, targets: Tensor, head: OutputHead, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                ref: Callable[[int, int], Tensor] | None = None) -> Tensor:
    """Row reduction ``kind`` (one of :data:`KINDS`) of the logits of ``hidden`` rows ``(N, H)``, ``(N,)``.

    ``targets`` ``(N,)`` are the next tokens (read by ``"logp"``); ``ref(start, stop)`` gives the reference
    logits of rows ``start:stop`` (read by ``"ref_kl"``). Differentiable with respect to ``hidden`` and the
    head's parameters, holding at most ``chunk_size`` rows of logits at once.
    """
    if head.weight is None:
        return _module_reduction(kind, head, hidden, targets, ref, chunk_size)
    plan = _Plan(kind=kind, head=head, targets=targets, ref=ref, chunk=chunk_size,
                 mm_dtype=_matmul_dtype(hidden.device, head.weight))
    if not torch.is_grad_enabled() or not (hidden.requires_grad or head.weight.requires_grad
                                           or (head.bias is not None and head.bias.requires_grad)):
        with torch.no_grad():
            return _ChunkedHeadReduction.forward(_NoContext(), hidden, head.weight, head.bias, plan)
    return _ChunkedHeadReduction.apply(hidden, head.weight, head.bias, plan)


class HeadLogits:
    """The ``(B, T, V)`` logits of a batch, held as the final hidden states of its labelled positions.

    ``hidden`` is ``(N, H)``: the hidden state at every position ``t`` whose next token ``labels[b, t + 1]`` is
    labelled (not ``-100``), in row-major ``(b, t)`` order; ``labels`` is ``(B, T)`` as for materialised logits.
    The logits at any other position are never computed: no loss reads them. The token functions of
    :mod:`obliviate.objectives.logprobs` accept a HeadLogits wherever they accept logits, and
    :class:`~obliviate.objectives.SequenceOutputs` holds one as its ``logits`` (or ``ref_logits``).
    """

    def __init__(self, hidden: Tensor, labels: Tensor, head: OutputHead, *, chunk_size: int = DEFAULT_CHUNK_SIZE):
        if labels.dim() != 2:
            raise ValueError(f"labels must be (batch, length), got shape {tuple(labels.shape)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        vocab = head.vocab_size
        invalid = mask & ((targets < 0) | (targets >= vocab))
        if invalid.any():
            bad = sorted(set(targets[invalid].tolist()))[:5]
            raise ValueError(f"labels must be token ids in [0, {vocab}) or {IGNORE_INDEX} (ignored), found {bad}")
        if hidden.dim() != 2 or hidden.shape[0] != int(mask.sum()):
            raise ValueError(f"hidden must be (labelled positions, hidden size) = ({int(mask.sum())}, H), "
                             f"got shape {tuple(hidden.shape)}")
        self.hidden = hidden
        self.labels = labels
        self.mask = mask
        self.targets = targets[mask].long()
        self.head = head
        self.chunk_size = chunk_size

    @classmethod
    def from_hidden(cls, hidden_states: Tensor, labels: Tensor, head: OutputHead, *,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> HeadLogits:
        """From a model's final hidden states ``(B, T, H)``: the rows that predict a labelled token are kept."""
        if hidden_states.shape[:2] != labels.shape:
            raise ValueError(f"hidden states {tuple(hidden_states.shape)} do not match labels {tuple(labels.shape)}")
        mask = labels[:, 1:] != IGNORE_INDEX
        return cls(hidden_states[:, :-1][mask], labels, head, chunk_size=chunk_size)

    # -- what the shape checks of SequenceOutputs and the terms read -----------------------------------------
    @property
    def shape(self) -> torch.Size:
        b, t = self.labels.shape
        return torch.Size((b, t, self.head.vocab_size))

    def dim(self) -> int:
        return 3

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.hidden.dtype == torch.float64 else torch.float32

    def check_labels(self, labels: Tensor) -> None:
        """The reductions are defined for the labels these logits were built with; anything else is refused."""
        if labels is not self.labels and (labels.shape != self.labels.shape or not torch.equal(labels, self.labels)):
            raise ValueError("these HeadLogits were built for other labels: pass the labels they were built with")

    # -- reductions, one value per labelled position (N,) --------------------------------------------------
    def _reduce(self, kind: str, ref: Callable[[int, int], Tensor] | None = None) -> Tensor:
        return reduce_rows(kind, self.hidden, self.targets, self.head, chunk_size=self.chunk_size, ref=ref)

    def logprobs(self) -> Tensor:
        """``log p(y_{t+1} | y_≤t)`` at every labelled position, ``(N,)``."""
        return self._reduce("logp")

    def uniform_kl(self, direction: str) -> Tensor:
        """KL between the next-token distribution and the uniform one (see ``token_uniform_kl``), ``(N,)``."""
        if direction not in ME_DIRECTIONS:
            raise ValueError(f"unknown ME direction {direction!r}; valid: {', '.join(ME_DIRECTIONS)}")
        return self._reduce(direction)

    def kl_from(self, ref: HeadLogits | Tensor) -> Tensor:
        """``KL(π_ref ‖ π_θ)`` at every labelled position, ``(N,)``; ``ref`` (lazy or materialised ``(B, T, V)``)
        is the frozen reference and gets no gradient."""
        return self._reduce("ref_kl", self._ref_rows(ref))

    def map_rows(self, fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
                 ref: HeadLogits | Tensor | None = None) -> Tensor:
        """Any row function ``fn(z (n, V), targets (n,), ref_z (n, V) or None) → (n,)``, chunk by chunk.

        Gradients come from autograd through activation checkpointing (each chunk recomputed in backward), so a
        new per-token quantity needs no hand-written gradient.
        """
        return _module_reduction("", self.head, self.hidden, self.targets,
                                 None if ref is None else self._ref_rows(ref), self.chunk_size, fn=fn)

    def rows(self) -> Tensor:
        """The ``(N, V)`` logits of the labelled positions, materialised (for tests and small batches)."""
        return self.head.logits(self.hidden)

    def _ref_rows(self, ref: HeadLogits | Tensor) -> Callable[[int, int], Tensor]:
        if isinstance(ref, HeadLogits):
            if ref.labels.shape != self.labels.shape or not torch.equal(ref.mask, self.mask):
                raise ValueError("reference logits must cover the same labelled positions as the policy's")
            ref_hidden, ref_head = ref.hidden.detach(), ref.head

            def rows(start: int, stop: int) -> Tensor:
                with torch.no_grad():
                    return ref_head.logits(ref_hidden[start:stop])
            return rows
        if ref.shape != self.shape:
            raise ValueError(f"ref_logits shape {tuple(ref.shape)} must equal logits shape {tuple(self.shape)}")
        dense = ref.detach()[:, :-1][self.mask]
        return lambda start, stop: dense[start:stop].clone()     # the reductions overwrite what they are given


class _NoContext:
    """Stands in for autograd's ctx when the forward runs alone (no gradient needed)."""

    row_grads = None

    def save_for_backward(self, *tensors) -> None:
        pass
