"""What does the log-prob lens's one batched pass save, and how long does a typical pair take?

    python benchmarks/bench_logprobs.py [--repeats 5]

Runs on the embedded Gemma 3 270M with the project's adapters, float32, as the app does. Both ways are
measured side by side in this one run, interleaved and repeated (median), because absolute times on a
shared machine mean little:

- batched: all rows (base, SFT, SFT+DPO × chosen, rejected) in one forward pass with peft's per-row
  `adapter_names` (what `shared.logprobs.score_pair` runs);
- sequential: the same rows one forward pass each, each through its own adapter.

Prints `rows=N ratio_vs_sequential=X` (goal X <= 0.8) and the seconds the app spends on a typical pair
from text to JSON, without its result cache (goal <= 3 s on a laptop CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the benchmark is about the embedded model

from shared import logprobs  # noqa: E402
from shared.adapters import MODEL_LABELS  # noqa: E402
from shared.compute import in_fresh_thread  # noqa: E402

# A typical pair: a held-out question with a short answer against a continued web page.
PROMPT = "What is the currency of Japan?"
CHOSEN = "The currency of Japan is the yen."
REJECTED = "What is the currency of China? What is the currency of Korea? Exchange rates updated daily."


def timed(fn, *args) -> float:
    # In a short-lived thread, as the app computes (shared/compute.py explains why).
    start = time.perf_counter()
    in_fresh_thread(fn, *args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model, tokenizer = logprobs.load_lens_model()
    beta = logprobs.dpo_beta()
    pair = logprobs.tokenize_pair(tokenizer, PROMPT, CHOSEN, REJECTED)
    rows, names = logprobs._pair_batch([pair], MODEL_LABELS)
    print(
        f"pair: prompt {len(pair.prompt_ids)} tokens, chosen {len(pair.chosen_ids)}, "
        f"rejected {len(pair.rejected_ids)}; rows={len(rows)}"
    )

    def batched():
        logprobs.answer_logprobs(model, rows, names)

    def sequential():
        for row, name in zip(rows, names):
            logprobs.answer_logprobs(model, [row], [name])

    def whole_pair():  # text in, JSON out: tokenizing, the batched pass and the per-token lists
        logprobs.score_pair(model, tokenizer, PROMPT, CHOSEN, REJECTED, beta=beta)

    for fn in (batched, sequential, whole_pair):  # warm caches and allocator once
        timed(fn)
    times: dict[str, list[float]] = {"batched": [], "sequential": [], "pair": []}
    for _ in range(args.repeats):
        times["batched"].append(timed(batched))
        times["sequential"].append(timed(sequential))
        times["pair"].append(timed(whole_pair))
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"batched {median['batched']:.3f} s, sequential {median['sequential']:.3f} s (median of {args.repeats})")
    print(f"typical pair, text to JSON: {median['pair']:.2f} s (goal <= 3 s)")
    print(f"rows={len(rows)} ratio_vs_sequential={median['batched'] / median['sequential']:.2f}")


if __name__ == "__main__":
    main()
