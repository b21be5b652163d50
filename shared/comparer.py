"""The comparer's logic: its columns (which model reads which input) and its preset prompts.

What each column shows is built in `shared.views.comparer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.adapters import PROJECT_ADAPTERS
from shared.generation import Column
from shared.loading import adapter_views, load_pair
from shared.presets import ModelPair

PROMPTS_FILE = Path(__file__).parent / "data" / "comparer" / "prompts.yaml"
# Base (raw text), the aligned model (or, offline, the base in a chat template), then the
# project's own adapters on the base's weights when they fit it: the pipeline, stage by stage.
COLUMN_LABELS = ["Base", "Aligned", *(a.title for a in PROJECT_ADAPTERS.values())]


@dataclass(frozen=True)
class PresetPrompt:
    prompt: str
    shows: str  # what this prompt teaches about base vs aligned behaviour


def load_preset_prompts(path: Path = PROMPTS_FILE) -> list[PresetPrompt]:
    return [PresetPrompt(**row) for row in yaml.safe_load(path.read_text(encoding="utf-8"))]


PRESET_PROMPTS = load_preset_prompts()


def make_columns(pair: ModelPair, progress=None, pin: bool = False) -> list[Column]:
    """The base column reads raw text; the aligned and adapter columns read the chat template.
    `pin=True` keeps the pair's models loaded for good (the page's default pair)."""
    base, aligned = load_pair(pair, progress=progress, pin=pin)
    columns = [
        Column(COLUMN_LABELS[0], base, use_chat_template=False),
        Column(COLUMN_LABELS[1], aligned, use_chat_template=True),
    ]
    columns += [
        Column(PROJECT_ADAPTERS[view.adapter].title, view, use_chat_template=True) for view in adapter_views(base)
    ]
    return columns
