"""Unlearning objectives: pure tensor math over logits, labels and log-probs; no model calls.

Logits come materialised or as :class:`HeadLogits` (final hidden states of the labelled positions and the
output layer, applied a chunk of tokens at a time); the terms read them the same way.

The trainer runs the forward passes a method needs (:func:`required_inputs`), packs them into
:class:`UnlearningInputs`, and calls :func:`compute_objective` — the one place where a forget term and a
regularizer are combined. Terms live in :mod:`obliviate.objectives.terms` and, one module per method, in
:mod:`obliviate.objectives.recent`; users add their own with :func:`register_forget` / :func:`register_regularizer`
(and name a method with :func:`register_method`).
"""

from obliviate.objectives.types import (
    IGNORE_INDEX,
    ME_DIRECTIONS,
    ObjectiveParams,
    SequenceOutputs,
    UnlearningInputs,
)
from obliviate.objectives.chunked import (DEFAULT_CHUNK_SIZE, HeadLogits, OutputHead, forget_grouped_weight,
                                          grouped_weight, reduce_rows, share_weight_grad)
from obliviate.objectives.logprobs import (
    mean_token_nll,
    sequence_logprob,
    token_kl,
    token_logprobs,
    token_mean,
    token_nll_sum_and_count,
    token_rows,
    token_uniform_kl,
)
from obliviate.objectives.params import NoParams, build_params, describe_params, param
from obliviate.objectives.registry import (
    FORGET_TERMS,
    REGULARIZERS,
    TermRegistry,
    TermSpec,
    get_forget,
    get_regularizer,
    register_forget,
    register_regularizer,
)
from obliviate.objectives import terms
from obliviate.objectives.methods import (
    MethodSpec,
    RequiredInputs,
    all_methods,
    list_methods,
    register_method,
    required_inputs,
    resolve_method,
)
from obliviate.objectives.compose import ObjectiveResult, compute_objective, new_states, term_params
from obliviate.objectives import recent  # noqa: E402  (registers the newer methods)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "HeadLogits",
    "OutputHead",
    "FORGET_TERMS",
    "IGNORE_INDEX",
    "ME_DIRECTIONS",
    "REGULARIZERS",
    "MethodSpec",
    "ObjectiveParams",
    "ObjectiveResult",
    "RequiredInputs",
    "SequenceOutputs",
    "TermRegistry",
    "TermSpec",
    "UnlearningInputs",
    "NoParams",
    "all_methods",
    "build_params",
    "compute_objective",
    "describe_params",
    "new_states",
    "param",
    "recent",
    "register_method",
    "term_params",
    "token_rows",
    "get_forget",
    "get_regularizer",
    "list_methods",
    "mean_token_nll",
    "register_forget",
    "reduce_rows",
    "share_weight_grad",
    "grouped_weight",
    "forget_grouped_weight",
    "register_regularizer",
    "required_inputs",
    "resolve_method",
    "sequence_logprob",
    "terms",
    "token_kl",
    "token_logprobs",
    "token_mean",
    "token_nll_sum_and_count",
    "token_uniform_kl",
]
