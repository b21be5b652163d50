"""Render chat templates the way transformers does, and render untrusted ones in a bounded child process.

Two layers, one environment:

1. `render_template` renders in this process with an `ImmutableSandboxedEnvironment` set up like
   transformers' `apply_chat_template`: `trim_blocks`/`lstrip_blocks`, the `{% generation %}` tag (we record
   the character spans it wraps: the assistant-only loss mask), loop controls, a `tojson` that keeps
   non-ASCII text, `raise_exception`, `strftime_now`, and the same `continue_final_message` trimming.
   Official templates from the installed TRL package are trusted and take this path.
2. `render_untrusted` runs the same code in a separate, pre-started Python process that sees nothing but
   the template, the messages and a few special-token strings (empty environment, no HF_TOKEN), with a
   wall-clock limit, a memory limit and an output cap. Endless loops are killed, giant outputs are cut,
   attribute escapes are refused by the sandbox: each ends in a one-line `TemplateError`.

One rule for every template the project did not ship (typed, uploaded, or read from a model repository):
its size is checked first (`check_template_size`, a length test that costs nothing), and it is parsed,
compiled and rendered only in the child. What the server needs to know about such a template (does it
mark `{% generation %}` blocks, which names it reads, its literal text) comes back with the child's reply
(`render_untrusted_with_facts`), so jinja's parser never runs in the server on a visitor's text.

This file imports only the standard library and jinja2, because the child runs it as a script
(`python -I template_sandbox.py --serve`): cheap to start, and unable to import anything of ours.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

logger = logging.getLogger(__name__)

# Templates TRL ships run from 389 to 19,572 characters (diffusion_gemma_training.jinja is the largest;
# gptoss and the Gemma 4 ones are 16-19k); the real templates of the families we know are a few kB. Ten
# times the largest official one leaves room for any honest template, while a pasted 3 MB or 50 MB one is
# refused by a length test before jinja sees it. Compiling costs time in proportion to the template's
# tags, so the cap also keeps the worst case near the child's time limit rather than far past it.
MAX_TEMPLATE_CHARS = 200_000
# `{% generation %}` blocks recorded in one rendering. A conversation holds at most 64 messages and a
# template marks each assistant reply once (a few times with reasoning and tool calls), so 1,000 is far
# above honest use; a template marking thousands of empty blocks is refused instead of drawn.
MAX_GENERATION_SPANS = 1_000
# A rendered chat is a few kB; 100,000 characters (~25k tokens) is far beyond any lesson conversation,
# and small enough that the parent can tokenize and draw it without stalling.
MAX_OUTPUT_CHARS = 100_000
# Wall-clock limit for one untrusted render batch (a few renders of one template), measured from the
# moment the request reaches an already-started child, so Python's start-up time does not count.
TIME_LIMIT_S = 2.0
# How long a child may take to start (import jinja2) before we give up on it.
_START_LIMIT_S = 10.0
# Address space of the child: Python + jinja2 need ~60 MB; a template that builds a 1 GB string hits this.
_CHILD_MEMORY_BYTES = 512 * 1024**2
# CPU seconds: a backstop that ends the child even if the parent is gone and cannot kill it.
_CHILD_CPU_S = 10
# Warm children kept waiting, so a render costs a pipe round trip rather than a Python start (~100 ms).
_WARM_CHILDREN = 2
_READY_BYTE = b"R"

# Keys transformers copies a message's reasoning into; templates read `reasoning_content` (gpt-oss: `thinking`).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# The tag transformers appends to the final message to find where its text ends in the rendering.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class TemplateError(ValueError):
    """A template that cannot render this conversation; the message is one line, fit for a user."""


class TemplateLimitError(TemplateError):
    """A bound of the sandbox was hit (size, nesting, output, spans, memory, time): the template as a whole
    is refused, never just one conversation of a batch."""


_TOO_DEEP = (
    "The template nests its blocks too deeply to be compiled (real chat templates nest a handful of levels) "
    "and was refused."
)


def check_template_size(source) -> str:
    """The template itself, if it is text of at most `MAX_TEMPLATE_CHARS` characters; TemplateLimitError otherwise.

    A length test, no parsing: called before any other work on a template the project did not ship.
    """
    if not isinstance(source, str):
        raise TemplateError(f"A chat template is text, not {type(source).__name__}.")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateLimitError(
            f"The template is {len(source):,} characters long; templates are refused above "
            f"{MAX_TEMPLATE_CHARS:,} characters (ten times the largest official one)."
        )
    return source


_MEMORY_MESSAGE = "The template needed more memory than the sandbox allows and was stopped."


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# The environment: transformers' semantics, plus refusals that end attacks early and clearly
# --------------------------------------------------------------------------------------------

# ([characters written so far], spans found so far) while a render is tracking `{% generation %}` blocks.
_tracking: ContextVar[tuple[list[int], list[tuple[int, int]]] | None] = ContextVar("generation_tracking", default=None)


class GenerationTag(jinja2.ext.Extension):
    """`{% generation %}…{% endgeneration %}`: renders its body unchanged and records where it landed.

    The span starts after everything yielded so far, exactly as transformers' AssistantTracker counts it,
    so the loss masks we draw are the ones SFTTrainer's `assistant_only_loss` would use.
    """

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_record"), [], [], body).set_lineno(lineno)

    def _record(self, caller) -> str:
        text = caller()
        if len(text) > MAX_OUTPUT_CHARS:  # the body is built in memory before it is written out
            raise TemplateLimitError(_output_cap_message(MAX_OUTPUT_CHARS))
        state = _tracking.get()
        if state is not None:
            written, spans = state
            if len(spans) >= MAX_GENERATION_SPANS:
                raise TemplateLimitError(
                    f"The template marked more than {MAX_GENERATION_SPANS:,} {{% generation %}} blocks in one "
                    "conversation (honest templates mark a few per message) and was stopped."
                )
            spans.append((written[0], written[0] + len(text)))
        return text


def _output_cap_message(limit: int) -> str:
    return f"The template wrote more than {limit:,} characters and was stopped (output cap)."


class ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with two refusals that turn silent or slow abuse into a clear error.

    - An unsafe attribute (`''.__class__`, `x.__globals__`, `list.append`) raises at once instead of
      becoming an empty Undefined, so an escape attempt is reported rather than rendered as "".
    - `*` and `**` refuse results larger than the output cap before computing them (`'a' * 10**10`,
      `10 ** 10 ** 10`), so they fail in microseconds instead of eating memory or CPU.
    Official templates never do either, so their output is unchanged.
    """

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                repeats = isinstance(sequence, (str, list, tuple)) and isinstance(count, int)
                if repeats and len(sequence) * count > MAX_OUTPUT_CHARS:
                    raise SecurityError(f"repeating a sequence {count} times exceeds the output cap")
        # bits of the result ≈ exponent * bits of the base; a million bits is already absurd for a template
        huge_power = (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right * abs(left).bit_length() > 1_000_000
        )
        if huge_power:
            raise SecurityError("the power is too large to compute")
        return super().call_binop(context, operator, left, right)


def _raise_exception(message):
    raise JinjaTemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes <, >, & for HTML; chat templates want the plain JSON transformers gives.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format_string):
    return datetime.now().strftime(format_string)


def _template_dict(*args, **kwargs):
    # A plain function, not the `dict` type, so `dict.__class__`-style hops have nothing to hold on to.
    return dict(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names, so it cannot be used to reach interpreter internals."""

    def __init__(*args, **kwargs):  # same signature trick as Jinja's Namespace, so `namespace(self=…)` works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a namespace cannot hold the underscore name {name!r}")


def build_environment() -> ChatTemplateEnvironment:
    env = ChatTemplateEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _template_dict
    env.globals["namespace"] = _TemplateNamespace
    return env


_environment = build_environment()
_compile_lock = threading.Lock()
_compiled: dict[str, jinja2.Template] = {}
# A few templates are in use at once (the catalogue's, the one pasted); keep recent compilations.
_MAX_COMPILED = 64


def _syntax_error(exc: TemplateSyntaxError) -> TemplateError:
    return TemplateError(f"Template syntax error on line {exc.lineno}: {_one_line(exc.message)}")


def parse_template(source: str) -> jinja2.nodes.Template:
    """The template's syntax tree. Runs jinja's parser: call it only in the child or on a template we ship."""
    check_template_size(source)
    try:
        return _environment.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc) from None
    except (RecursionError, MemoryError):  # e.g. 3,000 nested {% if %}: the parser recurses per level
        raise TemplateLimitError(_TOO_DEEP) from None


def compile_template(source: str, tree: jinja2.nodes.Template | None = None) -> jinja2.Template:
    """The compiled template (cached by source). Call it only in the child or on a template we ship."""
    with _compile_lock:
        template = _compiled.get(source)
    if template is not None:
        return template
    if tree is None:
        tree = parse_template(source)
    try:
        template = _environment.from_string(tree)
    except TemplateSyntaxError as exc:  # raised while compiling too, e.g. an unknown filter
        raise _syntax_error(exc) from None
    except (RecursionError, MemoryError, SyntaxError):
        # Python's own limits on the generated code: "too many levels of indentation" near 100 nested
        # blocks, "too many statically nested blocks" past 20 nested loops, recursion in the compiler.
        raise TemplateLimitError(_TOO_DEEP) from None
    with _compile_lock:
        if len(_compiled) >= _MAX_COMPILED:
            _compiled.pop(next(iter(_compiled)))
        _compiled[source] = template
    return template


def has_generation_tag(source: str) -> bool:
    """Does the template mark assistant output with `{% generation %}` (the tag, not the word)?

    Safe on any template: a size check, then jinja's lexer (a linear scan that skips comments, raw blocks
    and strings), never its parser. A template the lexer rejects has no usable tag.
    """
    check_template_size(source)
    previous = None
    try:
        for _, kind, value in _environment.lex(source):
            if kind == "whitespace":
                continue
            if previous == "block_begin" and kind == "name" and value == "generation":
                return True
            previous = kind
    except TemplateSyntaxError:
        return False
    return False


@dataclass(frozen=True)
class TemplateFacts:
    """What the server may want to know about a template without parsing it itself."""

    generation_tag: bool  # it wraps output in {% generation %} blocks: an assistant-only loss mask can be drawn
    reads: frozenset[str]  # names it reads and never sets (bos_token, messages, tools, ...)
    literals: tuple[str, ...]  # its raw text and string constants: what it can write besides the messages

    def to_json(self) -> dict:
        return {"generation_tag": self.generation_tag, "reads": sorted(self.reads), "literals": list(self.literals)}

    @classmethod
    def from_json(cls, data: dict) -> TemplateFacts:
        return cls(bool(data["generation_tag"]), frozenset(map(str, data["reads"])), tuple(map(str, data["literals"])))


def _facts_from_tree(tree: jinja2.nodes.Template) -> TemplateFacts:
    try:
        generation = any(
            isinstance(node.call, jinja2.nodes.Call)
            and isinstance(node.call.node, jinja2.nodes.ExtensionAttribute)
            and node.call.node.name == "_record"
            for node in tree.find_all(jinja2.nodes.CallBlock)
        )
        names = list(tree.find_all(jinja2.nodes.Name))
        stored = {node.name for node in names if node.ctx in ("store", "param")}
        reads = frozenset(node.name for node in names if node.ctx == "load") - stored
        literals = [node.data for node in tree.find_all(jinja2.nodes.TemplateData)]
        literals += [node.value for node in tree.find_all(jinja2.nodes.Const) if isinstance(node.value, str)]
    except (RecursionError, MemoryError):
        raise TemplateLimitError(_TOO_DEEP) from None
    return TemplateFacts(generation, reads, tuple(literals))


@functools.lru_cache(maxsize=_MAX_COMPILED)
def template_facts(source: str) -> TemplateFacts:
    """`TemplateFacts` computed here, by parsing: only for templates the project ships.

    A template from anywhere else gets its facts from the child: `untrusted_template_facts`.
    """
    return _facts_from_tree(parse_template(source))


def template_literals(source: str) -> list[str]:
    """The literal text a template the project ships can write (its raw text blocks and string constants)."""
    return list(template_facts(source).literals)


# --------------------------------------------------------------------------------------------
# One render, with transformers' handling of messages and continue_final_message
# --------------------------------------------------------------------------------------------


def _plain_json(value):
    """A deep copy in plain JSON types, never the caller's objects; TemplateError if it is not JSON."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        raise TemplateError(
            "The conversation must be plain JSON (text, numbers, lists and objects, nested a few levels)."
        ) from None


def _prepare_messages(messages: list) -> list[dict]:
    if not isinstance(messages, list):
        raise TemplateError("The conversation must be a list of messages.")
    prepared = []
    for message in _plain_json(messages):
        if not isinstance(message, dict):
            raise TemplateError(f"Each message must be an object with 'role' and 'content', got {message!r:.60}")
        # transformers drops None values: templates test `is defined`, and "None" must never be rendered.
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        prepared.append(message)
    return prepared


def render_template(
    source: str,
    messages: list,
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    variables: dict | None = None,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, spans of `{% generation %}` blocks) — what `apply_chat_template` would render.

    `variables` are the extra names the template sees, normally the tokenizer's special tokens
    (`bos_token`, `eos_token`, …). Raises `TemplateError` with a one-line message.
    """
    if continue_final_message and add_generation_prompt:
        raise TemplateError(
            "continue_final_message and add_generation_prompt exclude each other: one continues the last "
            "message, the other opens a new assistant turn."
        )
    if not messages:
        raise TemplateError("The conversation is empty: add at least one message.")
    template = compile_template(source)
    chat = _prepare_messages(messages)
    final_text = None
    if continue_final_message:
        final_text = chat[-1].get("content")
        if not isinstance(final_text, str):
            raise TemplateError("continue_final_message needs a final message with text content to continue.")
        chat[-1]["content"] = final_text + _CONTINUE_TAG

    chunks: list[str] = []
    spans: list[tuple[int, int]] = []
    written = [0]  # characters yielded so far, where the next {% generation %} block would start
    token = _tracking.set((written, spans))
    try:
        for chunk in template.generate(
            messages=chat,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **(variables or {}),
        ):
            written[0] += len(chunk)
            if written[0] > max_output_chars:
                raise TemplateLimitError(_output_cap_message(max_output_chars))
            chunks.append(chunk)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(f"Refused by the sandbox: {_one_line(exc)}.") from None
    except JinjaTemplateError as exc:
        if type(exc) is JinjaTemplateError:  # the template's own raise_exception(...)
            raise TemplateError(f"The template refused this conversation: {_one_line(exc)}") from None
        raise TemplateError(f"Template error: {_one_line(exc)}") from None  # undefined names, bad filters
    except RecursionError:
        raise TemplateLimitError("The template recursed too deeply (runaway recursion) and was stopped.") from None
    except MemoryError:
        raise TemplateLimitError(_MEMORY_MESSAGE) from None
    except Exception as exc:  # a template can raise anything Python can (TypeError, ZeroDivisionError, …)
        raise TemplateError(f"The template failed: {type(exc).__name__}: {_one_line(exc)}") from None
    finally:
        _tracking.reset(token)
    text = "".join(chunks)

    if continue_final_message:
        # Same rule as transformers: cut right after the final message's text, keeping its own spacing.
        if final_text.strip() not in text or _CONTINUE_TAG.strip() not in text:
            raise TemplateError(
                "continue_final_message: the template changes the final message, so its end cannot be found."
            )
        tag_at = text.rindex(_CONTINUE_TAG.strip())
        text = text[:tag_at] if text[tag_at : tag_at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:tag_at].rstrip()
        spans = [(start, min(end, len(text))) for start, end in spans if start < len(text)]
    return text, spans


def render_jobs(
    source: str, jobs: list[dict], variables: dict | None = None, *, tree: jinja2.nodes.Template | None = None
) -> list[dict]:
    """Render one template for several conversations; each result is {"text", "spans"} or {"error"}.

    The template's own refusals concern one conversation and come back as {"error"}; a syntax error or a
    bound of the sandbox (`TemplateLimitError`) concerns the template and is raised once for the batch.
    """
    compile_template(source, tree)
    results = []
    for job in jobs:
        try:
            text, spans = render_template(
                source,
                job["messages"],
                add_generation_prompt=bool(job.get("add_generation_prompt")),
                continue_final_message=bool(job.get("continue_final_message")),
                variables=variables,
            )
            results.append({"text": text, "spans": spans})
        except TemplateLimitError:
            raise
        except TemplateError as exc:
            results.append({"error": str(exc)})
    return results


# --------------------------------------------------------------------------------------------
# The child process
# --------------------------------------------------------------------------------------------


def _serve_one_request() -> None:
    """Child side: signal readiness, read one JSON request from stdin, answer on stdout, exit."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_CHILD_MEMORY_BYTES, _CHILD_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (_CHILD_CPU_S, _CHILD_CPU_S))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # it has no business writing files
    reply_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = open(os.devnull, "w")  # nothing but the reply may reach the parent's pipe
    os.write(reply_stream.fileno(), _READY_BYTE)

    raw = sys.stdin.buffer.read()
    if not raw:  # the parent went away while we waited
        return
    try:
        reply = _answer(json.loads(raw))
    except TemplateLimitError as exc:
        reply = {"error": str(exc), "limit": True}
    except TemplateError as exc:
        reply = {"error": str(exc)}
    except MemoryError:
        reply = {"error": _MEMORY_MESSAGE, "limit": True}
    except RecursionError:
        reply = {"error": _TOO_DEEP, "limit": True}
    except Exception as exc:
        reply = {"error": f"The sandbox could not render: {type(exc).__name__}: {_one_line(exc)}"}
    reply_stream.write(json.dumps(reply))
    reply_stream.flush()


def _answer(request: dict) -> dict:
    """Child side: parse once, report the facts if asked, render every job."""
    source = check_template_size(request["template"])
    tree = parse_template(source)
    reply = {"results": render_jobs(source, request["jobs"], request.get("variables"), tree=tree)}
    if request.get("facts"):
        reply["facts"] = _facts_from_tree(tree).to_json()
    return reply


class _WarmChildren:
    """Started children waiting for one request each. Each child serves once and exits, so nothing one
    user's template does can leak into the next render; a used child is replaced right away."""

    def __init__(self, size: int):
        self._size = size
        self._lock = threading.Lock()
        self._idle: list[subprocess.Popen] = []

    def _start(self) -> subprocess.Popen:
        # An empty environment (no HF_TOKEN, no proxies) and a throwaway working directory.
        env = {"PATH": os.defpath, "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        return subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=tempfile.gettempdir(),
            start_new_session=True,  # a Ctrl-C aimed at the app does not hit the children mid-render
        )

    def take(self) -> subprocess.Popen:
        with self._lock:
            self._idle = [child for child in self._idle if child.poll() is None]
            child = self._idle.pop(0) if self._idle else None
        if child is None:  # more renders at once than warm children: start one now (~100 ms)
            child = self._start()
        with self._lock:
            while len(self._idle) < self._size:
                self._idle.append(self._start())
        return child

    def close(self) -> None:
        with self._lock:
            for child in self._idle:
                child.kill()
                child.wait()
            self._idle = []


_children = _WarmChildren(_WARM_CHILDREN)
atexit.register(_children.close)


def _kill(child: subprocess.Popen) -> None:
    child.kill()
    try:
        child.communicate(timeout=_START_LIMIT_S)
    except subprocess.TimeoutExpired:  # pragma: no cover - a killed process always ends
        logger.warning("A sandbox child did not end after SIGKILL (pid %s)", child.pid)


def render_untrusted(
    source: str, jobs: list[dict], variables: dict | None = None, *, time_limit_s: float = TIME_LIMIT_S
) -> list[dict]:
    """`render_jobs` in a separate process under a wall-clock limit, a memory limit and an output cap.

    The template's size is checked here first (`MAX_TEMPLATE_CHARS`), before anything is sent. Raises
    `TemplateError` when the whole batch fails (too large, syntax error, endless loop, memory, crash);
    per-conversation refusals (`raise_exception`) come back as {"error": ...} entries like `render_jobs`.
    """
    results, _ = _in_child(source, jobs, variables, facts=False, time_limit_s=time_limit_s)
    return results


def render_untrusted_with_facts(
    source: str, jobs: list[dict], variables: dict | None = None, *, time_limit_s: float = TIME_LIMIT_S
) -> tuple[list[dict], TemplateFacts]:
    """`render_untrusted`, plus the template's `TemplateFacts` from the same child (one parse, one round trip)."""
    return _in_child(source, jobs, variables, facts=True, time_limit_s=time_limit_s)


def untrusted_template_facts(source: str, *, time_limit_s: float = TIME_LIMIT_S) -> TemplateFacts:
    """`TemplateFacts` of a template the project did not ship, parsed in the child."""
    return _in_child(source, [], None, facts=True, time_limit_s=time_limit_s)[1]


# Largest request we send: a template at its cap, a few renders of a long conversation, JSON-escaped.
_MAX_REQUEST_BYTES = 16 * 1024**2


def _in_child(source, jobs, variables, *, facts: bool, time_limit_s: float) -> tuple[list[dict], TemplateFacts | None]:
    check_template_size(source)
    if not isinstance(time_limit_s, (int, float)) or not time_limit_s > 0:
        raise ValueError(f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}.")
    jobs = list(jobs)
    try:
        request = json.dumps(
            {"template": source, "jobs": jobs, "variables": dict(variables or {}), "facts": facts}
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        raise TemplateError(
            "The conversation must be plain JSON (text, numbers, lists and objects, nested a few levels)."
        ) from None
    if len(request) > _MAX_REQUEST_BYTES:
        raise TemplateLimitError("The conversations sent to the template sandbox are too long.")
    child = _children.take()
    try:
        ready, _, _ = select.select([child.stdout], [], [], _START_LIMIT_S)
        if not ready or os.read(child.stdout.fileno(), 1) != _READY_BYTE:
            raise TemplateError("The template sandbox could not start; try again.")
        out, _ = child.communicate(request, timeout=time_limit_s)
    except subprocess.TimeoutExpired:
        _kill(child)
        raise TemplateLimitError(
            f"The template did not finish within {time_limit_s:g} s (an endless loop?) and was stopped."
        ) from None
    except BaseException:
        _kill(child)
        raise
    exhausted = "The template exhausted the sandbox's resources and was stopped."
    if not out:
        # Killed by a resource limit: CPU time (SIGXCPU) or memory so exhausted it could not even reply.
        raise TemplateLimitError(exhausted)
    # Our own child wrote this, but cap what we parse anyway: a reply holds at most a few capped texts
    # (JSON may spell a character in up to 12 bytes) and, when asked, the template's literals.
    if len(out) > 12 * (MAX_OUTPUT_CHARS * max(1, len(jobs)) + len(source)) + 65_536:
        raise TemplateLimitError("The template's output exceeded the sandbox's cap.")
    try:
        reply = json.loads(out)
    except ValueError:  # cut off mid-reply by a resource limit
        raise TemplateLimitError(exhausted) from None
    if "error" in reply:
        raise (TemplateLimitError if reply.get("limit") else TemplateError)(reply["error"])
    return reply["results"], TemplateFacts.from_json(reply["facts"]) if facts else None


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve_one_request()
    else:
        sys.exit("usage: python template_sandbox.py --serve  (started by render_untrusted, not by hand)")
