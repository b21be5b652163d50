"""The end of every stage: save the adapter, evaluate it, write its model card, push it."""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
from pathlib import Path

from shared.chat_templates import official_template
from train.common import PipelineArguments, load_eval_prompts
from train.evaluate import evaluate, markdown_table
from train.model_card import hub_base_model, write_model_card

logger = logging.getLogger(__name__)


def lineage(stage: str, args: PipelineArguments, command: str) -> dict:
    """What pipeline.json records of where an adapter came from. A DPO round that continues an earlier DPO
    adapter (iterative DPO) still names the SFT adapter at the root, so evaluation and the model card find
    the SFT stage, plus the adapter it continued, its round and every round's data. `commands` holds every
    stage's command line in order, so the card of the last stage says how to rebuild it from the base."""
    info = {"stage": stage, "sft_adapter": args.sft_adapter, "dataset": args.dataset_name}
    info["datasets"] = [args.dataset_name]
    info["commands"] = [command]
    parent = Path(args.sft_adapter or "") / "pipeline.json"
    if stage == "dpo" and parent.is_file():
        earlier = json.loads(parent.read_text())
        info["commands"] = [*earlier.get("commands", []), command]
        if earlier.get("stage") == "dpo":
            info["sft_adapter"] = earlier["sft_adapter"]
            info["continues"] = args.sft_adapter
            info["dpo_round"] = earlier.get("dpo_round", 1) + 1
            info["datasets"] = [*earlier.get("datasets", [earlier["dataset"]]), args.dataset_name]
    return info


def finish_stage(
    trainer, *, stage: str, args: PipelineArguments, model_args, training_args, push: bool, token: str | None = None
) -> dict:
    """Save → evaluate → model card → push. Returns the evaluation results (empty without prompts).

    `token` (from `--hub_token`) is used for the push only: it is in no file written here, nor in any log.
    """
    output_dir = Path(training_args.output_dir)
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")  # DPO's frozen copy of the SFT adapter: the reference, not a result
    # Name the Hub checkpoint as the base (not this machine's cache path), as peft users expect.
    for config in getattr(model, "peft_config", {}).values():
        config.base_model_name_or_path = hub_base_model(model_args.model_name_or_path) or model_args.model_name_or_path
    trainer.save_model(str(output_dir))
    tokenizer = trainer.processing_class
    # Users of the adapter get the official inference template, not the training variant.
    tokenizer.chat_template = official_template(args.chat_template)
    tokenizer.save_pretrained(output_dir)
    info = lineage(stage, args, redacted_command(sys.argv))
    info.update(base_model=model_args.model_name_or_path, chat_template=args.chat_template)
    (output_dir / "pipeline.json").write_text(json.dumps(info, indent=2))

    # ---- Evaluate: base vs this stage (and the SFT stage it continued) ----
    results, answers = {}, None
    rows = load_eval_prompts(args.eval_prompts, args.eval_max_samples)
    if rows:
        adapters = {}
        if stage == "dpo" and info["sft_adapter"] and Path(info["sft_adapter"]).is_dir():
            adapters["sft"] = info["sft_adapter"]
        adapters["sft+dpo" if stage == "dpo" else "sft"] = str(output_dir)
        results, answers = evaluate(adapters, model_args.model_name_or_path, rows)
        logger.info("Held-out evaluation:\n%s", markdown_table(results))

    # ---- Model card ----
    write_model_card(
        output_dir,
        stage=stage,
        continues=info.get("continues"),
        base_model=model_args.model_name_or_path,
        datasets=info["datasets"],
        recipe_path=_config_path(sys.argv),
        commands=info["commands"],
        results=results,
        answers=answers,
    )

    # ---- Push ----
    if push:
        from huggingface_hub import HfApi

        api = HfApi(token=token)  # None: HF_TOKEN or the saved login, read by huggingface_hub itself
        api.create_repo(training_args.hub_model_id, exist_ok=True, private=training_args.hub_private_repo)
        api.upload_folder(
            repo_id=training_args.hub_model_id,
            folder_path=output_dir,
            ignore_patterns=["checkpoint-*", "*.pt", "runs/*"],
            commit_message=f"{stage.upper()} adapter from Post-Training Spaces",
        )
        logger.info("Pushed to https://huggingface.co/%s", training_args.hub_model_id)
    return results


_TOKEN_FLAG = "--hub_token"
# Hugging Face user access tokens start with "hf_"; any such word is scrubbed, wherever it was typed.
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{8,}")


def redacted_command(argv: list[str]) -> str:
    """The command line as the model card shows it, with any Hub token replaced by `$HF_TOKEN`."""
    shown, hide_next = [], False
    for arg in argv:
        if hide_next:
            arg, hide_next = "$HF_TOKEN", False
        elif arg == _TOKEN_FLAG:
            hide_next = True
        elif arg.startswith(_TOKEN_FLAG + "="):
            arg = _TOKEN_FLAG + "=$HF_TOKEN"
        shown.append(_TOKEN_LIKE.sub("$HF_TOKEN", arg))
    return "python " + " ".join(a if a == "$HF_TOKEN" or a.endswith("=$HF_TOKEN") else shlex.quote(a) for a in shown)


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None
