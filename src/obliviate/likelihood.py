"""Batched answer log-likelihoods under a model: the one place that runs a model to score fixed sequences.

Used to cache the reference model's log-probabilities of the forget items once before unlearning (NPO, DPO),
and by evaluation. Sequences are sorted by length before batching so that a batch holds sequences of similar
length (little padding); results come back in input order. Padding never changes a result: positions past a
sequence's end are masked out of attention and carry label -100.

Log-probabilities are computed from the model's final hidden states at the scored positions, the output layer
applied a chunk of tokens at a time (:mod:`obliviate.objectives.chunked`): no logits of unscored positions, no
``(B, T, V)`` tensor. A model whose output layer cannot be taken apart (:func:`obliviate.forward.inspect_model`)
is scored from its materialised logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from transformers import DynamicCache

from obliviate.data.collate import collate_examples, pad_sequences
from obliviate.evaluation.tokens import row_stats, stats_from_columns, token_stats
from obliviate.forward import capture_hidden, forward_parts, inspect_model
from obliviate.kvcache import cache_kwargs
from obliviate.models import inference, is_peft_model
from obliviate.objectives import DEFAULT_CHUNK_SIZE, reduce_rows, token_logprobs


def sequence_logprobs(model, examples: Sequence[dict], *, pad_token_id: int, batch_size: int = 16,
                      device: torch.device | str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
                      ) -> tuple[list[float], list[int]]:
    """Summed log-probability of the labelled tokens of each example, and the number of labelled tokens.

    ``examples`` are dicts with ``input_ids`` and ``labels`` (lists of ints, -100 = not scored). Computed in
    float32 whatever the model's dtype. Batches are padded, not packed: a packed row's attention runs over its
    neighbours' positions (masked), which changes float32 rounding, and a score must not depend on its batch.
    """
    if device is None:
        device = next(model.parameters()).device
    split = inspect_model(model).split
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    sums: list[float] = [0.0] * len(examples)
    counts: list[int] = [0] * len(examples)
    with inference(model):
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            batch = {k: v.to(device) for k, v in collate_examples([examples[i] for i in idx], pad_token_id).items()}
            logits = forward_parts(model, {"batch": batch}, ("batch",), split=split, pad_token_id=pad_token_id,
                                   pack=False, chunk_size=chunk_size)["batch"]
            logp, mask = token_logprobs(logits, batch["labels"])
            for row, i in enumerate(idx):
                sums[i] = float(logp[row].sum())
                counts[i] = int(mask[row].sum())
    return sums, counts


def shared_prompt_logprobs(model, groups: Sequence[tuple[list[int], Sequence[list[int]]]], *, pad_token_id: int,
                           batch_size: int = 16, device: torch.device | str | None = None
                           ) -> list[list[tuple[float, int]]]:
    """Summed log-probability (and token count) of several answers to the same prompt, the prompt run once.

    ``groups`` holds ``(prompt_ids, [answer_ids, ...])``: every answer token is scored, given the prompt. An
    evaluation item asks for its answer, its paraphrase and several perturbed answers after one question, so
    running the shared prompt once and reusing its key/value cache for every answer saves most of the prompt's
    compute (a chat prompt is often longer than the answer). Items are batched: prompts left-padded with
    explicit position ids, the cache repeated once per answer, answers right-padded. Results equal
    :func:`sequence_logprobs` on the concatenated sequences up to float rounding.
    """
    if device is None:
        device = next(model.parameters()).device
    results: list[list[tuple[float, int]]] = [[] for _ in groups]
    # Chunks of items with the same number of answers, so one cache repeat factor serves the whole chunk.
    by_count: dict[int, list[int]] = {}
    for i, (_, answers) in enumerate(groups):
        by_count.setdefault(len(answers), []).append(i)
    with inference(model):
        for n, members in by_count.items():
            if n == 0:
                continue
            members.sort(key=lambda i: len(groups[i][0]))
            per_chunk = max(1, batch_size // n)
            for start in range(0, len(members), per_chunk):
                chunk = members[start: start + per_chunk]
                _score_chunk(model, [groups[i] for i in chunk], n, pad_token_id, device,
                             [results[i] for i in chunk])
    return results


def _score_chunk(model, chunk, n: int, pad_token_id: int, device, out: list[list[tuple[float, int]]]) -> None:
    split = inspect_model(model).split
    prompts = [p for p, _ in chunk]
    prompt_ids = pad_sequences(prompts, pad_token_id, side="left").to(device)
    prompt_mask = pad_sequences([[1] * len(p) for p in prompts], 0, side="left").to(device)
    # Left padding shifts every token right; explicit positions keep each prompt at 0, 1, 2, ...
    prompt_pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    # Only the last prompt position's logits are read: skip the vocabulary projection everywhere else.
    cache = DynamicCache()
    with capture_hidden(split.decoder) if split is not None else nullcontext({}) as first_hidden:
        first = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_pos, logits_to_keep=1,
                      **cache_kwargs(model, cache))
    cache.batch_repeat_interleave(n)
    answers = [a for _, group in chunk for a in group]
    answer_ids = pad_sequences(answers, pad_token_id).to(device)
    answer_mask = pad_sequences([[1] * len(a) for a in answers], 0).to(device)
    lengths = torch.tensor([len(p) for p in prompts], device=device).repeat_interleave(n)
    positions = lengths[:, None] + torch.arange(answer_ids.shape[1], device=device)[None]
    with capture_hidden(split.decoder) if split is not None else nullcontext({}) as second_hidden:
        second = model(input_ids=answer_ids,
                       attention_mask=torch.cat([prompt_mask.repeat_interleave(n, 0), answer_mask], 1),
                       position_ids=positions, logits_to_keep=1 if split is not None else 0,
                       **cache_kwargs(model, cache))
    scored = answer_mask.bool()
    if split is not None:
        # Answer token t is predicted by the hidden state before it: the prompt's last one for t = 0.
        last = first_hidden["hidden"][:, -1:].repeat_interleave(n, dim=0)
        hidden = torch.cat([last, second_hidden["hidden"][:, :-1]], dim=1)
        logp_rows = reduce_rows("logp", hidden[scored], answer_ids[scored], split.head())
        logp = torch.zeros(answer_ids.shape, dtype=logp_rows.dtype, device=device).masked_scatter(scored, logp_rows)
    else:
        last = first.logits[:, -1:].float().repeat_interleave(n, dim=0)       # predicts each answer's first token
        logits = torch.cat([last, second.logits[:, :-1].float()], dim=1)      # position t predicts answer token t
        logp = logits.gather(-1, answer_ids[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        logp = logp * answer_mask
    for row, a in enumerate(answers):
        out[row // n].append((float(logp[row].sum()), len(a)))


# -- answers packed as a prefix tree -------------------------------------------------------------------------

#: Attention implementations that take a custom 4-D (batch, 1, query, key) additive mask as given.
TREE_ATTENTION = ("sdpa", "eager")


def supports_tree_attention(model) -> bool:
    """Whether :func:`tree_prompt_logprobs` can run on ``model`` (its attention takes a custom 4-D mask)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in TREE_ATTENTION


def tree_prompt_logprobs(model, groups: Sequence[tuple[list[int], Sequence[list[int]]]], *, pad_token_id: int,
                         batch_size: int = 16, device: torch.device | str | None = None
                         ) -> list[list[tuple[float, int]]]:
    """Same results as :func:`shared_prompt_logprobs`, each item's answers packed into ONE row as a prefix tree.

    An item's answers often start alike ("The author's full name is …" and its perturbed variants): the row
    holds the prompt followed by the nodes of the answers' prefix tree, so a prefix shared by several answers
    is run once, and no answer is padded to the longest one. A 4-D attention mask lets every node see the
    prompt and its own ancestors only, and each node's position id is its depth after the prompt, so every
    node is computed exactly as in the answer's own unpacked sequence. Rows are sorted by length and padded on
    the right. Needs an attention implementation that accepts custom masks (:func:`supports_tree_attention`).
    """
    if device is None:
        device = next(model.parameters()).device
    packed = [_pack_tree(prompt, answers) for prompt, answers in groups]
    results: list[list[tuple[float, int]]] = [[] for _ in groups]
    order = sorted(range(len(groups)), key=lambda i: len(packed[i].tokens))
    with inference(model):
        start = 0
        while start < len(order):
            # About batch_size answers per forward pass, as in the other scorers.
            chunk, answers = [], 0
            while start < len(order) and (not chunk or answers + len(groups[order[start]][1]) <= batch_size):
                chunk.append(order[start])
                answers += len(groups[order[start]][1])
                start += 1
            scored = _score_trees(model, [packed[i] for i in chunk], pad_token_id, device)
            for i, item in zip(chunk, scored):
                results[i] = item
    return results


class _Tree:
    """One item packed as prompt + prefix-tree nodes: tokens, parent row positions, depths, answer paths."""

    __slots__ = ("answers", "parents", "prompt_length", "tokens")

    def __init__(self, prompt_length: int):
        self.prompt_length = prompt_length
        self.tokens: list[int] = []
        self.parents: list[int] = []          # row position of each position's parent (-1 for prompt tokens)
        self.answers: list[list[int]] = []    # per answer, the row position of each of its tokens


def _pack_tree(prompt: list[int], answers: Sequence[list[int]]) -> _Tree:
    tree = _Tree(len(prompt))
    tree.tokens = list(prompt)
    tree.parents = [-1] * len(prompt)
    children: dict[tuple[int, int], int] = {}
    for answer in answers:
        path, parent = [], len(prompt) - 1
        for token in answer:
            node = children.get((parent, token))
            if node is None:
                node = len(tree.tokens)
                children[(parent, token)] = node
                tree.tokens.append(token)
                tree.parents.append(parent)
            path.append(node)
            parent = node
        tree.answers.append(path)
    return tree


def _score_trees(model, trees: list[_Tree], pad_token_id: int, device) -> list[list[tuple[float, int]]]:
    width = max(len(t.tokens) for t in trees)
    ids = torch.full((len(trees), width), pad_token_id, dtype=torch.long)
    positions = torch.zeros((len(trees), width), dtype=torch.long)
    sees = torch.zeros((len(trees), width, width), dtype=torch.bool)
    for row, t in enumerate(trees):
        n, p = len(t.tokens), t.prompt_length
        ids[row, :n] = torch.tensor(t.tokens)
        positions[row, :p] = torch.arange(p)
        sees[row, :p, :p] = torch.ones(p, p, dtype=torch.bool).tril()
        for node in range(p, n):
            parent = t.parents[node]
            positions[row, node] = positions[row, parent] + 1
            sees[row, node] = sees[row, parent]
            sees[row, node, node] = True
        idle = torch.arange(n, width)
        sees[row, idle, idle] = True             # padding sees itself only: no empty softmax rows
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(sees.shape, dtype=dtype).masked_fill_(~sees, torch.finfo(dtype).min)[:, None]
    split = inspect_model(model).split
    # Logits are needed from the last prompt position on; skip the vocabulary projection before it.
    first = min(t.prompt_length for t in trees) - 1
    rows, at, targets, owner = [], [], [], []
    for row, t in enumerate(trees):
        for k, path in enumerate(t.answers):
            predecessors = [t.prompt_length - 1] + path[:-1]      # the position whose logits predict each token
            rows += [row] * len(path)
            at += [q - first for q in predecessors]
            targets += [t.tokens[q] for q in path]
            owner += [(row, k)] * len(path)
    rows_t, at_t = torch.tensor(rows, device=device), torch.tensor(at, device=device)
    targets_t = torch.tensor(targets, device=device)
    kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}
    if split is not None:
        # The output layer only on the scored positions, a chunk at a time.
        with capture_hidden(split.decoder) as box:
            model(**kwargs, logits_to_keep=1)
        logp = reduce_rows("logp", box["hidden"][rows_t, at_t + first], targets_t, split.head())
    else:
        logits = model(**kwargs, logits_to_keep=width - first).logits
        picked = logits[rows_t, at_t].float()                     # (scored tokens, vocab)
        logp = picked.gather(-1, targets_t[:, None]).squeeze(-1) - picked.logsumexp(-1)
    out: list[list[tuple[float, int]]] = [[(0.0, len(path)) for path in t.answers] for t in trees]
    sums: dict[tuple[int, int], float] = {}
    for key, value in zip(owner, logp.tolist()):
        sums[key] = sums.get(key, 0.0) + value
    for (row, k), total in sums.items():
        out[row][k] = (total, out[row][k][1])
    return out


# -- per-token statistics and gradient norms of answers (membership inference, memorisation) -----------------


def answer_token_stats(model, pairs: Sequence[tuple[list[int], list[int]]], *, pad_token_id: int,
                       batch_size: int = 16, device: torch.device | str | None = None,
                       chunk_size: int = DEFAULT_CHUNK_SIZE) -> list:
    """:class:`~obliviate.evaluation.tokens.TokenStats` of each ``(prompt_ids, answer_ids)`` pair.

    Each row is the prompt followed by the answer, left-padded with explicit position ids (so every sequence
    sits at positions 0, 1, 2, … of its own), rows sorted by length. Only the positions that predict answer
    tokens go through the output layer, ``chunk_size`` of them at a time (no ``(B, T, V)`` logits); a model
    whose output layer cannot be taken apart (:func:`obliviate.forward.inspect_model`) is scored from its
    logits of those positions. The prompt must hold at least one token (the first answer token is predicted
    from its last one). Results come back in input order.
    """
    if device is None:
        device = next(model.parameters()).device
    if any(len(prompt) == 0 for prompt, _ in pairs):
        raise ValueError("every pair needs a prompt of at least one token: the first answer token is scored "
                         "given the prompt's last one")
    split = inspect_model(model).split
    results: list = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    with inference(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            rows = [list(pairs[i][0]) + list(pairs[i][1]) for i in chunk]
            ids = pad_sequences(rows, pad_token_id, side="left").to(device)
            mask = pad_sequences([[1] * len(r) for r in rows], 0, side="left").to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            width = ids.shape[1]
            if split is not None:
                with capture_hidden(split.decoder) as box:
                    model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
                # Answer token t of a row is predicted at position W - A - 1 + t (rows are left-padded).
                hidden = torch.cat([box["hidden"][row, width - len(pairs[i][1]) - 1: width - 1]
                                    for row, i in enumerate(chunk)])
                targets = torch.tensor([t for i in chunk for t in pairs[i][1]], dtype=torch.long, device=device)
                columns = _head_row_stats(hidden, targets, split.head(), chunk_size)
                offset = 0
                for i in chunk:
                    n = len(pairs[i][1])
                    results[i] = stats_from_columns(*(c[offset: offset + n] for c in columns))
                    offset += n
                continue
            keep = max(len(pairs[i][1]) for i in chunk) + 1      # the last answer's logits are not needed
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           logits_to_keep=keep).logits
            for row, i in enumerate(chunk):
                answer = list(pairs[i][1])
                # Kept position j is row position W - keep + j; answer token t is predicted at W - A - 1 + t.
                first = keep - len(answer) - 1
                results[i] = token_stats(logits[row, first: first + len(answer)], answer)
    return results


def _head_row_stats(hidden: torch.Tensor, targets: torch.Tensor, head, chunk_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~obliviate.evaluation.tokens.row_stats` of the logits of ``hidden`` rows, ``chunk_size`` rows of
    logits at a time."""
    parts = [row_stats(head.logits(hidden[s: s + chunk_size]), targets[s: s + chunk_size])
             for s in range(0, hidden.shape[0], chunk_size)]
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64, device=hidden.device)
        return empty, torch.zeros(0, dtype=torch.bool, device=hidden.device), empty, empty
    return tuple(torch.cat(column) for column in zip(*parts))


def answer_gradient_norms(model, pairs: Sequence[tuple[list[int], list[int]]], *,
                          device: torch.device | str | None = None,
                          chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[float]:
    """For each ``(prompt_ids, answer_ids)``: the mean over parameter tensors of ``‖∇_θ ℓ̄(a|q)‖₂``.

    ``ℓ̄`` is the mean token NLL of the answer tokens; one forward and backward pass per pair, in eval mode
    (no dropout). Gradients are taken with respect to every floating-point parameter (frozen ones included,
    their ``requires_grad`` restored afterwards) through ``torch.autograd.grad``, so no ``.grad`` is touched.
    A LoRA-wrapped model's adapter weights are left out: the gradient with respect to a base weight ``W`` is
    ``∂L/∂y · xᵀ`` whatever the adapter adds to ``y``, i.e. that of the merged model's weight, so the norm is
    the same merged or not. As in training, the output layer runs on the answer's positions only, ``chunk_size``
    rows at a time, and is recomputed in backward (:func:`obliviate.objectives.reduce_rows`).
    """
    if device is None:
        device = next(model.parameters()).device
    named = model.named_parameters()
    if is_peft_model(model):
        named = ((n, p) for n, p in named if "lora_" not in n)
    params = [p for _, p in named if p.is_floating_point()]
    frozen = [p for p in params if not p.requires_grad]
    split = inspect_model(model).split
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for p in frozen:
            p.requires_grad_(True)
        for prompt, answer in pairs:
            ids = torch.tensor([list(prompt) + list(answer)], device=device)
            targets = torch.tensor(list(answer), device=device)
            with torch.enable_grad():
                if split is not None:
                    # The output layer on the answer's predicting positions only, a chunk at a time.
                    with capture_hidden(split.decoder) as box:
                        model(input_ids=ids, logits_to_keep=1)
                    logp = reduce_rows("logp", box["hidden"][0, len(prompt) - 1: -1], targets, split.head(),
                                       chunk_size=chunk_size)
                else:
                    logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float()
                    logp = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
                nll = -logp.mean()
                grads = torch.autograd.grad(nll, params, allow_unused=True)
            norms = [g.detach().float().norm() for g in grads if g is not None]
            out.append(float(torch.stack(norms).mean()))
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
    return out
