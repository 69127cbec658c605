"""Prompt formatting: turn a (question, answer) pair into token ids and labels.

Training, likelihood evaluation and generation all format prompts through :class:`PromptFormatter`, so the
prompt a model is evaluated with is exactly the prompt it was trained with.

Templates:

``chat``
    The tokenizer's own chat template (a user turn, then the assistant turn). The default.
``llama2``
    ``[INST] question [/INST] answer</s>`` — the Llama-2-chat format used by TOFU and the paper.
``llama3``
    Llama-3 header tags: ``<|start_header_id|>user<|end_header_id|>\\n\\n…<|eot_id|>…``.
``plain``
    ``Question: …\\nAnswer: …`` for base models without a chat format.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.errors import ConfigError

IGNORE_INDEX = -100
TEMPLATES = ("chat", "llama2", "llama3", "plain")


@dataclass(frozen=True)
class EncodedExample:
    """One formatted, tokenised example.

    ``labels`` equal ``input_ids`` on answer tokens and ``IGNORE_INDEX`` on prompt tokens; ``full_labels`` equal
    ``input_ids`` everywhere (question and answer), used by forget terms run with ``mask=false``.
    """

    input_ids: list[int]
    labels: list[int]
    full_labels: list[int]
    prompt_length: int


class PromptFormatter:
    """Formats questions (and answers) for one tokenizer and one template."""

    def __init__(self, tokenizer, template: str = "chat", *, system_prompt: str | None = None,
                 max_length: int = 512):
        if template not in TEMPLATES:
            raise ConfigError([f"template: unknown template '{template}'; valid: {', '.join(TEMPLATES)}"])
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError([
                "template: 'chat' needs a tokenizer with a chat template, and this tokenizer has none; "
                "use template=plain for a base model (or llama2 / llama3)"
            ])
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.max_length = max_length

    # -- text -------------------------------------------------------------------------------------------
    def _messages(self, question: str) -> list[dict[str, str]]:
        messages = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": question})
        return messages

    def prompt_text(self, question: str) -> str:
        """The text a model sees before it answers: what generation starts from."""
        if self.template == "chat":
            return self.tokenizer.apply_chat_template(
                self._messages(question), tokenize=False, add_generation_prompt=True)
        system = self.system_prompt
        if self.template == "llama2":
            if system:
                return f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]"
            return f"[INST] {question} [/INST]"
        if self.template == "llama3":
            head = ""
            if system:
                head = f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
            return (f"{head}<|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
        prefix = f"{system}\n\n" if system else ""
        return f"{prefix}Question: {question}\nAnswer:"

    def answer_text(self, question: str, answer: str) -> str:
        """The text that follows :meth:`prompt_text` when the model gives ``answer`` (end-of-turn included)."""
        if self.template == "chat":
            prompt = self.prompt_text(question)
            full = self.tokenizer.apply_chat_template(
                self._messages(question) + [{"role": "assistant", "content": answer}], tokenize=False)
            if not full.startswith(prompt):
                raise ConfigError([
                    "template: the tokenizer's chat template does not render the answer after the generation "
                    "prompt; choose an explicit template (llama2, llama3, plain)"
                ])
            # Trailing newlines after the end-of-turn token carry no content; dropping them keeps the last
            # labelled token the end-of-turn marker, which is what generation stops on.
            return full[len(prompt):].rstrip("\n")
        if self.template == "llama3":
            return f"{answer}<|eot_id|>"
        # llama2 / plain: a space separates the answer from the prompt; EOS is appended as a token id.
        return f" {answer}"

    # -- tokens -----------------------------------------------------------------------------------------
    def _prompt_ids(self, question: str) -> list[int]:
        text = self.prompt_text(question)
        # Chat templates write their own BOS (if any) into the text; presets rely on the tokenizer's default.
        add_special = self.template != "chat"
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def encode_prompt(self, question: str) -> list[int]:
        """Token ids of the generation prompt."""
        return self._prompt_ids(question)[: self.max_length]

    def encode(self, question: str, answer: str) -> EncodedExample:
        """Token ids of prompt + answer, with the prompt masked out of ``labels``.

        Prompt and answer are tokenised separately and concatenated, so the boundary between them is exact
        whatever the tokenizer would merge across it. Sequences longer than ``max_length`` are cut on the
        right; a prompt that alone fills ``max_length`` leaves no answer token, which is an error.
        """
        prompt_ids = self._prompt_ids(question)
        answer_ids = self.tokenizer(self.answer_text(question, answer), add_special_tokens=False)["input_ids"]
        if self.template in ("llama2", "plain") and self.tokenizer.eos_token_id is not None:
            answer_ids = answer_ids + [self.tokenizer.eos_token_id]
        ids = (prompt_ids + answer_ids)[: self.max_length]
        n_prompt = min(len(prompt_ids), len(ids))
        if n_prompt >= len(ids):
            raise ConfigError([
                f"max_length: {self.max_length} tokens leave no room for the answer after a "
                f"{len(prompt_ids)}-token prompt (question starts {question[:60]!r}); raise max_length"
            ])
        labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        return EncodedExample(input_ids=ids, labels=labels, full_labels=list(ids), prompt_length=n_prompt)
