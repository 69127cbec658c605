"""Runs over several processes (torchrun, accelerate launch; DDP, DeepSpeed ZeRO, FSDP).

The engine (transformers' Trainer through accelerate) wraps the model being trained. A frozen reference model
(the KL regularizer's, or NPO's before its log-probs are cached) is a second model the engine does not know
about: :func:`prepare_reference` builds it per process the way the trained model is built — a full copy on the
device under DDP and ZeRO-1/2, sharded through the engine under ZeRO-3 and FSDP — in eval mode, as TRL's
``prepare_deepspeed`` / ``prepare_fsdp`` do. docs/scaling.md says what is tested where.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

log = logging.getLogger(__name__)


def prepare_reference(model: torch.nn.Module, accelerator, *, micro_batch: int = 1) -> torch.nn.Module:
    """The frozen reference ``model`` ready to run on this process (see the module docstring); ``micro_batch``
    is the per-device batch the DeepSpeed engine is configured for."""
    # Deferred: accelerate is heavy and only multi-process runs need it.
    from accelerate.utils import DistributedType

    model.requires_grad_(False)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return _prepare_deepspeed(model, accelerator, micro_batch)
    if accelerator.distributed_type == DistributedType.FSDP:
        return _prepare_fsdp(model, accelerator)
    model.to(accelerator.device)
    model.eval()
    return model


def deepspeed_reference_config(config: dict, *, hidden_size: int | None, micro_batch: int, processes: int,
                               bf16: bool = False, fp16: bool = False) -> dict:
    """The DeepSpeed config of an inference-only engine for the reference, derived from the training config.

    ZeRO-3 keeps stage 3 (the reference is sharded like the model), with the bucket sizes transformers uses
    for a model of this width; ZeRO-0/1/2 do not shard weights, so the reference is a full copy (stage 0). No
    optimizer or scheduler, and every value the training side leaves as ``"auto"`` is made concrete.
    """
    cfg = copy.deepcopy(config)
    cfg.pop("optimizer", None)
    cfg.pop("scheduler", None)
    zero = dict(cfg.get("zero_optimization") or {})
    zero = {k: v for k, v in zero.items() if v != "auto"}
    if zero.get("stage", 0) == 3:
        if hidden_size:
            zero.update(reduce_bucket_size=hidden_size * hidden_size,
                        stage3_param_persistence_threshold=10 * hidden_size,
                        stage3_prefetch_bucket_size=int(0.9 * hidden_size * hidden_size))
    else:
        zero = {"stage": 0}
    cfg["zero_optimization"] = zero
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = 1
    cfg["train_batch_size"] = micro_batch * processes
    cfg.pop("gradient_clipping", None)
    for key, on in (("bf16", bf16), ("fp16", fp16)):
        section = dict(cfg.get(key) or {})
        if section.get("enabled") == "auto" or key not in cfg:
            section["enabled"] = on
        cfg[key] = {k: v for k, v in section.items() if v != "auto"}
    return cfg


def _prepare_deepspeed(model: torch.nn.Module, accelerator, micro_batch: int) -> torch.nn.Module:
    # Deferred: optional dependency: DeepSpeed (the deepspeed extra).
    import deepspeed

    plugin = accelerator.state.deepspeed_plugin
    mixed = str(getattr(accelerator, "mixed_precision", "no"))
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    config = deepspeed_reference_config(plugin.deepspeed_config, hidden_size=getattr(text, "hidden_size", None),
                                        micro_batch=micro_batch, processes=accelerator.num_processes,
                                        bf16=mixed == "bf16", fp16=mixed == "fp16")
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    log.info("reference model prepared by DeepSpeed (ZeRO stage %s)", config["zero_optimization"]["stage"])
    return engine


def _prepare_fsdp(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) == 2:
        # Deferred: accelerate is heavy and only multi-process runs need it.
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model
        model = fsdp2_prepare_model(accelerator, model)
    else:
        if not isinstance(model, FSDP):
            plugin.set_auto_wrap_policy(model)
            model = FSDP(model, sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
                         cpu_offload=plugin.cpu_offload, auto_wrap_policy=plugin.auto_wrap_policy,
                         mixed_precision=plugin.mixed_precision_policy, sync_module_states=plugin.sync_module_states,
                         backward_prefetch=plugin.backward_prefetch, forward_prefetch=plugin.forward_prefetch,
                         use_orig_params=plugin.use_orig_params, limit_all_gathers=plugin.limit_all_gathers,
                         device_id=accelerator.device)
    model.eval()
    log.info("reference model sharded by FSDP")
    return model


@contextmanager
def loading_in_one_process():
    """Load models whole in this process alone, also while a ZeRO-3 run is set up.

    Under ZeRO-3, transformers loads every model sharded over all processes (zero.Init), which needs every
    process to take part; the main process loading the saved model alone (to merge LoRA adapters, to evaluate)
    would wait for the others forever.
    """
    # Deferred: transformers takes seconds to import; only this path needs it.
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    config = ref() if ref is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def barrier(accelerator=None) -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if accelerator is not None:
        accelerator.wait_for_everyone()
    elif dist.is_available() and dist.is_initialized():
        dist.barrier()
