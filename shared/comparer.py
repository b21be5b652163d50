"""What the comparer shows, as plain functions: its columns, presets, and the text under each column."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from shared.generation import STOP_LENGTH, Column, ColumnResult
from shared.models import PROJECT_ADAPTERS, ModelPair, ServedModel, load_pair, project_adapters

PROMPTS_FILE = Path(__file__).parent / "data" / "comparer" / "prompts.yaml"
# Base (raw text), the aligned model (or, offline, the base in a chat template), then the
# project's own adapters on the base's weights when they fit it: the pipeline, stage by stage.
COLUMN_LABELS = ["Base", "Aligned", *PROJECT_ADAPTERS]


@dataclass(frozen=True)
class PresetPrompt:
    prompt: str
    shows: str  # what this prompt teaches about base vs aligned behaviour


def load_preset_prompts(path: Path = PROMPTS_FILE) -> list[PresetPrompt]:
    return [PresetPrompt(**row) for row in yaml.safe_load(path.read_text(encoding="utf-8"))]


PRESET_PROMPTS = load_preset_prompts()


def make_columns(pair: ModelPair, progress=None) -> list[Column]:
    """The base column reads raw text; the aligned and adapter columns read the chat template."""
    base, aligned = load_pair(pair, progress=progress)
    columns = [Column(COLUMN_LABELS[0], base, use_chat_template=False), Column(COLUMN_LABELS[1], aligned, use_chat_template=True)]
    columns += [Column(served.adapter, served, use_chat_template=True) for served in project_adapters(base)]
    return columns


def column_header(column: Column) -> str:
    served = column.served
    how = "chat template" if column.use_chat_template else "raw prompt, no template"
    if column.use_chat_template and served.template_source and served.template_source.startswith("trl:"):
        how = f"official `{served.template_source[4:]}` chat template (from TRL)"
    name = served.served_id + (" (fallback)" if served.is_fallback else "")
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
    if project_adapters(base):
        lines.append(
            "\n**The last two columns are that post-training, done by this project** (`train/`): the same "
            "base weights with a LoRA adapter from QLoRA SFT on our own conversations, then the adapter "
            "after DPO on our own preference pairs. All columns run in one batch."
        )
    else:
        lines.append("\n*The project's own SFT/DPO adapters fit Gemma 3 270M only, so they are not shown for this pair.*")
    return "\n".join(lines)
