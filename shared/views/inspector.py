"""HTML and Markdown views of an `Inspection`: plain functions, no gradio, so they are testable alone.

Colours: one per message role, grey for the template's own scaffolding, amber for the generation prompt.
Trained tokens (the assistant-only loss) get a solid green underline; tokens the loss ignores are faded.
"""

from __future__ import annotations

import html
import re

from shared.template_inspect import CONTROL_TOKEN_RE, MAX_TOKENS_SHOWN, Inspection

ROLE_COLOURS = {
    "system": "#e8e0f8",
    "user": "#dbeafe",
    "assistant": "#dcfce7",
    "tool": "#fde2e2",
    "template": "#eeeeee",
    "prompt": "#fde68a",
}
_SPECIAL_STYLE = "background:#1f2937;color:#f9fafb;border-radius:3px;padding:0 2px"
_FONT = "font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px"


def markdown_code(text: str) -> str:
    """Inline code showing `text` verbatim, whatever backticks it holds: CommonMark closes a code span only
    on a fence as long as the one that opened it, so the fence is one longer than the longest run inside.
    Text a template wrote (its generation prompt, its stop token) cannot break out into Markdown."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"


def markdown_escape(text: str) -> str:
    """Text a template wrote (its raise_exception message) as literal text in Markdown: every ASCII
    punctuation mark backslash-escaped, so a link, an image or emphasis in it stays text."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def _visible(text: str) -> str:
    """Whitespace made visible inside a chip: a token that is only a newline must still be seen."""
    return html.escape(text).replace(" ", "·").replace("\t", "→").replace("\n", "↵")


def legend_html() -> str:
    chips = "".join(
        f'<span style="background:{colour};padding:1px 6px;border-radius:4px;margin-right:6px">{role}</span>'
        for role, colour in ROLE_COLOURS.items()
    )
    return (
        f'<div style="{_FONT};color:#111827">{chips}'
        f'<span style="{_SPECIAL_STYLE};margin-right:6px">special</span>'
        '<span style="border-bottom:4px solid #16a34a;font-weight:600;margin-right:6px">trained on (loss mask)</span>'
        '<span style="opacity:.6">not trained on</span></div>'
    )


def text_html(inspection: Inspection) -> str:
    """The rendered text, exactly as the model reads it, with control tokens highlighted."""
    if inspection.error:
        return f'<div style="{_FONT};color:#b91c1c">{html.escape(inspection.error)}</div>'
    text = inspection.text
    tokens = set(inspection.control_tokens)
    parts, cursor = [], 0
    for match in CONTROL_TOKEN_RE.finditer(text):
        if match.group() not in tokens:
            continue
        parts.append(html.escape(text[cursor : match.start()]))
        parts.append(f'<span style="{_SPECIAL_STYLE}">{html.escape(match.group())}</span>')
        cursor = match.end()
    parts.append(html.escape(text[cursor:]))
    return (
        f'<pre style="{_FONT};white-space:pre-wrap;word-break:break-word;color:#111827;'
        f'background:#fafafa;padding:8px;border-radius:6px;margin:0">{"".join(parts)}</pre>'
    )


def tokens_html(inspection: Inspection) -> str:
    """Token chips: text, id, colour by role, loss mask drawn underneath, inference start marked."""
    if inspection.error:
        return ""
    chips = []
    for index, token in enumerate(inspection.tokens[:MAX_TOKENS_SHOWN]):
        if inspection.inference_starts_at == index:
            chips.append(_inference_marker())
        style = f"background:{ROLE_COLOURS.get(token.role, '#eeeeee')};color:#111827;"
        if token.special:
            style = _SPECIAL_STYLE + ";"
        if token.trained is True:
            style += "border-bottom:4px solid #16a34a;font-weight:600;"
        elif token.trained is False and not token.special:
            style += "opacity:.6;"
        token_id = "—" if token.id is None else str(token.id)
        ink = "#f9fafb" if token.special else "#111827"  # set on the inner spans: page CSS would override inherit
        title = html.escape(f"#{index} {token.text!r} id={token_id} role={token.role} trained={token.trained}")
        chips.append(
            f'<span title="{title}" style="{style}display:inline-flex;flex-direction:column;align-items:center;'
            f'margin:2px;padding:1px 4px;border-radius:4px">'
            f'<span style="color:{ink}">{_visible(token.text)}</span>'
            f'<small style="color:{ink};opacity:.75">{token_id}</small></span>'
        )
    if inspection.inference_starts_at == len(inspection.tokens):
        chips.append(_inference_marker())
    more = len(inspection.tokens) - MAX_TOKENS_SHOWN
    if more > 0:
        chips.append(f"<span> … {more:,} more tokens</span>")
    return f'<div style="{_FONT};color:#111827;line-height:1.2">{"".join(chips)}</div>'


def _inference_marker() -> str:
    return (
        '<span title="the model samples its first token here" style="display:inline-block;margin:2px 4px;'
        'padding:2px 6px;border:2px dashed #d97706;border-radius:4px;color:#92400e">▶ model writes here</span>'
    )


def summary_markdown(inspection: Inspection) -> str:
    if inspection.error:
        return f"**{inspection.label}**: the template refused this conversation."
    plural = "" if inspection.token_count == 1 else "s"
    lines = [f"**{inspection.label}** · **{inspection.token_count:,} token{plural}**"]
    if inspection.mask() is not None:
        lines[0] += f" · **{inspection.trained_count:,} trained on** by an assistant-only loss"
        lines.append(f"- Loss mask from `{inspection.mask_source}` (its `{{% generation %}}` markers).")
    if inspection.stand_in_reason:
        lines.append(
            f"- ⚠️ Token ids come from a **stand-in**, the embedded Gemma 3 tokenizer ({inspection.stand_in_reason}). "
            "Text splits as Gemma 3 would split it; the family's control tokens are kept whole, shown with id —."
        )
    else:
        lines.append(f"- Token ids from {inspection.tokenizer_name}.")
    if inspection.generation_prompt:
        prompt = markdown_code(repr(inspection.generation_prompt))
        lines.append(f"- Generation prompt (what `add_generation_prompt` appends): {prompt}")
    if inspection.inference_starts_at is not None:
        lines.append(
            f"- Inference starts after token #{inspection.inference_starts_at - 1}: the model writes from there."
        )
    if inspection.end_of_turn:
        token_id = inspection.end_of_turn_id
        id_text = f"id {token_id}" if token_id is not None else "id unknown offline"
        stop = markdown_code(inspection.end_of_turn)
        lines.append(f"- The sampler stops on {stop} ({id_text}): the assistant's end of turn.")
    return "\n".join(lines)


def warnings_markdown(inspection: Inspection) -> str:
    warnings = inspection.warnings
    if inspection.error:  # the template's own words are quoted in a warning: literal text, not Markdown
        warnings = [warning.replace(inspection.error, markdown_escape(inspection.error)) for warning in warnings]
    return "\n".join(f"- ⚠️ {warning}" for warning in warnings) or "No warnings."


def compare_html(inspections: list[Inspection]) -> str:
    """A summary row per family, then the renderings side by side."""
    rows = []
    for ins in inspections:
        stop = html.escape(ins.end_of_turn or "—")
        count = "refused" if ins.error else f"{ins.token_count:,}"
        trained = "—" if ins.error or ins.mask() is None else f"{ins.trained_count:,}"
        ids = "stand-in (Gemma 3)" if ins.stand_in_reason else html.escape(ins.tokenizer_name)
        rows.append(
            f"<tr><td><b>{html.escape(ins.label)}</b></td><td>{count}</td><td>{trained}</td>"
            f"<td><code>{stop}</code></td><td>{ids}</td></tr>"
        )
    table = (
        '<table style="border-collapse:collapse;margin-bottom:8px"><tr><th>family</th><th>tokens</th>'
        "<th>trained on</th><th>stop token</th><th>token ids</th></tr>" + "".join(rows) + "</table>"
    )
    columns = "".join(
        f'<div style="flex:1;min-width:220px"><b>{html.escape(ins.label)}</b>{text_html(ins)}</div>'
        for ins in inspections
    )
    return f'<div style="{_FONT}">{table}<div style="display:flex;gap:8px;flex-wrap:wrap">{columns}</div></div>'
