"""Base/aligned model pairs the comparer offers, and which one a page starts with."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPair:
    """A base checkpoint and its post-trained sibling: same architecture and pretraining."""

    key: str
    base_id: str
    aligned_id: str


PRESETS: dict[str, ModelPair] = {
    p.key: p
    for p in [
        ModelPair("gemma-3-1b", "google/gemma-3-1b-pt", "google/gemma-3-1b-it"),
        ModelPair("gemma-3-270m", "google/gemma-3-270m", "google/gemma-3-270m-it"),
        ModelPair("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct"),
        ModelPair("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ModelPair("llama-3.2-1b", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"),
    ]
}
# Repos a visitor cannot download without accepting a licence on the Hub (and a token with access).
GATED_MODELS = frozenset(
    {
        "google/gemma-3-1b-pt",
        "google/gemma-3-1b-it",
        "google/gemma-3-270m",
        "google/gemma-3-270m-it",
        "meta-llama/Llama-3.2-1B",
        "meta-llama/Llama-3.2-1B-Instruct",
    }
)
# The Hub sets SPACE_ID in every Space's environment.
ON_SPACES = bool(os.environ.get("SPACE_ID"))
# On Spaces the lesson's own model (1B, needs a GPU); on a laptop the 270M pair, whose base is the
# embedded model itself, so offline the fallback changes nothing but the aligned column.
DEFAULT_PAIR = "gemma-3-1b" if ON_SPACES else "gemma-3-270m"
