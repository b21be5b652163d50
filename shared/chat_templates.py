"""Official chat templates, read from the installed `trl` package.

TRL ships the templates of the major model families as `trl/chat_templates/<family>.jinja`, plus
`<family>_training.jinja` variants that wrap assistant turns in `{% generation %}` markers (what an
assistant-only SFT loss needs). We read that real data instead of keeping hand-written copies.
"""

from __future__ import annotations

import functools
from pathlib import Path

import trl

TRL_TEMPLATE_DIR = Path(trl.__file__).parent / "chat_templates"

# Which official template a tokenizer without one should use, by `config.model_type`.
# Base checkpoints (e.g. the embedded gemma-3-270m-pt) ship no chat template at all.
TEMPLATE_FOR_MODEL_TYPE = {
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "qwen2": "qwen2_5",
    "qwen3": "qwen3",
    "llama": "llama3_2",
    "phi3": "phi3",
}


def list_families() -> list[str]:
    """Names of the official (inference) templates TRL ships, e.g. `gemma3`, `llama3`, `qwen2_5`."""
    return sorted(p.stem for p in TRL_TEMPLATE_DIR.glob("*.jinja") if not p.stem.endswith("_training"))


@functools.cache
def official_template(family: str, training: bool = False) -> str:
    """The Jinja source of a family's official template (`training=True`: the generation-marked one)."""
    name = f"{family}_training" if training else family
    path = TRL_TEMPLATE_DIR / f"{name}.jinja"
    if not path.is_file():
        known = ", ".join(list_families())
        raise ValueError(f"No {'training ' if training else ''}template for family {family!r}. Known: {known}")
    return path.read_text(encoding="utf-8")


def family_for_model_type(model_type: str) -> str | None:
    """The official template family for a `config.model_type`, or None when we know of none."""
    return TEMPLATE_FOR_MODEL_TYPE.get(model_type)


def end_of_turn_token(tokenizer, chat_template: str) -> str | None:
    """The special token the template closes an assistant turn with (what the sampler stops on).

    Derived, not tabulated: render a one-turn conversation and take the first special token that
    follows the assistant's text. Gemma gives `<end_of_turn>`, Llama 3 `<|eot_id|>`, ChatML `<|im_end|>`.
    """
    marker = "Sure."
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    text = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)
    tail = text[text.rfind(marker) + len(marker):]
    special = set(tokenizer.all_special_tokens) | {
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special
    }
    for token in tokenizer.tokenize(tail):
        if token in special:
            return token
    return tokenizer.eos_token
