"""Official chat templates, read from the installed `trl` package, and how a conversation renders with them.

TRL ships the templates of the major model families as `trl/chat_templates/<family>.jinja`, plus
`<family>_training.jinja` variants that wrap assistant turns in `{% generation %}` markers (what an
assistant-only SFT loss needs). We read that real data instead of keeping hand-written copies.

Rendering follows transformers' `apply_chat_template` character for character (see `template_sandbox`);
official templates render in-process, anything pasted or downloaded renders in a bounded child process.

Command line (exit code 2 and one line on stderr on any error):

    python -m shared.chat_templates --list
    python -m shared.chat_templates --family gemma3 --messages chat.json --add-generation-prompt
    python -m shared.chat_templates --template my_template.jinja --messages chat.json
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.cli import OneLineParser, one_line, read_text, refuse
from shared.hub import shown
from shared.template_sandbox import (
    MAX_TEMPLATE_CHARS,
    TemplateError,
    TemplateFacts,
    has_generation_tag,
    render_jobs,
    render_template,
    render_untrusted,
    render_untrusted_with_facts,
    template_facts,
)

logger = logging.getLogger(__name__)

# Found without importing trl (~0.1 s and a transformers import we do not need to read text files).
TRL_TEMPLATE_DIR = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
FAMILY_DATA_PATH = Path(__file__).resolve().parent / "data" / "templates" / "families.json"
ROLES = ("system", "user", "assistant", "tool")
# A conversation to inspect, not a dataset: 64 messages, each at most 20,000 characters of JSON, and
# 50,000 in all (half the sandbox's 100,000-character output cap, so even a template that writes every
# message twice fits), is more than any lesson needs.
MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 20_000
MAX_CONVERSATION_CHARS = 50_000
# The JSON text of a conversation, as typed or sent: twice the content allowance leaves room for indentation.
MAX_MESSAGES_JSON_CHARS = 2 * MAX_CONVERSATION_CHARS
# Lists and objects nested inside one message (message > content list > part > image > ...; tool calls
# with nested arguments go deepest). Real messages nest fewer than 8 levels.
MAX_MESSAGE_DEPTH = 16
# Custom templates see the special tokens of the embedded Gemma 3 tokenizer, whose ids the app shows.
CUSTOM_TEMPLATE_FAMILY = "gemma3"

# Which official template a tokenizer without one should use, by `config.model_type`.
# Base checkpoints (e.g. the embedded gemma-3-270m-pt) ship no chat template at all.
TEMPLATE_FOR_MODEL_TYPE = {
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "qwen2": "qwen2_5",
    "qwen3": "qwen3",
    "llama": "llama3_2",
    "phi3": "phi3",
}


@functools.cache
def _template_names() -> frozenset[str]:
    """Every template file TRL ships, by stem (`gemma3`, `gemma3_training`, ...)."""
    return frozenset(p.stem for p in TRL_TEMPLATE_DIR.glob("*.jinja"))


def list_families() -> list[str]:
    """Names of the official (inference) templates TRL ships, e.g. `gemma3`, `llama3`, `qwen2_5`."""
    return sorted(name for name in _template_names() if not name.endswith("_training"))


def official_template(family: str, training: bool = False) -> str:
    """The Jinja source of a family's official template (`training=True`: the generation-marked one)."""
    name = f"{family}_training" if training and isinstance(family, str) else family
    if not isinstance(name, str) or name not in _template_names():
        # A name is looked up among TRL's files, never joined into a path: "../x" reads nothing.
        known = ", ".join(list_families())
        kind = "training template" if training else "template"
        raise ValueError(f"No {kind} for family `{shown(family)}`. Known: {known}")
    return _read_official(name)


@functools.cache
def _read_official(name: str) -> str:
    return (TRL_TEMPLATE_DIR / f"{name}.jinja").read_text(encoding="utf-8")


def family_for_model_type(model_type: str) -> str | None:
    """The official template family for a `config.model_type`, or None when we know of none."""
    return TEMPLATE_FOR_MODEL_TYPE.get(model_type)


def tokenizer_variables(tokenizer) -> dict[str, str]:
    """The names a tokenizer passes its chat template (`bos_token`, `eos_token`, …), as `apply_chat_template` does."""
    return {key: value for key, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}


def end_of_turn_token(tokenizer, chat_template: str) -> str | None:
    """The special token the template closes an assistant turn with (what the sampler stops on).

    Derived, not tabulated: render a one-turn conversation and take the first special token that
    follows the assistant's text. Gemma gives `<end_of_turn>`, Llama 3 `<|eot_id|>`, ChatML `<|im_end|>`.
    Rendered as `apply_chat_template` would (the tokenizer's special tokens are the template's variables):
    in this process for a template TRL ships, in the bounded sandbox child for any other (a model's own),
    so a template that loops or explodes ends in one `TemplateError` (a ValueError) instead of a held worker.
    """
    marker = "Sure."
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    variables = tokenizer_variables(tokenizer)
    if is_shipped_template(chat_template):
        text, _ = render_template(chat_template, messages, variables=variables)
    else:
        [result] = render_untrusted(chat_template, [{"messages": messages}], variables)
        if "error" in result:
            raise TemplateError(result["error"])
        text = result["text"]
    tail = text[text.rfind(marker) + len(marker) :]
    special = set(tokenizer.all_special_tokens) | {
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special
    }
    for token in tokenizer.tokenize(tail):
        if token in special:
            return token
    return tokenizer.eos_token


# --------------------------------------------------------------------------------------------
# Facts about families that templates cannot tell us (data), and what they can (derived)
# --------------------------------------------------------------------------------------------


@functools.cache
def _family_data() -> dict[str, dict]:
    data = json.loads(FAMILY_DATA_PATH.read_text(encoding="utf-8"))
    data.pop("_about", None)
    return data


def family_info(family: str) -> dict:
    """The hand-entered facts about a family: `bos_token`/`eos_token` strings, `reference_model` (may be empty)."""
    official_template(family)  # a friendly ValueError for unknown names
    return dict(_family_data().get(family, {}))


def family_variables(family: str) -> dict[str, str]:
    """The special-token strings a family's template reads (`bos_token`, `eos_token`), as its tokenizer passes them."""
    info = family_info(family)
    return {key: info[key] for key in ("bos_token", "eos_token") if info.get(key)}


def training_template(family: str) -> str | None:
    """The family's template with `{% generation %}` markers (its own, or TRL's `_training` variant), or None."""
    official_template(family)  # a friendly ValueError for anything but a TRL family name
    return _training_template(family)


@functools.cache  # TRL's families only (checked above), so the cache stays small
def _training_template(family: str) -> str | None:
    template = official_template(family)
    if has_generation_tag(template):
        return template
    try:
        return official_template(family, training=True)
    except ValueError:
        return None


def is_shipped_template(template: str) -> bool:
    """Is this exactly one of the templates TRL ships (inference or training)? Those render in-process;
    every other template is untrusted."""
    return isinstance(template, str) and any(template == _read_official(name) for name in _template_names())


def official_family_of(template: str) -> str | None:
    """Which official family a template is, by exact identity (as TRL recognises a tokenizer's template)."""
    for family in list_families():
        if official_template(family) == template:
            return family
    return None


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _nesting_depth(value) -> int:
    """How deeply lists and objects nest in `value` (a string is 0, [] is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_MESSAGE_DEPTH:  # deep enough to refuse: stop walking
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def validate_messages(messages) -> list[dict]:
    """Check a conversation and return it as plain dicts; ValueError with a one-line reason otherwise.

    Bounded before anything renders it: message count, size of each message and of the whole
    conversation, nesting depth, plain JSON types and valid Unicode.
    """
    if isinstance(messages, dict) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, list):
        raise ValueError('A conversation is a JSON list of messages, like [{"role": "user", "content": "Hi"}].')
    if not messages:
        raise ValueError("The conversation is empty: add at least one message.")
    if len(messages) > MAX_MESSAGES:
        raise ValueError(f"At most {MAX_MESSAGES} messages, got {len(messages):,}.")
    checked, total = [], 0
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"Message {number} needs a 'role' and a 'content'.")
        if not isinstance(message["role"], str) or not message["role"].strip():
            raise ValueError(f"Message {number}: the role must be a word such as {', '.join(ROLES)}.")
        content = message["content"]
        if not isinstance(content, (str, list)):
            raise ValueError(f"Message {number}: content must be text (or a list of content parts).")
        if _nesting_depth(message) > MAX_MESSAGE_DEPTH:
            raise ValueError(f"Message {number} nests lists and objects more than {MAX_MESSAGE_DEPTH} levels deep.")
        try:
            size = len(json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8", "strict"))
        except (TypeError, ValueError, RecursionError):  # not JSON, NaN, or a lone surrogate (invalid Unicode)
            raise ValueError(
                f"Message {number} must be plain JSON text: strings, numbers, lists and objects, valid Unicode."
            ) from None
        if size > MAX_CONTENT_CHARS:
            raise ValueError(f"Message {number} is longer than {MAX_CONTENT_CHARS:,} characters.")
        total += size
        if total > MAX_CONVERSATION_CHARS:
            raise ValueError(f"The conversation is longer than {MAX_CONVERSATION_CHARS:,} characters in all.")
        checked.append(dict(message))
    return checked


def parse_messages_json(text: str) -> list[dict]:
    """A conversation from its JSON text; ValueError with a one-line reason otherwise (size checked first)."""
    if not isinstance(text, str):
        raise ValueError('A conversation is JSON text, like [{"role": "user", "content": "Hi"}].')
    if len(text) > MAX_MESSAGES_JSON_CHARS:
        raise ValueError(f"The conversation's JSON is longer than {MAX_MESSAGES_JSON_CHARS:,} characters.")
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"The conversation is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise ValueError(
            f"The conversation nests lists and objects more than {MAX_MESSAGE_DEPTH} levels deep."
        ) from None
    return validate_messages(messages)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendering:
    """A rendered conversation and the character spans of its `{% generation %}` blocks (the SFT loss)."""

    text: str
    generation_spans: tuple[tuple[int, int], ...] = ()


def render_chat(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    variables: dict | None = None,
    untrusted: bool = True,
) -> Rendering:
    """Render `messages` with a Jinja chat template exactly as `tokenizer.apply_chat_template(tokenize=False)`.

    `variables` are what the tokenizer would pass (`bos_token`, `eos_token`, …). Anything not from the
    installed TRL package is `untrusted` and renders in the bounded sandbox process.
    Raises ValueError (a `TemplateError`) with a one-line message.
    """
    messages = validate_messages(messages)
    flags = dict(add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message)
    if untrusted:
        [result] = render_untrusted(template, [dict(messages=messages, **flags)], variables)
        if "error" in result:
            raise TemplateError(result["error"])
        return Rendering(result["text"], tuple(map(tuple, result["spans"])))
    text, spans = render_template(template, messages, variables=variables, **flags)
    return Rendering(text, tuple(spans))


def render_family(
    family: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    training: bool = False,
) -> Rendering:
    """Render with a family's official template and its special tokens (`training=True`: the marked one)."""
    template = training_template(family) if training else official_template(family)
    if template is None:
        raise ValueError(f"The {family} template has no {{% generation %}} markers, so it has no training variant.")
    return render_chat(
        template,
        messages,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        variables=family_variables(family),
        untrusted=False,
    )


def render_batch(template: str, jobs: list[dict], variables: dict | None, *, untrusted: bool) -> list[dict]:
    """Several renders of one template at once (one sandbox round trip when untrusted)."""
    if untrusted:
        return render_untrusted(template, jobs, variables)
    return render_jobs(template, jobs, variables)


def render_with_facts(
    template: str, jobs: list[dict], variables: dict | None, *, untrusted: bool
) -> tuple[list[dict], TemplateFacts]:
    """`render_batch` plus the template's facts (generation markers, names it reads): an untrusted template
    is parsed only in the sandbox child, which answers both in one round trip."""
    if untrusted:
        return render_untrusted_with_facts(template, jobs, variables)
    return render_jobs(template, jobs, variables), template_facts(template)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _read_text(path: Path, limit: int, what: str) -> str:
    """At most `limit` characters of a UTF-8 file: a larger one is refused without being read whole."""
    text = read_text(path, limit)
    if len(text) > limit:
        raise ValueError(f"{one_line(path)} is longer than {limit:,} characters, the limit for {what}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m shared.chat_templates",
        description="Render a conversation with an official chat template (from TRL) or a custom one.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", action="store_true", help="print the official family names, one per line")
    source.add_argument("--family", help="an official family, e.g. gemma3, llama3, qwen2_5, phi3")
    source.add_argument("--template", type=Path, help="a custom .jinja file, rendered in the sandbox")
    parser.add_argument("--messages", type=Path, help='a JSON file: [{"role": "user", "content": "Hi"}, ...]')
    parser.add_argument("--add-generation-prompt", action="store_true", help="open an assistant turn at the end")
    parser.add_argument("--continue-final-message", action="store_true", help="leave the last message open")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line already on stderr)
        return exc.code if isinstance(exc.code, int) else 2

    if args.list:
        sys.stdout.write("".join(f"{family}\n" for family in list_families()))
        return 0
    try:
        if args.messages is None:
            raise ValueError("--messages FILE.json is required to render")
        messages = parse_messages_json(_read_text(args.messages, MAX_MESSAGES_JSON_CHARS, "a conversation"))
        flags = dict(
            add_generation_prompt=args.add_generation_prompt, continue_final_message=args.continue_final_message
        )
        if args.template is not None:
            template_source = _read_text(args.template, MAX_TEMPLATE_CHARS, "templates")
            rendering = render_chat(
                template_source, messages, variables=family_variables(CUSTOM_TEMPLATE_FAMILY), untrusted=True, **flags
            )
        else:
            rendering = render_family(args.family, messages, **flags)
    except ValueError as exc:
        return refuse(exc)
    sys.stdout.write(rendering.text)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
