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

System prompt. With ``system_prompt=None`` (the default, for every template) the prompt has no system turn at
all, as in the paper's formatting. Some chat templates insert a default system turn when the messages have none
(SmolLM2's: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"); that turn is found once per
tokenizer (:func:`default_system_turn`) and left out of every rendering, so it is neither trained on nor
evaluated with. A ``system_prompt`` string is an explicit setting: it becomes the system turn, whatever the
template's default. :meth:`PromptFormatter.describe` is what results.json records about the prompt format.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2.exceptions import TemplateError

from obliviate.errors import ConfigError

#: Label value of positions that no loss may see (question tokens under ``mask=true``, padding).
IGNORE_INDEX = -100
TEMPLATES = ("chat", "llama2", "llama3", "plain")

# Probe texts for default_system_turn: unlike anything a template writes itself, so each is found only where
# it was put.
_PROBE_SYSTEM = "obliviate probe: system text"
_PROBE_QUESTION = "obliviate probe: user text"
EXAMPLE_QUESTION = "What is the capital of France?"
"""The question of the rendered example prompt that results.json records (:meth:`PromptFormatter.describe`)."""


@dataclass(frozen=True)
class DefaultSystemTurn:
    """A system turn that a chat template writes when the conversation has none.

    ``lead`` is the text the template writes before any turn (e.g. a BOS token; usually empty), ``turn`` the
    whole inserted turn (markers included) and ``content`` the system prompt inside it.
    """

    lead: str
    turn: str
    content: str


def default_system_turn(tokenizer) -> DefaultSystemTurn | None:
    """The system turn ``tokenizer``'s chat template inserts when the messages have none; None if it inserts none.

    Found by rendering: a user message alone (``U``), a system message alone (``S``: its turn is
    ``head + text + tail``), and both (``B``, which starts with ``S``: what follows is the user part). A
    template that inserts a default turn renders ``U`` as ``head + default + tail`` followed by the same user
    part. The text before the system turn (``lead``) is the tokenizer's BOS token when ``head`` starts with it
    and the user turn does not, else nothing. A template that cannot render a lone system message, or renders a
    system message anywhere but in front, is taken to insert none: that is what the messages then get.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    system = {"role": "system", "content": _PROBE_SYSTEM}
    user = {"role": "user", "content": _PROBE_QUESTION}

    def render(messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    try:
        alone = render([user], True)
        system_turn = render([system], False)
        both = render([system, user], True)
    except TemplateError:
        return None
    if not both.startswith(system_turn) or system_turn.count(_PROBE_SYSTEM) != 1:
        return None
    user_part = both[len(system_turn):]
    if not alone.endswith(user_part):
        return None
    inserted = alone[: len(alone) - len(user_part)]
    head, tail = system_turn.split(_PROBE_SYSTEM)
    if len(inserted) < len(head) + len(tail) or not (inserted.startswith(head) and inserted.endswith(tail)):
        return None  # nothing (or only a BOS token) before the user turn: no default system turn
    # What the template writes before the first turn: its BOS token, where the system turn starts with one that
    # does not also start the user turn (ChatML's BOS, <|im_start|>, opens every turn and so is not a lead).
    user_head = user_part[: user_part.find(_PROBE_QUESTION)]
    bos = getattr(tokenizer, "bos_token", None)
    lead = bos if isinstance(bos, str) and bos and head.startswith(bos) and not user_head.startswith(bos) else ""
    content = inserted[len(head): len(inserted) - len(tail)]
    return DefaultSystemTurn(lead=lead, turn=inserted[len(lead):], content=content)


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
        # The template's own system turn, left out of every rendering when no system prompt is set.
        self.default_system_turn = default_system_turn(tokenizer) if template == "chat" else None

    # -- text -------------------------------------------------------------------------------------------
    def _messages(self, question: str) -> list[dict[str, str]]:
        messages = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": question})
        return messages

    def _render_chat(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
        """The tokenizer's chat template applied to ``messages``, without a system turn the messages lack."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        default = self.default_system_turn
        if self.system_prompt is None and default is not None and text.startswith(default.lead + default.turn):
            text = default.lead + text[len(default.lead) + len(default.turn):]
        return text

    def prompt_text(self, question: str) -> str:
        """The text a model sees before it answers: what generation starts from."""
        if self.template == "chat":
            return self._render_chat(self._messages(question), generation_prompt=True)
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
            full = self._render_chat(self._messages(question) + [{"role": "assistant", "content": answer}],
                                     generation_prompt=False)
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

    def describe(self) -> dict:
        """The prompt format, as results.json records it so that runs can be compared.

        ``template`` and ``system_prompt`` are the settings; ``template_default_system_prompt`` is the system
        prompt the chat template would have inserted (and that was left out), or None; ``example`` is the
        prompt rendered for :data:`EXAMPLE_QUESTION`, exactly as the model sees it before answering.
        """
        default = self.default_system_turn
        return {"template": self.template, "system_prompt": self.system_prompt,
                "template_default_system_prompt": default.content if default is not None else None,
                "example": self.prompt_text(EXAMPLE_QUESTION)}

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
