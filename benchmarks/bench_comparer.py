"""How much do extra comparer columns cost, and what does streaming add over a bare `generate`?

    python benchmarks/bench_comparer.py [--max-new-tokens 64] [--repeats 3]

Runs on the embedded Gemma 3 270M (offline). All timings are measured side by side in this one run,
interleaved and repeated (median), because absolute times on a shared machine mean little.
The last line is `columns=N ratio_vs_single=X`: the goal is X <= 1.3 for columns sharing weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the benchmark is about the embedded model

import torch  # noqa: E402

from shared.adapters import BASE_ADAPTER  # noqa: E402
from shared.comparer import make_columns  # noqa: E402
from shared.generation import GenerationSettings, build_input_ids, generate_columns, stop_token_ids  # noqa: E402
from shared.presets import DEFAULT_PAIR, PRESETS  # noqa: E402

PROMPT = "What is the capital of France?"
# A preset the adapter columns answer at length, so no row finishes early (the costly case).
LONG_PROMPT = "Give me three tips for learning to cook."


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    columns = make_columns(PRESETS[DEFAULT_PAIR])
    base = columns[0]
    model, tokenizer = base.served.model, base.served.tokenizer
    # On this prompt neither column stops before the limit (printed as `generated=`), so every run
    # produces the same number of tokens and the ratios measure extra rows and streaming only.
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    input_ids = torch.tensor([build_input_ids(base, PROMPT)])
    stops = sorted(stop_token_ids(base.served))

    # With the project's adapters loaded, the bare call routes through no adapter, like the base column.
    routing = {"adapter_names": [BASE_ADAPTER]} if hasattr(model, "peft_config") else {}

    def bare_generate():
        with torch.inference_mode():
            model.generate(
                **routing,
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )

    def bare_generate_in_thread():
        worker = threading.Thread(target=bare_generate)
        worker.start()
        worker.join()

    # Everything is timed the way the app runs it: Gradio calls a handler in a worker thread and the
    # comparer generates in a fresh thread per request. The main thread never computes, because a
    # thread that has run torch keeps an OpenMP team, and with more teams than cores libgomp stops
    # its workers spinning: generation elsewhere then runs ~30 % slower (see shared/compute.py).
    runs = {
        "bare model.generate (1 column)": bare_generate_in_thread,
        "streamed, 1 column": lambda: generate_columns([base], PROMPT, settings),
        "streamed, 2 columns (base + aligned)": lambda: generate_columns(columns[:2], PROMPT, settings),
        f"streamed, {len(columns)} columns": lambda: generate_columns(columns, PROMPT, settings),
    }
    bare_generate_in_thread()  # warm-up: first calls pay for allocations and kernel selection
    generate_columns(columns, PROMPT, settings)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    long_runs = {
        "long answers: streamed, 1 column": lambda: generate_columns([base], LONG_PROMPT, settings),
        f"long answers: streamed, {len(columns)} columns": lambda: generate_columns(columns, LONG_PROMPT, settings),
    }
    for name in long_runs:
        times[name] = []
    for _ in range(args.repeats):
        for name, fn in long_runs.items():
            times[name].append(timed(fn))
    # Last, because it gives the main thread an OpenMP team: the same bare call on the main thread.
    times["bare model.generate, main thread (run last)"] = [timed(bare_generate) for _ in range(args.repeats)]

    lengths = [len(r.generated_ids) for r in generate_columns(columns, PROMPT, settings)]
    print(
        f"prompt={PROMPT!r} max_new_tokens={args.max_new_tokens} generated={lengths} "
        f"repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    for name, values in times.items():
        print(f"{name:<44} median {statistics.median(values):6.2f} s   runs {[round(v, 2) for v in values]}")
    single = statistics.median(times["streamed, 1 column"])
    overhead = single / statistics.median(times["bare model.generate (1 column)"])
    overhead_main = single / statistics.median(times["bare model.generate, main thread (run last)"])
    ratio = statistics.median(times[f"streamed, {len(columns)} columns"]) / single
    print(f"streaming_overhead_vs_bare_generate={overhead:.3f} (vs main-thread generate: {overhead_main:.3f})")
    long_lengths = [len(r.generated_ids) for r in generate_columns(columns, LONG_PROMPT, settings)]
    long_ratio = statistics.median(times[f"long answers: streamed, {len(columns)} columns"]) / statistics.median(
        times["long answers: streamed, 1 column"]
    )
    print(
        f"long answers ({LONG_PROMPT!r}, generated={long_lengths}): "
        f"columns={len(columns)} ratio_vs_single={long_ratio:.3f}"
    )
    pair = statistics.median(times["streamed, 2 columns (base + aligned)"]) / single
    print(f"columns=2 (base + aligned) ratio_vs_single={pair:.3f}")
    print(f"columns={len(columns)} ratio_vs_single={ratio:.3f}")


if __name__ == "__main__":
    main()
