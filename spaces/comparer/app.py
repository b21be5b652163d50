"""Base vs aligned: the same prompt to a pretrained model and its post-trained sibling, side by side.

Run alone with `python spaces/comparer/app.py`, or as a tab of the collection with `python app.py`.
"""

from __future__ import annotations

import spaces  # first: on a ZeroGPU Space it must patch CUDA before torch is imported; a no-op elsewhere

# isort: split
import logging
import math

import gradio as gr

from shared.comparer import COLUMN_LABELS, PRESET_PROMPTS, make_columns
from shared.compute import serve, start_once, zero_gpu_active
from shared.generation import (
    MAX_NEW_TOKENS_CAP,
    MAX_PROMPT_TOKENS,
    GenerationSettings,
    ResultCache,
    build_input_ids,
    generate_columns,
    input_segments,
    stream_columns,
)
from shared.presets import DEFAULT_PAIR, ON_SPACES, PRESETS, ModelPair
from shared.views.comparer import (
    column_header,
    column_stats,
    degeneration_note,
    end_of_turn_frame,
    gated_note,
    top_next_confidences,
)

logger = logging.getLogger(__name__)

TITLE = "Base vs aligned"

# Load the default pair at import time, on the main thread: on ZeroGPU, `.to("cuda")` there only
# registers the weights, which every GPU worker then gets (shared/compute.py has the thread rule).
# Offline this converts the embedded model once; later starts read the cached safetensors.
_DEFAULT_COLUMNS = make_columns(PRESETS[DEFAULT_PAIR], pin=True)
DEFAULT_BASE, DEFAULT_ALIGNED = _DEFAULT_COLUMNS[0].served, _DEFAULT_COLUMNS[1].served
# Finished greedy results, shared by every visitor: deterministic, so safe to replay to anyone. It lives
# in the main process: on ZeroGPU the GPU function runs in a forked worker whose writes are lost.
RESULTS = ResultCache()
# One generation at a time per CPU process (two cores are already busy with one batch);
# on a ZeroGPU Space each call gets its own GPU slice, so a few may run side by side.
GENERATE_CONCURRENCY = 3 if ON_SPACES else 1
# GPU seconds a call books (ZeroGPU): start-up, plus generation at a conservative rate per column.
GPU_BASE_S = 10
GPU_TOKENS_PER_S_PER_COLUMN = 40
GPU_MAX_S = 120


def _settings(max_new_tokens, do_sample, temperature, top_p, seed) -> GenerationSettings:
    try:
        settings = GenerationSettings(int(max_new_tokens), bool(do_sample), float(temperature), float(top_p), int(seed))
    except (TypeError, ValueError, OverflowError):  # None, "abc", nan, inf from the API
        raise ValueError("The decoding settings must be finite numbers (max new tokens and seed whole).") from None
    if not 0 <= settings.seed < 2**32:
        raise ValueError("The seed must be between 0 and 4294967295.")
    return settings.validated()


def _render(columns, results, final: bool):
    """One tuple of component values for the whole page, in the order of `OUTPUTS`."""
    values = []
    for column, result in zip(columns, results):
        values += [
            column_header(column),
            input_segments(result.input_ids, column.served.tokenizer),
            result.error and f"⚠️ {result.error}" or result.text,
            column_stats(result),
            top_next_confidences(result),
        ]
    for label in COLUMN_LABELS[len(columns) :]:  # slots this pair has no model for
        values += [f"### {label}\nNot available for this model pair.", None, "", "", None]
    # Refresh the plot every 8 tokens and at the end. Never send it an empty table: gradio's plot then
    # stops drawing the lines of later updates (seen in Chromium with gradio 6.31).
    has_data = any(r.end_of_turn_probs for r in results)
    refresh = final or len(results[0].generated_ids) % 8 == 0
    values.append(end_of_turn_frame(results) if has_data and refresh else gr.skip())
    return tuple(values)


def gpu_duration(prompt, base_id, aligned_id, settings) -> int:
    """Seconds of GPU to book for one call (ZeroGPU counts them against the visitor's daily quota):
    sized to the work, columns × new tokens, so a short question spends little of it."""
    columns = len(COLUMN_LABELS)
    return min(GPU_MAX_S, GPU_BASE_S + math.ceil(columns * settings.max_new_tokens / GPU_TOKENS_PER_S_PER_COLUMN))


@spaces.GPU(duration=gpu_duration)
def compare_on_gpu(prompt, base_id, aligned_id, settings):
    """The only place that generates. On ZeroGPU it runs in a forked GPU worker: the models are the ones
    the main process loaded before the fork, and what it yields (column results) is pickled back."""
    try:
        columns = make_columns(ModelPair("custom", base_id, aligned_id))
        yield from stream_columns(columns, prompt, settings)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


def compare(prompt, base_id, aligned_id, max_new_tokens, do_sample, temperature, top_p, seed):
    """Stream every column for one prompt. API name: /compare.

    A plain step in the main process: it loads the models (outside any GPU time), answers a repeated
    greedy request from the shared cache without booking a GPU, and otherwise streams the GPU function's
    results and records them for the next visitor.
    """
    try:
        settings = _settings(max_new_tokens, do_sample, temperature, top_p, seed)
        columns = make_columns(ModelPair("custom", base_id, aligned_id))
        if not prompt or not prompt.strip():
            raise ValueError("Type a prompt (or pick a preset) first.")
        key = RESULTS.key(columns, prompt, settings)
        cached = RESULTS.get(key)
        if cached is not None:
            yield _render(columns, cached, final=True)
            return
        # Inputs no column can take are refused here, before a GPU is booked.
        errors = []
        for column in columns:
            try:
                build_input_ids(column, prompt)
            except ValueError as exc:
                errors.append(str(exc))
        if len(errors) == len(columns):
            raise ValueError(errors[0])
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    results = None
    for results in compare_on_gpu(prompt, base_id, aligned_id, settings):
        yield _render(columns, results, final=all(r.done for r in results))
    if results is not None:
        RESULTS.put(key, results)


def load_models(pair_key, progress=gr.Progress()):
    """Load a preset pair (with a progress bar on first use) and say which models serve."""
    pair = PRESETS.get(pair_key)
    if pair is None:
        raise gr.Error("Unknown preset: pick one from the list.")
    try:
        columns = make_columns(pair, progress=lambda f, desc: progress(f, desc=desc))
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    return pair.base_id, pair.aligned_id, degeneration_note(columns[0].served, columns[1].served)


def describe_custom(base_id, aligned_id, progress=gr.Progress()):
    try:
        columns = make_columns(ModelPair("custom", base_id, aligned_id), progress=lambda f, d: progress(f, desc=d))
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    return degeneration_note(columns[0].served, columns[1].served)


def warm_up() -> None:
    """Fill the result cache for every preset prompt on the default pair in the background, so clicking
    one is instant. Not on ZeroGPU: there is no GPU outside `@spaces.GPU`, and the first visitor to click
    a preset fills the same cache through the GPU function instead."""
    if not zero_gpu_active():
        start_once("warm-presets", _cache_presets)


def _cache_presets() -> None:
    settings = GenerationSettings()
    for preset in PRESET_PROMPTS:
        key = RESULTS.key(_DEFAULT_COLUMNS, preset.prompt, settings)
        if RESULTS.get(key) is None:
            RESULTS.put(key, generate_columns(_DEFAULT_COLUMNS, preset.prompt, settings))
    logger.info("Preset results cached for %d prompts", len(PRESET_PROMPTS))


with gr.Blocks(title=TITLE) as demo:
    gr.Markdown(
        "## Base vs aligned: the completion trap\n"
        "The same prompt goes to a **base** model (the raw text, exactly as it saw web pages in "
        "pretraining) and to an **aligned** model (the prompt wrapped in its chat template). "
        "Both stream at the same time. Under each column: the exact text the model received, why it "
        "stopped, and its first five guesses for the next token."
    )
    with gr.Row():
        pair = gr.Dropdown(list(PRESETS), value=DEFAULT_PAIR, label="Model pair", scale=1)
        base_id = gr.Textbox(PRESETS[DEFAULT_PAIR].base_id, label="Base model (any Hub id)", scale=2)
        aligned_id = gr.Textbox(PRESETS[DEFAULT_PAIR].aligned_id, label="Aligned model (any Hub id)", scale=2)
    serving = gr.Markdown(degeneration_note(DEFAULT_BASE, DEFAULT_ALIGNED))
    if note := gated_note(ON_SPACES):
        gr.Markdown(note)
    prompt = gr.Textbox(
        label=f"Prompt (up to {MAX_PROMPT_TOKENS} tokens)", lines=2, placeholder="Ask something, or pick a preset below"
    )
    with gr.Accordion("Decoding", open=False):
        gr.Markdown(
            "Greedy decoding by default: the same prompt always gives the same text, so the columns are a fair "
            "comparison."
        )
        with gr.Row():
            max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS_CAP, value=96, step=1, label="Max new tokens")
            do_sample = gr.Checkbox(False, label="Sample instead of greedy")
            temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
            seed = gr.Number(0, precision=0, label="Seed")
    run = gr.Button("Compare", variant="primary")

    outputs = []
    with gr.Row(equal_height=False):
        for label in COLUMN_LABELS:
            with gr.Column():
                outputs += [
                    gr.Markdown(f"### {label}"),
                    gr.HighlightedText(
                        label="Exact text the model received",
                        combine_adjacent=False,
                        show_legend=True,
                        color_map={"special token": "#f59e0b"},
                    ),
                    gr.Textbox(label="Output", lines=8, autoscroll=True, buttons=["copy"]),
                    gr.Markdown(),
                    gr.Label(label="Top-5 next tokens at the first answer position", num_top_classes=5),
                ]
    plot = gr.LinePlot(
        x="step",
        y="p_end_of_turn",
        color="model",
        y_title="p(end-of-turn)",
        title="Probability of the end-of-turn token at each generated step",
        y_lim=[0, 1],
        height=260,
    )
    outputs.append(plot)

    inputs = [prompt, base_id, aligned_id, max_new_tokens, do_sample, temperature, top_p, seed]
    examples = gr.Examples(
        examples=[[p.prompt] for p in PRESET_PROMPTS],
        example_labels=[p.prompt.replace("\n", " ") for p in PRESET_PROMPTS],
        inputs=[prompt],
        label="Preset prompts",
    )
    gr.Markdown(
        "\n".join(f"- **{p.prompt.splitlines()[0]}** — {p.shows}" for p in PRESET_PROMPTS),
        label="What each preset shows",
    )

    run.click(
        compare, inputs, outputs, api_name="compare", concurrency_limit=GENERATE_CONCURRENCY, concurrency_id="generate"
    )
    # Every trigger names the same group and limit: one left without a limit would let the group run 8 at once.
    prompt.submit(
        compare, inputs, outputs, api_name=False, concurrency_limit=GENERATE_CONCURRENCY, concurrency_id="generate"
    )
    # Clicking a preset fills the prompt, then runs it (instant once the preset's result is cached).
    examples.load_input_event.then(
        compare, inputs, outputs, api_name=False, concurrency_limit=GENERATE_CONCURRENCY, concurrency_id="generate"
    )
    pair.change(load_models, [pair], [base_id, aligned_id, serving], api_name="load_pair")
    gr.on([base_id.submit, aligned_id.submit], describe_custom, [base_id, aligned_id], [serving], api_name=False)

demo.queue(default_concurrency_limit=8)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warm_up()
    serve(demo)
