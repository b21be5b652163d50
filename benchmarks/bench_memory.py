"""Estimate vs measured: the memory calculator checked against real PyTorch on tiny real models (CPU).

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --limits   # seconds for the largest configs the calculator accepts

Activations are measured as the bytes autograd saves for backward (`torch.autograd.graph.saved_tensors_hooks`,
deduplicated by storage, parameters excluded), at the peak of a step:
- without checkpointing: everything saved by the end of the forward;
- with checkpointing: the inputs each checkpointed layer keeps, plus the larger of what the head saves and
  what recomputing one layer saves in backward (taken from the same layer in a run without checkpointing).
Weights, gradients and optimizer states are the bytes held after a real optimizer step.
tests/test_memory_measured.py imports these functions, so the table and the tests measure the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from shared.memory import TrainingSetup, architecture_from_model, estimate_memory  # noqa: E402

VOCAB = 1000  # small enough that the decoder layers, not the logits, dominate what is measured


# --------------------------------------------------------------------------------------------
# Tiny real models
# --------------------------------------------------------------------------------------------


def tiny_model(family: str, *, tie: bool = True, layers: int = 3, seed: int = 0):
    """A tiny random Llama or Gemma 3 (GQA: 4 query heads, 2 kv heads) built on CPU."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=tie,
        max_position_embeddings=1024,
    )
    if family == "gemma3":
        # Sliding-window and global layers as in the real Gemma 3, with a window short enough to matter.
        types = ["sliding_attention"] * (layers - 1) + ["full_attention"]
        config = Gemma3TextConfig(**common, sliding_window=32, layer_types=types, query_pre_attn_scalar=16)
        return Gemma3ForCausalLM(config)
    return LlamaForCausalLM(LlamaConfig(**common))


def prepare(model, setup: TrainingSetup):
    """Cast or wrap the model the way the setup trains it: full, or peft LoRA on a frozen base."""
    if setup.method == "qlora":
        pass  # loaded in 4-bit with bf16 for everything else; bitsandbytes models cannot be cast
    elif setup.precision == "bf16" or (setup.method != "full" and setup.precision == "bf16-mixed"):
        model = model.to(torch.bfloat16)
    if setup.method != "full":
        from peft import LoraConfig, get_peft_model

        from shared.memory import parse_targets

        targets = parse_targets(setup.targets)
        model = get_peft_model(
            model,
            LoraConfig(
                r=setup.rank, lora_alpha=setup.alpha or 2 * setup.rank, target_modules=targets, lora_dropout=0.0
            ),
        )
    if setup.gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5 name; non-reentrant by default
    return model.train()


def _decoder_layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.model.layers)


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def _tensors_in(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tensors_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors_in(x)


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def _saved_during_forward(model, input_ids):
    """Saved tensors by phase: before the layers, per layer, after; and each layer's inputs."""
    params = {_storage(p)[0] for p in model.parameters()}
    layers = _decoder_layers(model)
    phase = {"now": "pre"}
    saved = {"pre": {}, "post": {}}
    per_layer = [{} for _ in layers]
    layer_inputs = [{} for _ in layers]

    def pack(t):
        ptr, nbytes = _storage(t)
        if ptr not in params:
            where = phase["now"]
            (per_layer[where] if isinstance(where, int) else saved[where]).setdefault(ptr, nbytes)
        return t

    def enter(index):
        def hook(module, args, kwargs):
            phase["now"] = index
            for t in _tensors_in((args, kwargs)):
                ptr, nbytes = _storage(t)
                layer_inputs[index].setdefault(ptr, nbytes)

        return hook

    def leave(index):
        def hook(module, args, kwargs, output):
            phase["now"] = "post" if index == len(layers) - 1 else "between"

        return hook

    saved["between"] = {}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(enter(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(leave(i), with_kwargs=True))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(input_ids=input_ids, labels=input_ids).loss
    finally:
        for h in handles:
            h.remove()
    return loss, saved, per_layer, layer_inputs


def measure_activation_bytes(model, input_ids, gradient_checkpointing: bool, reference_model=None) -> int:
    """Peak bytes saved for backward in one step (see the module docstring for the definition).

    With checkpointing, `reference_model` is the same model without checkpointing, used to measure what
    recomputing one layer saves.
    """
    _, saved, per_layer, layer_inputs = _saved_during_forward(model, input_ids)
    outside = {}
    for phase in ("pre", "between", "post"):
        outside.update(saved[phase])
    if not gradient_checkpointing:
        everything = dict(outside)
        for layer in per_layer:
            everything.update(layer)
        return sum(everything.values())
    kept = dict(saved["pre"])
    for inputs in layer_inputs:  # what non-reentrant checkpointing keeps: each layer's (tensor) arguments
        kept.update(inputs)
    head = {p: n for p, n in saved["post"].items() if p not in kept}
    _, _, ref_layers, ref_inputs = _saved_during_forward(reference_model, input_ids)
    recompute = max(
        sum(n for p, n in layer.items() if p not in inputs) for layer, inputs in zip(ref_layers, ref_inputs)
    )
    return sum(kept.values()) + max(sum(head.values()), recompute)


def _make_optimizer(name: str, params, params_fp32: bool):
    import bitsandbytes as bnb

    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    if name == "adamw":
        # torch's AdamW keeps moments in the parameter dtype; for bf16 parameters the fp32 moments the
        # estimate assumes come from bitsandbytes' 32-bit AdamW.
        return torch.optim.AdamW(params, lr=1e-3) if params_fp32 else bnb.optim.AdamW(params, lr=1e-3, optim_bits=32)
    if name == "paged-adamw":
        return bnb.optim.PagedAdamW(params, lr=1e-3)
    if name == "adamw-8bit":
        return bnb.optim.AdamW8bit(params, lr=1e-3)
    if name == "paged-adamw-8bit":
        return bnb.optim.PagedAdamW8bit(params, lr=1e-3)
    raise ValueError(name)


def measure_state_bytes(model, setup: TrainingSetup, input_ids) -> dict[str, int]:
    """Bytes of weights, quantization constants, gradients and optimizer states after one real step."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    params_fp32 = all(p.dtype == torch.float32 for p in trainable)
    optimizer = _make_optimizer(setup.optimizer, trainable, params_fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setup.precision == "bf16-mixed"):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()

    def total(tensors) -> int:
        storages = {}
        for t in tensors:
            ptr, nbytes = _storage(t)
            storages.setdefault(ptr, nbytes)
        return sum(storages.values())

    constants = []
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            constants += [qs.absmax, qs.code] + ([qs.offset, qs.state2.absmax, qs.state2.code] if qs.nested else [])
    states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return dict(
        weights=total(model.parameters()),
        quant_constants=total(constants),
        gradients=total(p.grad for p in trainable),
        optimizer=total(states),
    )


def quantized_tiny_model(family: str, double_quant: bool, tmp_dir: Path, tie: bool = True):
    """The tiny model saved and reloaded in 4-bit NF4 through transformers' bitsandbytes integration."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tiny_model(family, tie=tie).save_pretrained(tmp_dir)
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(tmp_dir, dtype=torch.bfloat16, quantization_config=config)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def training_model(family: str, setup: TrainingSetup, tmp_dir: Path):
    """The tiny model as the setup trains it (QLoRA: reloaded in 4-bit first)."""
    if setup.method == "qlora":
        return prepare(quantized_tiny_model(family, setup.double_quant, tmp_dir), setup)
    return prepare(tiny_model(family), setup)


def activation_case(family: str, setup: TrainingSetup) -> tuple[int, int]:
    """(estimated, measured) activation bytes for one tiny model and setup."""
    import tempfile

    ids = torch.randint(0, VOCAB, (setup.batch_size, setup.seq_len), generator=torch.Generator().manual_seed(1))
    arch = architecture_from_model(tiny_model(family), family)  # before peft swaps nn.Linear for lora.Linear
    estimated = estimate_memory(arch, setup).bytes["activations"]
    with tempfile.TemporaryDirectory() as tmp:
        model = training_model(family, setup, Path(tmp) / "model")
        reference = None
        if setup.gradient_checkpointing:
            no_ckpt = TrainingSetup(**{**setup.__dict__, "gradient_checkpointing": False})
            reference = training_model(family, no_ckpt, Path(tmp) / "reference")
        return estimated, measure_activation_bytes(model, ids, setup.gradient_checkpointing, reference)


ACTIVATION_CASES = [
    (
        family,
        TrainingSetup(
            method=method, precision=precision, batch_size=b, seq_len=seq, gradient_checkpointing=ckpt, rank=8
        ),
    )
    for family in ("llama", "gemma3")
    for method, precision in (("full", "fp32"), ("full", "bf16"), ("lora", "fp32"), ("lora", "bf16"), ("qlora", "bf16"))
    for b, seq in ((1, 64), (2, 128), (1, 256))
    for ckpt in (False, True)
]


def limits() -> None:
    """Seconds to answer the most expensive inputs the bounds admit, and to refuse ones past them."""
    import json
    import time

    from shared import memory

    def timed(label: str, fn) -> None:
        memory._architecture_cached.cache_clear()  # cold: every build counted
        started = time.perf_counter()
        try:
            fn()
            outcome = "answered"
        except ValueError as exc:
            outcome = f"refused ({str(exc)[:60]}…)"
        print(f"| {label} | {time.perf_counter() - started:.2f} s | {outcome} |")

    llama = json.loads((memory.CONFIG_DIR / "llama-3.2-1b.json").read_text())
    gemma = json.loads((memory.CONFIG_DIR / "gemma-3-4b.json").read_text())
    text_layers = memory.MAX_LAYERS - gemma["vision_config"]["num_hidden_layers"]
    gemma_deep = {**gemma, "text_config": {**gemma["text_config"], "num_hidden_layers": text_layers}}
    gemma_deep["text_config"].pop("layer_types", None)
    setup = memory.TrainingSetup(method="qlora", seq_len=memory.MAX_SEQ_LEN // 16, batch_size=16)

    def estimate(config: dict, label: str):
        return memory.compare_methods(memory.architecture_from_config(memory.config_from_dict(config, label)), setup)

    memory.resolve_model("smollm2-135m")  # imports first: they are a one-off per process
    print("| input | time | outcome |")
    print("|---|---:|---|")
    timed(
        f"Llama, {memory.MAX_LAYERS} layers (the bound)",
        lambda: estimate({**llama, "num_hidden_layers": memory.MAX_LAYERS}, "deep"),
    )
    timed(f"Gemma 3 4B, {text_layers} text + 27 vision layers", lambda: estimate(gemma_deep, "deep gemma"))
    timed("Llama 3.1 70B preset", lambda: memory.compare_methods(memory.resolve_model("llama-3.1-70b"), setup))
    timed("10^6 layers", lambda: memory.config_from_dict({**llama, "num_hidden_layers": 10**6}, "x"))
    timed("JSON nested 500,000 deep", lambda: memory.parse_config_json(b"[" * 500_000 + b"]" * 500_000, "x"))
    timed("a 1 MiB config", lambda: memory.parse_config_json(b" " * (memory.MAX_CONFIG_BYTES + 1), "x"))


def main() -> None:
    if "--limits" in sys.argv[1:]:
        limits()
        return
    torch.set_num_threads(1)
    print("| model | method | precision | batch × seq | ckpt | estimated | measured | error |")
    print("|---|---|---|---|---|---:|---:|---:|")
    for family, setup in ACTIVATION_CASES:
        est, meas = activation_case(family, setup)
        print(
            f"| tiny {family} | {setup.method} | {setup.precision} | {setup.batch_size} × {setup.seq_len} | "
            f"{'yes' if setup.gradient_checkpointing else 'no'} | {est / 1e6:.3f} MB | {meas / 1e6:.3f} MB | "
            f"{100 * (est - meas) / meas:+.1f} % |"
        )


if __name__ == "__main__":
    main()
