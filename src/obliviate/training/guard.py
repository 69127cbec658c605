"""The non-finite guard: a NaN or inf in the loss or the gradients stops the run (or skips that update).

Checked at every optimizer step, from what the trainer computes anyway: each micro-batch's loss and loss terms
(:meth:`NonFiniteGuard.after_micro_step`, called by the trainer) and the gradient norm (the trainer hands it
over before the optimizer step). Before a checkpoint is written the weights themselves are checked, so every
checkpoint on disk is finite.

``train.nan_policy``:

``stop`` (default)
    The bad step's update is not applied, nothing more is checkpointed, and training stops; the run then ends
    with :class:`TrainingStopped` (exit status 3), naming the step, the term that went non-finite and the last
    good checkpoint, which is kept. Nothing is saved as ``model/``.
``skip``
    The bad step's update is not applied (its gradients are dropped, so the optimizer leaves every weight and
    its own state as they were) and training goes on; skipped steps are counted in the log
    (``skipped_updates``) and in run.json. More than ``train.nan_max_skips`` skips stop the run as above.

A skipped update's loss and terms are left out of the logged averages; a logged loss is never finite while a
term of it is not. With a loss scaler (float16 mixed precision) an infinite gradient norm is the scaler's
business: it skips that step and lowers its scale, so the guard does not count it. Under DeepSpeed the engine
steps the optimizer itself, so a bad update cannot be withheld: ``stop`` stops after it (nothing is saved).
"""

from __future__ import annotations

import logging
import math

import torch
from transformers import TrainerCallback

from obliviate.errors import ObliviateError

log = logging.getLogger(__name__)

NAN_POLICIES = ("stop", "skip")

_TERM_NAMES = {"forget_loss": "the forget term (forget_loss)",
               "regularization_loss": "the regularization term (regularization_loss)",
               "loss": "the loss"}


class TrainingStopped(ObliviateError):
    """Training was stopped by the non-finite guard; the CLI exits with status 3."""

    exit_code = 3


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or inf (one device sync for the whole model)."""
    named = [(name, p) for name, p in model.named_parameters() if p.numel()]
    if not named:
        return []
    flags = [torch.isfinite(p.detach()).all() for _, p in named]
    device = flags[0].device  # parameters may sit on several devices; the flags are gathered on one
    values = torch.stack([f.to(device) for f in flags]).tolist()
    return [name for (name, _), ok in zip(named, values) if not ok]


def _value(v: float) -> str:
    return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")


class NonFiniteGuard(TrainerCallback):
    """Stops (or skips) optimizer steps whose loss, loss terms or gradient norm are not finite."""

    def __init__(self, policy: str = "stop", max_skips: int = 10):
        if policy not in NAN_POLICIES:
            raise ValueError(f"policy must be one of {NAN_POLICIES}, got {policy!r}")
        self.policy, self.max_skips = policy, max_skips
        self.withhold_updates = True  # False where the optimizer step cannot be withheld (DeepSpeed)
        self.check_grad_norm = True   # False under a loss scaler, which handles overflowing gradients itself
        self.check_weights = True     # False for sharded weights (FSDP, DeepSpeed): each rank sees only its shard,
                                      # and ranks that disagree about stopping would wait on each other forever
        self.grad_norm = None         # handed over by the trainer before each optimizer step
        self.skipped_steps: list[int] = []
        self.skipped_before = 0       # skips recorded in the log of the checkpoint a run resumed from
        self.stop_reason: str | None = None
        self.stop_step: int | None = None
        self._reasons: list[str] = []           # what went non-finite in the current optimizer step
        self._step_loss = 0.0                   # sum of the current step's micro-batch losses
        self._window: list[tuple[float, bool]] = []   # (step loss, skipped) since the last log
        self._kept_loss, self._kept_steps = 0.0, 0    # over the whole run, for train_loss

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    @property
    def skipped_updates(self) -> int:
        return self.skipped_before + len(self.skipped_steps)

    @property
    def _skipping(self) -> bool:
        return self.policy == "skip"

    # -- called by the trainer ---------------------------------------------------------------------------------
    def after_micro_step(self, loss: torch.Tensor, terms: dict[str, float]) -> tuple[torch.Tensor, bool]:
        """Check one micro-batch: returns the loss for the engine to accumulate, and whether the micro-batch's
        recorded terms must be dropped from the logged averages (they are, when its update will be skipped)."""
        value = float(loss.detach())
        bad = {name: v for name, v in terms.items() if not math.isfinite(v)}
        if math.isfinite(value) and not bad:
            self._step_loss += value
            return loss, False
        if bad:
            self._reasons += [f"{_TERM_NAMES.get(n, n)} is {_value(v)}" for n, v in bad.items()]
        else:
            self._reasons.append(f"the loss is {_value(value)} (its terms are finite)")
        if self._skipping:
            # The engine adds this to its running loss: a zero keeps the log finite; adjust_logs corrects the mean.
            return torch.zeros_like(loss), True
        # A loss is never logged as finite while a term of it is not.
        return (loss if not math.isfinite(value) else torch.full_like(loss, math.nan)), False

    def adjust_logs(self, logs: dict) -> None:
        """Leave skipped updates out of the logged loss averages and report how many there were."""
        if "loss" in logs:
            window, self._window = self._window, []
            if any(skipped for _, skipped in window):
                kept = [v for v, skipped in window if not skipped]
                logs["loss"] = sum(kept) / len(kept) if kept else math.nan
        if "train_loss" in logs and self.skipped_steps:
            logs["train_loss"] = self._kept_loss / self._kept_steps if self._kept_steps else math.nan
        if self.skipped_updates:
            logs["skipped_updates"] = self.skipped_updates

    # -- callback events -----------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run continues the count of the run it resumes.
        self.skipped_before = max((int(e.get("skipped_updates", 0)) for e in state.log_history), default=0)
        return control

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        norm, self.grad_norm = self.grad_norm, None
        if norm is not None and self.check_grad_norm:
            n = float(norm)
            if not math.isfinite(n):
                self._reasons.append(f"the gradient norm is {_value(n)}")
        if self._reasons and self.withhold_updates and model is not None:
            # torch optimizers pass over parameters without a gradient: no step, no weight decay, no state change.
            for p in model.parameters():
                p.grad = None
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        reasons, self._reasons = list(dict.fromkeys(self._reasons)), []
        step_loss, self._step_loss = self._step_loss, 0.0
        if not reasons and control.should_save and model is not None:
            reasons = self._weights_problem(model)
        skipped = bool(reasons) and self._skipping
        self._window.append((step_loss, skipped))
        if not skipped:
            self._kept_loss += step_loss
            self._kept_steps += 1
        if not reasons:
            return control
        step = state.global_step
        if skipped:
            self.skipped_steps.append(step)
            log.warning("step %d: update skipped (train.nan_policy=skip): %s", step, "; ".join(reasons))
            if self.skipped_updates > self.max_skips:
                self._stop(step, f"step {step}: {self.skipped_updates} updates were skipped for non-finite values, "
                                 f"more than train.nan_max_skips={self.max_skips} (this one: {'; '.join(reasons)})",
                           control)
        else:
            self._stop(step, f"step {step}: {'; '.join(reasons)}", control)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.stopped:
            control.should_save = False
        elif control.should_save and model is not None:
            reasons = self._weights_problem(model)
            if reasons:
                self._stop(state.global_step, f"step {state.global_step}: {'; '.join(reasons)}", control)
        return control

    # -- checks ------------------------------------------------------------------------------------------------
    def _weights_problem(self, model) -> list[str]:
        if not self.check_weights:
            return []
        bad = nonfinite_parameters(model)
        if not bad:
            return []
        return [f"the update made {len(bad)} weight tensor{'s' if len(bad) != 1 else ''} non-finite "
                f"(first: {bad[0]})"]

    def _stop(self, step: int, reason: str, control) -> None:
        self.stop_reason, self.stop_step = reason, step
        control.should_training_stop = True
        control.should_save = False   # every checkpoint on disk stays a good one
        control.should_log = True     # the bad step's values go into the log
