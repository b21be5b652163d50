"""Rendering, tokens and loss masks of the official templates, checked against transformers itself."""

import json
import subprocess
import sys
import time

import pytest

from shared.chat_templates import (
    end_of_turn_token,
    family_variables,
    list_families,
    official_template,
    render_chat,
    render_family,
    training_template,
    validate_messages,
)
from shared.template_inspect import inspect_family
from shared.template_sandbox import TIME_LIMIT_S, TemplateError

CONVERSATIONS = {
    "single turn": [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi! How can I help?"},
    ],
    "system, multi-turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "whitespace": [
        {"role": "user", "content": "  spaced  \n\n lines \t"},
        {"role": "assistant", "content": "\n  answer with  trailing  \n"},
    ],
    "unicode and markup": [
        {"role": "user", "content": "Café ☕ — 日本語 <b>bold</b> {{ not jinja }}"},
        {"role": "assistant", "content": "Très bien."},
    ],
}
# Llava-Next's template only reads content parts ([{"type": "text", "text": ...}]), never plain strings.
PARTS_ONLY = {"llava_next"}
# The families the lesson names; their training templates mark exactly content + end of turn.
CORE = ["gemma3", "llama3", "qwen2_5", "phi3"]


def _as_family_expects(family, messages):
    if family not in PARTS_ONLY:
        return messages
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]


def _variables(family):
    # The same special tokens for both renderers; "" where the family's tokenizer is unknown offline.
    return {"bos_token": "", "eos_token": "", **family_variables(family)}


def _transformers_render(tokenizer, template, messages, **kwargs):
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)
    except Exception as exc:  # the template's own refusal (e.g. Gemma 1/2: no system role)
        return f"REFUSED {type(exc).__name__}"


def _ours(template, messages, **kwargs):
    try:
        return render_chat(template, messages, untrusted=False, **kwargs).text
    except ValueError as exc:
        return f"REFUSED {exc}"


def test_list_families_reads_trl_files():
    families = list_families()
    for family in ["gemma3", "llama3", "llama3_1", "llama3_2", "qwen2_5", "qwen3", "phi3", "deepseekv3", "gptoss"]:
        assert family in families
    assert not any(name.endswith("_training") for name in families)


@pytest.mark.parametrize("family", list_families())
def test_rendering_matches_transformers(gemma_tokenizer, family):
    template = official_template(family)
    variables = _variables(family)
    for name, conversation in CONVERSATIONS.items():
        messages = _as_family_expects(family, conversation)
        for add_generation_prompt in (False, True):
            expected = _transformers_render(
                gemma_tokenizer, template, messages, add_generation_prompt=add_generation_prompt, **variables
            )
            got = _ours(template, messages, add_generation_prompt=add_generation_prompt, variables=variables)
            if expected.startswith("REFUSED"):
                # The template itself rejects this conversation: we must refuse too, not invent a rendering.
                assert got.startswith("REFUSED"), (name, add_generation_prompt)
            else:
                assert got == expected, (name, add_generation_prompt)


@pytest.mark.parametrize("family", ["gemma3", "llama3", "qwen2_5", "phi3", "deepseekv3"])
def test_continue_final_message_matches_transformers(gemma_tokenizer, family):
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "The colour is"}]
    variables = _variables(family)
    expected = _transformers_render(
        gemma_tokenizer, official_template(family), messages, continue_final_message=True, **variables
    )
    assert _ours(official_template(family), messages, continue_final_message=True, variables=variables) == expected
    assert expected.endswith("The colour is")


def test_render_family_uses_the_family_special_tokens():
    text = render_family("llama3", CONVERSATIONS["single turn"], add_generation_prompt=True).text
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert render_family("phi3", CONVERSATIONS["single turn"]).text.endswith("<|end|>\n<|endoftext|>")


def test_ids_and_mask_match_transformers_for_gemma3(gemma_tokenizer):
    # The embedded tokenizer is Gemma 3's own, so ids and mask must be exactly what SFTTrainer would get.
    messages = CONVERSATIONS["system, multi-turn"] + [{"role": "assistant", "content": "6"}]
    expected = gemma_tokenizer.apply_chat_template(
        messages,
        chat_template=training_template("gemma3"),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    inspection = inspect_family("gemma3", messages)
    assert inspection.stand_in_reason is None
    assert inspection.ids() == expected["input_ids"]
    assert inspection.mask() == expected["assistant_masks"]
    # Hand-checked: two replies, each "<digit><end_of_turn>\n" = 3 tokens.
    assert inspection.trained_count == 6


def _marked_text(inspection):
    return "".join(token.text for token in inspection.tokens if token.trained)


@pytest.mark.parametrize("family", CORE)
def test_mask_marks_only_assistant_content_and_end_of_turn(family):
    messages = CONVERSATIONS["system, multi-turn"] + [{"role": "assistant", "content": "6"}]
    inspection = inspect_family(family, messages)
    mask = inspection.mask()
    assert mask is not None and len(mask) == len(inspection.ids()) == inspection.token_count
    eot = inspection.end_of_turn
    assert eot
    # Each trained run is one reply and its end-of-turn token (whitespace around them is the template's).
    runs, current = [], ""
    for token in inspection.tokens:
        if token.trained:
            current += token.text
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    # Phi-3 also trains on the eos its template writes after the final reply: the model learns to stop there.
    final_eos = family_variables(family).get("eos_token", "")
    if final_eos and runs[-1].endswith(final_eos):
        runs[-1] = runs[-1][: -len(final_eos)]
    assert ["".join(run.split()) for run in runs] == [f"4{eot}", f"6{eot}"]


@pytest.mark.parametrize("family", [f for f in list_families() if training_template(f) is not None])
def test_mask_invariants_for_every_marked_family(family):
    messages = _as_family_expects(family, CONVERSATIONS["system, multi-turn"] + [{"role": "assistant", "content": "6"}])
    inspection = inspect_family(family, messages)
    if inspection.error:
        pytest.skip(f"the {family} template itself refuses a system message: {inspection.error}")
    mask = inspection.mask()
    if mask is None:
        pytest.skip(f"{family}: {inspection.warnings}")
    assert len(mask) == len(inspection.ids())
    for token in inspection.tokens:
        if token.role in ("system", "user"):
            assert not token.trained, token
        if token.role == "assistant":
            assert token.trained, token
    assert inspection.end_of_turn in _marked_text(inspection)


def test_generation_prompt_and_stop_token():
    inspection = inspect_family("gemma3", CONVERSATIONS["system, multi-turn"], add_generation_prompt=True)
    assert inspection.generation_prompt == "<start_of_turn>model\n"
    assert inspection.text.endswith(inspection.generation_prompt)
    assert inspection.inference_starts_at == inspection.token_count
    assert [t.role for t in inspection.tokens[-3:]] == ["prompt"] * 3  # <start_of_turn> model \n
    assert (inspection.end_of_turn, inspection.end_of_turn_id) == ("<end_of_turn>", 106)


@pytest.mark.parametrize(
    "family, end_of_turn",
    [("llama3", "<|eot_id|>"), ("qwen2_5", "<|im_end|>"), ("phi3", "<|end|>"), ("deepseekv3", "<｜end▁of▁sentence｜>")],
)
def test_stand_in_tokenizer_is_said_and_control_tokens_stay_whole(family, end_of_turn):
    inspection = inspect_family(family, CONVERSATIONS["single turn"], add_generation_prompt=True)
    assert inspection.end_of_turn == end_of_turn
    assert inspection.stand_in_reason  # offline: the family's own tokenizer is not available, and we say why
    whole = [t for t in inspection.tokens if t.text == end_of_turn]
    assert whole and all(t.id is None and t.special for t in whole)
    assert "".join(t.text for t in inspection.tokens) == inspection.text


def test_end_of_turn_token_still_works_with_a_real_tokenizer(gemma_tokenizer):
    assert end_of_turn_token(gemma_tokenizer, official_template("gemma3")) == "<end_of_turn>"
    assert end_of_turn_token(gemma_tokenizer, official_template("gemma3", training=True)) == "<end_of_turn>"


def test_end_of_turn_token_of_a_models_own_template_is_sandboxed(gemma_tokenizer):
    # A model's own template (not one TRL ships) renders in the bounded child, never in this process.
    own = "{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}"
    assert end_of_turn_token(gemma_tokenizer, own) == "<end_of_turn>"
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateError, match="did not finish"):
        end_of_turn_token(gemma_tokenizer, endless)
    assert time.monotonic() - started < TIME_LIMIT_S + 3.0
    with pytest.raises(TemplateError, match="200,000 characters"):
        end_of_turn_token(gemma_tokenizer, "x" * 3_000_000)


def test_warnings_teach():
    gemma = inspect_family("gemma3", CONVERSATIONS["system, multi-turn"])
    assert any("Double BOS" in w and "[2, 2]" in w for w in gemma.warnings)
    assert any("No generation prompt" in w for w in gemma.warnings)
    repeated_user = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    refused = inspect_family("gemma3", repeated_user)
    assert refused.error and "Conversation roles must alternate" in refused.error
    no_markers = inspect_family("llama3_2", CONVERSATIONS["single turn"])
    assert no_markers.mask() is None
    assert any("no {% generation %} markers" in w for w in no_markers.warnings)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"role": "user"}, "A conversation is a JSON list"),
        ([], "empty"),
        ([{"role": "user"}], "needs a 'role' and a 'content'"),
        ([{"role": "", "content": "x"}], "role must be a word"),
        ([{"role": "user", "content": 3}], "content must be text"),
    ],
)
def test_bad_messages_get_one_line_reasons(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_messages(bad)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "shared.chat_templates", *args], capture_output=True, text=True, timeout=60
    )


def test_cli(tmp_path):
    listed = _cli("--list")
    assert listed.returncode == 0 and listed.stdout.splitlines() == list_families()

    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps(CONVERSATIONS["system, multi-turn"]), encoding="utf-8")
    rendered = _cli("--family", "qwen2_5", "--messages", str(chat), "--add-generation-prompt")
    assert rendered.returncode == 0
    assert (
        rendered.stdout
        == render_family("qwen2_5", CONVERSATIONS["system, multi-turn"], add_generation_prompt=True).text
    )

    template = tmp_path / "t.jinja"
    template.write_text("{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")
    custom = _cli("--template", str(template), "--messages", str(chat))
    assert custom.returncode == 0 and custom.stdout.startswith("<bos>[system] You are terse.\n")

    for args in (["--family", "nope", "--messages", str(chat)], ["--family", "gemma3"], ["--bogus"]):
        failed = _cli(*args)
        assert failed.returncode == 2 and failed.stdout == ""
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr

    template.write_text("{{ ''.__class__.__mro__ }}")
    attacked = _cli("--template", str(template), "--messages", str(chat))
    assert attacked.returncode == 2 and "unsafe" in attacked.stderr
