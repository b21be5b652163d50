"""Log-probs & DPO: the one number both post-training steps change, for base, SFT and SFT+DPO, per token.

Run alone with `python spaces/logprob_lens/app.py`, or as a tab of the collection with `python app.py`.
The numbers come from shared/logprobs.py (also `python -m shared.logprobs`); the views from
shared/views/logprobs.py.
"""

from __future__ import annotations

import logging

import gradio as gr

from shared.compute import serve, start_once
from shared.logprobs import (
    MAX_TEXT_CHARS,
    cached_result,
    dpo_beta,
    load_lens_model,
    load_presets,
    read_preference_accuracy,
    score_texts,
)
from shared.views.logprobs import (
    accuracy_html,
    deltas_html,
    explainer_markdown,
    placeholder_html,
    presets_markdown,
    summary_html,
    tokens_html,
)

logger = logging.getLogger(__name__)

TITLE = "Log-probs & DPO"
PRESETS = load_presets()
TEACHING = [p for p in PRESETS if not p.heldout]
HELDOUT = [p for p in PRESETS if p.heldout]
# One pair at a time per CPU process: a pair is a single batched pass that already uses every core.
SCORE_CONCURRENCY = 1


def _beta_or_none() -> float | None:
    try:
        return dpo_beta()
    except ValueError:
        return None


def score(prompt: str, chosen: str, rejected: str) -> dict:
    """Log-probs, SFT loss and DPO's implicit rewards of one pair for base, SFT and SFT+DPO. API name: /score."""
    try:
        return score_texts(prompt, chosen, rejected)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


def render(result: dict | None):
    return summary_html(result), tokens_html(result), deltas_html(result)


def first_view():
    """The page's first view: the first preset's numbers when they are already cached (never computed here,
    so opening the page never waits for the model), and the stored held-out accuracy."""
    preset = TEACHING[0]
    result = cached_result(preset.prompt, preset.chosen, preset.rejected)
    return (result, *render(result), accuracy_html(read_preference_accuracy()))


def warm_up() -> None:
    """Load the model and score the teaching presets in the background, so they answer at once.
    Returns at once; calling it again does nothing."""
    start_once("warm-logprob-lens", _score_presets)


def _score_presets() -> None:
    try:
        load_lens_model()
        for preset in TEACHING:
            score_texts(preset.prompt, preset.chosen, preset.rejected)
        logger.info("Log-prob lens ready; %d presets cached", len(TEACHING))
    except ValueError as exc:  # e.g. adapters missing: the page says so when a pair is scored
        logger.warning("Log-prob lens warm-up stopped: %s", exc)


with gr.Blocks(title=TITLE) as demo:
    gr.Markdown(
        "## Log-probs & DPO: the alignment problem, computed\n"
        "Nobody can write *be helpful* as a loss. What a model can compute is how likely it finds a text, "
        "and post-training pushes on exactly that: **SFT** raises the log-probability of good answers, "
        "**DPO** raises the chosen answer's *relative to* the rejected one. Give a prompt and two answers; "
        "the embedded Gemma 3 270M base, base + SFT and base + SFT + DPO (this project's own adapters) score "
        "both in one batched pass."
    )
    prompt = gr.Textbox(label="Prompt (one user turn)", lines=1, max_length=MAX_TEXT_CHARS, value=TEACHING[0].prompt)
    with gr.Row():
        chosen = gr.Textbox(label="Chosen answer ✓", lines=3, max_length=MAX_TEXT_CHARS, value=TEACHING[0].chosen)
        rejected = gr.Textbox(label="Rejected answer ✗", lines=3, max_length=MAX_TEXT_CHARS, value=TEACHING[0].rejected)
    run = gr.Button("Score", variant="primary")
    inputs = [prompt, chosen, rejected]
    teaching = gr.Examples(
        examples=[[p.prompt, p.chosen, p.rejected] for p in TEACHING],
        example_labels=[p.title for p in TEACHING],
        inputs=inputs,
        label="Teaching presets",
    )
    gr.Markdown(presets_markdown(TEACHING))
    heldout = gr.Examples(
        examples=[[p.prompt, p.chosen, p.rejected] for p in HELDOUT],
        example_labels=[p.prompt for p in HELDOUT],
        inputs=inputs,
        label="Held-out preference pairs (train/data/dpo_heldout.jsonl, never trained on)",
        examples_per_page=8,
    )

    summary = gr.HTML(placeholder_html())
    with gr.Tabs():
        with gr.Tab("Which tokens moved (Δlog-prob)"):
            deltas = gr.HTML(placeholder_html())
        with gr.Tab("Per-token log-probs"):
            tokens = gr.HTML(placeholder_html())
        with gr.Tab("Raw numbers (JSON, as /score returns them)"):
            raw = gr.JSON(label="Result")
    accuracy = gr.HTML()
    gr.Markdown(explainer_markdown(_beta_or_none()))

    views = [summary, tokens, deltas]
    # Every trigger names the same group and limit, so clicks and preset picks queue behind one another.
    run.click(
        score, inputs, [raw], api_name="score", concurrency_limit=SCORE_CONCURRENCY, concurrency_id="lens"
    ).success(render, [raw], views, api_name=False)
    for examples in (teaching, heldout):
        examples.load_input_event.then(
            score, inputs, [raw], api_name=False, concurrency_limit=SCORE_CONCURRENCY, concurrency_id="lens"
        ).success(render, [raw], views, api_name=False)
    demo.load(first_view, None, [raw, *views, accuracy], api_name=False)

demo.queue(default_concurrency_limit=8)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warm_up()
    serve(demo)
