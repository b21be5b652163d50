"""The chat-template inspector through its API, as a user's browser or script would reach it."""

import json

import pytest

from shared.template_inspect import inspect_family

APP = "chat_template_inspector"  # served by the `client` fixture in conftest.py

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def _inspect(
    client, messages, source="Official family", family="gemma3", model_id="", template="", add=False, cont=False
):
    return client.predict(json.dumps(messages), source, family, model_id, template, add, cont, api_name="/inspect")


def test_api_lists_the_documented_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    # The comparison has a name of its own: in the collection the comparer's `/compare` sits beside it.
    assert {"/inspect", "/compare_families"} <= set(endpoints) and "/compare" not in endpoints
    # Page plumbing stays callable by the page but is neither documented nor offered as an MCP tool.
    assert not {"/add_message", "/show_source"} & set(endpoints)


def test_family_inspection_shows_text_tokens_mask_and_stop_token(client):
    summary, warnings, text_view, tokens_view, exact = _inspect(client, MESSAGES)
    expected = inspect_family("gemma3", MESSAGES)
    assert exact == expected.text
    assert f"{expected.token_count} tokens" in summary and f"{expected.trained_count} trained on" in summary
    assert "`<end_of_turn>` (id 106)" in summary
    assert "&lt;start_of_turn&gt;" in text_view  # special tokens drawn, HTML-escaped
    assert "border-bottom:4px solid #16a34a" in tokens_view  # the loss mask is drawn
    assert "Double BOS" in warnings


def test_stand_in_tokenizer_is_announced(client):
    summary, *_ = _inspect(client, MESSAGES, family="llama3", add=True)
    assert "stand-in" in summary and "model writes here" in _inspect(client, MESSAGES, family="llama3", add=True)[3]


def test_template_refusal_is_a_warning_not_a_crash(client):
    repeated = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    _, warnings, text_view, _, _ = _inspect(client, repeated)
    assert "Conversation roles must alternate" in warnings and "Conversation roles must alternate" in text_view


def test_custom_template_renders_and_attacks_are_refused(client):
    exact = _inspect(
        client, MESSAGES, source="Custom template", template="{% for m in messages %}{{ m.content }}|{% endfor %}"
    )[4]
    assert exact == "You are a concise assistant.|What is the capital of France?|Paris.|"
    _, warnings, text_view, tokens_view, exact = _inspect(
        client, MESSAGES, source="Custom template", template="{{ ''.__class__.__mro__ }}"
    )
    assert "Refused by the sandbox" in warnings and "unsafe" in text_view and exact == tokens_view == ""
    with pytest.raises(Exception, match="syntax error"):
        _inspect(client, MESSAGES, source="Custom template", template="{% for %}")


def test_hostile_templates_get_one_sentence_over_http(client, capfd):
    # Issue 13, item 3: these reached jinja's parser in the server (a RecursionError traceback, minutes of CPU).
    nested = "{% if true %}" * 3_000 + "x" + "{% endif %}" * 3_000
    with pytest.raises(Exception, match="nests its blocks too deeply"):
        _inspect(client, MESSAGES, source="Custom template", template=nested)
    with pytest.raises(Exception, match="refused above 200,000 characters"):
        _inspect(client, MESSAGES, source="Custom template", template="{{ x }}" * 500_000)
    with pytest.raises(Exception, match="is not a Hub model id"):
        _inspect(client, MESSAGES, source="Hub model", model_id="/etc/passwd")
    assert "Traceback" not in capfd.readouterr().err  # a refusal is a log line, not a traceback in the server log


def test_bad_input_and_offline_hub_give_clear_errors(client):
    with pytest.raises(Exception, match="not valid JSON"):
        client.predict("[{", "Official family", "gemma3", "", "", False, False, api_name="/inspect")
    with pytest.raises(Exception, match="HF_HUB_OFFLINE"):
        _inspect(client, MESSAGES, source="Hub model", model_id="Qwen/Qwen2.5-0.5B-Instruct")


def test_compare_and_add_message(client):
    table = client.predict(json.dumps(MESSAGES), ["gemma3", "qwen2_5", "phi3"], True, api_name="/compare_families")
    for family in ["gemma3", "qwen2_5", "phi3"]:
        assert f"<b>{family}</b>" in table
    with pytest.raises(Exception, match="2 to 4"):
        client.predict(json.dumps(MESSAGES), ["gemma3"], True, api_name="/compare_families")
    added = json.loads(client.predict(json.dumps(MESSAGES), api_name="/add_message"))
    assert added[:-1] == MESSAGES and added[-1] == {"role": "user", "content": ""}
