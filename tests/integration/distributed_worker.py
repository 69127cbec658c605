"""Runs unlearning configs in every process of a torchrun launch (tests/integration/test_distributed.py).

Usage: ``torchrun --nproc_per_node N tests/integration/distributed_worker.py SPEC.json``. SPEC holds
``{"runs": [{"config": {...}, "local_token_counts": false, "interrupt_at": null, "record": null}, ...]}``; each
run is an ``unlearn`` config. ``local_token_counts`` normalises token means by this process's own token counts
(the behaviour without the all-reduce), to show the test can tell; ``interrupt_at`` stops the run at that
optimizer step, as a kill would, and resumes it from its checkpoint; ``record`` names a JSON file where each
process writes what its reference model is and how many of its weights it holds.
"""

from __future__ import annotations

import json
import sys

import torch

import obliviate.training.trainer as trainer_module
from obliviate.config import config_from_dict
from obliviate.training.run import unlearn
from obliviate.training.trainer import UnlearningTrainer


def _skip_deepspeed_shm_build() -> None:
    """DeepSpeed compiles a shared-memory all-reduce for CPUs on first use (minutes, needs a C++ compiler); it
    is only a faster path than gloo's, so the test processes go without it."""
    import importlib
    try:
        ds_comm = importlib.import_module("deepspeed.comm.torch")
    except ImportError:
        return
    ds_comm.build_shm_op = lambda: None


def _recording_prepare_reference(path: str):
    original = trainer_module.prepare_reference

    def prepare(model, accelerator, **kw):
        full = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
        ref = original(model, accelerator, **kw)
        local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in ref.parameters())
        with open(f"{path}.rank{accelerator.process_index}", "w") as f:
            json.dump({"type": type(ref).__name__, "local": local, "full": full,
                       "training": getattr(ref, "module", ref).training, "requires_grad": any(p.requires_grad for p in ref.parameters())},
                      f)
        return ref

    return prepare


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    _skip_deepspeed_shm_build()
    original_sum, original_step = UnlearningTrainer._sum_over_processes, UnlearningTrainer.training_step
    original_prepare = trainer_module.prepare_reference
    for run in spec["runs"]:
        trainer_module.prepare_reference = _recording_prepare_reference(run["record"]) if run.get("record") \
            else original_prepare
        cfg = config_from_dict("unlearn", run["config"])
        UnlearningTrainer._sum_over_processes = (lambda self, counts: list(counts)) \
            if run.get("local_token_counts") else original_sum
        stop = run.get("interrupt_at")
        if stop:
            def interrupt(self, *a, _stop=stop, **kw):
                if self.state.global_step == _stop:
                    raise KeyboardInterrupt
                return original_step(self, *a, **kw)

            UnlearningTrainer.training_step = interrupt
            try:
                unlearn(cfg)
            except KeyboardInterrupt:
                pass
            else:
                raise SystemExit("the run was not interrupted")
            UnlearningTrainer.training_step = original_step
            unlearn(cfg, resume=True)
        else:
            unlearn(cfg)
    UnlearningTrainer._sum_over_processes = original_sum
    trainer_module.prepare_reference = original_prepare
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
