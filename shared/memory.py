"""How many parameters LoRA trains, and how much GPU memory fine-tuning needs — from real model configs.

    python -m shared.memory --model llama-3.2-1b --method full --precision bf16
    python -m shared.memory --model gemma-3-270m --method qlora --rank 16 --targets all-linear --json
    python -m shared.memory --model 4096x4096 --method lora --rank 16        # the lesson's single matrix

Where the numbers come from:
- The model is built empty on the `meta` device from its config (a bundled preset, a Hub id when the Hub is
  reachable, an uploaded config.json, or on the command line a local config.json), so parameter counts are
  exact and nothing is downloaded but the config.
- Trainable LoRA parameters are r·(d_in + d_out) per targeted linear layer, matched the way peft matches
  `target_modules`; tests check the totals equal `get_peft_model(...).get_nb_trainable_parameters()`.
- Weights, gradients and optimizer states are byte-exact for what PyTorch/bitsandbytes allocate (tests run a
  real optimizer step on tiny models and compare). Activations are a per-architecture list of the tensors
  autograd saves for backward, checked within ±15 % against `saved_tensors_hooks` measurements.

Every input is bounded before any work (see "Bounds" below): a config is size-capped before it is parsed,
every field the calculator or the model builder reads is range-checked before anything is built, and only
the Llama-style decoder families listed in SUPPORTED_MODEL_TYPES are built at all. Bad input is one
`ValueError` sentence.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import re
import stat
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from shared.cli import OneLineParser, refuse
from shared.hub import hub_or_cache, shown

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "data" / "model_configs"
GB = 10**9  # the lesson speaks decimal gigabytes ("2 GB of weights for 1B parameters in 16-bit")
GIB = 2**30

METHODS = ("full", "lora", "qlora")
PRECISIONS = ("fp32", "bf16", "bf16-mixed")
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd")
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
TARGET_CHOICES = {"all-linear": "every linear layer except the output head", "attention": "q, k, v, o projections"}

# --------------------------------------------------------------------------------------------
# Bounds: checked before anything is parsed, built or allocated. Each sits well above the largest
# published model, so no real config is refused, while a hostile one cannot buy unbounded work.
# --------------------------------------------------------------------------------------------

# Real config.json files are a few kilobytes (multimodal ones with long rope tables under 20 KB).
MAX_CONFIG_BYTES = 2**20
# Real configs nest three or four levels (config → text_config → rope_parameters → per-layer-type dict).
MAX_JSON_DEPTH = 16
# Decoder layers summed over every tower of a model (text and vision). The deepest published decoder has
# 126 (Llama 3.1 405B). Building the meta model costs time per layer, so this bounds the build time
# (benchmarks/bench_memory.py --limits times the largest config these bounds allow).
MAX_LAYERS = 512
# Any layer width: hidden, intermediate, heads × head_dim, a square matrix side, and the LoRA rank. The widest
# published layers are 53,248 (Llama 3.1 405B's MLP) and hidden sizes reach 16,384 (2.5× and 8× below).
MAX_WIDTH = 2**17  # 131,072
# The largest published vocabulary is Gemma 3's 262,208 entries (8× below).
MAX_VOCAB = 2**21  # 2,097,152
# Position counts (max_position_embeddings, sliding windows): the longest advertised context is
# Llama 4 Scout's 10,485,760 tokens.
MAX_POSITIONS = 2**24  # 16,777,216
# Training sequence length (tokens): the longest context open models are trained at is ~1M (Qwen2.5-1M's
# 1,010,000), on many devices; one device's step is far shorter.
MAX_SEQ_LEN = 2**20  # 1,048,576
MAX_BATCH = 2**16  # sequences per step on one device; real micro-batches are 1 to a few hundred
# Tokens in one step on one device (batch × sequence length): the largest pretraining runs use ~16M tokens
# per step summed over thousands of GPUs.
MAX_TOKENS = 2**24
MAX_ALPHA = 2**20  # LoRA alpha; common values are r to 2r, so ≤ 2 × MAX_WIDTH
MAX_SOURCE_CHARS = 256  # a model field: a preset, "DxD", or a Hub id (at most 96 + 1 + 96 characters)
MAX_PATH_CHARS = 4096  # on the command line it may be a local path: Linux's PATH_MAX
MAX_TARGET_CHARS = 2048  # the target-modules field
MAX_TARGETS = 64  # module names in it (a model has fewer than ten kinds of linear layer)
_TARGET_RE = re.compile(r"^[A-Za-z0-9_.]{1,128}$")  # a module name or a dotted suffix of one

# The architectures the calculator builds: Llama-style decoders (attention q/k/v/o, a gated MLP
# gate/up/down) whose every size-bearing config field is checked below. Anything else (MoE, state-space,
# encoder-decoder, other vision towers) is refused rather than built unbounded or estimated wrongly.
SUPPORTED_MODEL_TYPES = (
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "granite",
    "llama",
    "mistral",
    "olmo2",
    "qwen2",
    "qwen3",
    "smollm3",
)
# Sub-configs a supported type may carry, and the one model type each must be.
_SUB_CONFIG_TYPES = {"gemma3": {"text_config": "gemma3_text", "vision_config": "siglip_vision_model"}}

# Config keys that would change which code runs when the model is built (attention kernels fetched from the
# Hub, quantizers, the process-wide default dtype) rather than its shape: dropped before the config is read.
_IGNORED_KEYS = frozenset(
    {
        "attn_implementation",
        "_attn_implementation",
        "experts_implementation",
        "_experts_implementation",
        "quantization_config",
        "auto_map",
        "dtype",
        "torch_dtype",
    }
)

# Size-bearing fields, wherever they appear (top level, text_config, vision_config): (low, high, may be null).
_COUNT_FIELDS: dict[str, tuple[int, int, bool]] = {
    "num_hidden_layers": (1, MAX_LAYERS, False),
    "max_window_layers": (0, MAX_LAYERS, True),
    "hidden_size": (1, MAX_WIDTH, False),
    "intermediate_size": (1, MAX_WIDTH, False),
    "num_attention_heads": (1, MAX_WIDTH, False),
    "num_key_value_heads": (1, MAX_WIDTH, True),
    "head_dim": (1, MAX_WIDTH, True),
    "vocab_size": (1, MAX_VOCAB, False),
    "max_position_embeddings": (1, MAX_POSITIONS, True),
    "sliding_window": (1, MAX_POSITIONS, True),
    "image_size": (1, MAX_WIDTH, False),
    "patch_size": (1, MAX_WIDTH, False),
    "num_channels": (1, MAX_WIDTH, False),
    "mm_tokens_per_image": (1, MAX_WIDTH, True),
}
# Per-layer lists: one entry per layer at most.
_LAYER_LIST_FIELDS = ("layer_types", "no_rope_layers")
_INT_LIMIT = 2**63  # any other integer (token ids, rope settings) must fit the int64 torch would store it in

# A square matrix typed as "4096x4096" (or "4096×4096"): the lesson's one attention projection.
_SQUARE_RE = re.compile(r"^\s*([0-9]{1,7})\s*[x×*]\s*([0-9]{1,7})\s*$")

# bitsandbytes NF4: one 4-bit code per weight, packed two per byte; an absmax scale per block of 64 weights.
NF4_BLOCK = 64
# Double quantization stores those fp32 scales as 8-bit, with one fp32 scale per 256 of them.
DQ_BLOCK = 256
NF4_CODE_BYTES = 16 * 4  # each quantized tensor keeps its own 16-entry fp32 NF4 code table
DQ_CODE_BYTES = 256 * 4 + 4  # ...plus, with double quant, a 256-entry fp32 table and an fp32 offset

# bitsandbytes 8-bit optimizers: uint8 states, an fp32 absmax per 256 values; tensors under 4096 values
# stay 32-bit; the two 256-entry fp32 quantization maps are shared by all tensors.
OPT8_BLOCK = 256
OPT8_MIN_SIZE = 4096
OPT8_QMAP_BYTES = 2 * 256 * 4

# Usable memory of common GPUs, as nvidia-smi reports it (MiB), so "fits" means fits in practice.
GPUS: dict[str, int] = {
    "T4 (16 GB)": 15_360 * 2**20,
    "L4 (24 GB)": 23_034 * 2**20,
    "A10G (24 GB)": 23_028 * 2**20,
    "A100 40GB": 40_960 * 2**20,
    "ZeroGPU slice (half an H200, 70 GB)": 70 * GIB,
    "A100 80GB": 81_920 * 2**20,
    "H100 80GB": 81_559 * 2**20,
}
# The CUDA context and cuBLAS workspaces: memory the process holds that torch.cuda.max_memory_allocated
# does not count. About 0.5 GiB on recent GPUs and drivers.
CUDA_CONTEXT_BYTES = GIB // 2


# --------------------------------------------------------------------------------------------
# Checking numbers a visitor typed
# --------------------------------------------------------------------------------------------


def _amount(n: int) -> str:
    """An integer for a message: grouped digits, and never thousands of digits."""
    return f"{n:,}" if abs(n) < 10**15 else ("far more" if n > 0 else "far less")


def whole_number(value, name: str, high: int, low: int = 1) -> int:
    """`value` as an int in [low, high], from an int, a whole float (web forms send 16.0) or digits.

    `name` starts the one-sentence ValueError, e.g. "The LoRA rank".
    """
    if low == 1:
        expected = f"{name} must be a positive whole number up to {high:,}"
    else:
        expected = f"{name} must be a whole number from {low:,} to {high:,}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{expected}; it is empty.")
    if isinstance(value, bool):
        raise ValueError(f"{expected}, not {value}.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,18}\s*", value):
        number = int(value)
    else:
        raise ValueError(f"{expected}, not {shown(value)[:40]}.")
    if not low <= number <= high:
        raise ValueError(f"{expected}; it is {_amount(number)}.")
    return number


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# Model configs: presets, Hub ids, uploads (and local files from the command line), and the square matrix
# --------------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    """The bundled presets (published config.json values; they work offline)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _unknown_model(source: str, local_files: bool) -> ValueError:
    # One sentence for every string that is not a preset or a Hub id, whether or not a file of that name
    # exists on the server: the web app must not answer "is there a file at this path?".
    where = "a path to a config.json" if local_files else "upload a config.json"
    return ValueError(
        f"Unknown preset `{shown(source)}`: choose one of {', '.join(preset_names())}, "
        f"a Hub id like org/name, a matrix like 4096x4096, or {where}."
    )


def _clean_source(source, local_files: bool = False) -> str:
    if source is not None and not isinstance(source, str):
        raise ValueError("The model must be a text: a preset name, a Hub id like org/name, or a matrix like 4096x4096.")
    source = (source or "").strip()
    if not source:
        raise ValueError("Choose a preset, type a Hub id, or upload a config.json.")
    if len(source) > (MAX_PATH_CHARS if local_files else MAX_SOURCE_CHARS):
        raise ValueError(f"The model name is {len(source):,} characters long; presets and Hub ids are under 200.")
    return source


def is_hub_id(source: str) -> bool:
    """An `org/name` repo id by huggingface_hub's own rules (checked before any request is made)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if source.count("/") != 1:
        return False
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def load_config(source: str, *, local_files: bool = False):
    """A transformers config from a preset name or a Hub id (config.json only).

    With `local_files=True` (the command line, run by the machine's own user) a path to a config.json is
    read too. The web app never passes it: a visitor's text is never opened as a server path.
    """
    source = _clean_source(source, local_files)
    presets = {name.lower(): name for name in preset_names()}
    if source.lower() in presets:  # a lookup, not a path join: "../x" can never reach a file
        return read_config_file(CONFIG_DIR / f"{presets[source.lower()]}.json", label=source)
    if local_files and (source.endswith(".json") or _is_file(source)):
        return read_config_file(Path(source))
    if is_hub_id(source):
        return _hub_config(source)
    raise _unknown_model(source, local_files)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number a config can hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def parse_config_json(raw: bytes, label: str) -> dict:
    """Bytes of a config.json → dict, refusing oversized, deeply nested or non-finite input first."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"{label} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; a real config.json is a few KB.")
    try:
        text = raw.decode("utf-8")
        # NaN, Infinity and 1e999 are refused while parsing; integers past 4,300 digits raise ValueError.
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:  # the C parser refuses deep nesting by raising this
        raise ValueError(f"{label} is nested too deeply to be a config.json.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{label} is not valid JSON ({_one_line(exc)[:80]}).") from None
    return data


def read_config_file(path: Path, label: str | None = None):
    """A config.json on disk, read at most MAX_CONFIG_BYTES (+1 to notice a bigger one).

    Messages name the file by `label` (default: its base name), never by its full path.
    """
    path = Path(path)
    label = shown(label or path.name)
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
        if regular:  # a FIFO or a device would block or never end
            with open(path, "rb") as handle:
                raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"No such config file: {label}.") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise ValueError(f"{label} could not be read ({type(exc).__name__}).") from None
    if not regular:
        raise ValueError(f"{label} is not a regular file.")
    return config_from_dict(parse_config_json(raw, label), label)


def _walk_dicts(data: dict, label: str):
    """Every dict in a parsed config with its depth, iteratively (no recursion a hostile file could exhaust)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{label} nests more than {MAX_JSON_DEPTH} levels deep; a real config.json has 3 or 4.")
        if isinstance(node, dict):
            yield node
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _check_number_field(container: dict, key: str, label: str) -> None:
    low, high, nullable = _COUNT_FIELDS[key]
    value = container[key]
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        got = _amount(value) if isinstance(value, int) and not isinstance(value, bool) else shown(repr(value))[:40]
        raise ValueError(f"{label}: {key} must be a whole number from {low:,} to {high:,}, not {got}.")


def check_config_dict(data, label: str) -> dict:
    """Refuse a parsed config before transformers sees it: its type, depth, every size-bearing field.

    Returns a copy without the keys that would change which code runs (attention kernels, quantizers, dtype).
    """
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f'{label} is not a transformers config.json (it has no "model_type").')
    model_type = data["model_type"]
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{label} is a `{shown(model_type)[:40]}` model; the calculator builds the Llama-style decoders "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    layers = 0
    for node in _walk_dicts(data, label):
        for key, value in node.items():
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_LIMIT:
                raise ValueError(f"{label}: {shown(key)[:40]} is too large a number for a config.")
            if key in _COUNT_FIELDS:
                _check_number_field(node, key, label)
            if key == "num_hidden_layers":
                layers += node[key]
            if key in _LAYER_LIST_FIELDS and value is not None:
                if not isinstance(value, list) or len(value) > MAX_LAYERS:
                    raise ValueError(f"{label}: {key} must be a list with one entry per layer.")
            if key == "tie_word_embeddings" and not isinstance(value, (bool, type(None))):
                raise ValueError(f"{label}: tie_word_embeddings must be true or false.")
    if layers > MAX_LAYERS:
        raise ValueError(f"{label} has {layers:,} layers in all; the calculator builds at most {MAX_LAYERS}.")
    allowed_subs = _SUB_CONFIG_TYPES.get(model_type, {})
    for key, sub_type in allowed_subs.items():
        sub = data.get(key)
        if sub is None:
            continue
        if not isinstance(sub, dict) or sub.get("model_type", sub_type) != sub_type:
            raise ValueError(f"{label}: {key} must be a `{sub_type}` config.")
    for key in ("text_config", "vision_config", "decoder", "generator", "encoder"):
        if key not in allowed_subs and key in data:
            raise ValueError(f"{label}: a `{model_type}` config has no {key}.")

    def without_ignored(node):
        if isinstance(node, dict):
            return {k: without_ignored(v) for k, v in node.items() if k not in _IGNORED_KEYS}
        return node

    # Depth is bounded above, so this recursion is too.
    return without_ignored(data)


def config_from_dict(data: dict, source: str = "This config"):
    """A checked transformers config from a parsed config.json (see check_config_dict)."""
    from transformers import AutoConfig

    source = shown(source)
    data = check_config_dict(data, source)
    kwargs = {k: v for k, v in data.items() if k != "model_type"}
    try:
        config = AutoConfig.for_model(data["model_type"], **kwargs)
    except Exception as exc:  # a config class may raise anything on odd values; all mean the same here
        raise ValueError(f"{source} could not be read as a model config ({_one_line(exc)[:160]}).") from None
    text_shape(config, source)  # the relations between fields, with the class defaults filled in
    return config


def _hub_config(repo_id: str):
    """config.json of a Hub repo (or from the local Hub cache when the Hub is unreachable), size-capped.

    hf_hub_download only ever reads the Hub or its cache: unlike AutoConfig.from_pretrained, a repo id that
    happens to name a folder on the server is never read from that folder.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    def load(local_only: bool) -> tuple[str | None, int | None]:
        try:
            if not local_only:  # ask the size first, so an oversized file is never downloaded
                size = get_hf_file_metadata(hf_hub_url(repo_id, "config.json")).size
                if size is not None and size > MAX_CONFIG_BYTES:
                    return None, size
            return hf_hub_download(repo_id, "config.json", local_files_only=local_only), None
        except EntryNotFoundError as exc:
            # shared.hub explains this wording as "not a transformers model repository".
            raise OSError("does not appear to have a file named config.json") from exc

    try:
        path, size = hub_or_cache(repo_id, load)
    except ValueError as exc:
        reason = str(exc)
        raise ValueError(reason[0].upper() + reason[1:] + ".") from None
    if path is None:
        raise ValueError(f"The config.json of `{shown(repo_id)}` is {size:,} bytes; a real one is a few KB.")
    return read_config_file(Path(path), label=repo_id)


# --------------------------------------------------------------------------------------------
# Architecture: what the meta-device model contains
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    bias: bool


@dataclass(frozen=True)
class TextShape:
    """The decoder dimensions the activation estimate needs (from the text config)."""

    family: str  # "gemma3" or "llama" (Llama, Mistral, Qwen2, SmolLM2 and, approximately, others)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    sliding_window: int | None
    layer_types: tuple[str, ...]


@dataclass(frozen=True)
class Architecture:
    """Everything the estimate needs to know about a model, read from its empty (meta) instance."""

    label: str
    model_type: str
    param_numels: tuple[int, ...]  # every distinct parameter tensor (tied weights once)
    linears: tuple[Linear, ...]  # every nn.Linear, the output head included
    output_head: str | None  # the name of the LM head (never quantized, not in "all-linear")
    text: TextShape | None  # None for the lesson's single matrix: no activations to model

    @property
    def total_params(self) -> int:
        return sum(self.param_numels)


def square_matrix(d_out: int, d_in: int | None = None) -> Architecture:
    """The lesson's case: one d×d weight matrix (W in y = W·x), nothing else."""
    d_in = d_out if d_in is None else d_in
    for side in (d_out, d_in):
        if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_WIDTH:
            raise ValueError(f"Matrix sides must be whole numbers from 1 to {MAX_WIDTH:,}, e.g. 4096x4096.")
    return Architecture(
        f"{d_out}×{d_in} matrix", "matrix", (d_out * d_in,), (Linear("W", d_in, d_out, False),), None, None
    )


def _field(config, name: str, label: str, high: int, low: int = 1, default=None) -> int:
    value = getattr(config, name, None)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        got = "missing" if value is None else shown(repr(value))[:40]
        raise ValueError(f"{label}: {name} must be a whole number from {low:,} to {high:,} ({got}).")
    return value


def text_shape(config, label: str = "This config") -> TextShape:
    """The decoder's dimensions, each checked against its bound and against the others."""
    from transformers import PreTrainedConfig

    text = config.get_text_config()
    if not isinstance(text, PreTrainedConfig) or text.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{label} has no Llama-style text decoder the calculator can build.")
    hidden = _field(text, "hidden_size", label, MAX_WIDTH)
    heads = _field(text, "num_attention_heads", label, hidden)
    explicit_head_dim = getattr(text, "head_dim", None)
    if explicit_head_dim is None and hidden % heads:
        raise ValueError(f"{label}: num_attention_heads ({heads:,}) must divide hidden_size ({hidden:,}).")
    head_dim = _field(text, "head_dim", label, MAX_WIDTH, default=hidden // heads)
    if heads * head_dim > MAX_WIDTH:
        raise ValueError(f"{label}: the attention width heads × head_dim must be at most {MAX_WIDTH:,}.")
    kv_heads = _field(text, "num_key_value_heads", label, heads, default=heads)
    if heads % kv_heads:
        raise ValueError(f"{label}: num_key_value_heads ({kv_heads:,}) must divide num_attention_heads ({heads:,}).")
    layers = _field(text, "num_hidden_layers", label, MAX_LAYERS)
    layer_types = tuple(getattr(text, "layer_types", None) or ())
    if layer_types and len(layer_types) != layers:
        raise ValueError(f"{label}: layer_types must have one entry per layer ({layers}).")
    if not all(isinstance(kind, str) for kind in layer_types):
        raise ValueError(f"{label}: layer_types must be names such as full_attention.")
    sliding = getattr(text, "sliding_window", None)
    if text.model_type == "qwen2" and not getattr(text, "use_sliding_window", False):
        sliding = None
    if sliding is not None:
        sliding = _field(text, "sliding_window", label, MAX_POSITIONS)
    model_type = text.model_type
    family = "gemma3" if model_type.startswith("gemma3") else "llama"
    if family == "llama" and model_type not in ("llama", "mistral", "qwen2"):
        logger.info("No activation model for %s: using the Llama one (same tensors in most decoders)", model_type)
    return TextShape(
        family=family,
        hidden=hidden,
        intermediate=_field(text, "intermediate_size", label, MAX_WIDTH),
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=_field(text, "vocab_size", label, MAX_VOCAB),
        sliding_window=sliding,
        layer_types=layer_types,
    )


def build_meta_model(config):
    """The model with every weight on the `meta` device: shapes only, no memory, nothing downloaded.

    Call it with a config from config_from_dict (checked): the build's cost grows with the layer count.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    # The dtype is pinned: one from the config would switch torch's process-wide default dtype while the model
    # is built (other threads of the server would then create tensors in it). The attention implementation is
    # transformers' default (check_config_dict dropped any the config named, which could fetch Hub kernels).
    options = dict(trust_remote_code=False, dtype=torch.float32)
    # torch.device("meta") rather than accelerate's init_empty_weights: the latter leaves tied embeddings
    # untied in transformers 5, which would double-count the LM head of tied models.
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, **options)
        except ValueError:
            model = AutoModelForImageTextToText.from_config(config, **options)
    model.tie_weights()
    return model


def architecture_from_model(model, label: str, text: TextShape | None = None) -> Architecture:
    import torch

    seen: set[int] = set()
    numels = []
    for p in model.parameters():  # .parameters() already yields tied weights once
        if id(p) not in seen:
            seen.add(id(p))
            numels.append(p.numel())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = None
    linears = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linears.append(Linear(name, module.in_features, module.out_features, module.bias is not None))
            if module is head:
                head_name = name
    text = text or text_shape(model.config, label)
    return Architecture(label, model.config.model_type, tuple(numels), tuple(linears), head_name, text)


@functools.lru_cache(maxsize=32)
def _architecture_cached(config_json: str, label: str) -> Architecture:
    config = config_from_dict(json.loads(config_json), label)  # checked before anything is built
    shape = text_shape(config, label)
    try:
        model = build_meta_model(config)
    except Exception as exc:  # fields in bounds can still disagree (e.g. a token id past the vocabulary)
        logger.info("Could not build %s: %s", shown(label), type(exc).__name__)
        raise ValueError(
            f"{label} could not be built as a model ({type(exc).__name__}: {_one_line(exc)[:120]})."
        ) from None
    return architecture_from_model(model, label, shape)


def architecture_from_config(config, label: str | None = None) -> Architecture:
    label = shown(label or getattr(config, "name_or_path", "") or config.model_type)
    # Cached by the config's JSON: building a large skeleton takes a while, and Architecture is immutable.
    return _architecture_cached(config.to_json_string(use_diff=False), label)


def resolve_model(source: str, *, local_files: bool = False) -> Architecture:
    """Preset name, Hub id or "DxD" → Architecture; with `local_files`, a config.json path too (CLI only)."""
    source = _clean_source(source, local_files)
    match = _SQUARE_RE.match(source)
    if match:
        return square_matrix(int(match.group(1)), int(match.group(2)))
    config = load_config(source, local_files=local_files)
    return architecture_from_config(config, label=source)


def resolve_upload(path, name: str | None = None) -> Architecture:
    """An uploaded config.json (a file the web server saved): messages and the result name only `name`
    (default: the file's base name), never the server's path."""
    label = shown(name or Path(path).name or "The uploaded config")
    config = read_config_file(Path(path), label=label)
    return architecture_from_config(config, label=label)


# --------------------------------------------------------------------------------------------
# LoRA parameter counts
# --------------------------------------------------------------------------------------------


def parse_targets(targets: str | list[str]) -> str | list[str]:
    """ "all-linear", "attention", or module names as a list or comma-separated ("q_proj,v_proj"), bounded."""
    if isinstance(targets, (list, tuple)):
        if len(targets) > MAX_TARGETS or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"Give at most {MAX_TARGETS} LoRA target module names, as text.")
        targets = ",".join(targets)
    if targets is not None and not isinstance(targets, str):
        raise ValueError("Give LoRA target modules as text: all-linear, attention, or names like q_proj,v_proj.")
    text = (targets or "").strip()
    if len(text) > MAX_TARGET_CHARS:
        raise ValueError(f"The LoRA target list is {len(text):,} characters long; at most {MAX_TARGET_CHARS:,}.")
    if text.lower() == "all-linear":
        return "all-linear"
    if text.lower() in ("attention", "attention-only"):
        return list(ATTENTION_TARGETS)
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))  # unique, in order
    if not names:
        raise ValueError("Give LoRA target modules: all-linear, attention, or names like q_proj,v_proj.")
    if len(names) > MAX_TARGETS:
        raise ValueError(f"Give at most {MAX_TARGETS} LoRA target module names; this list has {len(names):,}.")
    for name in names:
        if not _TARGET_RE.match(name):
            raise ValueError(
                f"`{shown(name)[:40]}` is not a module name: use letters, digits, _ and dots, like q_proj."
            )
    return names


def match_targets(arch: Architecture, targets: str | list[str]) -> list[Linear]:
    """The linear layers peft wraps for `target_modules`, with peft's own matching rules."""
    targets = parse_targets(targets)
    if targets == "all-linear":
        # peft's "all-linear": every nn.Linear except the model's output embedding (the LM head).
        matched = [lin for lin in arch.linears if lin.name != arch.output_head]
    else:
        # peft: a module matches a name in the list when its full name equals it or ends with "." + it.
        # Checked as a set lookup of each name's dotted suffixes: linear in the number of layers, whatever
        # the length of the list.
        wanted = set(targets)

        def wanted_suffix(name: str) -> bool:
            parts = name.split(".")
            return any(".".join(parts[i:]) in wanted for i in range(len(parts)))

        matched = [lin for lin in arch.linears if wanted_suffix(lin.name)]
    if not matched:
        names = sorted({lin.name.rsplit(".", 1)[-1] for lin in arch.linears})
        asked = shown(",".join(targets))
        raise ValueError(f"The targets {asked} match no linear layer; this model has: {', '.join(names)}.")
    return matched


@dataclass(frozen=True)
class ModuleCount:
    """LoRA on one kind of projection: A is (r × d_in), B is (d_out × r)."""

    module: str
    count: int
    d_in: int
    d_out: int
    params_each: int
    params: int


def module_kind(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    return f"vision {leaf}" if "vision" in name else leaf


def lora_trainable_params(linears: list[Linear], rank: int) -> tuple[int, list[ModuleCount]]:
    """Total LoRA parameters, and per module kind: r·(d_in + d_out) each — 2·d·r only when square."""
    whole_number(rank, "The LoRA rank (typical: 8, 16, 64)", MAX_WIDTH)
    groups: dict[tuple[str, int, int], int] = {}
    for lin in linears:
        key = (module_kind(lin.name), lin.in_features, lin.out_features)
        groups[key] = groups.get(key, 0) + 1
    rows = [
        ModuleCount(kind, n, d_in, d_out, rank * (d_in + d_out), n * rank * (d_in + d_out))
        for (kind, d_in, d_out), n in groups.items()
    ]
    return sum(r.params for r in rows), rows


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSetup:
    method: str = "lora"  # full | lora | qlora
    precision: str = "bf16"  # fp32 | bf16 (bf16 weights+grads, fp32 AdamW states) | bf16-mixed (AMP)
    optimizer: str = "adamw"
    rank: int = 16
    alpha: float | None = None  # LoRA scaling is alpha/rank; memory does not depend on it
    targets: str = "all-linear"
    batch_size: int = 1
    seq_len: int = 1024
    gradient_checkpointing: bool = False
    double_quant: bool = True  # QLoRA only

    @classmethod
    def from_form(
        cls, method, precision, optimizer, rank, alpha, targets, batch_size, seq_len, checkpointing, double_quant
    ) -> "TrainingSetup":
        """A checked setup from the calculator form's loosely typed values (16.0 for 16, None for an empty box),
        named and ordered as the form sends them: the fields' order, `checkpointing` for gradient checkpointing."""
        if alpha is not None and not isinstance(alpha, bool) and isinstance(alpha, (int, float)) and alpha == 0:
            alpha = None  # an empty or zero alpha box means the default, 2r
        setup = cls(
            method=method,
            precision=precision,
            optimizer=optimizer,
            rank=whole_number(rank, "The LoRA rank", MAX_WIDTH),
            alpha=alpha,
            targets=targets,
            batch_size=whole_number(batch_size, "The batch size", MAX_BATCH),
            seq_len=whole_number(seq_len, "The sequence length (tokens)", MAX_SEQ_LEN),
            gradient_checkpointing=bool(checkpointing),
            double_quant=bool(double_quant),
        )
        setup.validate()
        return setup

    def validate(self) -> None:
        """Every field within its bound (see "Bounds"), before any work is done with it."""
        for name, value, choices in (
            ("method", self.method, METHODS),
            ("precision", self.precision, PRECISIONS),
            ("optimizer", self.optimizer, OPTIMIZERS),
        ):
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"Unknown {name} `{shown(value)[:40]}`: choose one of {', '.join(choices)}.")
        whole_number(self.rank, "The LoRA rank (typical: 8, 16, 64)", MAX_WIDTH)
        whole_number(self.batch_size, "The batch size", MAX_BATCH)
        whole_number(self.seq_len, "The sequence length (tokens)", MAX_SEQ_LEN)
        for name, value in (("rank", self.rank), ("batch size", self.batch_size), ("sequence length", self.seq_len)):
            if not isinstance(value, int) or isinstance(value, bool):  # whole floats pass whole_number
                raise ValueError(f"The {name} must be an integer.")
        if self.batch_size * self.seq_len > MAX_TOKENS:
            raise ValueError(
                f"Batch size × sequence length is {self.batch_size * self.seq_len:,} tokens; one step on one "
                f"device is at most {MAX_TOKENS:,} here."
            )
        if self.alpha is not None:
            ok = isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool)
            if not ok or not math.isfinite(self.alpha) or not 0 < self.alpha <= MAX_ALPHA:
                raise ValueError(f"LoRA alpha must be a positive number up to {MAX_ALPHA:,} (or empty for 2r).")
        for name, value in (
            ("gradient_checkpointing", self.gradient_checkpointing),
            ("double_quant", self.double_quant),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false.")
        parse_targets(self.targets)


@dataclass
class MemoryEstimate:
    model: str
    setup: TrainingSetup
    total_params: int  # the base model's parameters
    trainable_params: int
    trainable_percent: float  # peft's definition: trainable / (base + adapter) parameters
    modules: list[ModuleCount]
    bytes: dict[str, int]  # weights, quant_constants, gradients, optimizer, activations, overhead, total
    activation_parts: dict[str, int] = field(default_factory=dict)
    overhead_parts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fits(self) -> dict[str, bool]:
        return {gpu: self.bytes["total"] <= capacity for gpu, capacity in GPUS.items()}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["fits"] = self.fits()
        return data


def _weight_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else 4  # bf16-mixed keeps fp32 master weights


def _nf4_bytes(numel: int, double_quant: bool) -> tuple[int, int]:
    """(packed 4-bit weight bytes, quantization-constant bytes) for one bitsandbytes Params4bit."""
    blocks = math.ceil(numel / NF4_BLOCK)
    if double_quant:
        constants = blocks + 4 * math.ceil(blocks / DQ_BLOCK) + NF4_CODE_BYTES + DQ_CODE_BYTES
    else:
        constants = 4 * blocks + NF4_CODE_BYTES
    return (numel + 1) // 2, constants


def optimizer_state_bytes(numels: list[int], optimizer: str, params_fp32: bool) -> int:
    """Bytes the optimizer holds after its first step, for trainable tensors of these sizes.

    adamw: two fp32 moments (8 B/param). torch.optim.AdamW keeps them in the parameter's dtype, so for fp32
    parameters it is torch's AdamW, whose `step` is a 4-byte fp32 tensor per parameter; for bf16 parameters
    (the lesson's 2+2+8) it is bitsandbytes' 32-bit AdamW, which keeps fp32 moments and a Python-int step.
    """
    if optimizer == "sgd":
        return 0  # plain SGD (no momentum) keeps no state
    if optimizer in ("adamw", "paged-adamw"):
        torch_step = 4 * len(numels) if optimizer == "adamw" and params_fp32 else 0
        return 8 * sum(numels) + torch_step
    total = 0
    for n in numels:  # 8-bit AdamW (bitsandbytes; paged or not, same bytes)
        if n < OPT8_MIN_SIZE:
            total += 8 * n
        else:
            total += 2 * n + 2 * 4 * math.ceil(n / OPT8_BLOCK)
    if any(n >= OPT8_MIN_SIZE for n in numels):
        total += OPT8_QMAP_BYTES
    return total


def _lora_tensor_numels(linears: list[Linear], rank: int) -> list[int]:
    return [n for lin in linears for n in (rank * lin.in_features, lin.out_features * rank)]


def estimate_memory(arch: Architecture, setup: TrainingSetup) -> MemoryEstimate:
    """The full memory bill of one training step, in bytes, with exact parameter counts."""
    setup.validate()
    notes = []
    base = arch.total_params
    if setup.method == "full":
        trainable_numels = list(arch.param_numels)
        targeted: list[Linear] = []
        modules: list[ModuleCount] = []
    else:
        targeted = match_targets(arch, setup.targets)
        # B·A has rank at most min(d_in, d_out): a larger r adds parameters to every layer but no capacity.
        widest = max(min(lin.in_features, lin.out_features) for lin in targeted)
        if setup.rank > widest:
            raise ValueError(
                f"The LoRA rank {setup.rank:,} is larger than the widest adapted layer allows "
                f"(min(d_in, d_out) = {widest:,}): choose r from 1 to {widest:,}."
            )
        _, modules = lora_trainable_params(targeted, setup.rank)
        trainable_numels = _lora_tensor_numels(targeted, setup.rank)
    trainable = sum(trainable_numels)
    percent = 100.0 * trainable / (base if setup.method == "full" else base + trainable)

    wb = _weight_bytes(setup.precision)
    quant_constants = 0
    if setup.method == "full":
        weights = wb * base
        grad_bytes = wb
        params_fp32 = wb == 4
    else:
        # peft creates the adapters in fp32 even on a bf16 base (autocast_adapter_dtype=True): 4 B each,
        # with fp32 gradients, and torch's AdamW for them.
        frozen_bytes = 4 if setup.precision == "fp32" else 2
        grad_bytes, params_fp32 = 4, True
        if setup.method == "lora":
            weights = frozen_bytes * base + 4 * trainable
        else:
            # bitsandbytes replaces every nn.Linear but the LM head with Linear4bit; embeddings, norms and
            # biases stay in 16-bit.
            quantized = [lin for lin in arch.linears if lin.name != arch.output_head]
            packed = 0
            for lin in quantized:
                p, c = _nf4_bytes(lin.in_features * lin.out_features, setup.double_quant)
                packed += p
                quant_constants += c
            quantized_numel = sum(lin.in_features * lin.out_features for lin in quantized)
            weights = packed + frozen_bytes * (base - quantized_numel) + 4 * trainable
            notes.append(
                f"4-bit NF4 linear layers: {packed / GB:.2f} GB instead of {2 * quantized_numel / GB:.2f} GB "
                "in 16-bit; embeddings, norms and the LM head stay 16-bit (peft's prepare_model_for_kbit_training "
                "would upcast them to fp32)."
            )
    gradients = grad_bytes * trainable
    optimizer = optimizer_state_bytes(trainable_numels, setup.optimizer, params_fp32)
    if setup.optimizer.startswith("paged"):
        notes.append("Paged optimizer states can spill to CPU RAM under memory pressure instead of failing.")

    activation_parts, overhead_parts = {}, {}
    if arch.text is not None:
        activation_parts = activation_bytes(arch, setup, targeted)
        tokens = setup.batch_size * setup.seq_len
        # Loss-time temporaries beyond what is saved: in backward the gradient of the fp32 log-softmax and of
        # the logits (4 + 4 B per token per vocabulary entry) exist while every activation is still held.
        overhead_parts["loss temporaries (logits gradients)"] = tokens * arch.text.vocab * 8
        if setup.precision == "bf16-mixed" and setup.method == "full":
            # autocast caches a bf16 copy of every trainable weight it casts, for the whole forward+backward.
            overhead_parts["autocast bf16 weight copies"] = 2 * sum(
                lin.in_features * lin.out_features for lin in arch.linears
            )
        if setup.precision == "bf16-mixed":
            notes.append("Under autocast, activations are estimated with the bf16 layout; that case is not measured.")
    overhead_parts["CUDA context and workspaces"] = CUDA_CONTEXT_BYTES
    parts = {
        "weights": weights,
        "quant_constants": quant_constants,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": sum(activation_parts.values()),
        "overhead": sum(overhead_parts.values()),
    }
    parts["total"] = sum(parts.values())
    return MemoryEstimate(
        arch.label, setup, base, trainable, percent, modules, parts, activation_parts, overhead_parts, notes
    )


def compare_methods(arch: Architecture, setup: TrainingSetup) -> list[MemoryEstimate]:
    """Full fine-tuning, LoRA and QLoRA with the same model, data shape and optimizer."""
    out = []
    for method in METHODS:
        s = TrainingSetup(**{**asdict(setup), "method": method})
        out.append(estimate_memory(arch, s))
    return out


# --------------------------------------------------------------------------------------------
# Activations: the tensors autograd saves for backward, per decoder layer
# --------------------------------------------------------------------------------------------
# Each line below is one tensor that `saved_tensors_hooks` sees (deduplicated by storage), in bytes per token.
# Notation: b = compute dtype bytes; norms always compute in fp32 (4 B); LoRA adapters are fp32, and when
# the compute dtype is not fp32 peft casts each adapter's input to fp32 — a private copy per adapter.

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$")


def _targeted_kinds_per_layer(arch: Architecture, targeted: list[Linear]) -> list[set[str]]:
    per_layer = [set() for _ in range(arch.text.layers)]
    for lin in targeted:
        if "vision" in lin.name:
            continue
        m = _LAYER_RE.search(lin.name)
        if m and int(m.group(1)) < len(per_layer):
            per_layer[int(m.group(1))].add(m.group(2))
    return per_layer


def _layer_bytes_per_token(
    t: TextShape, b: int, full: bool, lora: set[str], rank: int, grad_in: bool, masked: bool
) -> int:
    """Bytes per token saved by one decoder layer's forward."""
    h, i, q_width, kv_width = t.hidden, t.intermediate, t.heads * t.head_dim, t.kv_heads * t.head_dim
    copy = b != 4  # LoRA inputs get cast to the fp32 adapter dtype
    gemma = t.family == "gemma3"

    def saves_input(kind: str) -> bool:  # does this linear keep its (compute-dtype) input for backward?
        return full or (kind in lora and not copy)

    def lora_extra(kind: str, d_in: int) -> int:
        return (4 * d_in if copy else 0) + 4 * rank if kind in lora else 0

    def norm(grad: bool) -> int:  # RMSNorm: fp32 input copy + 1/rms, the normalised input when w trains
        if not grad:
            return 0
        return 4 * h + 4 + ((4 if gemma else b) * h if full else 0)

    total = norm(grad_in)
    if any(saves_input(k) for k in ("q_proj", "k_proj", "v_proj")):
        total += b * h  # the normalised layer input, shared by q/k/v
    total += sum(lora_extra(k, h) for k in ("q_proj", "k_proj", "v_proj"))

    attn_grad = grad_in or full or bool(lora & {"q_proj", "k_proj", "v_proj"})
    if attn_grad:
        if gemma:  # q_norm / k_norm over head_dim: fp32 copies, 1/rms per head, normalised when w trains
            total += 4 * q_width + 4 * t.heads + (4 * q_width if full else 0)
            total += 4 * kv_width + 4 * t.kv_heads + (4 * kv_width if full else 0)
        # With a mask, transformers repeats k and v to all query heads before SDPA.
        kv_saved = q_width if masked else kv_width
        # SDPA keeps q, k, v, its output and the fp32 log-sum-exp per head.
        total += b * (2 * q_width + 2 * kv_saved) + 4 * t.heads
    total += lora_extra("o_proj", q_width)  # o_proj's own input is the SDPA output, already counted

    grad_mid = attn_grad or "o_proj" in lora
    if gemma and grad_mid:
        total += norm(True)  # post_attention_layernorm
    total += norm(grad_mid)  # pre-MLP norm (post_attention_layernorm in Llama, pre_feedforward in Gemma)
    if saves_input("gate_proj") or saves_input("up_proj"):
        total += b * h
    total += lora_extra("gate_proj", h) + lora_extra("up_proj", h)
    if grad_mid or full or lora & {"gate_proj", "up_proj"}:
        total += 3 * b * i  # gate, up, and the activation's output
    if saves_input("down_proj"):
        total += b * i
    total += lora_extra("down_proj", i)
    if gemma:
        total += norm(True)  # post_feedforward_layernorm
    return total


def _masked_layers(t: TextShape, seq_len: int) -> list[bool]:
    """Which layers build an explicit (B, 1, L, L) attention mask: sliding-window layers once L exceeds the window.

    Causal-only layers pass is_causal=True to SDPA and need no mask tensor; a sliding window needs one, and
    then transformers also repeats k and v to every query head instead of using SDPA's native GQA.
    """
    if not t.sliding_window or seq_len <= t.sliding_window:
        return [False] * t.layers
    if not t.layer_types:
        return [True] * t.layers
    return [kind == "sliding_attention" for kind in t.layer_types]


def activation_bytes(arch: Architecture, setup: TrainingSetup, targeted: list[Linear]) -> dict[str, int]:
    """Bytes saved for backward at the peak of one training step, by part."""
    t = arch.text
    B, L = setup.batch_size, setup.seq_len
    tokens = B * L
    b = 4 if setup.precision == "fp32" else 2
    full = setup.method == "full"
    rank = setup.rank if not full else 0
    per_layer_kinds = _targeted_kinds_per_layer(arch, targeted) if not full else [set()] * t.layers
    masked = _masked_layers(t, L)
    ckpt = setup.gradient_checkpointing

    layer_bytes = []
    grad = full or ckpt  # with checkpointing transformers makes the embeddings' output require grad
    for kinds, layer_masked in zip(per_layer_kinds, masked):
        per_token = _layer_bytes_per_token(t, b, full, kinds, rank, grad, layer_masked)
        # Each masked layer turns the shared boolean mask into its own additive mask in the compute dtype:
        # B·L² values per layer, which grows quadratically with the sequence length.
        layer_bytes.append(tokens * per_token + (B * L * L * b if layer_masked else 0))
        grad = grad or bool(kinds)

    parts: dict[str, int] = {}
    # Shared by all layers: RoPE cos and sin (per position, batch 1; Gemma 3 has a local and a global pair)
    # and the boolean sliding-window mask (1 B per position pair, batch 1).
    rope_pairs = len(set(t.layer_types)) if t.family == "gemma3" and t.layer_types else 1
    parts["rope tables and masks"] = rope_pairs * 2 * L * t.head_dim * b + (L * L if any(masked) else 0)
    parts["input ids and labels"] = tokens * (8 if full else 0) + tokens * 8  # int64; ids only if embeddings train
    gemma = t.family == "gemma3"
    head = tokens * (4 * t.hidden + 4)  # final norm: fp32 input + 1/rms
    if full:
        head += tokens * ((4 if gemma else b) * t.hidden + b * t.hidden)  # normalised input, LM head input
    head += tokens * t.vocab * 4  # the fp32 log-softmax over the vocabulary, kept for the loss' backward
    if ckpt:
        # Only each layer's input is kept; in backward one layer at a time is recomputed, after the head's
        # saved tensors were already freed. In fp32 the recomputed norm's input *is* the kept input.
        parts["checkpointed layer inputs"] = t.layers * tokens * b * t.hidden
        recompute = max(layer_bytes) - (tokens * 4 * t.hidden if b == 4 else 0)
        if head >= recompute:
            parts["final norm and log-softmax (logits)"] = head
        else:
            parts["one layer recomputed in backward"] = recompute
    else:
        parts["decoder layers"] = sum(layer_bytes)
        parts["final norm and log-softmax (logits)"] = head
    return parts


# --------------------------------------------------------------------------------------------
# Presentation helpers shared by the CLI and the app
# --------------------------------------------------------------------------------------------

BAR_PARTS = [
    ("weights", "Weights"),
    ("quant_constants", "Quantization constants"),
    ("gradients", "Gradients"),
    ("optimizer", "Optimizer states"),
    ("activations", "Activations"),
    ("overhead", "Framework overhead"),
]


def format_gb(n_bytes: int) -> str:
    gb = n_bytes / GB
    if gb >= 100:
        return f"{gb:,.0f} GB"
    if gb >= 1:
        return f"{gb:.1f} GB"
    return f"{n_bytes / 10**6:,.1f} MB"


def format_table(est: MemoryEstimate) -> str:
    s = est.setup
    lines = [
        f"{est.model}: {s.method}, {s.precision}, {s.optimizer}, batch {s.batch_size} × {s.seq_len} tokens"
        + (", gradient checkpointing" if s.gradient_checkpointing else "")
    ]
    lines.append(f"  parameters        {est.total_params:>18,}")
    lines.append(f"  trainable         {est.trainable_params:>18,}  ({est.trainable_percent:.3g} %)")
    for m in est.modules:
        lines.append(f"    {m.module:<15} {m.count:>4} × r·({m.d_in}+{m.d_out}) = {m.params:,}")
    for key, label in BAR_PARTS:
        if est.bytes[key] or key != "quant_constants":
            lines.append(f"  {label:<24} {format_gb(est.bytes[key]):>10}")
    lines.append(f"  {'Total':<24} {format_gb(est.bytes['total']):>10}")
    fits = [g for g, ok in est.fits().items() if ok]
    lines.append("  fits on: " + (", ".join(fits) if fits else "none of the listed GPUs"))
    lines.extend(f"  note: {n}" for n in est.notes)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # Each setting's destination is the TrainingSetup field it sets.
    p = OneLineParser(prog="python -m shared.memory", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", required=True, help="preset (" + ", ".join(preset_names()) + "), Hub id, config.json, or DxD"
    )
    p.add_argument("--method", choices=METHODS, default="lora")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument(
        "--alpha", type=float, default=None, help="LoRA alpha (scaling = alpha / rank); memory does not depend on it"
    )
    p.add_argument("--targets", default="all-linear", help="all-linear, attention, or q_proj,v_proj,...")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument(
        "--no-double-quant",
        dest="double_quant",
        action="store_false",
        help="QLoRA: fp32 absmax per 64 weights instead of 8-bit",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


@contextlib.contextmanager
def _quiet_libraries():
    """Library warnings off while the command runs: its stderr is the one error line, or nothing.

    transformers warns about odd config values (unknown rope keys, token ids past the vocabulary) through its
    own logger; those values are either refused by the checks here or harmless to the arithmetic.
    """
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0 with the answer on stdout, or exit 2 with one line on stderr."""
    with _quiet_libraries():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
        setup = TrainingSetup(**{f.name: getattr(args, f.name) for f in fields(TrainingSetup)})
        setup.validate()
        # The command line runs as the machine's own user, who may name a local config.json.
        est = estimate_memory(resolve_model(args.model, local_files=True), setup)
    except ValueError as exc:
        return refuse(exc)
    except SystemExit as exc:  # --help printed its text and asked to exit
        return exc.code if isinstance(exc.code, int) else 0
    print(json.dumps(est.to_dict(), indent=2) if args.json else format_table(est))
    return 0


if __name__ == "__main__":
    sys.exit(main())
