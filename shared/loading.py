"""Loading models: the one loader every app, `train.evaluate` and the log-prob lens use.

- `load_base` returns (model, tokenizer) for a Hub id, a local folder (never on a public Space) or the
  embedded base, optionally with adapters attached under given names. Loaded models are kept in one
  cache, keyed by a canonical id (so two spellings of one model never load twice) and bounded by bytes.
- `load_model` / `load_pair` give the comparer its `ServedModel`s: when the Hub cannot serve an id,
  the embedded Gemma 3 270M base serves instead and the page says why.

Every load and device move runs through `shared.compute.model_thread_call` (the thread rule).
A chat template that came with a model is untrusted: it is rendered only in the sandboxed child.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from shared.adapters import PROJECT_ADAPTERS, adapter_fits, attach_adapters, project_adapter_paths
from shared.compute import contiguous_head_input, default_device, default_dtype, model_thread_call
from shared.embedded import EMBEDDED_ID, EMBEDDED_NAME, ProgressFn, embedded_checkpoint_dir, is_embedded
from shared.hub import HUB_PROBE_TTL_S, hub_or_cache, shown
from shared.presets import ON_SPACES, ModelPair

logger = logging.getLogger(__name__)

# Loaded weights kept at once (bytes of parameters and buffers). The default pair and the project's
# adapters stay; other models are dropped least-recently-used first. fp32 270M ≈ 1.1 GB, bf16 1B ≈ 2 GB.
MODEL_CACHE_BYTES = int(float(os.environ.get("PTS_MODEL_CACHE_GB", "8")) * 1e9)


# --------------------------------------------------------------------------------------------
# Model ids: what a visitor may ask for, and one key per model
# --------------------------------------------------------------------------------------------


def canonical_model_id(model_id: str, *, allow_local: bool | None = None) -> str:
    """The one key of a model id: the embedded id, a Hub repo id, or (locally only) a resolved folder.

    On a public Space (`allow_local` defaults to "not on Spaces") only Hub repo ids pass: a server
    path is never read. Raises ValueError with one sentence.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(model_id, str) or not model_id.strip():
        raise ValueError("Type a model id such as google/gemma-3-1b-it, or pick a preset.")
    model_id = model_id.strip()
    if is_embedded(model_id):
        return EMBEDDED_ID
    allow_local = (not ON_SPACES) if allow_local is None else allow_local
    if allow_local and (model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").replace("/", "", 1)):
        folder = Path(model_id).expanduser()
        if folder.is_dir():
            return str(folder.resolve())
        raise ValueError(f"No model folder at `{shown(model_id)}`.")
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise ValueError(
            f"`{shown(model_id)}` is not a Hub model id: use the form org/name, e.g. google/gemma-3-1b-it."
        ) from None
    if allow_local and Path(model_id).is_dir():  # a relative folder such as "my-model/checkpoint"
        return str(Path(model_id).resolve())
    # Hub ids resolve case-insensitively; one key for every spelling.
    return model_id


def _cache_key(canonical: str) -> str:
    return canonical if canonical.startswith("/") or canonical == EMBEDDED_ID else canonical.lower()


# --------------------------------------------------------------------------------------------
# The cache of loaded models, bounded by bytes
# --------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    model: object
    tokenizer: object
    n_bytes: int
    pinned: bool = False


def _model_bytes(model) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    seen, total = set(), 0
    for t in tensors:  # tied weights (embedding = head) count once
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


class _ModelCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: tuple) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: _Entry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            for old in list(self._entries):
                if self.total_bytes() <= self.max_bytes:
                    break
                if old != key and not self._entries[old].pinned:
                    logger.info("Dropping a loaded model to stay under the cache limit: %s", shown(str(old[0])))
                    del self._entries[old]

    def pin(self, key: tuple) -> None:
        with self._lock:
            if key in self._entries:
                self._entries[key].pinned = True

    def holds(self, model) -> bool:
        with self._lock:
            return any(entry.model is model for entry in self._entries.values())

    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.n_bytes for e in self._entries.values())

    def keys(self) -> list[tuple]:
        with self._lock:
            return list(self._entries)


_MODELS = _ModelCache(MODEL_CACHE_BYTES)
# One load at a time: two visitors asking for the same new model must not download it twice.
_load_lock = threading.Lock()


_model_locks_guard = threading.Lock()
# Held beside the model, not on it: a lock attribute would stop the model from being copied or pickled.
_model_locks: "weakref.WeakKeyDictionary[object, threading.Lock]" = weakref.WeakKeyDictionary()


def model_lock(model) -> threading.Lock:
    """The lock every forward pass or `generate` on `model` holds: peft's `adapter_names` routing is set
    on the shared layers for the length of a call, so two overlapping calls on one model (the comparer
    and the log-prob lens share the embedded base where both use one dtype) would route each other's rows."""
    with _model_locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.Lock()
        return lock


def loaded_models() -> list[tuple]:
    """Keys of the models in memory now (canonical id, device, dtype, adapters): for tests and logs."""
    return _MODELS.keys()


def _load_now(source: str, device: str, dtype, local_only: bool, adapters: tuple[tuple[str, str], ...]):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # No token argument: huggingface_hub then uses HF_TOKEN or the saved `hf auth login` token itself,
    # so gated models work without the token ever passing through (or being logged by) our code.
    kwargs = dict(trust_remote_code=False, local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    if adapters:
        model = attach_adapters(model, dict(adapters))
    model.to(device).eval()
    contiguous_head_input(model)
    torch.set_grad_enabled(True)  # grad mode is thread-local; leave the loading thread as found
    # Batched generation pads on the left so every row's next token sits at the same position.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_base(
    model_id: str = EMBEDDED_ID,
    *,
    device: str | None = None,
    dtype=None,
    adapters: dict[str, str] | None = None,
    progress: ProgressFn | None = None,
    pin: bool = False,
):
    """(model, tokenizer) of `model_id`, loaded once and shared; ValueError with one sentence on failure.

    `adapters` ({name: folder}) are attached under their names (a peft model) only when asked for.
    """
    canonical = canonical_model_id(model_id)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    adapter_items = tuple(sorted((adapters or {}).items()))
    key = (_cache_key(canonical), device, str(dtype), adapter_items)
    entry = _MODELS.get(key)
    if entry is None:
        with _load_lock:
            entry = _MODELS.get(key)
            if entry is None:
                if progress:
                    progress(0.0, f"Loading {shown(canonical) if canonical != EMBEDDED_ID else EMBEDDED_NAME}")
                if canonical == EMBEDDED_ID:
                    source = str(embedded_checkpoint_dir(progress))
                    model, tokenizer = model_thread_call(_load_now, source, device, dtype, True, adapter_items)
                elif canonical.startswith("/"):
                    model, tokenizer = model_thread_call(_load_now, canonical, device, dtype, True, adapter_items)
                else:
                    model, tokenizer = hub_or_cache(
                        canonical,
                        lambda local_only: model_thread_call(
                            _load_now, canonical, device, dtype, local_only, adapter_items
                        ),
                    )
                entry = _Entry(model, tokenizer, _model_bytes(model))
                _MODELS.put(key, entry)
    if pin:
        _MODELS.pin(key)
    return entry.model, entry.tokenizer


# --------------------------------------------------------------------------------------------
# What the comparer serves: models with their chat templates, and an honest fallback
# --------------------------------------------------------------------------------------------


@dataclass
class ServedModel:
    """A model that is actually running, and the story of how it came to be the one running."""

    requested_id: str
    served_id: str
    model: object
    tokenizer: object
    chat_template: str | None
    template_source: str | None  # "tokenizer" (came with the model: untrusted) or "trl:<family>"
    end_of_turn: str | None  # the token an assistant turn ends with, e.g. "<end_of_turn>"
    fallback_reason: str | None = None
    adapter: str | None = None  # a peft adapter on `model` (None = the base weights), see shared.adapters
    _renders: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_fallback(self) -> bool:
        return self.fallback_reason is not None

    @property
    def display_name(self) -> str:
        return EMBEDDED_NAME if self.served_id == EMBEDDED_ID else self.served_id

    def describe(self) -> str:
        """One line for the UI: which model serves, and why when it is not the one asked for."""
        line = f"Serving **{shown(self.display_name)}**"
        if self.fallback_reason:
            line += f" instead of `{shown(self.requested_id)}`: {self.fallback_reason}"
        return line + "."

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat template's text for `messages`, as `apply_chat_template(tokenize=False)` gives it.

        A template shipped with the project (TRL's official ones) renders here. One that came with the
        model is rendered in the sandboxed child (bounded in time, memory and output), once per
        conversation shape: a placeholder stands in for each message's text, and later conversations of
        the same shape are the cached text with their own messages put back in its place.
        """
        if self.chat_template is None:
            raise ValueError(f"{shown(self.served_id)} has no chat template, so it cannot be chat-formatted.")
        from shared.chat_templates import is_shipped_template

        if is_shipped_template(self.chat_template):
            return self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return _render_untrusted_chat(self, messages, add_generation_prompt)


def _sandbox_render(served: ServedModel, messages: list[dict], add_generation_prompt: bool) -> str:
    from shared.chat_templates import tokenizer_variables
    from shared.template_sandbox import render_untrusted

    job = {"messages": messages, "add_generation_prompt": add_generation_prompt}
    try:
        (result,) = render_untrusted(served.chat_template, [job], tokenizer_variables(served.tokenizer))
    except ValueError as exc:  # TemplateError is a ValueError with a one-line message
        raise ValueError(f"The chat template of {shown(served.served_id)} failed: {exc}") from None
    if "error" in result:
        raise ValueError(f"The chat template of {shown(served.served_id)} refused this conversation: {result['error']}")
    return result["text"]


def _render_untrusted_chat(served: ServedModel, messages: list[dict], add_generation_prompt: bool) -> str:
    shape = (tuple(m["role"] for m in messages), add_generation_prompt)
    cached = served._renders.get(shape)
    if cached is None:
        # A placeholder no real text contains, different per message so each lands in its own place.
        salt = hashlib.sha256(served.chat_template.encode()).hexdigest()[:12]
        marks = [f"\x00PTS{salt}-{i}\x00" for i in range(len(messages))]
        text = _sandbox_render(
            served, [{**m, "content": mark} for m, mark in zip(messages, marks)], add_generation_prompt
        )
        pieces, rest = [], text
        for mark in marks:
            if rest.count(mark) != 1:
                pieces = None  # the template rewrites or repeats the content: render each conversation
                break
            before, rest = rest.split(mark)
            pieces.append(before)
        cached = (pieces + [rest]) if pieces is not None else False
        served._renders[shape] = cached
    if cached is False:
        return _sandbox_render(served, messages, add_generation_prompt)
    return "".join(piece + m["content"] for piece, m in zip(cached, messages)) + cached[-1]


def _served(requested_id, served_id, model, tokenizer, reason, template=None, source=None, adapter=None):
    from shared.chat_templates import end_of_turn_token, family_for_model_type, official_template

    if template is None:
        if tokenizer.chat_template:
            template, source = tokenizer.chat_template, "tokenizer"
        elif (family := family_for_model_type(getattr(model.config, "model_type", ""))) is not None:
            template, source = official_template(family), f"trl:{family}"
    served = ServedModel(requested_id, served_id, model, tokenizer, template, source, None, reason, adapter)
    if template is not None:
        try:
            served.end_of_turn = end_of_turn_token(tokenizer, template)
        except ValueError as exc:  # a broken template: the column says why when it is used
            logger.warning("No end-of-turn token for %s: %s", shown(served_id), exc)
    return served


def _project_adapters_fit(canonical: str) -> bool:
    """Whether the project's adapters (LoRA on Gemma 3 270M) fit a model, read off its config on the
    meta device: nothing is downloaded but config.json and nothing is allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    paths = project_adapter_paths()
    if len(paths) != len(PROJECT_ADAPTERS):
        return False
    if canonical == EMBEDDED_ID:
        return True
    source = canonical
    config = hub_or_cache(
        canonical,
        lambda local_only: AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=local_only),
    )
    if getattr(config, "model_type", "") not in ("gemma3", "gemma3_text"):
        return False
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return all(adapter_fits(skeleton, p) for p in paths.values())


def load_model(
    model_id: str,
    *,
    device: str | None = None,
    aligned: bool = False,
    project_adapters: bool = False,
    progress: ProgressFn | None = None,
    pin: bool = False,
) -> ServedModel:
    """Load `model_id` (Hub, its cache, the embedded id, or locally a folder); fall back to the embedded
    base and say why when the Hub cannot serve it. An id that is not a model id at all is a ValueError.

    `aligned=True` marks the model that answers chat-formatted prompts: when it falls back, the embedded
    base gets the official Gemma 3 chat template, which it was never trained on. `project_adapters=True`
    attaches the project's SFT and SFT+DPO adapters when they fit (see `adapter_views`).
    """
    canonical = canonical_model_id(model_id)
    device = device or default_device()
    key = (_cache_key(canonical), aligned, project_adapters, device)
    with _resolved_lock:
        resolved_at, served = _resolved.get(key, (0.0, None))
    # A served model is reused while its weights stay loaded: its template renders and end-of-turn token are
    # worked out once, not per request. A fallback is re-tried after the Hub probe's TTL, so a Hub that comes
    # back is noticed.
    if served is not None and _MODELS.holds(served.model):
        if not served.is_fallback or time.monotonic() - resolved_at < HUB_PROBE_TTL_S:
            return served
    served = _resolve(canonical, device, aligned, project_adapters, progress, pin)
    with _resolved_lock:
        _resolved[key] = (time.monotonic(), served)
        while len(_resolved) > _MAX_REMEMBERED:
            del _resolved[next(iter(_resolved))]
    return served


# (model id, aligned, project adapters, device) -> (when, ServedModel). Remembered so a request neither
# rebuilds the served view (a sandboxed render for a model's own template) nor, after a fallback, retries
# the Hub and logs the same warning again. The weights themselves live in the model cache.
_resolved: dict[tuple, tuple[float, ServedModel]] = {}
_resolved_lock = threading.Lock()
_MAX_REMEMBERED = 64


def _resolve(canonical: str, device: str, aligned: bool, project_adapters: bool, progress, pin: bool) -> ServedModel:
    from shared.chat_templates import official_template

    reason = None
    # The embedded base always serves with the project's adapters (one copy for every column on it:
    # the base and aligned views use no adapter, the SFT and SFT+DPO views theirs, all in one batch).
    embedded_adapters = project_adapter_paths() if _project_adapters_fit(EMBEDDED_ID) else None
    try:
        if canonical == EMBEDDED_ID:
            adapters = embedded_adapters
        else:
            adapters = project_adapter_paths() if project_adapters and _project_adapters_fit(canonical) else None
        model, tokenizer = load_base(canonical, device=device, adapters=adapters, progress=progress, pin=pin)
        served_id = canonical
    except ValueError as exc:  # any failure to load becomes a fallback with a reason, never a crash
        reason = str(exc)
        logger.warning("Falling back to the embedded model: %s", reason)
        model, tokenizer = load_base(EMBEDDED_ID, device=device, adapters=embedded_adapters, progress=progress, pin=pin)
        served_id = EMBEDDED_ID
    if served_id == EMBEDDED_ID and aligned:
        # The embedded base has no template of its own; the aligned column gives it Gemma 3's official one.
        return _served(canonical, served_id, model, tokenizer, reason, official_template("gemma3"), "trl:gemma3")
    # A base model answers raw text (no template), exactly as it saw web text in pretraining.
    return _served(canonical, served_id, model, tokenizer, reason)


def load_pair(pair: ModelPair, *, device: str | None = None, progress: ProgressFn | None = None, pin: bool = False):
    """(base, aligned) served models for a preset or a custom pair; the base carries the project's
    adapters when they fit it, so `adapter_views(base)` can add the SFT and SFT+DPO columns."""
    base = load_model(pair.base_id, device=device, project_adapters=True, progress=progress, pin=pin)
    aligned = load_model(pair.aligned_id, device=device, aligned=True, progress=progress, pin=pin)
    return base, aligned


def adapter_views(base: ServedModel) -> list[ServedModel]:
    """Served views of the project's adapters on `base`'s weights (empty when they are not attached)."""
    from shared.chat_templates import official_template

    model = base.model
    if not hasattr(model, "peft_config"):
        return []
    template = official_template("gemma3")
    views = []
    for key, adapter in PROJECT_ADAPTERS.items():
        if key not in model.peft_config:
            continue
        name = EMBEDDED_NAME if base.served_id == EMBEDDED_ID else base.served_id
        views.append(
            _served(
                f"train/adapters/{adapter.folder}",
                f"{name} + {key.upper().replace('+', ' + ')}",
                model,
                base.tokenizer,
                None,
                template,
                "trl:gemma3",
                adapter=key,
            )
        )
    return views
