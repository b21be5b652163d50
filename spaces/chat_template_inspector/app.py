"""Chat-template inspector: from messages to the tokens a model reads, with the SFT loss mask.

    python spaces/chat_template_inspector/app.py

Write a conversation, pick an official template family (from TRL), a Hub model, or paste your own
template, and see the exact text, its tokens and ids, what an assistant-only loss trains on, where
inference starts and which token ends a turn. Pasted and downloaded templates render in a sandbox.
"""

from __future__ import annotations

import json
import logging

import gradio as gr

from shared.apps import mcp_available
from shared.chat_templates import ROLES, list_families, parse_messages_json
from shared.compute import serve, start_once
from shared.hub import shown
from shared.template_inspect import (
    compare_families,
    embedded_tokenizer,
    inspect_custom_template,
    inspect_family,
    inspect_hub_model,
)
from shared.views.inspector import (
    compare_html,
    legend_html,
    summary_markdown,
    text_html,
    tokens_html,
    warnings_markdown,
)

logger = logging.getLogger(__name__)

TITLE = "Chat templates"
SOURCES = ["Official family", "Hub model", "Custom template"]
DEFAULT_FAMILY = "gemma3"
DEFAULT_COMPARE = ["gemma3", "llama3", "qwen2_5", "phi3"]
DEFAULT_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]
EXAMPLE_TEMPLATE = """{{ bos_token }}
{%- for message in messages -%}
    {{ '<|' + message['role'] + '|>\\n' }}
    {%- if message['role'] == 'assistant' -%}
        {% generation %}{{ message['content'] }}<|end|>{% endgeneration %}
    {%- else -%}
        {{ message['content'] }}<|end|>
    {%- endif %}
{% endfor -%}
{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}
"""


def _dump(messages: list[dict]) -> str:
    return json.dumps(messages, indent=2, ensure_ascii=False)


def _refusal(message) -> gr.Error:
    """A visitor's input refused: one sentence on the page and one line in the log (sanitized: no forged
    lines), without the traceback gradio would print for an error it did not expect."""
    logger.info("Refused: %s", shown(str(message)))
    return gr.Error(str(message), print_exception=False)


def _messages_or_error(messages_json: str) -> list[dict]:
    try:
        return parse_messages_json(messages_json)
    except ValueError as exc:
        raise _refusal(exc) from None


def _text(value) -> str:
    """A text field as sent by a page or a script: None and non-text become ""."""
    return value if isinstance(value, str) else ""


# --------------------------------------------------------------------------------------------
# Handlers: parse, call shared/, turn ValueError into gr.Error
# --------------------------------------------------------------------------------------------


def inspect(messages_json, source, family, model_id, custom_template, add_generation_prompt, continue_final_message):
    """Render a conversation with a chat template and split it into tokens, with the SFT loss mask.

    Args:
        messages_json: The conversation as a JSON list of {"role": ..., "content": ...} messages.
        source: "Official family" (a template TRL ships), "Hub model" (a model's own template) or "Custom template".
        family: The template family when source is "Official family", e.g. "gemma3", "llama3", "qwen2_5".
        model_id: A Hub model id when source is "Hub model".
        custom_template: Jinja source when source is "Custom template" (rendered in a sandbox).
        add_generation_prompt: Whether to end with the assistant's turn opener, as at inference.
        continue_final_message: Whether to leave the last message open so the model continues it.

    Returns:
        A summary, warnings (double BOS, roles that do not alternate, ...), the rendered text and the
        tokens as HTML, and the exact rendered text.
    """
    messages = _messages_or_error(messages_json)
    flags = dict(add_generation_prompt=bool(add_generation_prompt), continue_final_message=bool(continue_final_message))
    try:
        if source == "Hub model":
            # A Hub repository id only, never a path on this server (validated before any request).
            inspection = inspect_hub_model(_text(model_id), messages, **flags)
        elif source == "Custom template":
            inspection = inspect_custom_template(_text(custom_template), messages, **flags)
        else:
            inspection = inspect_family(_text(family) or DEFAULT_FAMILY, messages, **flags)
    except ValueError as exc:  # TemplateError is a ValueError: one sentence, never a traceback
        raise _refusal(exc) from None
    return (
        summary_markdown(inspection),
        warnings_markdown(inspection),
        text_html(inspection),
        tokens_html(inspection),
        inspection.text,
    )


def compare(messages_json, families, add_generation_prompt):
    """Render the same conversation with 2 to 4 template families, side by side. API name: /compare_families.

    Args:
        messages_json: The conversation as a JSON list of {"role": ..., "content": ...} messages.
        families: 2 to 4 template family names, e.g. ["gemma3", "llama3", "qwen2_5"].
        add_generation_prompt: Whether to end with the assistant's turn opener.

    Returns:
        HTML: a summary row per family (token count, warnings), then the renderings side by side.
    """
    messages = _messages_or_error(messages_json)
    try:
        inspections = compare_families(families or [], messages, add_generation_prompt=bool(add_generation_prompt))
        return compare_html(inspections)
    except ValueError as exc:
        raise _refusal(exc) from None


def add_message(messages_json):
    messages = _messages_or_error(messages_json)
    # Suggest the turn that would come next in an alternating chat.
    next_role = "assistant" if messages[-1]["role"] == "user" else "user"
    return _dump(_messages_or_error(_dump(messages + [{"role": next_role, "content": ""}])))


def set_field(messages_json, index, key, value):
    messages = _messages_or_error(messages_json)
    if 0 <= index < len(messages) and messages[index].get(key) != value:
        messages[index][key] = value
    return _dump(_messages_or_error(_dump(messages)))  # the edited conversation must still be within bounds


def remove_message(messages_json, index):
    messages = _messages_or_error(messages_json)
    if len(messages) == 1:
        raise _refusal("A conversation needs at least one message.")
    if not 0 <= index < len(messages):
        raise _refusal(f"There is no message {index + 1}.")
    return _dump(messages[:index] + messages[index + 1 :])


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------

with gr.Blocks(title="Chat-template inspector") as demo:
    gr.Markdown(
        "# Chat-template inspector\n"
        'A chat model never sees "messages": it sees one string, written by a Jinja **chat template**, with '
        "special tokens marking whose turn it is. Build a conversation, pick a template, and see the exact "
        "text, the tokens with their ids, which tokens supervised fine-tuning trains on (the assistant-only "
        "loss mask), where the model starts writing, and the token that tells the sampler to stop."
    )
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### Conversation")
            messages_json = gr.Code(
                value=_dump(DEFAULT_MESSAGES),
                language="json",
                label="Messages as JSON (rows below follow it)",
                lines=8,
                max_lines=20,
            )

            @gr.render(inputs=messages_json)
            def message_rows(text):
                try:
                    messages = parse_messages_json(text)
                except ValueError as exc:
                    gr.Markdown(f"⚠️ {exc}")
                    return
                for index, message in enumerate(messages):
                    content = message["content"]
                    editable = isinstance(content, str)
                    with gr.Row(key=f"message-row-{index}", equal_height=True):
                        role = gr.Dropdown(
                            list(dict.fromkeys([*ROLES, message["role"]])),
                            value=message["role"],
                            show_label=False,
                            scale=1,
                            min_width=110,
                            key=f"role-{index}",
                        )
                        body = gr.Textbox(
                            value=content if editable else json.dumps(content, ensure_ascii=False),
                            show_label=False,
                            lines=1,
                            max_lines=6,
                            scale=5,
                            interactive=editable,
                            key=f"content-{index}",
                        )
                        remove = gr.Button("✕", scale=0, min_width=40, key=f"remove-{index}")
                    # Row events edit the JSON above, which re-renders the rows: UI plumbing, not an API.
                    role.input(
                        lambda text, value, i=index: set_field(text, i, "role", value),
                        [messages_json, role],
                        messages_json,
                        api_visibility="private",
                    )
                    if editable:
                        gr.on(
                            [body.blur, body.submit],
                            lambda text, value, i=index: set_field(text, i, "content", value),
                            [messages_json, body],
                            messages_json,
                            api_visibility="private",
                        )
                    remove.click(
                        lambda text, i=index: remove_message(text, i),
                        messages_json,
                        messages_json,
                        api_visibility="private",
                    )

            add_button = gr.Button("+ Add message", size="sm")
            with gr.Row():
                add_generation_prompt = gr.Checkbox(
                    value=True, label="add_generation_prompt", info="open the assistant's turn (inference)"
                )
                continue_final_message = gr.Checkbox(
                    value=False, label="continue_final_message", info="leave the last message open (prefill)"
                )
        with gr.Column(scale=2):
            gr.Markdown("### Template")
            source = gr.Radio(SOURCES, value=SOURCES[0], show_label=False)
            family = gr.Dropdown(
                list_families(),
                value=DEFAULT_FAMILY,
                label="Official family (TRL's templates)",
            )
            model_id = gr.Textbox(
                label="Hub model id",
                placeholder="Qwen/Qwen2.5-0.5B-Instruct",
                info="Its tokenizer's own template; never runs repository code; gated models use HF_TOKEN.",
                visible=False,
            )
            custom_template = gr.Code(
                value=EXAMPLE_TEMPLATE,
                language="jinja2",
                label="Your Jinja template (rendered in a sandbox)",
                lines=10,
                visible=False,
            )
            inspect_button = gr.Button("Inspect", variant="primary")

    summary = gr.Markdown()
    warnings = gr.Markdown()
    gr.HTML(legend_html())
    with gr.Tabs():
        with gr.Tab("Tokens and loss mask"):
            tokens_view = gr.HTML()
        with gr.Tab("Rendered text"):
            text_view = gr.HTML()
        with gr.Tab("Exact string"):
            exact_text = gr.Textbox(show_label=False, lines=8, max_lines=30, buttons=["copy"])
        with gr.Tab("Compare families"):
            compare_choice = gr.CheckboxGroup(list_families(), value=DEFAULT_COMPARE, label="2 to 4 families")
            compare_button = gr.Button("Compare")
            compare_view = gr.HTML()

    # ---- wiring ----
    source.change(
        lambda choice: (
            gr.update(visible=choice == SOURCES[0]),
            gr.update(visible=choice == SOURCES[1]),
            gr.update(visible=choice == SOURCES[2]),
        ),
        source,
        [family, model_id, custom_template],
        api_name="show_source",
        queue=False,
        api_visibility="undocumented",  # page plumbing: not an API or MCP tool
    )
    add_button.click(
        add_message, messages_json, messages_json, api_name="add_message", api_visibility="undocumented"
    )  # page plumbing: not an API or MCP tool
    inspect_inputs = [
        messages_json,
        source,
        family,
        model_id,
        custom_template,
        add_generation_prompt,
        continue_final_message,
    ]
    inspect_outputs = [summary, warnings, text_view, tokens_view, exact_text]
    gr.on(
        [
            inspect_button.click,
            demo.load,
            messages_json.change,
            family.change,
            add_generation_prompt.input,
            continue_final_message.input,
            model_id.submit,
        ],
        inspect,
        inspect_inputs,
        inspect_outputs,
        api_name="inspect",
        trigger_mode="always_last",
    )
    # A name of its own: in the collection, the comparer's `/compare` sits beside it.
    compare_button.click(
        compare, [messages_json, compare_choice, add_generation_prompt], compare_view, api_name="compare_families"
    )

# Renders are quick; Hub tokenizer downloads are slow, so let a few run side by side.
demo.queue(default_concurrency_limit=4)


def warm_up() -> None:
    """Load the embedded tokenizer in the background (a torch import and a 262k vocabulary), so the first
    inspection does not wait for it. Returns at once; calling it again does nothing."""
    start_once("warm-tokenizer", embedded_tokenizer)


if __name__ == "__main__":
    warm_up()
    serve(demo, mcp_server=mcp_available())  # also an MCP tool server when gradio[mcp] is installed
