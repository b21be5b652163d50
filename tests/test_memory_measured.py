"""The estimate against reality: bytes held after a real optimizer step, and saved activations, on CPU.

The measuring code lives in benchmarks/bench_memory.py, so the published table and these tests agree.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from shared.memory import TrainingSetup, architecture_from_model, estimate_memory

_spec = importlib.util.spec_from_file_location(
    "bench_memory", Path(__file__).resolve().parent.parent / "benchmarks" / "bench_memory.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine is shared; tiny models gain nothing from more threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


STATE_CASES = [
    ("llama", True, TrainingSetup(method="full", precision="fp32", optimizer="adamw")),
    ("llama", False, TrainingSetup(method="full", precision="bf16", optimizer="adamw")),  # fp32 moments on bf16
    ("gemma3", True, TrainingSetup(method="full", precision="bf16-mixed", optimizer="adamw")),
    ("llama", False, TrainingSetup(method="full", precision="fp32", optimizer="sgd")),
    ("gemma3", True, TrainingSetup(method="full", precision="fp32", optimizer="adamw-8bit")),
    ("llama", True, TrainingSetup(method="lora", precision="bf16", optimizer="adamw", rank=8)),
    (
        "gemma3",
        False,
        TrainingSetup(method="lora", precision="fp32", optimizer="paged-adamw", rank=4, targets="q_proj,v_proj"),
    ),
    ("llama", True, TrainingSetup(method="qlora", precision="bf16", optimizer="adamw", rank=8)),
    (
        "gemma3",
        False,
        TrainingSetup(method="qlora", precision="bf16", optimizer="paged-adamw-8bit", rank=64, double_quant=False),
    ),
]


@pytest.mark.parametrize("family, tie, setup", STATE_CASES, ids=lambda x: getattr(x, "method", x))
def test_state_bytes_are_exact(family, tie, setup, tmp_path):
    arch = architecture_from_model(bench.tiny_model(family, tie=tie), family)
    if setup.method == "qlora":
        model = bench.prepare(bench.quantized_tiny_model(family, setup.double_quant, tmp_path, tie=tie), setup)
    else:
        model = bench.prepare(bench.tiny_model(family, tie=tie), setup)
    ids = torch.randint(0, bench.VOCAB, (1, 16))
    measured = bench.measure_state_bytes(model, setup, ids)
    estimated = estimate_memory(arch, setup).bytes
    assert {k: estimated[k] for k in measured} == measured


def test_lora_training_changes_adapters_only():
    setup = TrainingSetup(method="lora", precision="fp32", rank=4)
    model = bench.prepare(bench.tiny_model("llama"), setup)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bench.measure_state_bytes(model, setup, torch.randint(0, bench.VOCAB, (1, 16)))
    # The adapters move (B starts at zero, so B gets the first real update); the frozen base must not.
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed)
    assert all("lora_" in n for n in changed)


ACTIVATION_CASES = [
    (
        family,
        TrainingSetup(
            method=method, precision=precision, batch_size=b, seq_len=seq, gradient_checkpointing=ckpt, rank=8
        ),
    )
    for family in ("llama", "gemma3")
    for method, precision in (("full", "fp32"), ("full", "bf16"), ("lora", "bf16"), ("qlora", "bf16"))
    for b, seq in ((2, 48), (1, 192))  # below and above the tiny Gemma's 32-token sliding window
    for ckpt in (False, True)
]


@pytest.mark.parametrize(
    "family, setup",
    ACTIVATION_CASES,
    ids=[
        f"{f}-{s.method}-{s.precision}-{s.batch_size}x{s.seq_len}{'-ckpt' if s.gradient_checkpointing else ''}"
        for f, s in ACTIVATION_CASES
    ],
)
def test_activations_within_15_percent(family, setup):
    estimated, measured = bench.activation_case(family, setup)
    assert estimated == pytest.approx(measured, rel=0.15)
