"""LoRA / QLoRA calculator: exact trainable parameters and the memory bill of fine-tuning a real model.

    python spaces/lora_calculator/app.py

The arithmetic lives in shared/memory.py (also a command line: `python -m shared.memory --help`) and the
page's Markdown and tables in shared/views/calculator.py; this file is layout and wiring only.

A visitor picks a preset, types a Hub id or a "DxD" matrix, or uploads a config.json. A typed text is never
opened as a path on the server, and no message shows where the server keeps an upload.
"""

from __future__ import annotations

import os

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

from shared import memory
from shared.apps import mcp_available
from shared.compute import serve, start_once
from shared.memory import METHODS, OPTIMIZERS, PRECISIONS, TrainingSetup
from shared.views.calculator import (
    METHOD_ORDER,
    PART_COLORS,
    chart_table,
    fits_table,
    modules_table,
    notes_markdown,
    summary_markdown,
)

TITLE = "LoRA / QLoRA memory"
DEFAULT_MODEL = "llama-3.2-1b"
# What the page shows first, by `calculate`'s parameter names (and in their order).
DEFAULTS = {
    "model": DEFAULT_MODEL,
    "config_file": None,
    "method": "lora",
    "precision": "bf16",
    "optimizer": "adamw",
    "rank": 16,
    "alpha": 32,
    "targets": "all-linear",
    "batch_size": 1,
    "seq_len": 1024,
    "checkpointing": False,
    "double_quant": True,
}
EXAMPLE_MODELS = memory.preset_names() + ["4096x4096"]
# The one answer for an upload that cannot be opened, wherever it points: no hint about the server's files.
UPLOAD_UNREADABLE = "The uploaded config could not be read: upload the config.json again."


def _uploaded_architecture(config_file) -> memory.Architecture:
    """The uploaded config.json, read only from gradio's upload folder and named by its base name."""
    if not isinstance(config_file, (str, os.PathLike)) or not str(config_file).strip():
        raise ValueError(UPLOAD_UNREADABLE)
    try:
        path = os.path.realpath(config_file)
        # gradio already only hands over files it received; checking again here keeps a direct call of
        # `calculate` from reading anything else.
        readable = is_in_or_equal(path, get_upload_folder()) and os.path.isfile(path)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        readable = False
    if not readable:
        raise ValueError(UPLOAD_UNREADABLE)
    return memory.resolve_upload(path, name=os.path.basename(str(config_file)))


def calculate(
    model,
    config_file,
    method,
    precision,
    optimizer,
    rank,
    alpha,
    targets,
    batch_size,
    seq_len,
    checkpointing,
    double_quant,
):
    """Trainable parameters and the training-memory bill of fine-tuning a model with full fine-tuning, LoRA or QLoRA.

    Everything the page shows, for one set of inputs (no state is kept between calls).

    Args:
        model: A preset model name (e.g. "llama-3.2-1b", "gemma-3-1b", "qwen2.5-7b"), a Hub model id
            ("org/name"; only its config.json is read), or "4096x4096" for one square layer.
        config_file: Optional uploaded config.json of a Llama-style decoder; used instead of `model` when given.
        method: "full", "lora" or "qlora" (the method the summary and per-module table describe).
        precision: Weight and compute precision: "fp32", "bf16" or "bf16-mixed".
        optimizer: "adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit" or "sgd".
        rank: LoRA rank r (trainable parameters per adapted layer: r x (in + out)), at most the layer width.
        alpha: LoRA alpha (scaling alpha / r); does not change memory.
        targets: Which linear layers LoRA adapts: "all-linear", "attention", or module names, as a list or
            separated by commas, e.g. ["q_proj", "v_proj"] or "q_proj,v_proj".
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        checkpointing: Whether activation (gradient) checkpointing is on.
        double_quant: Whether QLoRA also quantizes its quantization constants.

    Returns:
        A Markdown summary, trainable parameters per module kind, the memory breakdown (GB) of all three
        methods, which GPUs each fits on, and notes.
    """
    try:
        # The cheap checks first: a bad rank or sequence length is refused before any model is built.
        setup = TrainingSetup.from_form(
            method, precision, optimizer, rank, alpha, targets, batch_size, seq_len, checkpointing, double_quant
        )
        arch = _uploaded_architecture(config_file) if config_file else memory.resolve_model(model)
        estimates = {e.setup.method: e for e in memory.compare_methods(arch, setup)}
    except ValueError as exc:
        # A visitor's mistake, answered in one sentence: no traceback in the server's log either.
        raise gr.Error(" ".join(str(exc).split()), print_exception=False) from None
    chosen = estimates[setup.method]
    return (
        summary_markdown(chosen),
        modules_table(chosen),
        chart_table(estimates),
        fits_table(estimates),
        notes_markdown(chosen, arch),
    )


def calculate_as_you_type(*inputs):
    """`calculate` for the live triggers: a half-typed value (an empty rank box) must not pop an error up.

    The last good result stays on screen and the summary says what is wrong; the Calculate button still raises
    the error as a toast.
    """
    try:
        return calculate(*inputs)
    except gr.Error as exc:
        return (f"**Not recalculated:** {exc.message}",) + (gr.skip(),) * 4


def warm_up() -> None:
    """Import transformers and build the default preset in the background, so the page's first result does
    not wait for them. Returns at once; calling it again does nothing."""
    start_once("warm-calculator", lambda: memory.resolve_model(DEFAULT_MODEL))


with gr.Blocks(title=TITLE) as demo:
    gr.Markdown(
        "# LoRA / QLoRA calculator\n"
        "Pick a real model and see what fine-tuning it costs: how many parameters LoRA actually trains "
        "(r·(d_in + d_out) per adapted layer) and where the GPU memory goes. Models are built empty from their "
        "config, so nothing is downloaded. Try `4096x4096` with rank 16 for the lesson's single matrix."
    )
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(
                EXAMPLE_MODELS,
                value=DEFAULTS["model"],
                allow_custom_value=True,
                label="Model: a preset, any Hub id (org/name, config only), or a matrix like 4096x4096",
            )
            config_file = gr.File(
                label="…or upload a config.json (used instead when given)", file_types=[".json"], type="filepath"
            )
            method = gr.Radio(list(METHODS), value=DEFAULTS["method"], label="Method")
            with gr.Row():
                precision = gr.Radio(
                    list(PRECISIONS),
                    value=DEFAULTS["precision"],
                    label="Precision",
                    info="bf16: bf16 weights and grads, fp32 AdamW moments. bf16-mixed: AMP, fp32 master weights.",
                )
                optimizer = gr.Dropdown(list(OPTIMIZERS), value=DEFAULTS["optimizer"], label="Optimizer")
            with gr.Row():
                batch_size = gr.Number(
                    value=DEFAULTS["batch_size"], precision=0, minimum=1, maximum=memory.MAX_BATCH, label="Batch size"
                )
                seq_len = gr.Number(
                    value=DEFAULTS["seq_len"],
                    precision=0,
                    minimum=1,
                    maximum=memory.MAX_SEQ_LEN,
                    label="Sequence length (tokens)",
                )
                checkpointing = gr.Checkbox(value=DEFAULTS["checkpointing"], label="Gradient checkpointing")
        with gr.Column(scale=1):
            rank = gr.Number(
                value=DEFAULTS["rank"], precision=0, minimum=1, maximum=memory.MAX_WIDTH, label="LoRA rank r"
            )
            alpha = gr.Number(value=DEFAULTS["alpha"], label="LoRA alpha (scaling α/r; no effect on memory)")
            targets = gr.Dropdown(
                ["all-linear", "attention"],
                value=DEFAULTS["targets"],
                allow_custom_value=True,
                label="Target modules: all-linear, attention, or a list like q_proj,v_proj",
            )
            double_quant = gr.Checkbox(
                value=DEFAULTS["double_quant"], label="QLoRA double quantization (8-bit absmax constants)"
            )
            button = gr.Button("Calculate", variant="primary")
    summary = gr.Markdown()
    chart = gr.BarPlot(
        x="method",
        y="GB",
        color="part",
        color_map=PART_COLORS,
        sort=METHOD_ORDER,
        title="Memory for one training step: full vs LoRA vs QLoRA",
        y_title="GB",
        x_title="",
        y_aggregate="sum",
        height=380,
    )
    modules = gr.Dataframe(label="Trainable parameters per module kind", interactive=False)
    fits = gr.Dataframe(label="Which GPUs it fits on", interactive=False)
    notes = gr.Markdown()

    # The training setup's controls, in TrainingSetup's field order: what `calculate` takes after the model.
    training = [method, precision, optimizer, rank, alpha, targets, batch_size, seq_len, checkpointing, double_quant]
    inputs = [model, config_file, *training]
    outputs = [summary, modules, chart, fits, notes]
    gr.on([button.click, demo.load], calculate, inputs, outputs, api_name="calculate")
    # Every control that changes the bill recalculates at once (alpha does not change memory). Only the newest
    # change runs, so holding a spin button down does not queue a calculation per step.
    gr.on(
        [c.change for c in inputs if c is not alpha],
        calculate_as_you_type,
        inputs,
        outputs,
        api_name=False,
        trigger_mode="always_last",
        show_progress="minimal",
    )


if __name__ == "__main__":
    warm_up()
    serve(demo, mcp_server=mcp_available())  # also an MCP tool server when gradio[mcp] is installed
