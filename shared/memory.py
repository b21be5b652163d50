"""How many parameters LoRA trains, and how much GPU memory fine-tuning needs — from real model configs.

    python -m shared.memory --model llama-3.2-1b --method full --precision bf16
    python -m shared.memory --model gemma-3-270m --method qlora --rank 16 --targets all-linear --json
    python -m shared.memory --model 4096x4096 --method lora --rank 16        # the lesson's single matrix

Where the numbers come from:
- The model is built empty on the `meta` device from its config (a bundled preset, a Hub id when the Hub is
  reachable, or a config.json file), so parameter counts are exact and nothing is downloaded.
- Trainable LoRA parameters are r·(d_in + d_out) per targeted linear layer, matched the way peft matches
  `target_modules`; tests check the totals equal `get_peft_model(...).get_nb_trainable_parameters()`.
- Weights, gradients and optimizer states are byte-exact for what PyTorch/bitsandbytes allocate (tests run a
  real optimizer step on tiny models and compare). Activations are a per-architecture list of the tensors
  autograd saves for backward, checked within ±15 % against `saved_tensors_hooks` measurements.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "data" / "model_configs"
GB = 10**9  # the lesson speaks decimal gigabytes ("2 GB of weights for 1B parameters in 16-bit")
GIB = 2**30

METHODS = ("full", "lora", "qlora")
PRECISIONS = ("fp32", "bf16", "bf16-mixed")
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd")
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
TARGET_CHOICES = {"all-linear": "every linear layer except the output head", "attention": "q, k, v, o projections"}

# A square matrix typed as "4096x4096" (or "4096×4096"): the lesson's one attention projection.
_SQUARE_RE = re.compile(r"^\s*(\d+)\s*[x×*]\s*(\d+)\s*$")

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
# Model configs: presets, files, Hub ids, and the lesson's square matrix
# --------------------------------------------------------------------------------------------

def preset_names() -> list[str]:
    """The bundled presets (published config.json values; they work offline)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(source: str):
    """A transformers config from a preset name, a config.json path, or a Hub id (config only)."""
    source = (source or "").strip()
    if not source:
        raise ValueError("Choose a preset, type a Hub id, or upload a config.json.")
    preset = CONFIG_DIR / f"{source.lower()}.json"
    if preset.is_file():
        return read_config_file(preset)
    if source.endswith(".json") or Path(source).is_file():
        return read_config_file(Path(source))
    if "/" not in source:
        raise ValueError(f"Unknown preset {source!r}: choose one of {', '.join(preset_names())}, or a Hub id like org/name.")
    return _hub_config(source)


def read_config_file(path: Path):
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"No such config file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{Path(path).name} is not valid JSON ({type(exc).__name__}).") from exc
    return config_from_dict(data, Path(path).name)


def config_from_dict(data: dict, source: str = "the config"):
    from transformers import AutoConfig

    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{source} is not a transformers config.json (it has no \"model_type\").")
    kwargs = {k: v for k, v in data.items() if k != "model_type"}
    try:
        return AutoConfig.for_model(data["model_type"], **kwargs)
    except (ValueError, KeyError, TypeError) as exc:
        message = " ".join(str(exc).split())[:160]
        raise ValueError(f"{source} could not be read as a model config ({message}).") from exc


def _hub_config(model_id: str):
    from transformers import AutoConfig

    from shared.models import explain_load_failure, hub_unavailable_reason

    unavailable = hub_unavailable_reason()
    try:
        # Only config.json is fetched (or read from the local cache when the Hub is unreachable).
        return AutoConfig.from_pretrained(model_id, trust_remote_code=False, local_files_only=unavailable is not None)
    except Exception as exc:  # any Hub failure becomes one sentence the user can act on
        reason = explain_load_failure(model_id, exc)
        if unavailable and "local cache" in reason:
            reason = f"{unavailable} and `{model_id}` is not in the local cache; pick a preset or upload its config.json"
        raise ValueError(reason[0].upper() + reason[1:] + ".") from exc


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
    if d_out <= 0 or d_in <= 0:
        raise ValueError("Matrix sizes must be positive, e.g. 4096x4096.")
    return Architecture(f"{d_out}×{d_in} matrix", "matrix", (d_out * d_in,), (Linear("W", d_in, d_out, False),), None, None)


def _text_shape(config) -> TextShape:
    text = config.get_text_config()
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    model_type = text.model_type
    family = "gemma3" if model_type.startswith("gemma3") else "llama"
    if family == "llama" and model_type not in ("llama", "mistral", "qwen2"):
        logger.info("No activation model for %s: using the Llama one (same tensors in most decoders)", model_type)
    layer_types = tuple(getattr(text, "layer_types", None) or ())
    sliding = getattr(text, "sliding_window", None)
    if model_type == "qwen2" and not getattr(text, "use_sliding_window", False):
        sliding = None
    return TextShape(
        family=family,
        hidden=hidden,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab=text.vocab_size,
        sliding_window=sliding,
        layer_types=layer_types,
    )


def build_meta_model(config):
    """The model with every weight on the `meta` device: shapes only, no memory, nothing downloaded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    # torch.device("meta") rather than accelerate's init_empty_weights: the latter leaves tied embeddings
    # untied in transformers 5, which would double-count the LM head of tied models.
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
        except ValueError:
            model = AutoModelForImageTextToText.from_config(config, trust_remote_code=False)
    model.tie_weights()
    return model


def architecture_from_model(model, label: str) -> Architecture:
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
    return Architecture(label, model.config.model_type, tuple(numels), tuple(linears), head_name, _text_shape(model.config))


@functools.lru_cache(maxsize=32)
def _architecture_cached(config_json: str, label: str) -> Architecture:
    config = config_from_dict(json.loads(config_json), label)
    return architecture_from_model(build_meta_model(config), label)


def architecture_from_config(config, label: str | None = None) -> Architecture:
    label = label or getattr(config, "name_or_path", "") or config.model_type
    # Cached by the config's JSON: building a 70B skeleton takes ~0.5 s, and Architecture is immutable.
    return _architecture_cached(config.to_json_string(use_diff=False), label)


def resolve_model(source: str) -> Architecture:
    """Preset name, Hub id, config.json path, or "DxD" → Architecture."""
    match = _SQUARE_RE.match(source or "")
    if match:
        return square_matrix(int(match.group(1)), int(match.group(2)))
    config = load_config(source)
    return architecture_from_config(config, label=source.strip())


# --------------------------------------------------------------------------------------------
# LoRA parameter counts
# --------------------------------------------------------------------------------------------

def parse_targets(targets: str | list[str]) -> str | list[str]:
    """"all-linear", "attention", or a comma-separated list of module names ("q_proj,v_proj")."""
    if isinstance(targets, (list, tuple)):
        names = [t.strip() for t in targets if t.strip()]
    else:
        text = (targets or "").strip()
        if text.lower() == "all-linear":
            return "all-linear"
        if text.lower() in ("attention", "attention-only"):
            return list(ATTENTION_TARGETS)
        names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("Give LoRA target modules: all-linear, attention, or names like q_proj,v_proj.")
    return names


def match_targets(arch: Architecture, targets: str | list[str]) -> list[Linear]:
    """The linear layers peft wraps for `target_modules`, with peft's own matching rules."""
    targets = parse_targets(targets)
    if targets == "all-linear":
        # peft's "all-linear": every nn.Linear except the model's output embedding (the LM head).
        matched = [lin for lin in arch.linears if lin.name != arch.output_head]
    else:
        # peft: a module matches a name in the list when its full name equals it or ends with "." + it.
        matched = [lin for lin in arch.linears if any(lin.name == t or lin.name.endswith("." + t) for t in targets)]
    if not matched:
        names = sorted({lin.name.rsplit(".", 1)[-1] for lin in arch.linears})
        raise ValueError(f"The targets {targets} match no linear layer; this model has: {', '.join(names)}.")
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
    if rank <= 0:
        raise ValueError("The LoRA rank must be a positive integer (typical: 8, 16, 64).")
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

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}: choose full, lora or qlora.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}: choose fp32, bf16 or bf16-mixed.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
        if self.method != "full" and (not isinstance(self.rank, int) or self.rank <= 0):
            raise ValueError("The LoRA rank must be a positive integer (typical: 8, 16, 64).")
        if self.batch_size <= 0 or self.seq_len <= 0:
            raise ValueError("Batch size and sequence length must be positive.")


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
                f"4-bit NF4 linear layers: {packed / GB:.2f} GB instead of {2 * quantized_numel / GB:.2f} GB in 16-bit; "
                "embeddings, norms and the LM head stay 16-bit (peft's prepare_model_for_kbit_training would upcast them to fp32)."
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
    activations = sum(activation_parts.values())
    overhead = sum(overhead_parts.values())
    total = weights + quant_constants + gradients + optimizer + activations + overhead
    parts = dict(
        weights=weights,
        quant_constants=quant_constants,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        overhead=overhead,
        total=total,
    )
    return MemoryEstimate(arch.label, setup, base, trainable, percent, modules, parts, activation_parts, overhead_parts, notes)


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


def _layer_bytes_per_token(t: TextShape, b: int, full: bool, lora: set[str], rank: int, grad_in: bool, masked: bool) -> int:
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
    lines = [f"{est.model}: {s.method}, {s.precision}, {s.optimizer}, batch {s.batch_size} × {s.seq_len} tokens"
             + (", gradient checkpointing" if s.gradient_checkpointing else "")]
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
    p = argparse.ArgumentParser(prog="python -m shared.memory", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="preset (" + ", ".join(preset_names()) + "), Hub id, config.json, or DxD")
    p.add_argument("--method", choices=METHODS, default="lora")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (scaling = alpha / rank); memory does not depend on it")
    p.add_argument("--targets", default="all-linear", help="all-linear, attention, or q_proj,v_proj,...")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--no-double-quant", action="store_true", help="QLoRA: fp32 absmax per 64 weights instead of 8-bit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup = TrainingSetup(
        method=args.method, precision=args.precision, optimizer=args.optimizer, rank=args.rank, alpha=args.alpha,
        targets=args.targets, batch_size=args.batch_size, seq_len=args.seq_len,
        gradient_checkpointing=args.gradient_checkpointing, double_quant=not args.no_double_quant,
    )
    try:
        setup.validate()
        est = estimate_memory(resolve_model(args.model), setup)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(est.to_dict(), indent=2) if args.json else format_table(est))
    return 0


if __name__ == "__main__":
    sys.exit(main())
