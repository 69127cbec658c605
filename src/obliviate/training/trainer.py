"""One trainer for unlearning and fine-tuning, built on :class:`transformers.Trainer`.

The engine gives gradient accumulation, warm-up and schedules, weight decay, seeding, checkpoint/resume,
accelerate / DeepSpeed / FSDP and loggers. This class only:

1. runs the forward passes an objective needs — all parts of a step in ONE forward pass (parts packed end to
   end without padding, or padded to a common length and stacked), plus a no-grad reference pass only where
   the objective reads reference logits (the KL regularizer);
2. hands the logits to the pure objective functions of :mod:`obliviate.objectives` — by default as
   :class:`~obliviate.objectives.HeadLogits` (the final hidden states of labelled positions, with the output
   layer applied a chunk of tokens at a time by the loss: no ``(B, T, V)`` float32 logits are ever held);
   ``loss_chunk_size=0`` hands over the model's materialised logits instead (the reference path);
3. logs each loss term separately;
4. hands each micro-batch's loss and terms, and each step's gradient norm, to the non-finite guard
   (:mod:`obliviate.training.guard`) when one is attached.

What it computes is asked of the terms (:class:`~obliviate.objectives.TermSpec`): the decoder blocks whose outputs
they read are hooked (those blocks only, and only when a term reads them), the frozen reference model runs only
when a term reads its logits or hidden states, a term's parameter filter freezes every other weight before the
optimizer is built, and a term's state (:func:`~obliviate.objectives.new_states`) is saved in every checkpoint's
``trainer_state.json`` and restored on resume.

Reference log-probabilities of the fixed forget items (NPO, DPO) are computed once before training, from the
starting model itself unless another reference model is given; a frozen reference copy is needed only when a term
reads reference *logits* at every step (KL, LLMU). With LoRA no copy is made at all: the reference is the same
model with its adapters disabled.

Token means are normalised over the whole accumulated batch (all micro-batches of one optimizer step) and,
with several processes (DDP, DeepSpeed, FSDP), over every process's share of it: gradient accumulation 2×2 gives
the same update as a batch of 4, and N processes with per-device batch b the same as one process with N·b.

Under several processes the reference is built per process like the model it stands for: a full frozen copy
under DDP, sharded through the engine under ZeRO-3 and FSDP (in eval mode, as preference-training libraries
such as TRL do). Cached reference log-probs are computed by each process for its share of the forget items and
gathered, so every process holds all of them.
"""

from __future__ import annotations

import gc
import logging
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from obliviate.attention import packed_attention
from obliviate.data.formatting import IGNORE_INDEX
from obliviate.errors import ConfigError
from obliviate.forward import DEFAULT_PACK_LENGTH, Split, decoder_layers, forward_parts, inspect_model
from obliviate.likelihood import sequence_logprobs
from obliviate.models import is_peft_model
from obliviate.objectives import (DEFAULT_CHUNK_SIZE, HeadLogits, ObjectiveParams, SequenceOutputs,
                                  UnlearningInputs, compute_objective, get_forget, get_regularizer, new_states,
                                  required_inputs)
from obliviate.objectives.registry import coerce_params
from obliviate.lean import lean_rmsnorm, lean_swiglu, lean_tied_embedding
from obliviate.training.compact import flat_states_from_first_step
from obliviate.training.data import UnlearningDataset
from obliviate.training.distributed import prepare_reference

log = logging.getLogger(__name__)


@contextmanager
def _adapters_disabled(model):
    """``model.disable_adapter()`` that leaves every weight's ``requires_grad`` as it found it.

    PEFT marks the active adapter trainable again when its adapters are re-enabled, which would undo a method's
    choice of trainable weights (RMU trains the adapters of a few blocks only) after the first reference pass.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with model.disable_adapter():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class TrainingObjective:
    """What to optimise: a forget term (None when fine-tuning) and a regularizer, with their coefficients."""

    forget: str | None
    regularizer: str
    forget_coeff: float = 1.0
    regularization_coeff: float = 1.0
    params: ObjectiveParams = field(default_factory=ObjectiveParams)
    forget_params: object | None = None       # the terms' own parameters (None: from ``params`` and defaults)
    regularizer_params: object | None = None

    def _specs(self) -> list[tuple[object, object | None]]:
        specs = [(get_regularizer(self.regularizer), self.regularizer_params)]
        if self.forget is not None:
            specs.insert(0, (get_forget(self.forget), self.forget_params))
        return specs

    @property
    def layers(self) -> tuple[int, ...]:
        """Decoder blocks whose outputs a term reads (policy and reference alike)."""
        return tuple(sorted({layer for spec, p in self._specs()
                             for layer in spec.layers(p if p is not None else self.params)}))

    @property
    def hidden_parts(self) -> frozenset[str]:
        return frozenset().union(*(spec.hidden for spec, _ in self._specs()))

    @property
    def ref_hidden_parts(self) -> frozenset[str]:
        return frozenset().union(*(spec.ref_hidden for spec, _ in self._specs()))

    def trainable(self):
        """The terms' parameter filters combined (a name must pass every one), or None when no term has one."""
        filters = [spec.trainable(coerce_params(spec.params, p if p is not None else self.params))
                   for spec, p in self._specs() if spec.trainable is not None]
        if not filters:
            return None
        return lambda name: all(f(name) for f in filters)

    @property
    def reads_reference_each_step(self) -> bool:
        """Whether the frozen reference model runs at every step (its logits or hidden states are read)."""
        return bool(self.ref_logit_parts or self.ref_hidden_parts)

    @property
    def parts(self) -> tuple[str, ...]:
        if self.forget is None:
            return ("retain",)
        return tuple(sorted(required_inputs(self.forget, self.regularizer).fields))

    @property
    def ref_logp_parts(self) -> frozenset[str]:
        return frozenset() if self.forget is None else \
            frozenset(required_inputs(self.forget, self.regularizer).ref_logps)

    @property
    def ref_logit_parts(self) -> frozenset[str]:
        return frozenset() if self.forget is None else \
            frozenset(required_inputs(self.forget, self.regularizer).ref_logits)

    @property
    def needs_reference(self) -> bool:
        return bool(self.ref_logp_parts or self.ref_logit_parts or self.ref_hidden_parts)


class _EpochCallback(TrainerCallback):
    """Tells the data set which epoch starts, so retain pairings change per epoch and survive resumption."""

    def __init__(self, dataset: UnlearningDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is fractional after a mid-epoch resume (e.g. 1.5 → epoch 1); 1e-6 absorbs float error
        # at epoch boundaries (0.9999999 → 1).
        self.dataset.set_epoch(int(state.epoch + 1e-6) if state.epoch else 0)
        return control


class TermStates(TrainerCallback, ExportableState):
    """Carries the terms' state objects through training: ``end_step()`` after every optimizer step, their
    ``state_dict()`` into every checkpoint's ``trainer_state.json`` (written last, so a checkpoint is complete only
    with it), and ``load_state_dict`` from the checkpoint a run resumes from.

    With several processes, ``mean`` (the element-wise mean of a list of floats over the processes, called by all
    of them) is handed to each state's ``synchronise(mean)`` before ``end_step()``, so a state that moves by what
    its process saw of the step moves by the whole step's value and stays the same on every process."""

    def __init__(self, states: dict | None = None, mean=None):
        self.states = states or {}
        self.mean = mean

    def state(self) -> dict:
        return {"args": {}, "attributes": {"values": {k: s.state_dict() for k, s in self.states.items()}}}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        values = saved.get("attributes", {}).get("values", {}) if isinstance(saved, dict) else {}
        for key, value in values.items():
            if key in self.states:
                self.states[key].load_state_dict(value)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        for s in self.states.values():
            if self.mean is not None and hasattr(s, "synchronise"):
                s.synchronise(self.mean)
            if hasattr(s, "end_step"):
                s.end_step()
        return control


class UnlearningTrainer(Trainer):
    """Trainer for any forget term × regularizer pair, and for plain fine-tuning (forget=None, regularizer=gd)."""

    def __init__(self, *args, objective: TrainingObjective, reference_model=None,
                 loss_chunk_size: int = DEFAULT_CHUNK_SIZE, packing: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if loss_chunk_size < 0:
            raise ValueError(f"loss_chunk_size must be >= 0 (0 = materialised logits), got {loss_chunk_size}")
        self.objective = objective
        self.reference_model = reference_model
        self.loss_chunk_size = loss_chunk_size
        self.packing = packing
        # compute_loss returns a loss already normalised per micro-batch; the engine divides by the number of
        # accumulation steps (see get_batch_samples for token means).
        self.loss_is_scaled_for_ga = False
        self._token_normalizers: dict[str, float] = {}
        self._term_values: dict[str, list[float]] = {}
        self.nonfinite_guard = None  # a NonFiniteGuard (training/guard.py), attached by the run
        if isinstance(self.train_dataset, UnlearningDataset):
            self.add_callback(_EpochCallback(self.train_dataset))
        if objective.reads_reference_each_step and reference_model is None and not self._uses_lora():
            raise ValueError(f"objective {objective.forget}+{objective.regularizer} needs a reference model")
        if self.is_deepspeed_enabled:
            # Saving must give a full model folder: under ZeRO-3 that means gathering the 16-bit weights.
            zero = self.accelerator.state.deepspeed_plugin.deepspeed_config.setdefault("zero_optimization", {})
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        if self.is_fsdp_enabled:
            self.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        self._check_layers()
        self._freeze_untrainable()
        self.term_states = new_states(objective.forget, objective.regularizer) if objective.forget else {}
        if self.term_states:
            mean = self._mean_over_processes if self.accelerator.num_processes > 1 else None
            self.add_callback(TermStates(self.term_states, mean=mean))
        if self.reference_model is not None:
            self.reference_model = prepare_reference(self.reference_model, self.accelerator,
                                                     micro_batch=self.args.per_device_train_batch_size)
        if objective.ref_logp_parts:
            if self._sharded() and self.reference_model is None:
                # The reference is this model with its adapters off, which a sharded engine can only run once
                # it has wrapped it: cache when training begins.
                self.add_callback(_CacheReferenceOnTrainBegin(self))
            else:
                self._cache_reference_logps()
        if not objective.reads_reference_each_step and self.reference_model is not None:
            # The cached log-probs are all NPO/DPO need: free the copy before training starts.
            self.reference_model = None
            gc.collect()
        self._plan = self._forward_plan(self.accelerator.unwrap_model(self.model), reference=False, name="model")
        # SwiGLU blocks keep two of their four activations, RMSNorms their input only, and a tied embedding adds
        # its gradient into the output layer's buffer (obliviate.lean); sharded engines gather weights in the
        # modules' own hooks, so there the model runs as written.
        self._lean_layers = not self._sharded()
        self._ref_plan = None
        if objective.reads_reference_each_step:
            ref, ctx = self._reference_context()
            with ctx:
                # With LoRA the reference is the same model with its adapters off: its output layer as it is then.
                self._ref_plan = self._forward_plan(ref, reference=self.reference_model is None,
                                                    name="reference model")

    # -- how the forward pass runs --------------------------------------------------------------------------
    def _forward_plan(self, model, *, reference: bool, name: str) -> tuple[Split | None, bool]:
        """(split, pack) for ``model``: the output layer apart from the decoder when the loss is chunked and the
        model allows it, and whether its sequences may be packed. Falls back with one log line each."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            # Sharded weights are gathered inside the engine's forward only: the output layer cannot be applied
            # outside it, and a probe cannot run before the engine is set up.
            log.info("%s: sharded engine, so materialised logits and padded batches", name)
            return None, False
        info = inspect_model(model, reference=reference)
        split = None
        if self.loss_chunk_size > 0:
            if info.split is None:
                log.info("%s: materialised logits, because %s", name, info.split_problem)
            split = info.split
        if self.packing and not info.packs:
            log.info("%s: padded batches, because %s", name, info.pack_problem)
        return split, self.packing and info.packs

    # -- what the terms ask of the model ------------------------------------------------------------------------
    def _check_layers(self) -> None:
        layers = self.objective.layers
        if not layers:
            return
        n = len(decoder_layers(self.accelerator.unwrap_model(self.model)))
        bad = [layer for layer in layers if not 0 <= layer < n]
        if bad:
            raise ConfigError([f"method: decoder block {bad[0]} does not exist; this model has blocks 0..{n - 1}"])

    def _freeze_untrainable(self) -> None:
        keep = self.objective.trainable()
        if keep is None:
            return
        model = self.accelerator.unwrap_model(self.model)
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        kept = [name for name in trainable if keep(name)]
        if not kept:
            raise ConfigError([f"method: the parameter filter of {self.objective.forget}+"
                               f"{self.objective.regularizer} leaves no trainable weight (first trainable: "
                               f"{trainable[0] if trainable else 'none'})"])
        for name, p in model.named_parameters():
            if p.requires_grad and not keep(name):
                p.requires_grad_(False)
        log.info("the method trains %d of %d weight tensors (first: %s)", len(kept), len(trainable), kept[0])

    # -- reference model ------------------------------------------------------------------------------------
    def _uses_lora(self) -> bool:
        return is_peft_model(self.model)

    def _sharded(self) -> bool:
        """Whether the engine shards the weights (ZeRO-3, FSDP), so only the wrapped model can run them."""
        if self.is_fsdp_enabled:
            return True
        plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        return plugin is not None and plugin.zero_stage == 3

    def _reference_context(self):
        """The reference model and a context in which calling it gives reference outputs.

        Without a reference model: the model with its LoRA adapters disabled, or — for the log-probs cached before
        training, while it is still the starting model — the model itself.
        """
        if self.reference_model is not None:
            return self.reference_model, nullcontext()
        model = self.accelerator.unwrap_model(self.model)
        # FSDP gathers its shards only when called through its wrapper.
        caller = self.model_wrapped if self.is_fsdp_enabled else model
        return caller, (_adapters_disabled(model) if self._uses_lora() else nullcontext())

    def _cache_reference_logps(self) -> None:
        """Reference log-probs of the fixed forget items: each process scores its share, then all share all.

        The shares are padded to equal length so every process runs as many forward passes (a sharded engine
        gathers weights collectively in each one).
        """
        dataset = self.train_dataset
        if not isinstance(dataset, UnlearningDataset):
            raise TypeError("reference log-probs can only be cached for an UnlearningDataset")
        ref, ctx = self._reference_context()
        pad_id = self._pad_token_id()
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        share = -(-len(dataset) // processes)
        mine = list(range(rank * share, min(len(dataset), (rank + 1) * share)))
        padded = mine + [0] * (share - len(mine))
        with ctx:
            for part in sorted(self.objective.ref_logp_parts):
                examples = dataset.forget_side_examples(part)
                sums, _ = sequence_logprobs(ref, [examples[i] for i in padded], pad_token_id=pad_id,
                                            batch_size=self.args.per_device_train_batch_size * 4,
                                            device=self.args.device)
                dataset.ref_logps[part] = _gather_lists(sums[:len(mine)], processes)
        log.info("cached reference log-probs of %d forget items for %s", len(dataset),
                 ", ".join(sorted(self.objective.ref_logp_parts)))

    def _pad_token_id(self) -> int:
        tok = self.processing_class
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        return pad if pad is not None else 0

    # -- accumulation-wide token normalisation ----------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        # Each micro-batch loss is later divided by len(batch_samples) by the engine, and the gradients are
        # averaged over the N processes, so a token mean over the whole accumulated batch of all processes is:
        # sum over this micro-batch / (tokens in all micro-batches of all processes / (n micro-batches · N)).
        self._token_normalizers = {}
        if batch_samples:
            parts = list(batch_samples[0])
            counts = [sum(int((b[p]["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batch_samples) for p in parts]
            processes = self.accelerator.num_processes
            totals = self._sum_over_processes(counts) if processes > 1 else counts
            for part, total in zip(parts, totals):
                self._token_normalizers[part] = max(total, 1) / (len(batch_samples) * processes)
        return batch_samples, num_items

    def _sum_over_processes(self, counts: list[int]) -> list[int]:
        """Element-wise sum of ``counts`` over all processes (an all-reduce; every process must call it)."""
        tensor = torch.tensor(counts, dtype=torch.long, device=self.accelerator.device)
        return [int(v) for v in self.accelerator.reduce(tensor, reduction="sum").tolist()]

    def _mean_over_processes(self, values: list[float]) -> list[float]:
        """Element-wise mean of ``values`` over all processes (an all-reduce; every process must call it)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor, reduction="mean").tolist()

    # -- the step -------------------------------------------------------------------------------------------
    def _forward_parts(self, model, inputs: dict[str, dict], parts: tuple[str, ...], *, reference: bool = False,
                       layers: tuple[int, ...] = (), hidden_out: dict | None = None
                       ) -> dict[str, torch.Tensor | HeadLogits]:
        """One forward pass over all parts; per part, logits aligned with its labels (chunked or materialised), and
        the outputs of decoder blocks ``layers`` into ``hidden_out``."""
        split, pack = self._ref_plan if reference else self._plan
        return forward_parts(model, inputs, parts, split=split, pad_token_id=self._pad_token_id(), pack=pack,
                             chunk_size=self.loss_chunk_size or DEFAULT_CHUNK_SIZE, pack_length=DEFAULT_PACK_LENGTH,
                             layers=layers, hidden_out=hidden_out)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        obj = self.objective
        parts = obj.parts
        hidden: dict[str, dict] = {}
        logits = self._forward_parts(model, inputs, parts, layers=obj.layers if obj.hidden_parts else (),
                                     hidden_out=hidden)
        ref_logits: dict[str, torch.Tensor] = {}
        ref_hidden: dict[str, dict] = {}
        if obj.reads_reference_each_step:
            ref, ctx = self._reference_context()
            with torch.no_grad(), ctx:
                ref_parts = tuple(sorted(obj.ref_logit_parts | obj.ref_hidden_parts))
                ref_logits = self._forward_parts(ref, inputs, ref_parts, reference=True,
                                                 layers=obj.layers if obj.ref_hidden_parts else (),
                                                 hidden_out=ref_hidden)
        outputs = {
            p: SequenceOutputs(logits=logits[p], labels=inputs[p]["labels"], ref_logps=inputs[p].get("ref_logps"),
                               ref_logits=ref_logits.get(p) if p in obj.ref_logit_parts else None,
                               token_normalizer=self._token_normalizers.get(p),
                               hidden=hidden.get(p) if p in obj.hidden_parts else None,
                               ref_hidden=ref_hidden.get(p) if p in obj.ref_hidden_parts else None)
            for p in parts
        }
        unlearning_inputs = UnlearningInputs(**outputs)
        if obj.forget is None:
            loss = get_regularizer(obj.regularizer).fn(unlearning_inputs, obj.params)
            self._record(loss=loss)
        else:
            result = compute_objective(unlearning_inputs, forget=obj.forget, regularizer=obj.regularizer,
                                       forget_coeff=obj.forget_coeff, regularization_coeff=obj.regularization_coeff,
                                       params=obj.params, forget_params=obj.forget_params,
                                       regularizer_params=obj.regularizer_params, states=self.term_states)
            loss = result.loss
            self._record(forget_loss=result.forget_loss, regularization_loss=result.regularization_loss)
        return (loss, logits) if return_outputs else loss

    # -- the non-finite guard's view of each step ----------------------------------------------------------
    def _step_context(self) -> ExitStack:
        """Packed rows attending per sequence, lean SwiGLU blocks, RMSNorms and tied embedding: switched for the
        whole step, so that layers recomputed in backward (activation checkpointing) run what their forward ran."""
        stack = ExitStack()
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self._plan[1]:
            stack.enter_context(packed_attention(unwrapped))
        if self._lean_layers:
            stack.enter_context(lean_swiglu(unwrapped))
            stack.enter_context(lean_rmsnorm(unwrapped))
            stack.enter_context(lean_tied_embedding(unwrapped))
        return stack

    def create_optimizer(self, *args, **kwargs):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(*args, **kwargs)
        if fresh and not self._sharded() and all(p.device.type == "cpu" for p in self.model.parameters()):
            flat_states_from_first_step(optimizer)     # one buffer per kind of state (training/compact.py)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        context = self._step_context()
        guard = self.nonfinite_guard
        if guard is None:
            with context:
                return super().training_step(model, inputs, num_items_in_batch)
        before = {name: len(values) for name, values in self._term_values.items()}
        with context:
            loss = super().training_step(model, inputs, num_items_in_batch)
        fresh = [name for name, values in self._term_values.items() if len(values) > before.get(name, 0)]
        loss, drop = guard.after_micro_step(loss, {name: self._term_values[name][-1] for name in fresh})
        if drop:  # a skipped update's terms stay out of the logged averages
            for name in fresh:
                self._term_values[name].pop()
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self.nonfinite_guard is not None:
            self.nonfinite_guard.grad_norm = grad_norm
        return grad_norm

    # -- logging --------------------------------------------------------------------------------------------
    def _record(self, **terms: torch.Tensor) -> None:
        for name, value in terms.items():
            self._term_values.setdefault(name, []).append(float(value.detach()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            names = sorted(n for n, values in self._term_values.items() if values and n != "loss")
            means = [sum(self._term_values[n]) / len(self._term_values[n]) for n in names]
            if self.accelerator.num_processes > 1 and names:
                # Each process's term carries its share of the global token normaliser (times N), so the mean
                # over processes is the term of the whole batch, as the logged loss is. Every process logs.
                tensor = torch.tensor(means, dtype=torch.float64, device=self.accelerator.device)
                means = self.accelerator.reduce(tensor, reduction="mean").tolist()
            logs.update(zip(names, means))
            self._term_values = {}
        if self.nonfinite_guard is not None:
            self.nonfinite_guard.adjust_logs(logs)
        super().log(logs, start_time)


class _CacheReferenceOnTrainBegin(TrainerCallback):
    """Caches the reference log-probs once a sharded engine has wrapped the model (LoRA under ZeRO-3/FSDP)."""

    def __init__(self, trainer: UnlearningTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.trainer.train_dataset.ref_logps:
            self.trainer._cache_reference_logps()
        return control


def _gather_lists(values: list, processes: int) -> list:
    """The concatenation, in process order, of every process's ``values`` (all processes must call it)."""
    if processes == 1:
        return list(values)
    return list(gather_object(list(values)))
