"""LoRA / QLoRA calculator: exact trainable parameters and the memory bill of fine-tuning a real model.

    python spaces/lora_calculator/app.py

The arithmetic lives in shared/memory.py (also a command line: `python -m shared.memory --help`); this file
is layout and wiring only.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from shared import memory
from shared.apps import mcp_available
from shared.memory import GB, GPUS, METHODS, OPTIMIZERS, PRECISIONS, TrainingSetup

METHOD_LABELS = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
PART_COLORS = {  # one colour per slice of the stacked bars
    "Weights": "#4C78A8",
    "Quantization constants": "#9ECAE9",
    "Gradients": "#F58518",
    "Optimizer states": "#E45756",
    "Activations": "#54A24B",
    "Framework overhead": "#BAB0AC",
}
EXAMPLE_MODELS = memory.preset_names() + ["4096x4096"]


def calculate(model, config_file, method, precision, optimizer, rank, alpha, targets, batch_size, seq_len,
              checkpointing, double_quant):
    """Trainable parameters and the training-memory bill of fine-tuning a model with full fine-tuning, LoRA or QLoRA.

    Everything the page shows, for one set of inputs (no state is kept between calls).

    Args:
        model: A preset model name (e.g. "llama-3.2-1b", "gemma-3-1b", "qwen2.5-7b") or "4096x4096" for one square layer.
        config_file: Optional path to a model's config.json; used instead of `model` when given.
        method: "full", "lora" or "qlora" (the method the summary and per-module table describe).
        precision: Weight and compute precision: "fp32", "bf16" or "bf16-mixed".
        optimizer: "adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit" or "sgd".
        rank: LoRA rank r (trainable parameters per adapted layer: r x (in + out)).
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
        source = config_file or model
        arch = memory.resolve_model(source)
        setup = TrainingSetup(
            method=method, precision=precision, optimizer=optimizer, rank=int(rank or 0),
            alpha=float(alpha) if alpha else None, targets=targets, batch_size=int(batch_size or 0),
            seq_len=int(seq_len or 0), gradient_checkpointing=bool(checkpointing), double_quant=bool(double_quant),
        )
        setup.validate()
        estimates = {e.setup.method: e for e in memory.compare_methods(arch, setup)}
    except ValueError as exc:
        raise gr.Error(str(exc)) from exc
    chosen = estimates[method]
    return (
        _summary(chosen),
        _modules_table(chosen),
        _chart(estimates),
        _fits_table(estimates),
        "\n".join(f"- {n}" for n in chosen.notes + _activation_notes(arch)) or "",
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


def _summary(est: memory.MemoryEstimate) -> str:
    s = est.setup
    lines = [f"### {est.model}: {METHOD_LABELS[s.method]}"]
    lines.append(f"**{est.trainable_params:,}** trainable of {est.total_params:,} parameters "
                 f"(**{est.trainable_percent:.3g} %**, as peft reports it)")
    if s.method != "full":
        scale = (s.alpha or 2 * s.rank) / s.rank
        lines.append(f"Rank {s.rank}, scaling α/r = {scale:g}: each adapted W becomes W + {scale:g}·B·A.")
    parts = ", ".join(f"{label.lower()} {memory.format_gb(est.bytes[key])}" for key, label in memory.BAR_PARTS
                      if est.bytes[key])
    lines.append(f"Memory: **{memory.format_gb(est.bytes['total'])}** = {parts}.")
    return "\n\n".join(lines)


def _modules_table(est: memory.MemoryEstimate) -> pd.DataFrame:
    rows = [
        {"module": m.module, "count": m.count, "d_in": m.d_in, "d_out": m.d_out,
         "r·(d_in + d_out)": m.params_each, "trainable": m.params}
        for m in est.modules
    ]
    return pd.DataFrame(rows, columns=["module", "count", "d_in", "d_out", "r·(d_in + d_out)", "trainable"])


def _chart(estimates: dict[str, memory.MemoryEstimate]) -> pd.DataFrame:
    rows = [
        {"method": METHOD_LABELS[method], "part": label, "GB": round(est.bytes[key] / GB, 3)}
        for method, est in estimates.items()
        for key, label in memory.BAR_PARTS
    ]
    return pd.DataFrame(rows)


def _fits_table(estimates: dict[str, memory.MemoryEstimate]) -> pd.DataFrame:
    table = {"GPU": [f"{gpu} — {capacity / GB:.1f} GB usable" for gpu, capacity in GPUS.items()]}
    for method, est in estimates.items():
        fits = est.fits()
        table[f"{METHOD_LABELS[method]} ({memory.format_gb(est.bytes['total'])})"] = [
            "fits" if fits[gpu] else "—" for gpu in GPUS
        ]
    return pd.DataFrame(table)


def _activation_notes(arch: memory.Architecture) -> list[str]:
    if arch.text is None:
        return ["A single matrix has no activations to model: only weights, gradients and optimizer states count."]
    notes = []
    if arch.text.family == "llama" and arch.model_type not in ("llama", "mistral", "qwen2"):
        notes.append(f"Activations use the Llama layer layout for `{arch.model_type}` (not measured for it).")
    return notes


with gr.Blocks(title="LoRA / QLoRA calculator") as demo:
    gr.Markdown(
        "# LoRA / QLoRA calculator\n"
        "Pick a real model and see what fine-tuning it costs: how many parameters LoRA actually trains "
        "(r·(d_in + d_out) per adapted layer) and where the GPU memory goes. Models are built empty from their "
        "config, so nothing is downloaded. Try `4096x4096` with rank 16 for the lesson's single matrix."
    )
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(
                EXAMPLE_MODELS, value="llama-3.2-1b", allow_custom_value=True,
                label="Model: a preset, any Hub id (org/name, config only), or a matrix like 4096x4096",
            )
            config_file = gr.File(label="…or upload a config.json (used instead when given)", file_types=[".json"],
                                  type="filepath")
            method = gr.Radio(list(METHODS), value="lora", label="Method")
            with gr.Row():
                precision = gr.Radio(list(PRECISIONS), value="bf16", label="Precision",
                                     info="bf16: bf16 weights and grads, fp32 AdamW moments. bf16-mixed: AMP, fp32 master weights.")
                optimizer = gr.Dropdown(list(OPTIMIZERS), value="adamw", label="Optimizer")
            with gr.Row():
                batch_size = gr.Number(value=1, precision=0, minimum=1, label="Batch size")
                seq_len = gr.Number(value=1024, precision=0, minimum=1, label="Sequence length (tokens)")
                checkpointing = gr.Checkbox(value=False, label="Gradient checkpointing")
        with gr.Column(scale=1):
            rank = gr.Number(value=16, precision=0, minimum=1, label="LoRA rank r")
            alpha = gr.Number(value=32, label="LoRA alpha (scaling α/r; no effect on memory)")
            targets = gr.Dropdown(["all-linear", "attention"], value="all-linear", allow_custom_value=True,
                                  label="Target modules: all-linear, attention, or a list like q_proj,v_proj")
            double_quant = gr.Checkbox(value=True, label="QLoRA double quantization (8-bit absmax constants)")
            button = gr.Button("Calculate", variant="primary")
    summary = gr.Markdown()
    chart = gr.BarPlot(
        x="method", y="GB", color="part", color_map=PART_COLORS, sort=[METHOD_LABELS[m] for m in METHODS],
        title="Memory for one training step: full vs LoRA vs QLoRA", y_title="GB", x_title="",
        y_aggregate="sum", height=380,
    )
    modules = gr.Dataframe(label="Trainable parameters per module kind", interactive=False)
    fits = gr.Dataframe(label="Which GPUs it fits on", interactive=False)
    notes = gr.Markdown()

    inputs = [model, config_file, method, precision, optimizer, rank, alpha, targets, batch_size, seq_len,
              checkpointing, double_quant]
    outputs = [summary, modules, chart, fits, notes]
    gr.on([button.click, demo.load], calculate, inputs, outputs, api_name="calculate")
    # Every control that changes the bill recalculates at once (alpha does not change memory). Only the newest
    # change runs, so holding a spin button down does not queue a calculation per step.
    live = [model, config_file, method, precision, optimizer, rank, targets, batch_size, seq_len, checkpointing,
            double_quant]
    gr.on([c.change for c in live], calculate_as_you_type, inputs, outputs, api_name=False,
          trigger_mode="always_last", show_progress="minimal")


if __name__ == "__main__":
    demo.launch(mcp_server=mcp_available())  # also an MCP tool server when gradio[mcp] is installed
