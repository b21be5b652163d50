"""What the SFT and DPO scripts share: arguments, data, model loading, Hub checks and model cards.

The scripts stay short (usage docstring, `main()`, `TrlParser` under `__main__`); this module holds
the steps they have in common, as plain functions.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, load_dataset

from shared.chat_templates import official_template
from shared.compute import cpu_has_fast_bf16
from shared.embedded import CACHE_DIR, EMBEDDED_ID, embedded_checkpoint_dir, load_embedded_tokenizer

logger = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_DIR / "train" / "data"
# Model names that are not Hub ids: the embedded Gemma 3 270M base, and a tiny random Gemma 3 for CI.
EMBEDDED_MODEL = EMBEDDED_ID
TINY_MODEL = "tiny:gemma3"


@dataclass
class PipelineArguments:
    """Our own settings, next to TRL's `SFTConfig`/`DPOConfig` and `ModelConfig`."""

    dataset_name: str = field(
        default=str(DATA_DIR / "sft.jsonl"),
        metadata={"help": "A Hub dataset id, or a local .jsonl file (paths relative to the repository)."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_format: str = field(
        default="conversational",
        metadata={
            "help": "`conversational` (messages / prompt-chosen-rejected) "
            "or `guanaco` (### Human / ### Assistant text)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    chat_template: str = field(
        default="gemma3", metadata={"help": "Official TRL template family used when the tokenizer has none."}
    )
    sft_adapter: str | None = field(
        default=None, metadata={"help": "DPO only: the SFT adapter (local path or Hub id) that DPO continues."}
    )
    eval_prompts: str | None = field(
        default=str(DATA_DIR / "heldout.jsonl"),
        metadata={"help": "Held-out prompts for the model card's evaluation table (never trained on)."},
    )
    eval_max_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N held-out prompts."})


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def tiny_gemma_config(tokenizer, width: int):
    """A 2-layer Gemma 3 text config `width` values wide with the real Gemma vocabulary: every code path
    of the real model, in milliseconds (the CI recipe's base, and the tests' tiny model)."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=width // 2,
        sliding_window=64,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def tiny_checkpoint_dir() -> Path:
    """A tiny random Gemma 3 with the real Gemma tokenizer, saved once: the CI recipe's base model."""
    from transformers import Gemma3ForCausalLM

    target = CACHE_DIR / "tiny-gemma3"
    if (target / "model.safetensors").is_file():
        return target
    tokenizer = load_embedded_tokenizer()
    torch.manual_seed(0)
    # 64-wide layers: bitsandbytes quantizes NF4 in blocks of 64 values, so every Linear quantizes.
    config = tiny_gemma_config(tokenizer, width=64)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    Gemma3ForCausalLM(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process saved the same seeded model first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    if name == EMBEDDED_MODEL:
        return str(embedded_checkpoint_dir())
    if name == TINY_MODEL:
        return str(tiny_checkpoint_dir())
    return name


def make_parser(config_class):
    """TRL's parser over our arguments, the trainer's config and `ModelConfig`, with device-aware
    defaults (TRL's bf16 default fails on a CPU without `use_cpu`). A recipe or a flag still
    overrides them (dataclass default < these < YAML < CLI)."""
    from trl import ModelConfig, TrlParser

    parser = TrlParser((PipelineArguments, config_class, ModelConfig))
    on_gpu = torch.cuda.is_available()
    # On a CPU with native bf16 (AVX512-BF16/AMX) QLoRA steps run ~3x faster in bf16 than in fp32
    # (measured: 270M model, 8 x 128 tokens, 5 s vs 15 s per step); elsewhere fp32.
    bf16 = on_gpu or cpu_has_fast_bf16()
    parser.set_defaults(bf16=bf16, use_cpu=not on_gpu, dtype="bfloat16" if bf16 else "float32")
    return parser


def load_tokenizer(model_name: str, family: str, training: bool):
    """The model's tokenizer; a base checkpoint without a template gets the official one from TRL.

    `training=True` uses TRL's `<family>_training` variant, whose `{% generation %}` markers give SFT
    its assistant-only loss mask. Saved adapters carry the plain official template.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model_name), trust_remote_code=False)
    if training or not tokenizer.chat_template:
        tokenizer.chat_template = official_template(family, training=training)
    return tokenizer


def load_base_model(model_args, quantization_config):
    """The frozen base, in 4-bit NF4 when the recipe asks for QLoRA."""
    from transformers import AutoModelForCausalLM

    kwargs = dict(
        revision=model_args.model_revision,
        dtype=getattr(torch, model_args.dtype),
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=False,
    )
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(model_args.model_name_or_path), **kwargs)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

_GUANACO_TURN = re.compile(r"###\s*(Human|Assistant):")


def guanaco_to_messages(text: str) -> list[dict]:
    """openassistant-guanaco keeps whole dialogues as `### Human: … ### Assistant: …` text."""
    parts = _GUANACO_TURN.split(text)
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        messages.append({"role": role, "content": content.strip()})
    return messages


def load_training_dataset(args: PipelineArguments) -> Dataset:
    name = args.dataset_name
    local = Path(name) if Path(name).is_absolute() else REPO_DIR / name
    if name.endswith(".jsonl") or local.is_file():
        if not local.is_file():
            raise ValueError(f"Dataset file not found: {local}")
        dataset = load_dataset("json", data_files=str(local), split="train")
    else:
        dataset = load_dataset(name, name=args.dataset_config, split=args.dataset_train_split)
    if args.dataset_format == "guanaco":
        dataset = dataset.map(lambda row: {"messages": guanaco_to_messages(row["text"])}, remove_columns=["text"])
    elif args.dataset_format != "conversational":
        raise ValueError(f"Unknown dataset_format {args.dataset_format!r}: use conversational or guanaco.")
    keep = {"messages", "prompt", "chosen", "rejected"}
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    return dataset


def load_eval_prompts(path: str | None, limit: int | None = None) -> list[dict]:
    """Held-out rows; with `limit`, taken in turn from each kind so a small sample still covers all."""
    if not path:
        return []
    file = Path(path) if Path(path).is_absolute() else REPO_DIR / path
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not limit:
        return rows
    by_kind: dict[str, list[dict]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    picked = [row for group in itertools.zip_longest(*by_kind.values()) for row in group if row is not None]
    return picked[:limit]


# --------------------------------------------------------------------------------------------
# The Hub
# --------------------------------------------------------------------------------------------


def check_can_push(training_args, token: str | None = None) -> None:
    """Fail before training, not after an hour, when the adapter could not be pushed.

    The token is `--hub_token` when given, else HF_TOKEN or the saved login through huggingface_hub
    itself; it is never printed, logged or saved here.
    """
    if not training_args.push_to_hub:
        return
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id user/name (where to push the adapter).")
    from shared.hub import hub_user

    # shared.hub.hub_user(token) checks an explicit --hub_token; without one, HF_TOKEN or the saved login.
    # A clear ValueError when no token, a refused one, offline or no network.
    user = hub_user(token) if token else hub_user()
    logger.info("Will push to %s as %s", training_args.hub_model_id, user)
