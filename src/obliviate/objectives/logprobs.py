"""The one place where logits become per-token quantities.

Every objective reads logits through these functions, so shifting, masking, padding and precision are
handled once. Conventions (Hugging Face): ``logits`` is ``(B, T, V)``, ``labels`` is ``(B, T)`` and not
shifted; the logits at position ``t`` predict ``labels[:, t + 1]``; ``-100`` marks positions no loss may
see. Per-token outputs are ``(B, T - 1)`` and hold 0 at ignored positions, so a plain sum over them is a
sum over labelled tokens only: padding never contributes, whatever logits it carries.

Only the labelled positions are gathered before any vocabulary-wide reduction, which keeps question and
padding positions out of the computation altogether and never builds a full ``log_softmax`` of the batch
(selective log-softmax, as in TRL's ``selective_log_softmax``).

Wherever these functions take ``logits`` they also take a :class:`~obliviate.objectives.chunked.HeadLogits`:
the final hidden states of the labelled positions and the output layer, applied a chunk of tokens at a time,
so that the ``(B, T, V)`` logits are never held (the trainer's and the evaluation's default). Both give the same
values and gradients; the materialised form stays the reference the chunked one is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from obliviate.objectives.chunked import HeadLogits
from obliviate.objectives.types import IGNORE_INDEX, ME_DIRECTIONS, SequenceOutputs


def _check_shapes(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (batch, length, vocab) and labels (batch, length), got logits "
            f"{tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )


def _labelled_rows(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Shift, then gather the logits rows that predict a labelled token.

    Returns ``(rows (N, V), targets (N,), mask (B, T-1))`` where ``N`` is the number of labelled shifted
    positions. Half-precision logits are upcast to float32 here, on ``N`` rows only: ``logsumexp`` over
    a 32k–150k vocabulary in bfloat16 loses about two decimal digits.
    """
    _check_shapes(logits, labels)
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    vocab = logits.shape[-1]
    invalid = mask & ((targets < 0) | (targets >= vocab))
    if invalid.any():
        bad = sorted(set(targets[invalid].tolist()))[:5]
        raise ValueError(
            f"labels must be token ids in [0, {vocab}) or {IGNORE_INDEX} (ignored), found {bad}"
        )
    rows = logits[:, :-1, :][mask]
    if rows.dtype in (torch.float16, torch.bfloat16):
        rows = rows.float()
    return rows, targets[mask].long(), mask


def _scatter(values: Tensor, mask: Tensor) -> Tensor:
    """Place per-labelled-position ``values`` (N,) back into a ``(B, T-1)`` tensor with 0 elsewhere.

    Differentiable; with ``N = 0`` the result is all zeros and still part of the graph, so a batch without
    labelled tokens yields a zero loss whose gradient is zero rather than NaN.
    """
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def token_logprobs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of each labelled next token: ``log p_θ(y_{t+1} | y_≤t)``.

    Computed as the target logit minus ``logsumexp`` of the logits row (nats). Returns
    ``(logp (B, T-1), mask (B, T-1) bool)``; ``logp`` is 0 where ``mask`` is False.
    """
    if isinstance(logits, HeadLogits):
        logits.check_labels(labels)
        return _scatter(logits.logprobs(), logits.mask), logits.mask
    rows, targets, mask = _labelled_rows(logits, labels)
    target_logits = rows.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return _scatter(target_logits - torch.logsumexp(rows, dim=-1), mask), mask


def sequence_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """Summed log-probability of the labelled tokens of each sequence, ``log π(a|q) = −ℓ(a|q)``; ``(B,)``.

    A sequence with no labelled token gets 0 (probability 1 of the empty answer).
    """
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(dim=-1)


def token_nll_sum_and_count(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed negative log-likelihood over all labelled tokens of the batch (nats), and their count.

    Returns ``(nll_sum, count)``, both scalar tensors; ``count`` is an integer tensor.
    """
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum(), mask.sum()


def token_mean(values: Tensor, mask: Tensor, token_normalizer: float | Tensor | None = None) -> Tensor:
    """Mean of per-token ``values`` (0 at ignored positions) over the labelled tokens.

    The denominator is ``token_normalizer`` when given (the labelled-token count of the whole
    accumulated batch under gradient accumulation), else the number of True entries of ``mask``. With
    no labelled token and no normalizer the sum is 0 and so is the mean: the count is clamped to 1 to
    avoid 0/0.
    """
    total = values.sum()
    if token_normalizer is None:
        return total / mask.sum().clamp(min=1)
    if isinstance(token_normalizer, Tensor):
        return total / token_normalizer.to(device=total.device, dtype=total.dtype).reshape(())
    if not (math.isfinite(token_normalizer) and token_normalizer > 0):
        raise ValueError(f"token_normalizer must be a positive token count, got {token_normalizer!r}")
    return total / token_normalizer


def mean_token_nll(out: SequenceOutputs) -> Tensor:
    """Mean token negative log-likelihood ``ℓ̄`` of the labelled tokens of ``out`` (nats per token).

    Honours ``out.token_normalizer`` (see :func:`token_mean`). This is the loss of GA (negated), GD, IDK.
    """
    logp, mask = token_logprobs(out.logits, out.labels)
    return token_mean(-logp, mask, out.token_normalizer)


def token_uniform_kl(logits: Tensor, labels: Tensor, direction: str) -> tuple[Tensor, Tensor]:
    """Per-token KL divergence between the next-token distribution ``p_t`` and the uniform ``U`` over V.

    Yuan et al. (2024), arXiv 2410.08109, ME objective (docs/methods.md). With ``z`` the logits row and
    ``lse = logsumexp(z)``:

    - ``"uniform_to_model"``: ``KL(U‖p_t) = −log V − (1/V) Σ_v log p_t(v) = lse − mean_v(z) − log V``
      (the released code);
    - ``"model_to_uniform"``: ``KL(p_t‖U) = log V − H(p_t) = log V + Σ_v p_t(v) log p_t(v)``
      (the paper's equation).

    Both are reductions of the logits row; no uniform tensor is built. Returns ``(kl (B, T-1), mask)``
    in nats, 0 at ignored positions.
    """
    if direction not in ME_DIRECTIONS:
        raise ValueError(f"unknown ME direction {direction!r}; valid: {', '.join(ME_DIRECTIONS)}")
    if isinstance(logits, HeadLogits):
        logits.check_labels(labels)
        return _scatter(logits.uniform_kl(direction), logits.mask), logits.mask
    rows, _, mask = _labelled_rows(logits, labels)
    log_vocab = math.log(logits.shape[-1])
    lse = torch.logsumexp(rows, dim=-1)
    if direction == "uniform_to_model":
        kl = lse - rows.mean(dim=-1) - log_vocab
    else:
        log_p = rows - lse.unsqueeze(-1)
        kl = (log_p.exp() * log_p).sum(dim=-1) + log_vocab
    return _scatter(kl, mask), mask


def token_kl(ref_logits: Tensor, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token ``KL(π_ref ‖ π_θ) = Σ_v π_ref(v) (log π_ref(v) − log π_θ(v))`` of next-token distributions.

    docs/methods.md, KL regularizer. ``ref_logits`` come from the frozen reference model and are detached, so no
    gradient reaches it. Returns ``(kl (B, T-1), mask)`` in nats, 0 at ignored positions.
    """
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"ref_logits shape {tuple(ref_logits.shape)} must equal logits shape {tuple(logits.shape)}"
        )
    if isinstance(logits, HeadLogits):
        logits.check_labels(labels)
        return _scatter(logits.kl_from(ref_logits), logits.mask), logits.mask
    if isinstance(ref_logits, HeadLogits):
        ref_logits.check_labels(labels)
        with torch.no_grad():
            ref_rows = ref_logits.rows()
        rows, _, mask = _labelled_rows(logits, labels)
        return _scatter(_kl_rows(ref_rows, rows), mask), mask
    rows, _, mask = _labelled_rows(logits, labels)
    ref_rows, _, _ = _labelled_rows(ref_logits.detach(), labels)
    return _scatter(_kl_rows(ref_rows, rows), mask), mask


def _kl_rows(ref_rows: Tensor, rows: Tensor) -> Tensor:
    log_p = torch.log_softmax(rows, dim=-1)
    log_ref = torch.log_softmax(ref_rows.to(log_p.dtype), dim=-1)
    # kl_div(input, target, log_target=True) = exp(target) · (target − input), elementwise.
    return F.kl_div(log_p, log_ref, reduction="none", log_target=True).sum(dim=-1)


def token_rows(logits: Tensor, labels: Tensor, fn, ref_logits: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Any per-token quantity ``fn(z (n, V), targets (n,), ref_z (n, V) or None) → (n,)`` of the logits rows that
    predict a labelled token; ``(values (B, T-1), mask)`` with 0 at ignored positions.

    ``z`` is float32 (float64 for float64 logits), ``targets`` the next tokens, ``ref_z`` the frozen reference's
    rows (detached; cast it to ``z.dtype``). On :class:`HeadLogits` the rows are computed a chunk at a time and
    recomputed in backward (autograd through activation checkpointing), so a new term needs no hand-written
    gradient and never holds ``(B, T, V)`` logits; on materialised logits ``fn`` sees all rows at once. ``fn`` must
    not modify its arguments in place.
    """
    if isinstance(logits, HeadLogits):
        logits.check_labels(labels)
        return _scatter(logits.map_rows(fn, ref_logits), logits.mask), logits.mask
    rows, targets, mask = _labelled_rows(logits, labels)
    ref_rows = None
    if ref_logits is not None:
        if ref_logits.shape != logits.shape:
            raise ValueError(
                f"ref_logits shape {tuple(ref_logits.shape)} must equal logits shape {tuple(logits.shape)}")
        if isinstance(ref_logits, HeadLogits):
            with torch.no_grad():
                ref_rows = ref_logits.rows()
        else:
            ref_rows, _, _ = _labelled_rows(ref_logits.detach(), labels)
    return _scatter(fn(rows, targets, ref_rows), mask), mask
