"""The memory estimate (obliviate.memory) against hand-computed numbers and against what autograd saves."""

from __future__ import annotations

import pytest
import torch

from obliviate.lean import lean_rmsnorm, lean_swiglu
from obliviate.memory import (KNOWN_CONFIGS, TrainingSetup, estimate_memory, layer_activation_bytes,
                              shape_from_config)


@pytest.fixture(scope="module")
def llama2():
    return shape_from_config(KNOWN_CONFIGS["llama-2-7b"], name="llama-2-7b")


@pytest.fixture(scope="module")
def llama3():
    return shape_from_config(KNOWN_CONFIGS["llama-3-8b"], name="llama-3-8b")


def test_parameter_counts_match_the_published_sizes(llama2, llama3):
    """Llama-2-7B: embedding 32000·4096 = 131,072,000; a layer 4·4096² + 3·4096·11008 + 2·4096 = 202,383,360;
    32 layers + final norm 4096 + untied head 131,072,000 → 6,738,415,616.
    Llama-3-8B: embedding 128256·4096 = 525,336,576; a layer 2·4096² + 2·4096·1024 (8 kv heads of 128)
    + 3·4096·14336 + 2·4096 = 218,112,000; 32 layers + 4096 + head 525,336,576 → 8,030,261,248."""
    assert llama2.parameters == 6_738_415_616
    assert llama2.largest_layer == 202_383_360 and llama2.embedding_parameters == 131_072_000
    assert llama3.parameters == 8_030_261_248
    assert llama3.largest_layer == 218_112_000 and llama3.head_trainable == 525_336_576
    # Linear layers: all but the embedding and the norms (2 per layer + 1).
    assert llama2.linear_parameters == 6_738_415_616 - 131_072_000 - 65 * 4096


def test_lora_parameter_count(llama2):
    """r = 8 on every linear layer of Llama-2-7B: q, k, v, o each 8·(4096 + 4096) = 65,536; gate and up
    8·(4096 + 11008) = 120,832, down the same; 624,640 a layer × 32 = 19,988,480 (the figure PEFT prints)."""
    assert llama2.lora_parameters(8) == 19_988_480
    assert llama2.lora_parameters(8, ["q_proj", "v_proj"]) == 32 * 2 * 65_536


def test_full_finetuning_one_device_by_hand(llama2):
    """Llama-2-7B, bf16 weights, AdamW (PyTorch, foreach), 1 sequence × 2 parts × 512 tokens, no reference.

    weights Ψ·2 = 13,476,831,232; AdamW moments Ψ·2·2 = 26,953,662,464; gradients Ψ·2 = 13,476,831,232;
    foreach scratch = one gradient-sized temporary = 13,476,831,232.
    activations: a layer 2·(4·4096 + 4·4096 + 2·11008) + 4·(2 + 32) = 109,704 B per token (lean SwiGLU blocks
    keep gate and up only, lean RMSNorms their bf16 input); × 32 layers + final norm 2·2·4096 → 3,526,912 B per
    token × 1024 tokens = 3,611,557,888.
    loss buffers: bf16 logits + their float32 copy 1024·32000·6 = 196,608,000, labelled rows and their
    gradient 1024·32000·8 = 262,144,000, gradient of the logits 1024·32000·4 = 131,072,000 → 589,824,000.
    forward/backward: weights + moments + activations + loss + the head's gradient 131,072,000·2
    = 44,894,019,584; optimizer step: weights + moments + gradients + scratch = 67,384,156,160 (the peak)."""
    est = estimate_memory(llama2, TrainingSetup(batch_size=1, seq_len=512, parts=2, weight_dtype="bfloat16"))
    assert est.get("weights") == 13_476_831_232
    assert est.get("optimizer states") == 26_953_662_464
    assert est.get("gradients") == 13_476_831_232
    assert est.get("optimizer scratch") == 13_476_831_232
    assert est.activations_full == 3_611_557_888 == est.activations
    assert est.get("loss buffers") == 589_824_000
    assert est.forward_backward == 44_894_019_584
    assert est.optimizer_step == 67_384_156_160 == est.peak


def test_zero3_eight_devices_by_hand(llama2):
    """ZeRO-3 over 8 devices, float32 weights with bf16 autocast: 2 + 2 + 12 bytes per parameter sharded 8
    ways (ZeRO paper) = 2Ψ = 13,476,831,232 in all; gathered layers 2 × 202,383,360 × 2 B = 809,533,440.
    Gradient checkpointing: each layer's float32 input, 4·4096 B per token per layer."""
    s = TrainingSetup(batch_size=4, seq_len=512, parts=2, weight_dtype="float32", mixed_precision="bf16",
                      devices=8, zero=3, gradient_checkpointing=True, gradient_accumulation_steps=4)
    est = estimate_memory(llama2, s)
    psi = 6_738_415_616
    assert est.get("weights") == psi * 2 // 8
    assert est.get("gradients") == psi * 2 // 8
    assert est.get("optimizer states") == psi * 12 // 8
    assert est.get("ZeRO-3 gathered layers") == 809_533_440
    tokens = 4 * 2 * 512
    per_layer = layer_activation_bytes(llama2, s)
    assert per_layer == 26 * 4096 + 8 * 4096 + 8 * 11008 + 4 * 34
    assert est.activations_checkpointed == tokens * (32 * 4096 * 4 + per_layer + 10 * 4096)
    assert est.activations == est.activations_checkpointed < est.activations_full


def test_sharding_and_lora_shrink_the_estimate(llama3):
    base = TrainingSetup(batch_size=4, seq_len=512, parts=2, weight_dtype="bfloat16", gradient_checkpointing=True)
    one = estimate_memory(llama3, base).peak
    z2 = estimate_memory(llama3, TrainingSetup(**{**base.__dict__, "devices": 8, "zero": 2})).peak
    z3 = estimate_memory(llama3, TrainingSetup(**{**base.__dict__, "devices": 8, "zero": 3})).peak
    lora = estimate_memory(llama3, TrainingSetup(**{**base.__dict__, "lora_rank": 8})).peak
    assert z3 < z2 < one and lora < one
    # LoRA r=8 on Llama-3-8B: the frozen bf16 base (16.06 GB) dominates; a KL reference costs nothing extra.
    kl = estimate_memory(llama3, TrainingSetup(**{**base.__dict__, "lora_rank": 8, "reference": "adapters"}))
    assert kl.get("reference model") == 0


def _saved_bytes_per_layer(model, ids, attention_mask, autocast=None) -> list[int]:
    """Bytes of the tensors each decoder layer saves for backward, per token, with the SwiGLU blocks and RMSNorms
    switched as the trainer's step switches them (obliviate.lean). Parameters, their views and their autocast copies
    (weight-shaped; counted by the estimate once per model, not per token) are excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape)[::-1] for p in model.parameters()}
    seen: dict[int, tuple[int, int]] = {}
    where = [-1]

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen and where[0] >= 0 and tuple(t.shape) not in weight_shapes:
            seen[ptr] = (t.untyped_storage().nbytes(), where[0])
        return t

    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: where.__setitem__(0, i))
        layer.register_forward_hook(lambda m, a, o: where.__setitem__(0, -1))
    ctx = torch.autocast("cpu", dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx, lean_swiglu(model), lean_rmsnorm(model):
        model(input_ids=ids, attention_mask=attention_mask)
    per = [0] * len(model.model.layers)
    for nbytes, layer in seen.values():
        per[layer] += nbytes
    return per


@pytest.mark.parametrize("dtype,autocast,lora", [
    (torch.float32, None, False), (torch.bfloat16, None, False), (torch.float32, torch.bfloat16, False),
    (torch.bfloat16, torch.bfloat16, False), (torch.float32, None, True), (torch.bfloat16, None, True),
    (torch.float32, torch.bfloat16, True), (torch.bfloat16, torch.bfloat16, True), (torch.float32, None, "attn"),
    (torch.bfloat16, None, "attn")],
    ids=["fp32", "bf16", "fp32-autocast", "bf16-autocast", "fp32-lora", "bf16-lora", "fp32-autocast-lora",
         "bf16-autocast-lora", "fp32-lora-attention", "bf16-lora-attention"])
def test_layer_activations_match_what_autograd_saves(dtype, autocast, lora):
    """Per token and layer, the formula is within 3 % of the bytes autograd keeps (the rest: the attention
    mask, B·T·T values per layer, which the estimate leaves out). With LoRA the first layer keeps less: its
    input comes from the frozen embedding and needs no gradient; the estimate counts it like the others."""
    from transformers import LlamaConfig, LlamaForCausalLM

    raw = dict(vocab_size=500, hidden_size=256, intermediate_size=688, num_hidden_layers=3,
               num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**raw, attn_implementation="sdpa")).to(dtype)
    if lora:
        from obliviate.models import LoraSettings, apply_lora
        targets = ["q_proj", "v_proj"] if lora == "attn" else "all-linear"    # "attn": the SwiGLU blocks stay lean
        model = apply_lora(model, LoraSettings(r=4, target_modules=targets)).base_model.model
    shape = shape_from_config({"model_type": "llama", **raw})
    setup = TrainingSetup(weight_dtype={torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype],
                          mixed_precision="bf16" if autocast else None, lora_rank=4 if lora else None,
                          lora_targets=("q_proj", "v_proj") if lora == "attn" else "all-linear")
    B, T = 2, 64
    ids = torch.randint(0, 500, (B, T), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 50:] = 0
    measured = _saved_bytes_per_layer(model, ids, mask, autocast)
    expected = layer_activation_bytes(shape, setup) * B * T
    for m in measured[1:] if lora else measured:
        assert abs(m - expected) / m < 0.03, (measured, expected)
    assert measured[0] <= expected * 1.03


# -- the dry run ---------------------------------------------------------------------------------------------
def test_dry_run_prints_the_estimate_for_a_local_model(tiny_model_dir, capsys):
    from obliviate.cli import main
    from obliviate.config import load_config
    from obliviate.memory import format_estimate, read_model_config, setup_from_config

    args = ["unlearn", "data.forget=f.json", f"model.name={tiny_model_dir}", "method.name=NPO+KL"]
    assert main([*args, "--dry-run", "--devices", "2", "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    config, source = read_model_config(str(tiny_model_dir))
    shape = shape_from_config(config, name=str(tiny_model_dir), source=source)
    setup = setup_from_config(load_config("unlearn", None, args[1:]), devices=2, seq_len=64)
    assert setup.kl_parts == 1 and setup.reference == "copy" and setup.parts == 2
    assert format_estimate(estimate_memory(shape, setup), shape, setup) in out
    for line in ("weights", "optimizer states", "gradients", "DDP gradient buckets", "reference model",
                 "activations", "loss buffers", "total"):
        assert f"  {line}" in out


def test_dry_run_for_an_unreachable_hub_model_says_what_to_do(capsys, monkeypatch, tmp_path):
    from obliviate.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    assert main(["unlearn", "data.forget=f.json", "model.name=someone/unknown-model", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "config is valid" in captured.out
    assert "someone/unknown-model" in captured.err and "--model-config" in captured.err
    assert "Traceback" not in captured.err
    # The shipped paper configs name hub models whose shapes are known: they estimate offline.
    assert main(["unlearn", "data.forget=f.json", "model.name=meta-llama/Meta-Llama-3-8B-Instruct", "--dry-run",
                 "--lora"]) == 0
    out = capsys.readouterr().out
    assert "8.03B parameters" in out and "LoRA r=8" in out

    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,'
                      ' "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}')
    assert main(["unlearn", "data.forget=f.json", "model.name=someone/unknown-model", "--dry-run",
                 "--model-config", str(config)]) == 0
    assert "someone/unknown-model (llama" in capsys.readouterr().out
    config.write_text("{not json")
    assert main(["unlearn", "data.forget=f.json", "--dry-run", "--model-config", str(config)]) == 0
    assert "cannot read it as JSON" in capsys.readouterr().err


def test_chunked_loss_buffers_by_hand(llama3):
    """Llama-3-8B, bf16 weights, 4 × 2 parts × 512 tokens (4096, half of them labelled), chunk 512, no KL:
    labelled hidden states and their gradient 2 · 2048 · 4096 · 2 B = 33,554,432; the final norm's output
    gradient 4096 · 4096 · 2 = 33,554,432; two float32 chunks 2 · 512 · 128,256 · 4 = 525,336,576 → 592,445,440,
    against 4096 · 128,256 · (2 + 4) + 2048 · 128,256 · 8 + 4096 · 128,256 · 4 = 7,354,712,064 materialised."""
    base = dict(batch_size=4, seq_len=512, parts=2, labelled_fraction=0.5, weight_dtype="bfloat16")
    chunked = estimate_memory(llama3, TrainingSetup(**base, loss_chunk=512))
    full = estimate_memory(llama3, TrainingSetup(**base))
    assert chunked.get("loss buffers") == 592_445_440
    assert full.get("loss buffers") == 7_354_712_064


def test_chunked_output_layer_gradient_accumulator_by_hand(llama3):
    """The chunked loss sums the output layer's gradient over chunks in a float32 V × H accumulator:
    V · H = 128,256 · 4096 = 525,336,576. bf16 weights: 4 B + its 2 B cast back + the per-block 16-bit product and
    its float32 copy 6 · 512 · 128,256 = 394,002,432 → 3,546,021,888. float32 weights, one part or two: 0 (the
    reductions share one float32 buffer, which becomes the gradient); under bf16 autocast: the weight's 16-bit copy
    2 B + the per-block products → 1,444,675,584. LoRA (frozen output layer) and materialised logits: no
    accumulator."""
    base = dict(batch_size=4, seq_len=512, parts=2, labelled_fraction=0.5, loss_chunk=512)
    bf16 = estimate_memory(llama3, TrainingSetup(**base, weight_dtype="bfloat16"))
    assert bf16.get("output-layer gradient accumulator") == 3_546_021_888
    fp32 = estimate_memory(llama3, TrainingSetup(**base, weight_dtype="float32"))
    single = estimate_memory(llama3, TrainingSetup(**{**base, "parts": 1}, weight_dtype="float32"))
    assert fp32.get("output-layer gradient accumulator") == 0 == single.get("output-layer gradient accumulator")
    autocast = estimate_memory(llama3, TrainingSetup(**base, weight_dtype="float32", mixed_precision="bf16"))
    assert autocast.get("output-layer gradient accumulator") == 1_444_675_584
    lora = estimate_memory(llama3, TrainingSetup(**base, weight_dtype="bfloat16", lora_rank=8))
    materialised = estimate_memory(llama3, TrainingSetup(**{**base, "loss_chunk": 0}, weight_dtype="bfloat16"))
    assert lora.get("output-layer gradient accumulator") == 0 == materialised.get("output-layer gradient accumulator")
    # It is held in the forward/backward phase, with the loss buffers.
    assert bf16.forward_backward - materialised.forward_backward == \
        3_546_021_888 + bf16.get("loss buffers") - materialised.get("loss buffers")


def test_lean_layers_only_where_the_trainer_runs_them(llama2):
    """Lean SwiGLU blocks and RMSNorms (obliviate.lean) run without autocast outside ZeRO-3 and FSDP (any sharding:
    FSDP's wrapped modules run as written), and the estimate counts them the same way."""
    assert llama2.swiglu_blocks and llama2.rmsnorms
    H, q, I = llama2.hidden_size, llama2.num_heads * llama2.head_dim, llama2.intermediate_size
    small = 4 * (2 + llama2.num_heads)
    lean, plain = 4 * (4 * H + 4 * q + 2 * I) + small, 4 * (6 * H + 4 * q + 4 * I) + small
    f32 = {"weight_dtype": "float32"}
    assert layer_activation_bytes(llama2, TrainingSetup(**f32)) == lean
    assert layer_activation_bytes(llama2, TrainingSetup(zero=2, devices=2, **f32)) == lean      # DeepSpeed ZeRO-2
    assert layer_activation_bytes(llama2, TrainingSetup(zero=2, devices=2, fsdp=True, **f32)) == plain
    assert layer_activation_bytes(llama2, TrainingSetup(zero=3, devices=2, **f32)) == plain
    assert layer_activation_bytes(llama2, TrainingSetup(mixed_precision="bf16", **f32)) == 26 * H + 8 * q + 8 * I + small


def test_an_fsdp_config_is_counted_as_fsdp():
    from obliviate.config import config_from_dict
    from obliviate.memory import setup_from_config

    cfg = config_from_dict("unlearn", {"data": {"forget": "x"}, "train": {"fsdp": "shard_grad_op auto_wrap"}})
    setup = setup_from_config(cfg, devices=2)
    assert setup.fsdp and setup.zero == 2
    assert not setup_from_config(config_from_dict("unlearn", {"data": {"forget": "x"}}), devices=2).fsdp
