"""Moved: shared.embedded, shared.compute, shared.hub, shared.presets, shared.adapters, shared.loading.

A temporary re-export while callers move to the new modules; it goes away with the last caller.
"""

from shared.adapters import ADAPTERS_DIR, BASE_ADAPTER  # noqa: F401
from shared.compute import cpu_has_fast_bf16, contiguous_head_input, default_device, default_dtype  # noqa: F401
from shared.embedded import CACHE_DIR, EMBEDDED_ID, embedded_checkpoint_dir, load_embedded_tokenizer  # noqa: F401
from shared.hub import explain_load_failure, hub_unavailable_reason  # noqa: F401
from shared.loading import ServedModel, load_model, load_pair  # noqa: F401
from shared.presets import DEFAULT_PAIR, ON_SPACES, PRESETS, ModelPair  # noqa: F401
