"""The project's own post-training (train/: QLoRA SFT, then DPO) as LoRA adapters of the embedded base.

Every adapter sits on the same base weights; peft then routes each row of a batch through its own
adapter with `adapter_names` (`BASE_ADAPTER` for none), so base, SFT and SFT+DPO run in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ADAPTERS_DIR = Path(__file__).resolve().parent.parent / "train" / "adapters"
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch
# The one set of labels for the pipeline's stages, in order, used by shared/ and train/ alike.
MODEL_LABELS = ("base", "sft", "sft+dpo")


@dataclass(frozen=True)
class Adapter:
    key: str  # a stage label from MODEL_LABELS, also the adapter's name inside the peft model
    folder: str  # under ADAPTERS_DIR
    title: str  # what a page calls it

    @property
    def path(self) -> Path:
        return ADAPTERS_DIR / self.folder


PROJECT_ADAPTERS: dict[str, Adapter] = {
    a.key: a
    for a in [
        Adapter("sft", "gemma-3-270m-sft", "Base + SFT (ours)"),
        Adapter("sft+dpo", "gemma-3-270m-sft-dpo", "Base + SFT + DPO (ours)"),
    ]
}


def project_adapter_paths() -> dict[str, str]:
    """{stage label: folder} of the shipped adapters that are present on disk."""
    return {key: str(a.path) for key, a in PROJECT_ADAPTERS.items() if (a.path / "adapter_model.safetensors").is_file()}


def adapter_fits(model, adapter_dir: str | Path) -> bool:
    """True when every LoRA matrix in the adapter matches the shape of the layer it targets."""
    from safetensors import safe_open

    with safe_open(str(Path(adapter_dir) / "adapter_model.safetensors"), framework="pt") as weights:
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


def attach_adapters(model, adapters: dict[str, str]):
    """`model` wrapped by peft with each adapter loaded under its name (in place; eval mode). Attach
    adapters before moving the model to its device: the adapter weights are read onto the CPU.

    Raises ValueError when an adapter does not fit the model's shapes.
    """
    from peft import PeftModel

    wrapped = None
    for name, path in adapters.items():
        if not adapter_fits(model if wrapped is None else wrapped.base_model.model, path):
            raise ValueError(f"The adapter {name!r} does not fit this model's layer shapes.")
        # Read onto the CPU whatever the model's device: peft would otherwise pick the accelerator it
        # infers, which under ZeroGPU's emulation is a "cuda" that cannot hold pinned file reads.
        if wrapped is None:
            wrapped = PeftModel.from_pretrained(model, str(path), adapter_name=name, torch_device="cpu")
        else:
            wrapped.load_adapter(str(path), adapter_name=name, torch_device="cpu")
    return (wrapped if wrapped is not None else model).eval()
