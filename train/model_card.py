"""The adapter's model card: Hub metadata, the exact recipe, sample generations and the evaluation table."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from train.common import EMBEDDED_MODEL, TINY_MODEL
from train.evaluate import FEW_SHOT_LABEL, Answer, markdown_table

# What the Hub should list as the base model of adapters trained on our stand-in names.
_HUB_BASE = {EMBEDDED_MODEL: "google/gemma-3-270m", TINY_MODEL: None}


def hub_base_model(model_name: str) -> str | None:
    return _HUB_BASE.get(model_name, model_name)


def _samples(answers: dict[str, list[Answer]], count: int = 4) -> str:
    """Before/after answers on a few held-out prompts (one of each kind where possible)."""
    labels = list(answers)
    rows, seen = [], set()
    for i, answer in enumerate(answers[labels[0]]):
        if answer.prompt["kind"] in seen:
            continue
        seen.add(answer.prompt["kind"])
        rows.append(i)
        if len(rows) == count:
            break
    blocks = []
    for i in rows:
        prompt = answers[labels[0]][i].prompt["prompt"]
        parts = [f"**Prompt:** {prompt}"]
        for label in labels:
            a = answers[label][i]
            stop = "stopped" if a.stopped else "did not stop"
            text = a.text.replace("\n", " ")[:300] or "(empty)"
            parts.append(f"- *{label}* ({stop}): {text}")
        blocks.append("\n".join(parts))
    return "\n\n".join(blocks)


def _reproduce(commands: list[str], recipe: str) -> str:
    intro, label = "", "Recipe"
    if len(commands) > 1:
        intro = (
            "The stages in order, from the base model to this adapter; each continues the adapter the one before "
            "wrote. A recipe's header names the command that made its data.\n\n"
        )
        label = "Recipe of the last stage"
    shell = "\n".join(commands)
    return f"## Reproduce\n\n{intro}```bash\n{shell}\n```\n\n{label}:\n\n```yaml\n{recipe.strip()}\n```"


EVALUATION_HEADING = "## Evaluation"


def evaluation_sections(results: dict | None, answers: dict[str, list[Answer]] | None) -> str:
    """The card's last sections: the held-out table (with the few-shot ceiling) and before/after samples."""
    if not results:
        return (
            f"{EVALUATION_HEADING}\n\nNot evaluated in this run. `python -m train.evaluate --adapter <folder> "
            "--write_cards` scores it on the held-out prompts and writes the table here."
        )
    text = (
        f"{EVALUATION_HEADING} (held-out prompts, greedy, chat template, ≤ 128 new tokens)\n\n"
        + markdown_table(results)
        + "\n\n*Retained*: of the factual questions the base answers right as raw few-shot text, the share this "
        "model answers right. *Harmful refused* counts clean refusals only; *refuse-then-comply* counts refusals "
        "followed by the help they refused."
    )
    if answers:
        text += "\n\n## Before / after\n\n" + _samples({k: v for k, v in answers.items() if k != FEW_SHOT_LABEL})
    return text


def update_evaluation(output_dir: str | Path, results: dict, answers: dict[str, list[Answer]] | None) -> None:
    """Replace the evaluation sections of an adapter's existing card (written by `write_model_card`)."""
    path = Path(output_dir) / "README.md"
    content = path.read_text(encoding="utf-8")
    head = content.split(f"\n{EVALUATION_HEADING}", 1)[0].rstrip("\n")
    path.write_text(f"{head}\n\n{evaluation_sections(results, answers)}\n", encoding="utf-8")


def write_model_card(
    output_dir: str | Path,
    *,
    stage: str,
    continues: str | None = None,
    base_model: str,
    datasets: list[str],
    recipe_path: str | None,
    commands: list[str],
    results: dict | None,
    answers: dict[str, list[Answer]] | None,
) -> ModelCard:
    """Write README.md into the adapter folder (and return the card). `commands`: every stage's command line,
    this stage's last (see `train.publish.lineage`)."""
    base = hub_base_model(base_model)
    data = ModelCardData(
        base_model=base,
        datasets=[d for d in datasets if "/" in d and not d.endswith(".jsonl")] or None,
        library_name="peft",
        pipeline_tag="text-generation",
        tags=["trl", stage, "qlora", "lora", "post-training-spaces"],
    )
    recipe = Path(recipe_path).read_text(encoding="utf-8") if recipe_path else "(defaults and command-line flags only)"
    what = {
        "sft": "supervised fine-tuning (SFT) with an assistant-only loss",
        "dpo": "direct preference optimization (DPO), continuing the SFT adapter with the SFT model as reference",
    }[stage]
    if continues:
        what = (
            "direct preference optimization (DPO) in rounds: this round continues the earlier DPO adapter "
            f"`{continues}` with it as reference, on pairs from that adapter's own answers"
        )
    sections = [
        f"# {Path(output_dir).name}",
        f"A LoRA adapter for `{base or base_model}`, trained with QLoRA (4-bit NF4 base) by {what}, "
        "as part of Post-Training Spaces.",
        "## Use it\n\n```python\nfrom peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base or "<base model>"}")\n'
        'model = PeftModel.from_pretrained(base, "<this adapter>")\n'
        'tokenizer = AutoTokenizer.from_pretrained("<this adapter>")  # carries the chat template\n```',
        f"## Training data\n\n{', '.join(f'`{d}`' for d in datasets)}",
        _reproduce(commands, recipe),
    ]
    sections.append(evaluation_sections(results, answers))
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    card = ModelCard(content)
    card.save(Path(output_dir) / "README.md")
    return card
