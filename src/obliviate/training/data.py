"""The training data set: forget items paired with retain items, as in the paper's released code.

Each example is a dict of *parts*, one per kind of sequence an objective reads (see
:class:`obliviate.objectives.UnlearningInputs`):

``forget``           forget question + forget answer
``forget_idk``       forget question + a refusal (fixed per forget item, so reference likelihoods can be cached)
``retain``           a retain question + its answer, drawn per forget item and epoch
``retain_idk``       the same retain question + a refusal (answer preservation)
``forget_mismatch``  forget question + the answer of another, randomly drawn retain item (LLMU)

Only the parts a method needs are built. Draws are seeded by (seed, epoch, item), so a run is reproducible
and a run resumed from a checkpoint sees exactly the batches an uninterrupted one would.

Either set may be raw text (:class:`~obliviate.data.records.TextRecord`, docs/muse_wmdp.md): its documents are
cut into chunks of ``max_length`` tokens with every token labelled (:func:`~obliviate.data.texts.encode_texts`),
and each chunk is one item. Parts built from questions (refusals, mismatched answers) need question–answer
pairs and refuse text.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from torch.utils.data import Dataset

from obliviate.data.collate import collate_examples
from obliviate.data.formatting import EncodedExample, PromptFormatter
from obliviate.data.records import QARecord, TextRecord
from obliviate.data.texts import encode_texts
from obliviate.errors import ObliviateError

PARTS = ("forget", "forget_idk", "retain", "retain_idk", "forget_mismatch")
FORGET_SIDE = ("forget", "forget_idk", "forget_mismatch")

def is_text(records: Sequence) -> bool:
    """True when ``records`` are raw-text documents rather than question–answer pairs."""
    return bool(records) and isinstance(records[0], TextRecord)


def _example(enc: EncodedExample, *, full: bool = False) -> dict:
    return {"input_ids": enc.input_ids, "labels": enc.full_labels if full else enc.labels}


class UnlearningDataset(Dataset):
    """Forget items (one example each), each paired with retain items and refusals as the parts require.

    With no forget set (fine-tuning), the examples are the retain items themselves, in order, as ``retain``.

    ``mask=False`` makes the forget-side parts label question tokens as well as answer tokens (docs/methods.md: the
    forget term then sees the whole sequence, padding excluded); retain-side parts always label answers only.
    """

    def __init__(self, forget: Sequence[QARecord | TextRecord], retain: Sequence[QARecord | TextRecord],
                 formatter: PromptFormatter, *, parts: Iterable[str], mask: bool = True,
                 refusals: Sequence[str] = (), seed: int = 0):
        self.parts = tuple(p for p in PARTS if p in set(parts))
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; valid: {PARTS}")
        if not self.parts:
            raise ValueError("at least one part is needed")
        needs_retain = any(p in self.parts for p in ("retain", "retain_idk", "forget_mismatch"))
        needs_forget = any(p in self.parts for p in FORGET_SIDE)
        needs_refusals = any(p.endswith("_idk") for p in self.parts)
        if needs_forget and not forget:
            raise ObliviateError("the forget set is empty")
        if needs_retain and not retain:
            raise ObliviateError("this method needs a retain set, and the retain set is empty")
        if needs_refusals and not refusals:
            raise ObliviateError("this method answers with refusals, and no refusal templates were given")
        text_sets = {"forget": is_text(forget), "retain": is_text(retain)}
        question_parts = [p for p in self.parts if p in ("forget_idk", "retain_idk", "forget_mismatch")]
        for part in question_parts:
            needs = ("forget", "retain") if part == "forget_mismatch" else (part.split("_")[0],)
            for name in needs:
                if text_sets[name]:
                    raise ObliviateError(f"the {name} set is raw text, and this method's '{part}' part is built from "
                                         f"question-answer pairs; on text use a method whose terms read the text "
                                         f"itself (GA, NPO, ME with GD or KL)")
        # Text documents become chunks of max_length tokens, each one item (module docstring).
        self._forget_chunks = encode_texts(formatter.tokenizer, forget, formatter.max_length) \
            if text_sets["forget"] else None
        retain_chunks = encode_texts(formatter.tokenizer, retain, formatter.max_length) \
            if text_sets["retain"] else None
        self.forget = list(self._forget_chunks) if self._forget_chunks is not None else list(forget)
        self.retain = list(retain_chunks) if retain_chunks is not None else list(retain)
        self.formatter = formatter
        self.mask = mask
        self.refusals = list(refusals)
        self.seed = seed
        self.epoch = 0
        self.finetune = not needs_forget
        # Summed reference log-probs per part, filled in once by the trainer (NPO, DPO).
        self.ref_logps: dict[str, list[float]] = {}
        # Forget-side encodings and refusals never change across epochs: encode once.
        if self._forget_chunks is not None:
            self._forget_enc = list(self._forget_chunks) if "forget" in self.parts else []
        else:
            self._forget_enc = [formatter.encode(r.question, r.answer) for r in self.forget] \
                if "forget" in self.parts else []
        self._forget_refusal = [self._rng("refusal", i).choice(self.refusals) for i in range(len(self.forget))] \
            if "forget_idk" in self.parts else []
        self._forget_idk_enc = [formatter.encode(r.question, idk) for r, idk in
                                zip(self.forget, self._forget_refusal)]
        self._retain_enc: dict[int, EncodedExample] = dict(enumerate(retain_chunks)) if retain_chunks else {}

    def _rng(self, what: str, index: int, epoch: int | None = None) -> random.Random:
        # String seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
        return random.Random(f"{self.seed}/{what}/{'' if epoch is None else epoch}/{index}")

    def set_epoch(self, epoch: int) -> None:
        """Select the retain pairing of ``epoch`` (called at the start of every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.retain) if self.finetune else len(self.forget)

    def _retain(self, j: int) -> EncodedExample:
        if j not in self._retain_enc:
            r = self.retain[j]
            self._retain_enc[j] = self.formatter.encode(r.question, r.answer)
        return self._retain_enc[j]

    def retain_index(self, i: int) -> int:
        """The retain item paired with forget item ``i`` in the current epoch."""
        return self._rng("retain", i, self.epoch).randrange(len(self.retain))

    def __getitem__(self, i: int) -> dict[str, dict]:
        if self.finetune:
            return {"retain": _example(self._retain(i))}
        item: dict[str, dict] = {}
        full = not self.mask
        if "forget" in self.parts:
            item["forget"] = _example(self._forget_enc[i], full=full)
        if "forget_idk" in self.parts:
            item["forget_idk"] = _example(self._forget_idk_enc[i], full=full)
        if "retain" in self.parts or "retain_idk" in self.parts:
            j = self.retain_index(i)
            if "retain" in self.parts:
                item["retain"] = _example(self._retain(j))
            if "retain_idk" in self.parts:
                idk = self._rng("retain_refusal", i, self.epoch).choice(self.refusals)
                item["retain_idk"] = _example(self.formatter.encode(self.retain[j].question, idk))
        if "forget_mismatch" in self.parts:
            k = self._rng("mismatch", i, self.epoch).randrange(len(self.retain))
            item["forget_mismatch"] = _example(
                self.formatter.encode(self.forget[i].question, self.retain[k].answer), full=full)
        for part, values in self.ref_logps.items():
            item[part]["ref_logp"] = values[i]
        return item

    def forget_side_examples(self, part: str) -> list[dict]:
        """All examples of a fixed forget-side part, in item order (for caching reference log-probs)."""
        if part == "forget":
            return [_example(e, full=not self.mask) for e in self._forget_enc]
        if part == "forget_idk":
            return [_example(e, full=not self.mask) for e in self._forget_idk_enc]
        raise ValueError(f"part '{part}' changes every epoch; its reference log-probs cannot be cached")


class PartsCollator:
    """Collates dataset items part by part, each part dynamically padded."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[dict[str, dict]]) -> dict[str, dict]:
        return {part: collate_examples([it[part] for it in items], self.pad_token_id) for part in items[0]}
