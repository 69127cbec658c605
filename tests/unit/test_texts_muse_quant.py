"""Raw-text data (loading, detection, chunking, the training set), MUSE's loader and prompts, ROUGE-L F1, and
weight quantisation, on hand-made inputs and the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from obliviate.benchmarks import muse
from obliviate.data.formatting import PromptFormatter
from obliviate.data.records import QARecord, TextRecord
from obliviate.data.texts import detect_format, encode_texts, load_texts, parse_hub_spec
from obliviate.errors import DataError, ObliviateError
from obliviate.evaluation.metrics import rouge_l_f1
from obliviate.robustness import recovery
from obliviate.training.data import UnlearningDataset

EXAMPLE = muse.EXAMPLE_DIR


# --- text data ----------------------------------------------------------------------------------------------
def test_text_files_load_in_every_accepted_shape(tmp_path):
    (tmp_path / "a.txt").write_text("One whole document.\n\nWith two paragraphs.\n")
    (tmp_path / "b.json").write_text(json.dumps(["First text.", "Second text."]))
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "Row one.", "title": "x"}) + "\n\n"
                                      + json.dumps({"text": "Row two."}) + "\n")
    assert [r.text for r in load_texts(tmp_path / "a.txt")] == ["One whole document.\n\nWith two paragraphs.\n"]
    assert [r.text for r in load_texts(tmp_path / "b.json")] == ["First text.", "Second text."]
    rows = load_texts(tmp_path / "c.jsonl")
    assert [r.text for r in rows] == ["Row one.", "Row two."]
    assert rows[1].source.endswith("c.jsonl:3")  # the physical line, blank lines counted
    assert len(load_texts(tmp_path / "b.json", limit=1)) == 1


def test_bad_text_rows_are_all_reported_by_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"body": "x"}) + "\n" + "{oops\n" + "7\n")
    with pytest.raises(DataError) as err:
        load_texts(path)
    message = str(err.value)
    assert "4 problems" in message
    for needle in ("line 1, field 'text'", "line 2, field 'text': required", "line 3: invalid JSON", "line 4"):
        assert needle in message


def test_format_detection(tmp_path):
    (tmp_path / "t.txt").write_text("text")
    (tmp_path / "s.json").write_text(json.dumps(["a", "b"]))
    (tmp_path / "o.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "q", "answer": "a", "text": "t"}) + "\n")
    assert [detect_format(tmp_path / n) for n in ("t.txt", "s.json", "o.jsonl", "qa.jsonl")] == \
        ["text", "text", "text", "qa"]
    assert detect_format("locuslab/TOFU") == "qa"
    assert parse_hub_spec("muse-bench/MUSE-News:raw:forget") == ("muse-bench/MUSE-News", "raw", "forget")
    assert parse_hub_spec("cais/wmdp-corpora:cyber-forget-corpus") == ("cais/wmdp-corpora", "cyber-forget-corpus",
                                                                       "train")


def test_chunks_cover_the_text_every_token_labelled(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "The harbour town of Velmouth opened its new tidal bridge on Tuesday after four years of work. " * 3
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = encode_texts(tok, [TextRecord(text)], max_length=16)
    assert all(len(c.input_ids) <= 16 and c.prompt_length == 0 for c in chunks)
    assert all(c.labels == c.input_ids == c.full_labels for c in chunks)
    assert [t for c in chunks for t in c.input_ids] == ids  # the tiny tokenizer adds no special token
    assert len(chunks) == -(-len(ids) // 16)


def test_chunks_start_with_the_tokenizers_own_leading_token(tiny_model_dir):
    class WithBos:  # a tokenizer that puts BOS (id 1) in front by default, as Llama's does
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, text, add_special_tokens=True, **options):  # options such as verbose, as HF's take
            ids = self.inner(text, add_special_tokens=False)["input_ids"]
            return {"input_ids": ([1] if add_special_tokens else []) + ids}

    tok = WithBos(AutoTokenizer.from_pretrained(tiny_model_dir))
    chunks = encode_texts(tok, [TextRecord("Farmers in the Durrow valley reported the largest pear harvest.")], 8)
    assert all(c.input_ids[0] == 1 and len(c.input_ids) <= 8 for c in chunks)
    body = [t for c in chunks for t in c.input_ids[1:]]
    assert body == tok("Farmers in the Durrow valley reported the largest pear harvest.", False)["input_ids"]


def test_training_set_on_text_is_one_item_per_chunk_and_refuses_question_parts(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    formatter = PromptFormatter(tok, "chat", max_length=48)
    forget = load_texts(EXAMPLE / "raw" / "forget.txt")
    retain = [QARecord("Where was Bo Lind born?", "In Marhaven.")]
    ds = UnlearningDataset(forget, retain, formatter, parts=("forget", "retain"))
    chunks = encode_texts(tok, forget, 48)
    assert len(ds) == len(chunks) > 3
    item = ds[3]
    assert item["forget"]["input_ids"] == chunks[3].input_ids == item["forget"]["labels"]
    assert item["retain"]["labels"][0] == -100  # the QA retain set keeps its prompt masked
    with pytest.raises(ObliviateError, match="raw text"):
        UnlearningDataset(forget, retain, formatter, parts=("forget_idk", "retain"), refusals=["I don't know."])
    text_retain = load_texts(EXAMPLE / "raw" / "retain1.txt")
    with pytest.raises(ObliviateError, match="retain set is raw text"):
        UnlearningDataset(forget, text_retain, formatter, parts=("forget", "retain_idk"), refusals=["No idea."])


# --- MUSE ---------------------------------------------------------------------------------------------------
def test_the_shipped_example_loads_in_the_published_layout():
    data = muse.load_muse(EXAMPLE)
    assert len(data.verbmem) == 6 and all(p and gt for p, gt in data.verbmem)
    assert {k: len(v) for k, v in data.knowmem.items()} == {"forget_qa": 7, "forget_qa_icl": 2, "retain_qa": 6,
                                                            "retain_qa_icl": 2}
    assert {k: len(v) for k, v in data.privleak.items()} == {"forget": 6, "retain": 6, "holdout": 6}
    assert data.missing == {}
    assert muse.find_muse_root(EXAMPLE / "raw" / "forget.txt") == EXAMPLE
    # The verbatim prompt is the start of a forget article and the reference its continuation.
    raw = (EXAMPLE / "raw" / "forget.txt").read_text()
    assert all((p + gt) in raw for p, gt in data.verbmem)


def test_hub_ids_load_through_datasets(monkeypatch, tmp_path):
    """The hub path, with datasets.load_dataset answering from local files (the hub is not reachable here)."""
    import datasets

    calls = []
    real_load_dataset = datasets.load_dataset

    def fake_load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        path = EXAMPLE / config / f"{split}.json"
        if not path.is_file():
            raise ValueError(f"unknown split {split}")
        rows = json.loads(path.read_text())
        rows = [{"text": r} if isinstance(r, str) else r for r in rows]
        file = tmp_path / f"{config}-{split}.jsonl"
        file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return real_load_dataset("json", data_files=str(file), split="train", cache_dir=str(tmp_path / "c"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = muse.load_muse("muse-bench/MUSE-News")
    assert ("muse-bench/MUSE-News", "verbmem", "forget") in calls
    assert ("muse-bench/MUSE-News", "knowmem", "retain_qa_icl") in calls
    local = muse.load_muse(EXAMPLE)
    assert data.verbmem == local.verbmem
    assert [r.question for r in data.knowmem["forget_qa"]] == [r.question for r in local.knowmem["forget_qa"]]
    assert [r.text for r in data.privleak["holdout"]] == [r.text for r in local.privleak["holdout"]]


def test_missing_subsets_are_recorded_with_the_reason(tmp_path):
    (tmp_path / "verbmem").mkdir()
    (tmp_path / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "The town of", "gt": " Velmouth."}]))
    data = muse.load_muse(tmp_path)
    assert data.knowmem == {} and set(data.missing) == {"knowmem_forget", "knowmem_retain"}
    assert "knowmem/forget_qa" in data.missing["knowmem_forget"]


def test_knowmem_prompt_and_answer_cut_follow_muse():
    shots = [QARecord("In which town?", "Velmouth"), QARecord("How many?", "eighty-two")]
    assert muse.knowmem_prompt("Who won?", shots) == ("Question: In which town?\nAnswer: Velmouth\n\n"
                                                      "Question: How many?\nAnswer: eighty-two\n\n"
                                                      "Question: Who won?\nAnswer: ")
    assert muse._cut_answer("Tobias Marr\n\nQuestion: next") == "Tobias Marr"
    assert muse._cut_answer("Tobias Marr\nQuestion: next") == "Tobias Marr"
    assert muse._cut_answer("Tobias Question: x") == "Tobias "


def test_rouge_l_f1_by_hand():
    # LCS of "the cat sat on the mat" / "the cat was on the mat" is 5 words of 6 and 6: F1 = 5/6.
    assert rouge_l_f1(["the cat sat on the mat"], ["the cat was on the mat"]) == [pytest.approx(5 / 6)]
    # No stemming (MUSE's scorer): "running" and "run" do not match. Precision 1/3, recall 1/1 → F1 = 0.5.
    assert rouge_l_f1(["running dogs bark", "dogs"], ["run dog", "dogs bark loudly"]) == [0.0, pytest.approx(0.5)]


# --- probes: the recovery formula ----------------------------------------------------------------------------
def test_recovery_is_the_share_of_the_gap_back_to_the_target():
    def row(label, role, value):
        return {"label": label, "role": role, "sets": {"forget": {"rouge_l": {"value": value}}}}

    rows = [row("unlearned", "unlearned", 0.2), row("probe", "probe", 0.5), row("target", "anchor", 0.8),
            row("retain", "anchor", 0.4)]
    assert recovery(rows) == {"probe": {"forget": {"rouge_l": pytest.approx(0.5)}}}
    rows[2] = row("target", "anchor", 0.2)  # no gap to recover: undefined, not a division by zero
    assert recovery(rows) == {"probe": {"forget": {"rouge_l": None}}}


# --- quantisation -------------------------------------------------------------------------------------------
pytest.importorskip("torchao")


def test_quantised_weights_lie_on_the_integer_grid(tiny_model_dir):
    from obliviate.quantization import quantize_model

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        ref = model(x).logits
    errors = {}
    for bits in (8, 4):
        q = quantize_model(model, bits, group_size=16)
        layer = q.model.model.layers[0].mlp.up_proj
        w = layer.weight.dequantize() if hasattr(layer.weight, "dequantize") else layer.weight
        original = before["model.layers.0.mlp.up_proj.weight"]
        if bits == 8:
            # One scale per output row: each row takes at most 255 values, symmetric steps of max|w| / 127.
            step = original.abs().amax(dim=1, keepdim=True) / 127.5
            assert torch.all((w - original).abs() <= step * 0.5 + 1e-6)
        else:
            groups = w.reshape(w.shape[0], -1, 16)
            assert max(len(torch.unique(g)) for g in groups.reshape(-1, 16)) <= 16
        with torch.no_grad():
            errors[bits] = (q.model(x).logits - ref).abs().max().item()
        assert q.describe()["layers"] == 2 * 7  # q, k, v, o, gate, up, down per layer; the tied head is left
    assert 0 < errors[8] < errors[4]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the original is untouched
