"""The one in-memory record type for a question–answer item, shared by every loader and benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QARecord:
    """One question with its answer and, where the data set has them, evaluation variants.

    TOFU layout: ``question``, ``answer``, optional ``paraphrased_answer``, ``perturbed_answer`` (a list,
    stored here as ``perturbed_answers``), ``paraphrased_question``, ``task_id``. The real-world layout adds
    ``name`` (the person the fact is about) and ``golden_answer`` (the short answer used for evaluation).
    ``source`` says where the row came from (``file:line`` or ``hub-id[split]:row``) for error messages.
    """

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = field(default_factory=tuple)
    paraphrased_question: str | None = None
    task_id: int | None = None
    name: str | None = None
    golden_answer: str | None = None
    source: str | None = None

    @property
    def eval_answer(self) -> str:
        """The answer evaluation compares against: ``golden_answer`` where present (real-world), else ``answer``."""
        return self.golden_answer if self.golden_answer is not None else self.answer


@dataclass(frozen=True)
class TextRecord:
    """One document of raw text (a news article, a book chapter, a corpus row): trained on as it is, every token
    labelled, with no question and no prompt template (MUSE and WMDP train on text, docs/muse_wmdp.md).

    ``source`` says where it came from (``file:line``, ``file:element N`` or ``hub-id[config/split]:row N``).
    """

    text: str
    source: str | None = None
