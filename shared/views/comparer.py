"""What the comparer shows under each column, and the notes above them: plain functions, no gradio."""

from __future__ import annotations

import os

import pandas as pd

from shared.generation import STOP_LENGTH, Column, ColumnResult
from shared.hub import shown
from shared.loading import ServedModel, adapter_views
from shared.presets import GATED_MODELS, PRESETS


def column_header(column: Column) -> str:
    served = column.served
    how = "chat template" if column.use_chat_template else "raw prompt, no template"
    if column.use_chat_template and served.template_source and served.template_source.startswith("trl:"):
        how = f"official `{served.template_source[4:]}` chat template (from TRL)"
    name = shown(served.display_name) + (" (fallback)" if served.is_fallback else "")
    return f"### {column.label}\n`{name}` — {how}"


def column_stats(result: ColumnResult) -> str:
    """Why the column stopped, how many tokens it produced, and how fast."""
    if result.error:
        return "Stopped: error (the other columns are unaffected)."
    if not result.done:
        return f"Generating… {len(result.generated_ids)} tokens, {result.tokens_per_s:.1f} tokens/s"
    why = result.stop_reason
    if result.stop_token and result.stop_reason != STOP_LENGTH:
        why = f"{result.stop_reason} `{result.stop_token}`"
    return f"**Stopped:** {why} · **{len(result.generated_ids)}** tokens · **{result.tokens_per_s:.1f}** tokens/s"


def top_next_confidences(result: ColumnResult) -> dict[str, float] | None:
    """Top-5 next tokens at the first answer position, with whitespace made visible."""
    if not result.top_next:
        return None
    visible = {}
    for token, prob in result.top_next:
        # SentencePiece marks a leading space with ▁; show newlines as ⏎ so "\n\n" is not blank.
        label = repr(token.replace("▁", " "))[1:-1].replace("\\n", "⏎")
        if not label.strip():  # a token of spaces only would be a blank row: show each space as ␣
            label = label.replace(" ", "␣")
        visible[label or "(empty)"] = prob
    return visible


def end_of_turn_frame(results: list[ColumnResult]) -> pd.DataFrame:
    """Long-format table for the plot: one row per (column, generated step)."""
    rows = [
        # Rounded: values like 1e-16 say "never" just as well as 0, and keep the axis labels short.
        {"step": step, "p_end_of_turn": round(p, 4), "model": r.label}
        for r in results
        for step, p in enumerate(r.end_of_turn_probs, start=1)
    ]
    frame = pd.DataFrame(rows, columns=["step", "p_end_of_turn", "model"])
    # Typed even when empty: the plot reads an untyped (object) column as categories and keeps them.
    return frame.astype({"step": "int64", "p_end_of_turn": "float64", "model": "str"})


def degeneration_note(base: ServedModel, aligned: ServedModel) -> str:
    """Which models serve, why, and — when the aligned column is only the base in a chat template —
    why that column degenerates."""
    lines = [f"- **Base:** {base.describe()}", f"- **Aligned:** {aligned.describe()}"]
    if aligned.is_fallback and aligned.model is base.model:
        lines.append(
            "\n**Why the aligned column degenerates here:** it is the same base model, only given the "
            f"Gemma chat template. It has never seen `<start_of_turn>` or `{aligned.end_of_turn}` in "
            "training, so the template's special tokens are noise to it: it still continues text, "
            "echoes the question, and almost never emits the end-of-turn token (watch its probability "
            "stay near zero in the plot). Post-training (SFT, then preference optimization) is what "
            "teaches a model that those tokens mean *a user asked; answer, then stop*."
        )
    if adapter_views(base):
        lines.append(
            "\n**The last two columns are that post-training, done by this project** (`train/`): the same "
            "base weights with a LoRA adapter from QLoRA SFT on our own conversations, then the adapter "
            "after DPO on our own preference pairs. All columns run in one batch."
        )
    else:
        lines.append(
            "\n*The project's own SFT/DPO adapters fit Gemma 3 270M only, so they are not shown for this pair.*"
        )
    return "\n".join(lines)


def gated_note(on_spaces: bool) -> str | None:
    """On a Space without the HF_TOKEN secret: which preset models are gated, and what happens instead."""
    if not on_spaces or os.environ.get("HF_TOKEN"):
        return None
    gated = sorted({m for pair in PRESETS.values() for m in (pair.base_id, pair.aligned_id) if m in GATED_MODELS})
    return (
        "*This Space has no `HF_TOKEN` secret, so the gated models ("
        + ", ".join(f"`{m}`" for m in gated)
        + ") cannot be downloaded here: their columns show the embedded Gemma 3 270M base instead, and say so. "
        "Duplicate the Space and add a token with access as the `HF_TOKEN` secret to see them.*"
    )
