"""Stage 1 of post-training: QLoRA supervised fine-tuning with an assistant-only loss.

    python train/sft.py --config train/recipes/gemma-3-270m-offline/sft.yaml

Settings come from TRL's `TrlParser`: dataclass defaults < the YAML recipe < command-line flags, e.g.
`--num_train_epochs 1` or `--push_to_hub --hub_model_id you/gemma-3-270m-sft`.
Multi-GPU: `accelerate launch --config_file train/accelerate/ddp.yaml train/sft.py --config …`.
"""

import dataclasses
import logging

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

from train.common import (
    PipelineArguments,
    check_can_push,
    load_base_model,
    load_tokenizer,
    load_training_dataset,
    make_parser,
)
from train.publish import finish_stage

logger = logging.getLogger(__name__)


def main(args: PipelineArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    # The Trainer would push checkpoints itself; we push once, with our model card, at the end. The token
    # leaves the arguments here: the Trainer saves them (training_args.bin), and only the push needs it.
    push, token = training_args.push_to_hub, training_args.hub_token
    check_can_push(training_args, token)  # before any work: a missing token fails now, not after training
    training_args = dataclasses.replace(training_args, push_to_hub=False, hub_token=None)

    # ---- Data ----
    dataset = load_training_dataset(args)
    logger.info("SFT on %d conversations from %s", len(dataset), args.dataset_name)

    # ---- Tokenizer: the training template marks assistant turns for the loss mask ----
    tokenizer = load_tokenizer(model_args.model_name_or_path, args.chat_template, training=True)

    # ---- Model: frozen base (4-bit NF4 for QLoRA) + a fresh LoRA adapter ----
    model = load_base_model(model_args, get_quantization_config(model_args))

    # ---- Trainer ----
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )

    # ---- Train ----
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # ---- Save, evaluate, model card, push ----
    finish_stage(
        trainer, stage="sft", args=args, model_args=model_args, training_args=training_args, push=push, token=token
    )
    return trainer


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*make_parser(SFTConfig).parse_args_and_config())
