"""Issue 13's defects in the inspector and the template sandbox, each reproduced, and the bounds that fix them.

Item 2: the loss mask cost tokens x spans. Item 3: untrusted templates were parsed in the server (3 MB: 28 s,
50 MB: 252 s, 3,000 nested `{% if %}`: a RecursionError traceback). Item 8 (inspector half): a newline in a
model id forged a log line, and the combined app renamed the inspector's `/compare` to `/compare_1`.
"""

import json
import logging
import os
import random
import time

import gradio as gr
import jinja2
import pytest
import yaml

from shared import template_sandbox
from shared.apps import SPACES_DIR, load_app
from shared.chat_templates import (
    MAX_CONVERSATION_CHARS,
    MAX_MESSAGE_DEPTH,
    MAX_MESSAGES_JSON_CHARS,
    TRL_TEMPLATE_DIR,
    main,
    official_template,
    parse_messages_json,
    validate_messages,
)
from shared.template_inspect import (
    MAX_TOKENIZER_BYTES,
    inspect_custom_template,
    inspect_family,
    inspect_hub_model,
    load_hub_tokenizer,
    loss_mask,
)
from shared.template_sandbox import (
    MAX_GENERATION_SPANS,
    MAX_TEMPLATE_CHARS,
    TIME_LIMIT_S,
    TemplateError,
    TemplateLimitError,
    check_template_size,
    has_generation_tag,
    render_untrusted,
    render_untrusted_with_facts,
)

MESSAGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]
# The sandbox's own limit plus room for starting and killing a child on a busy 2-core machine.
DEADLINE_S = TIME_LIMIT_S + 3.0
NESTED_IFS = "{% if true %}" * 3_000 + "x" + "{% endif %}" * 3_000
# The 261-byte template: the conversation, then 20,000 empty {% generation %} blocks.
MANY_SPANS = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% for i in range(20000) %}{% generation %}{% endgeneration %}{{ i }} {% endfor %}"
)


def _one_sentence(message: str) -> str:
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


# --------------------------------------------------------------------------------------------
# One rule for untrusted templates: size first, then only the child parses
# --------------------------------------------------------------------------------------------


def test_size_cap_is_well_above_every_official_template():
    sizes = {path.name: len(path.read_text(encoding="utf-8")) for path in TRL_TEMPLATE_DIR.glob("*.jinja")}
    largest = max(sizes.values())
    print(
        f"largest official template: {max(sizes, key=sizes.get)} = {largest:,} characters; cap {MAX_TEMPLATE_CHARS:,}"
    )
    # A TRL upgrade that ships a template within 5x of the cap fails here, before users see refusals.
    assert MAX_TEMPLATE_CHARS >= 5 * largest
    for path in TRL_TEMPLATE_DIR.glob("*.jinja"):
        assert check_template_size(path.read_text(encoding="utf-8"))


def test_the_servers_generation_check_never_parses_and_agrees_with_the_parser():
    # has_generation_tag runs in the server on any text, so it only lexes; on every template TRL ships it
    # says what jinja's parser says, and it tells the tag from the word.
    for path in TRL_TEMPLATE_DIR.glob("*.jinja"):
        source = path.read_text(encoding="utf-8")
        assert has_generation_tag(source) == template_sandbox.template_facts(source).generation_tag, path.name
    assert has_generation_tag("{%- generation -%}{{ x }}{%- endgeneration -%}")
    for text in [
        "generation",
        "{# {% generation %} #}",
        "{% raw %}{% generation %}{% endraw %}",
        "{{ '{% generation %}' }}",
    ]:
        assert not has_generation_tag(text), text


@pytest.fixture
def no_parsing_here(monkeypatch):
    """Fail the test if jinja parses, compiles or lexes anything in this (the server's) process."""

    def refuse(*args, **kwargs):
        raise AssertionError("jinja ran in the server process on an untrusted template")

    for name in ("parse", "_parse", "compile", "lex", "from_string"):
        monkeypatch.setattr(jinja2.Environment, name, refuse)


@pytest.mark.parametrize("megabytes", [3, 50])
def test_huge_templates_are_refused_in_milliseconds_by_the_size_cap(megabytes, monkeypatch, no_parsing_here, tmp_path):
    template = "{{ messages[0].content }}" * (megabytes * 1024**2 // 25)

    def no_child():
        raise AssertionError("a template over the cap reached the sandbox")

    monkeypatch.setattr(template_sandbox._children, "take", no_child)
    for refuse in (
        lambda: inspect_custom_template(template, MESSAGES),
        lambda: render_untrusted(template, [{"messages": MESSAGES}]),
        lambda: has_generation_tag(template),
    ):
        started = time.perf_counter()
        with pytest.raises(TemplateLimitError) as refused:
            refuse()
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, elapsed  # measured: well under a millisecond (a length test)
        assert f"{MAX_TEMPLATE_CHARS:,} characters" in _one_sentence(str(refused.value))

    # The CLI reads no more than the cap from the file, then refuses with one line and exit code 2.
    (tmp_path / "big.jinja").write_text(template, encoding="utf-8")
    (tmp_path / "chat.json").write_text(json.dumps(MESSAGES), encoding="utf-8")
    code, _, err = _cli(["--template", str(tmp_path / "big.jinja"), "--messages", str(tmp_path / "chat.json")])
    assert code == 2 and f"{MAX_TEMPLATE_CHARS:,} characters" in _one_sentence(err.strip())


def test_untrusted_templates_are_parsed_only_in_the_child(no_parsing_here):
    # The server learns whether the template has {% generation %} blocks, and which names it reads, from
    # the child's reply; with jinja unusable in this process the inspection still works end to end.
    template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{% if m.role == 'assistant' %}"
        "{% generation %}{{ m.content }}<|end|>{% endgeneration %}{% else %}{{ m.content }}<|end|>{% endif %}"
        "{% endfor %}"
    )
    inspection = inspect_custom_template(template, MESSAGES)
    assert inspection.text == "<bos><|user|>What is the capital of France?<|end|><|assistant|>Paris.<|end|>"
    assert "".join(token.text for token in inspection.tokens if token.trained) == "Paris.<|end|>"
    assert inspection.mask_source == "the template's own {% generation %} markers"


def test_child_reports_the_facts_the_server_needs():
    template = "{{ bos_token }}{% set greeting = 'Hello' %}{{ greeting }}{# {% generation %} #}{{ messages | length }}"
    [result], facts = render_untrusted_with_facts(template, [{"messages": MESSAGES}], {"bos_token": "<s>"})
    assert result["text"] == "<s>Hello2"
    assert facts.generation_tag is False  # the tag inside a comment is not a tag
    assert facts.reads == {"bos_token", "messages"}  # `greeting` is set by the template itself
    assert "Hello" in facts.literals


def test_3000_nested_ifs_give_one_sentence_not_a_traceback(caplog):
    started = time.monotonic()
    with pytest.raises(TemplateLimitError) as refused:
        inspect_custom_template(NESTED_IFS, MESSAGES)
    assert time.monotonic() - started < DEADLINE_S
    assert "nests its blocks too deeply" in _one_sentence(str(refused.value))
    # Through the app: a gr.Error with the same sentence, and nothing like a traceback in the log.
    inspector = load_app("chat_template_inspector")
    with pytest.raises(gr.Error, match="nests its blocks too deeply"):
        inspector.inspect(json.dumps(MESSAGES), "Custom template", "", "", NESTED_IFS, False, False)
    assert not any("RecursionError" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "template",
    [
        "{% for a in messages %}" * 25 + "x" + "{% endfor %}" * 25,  # Python's 20 statically nested blocks
        "{% if true %}" * 120 + "x" + "{% endif %}" * 120,  # Python's 100 indentation levels
        "{{ " + "(" * 5_000 + "1" + ")" * 5_000 + " }}",  # deep expression
    ],
    ids=["nested loops", "nested ifs", "nested parentheses"],
)
def test_other_deep_nesting_is_one_sentence(template):
    with pytest.raises(TemplateLimitError, match="nests its blocks too deeply"):
        render_untrusted(template, [{"messages": MESSAGES}])


# --------------------------------------------------------------------------------------------
# Linear loss masks
# --------------------------------------------------------------------------------------------


def _slow_mask(offsets, spans):
    # The old rule, pair by pair: trained when the token overlaps any span at all.
    return [any(start < span_end and end > span_start for span_start, span_end in spans) for start, end in offsets]


def test_loss_mask_matches_the_pairwise_rule_on_hand_made_cases():
    offsets = [(0, 2), (2, 5), (5, 5), (5, 9), (9, 10)]
    assert loss_mask(offsets, [(3, 3)]) == [False, True, False, False, False]  # an empty span inside a token
    assert loss_mask(offsets, [(5, 5)]) == [False] * 5  # an empty span on a boundary marks nothing
    assert loss_mask(offsets, [(6, 12), (0, 1)]) == [True, False, False, True, True]  # unsorted spans
    assert loss_mask(offsets, [(1, 8), (2, 3)]) == [True, True, True, True, False]  # nested spans
    for spans in ([(3, 3)], [(5, 5)], [(6, 12), (0, 1)], [(1, 8), (2, 3)], []):
        assert loss_mask(offsets, spans) == _slow_mask(offsets, spans)


def test_loss_mask_of_20000_spans_over_100k_tokens_is_linear():
    rng = random.Random(13)
    offsets, cursor = [], 0
    for _ in range(100_000):
        width = rng.randint(1, 6)
        offsets.append((cursor, cursor + width))
        cursor += width
    spans = [(at, at + rng.choice([0, 0, 1, 4])) for at in (rng.randrange(cursor) for _ in range(20_000))]
    started = time.perf_counter()
    mask = loss_mask(offsets, spans, max_spans=len(spans))
    elapsed = time.perf_counter() - started
    print(f"loss mask: 20,000 spans x 100,000 tokens in {elapsed:.3f} s")
    assert elapsed < 2.0  # pairwise this was ~10^9 comparisons (minutes); one pass takes a fraction of a second
    sample = rng.sample(range(len(offsets)), 40)
    assert [mask[i] for i in sample] == _slow_mask([offsets[i] for i in sample], spans)
    with pytest.raises(ValueError, match=f"more than the {MAX_GENERATION_SPANS:,}"):
        loss_mask(offsets, spans)  # the default cap refuses what no honest template writes


def test_twenty_thousand_generation_blocks_are_refused_quickly():
    # Issue 13, item 2: this template held the server for 425 s. Now the child stops at the span cap.
    started = time.monotonic()
    with pytest.raises(TemplateLimitError) as refused:
        inspect_custom_template(MANY_SPANS, MESSAGES)
    assert time.monotonic() - started < DEADLINE_S
    assert f"more than {MAX_GENERATION_SPANS:,} {{% generation %}} blocks" in _one_sentence(str(refused.value))


# --------------------------------------------------------------------------------------------
# Conversations and names are bounded too
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[" * 50_000 + "]" * 50_000, "levels deep"),
        (json.dumps([{"role": "user", "content": [[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]}]), "levels deep"),
        (json.dumps([{"role": "user", "content": "x" * MAX_MESSAGES_JSON_CHARS}]), "JSON is longer than"),
        (json.dumps([{"role": "user", "content": "x" * 19_000}] * 4), f"{MAX_CONVERSATION_CHARS:,} characters in all"),
        ('[{"role": "user", "content": "\\ud800"}]', "valid Unicode"),
        ('[{"role": "user", "content": NaN}]', "content must be text"),
        ('[{"role": "user", "content": "x", "extra": NaN}]', "plain JSON"),
    ],
    ids=["deep brackets", "deep content", "long text", "long conversation", "lone surrogate", "NaN content", "NaN"],
)
def test_hostile_conversations_get_one_sentence(text, expected):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=expected) as refused:
        parse_messages_json(text)
    assert time.perf_counter() - started < 1.0
    _one_sentence(str(refused.value))


def test_a_cyclic_conversation_is_refused():
    message = {"role": "user", "content": []}
    message["content"].append(message)
    with pytest.raises(ValueError, match=f"more than {MAX_MESSAGE_DEPTH} levels deep"):
        validate_messages([message])


def test_family_names_are_never_paths(tmp_path):
    (tmp_path / "planted.jinja").write_text("{{ 'read from the server disk' }}", encoding="utf-8")
    planted = os.path.relpath(tmp_path / "planted", TRL_TEMPLATE_DIR)
    for name in (planted, str(tmp_path / "planted"), "../chat_templates/gemma3", "gemma3\n"):
        with pytest.raises(ValueError, match="No template for family") as refused:
            inspect_family(name, MESSAGES)
        assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match="No training template"):
        official_template(planted, training=True)


# --------------------------------------------------------------------------------------------
# Hub model ids: validated, never a server path, never a forged log line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", ["/etc/passwd", "../../etc", "a/b/c", "org/name\nINFO forged", "x" * 200])
def test_invalid_hub_ids_are_refused_before_any_request(model_id, monkeypatch):
    import huggingface_hub

    def no_request(*args, **kwargs):
        raise AssertionError("an invalid id reached huggingface_hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_request)
    with pytest.raises(ValueError, match="is not a Hub model id") as refused:
        load_hub_tokenizer(model_id)
    _one_sentence(str(refused.value))


def test_a_repo_id_never_loads_a_folder_of_the_server(monkeypatch):
    # "shared/data" is a folder of this checkout; as an id it is looked up on the Hub (here: offline cache).
    monkeypatch.chdir(SPACES_DIR.parent)
    assert os.path.isdir("shared/data")
    with pytest.raises(ValueError, match="not in the local cache") as refused:
        load_hub_tokenizer("shared/data")
    assert str(SPACES_DIR.parent) not in str(refused.value)


def test_newline_in_a_model_id_cannot_forge_a_log_line(caplog):
    inspector = load_app("chat_template_inspector")
    forged = "org/model\nINFO shared.hub: user admin logged in"
    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as refused:
        inspector.inspect(json.dumps(MESSAGES), "Hub model", "", forged, "", False, False)
    _one_sentence(str(refused.value))
    assert caplog.records, "the refusal is logged"
    for record in caplog.records:
        assert "\n" not in record.getMessage()


def _tiny_tokenizer(folder) -> None:
    """A real fast tokenizer, byte-level BPE trained here on a few sentences: no download, loads in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([m["content"] for m in MESSAGES] * 20, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>").save_pretrained(folder)


def _fake_hub_repo(cache, repo_id: str, chat_template: str) -> None:
    """A model repository as huggingface_hub caches it: refs/main -> snapshots/<commit>/ (tokenizer files)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    _tiny_tokenizer(snapshot)
    (snapshot / "chat_template.jinja").write_text(chat_template, encoding="utf-8")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_a_model_repos_own_template_is_bounded_like_a_pasted_one(hub_cache):
    honest = "{% for m in messages %}<{{ m.role }}>{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    _fake_hub_repo(hub_cache, "someone/honest-model", honest)
    _fake_hub_repo(hub_cache, "someone/deep-model", NESTED_IFS)
    _fake_hub_repo(hub_cache, "someone/huge-model", "x" * (MAX_TEMPLATE_CHARS + 1))

    inspection = inspect_hub_model("someone/honest-model", MESSAGES)
    assert inspection.text == "<user>What is the capital of France?<assistant>Paris."
    assert "".join(token.text for token in inspection.tokens) == inspection.text
    assert "".join(token.text for token in inspection.tokens if token.trained) == "What is the capital of France?Paris."
    assert inspection.stand_in_reason is None and inspection.tokenizer_name == "the `someone/honest-model` tokenizer"
    assert str(hub_cache) not in repr(inspection)  # the cache folder on this server is never shown
    with pytest.raises(TemplateLimitError, match="nests its blocks too deeply"):
        inspect_hub_model("someone/deep-model", MESSAGES)
    with pytest.raises(TemplateLimitError, match=f"{MAX_TEMPLATE_CHARS:,} characters"):
        inspect_hub_model("someone/huge-model", MESSAGES)


def test_a_tokenizer_larger_than_the_cap_is_refused_before_downloading(monkeypatch):
    import huggingface_hub
    from huggingface_hub.file_download import DryRunFileInfo

    import shared.hub

    def listing_only(repo_id, *, allow_patterns=None, dry_run=False, **kwargs):
        # What the Hub lists for a repository whose tokenizer.json alone is 200 MB.
        assert dry_run, "files were downloaded before their sizes were checked"
        return [DryRunFileInfo("0" * 40, 200 * 1024**2, "tokenizer.json", "", False, True)]

    monkeypatch.setattr(shared.hub, "hub_unavailable_reason", lambda: None)  # as if the Hub were reachable
    monkeypatch.setattr(huggingface_hub, "snapshot_download", listing_only)
    with pytest.raises(ValueError) as refused:
        load_hub_tokenizer("someone/giant-tokenizer")
    message = _one_sentence(str(refused.value))
    assert "200 MB of tokenizer files" in message and f"{MAX_TOKENIZER_BYTES // 1024**2} MB" in message


# --------------------------------------------------------------------------------------------
# The inspector's endpoints keep their names in the combined app
# --------------------------------------------------------------------------------------------


def test_combined_app_keeps_the_inspectors_endpoint_names():
    inspector = load_app("chat_template_inspector")
    with gr.Blocks() as combined:
        with gr.Tab("comparer"):  # the comparer's endpoint is called /compare
            button, box = gr.Button(), gr.Textbox()
            button.click(lambda: "", None, box, api_name="compare")
        with gr.Tab(inspector.TITLE):
            inspector.demo.render()
    names = {fn.api_name for fn in combined.fns.values()}
    assert {"compare", "compare_families", "inspect"} <= names
    assert not any(name.endswith("_1") for name in names), names  # nothing renamed


def test_space_readme_examples_name_real_endpoints():
    inspector = load_app("chat_template_inspector")
    spec = yaml.safe_load((SPACES_DIR / "chat_template_inspector" / "space.yaml").read_text(encoding="utf-8"))
    public = {f"/{fn.api_name}" for fn in inspector.demo.fns.values() if fn.api_visibility == "public"}
    for example in spec["api"]:
        assert example["endpoint"] in public
        assert f'api_name="{example["endpoint"]}"' in example["code"]


def test_app_protocol():
    inspector = load_app("chat_template_inspector")
    assert inspector.TITLE == "Chat templates"
    started = time.perf_counter()
    inspector.warm_up()
    inspector.warm_up()  # idempotent: one background thread at most
    assert time.perf_counter() - started < 0.5  # returns at once; the tokenizer loads in the background


def _cli(argv):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_refuses_a_sandbox_limit_with_one_line(tmp_path):
    (tmp_path / "deep.jinja").write_text(NESTED_IFS, encoding="utf-8")
    (tmp_path / "chat.json").write_text(json.dumps(MESSAGES), encoding="utf-8")
    code, out, err = _cli(["--template", str(tmp_path / "deep.jinja"), "--messages", str(tmp_path / "chat.json")])
    assert code == 2 and out == "" and "nests its blocks too deeply" in _one_sentence(err.strip())
    code, out, err = _cli(["--bogus"])  # argparse's own errors: a return code, not a SystemExit
    assert code == 2 and _one_sentence(err.strip()).startswith("error:")


def test_template_error_is_a_value_error():
    # Every caller that catches ValueError (apps, the CLI) also catches the sandbox's refusals.
    assert issubclass(TemplateLimitError, TemplateError) and issubclass(TemplateError, ValueError)


def test_a_templates_own_words_cannot_inject_markdown():
    from shared.views.inspector import summary_markdown, warnings_markdown

    refusing = "{{ raise_exception('see ![pixel](https://tracker.example/p.png) **now**') }}"
    warnings = warnings_markdown(inspect_custom_template(refusing, MESSAGES))
    assert "![pixel](" not in warnings and "\\!\\[pixel\\]" in warnings
    # A generation prompt and a stop token full of backticks stay inside their code spans.
    ticks = "{% for m in messages %}{{ m.content }}<|``end``|>{% endfor %}{% if add_generation_prompt %}`x`{% endif %}"
    summary = summary_markdown(inspect_custom_template(ticks, MESSAGES, add_generation_prompt=True))
    assert "``` <|``end``|> ```" in summary and "`` '`x`' ``" in summary
