"""On a CUDA GPU: the comparer's Space as built for the Hub, and the memory calculator against the allocator.

    python benchmarks/gpu_check.py               # on a machine with a CUDA GPU; at most ~8 minutes
    python benchmarks/gpu_check.py --dry-run     # anywhere: builds the Space, prints the estimates only

One line per figure, `name key=value ...`:
- `comparer column=...`: each column's tokens/s in one all-columns /compare, run from the Space folder
  that spaces/deploy.py builds (imported from that folder, in a child process, as the Space runs it);
- `comparer batched`: the all-columns call's time over a one-column call's (median; goal <= 1.15);
- `memory method=full|lora|qlora`: the calculator's estimate (shared.memory, Gemma 3 270M, its default
  setup) against `torch.cuda.max_memory_allocated` over one real training step of the embedded Gemma 3
  270M (goal within 10 %). The estimate's CUDA context is left out: the allocator does not count it.

Offline (HF_HUB_OFFLINE=1 is set here): every model is the embedded Gemma 3 270M, converted from its GGUF
on first use into PTS_CACHE_DIR (~/.cache/post-training-spaces). Without a CUDA GPU it exits with code 2.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

PROMPT = "What is the capital of France?"
# One the adapter columns answer at length, so rows rarely finish early and the ratio measures extra rows.
LONG_PROMPT = "Give me three tips for learning to cook."
BATCH_RATIO_GOAL = 1.15
MEMORY_ERROR_GOAL = 0.10  # relative
CALCULATOR_MODEL = "gemma-3-270m"  # the calculator's preset with the embedded model's shapes
METHODS = ("full", "lora", "qlora")
# The whole check must fit in 8 minutes; the comparer child gets what the memory steps leave (seconds).
BUDGET_S = 480
COMPARER_CHILD_TIMEOUT_S = 300


def _by_path(name: str, path: Path):
    """A module of this repository that is not in a package (spaces/deploy.py, benchmarks/*.py)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def setups() -> dict:
    """The calculator's default setup (its page opens on it) for each method."""
    from shared.memory import TrainingSetup

    return {method: TrainingSetup(method=method) for method in METHODS}


def allocator_estimate(setup) -> tuple[int, int]:
    """(what the allocator should see at its peak, the calculator's whole total) in bytes."""
    from shared.memory import CUDA_CONTEXT_BYTES, estimate_memory, resolve_model

    estimate = estimate_memory(resolve_model(CALCULATOR_MODEL), setup)
    return estimate.bytes["total"] - CUDA_CONTEXT_BYTES, estimate.bytes["total"]


# --------------------------------------------------------------------------------------------
# Memory: one real training step per method
# --------------------------------------------------------------------------------------------


def measured_peak(setup, checkpoint: Path) -> int:
    """`torch.cuda.max_memory_allocated` over loading the model and one full training step (bytes)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bench = _by_path("bench_memory", REPO_DIR / "benchmarks" / "bench_memory.py")  # prepares as the table does
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    if setup.method == "qlora":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=setup.double_quant,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint, dtype=torch.bfloat16, quantization_config=quantization, device_map={"": 0}
        )
        model = bench.prepare(model, setup)
    else:
        # Cast and wrapped on the CPU first, so the peak holds the trained layout only, not an fp32 copy.
        model = bench.prepare(AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32), setup)
        model = model.to("cuda")
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (setup.batch_size, setup.seq_len), device="cuda")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = bench._make_optimizer(setup.optimizer, trainable, all(p.dtype == torch.float32 for p in trainable))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del model, optimizer, loss, trainable, ids
    return peak


# --------------------------------------------------------------------------------------------
# The comparer, from its built Space folder (a child process: that folder's `shared` package)
# --------------------------------------------------------------------------------------------


def comparer_child(folder: Path, max_new_tokens: int, repeats: int) -> None:
    """Run in the child: import the built app and print its figures, one JSON object per line."""
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    import torch

    app = _by_path("app", folder / "app.py")
    from shared.generation import GenerationSettings, generate_columns  # the Space's copy

    base_id, aligned_id = app.DEFAULT_BASE.requested_id, app.DEFAULT_ALIGNED.requested_id
    devices = sorted({p.device.type for p in app.DEFAULT_BASE.model.parameters()})
    # /compare as a visitor calls it: the plain step, which runs the @spaces.GPU generator (a plain
    # function without ZeroGPU) and caches the result.
    final = list(app.compare(PROMPT, base_id, aligned_id, max_new_tokens, False, 0.7, 0.9, 0))[-1]
    print(json.dumps({"figure": "devices", "devices": devices, "outputs": len(final)}), flush=True)
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    results = list(app.compare_on_gpu(LONG_PROMPT, base_id, aligned_id, settings))[-1]
    for result in results:
        print(
            json.dumps(
                {
                    "figure": "column",
                    "column": result.label,
                    "tokens": len(result.generated_ids),
                    "tokens_per_s": round(result.tokens_per_s, 1),
                }
            ),
            flush=True,
        )
    from shared.comparer import make_columns
    from shared.presets import ModelPair

    columns = make_columns(ModelPair("custom", base_id, aligned_id))

    def sync() -> None:  # the child also runs on a CPU, to check this code without a GPU
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def timed(cols) -> float:
        sync()
        start = time.perf_counter()
        generate_columns(cols, LONG_PROMPT, settings)
        sync()
        return time.perf_counter() - start

    timed(columns)  # warm-up: kernel selection and allocations
    single, batched = [], []
    for _ in range(repeats):  # interleaved, so a slow moment hits both
        single.append(timed(columns[:1]))
        batched.append(timed(columns))
    lengths = [len(r.generated_ids) for r in generate_columns(columns, LONG_PROMPT, settings)]
    print(
        json.dumps(
            {
                "figure": "batched",
                "columns": len(columns),
                "single_s": statistics.median(single),
                "batched_s": statistics.median(batched),
                "generated": lengths,
            }
        ),
        flush=True,
    )


def run_comparer(folder: Path, max_new_tokens: int, repeats: int, timeout: float) -> list[str]:
    """The built comparer measured in a child process; its figures as printable lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPACES_ZERO_GPU", "SPACE_ID")}
    command = [sys.executable, __file__, "--comparer-child", str(folder), "--max-new-tokens", str(max_new_tokens)]
    proc = subprocess.run(
        [*command, "--repeats", str(repeats)], env=env, capture_output=True, text=True, timeout=timeout
    )
    figures = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not figures:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"comparer error exit={proc.returncode} last_line={tail!r}"]
    lines = []
    for f in figures:
        if f["figure"] == "devices":
            lines.append(f"comparer built_space devices={','.join(f['devices'])} compare_values={f['outputs']}")
        elif f["figure"] == "column":
            lines.append(f"comparer column={f['column']!r} tokens={f['tokens']} tokens_per_s={f['tokens_per_s']}")
        else:
            ratio = f["batched_s"] / f["single_s"]
            verdict = "ok" if ratio <= BATCH_RATIO_GOAL else "over goal"
            lines.append(
                f"comparer batched columns={f['columns']} ratio_vs_single={ratio:.3f} (goal <= {BATCH_RATIO_GOAL}, "
                f"{verdict}) single_s={f['single_s']:.3f} batched_s={f['batched_s']:.3f} generated={f['generated']}"
            )
    return lines


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    # shared/cli.py by path: importing the `shared` package here would make the comparer child use this
    # checkout's copy of it instead of the built Space's.
    cli = _by_path("pts_cli", REPO_DIR / "shared" / "cli.py")
    parser = cli.OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU needed: build the Space, print estimates")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per column (1 to 512)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case for the median (1 to 20)")
    parser.add_argument("--comparer-child", metavar="FOLDER", help=argparse.SUPPRESS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not 1 <= args.max_new_tokens <= 512 or not 1 <= args.repeats <= 20:
        return cli.refuse("--max-new-tokens must be 1 to 512 and --repeats 1 to 20")
    if args.comparer_child:
        comparer_child(Path(args.comparer_child), args.max_new_tokens, args.repeats)
        return 0

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        return cli.refuse("no CUDA GPU here; run this on a GPU machine (or --dry-run to check the set-up)")
    started = time.monotonic()
    deploy = _by_path("pts_deploy", REPO_DIR / "spaces" / "deploy.py")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = deploy.build("comparer", Path(tmp) / "comparer")
        print(f"comparer built_space files={sum(1 for p in folder.rglob('*') if p.is_file())}", flush=True)
        if args.dry_run:
            for method, setup in setups().items():
                expected, total = allocator_estimate(setup)
                print(
                    f"memory method={method} estimate_allocated_gb={expected / 1e9:.3f} "
                    f"estimate_total_gb={total / 1e9:.3f} measured_gb=not-run (dry run)",
                    flush=True,
                )
            return 0
        print(f"gpu name={torch.cuda.get_device_name(0)!r} torch={torch.__version__}", flush=True)
        from shared.embedded import embedded_checkpoint_dir

        checkpoint = embedded_checkpoint_dir()
        for method, setup in setups().items():
            expected, _ = allocator_estimate(setup)
            measured = measured_peak(setup, checkpoint)
            error = (expected - measured) / measured
            verdict = "ok" if abs(error) <= MEMORY_ERROR_GOAL else "outside goal"
            print(
                f"memory method={method} estimate_gb={expected / 1e9:.3f} measured_gb={measured / 1e9:.3f} "
                f"error={100 * error:+.1f}% (goal ±{100 * MEMORY_ERROR_GOAL:.0f} %, {verdict}) "
                f"seq_len={setup.seq_len} rank={setup.rank} targets={setup.targets}",
                flush=True,
            )
        torch.cuda.empty_cache()  # the child has the GPU to itself
        left = min(COMPARER_CHILD_TIMEOUT_S, BUDGET_S - (time.monotonic() - started))
        for line in run_comparer(folder, args.max_new_tokens, args.repeats, max(left, 30)):
            print(line, flush=True)
    print(f"gpu_check seconds={time.monotonic() - started:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
