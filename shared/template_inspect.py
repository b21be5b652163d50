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

import functools
import logging
import os
import re
from dataclasses import dataclass, field

import jinja2.meta

from shared.chat_templates import (
    CUSTOM_TEMPLATE_FAMILY,
    family_info,
    family_variables,
    official_family_of,
    official_template,
    training_template,
    validate_messages,
)
from shared.chat_templates import render_batch
from shared.template_sandbox import compile_template_ast, has_generation_tag

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

@functools.cache
def embedded_tokenizer():
    from shared.models import load_embedded_tokenizer

    return load_embedded_tokenizer()


@functools.lru_cache(maxsize=8)  # tokenizers are read-only once loaded; a few families at once
def _pretrained_tokenizer(model_id: str, local_only: bool):
    from transformers import AutoTokenizer

    # Never run a repository's code; no token argument: huggingface_hub reads HF_TOKEN itself for gated repos.
    return AutoTokenizer.from_pretrained(model_id, trust_remote_code=False, local_files_only=local_only)


def load_hub_tokenizer(model_id: str):
    """A Hub model's tokenizer (from the local cache when the Hub is off); ValueError with the reason otherwise."""
    from shared.models import explain_load_failure, hub_unavailable_reason

    model_id = model_id.strip()
    if not model_id:
        raise ValueError("Type a Hub model id such as Qwen/Qwen2.5-0.5B-Instruct.")
    unavailable = hub_unavailable_reason()
    try:
        return _pretrained_tokenizer(model_id, unavailable is not None)
    except Exception as exc:  # every loading failure becomes one sentence the user can act on
        reason = explain_load_failure(model_id, exc)
        if unavailable and "local cache" in reason:
            reason = f"{unavailable} and `{model_id}` is not in the local cache"
        raise ValueError(f"Cannot load the tokenizer: {reason}.") from None


def family_tokenizer(family: str):
    """(tokenizer, stand-in reason or None) for an official family."""
    info = family_info(family)
    if info.get("uses_embedded_tokenizer"):  # the same vocabulary as the family's checkpoints, already on disk
        return embedded_tokenizer(), None
    model_id = info.get("reference_model")
    reason = "no reference checkpoint is recorded for this family"
    if model_id:
        try:
            return load_hub_tokenizer(model_id), None
        except ValueError as exc:
            reason = str(exc).removeprefix("Cannot load the tokenizer: ").rstrip(".")
    return embedded_tokenizer(), reason


def _tokenizer_name(tokenizer) -> str:
    if tokenizer is embedded_tokenizer():
        return "the embedded Gemma 3 tokenizer (google/gemma-3-270m, 262k vocabulary)"
    return f"the `{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}` tokenizer"


# --------------------------------------------------------------------------------------------
# Reading a rendering: contents, control tokens, tokens, mask
# --------------------------------------------------------------------------------------------

def _content_texts(message: dict) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [part.get("text", "") for part in content or [] if isinstance(part, dict) and part.get("text")]


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


def _inside(position: int, spans) -> bool:
    return any(start <= position < end for start, end, *_ in spans)


def find_control_tokens(text: str, content_spans, known: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Control tokens the template wrote (outside message contents), plus the known ones that occur."""
    found = {match.group() for match in CONTROL_TOKEN_RE.finditer(text) if not _inside(match.start(), content_spans)}
    found |= {token for token in known if token and token in text}
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

    tokens = []
    for start, end, whole in pieces:
        if whole:
            tokens.append((start, end, None, True))
            continue
        encoding = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)
        for token_id, (token_start, token_end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
            piece = text[start + token_start:start + token_end]
            tokens.append((start + token_start, start + token_end, token_id, token_id in special_ids or piece in specials))
    return tokens


def _overlaps(start: int, end: int, spans) -> bool:
    # transformers' rule: a token is trained on when it overlaps a generation span at all.
    return any(start < span_end and end > span_start for span_start, span_end in spans)


def _role_at(start: int, end: int, content_spans, prompt_start: int | None) -> str:
    for span_start, span_end, role in content_spans:
        if start < span_end and end > span_start:
            return role
    if prompt_start is not None and start >= prompt_start:
        return "prompt"
    return "template"


def _probe_text(probes: list[dict]) -> str | None:
    """The first probe rendering that shows the reply (string contents first, then content parts)."""
    return next((probe["text"] for probe in probes if _PROBE_REPLY in probe.get("text", "")), None)


def _end_of_turn(probe_text: str | None, control_tokens: tuple[str, ...]) -> str | None:
    """The first control token after the probe's reply: what a model learns to emit to end its turn."""
    if not probe_text or _PROBE_REPLY not in probe_text:
        return None
    tail = probe_text[probe_text.rfind(_PROBE_REPLY) + len(_PROBE_REPLY):]
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
    stand_in_reason: str | None,
    add_generation_prompt: bool,
    continue_final_message: bool,
    mask_template: str | None,
    mask_source: str | None,
) -> Inspection:
    messages = validate_messages(messages)
    if add_generation_prompt and continue_final_message:
        raise ValueError(
            "Pick one: add_generation_prompt opens a new assistant turn, continue_final_message extends the last one."
        )
    result = Inspection(label=label, tokenizer_name=_tokenizer_name(tokenizer), stand_in_reason=stand_in_reason)
    flags = dict(add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message)
    jobs = [
        dict(messages=messages, **flags),
        dict(messages=messages),  # without flags: what the generation prompt adds
        dict(messages=messages, add_generation_prompt=True),
        dict(messages=_PROBE),  # to find the end-of-turn token
        dict(messages=_PROBE_PARTS),
    ]
    main, plain, prompted, *probes = render_batch(template, jobs, variables, untrusted=untrusted)
    if "error" in main:
        result.error = main["error"]
        result.warnings.append(
            f"The template itself refuses this conversation — this is what `apply_chat_template` raises: {main['error']}"
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
            [dict(messages=messages, add_generation_prompt=add_generation_prompt), dict(messages=_PROBE),
             dict(messages=_PROBE_PARTS)],
            variables, untrusted=False,
        )
        probe_text = _probe_text(marked_probes) or probe_text
        if "error" in marked:
            result.warnings.append(f"The training template refuses this conversation, so no loss mask: {marked['error']}")
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
    result.tokens = [
        Token(
            text=text[start:end],
            id=token_id,
            start=start,
            end=end,
            role=_role_at(start, end, content_spans, prompt_start),
            special=special,
            trained=None if mask_spans is None else _overlaps(start, end, mask_spans),
        )
        for start, end, token_id, special in raw_tokens
    ]

    # Where inference starts and what it stops on.
    if add_generation_prompt or continue_final_message:
        result.inference_starts_at = len(result.tokens)
    result.end_of_turn = _end_of_turn(probe_text, result.control_tokens + find_control_tokens(probe_text or "", []))
    if result.end_of_turn and own:
        result.end_of_turn_id = _single_token_id(tokenizer, result.end_of_turn)

    reads = set(jinja2.meta.find_undeclared_variables(compile_template_ast(template)))
    result.warnings.extend(_teaching_warnings(result, messages, variables, tokenizer, own, reads, **flags))
    missing = [
        str(number) for number, message in enumerate(messages, start=1)
        if isinstance(message["content"], str) and message["content"].strip() not in text
    ]
    if missing:
        result.warnings.append(
            f"The text of message {', '.join(missing)} does not appear in the rendering: this template drops it, "
            'on purpose (e.g. earlier reasoning) or because it expects content parts ([{"type": "text", "text": …}]).'
        )
    return result


def _teaching_warnings(result: Inspection, messages, variables, tokenizer, own: bool, reads: set[str], *,
                       add_generation_prompt: bool, continue_final_message: bool) -> list[str]:
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
    tokenizer, stand_in_reason = family_tokenizer(family)
    marked = training_template(family)
    source = None if marked is None else (family if marked == template else f"{family}_training")
    return _inspect(
        family, messages, template=template, variables=family_variables(family), untrusted=False,
        tokenizer=tokenizer, stand_in_reason=stand_in_reason, add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message, mask_template=marked, mask_source=source,
    )


def _mask_template_for(template: str) -> tuple[str | None, str | None]:
    """A template's own markers, else the training variant of the official family it is identical to."""
    if has_generation_tag(template):
        return template, "the template's own {% generation %} markers"
    family = official_family_of(template)
    if family is not None and (marked := training_template(family)) is not None:
        return marked, f"{family}_training (the template is TRL's official {family})"
    return None, None


def inspect_hub_model(
    model_id: str, messages: list, *, add_generation_prompt: bool = False, continue_final_message: bool = False
) -> Inspection:
    """Inspect a Hub model's own template (also read from `chat_template.jinja`), sandboxed, with its tokenizer."""
    tokenizer = load_hub_tokenizer(model_id)
    template = tokenizer.chat_template
    if isinstance(template, dict):  # a tokenizer with several named templates: the default one is used for chat
        template = template.get("default") or next(iter(template.values()), None)
    if not template:
        raise ValueError(
            f"`{model_id.strip()}` has no chat template (base checkpoints usually have none): pick a family instead."
        )
    variables = {key: value for key, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}
    mask_template, mask_source = _mask_template_for(template)
    return _inspect(
        model_id.strip(), messages, template=template, variables=variables, untrusted=True, tokenizer=tokenizer,
        stand_in_reason=None, add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message, mask_template=mask_template, mask_source=mask_source,
    )


def inspect_custom_template(
    template: str, messages: list, *, add_generation_prompt: bool = False, continue_final_message: bool = False
) -> Inspection:
    """Inspect a pasted template: rendered in the sandbox, with Gemma 3's special tokens and tokenizer."""
    if not template.strip():
        raise ValueError("Paste a Jinja chat template first.")
    mask_template, mask_source = _mask_template_for(template)
    return _inspect(
        "custom template", messages, template=template, variables=family_variables(CUSTOM_TEMPLATE_FAMILY),
        untrusted=True, tokenizer=embedded_tokenizer(),
        stand_in_reason="a pasted template has no tokenizer of its own, so the embedded Gemma 3 one gives the ids",
        add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
        mask_template=mask_template, mask_source=mask_source,
    )


def compare_families(
    families: list[str], messages: list, *, add_generation_prompt: bool = False
) -> list[Inspection]:
    """The same conversation through 2–4 official families."""
    families = list(dict.fromkeys(families))  # keep order, drop repeats
    if not 2 <= len(families) <= 4:
        raise ValueError(f"Pick 2 to 4 families to compare (got {len(families)}).")
    return [inspect_family(family, messages, add_generation_prompt=add_generation_prompt) for family in families]
