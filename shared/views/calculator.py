"""The LoRA / QLoRA calculator's views: Markdown and tables from `MemoryEstimate`s (no gradio).

Tables are pandas DataFrames, which gradio's Dataframe and BarPlot take as they are.
"""

from __future__ import annotations

import re

import pandas as pd

from shared.memory import BAR_PARTS, GB, GPUS, METHODS, Architecture, MemoryEstimate, format_gb

METHOD_LABELS = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
METHOD_ORDER = [METHOD_LABELS[m] for m in METHODS]
PART_COLORS = {  # one colour per slice of the stacked bars
    "Weights": "#4C78A8",
    "Quantization constants": "#9ECAE9",
    "Gradients": "#F58518",
    "Optimizer states": "#E45756",
    "Activations": "#54A24B",
    "Framework overhead": "#BAB0AC",
}
MODULE_COLUMNS = ["module", "count", "d_in", "d_out", "r·(d_in + d_out)", "trainable"]

# Characters that mean something to Markdown (or HTML inside it): a model's name is shown as text.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def markdown_text(text: str) -> str:
    """Plain text made inert in Markdown: an uploaded file's name cannot add links, images or markup."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def summary_markdown(est: MemoryEstimate) -> str:
    """The headline: trainable parameters (as peft reports them), the LoRA scaling, the memory total."""
    s = est.setup
    lines = [f"### {markdown_text(est.model)}: {METHOD_LABELS[s.method]}"]
    lines.append(
        f"**{est.trainable_params:,}** trainable of {est.total_params:,} parameters "
        f"(**{est.trainable_percent:.3g} %**, as peft reports it)"
    )
    if s.method != "full":
        scale = (s.alpha or 2 * s.rank) / s.rank
        lines.append(f"Rank {s.rank}, scaling α/r = {scale:g}: each adapted W becomes W + {scale:g}·B·A.")
    parts = ", ".join(f"{label.lower()} {format_gb(est.bytes[key])}" for key, label in BAR_PARTS if est.bytes[key])
    lines.append(f"Memory: **{format_gb(est.bytes['total'])}** = {parts}.")
    return "\n\n".join(lines)


def modules_table(est: MemoryEstimate) -> pd.DataFrame:
    """Trainable LoRA parameters per kind of adapted layer (empty for full fine-tuning)."""
    rows = [[m.module, m.count, m.d_in, m.d_out, m.params_each, m.params] for m in est.modules]
    return pd.DataFrame(rows, columns=MODULE_COLUMNS)


def chart_table(estimates: dict[str, MemoryEstimate]) -> pd.DataFrame:
    """One row per (method, memory part) in GB: the stacked bars."""
    rows = [
        {"method": METHOD_LABELS[method], "part": label, "GB": round(est.bytes[key] / GB, 3)}
        for method, est in estimates.items()
        for key, label in BAR_PARTS
    ]
    return pd.DataFrame(rows)


def fits_table(estimates: dict[str, MemoryEstimate]) -> pd.DataFrame:
    """Which of the listed GPUs each method fits on."""
    table = {"GPU": [f"{gpu} — {capacity / GB:.1f} GB usable" for gpu, capacity in GPUS.items()]}
    for method, est in estimates.items():
        fits = est.fits()
        table[f"{METHOD_LABELS[method]} ({format_gb(est.bytes['total'])})"] = [
            "fits" if fits[gpu] else "—" for gpu in GPUS
        ]
    return pd.DataFrame(table)


def notes_markdown(est: MemoryEstimate, arch: Architecture) -> str:
    """The estimate's notes, plus what the activation model does not cover for this architecture."""
    notes = list(est.notes)
    if arch.text is None:
        notes.append("A single matrix has no activations to model: only weights, gradients and optimizer states count.")
    elif arch.text.family == "llama" and arch.model_type not in ("llama", "mistral", "qwen2"):
        notes.append(f"Activations use the Llama layer layout for `{arch.model_type}` (not measured for it).")
    return "\n".join(f"- {note}" for note in notes)
