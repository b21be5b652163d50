"""From messages to tokens: what a chat template writes, how it tokenizes, and what SFT trains on.

`inspect_family`, `inspect_hub_model` and `inspect_custom_template` all return an `Inspection`: the
rendered text, its tokens (ids, the message each came from, whether the assistant-only loss trains on
it), where inference starts, the token the sampler stops on, and warnings that teach.

Token ids come from the family's own tokenizer when it can be had (the local Hugging Face cache, the Hub
when reachable, or the embedded Gemma 3 tokenizer for Gemma 3). Otherwise the embedded Gemma 3 tokenizer
stands in, and the inspection says so: text is split as Gemma 3 would split it, and the family's control
tokens (`<|im_start|>`, `<|eot_id|>`…) are kept whole, without an id, because they are single tokens
in their own vocabulary that Gemma 3 does not have.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Callable

from shared.chat_templates import (
    CUSTOM_TEMPLATE_FAMILY,
    family_info,
    family_variables,
    official_family_of,
    official_template,
    render_batch,
    render_with_facts,
    training_template,
    validate_messages,
)
from shared.hub import hub_or_cache, shown
from shared.template_sandbox import MAX_GENERATION_SPANS, TemplateFacts, check_template_size

logger = logging.getLogger(__name__)

# Strings a template writes that look like control tokens: <|im_start|>, <｜Assistant｜>, <start_of_turn>,
# Gemma 4's <|turn> and <turn|>, </think>, [INST], [gMASK]. Only searched outside message contents.
CONTROL_TOKEN_RE = re.compile(
    r"<\|[^<>|\s]{1,48}\|>"
    r"|<｜[^<>｜]{1,48}｜>"
    r"|<\|?/?[A-Za-z][A-Za-z0-9_▁.\-]{0,47}\|?>"
    r"|\[/?[A-Za-z][A-Za-z_]{1,24}\]"
)
# Text the probe conversation's assistant says, so its end-of-turn token can be found after it.
_PROBE_REPLY = "Sure, here you go."
_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE_REPLY}]
# Vision templates read only content parts; the same probe in that form.
_PROBE_PARTS = [{**message, "content": [{"type": "text", "text": message["content"]}]} for message in _PROBE]
# Chips drawn at most; counts always cover every token. 3,000 chips is already a long page.
MAX_TOKENS_SHOWN = 3_000
# Different control tokens in one rendering. Templates write a few dozen at most; a tokenizer may add a
# few hundred reserved ones (Llama 3 has 256) that a message can quote. Beyond this it is an attack.
MAX_CONTROL_TOKENS = 512
# Files a tokenizer and its chat template are made of; weights are never downloaded.
TOKENIZER_FILES = [
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "additional_chat_templates/*.jinja",
    "config.json",
    "*.model",
    "vocab*",
    "merges.txt",
    "*.tiktoken",
]
# The largest real tokenizers (Gemma 3: a 33 MB tokenizer.json plus a 4.7 MB tokenizer.model) fit 3x over;
# a repository whose tokenizer files add up to more is refused before anything is downloaded.
MAX_TOKENIZER_BYTES = 120 * 1024**2
# Special-token strings longer than this are not passed to a template (real ones are under 40 characters).
_MAX_SPECIAL_TOKEN_CHARS = 200


@dataclass(frozen=True)
class Token:
    text: str  # the characters of the rendered text this token covers
    id: int | None  # None: a control token the stand-in tokenizer does not have
    start: int
    end: int
    role: str  # system/user/assistant/tool (message content), "template" (scaffolding), "prompt" (generation prompt)
    special: bool
    trained: bool | None  # assistant-only loss: True/False, None when no mask can be computed


@dataclass
class Inspection:
    label: str  # "gemma3", "Qwen/Qwen2.5-0.5B-Instruct", "custom template"
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    tokenizer_name: str = ""
    stand_in_reason: str | None = None  # why the ids are not the family's own, None when they are
    control_tokens: tuple[str, ...] = ()
    generation_prompt: str = ""  # what add_generation_prompt appends
    inference_starts_at: int | None = None  # token index the model's first sampled token follows; None: not set up
    end_of_turn: str | None = None
    end_of_turn_id: int | None = None
    mask_source: str | None = None  # which template the loss mask came from, None when none
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the template refused this conversation (its own message)

    @property
    def token_count(self) -> int:
        return len(self.tokens)

    @property
    def trained_count(self) -> int:
        return sum(1 for token in self.tokens if token.trained)

    def ids(self) -> list[int | None]:
        return [token.id for token in self.tokens]

    def mask(self) -> list[int] | None:
        if any(token.trained is None for token in self.tokens):
            return None
        return [int(token.trained) for token in self.tokens]


# --------------------------------------------------------------------------------------------
# Tokenizers: the family's own when it can be had, else the embedded Gemma 3 stand-in
# --------------------------------------------------------------------------------------------

_embedded_lock = threading.Lock()


@functools.cache
def _embedded_tokenizer():
    from shared.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


def embedded_tokenizer():
    """The embedded Gemma 3 tokenizer, loaded once (the warm-up thread and a first request never both load it)."""
    with _embedded_lock:
        return _embedded_tokenizer()


class _TooLarge(Exception):
    """A repository's tokenizer files are larger than `MAX_TOKENIZER_BYTES`."""


@functools.lru_cache(maxsize=8)  # tokenizers are read-only once loaded; a few families at once
def _pretrained_tokenizer(model_id: str, local_only: bool):
    from huggingface_hub import snapshot_download
    from transformers import AutoTokenizer

    if not local_only:  # list the files with their sizes first: nothing is downloaded when they are too large
        planned = snapshot_download(model_id, allow_patterns=TOKENIZER_FILES, dry_run=True)
        total = sum(file.file_size or 0 for file in planned)
        if total > MAX_TOKENIZER_BYTES:
            raise _TooLarge(
                f"`{shown(model_id)}` has {total / 1024**2:,.0f} MB of tokenizer files, more than the "
                f"{MAX_TOKENIZER_BYTES // 1024**2} MB this app reads"
            )
    # The Hub's snapshot (downloaded, or found in the local cache), never a folder of this server that
    # happens to have the same name as the id; no repository code runs; huggingface_hub reads HF_TOKEN itself.
    folder = snapshot_download(model_id, allow_patterns=TOKENIZER_FILES, local_files_only=local_only)
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def load_hub_tokenizer(model_id: str):
    """A Hub model's tokenizer (from the local cache when the Hub is off); ValueError with the reason otherwise.

    Only Hub repository ids are accepted (checked with huggingface_hub's own validator before any request),
    never a path on this server.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(model_id, str) or not model_id.strip():
        raise ValueError("Type a Hub model id such as Qwen/Qwen2.5-0.5B-Instruct.")
    model_id = model_id.strip()
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise ValueError(
            f"`{shown(model_id)}` is not a Hub model id: use owner/name, e.g. Qwen/Qwen2.5-0.5B-Instruct."
        ) from None
    try:
        return hub_or_cache(model_id, lambda local_only: _pretrained_tokenizer(model_id, local_only))
    except ValueError as exc:
        reason = str(exc.__cause__) if isinstance(exc.__cause__, _TooLarge) else str(exc)
        raise ValueError(f"Cannot load the tokenizer: {reason}.") from None


def family_tokenizer(family: str):
    """(tokenizer, its name for the page, stand-in reason or None) for an official family."""
    info = family_info(family)
    if info.get("uses_embedded_tokenizer"):  # the same vocabulary as the family's checkpoints, already on disk
        return embedded_tokenizer(), _EMBEDDED_NAME, None
    model_id = info.get("reference_model")
    reason = "no reference checkpoint is recorded for this family"
    if model_id:
        try:
            return load_hub_tokenizer(model_id), _hub_tokenizer_name(model_id), None
        except ValueError as exc:
            reason = str(exc).removeprefix("Cannot load the tokenizer: ").rstrip(".")
    return embedded_tokenizer(), _EMBEDDED_NAME, reason


_EMBEDDED_NAME = "the embedded Gemma 3 tokenizer (google/gemma-3-270m, 262k vocabulary)"


def _hub_tokenizer_name(model_id: str) -> str:
    # Named by its Hub id: the tokenizer's own name_or_path is the cache folder on this server.
    return f"the `{shown(model_id)}` tokenizer"


# --------------------------------------------------------------------------------------------
# Reading a rendering: contents, control tokens, tokens, mask
# --------------------------------------------------------------------------------------------


def _content_texts(message: dict) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]


def locate_contents(text: str, messages: list[dict]) -> list[tuple[int, int, str]]:
    """(start, end, role) of each message's text in the rendering, found in order.

    Templates often trim contents (Gemma, Llama 3), so a stripped match counts too; a content the template
    rewrote beyond that (or dropped, like earlier reasoning) is simply not coloured.
    """
    spans = []
    cursor = 0
    for message in messages:
        for content in _content_texts(message):
            for candidate in (content, content.strip()):
                if not candidate:
                    continue
                at = text.find(candidate, cursor)
                if at >= 0:
                    spans.append((at, at + len(candidate), message["role"]))
                    cursor = at + len(candidate)
                    break
    return spans


def find_control_tokens(text: str, content_spans, known: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Control tokens the template wrote (outside message contents), plus the known ones that occur.

    `content_spans` are in order and do not overlap (as `locate_contents` finds them), so whether a match
    lies inside one is a binary search. ValueError past `MAX_CONTROL_TOKENS` different tokens.
    """
    starts = [span[0] for span in content_spans]

    def inside(position: int) -> bool:
        at = bisect.bisect_right(starts, position) - 1
        return at >= 0 and position < content_spans[at][1]

    found = {match.group() for match in CONTROL_TOKEN_RE.finditer(text) if not inside(match.start())}
    found |= {token for token in known if token and token in text}
    if len(found) > MAX_CONTROL_TOKENS:
        raise ValueError(
            f"The rendering holds {len(found):,} different control tokens, more than the {MAX_CONTROL_TOKENS} "
            "this inspector draws (chat templates write a few dozen)."
        )
    return tuple(sorted(found, key=lambda token: (-len(token), token)))


def _single_token_id(tokenizer, token: str) -> int | None:
    ids = tokenizer.encode(token, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def tokenize_rendering(text: str, tokenizer, control_tokens: tuple[str, ...], own_tokenizer: bool):
    """[(start, end, id or None, special)] for the rendered text, tokenized as apply_chat_template does.

    Like `apply_chat_template(tokenize=True)`, nothing is added (`add_special_tokens=False`): the template
    already wrote its BOS. With a stand-in tokenizer, the family's control tokens it lacks stay whole.
    """
    special_ids = set(tokenizer.all_special_ids)
    specials = set(control_tokens)
    if own_tokenizer:
        kept_whole = []
    else:
        kept_whole = [token for token in control_tokens if _single_token_id(tokenizer, token) is None]
    pieces = []  # (start, end, is_kept_whole)
    cursor = 0
    if kept_whole:
        for match in re.finditer("|".join(map(re.escape, kept_whole)), text):
            if match.start() > cursor:
                pieces.append((cursor, match.start(), False))
            pieces.append((match.start(), match.end(), True))
            cursor = match.end()
    if cursor < len(text):
        pieces.append((cursor, len(text), False))

    # One tokenizer call for every stretch of text (a rendering can hold thousands of kept-whole tokens).
    stretches = [(start, end) for start, end, whole in pieces if not whole]
    encodings = iter([])
    if stretches:
        batch = tokenizer(
            [text[start:end] for start, end in stretches], add_special_tokens=False, return_offsets_mapping=True
        )
        encodings = iter(zip(batch["input_ids"], batch["offset_mapping"]))
    tokens = []
    for start, end, whole in pieces:
        if whole:
            tokens.append((start, end, None, True))
            continue
        ids, offsets = next(encodings)
        for token_id, (token_start, token_end) in zip(ids, offsets):
            piece = text[start + token_start : start + token_end]
            special = token_id in special_ids or piece in specials
            tokens.append((start + token_start, start + token_end, token_id, special))
    return tokens


def loss_mask(offsets: list[tuple[int, int]], spans, *, max_spans: int = MAX_GENERATION_SPANS) -> list[bool]:
    """Which tokens (character `offsets`, in text order) an assistant-only loss trains on.

    transformers' rule: a token is trained on when it overlaps a `{% generation %}` span at all, i.e. some
    span starts before the token ends and ends after it starts. One pass over both, sorted: walking the
    tokens by their end, every span that starts before that end has been seen, and the furthest end among
    them decides. O((tokens + spans) log spans), where testing every pair cost tokens x spans (a template
    with 20,000 empty spans over 89k tokens held a server for 7 minutes). ValueError past `max_spans`.
    """
    spans = list(spans)
    if len(spans) > max_spans:
        raise ValueError(
            f"The template marked {len(spans):,} {{% generation %}} blocks, more than the {max_spans:,} "
            "an inspection draws (honest templates mark a few per message)."
        )
    spans.sort()
    order = range(len(offsets))
    if any(offsets[i][1] > offsets[i + 1][1] for i in range(len(offsets) - 1)):
        order = sorted(order, key=lambda i: offsets[i][1])
    mask = [False] * len(offsets)
    reach, next_span = float("-inf"), 0  # furthest span end among the spans starting before the token's end
    for index in order:
        start, end = offsets[index]
        while next_span < len(spans) and spans[next_span][0] < end:
            reach = max(reach, spans[next_span][1])
            next_span += 1
        mask[index] = reach > start
    return mask


def token_roles(offsets: list[tuple[int, int]], content_spans, prompt_start: int | None) -> list[str]:
    """The role of each token: the first message content it overlaps, else "prompt" (inside the generation
    prompt) or "template" (scaffolding). `content_spans` are in order and disjoint, so one sweep suffices."""
    order = range(len(offsets))
    if any(offsets[i][0] > offsets[i + 1][0] for i in range(len(offsets) - 1)):
        order = sorted(order, key=lambda i: offsets[i][0])
    roles = ["template"] * len(offsets)
    current = 0
    for index in order:
        start, end = offsets[index]
        while current < len(content_spans) and content_spans[current][1] <= start:
            current += 1  # ends before this token starts, so before every later one too
        if current < len(content_spans) and content_spans[current][0] < end:
            roles[index] = content_spans[current][2]
        elif prompt_start is not None and start >= prompt_start:
            roles[index] = "prompt"
    return roles


def _probe_text(probes: list[dict]) -> str | None:
    """The first probe rendering that shows the reply (string contents first, then content parts)."""
    return next((probe["text"] for probe in probes if _PROBE_REPLY in probe.get("text", "")), None)


def _end_of_turn(probe_text: str | None, control_tokens: tuple[str, ...]) -> str | None:
    """The first control token after the probe's reply: what a model learns to emit to end its turn."""
    if not probe_text or _PROBE_REPLY not in probe_text:
        return None
    tail = probe_text[probe_text.rfind(_PROBE_REPLY) + len(_PROBE_REPLY) :]
    candidates = [(tail.find(token), -len(token), token) for token in control_tokens if token in tail]
    if candidates:
        return min(candidates)[2]
    match = CONTROL_TOKEN_RE.search(tail)
    return match.group() if match else None


# --------------------------------------------------------------------------------------------
# The inspection
# --------------------------------------------------------------------------------------------


def _inspect(
    label: str,
    messages: list,
    *,
    template: str,
    variables: dict,
    untrusted: bool,
    tokenizer,
    tokenizer_name: str,
    stand_in_reason: str | None,
    add_generation_prompt: bool,
    continue_final_message: bool,
    mask_for: Callable[[TemplateFacts], tuple[str | None, str | None]],
) -> Inspection:
    """Render (in the sandbox when `untrusted`), tokenize, mask and warn. `mask_for(facts)` says which
    template's {% generation %} spans give the loss mask, once the render has told whether this one has any."""
    messages = validate_messages(messages)
    add_generation_prompt, continue_final_message = bool(add_generation_prompt), bool(continue_final_message)
    if add_generation_prompt and continue_final_message:
        raise ValueError(
            "Pick one: add_generation_prompt opens a new assistant turn, continue_final_message extends the last one."
        )
    result = Inspection(label=label, tokenizer_name=tokenizer_name, stand_in_reason=stand_in_reason)
    flags = dict(add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message)
    jobs = [
        dict(messages=messages, **flags),
        dict(messages=messages),  # without flags: what the generation prompt adds
        dict(messages=messages, add_generation_prompt=True),
        dict(messages=_PROBE),  # to find the end-of-turn token
        dict(messages=_PROBE_PARTS),
    ]
    (main, plain, prompted, *probes), facts = render_with_facts(template, jobs, variables, untrusted=untrusted)
    mask_template, mask_source = mask_for(facts)
    if "error" in main:
        result.error = main["error"]
        result.warnings.append(
            "The template itself refuses this conversation — this is what `apply_chat_template` raises: "
            + main["error"]
        )
        return result
    text = result.text = main["text"]

    # Generation prompt: what add_generation_prompt appends to the same conversation.
    # Usually a pure suffix; Phi-3 instead ends a finished chat with eos, so compare from the common prefix.
    if "text" in plain and "text" in prompted:
        shared_chars = len(os.path.commonprefix([plain["text"], prompted["text"]]))
        for match in CONTROL_TOKEN_RE.finditer(prompted["text"]):  # never cut a control token in two
            if match.start() < shared_chars < match.end():
                shared_chars = match.start()
        result.generation_prompt = prompted["text"][shared_chars:]
    # The loss mask: spans of {% generation %} blocks, from this template or its training variant.
    mask_spans, probe_text = None, _probe_text(probes)
    if continue_final_message:
        result.warnings.append(
            "No loss mask with continue_final_message: a training example is a finished conversation."
        )
    elif mask_template is None:
        result.warnings.append(
            "This template has no {% generation %} markers, so no assistant-only loss mask can be drawn: "
            "TRL's `assistant_only_loss=True` needs them (use a `_training` variant or add the markers)."
        )
    elif mask_template == template:
        mask_spans = [tuple(span) for span in main["spans"]]
        result.mask_source = mask_source
    else:
        # An official training variant: trusted, rendered here; its probe shows what the model learns to emit.
        marked, *marked_probes = render_batch(
            mask_template,
            [
                dict(messages=messages, add_generation_prompt=add_generation_prompt),
                dict(messages=_PROBE),
                dict(messages=_PROBE_PARTS),
            ],
            variables,
            untrusted=False,
        )
        probe_text = _probe_text(marked_probes) or probe_text
        if "error" in marked:
            result.warnings.append(
                f"The training template refuses this conversation, so no loss mask: {marked['error']}"
            )
        elif marked["text"] == text:
            mask_spans, result.mask_source = [tuple(span) for span in marked["spans"]], mask_source
        elif not add_generation_prompt:
            # A finished conversation is a training example: show what SFT actually sees.
            text = result.text = marked["text"]
            mask_spans, result.mask_source = [tuple(span) for span in marked["spans"]], mask_source
            result.warnings.append(
                f"The training template `{mask_source}` writes this conversation differently from the inference "
                "template; shown is the training rendering, the text SFT trains on."
            )
        else:
            result.warnings.append(
                "The training template writes this conversation differently from the inference template, "
                "so its loss mask cannot be drawn over these tokens (turn off add_generation_prompt to see it)."
            )

    prompt_start = None
    if add_generation_prompt and result.generation_prompt and text.endswith(result.generation_prompt):
        prompt_start = len(text) - len(result.generation_prompt)
    content_spans = locate_contents(text, messages)
    known = tuple(variables.get(key, "") for key in ("bos_token", "eos_token"))
    if stand_in_reason is None:
        known += tuple(token for token in tokenizer.all_special_tokens if token in text)
    result.control_tokens = find_control_tokens(text, content_spans, known)
    own = stand_in_reason is None
    raw_tokens = tokenize_rendering(text, tokenizer, result.control_tokens, own)
    offsets = [(start, end) for start, end, _, _ in raw_tokens]
    roles = token_roles(offsets, content_spans, prompt_start)
    trained = [None] * len(offsets) if mask_spans is None else loss_mask(offsets, mask_spans)
    result.tokens = [
        Token(text=text[start:end], id=token_id, start=start, end=end, role=role, special=special, trained=is_trained)
        for (start, end, token_id, special), role, is_trained in zip(raw_tokens, roles, trained)
    ]

    # Where inference starts and what it stops on.
    if add_generation_prompt or continue_final_message:
        result.inference_starts_at = len(result.tokens)
    result.end_of_turn = _end_of_turn(probe_text, result.control_tokens + find_control_tokens(probe_text or "", []))
    if result.end_of_turn and own:
        result.end_of_turn_id = _single_token_id(tokenizer, result.end_of_turn)

    result.warnings.extend(_teaching_warnings(result, messages, variables, tokenizer, own, facts.reads, **flags))
    missing = [
        str(number)
        for number, message in enumerate(messages, start=1)
        if isinstance(message["content"], str) and message["content"].strip() not in text
    ]
    if missing:
        result.warnings.append(
            f"The text of message {', '.join(missing)} does not appear in the rendering: this template drops it, "
            'on purpose (e.g. earlier reasoning) or because it expects content parts ([{"type": "text", "text": …}]).'
        )
    return result


def _teaching_warnings(
    result: Inspection,
    messages,
    variables,
    tokenizer,
    own: bool,
    reads: frozenset[str],
    *,
    add_generation_prompt: bool,
    continue_final_message: bool,
) -> list[str]:
    warnings = []
    bos = variables.get("bos_token")
    if bos and result.text.startswith(bos):
        if own and tokenizer.bos_token == bos:
            again = tokenizer(result.text, add_special_tokens=True)["input_ids"]
            if again[:2] == [tokenizer.bos_token_id] * 2:
                warnings.append(
                    f"Double BOS: the template already writes `{bos}`, and tokenizing this text again with "
                    f"`add_special_tokens=True` (the default of `tokenizer(text)`) adds another, giving ids "
                    f"{again[:2]}. Tokenize templated text with `add_special_tokens=False`, as "
                    "`apply_chat_template(tokenize=True)` does."
                )
        elif not own:
            warnings.append(
                f"The template writes `{bos}` itself. If this family's tokenizer also adds a BOS when encoding "
                "(Llama and Gemma tokenizers do), tokenizing this text again with `add_special_tokens=True` "
                "doubles it: use `add_special_tokens=False`."
            )
    last_role = messages[-1]["role"]
    if last_role != "assistant" and not add_generation_prompt and not continue_final_message:
        header = f" (`{result.generation_prompt.strip()}`)" if result.generation_prompt.strip() else ""
        warnings.append(
            f"No generation prompt: the text ends with the {last_role}'s turn. For inference, turn on "
            f"add_generation_prompt so the assistant header{header} is written and the model answers "
            "instead of guessing whose turn it is."
        )
    if add_generation_prompt and not result.generation_prompt:
        warnings.append("add_generation_prompt changed nothing: this template writes no assistant header.")
    if add_generation_prompt and last_role == "assistant":
        warnings.append(
            "add_generation_prompt after an assistant message opens a second assistant turn; "
            "to extend the last reply use continue_final_message instead."
        )
    for name in ("bos_token", "eos_token"):
        if name in reads and name not in variables:
            warnings.append(f"The template reads `{name}`, which is not known offline for this family: rendered empty.")
    return warnings


# --------------------------------------------------------------------------------------------
# The three sources of a template, and the side-by-side comparison
# --------------------------------------------------------------------------------------------


def inspect_family(
    family: str, messages: list, *, add_generation_prompt: bool = False, continue_final_message: bool = False
) -> Inspection:
    """Inspect an official TRL template with its family's special tokens (trusted: rendered in-process)."""
    template = official_template(family)
    tokenizer, tokenizer_name, stand_in_reason = family_tokenizer(family)
    marked = training_template(family)
    source = None if marked is None else (family if marked == template else f"{family}_training")
    return _inspect(
        family,
        messages,
        template=template,
        variables=family_variables(family),
        untrusted=False,
        tokenizer=tokenizer,
        tokenizer_name=tokenizer_name,
        stand_in_reason=stand_in_reason,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        mask_for=lambda facts: (marked, source),
    )


def _mask_template_for(template: str, facts: TemplateFacts) -> tuple[str | None, str | None]:
    """A template's own markers, else the training variant of the official family it is identical to."""
    if facts.generation_tag:
        return template, "the template's own {% generation %} markers"
    family = official_family_of(template)
    if family is not None and (marked := training_template(family)) is not None:
        return marked, f"{family}_training (the template is TRL's official {family})"
    return None, None


def inspect_hub_model(
    model_id: str, messages: list, *, add_generation_prompt: bool = False, continue_final_message: bool = False
) -> Inspection:
    """Inspect a Hub model's own template (also read from `chat_template.jinja`), sandboxed, with its tokenizer."""
    messages = validate_messages(messages)  # cheap checks before a download
    tokenizer = load_hub_tokenizer(model_id)
    model_id = model_id.strip()
    template = tokenizer.chat_template
    if isinstance(template, dict):  # a tokenizer with several named templates: the default one is used for chat
        template = template.get("default") or next(iter(template.values()), None)
    if not template:
        raise ValueError(
            f"`{shown(model_id)}` has no chat template (base checkpoints usually have none): pick a family instead."
        )
    check_template_size(template)  # a repository's template is untrusted like any other: size first
    variables = {
        key: value
        for key, value in tokenizer.special_tokens_map.items()
        if isinstance(value, str) and len(value) <= _MAX_SPECIAL_TOKEN_CHARS
    }
    return _inspect(
        shown(model_id),
        messages,
        template=template,
        variables=variables,
        untrusted=True,
        tokenizer=tokenizer,
        tokenizer_name=_hub_tokenizer_name(model_id),
        stand_in_reason=None,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        mask_for=lambda facts: _mask_template_for(template, facts),
    )


def inspect_custom_template(
    template: str, messages: list, *, add_generation_prompt: bool = False, continue_final_message: bool = False
) -> Inspection:
    """Inspect a pasted template: rendered in the sandbox, with Gemma 3's special tokens and tokenizer.

    Its size is checked before anything else; it is parsed and rendered only in the sandbox child.
    """
    check_template_size(template)
    if not template.strip():
        raise ValueError("Paste a Jinja chat template first.")
    return _inspect(
        "custom template",
        messages,
        template=template,
        variables=family_variables(CUSTOM_TEMPLATE_FAMILY),
        untrusted=True,
        tokenizer=embedded_tokenizer(),
        tokenizer_name=_EMBEDDED_NAME,
        stand_in_reason="a pasted template has no tokenizer of its own, so the embedded Gemma 3 one gives the ids",
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        mask_for=lambda facts: _mask_template_for(template, facts),
    )


def compare_families(families: list[str], messages: list, *, add_generation_prompt: bool = False) -> list[Inspection]:
    """The same conversation through 2–4 official families."""
    if not isinstance(families, (list, tuple)) or not all(isinstance(family, str) for family in families):
        raise ValueError("Pick 2 to 4 template families by name, e.g. gemma3, llama3, qwen2_5.")
    families = list(dict.fromkeys(families))  # keep order, drop repeats
    if not 2 <= len(families) <= 4:
        raise ValueError(f"Pick 2 to 4 families to compare (got {len(families)}).")
    return [inspect_family(family, messages, add_generation_prompt=add_generation_prompt) for family in families]
