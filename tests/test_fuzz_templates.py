"""Fuzzing the chat-template CLI and the inspector's endpoint functions with random and hostile input.

Every call must end in a valid answer or in one clear sentence (ValueError/TemplateError in shared/,
gr.Error in the app, exit code 2 and one stderr line in the CLI), within a time bound: the sandbox's
limit plus a margin where a template is rendered in the child, two seconds where nothing is.

Inputs tried per run (Hypothesis, random each run, no example database written): 300 loss masks,
300 role sweeps, 200 conversations as JSON, 150 conversations as objects, 200 template texts through the
size check and the lexer, 200 templates lexed and parsed to compare the two, 100 row edits (3 calls each),
40 official-family inspections, 30 family comparisons, 25 CLI renders of generated templates,
25 inspections of pasted templates and 40 inspector calls with anything in every field — 1,610 in all. The sandboxed
paths cost a child process each, so they get the fewest examples. The worst time of each test is printed
(`pytest -s`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.apps import load_app
from shared.chat_templates import ROLES, list_families, main, parse_messages_json, validate_messages
from shared.template_inspect import embedded_tokenizer, inspect_family, loss_mask, token_roles
from shared.template_sandbox import (
    TIME_LIMIT_S,
    TemplateError,
    check_template_size,
    has_generation_tag,
    template_facts,
)

# A render in the child: its limit, plus starting and killing a child on a busy 2-core machine.
SANDBOXED_S = TIME_LIMIT_S + 3.0
IN_PROCESS_S = 2.0
WORST: dict[str, float] = {}
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _settings(examples: int):
    # No example database: tests never write into the checkout. Our own time bounds replace Hypothesis's.
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@pytest.fixture(scope="module", autouse=True)
def report_worst_times():
    embedded_tokenizer()  # loaded once up front: its first load is start-up cost, not a request's
    yield
    for name, seconds in sorted(WORST.items()):
        outcomes = ", ".join(f"{count} {kind}" for kind, count in sorted(OUTCOMES[name].items()))
        print(f"fuzz: {name}: worst {seconds:.2f} s" + (f" ({outcomes})" if outcomes else ""))


@contextlib.contextmanager
def _timed(name: str, limit_s: float):
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    WORST[name] = max(WORST.get(name, 0.0), elapsed)
    assert elapsed < limit_s, f"{name} took {elapsed:.1f} s"


def _one_line(message: str) -> None:
    assert message.strip(), "an empty error message"
    assert "\n" not in message.strip() and "Traceback" not in message, message


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

# Pieces of templates, honest and hostile: mixed at random they give syntax errors, valid templates,
# escapes, refusals, runaway output and nesting, exactly the kinds of text a visitor can paste.
FRAGMENTS = [
    "{{ bos_token }}",
    "{% for message in messages %}",
    "{% endfor %}",
    "{{ message['role'] }}",
    "{{ message.content }}",
    "{% if message.role == 'assistant' %}",
    "{% if loop.last %}",
    "{% else %}",
    "{% endif %}",
    "{% generation %}",
    "{% endgeneration %}",
    "<|im_start|>",
    "<|im_end|>\n",
    "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    "{{ raise_exception('roles must alternate') }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ messages.append(1) }}",
    "{% set ns = namespace(count=0) %}{% set ns.count = ns.count + 1 %}",
    "{{ 'a' * 1000000 }}",
    "{{ 9 ** 9 ** 9 }}",
    "{% for i in range(5000) %}{{ i }}",
    "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}",
    "{{ messages | tojson }}",
    "{{ strftime_now('%Y') }}",
    "{% raw %}{{ not a tag }}{% endraw %}",
    "{# a comment {% generation %} #}",
    "{{ undefined_name.attribute }}",
    "{{ 1 / 0 }}",
    "{%",
    "}}",
    "{{",
    "{% if true %}" * 40,
]
# Loop bodies that always parse, honest or hostile, so that many generated templates get past the parser.
BODIES = [
    "{{ message.content }}",
    "<|{{ message['role'] }}|>\n",
    "{% generation %}{{ message.content }}<|end|>{% endgeneration %}",
    "{% if message.role == 'assistant' %}{% generation %}{{ message.content }}{% endgeneration %}{% endif %}",
    "{% if loop.first %}{{ bos_token }}{% endif %}",
    "{{ message | tojson }}",
    "{{ raise_exception('no ' + message.role) if message.role == 'tool' else '' }}",
    "{{ message.__class__ }}",
    "{{ 'ab' * 40000 }}",
    "{% for c in message.content %}{% generation %}{% endgeneration %}{% endfor %}",
    "<start_of_turn>{{ message.role }}\n{{ message.content | trim }}<end_of_turn>\n",
]
loop_templates = st.tuples(
    st.sampled_from(["", "{{ bos_token }}", "{% set ns = namespace(n=0) %}"]),
    st.lists(st.one_of(st.sampled_from(BODIES), st.text(alphabet="abc<|>\n ", max_size=8)), min_size=1, max_size=5),
    st.sampled_from(["", "{% if add_generation_prompt %}<|assistant|>\n{% endif %}", "{{ eos_token }}"]),
).map(lambda parts: parts[0] + "{% for message in messages %}" + "".join(parts[1]) + "{% endfor %}" + parts[2])
templates = st.one_of(
    loop_templates,
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=10).map("".join),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
contents = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", " ", "<|im_end|>", "<start_of_turn>", "{{ bos_token }}", "\n\n", "Paris."]),
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)}), max_size=3),
    json_values,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(ROLES), st.text(max_size=12)), "content": contents},
        optional={"reasoning_content": st.text(max_size=20), "tool_calls": json_values},
    ),
    min_size=0,
    max_size=6,
)
messages_json = st.one_of(
    messages.map(json.dumps),
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.sampled_from(["[", "[{", "null", "{}", '{"messages": []}', "[" * 3000, '[{"role": "user", "content": NaN}]']),
)
families = st.one_of(st.sampled_from(list_families()), st.text(max_size=20), st.just("../../etc/passwd"))
# Conversations a template can render (known roles, text or text parts), mixed with hostile ones, so the
# deep paths (tokens, masks, warnings) are reached as often as the early refusals.
well_formed = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(ROLES),
            "content": st.one_of(
                st.text(max_size=80),
                st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)}), max_size=2),
            ),
        }
    ),
    min_size=1,
    max_size=6,
)
conversations = st.one_of(well_formed, messages.filter(bool))


# --------------------------------------------------------------------------------------------
# Pure functions: many examples
# --------------------------------------------------------------------------------------------


@st.composite
def offsets_and_spans(draw):
    widths = draw(st.lists(st.integers(0, 5), max_size=60))
    offsets, cursor = [], 0
    for width in widths:
        offsets.append((cursor, cursor + width))
        cursor += width
    spans = draw(st.lists(st.tuples(st.integers(-2, cursor + 2), st.integers(0, 8)).map(lambda s: (s[0], s[0] + s[1]))))
    return offsets, spans


@_settings(300)
@given(offsets_and_spans())
def test_loss_mask_equals_the_pairwise_rule(case):
    offsets, spans = case
    with _timed("loss_mask", IN_PROCESS_S):
        mask = loss_mask(offsets, spans)
    assert mask == [any(s < e2 and e > s2 for s2, e2 in spans) for s, e in offsets]


@_settings(300)
@given(offsets_and_spans(), st.data())
def test_token_roles_equal_the_first_overlapping_content(case, data):
    offsets, raw = case
    # Contents as locate_contents finds them: in order, disjoint, non-empty.
    contents, cursor = [], 0
    for start, end in sorted(raw):
        if start >= cursor and end > start:
            contents.append((start, end, data.draw(st.sampled_from(ROLES))))
            cursor = end
    prompt_start = data.draw(st.none() | st.integers(0, 300))
    expected = []
    for start, end in offsets:
        role = next((r for s, e, r in contents if start < e and end > s), None)
        expected.append(role or ("prompt" if prompt_start is not None and start >= prompt_start else "template"))
    with _timed("token_roles", IN_PROCESS_S):
        assert token_roles(offsets, contents, prompt_start) == expected


@_settings(200)
@given(messages_json)
def test_conversation_json_is_parsed_or_refused_in_one_sentence(text):
    with _timed("parse_messages_json", IN_PROCESS_S):
        try:
            parsed = parse_messages_json(text)
        except ValueError as exc:
            _one_line(str(exc))
            return
    assert parsed and all(isinstance(message["role"], str) for message in parsed)


@_settings(150)
@given(st.one_of(messages, json_values, st.lists(json_values, max_size=3)))
def test_conversation_objects_are_validated_or_refused_in_one_sentence(value):
    with _timed("validate_messages", IN_PROCESS_S):
        try:
            validate_messages(value)
        except ValueError as exc:
            _one_line(str(exc))


@_settings(200)
@given(templates)
def test_size_check_and_lexer_never_raise_anything_else(template):
    with _timed("has_generation_tag", IN_PROCESS_S):
        assert check_template_size(template) == template
        assert has_generation_tag(template) in (True, False)


@_settings(200)
@given(templates)
def test_the_lexer_check_agrees_with_the_parser(template):
    # The server's has_generation_tag scans tokens only; jinja's parser (here, in a test) must agree with it
    # on every template that parses at all.
    try:
        facts = template_facts(template)
    except TemplateError:
        return
    assert has_generation_tag(template) == facts.generation_tag


@_settings(100)
@given(messages_json, st.integers(-3, 8), st.sampled_from(["role", "content"]), st.text(max_size=30))
def test_row_edits_answer_json_or_one_sentence(text, index, key, value):
    inspector = load_app("chat_template_inspector")
    for edit in (
        lambda: inspector.add_message(text),
        lambda: inspector.set_field(text, index, key, value),
        lambda: inspector.remove_message(text, index),
    ):
        with _timed("row edits", IN_PROCESS_S):
            try:
                assert isinstance(json.loads(edit()), list)
            except gr.Error as exc:
                _one_line(str(exc.message))


# --------------------------------------------------------------------------------------------
# Official templates, in this process, with hostile conversations
# --------------------------------------------------------------------------------------------


@_settings(40)
@given(st.data(), st.booleans(), st.booleans())
def test_family_inspection_answers_or_refuses_in_one_sentence(data, add, cont):
    # Three in four calls are well formed (a real family, a renderable conversation); the rest hostile.
    if data.draw(st.integers(0, 3), label="hostile") == 0:
        family, conversation = data.draw(families), data.draw(messages)
    else:
        family, conversation = data.draw(st.sampled_from(list_families())), data.draw(well_formed)
    with _timed("inspect_family", IN_PROCESS_S):
        try:
            inspection = inspect_family(family, conversation, add_generation_prompt=add, continue_final_message=cont)
        except ValueError as exc:
            _one_line(str(exc))
            OUTCOMES["inspect_family"]["refused"] += 1
            return
    OUTCOMES["inspect_family"]["template refused" if inspection.error else "answered"] += 1
    if inspection.error:
        return
    # The tokens cover the text in order; a character split into byte tokens gives several with its offsets.
    covered, previous = [], None
    for token in inspection.tokens:
        if (token.start, token.end) != previous:
            assert token.start == (previous[1] if previous else 0), (token, previous)
            covered.append(token.text)
        previous = (token.start, token.end)
    assert "".join(covered) == inspection.text
    assert inspection.mask() is None or len(inspection.mask()) == inspection.token_count


@_settings(30)
@given(st.data(), st.booleans())
def test_compare_endpoint_answers_html_or_one_sentence(data, add):
    # Three in four calls are well formed (2-4 real families, a renderable conversation); the rest hostile.
    if data.draw(st.integers(0, 3), label="hostile") == 0:
        chosen, text = data.draw(st.lists(families, max_size=5)), data.draw(messages_json)
    else:
        chosen = data.draw(st.lists(st.sampled_from(list_families()), min_size=2, max_size=4, unique=True))
        text = data.draw(well_formed.map(json.dumps))
    inspector = load_app("chat_template_inspector")
    with _timed("/compare_families", IN_PROCESS_S * 4):  # up to four inspections
        try:
            html = inspector.compare(text, chosen, add)
        except gr.Error as exc:
            _one_line(str(exc.message))
            OUTCOMES["/compare_families"]["refused"] += 1
            return
    OUTCOMES["/compare_families"]["answered"] += 1
    assert html.startswith("<div") and all(f"<b>{family}</b>" in html for family in dict.fromkeys(chosen))


# --------------------------------------------------------------------------------------------
# Sandboxed paths: a child process per call, so few examples
# --------------------------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@_settings(25)
@given(templates, conversations, st.sampled_from([[], ["--add-generation-prompt"], ["--continue-final-message"]]))
def test_cli_renders_or_fails_with_one_line(template, conversation, flags):
    with tempfile.TemporaryDirectory() as folder:
        template_path, messages_path = Path(folder) / "t.jinja", Path(folder) / "chat.json"
        template_path.write_text(template, encoding="utf-8", errors="surrogatepass")
        messages_path.write_text(json.dumps(conversation), encoding="utf-8")
        with _timed("CLI --template", SANDBOXED_S):
            code, out, err = _run_cli(["--template", str(template_path), "--messages", str(messages_path), *flags])
    OUTCOMES["CLI --template"]["rendered" if code == 0 else "refused"] += 1
    if code == 0:
        assert err == ""
    else:
        assert code == 2 and out == "" and err.startswith("error: ")
        _one_line(err)


def _answer_or_one_gr_error(name: str, limit_s: float, call) -> tuple | None:
    with _timed(name, limit_s):
        try:
            outputs = call()
        except gr.Error as exc:
            _one_line(str(exc.message))
            OUTCOMES[name]["refused"] += 1
            return None
    OUTCOMES[name]["answered"] += 1
    assert len(outputs) == 5 and all(isinstance(output, str) for output in outputs)
    return outputs


@_settings(25)
@given(conversations, templates.filter(str.strip), st.booleans(), st.booleans())
def test_inspect_endpoint_with_a_pasted_template(conversation, template, add, cont):
    inspector = load_app("chat_template_inspector")
    outputs = _answer_or_one_gr_error(
        "/inspect custom template",
        SANDBOXED_S,
        lambda: inspector.inspect(json.dumps(conversation), "Custom template", "", "", template, add, cont),
    )
    if outputs is not None:
        summary, _, _, _, exact = outputs
        assert "custom template" in summary and len(exact) <= 100_000


@_settings(40)
@given(
    messages_json,
    st.one_of(st.sampled_from(["Official family", "Hub model", "Custom template"]), st.text(max_size=10)),
    families,
    st.one_of(st.text(max_size=40), st.sampled_from(["/etc/passwd", "shared/data", "org/x\nINFO forged", ""])),
    templates,
    st.booleans(),
    st.booleans(),
)
def test_inspect_endpoint_with_anything(text, source, family, model_id, template, add, cont):
    inspector = load_app("chat_template_inspector")
    _answer_or_one_gr_error(
        "/inspect any input",
        SANDBOXED_S,
        lambda: inspector.inspect(text, source, family, model_id, template, add, cont),
    )


def test_sandbox_errors_are_value_errors():
    # The CLI and the app catch ValueError: every refusal of the sandbox must be one.
    assert issubclass(TemplateError, ValueError)
