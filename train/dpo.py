"""Stage 2 of post-training: DPO that continues the SFT adapter, with the SFT model as reference.

    python train/dpo.py --config train/recipes/gemma-3-270m-offline/dpo.yaml

Settings come from TRL's `TrlParser`: dataclass defaults < the YAML recipe < command-line flags.
The recipe's `sft_adapter` names the adapter from `train/sft.py`; TRL keeps a frozen copy of it as
the reference ("ref" adapter), so DPO moves the policy away from the SFT model only as the
preference pairs ask. Multi-GPU: `accelerate launch --config_file train/accelerate/ddp.yaml …`.
"""

import dataclasses
import logging

from peft import PeftModel
from trl import DPOConfig, DPOTrainer, ModelConfig, get_quantization_config

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


def main(args: PipelineArguments, training_args: DPOConfig, model_args: ModelConfig) -> DPOTrainer:
    if not args.sft_adapter:
        raise ValueError("DPO continues an SFT adapter: set sft_adapter in the recipe or pass --sft_adapter PATH.")
    push, token = training_args.push_to_hub, training_args.hub_token
    check_can_push(training_args, token)
    training_args = dataclasses.replace(training_args, push_to_hub=False, hub_token=None)

    # ---- Data: prompt / chosen / rejected ----
    dataset = load_training_dataset(args)
    logger.info("DPO on %d preference pairs from %s", len(dataset), args.dataset_name)

    # ---- Tokenizer ----
    tokenizer = load_tokenizer(model_args.model_name_or_path, args.chat_template, training=False)

    # ---- Model: the 4-bit base with the SFT adapter, trainable ----
    base = load_base_model(model_args, get_quantization_config(model_args))
    model = PeftModel.from_pretrained(base, args.sft_adapter, is_trainable=True)

    # ---- Trainer: no ref_model, so TRL copies the SFT adapter into a frozen "ref" adapter ----
    trainer = DPOTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer)

    # ---- Train ----
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # ---- Save, evaluate, model card, push ----
    finish_stage(
        trainer, stage="dpo", args=args, model_args=model_args, training_args=training_args, push=push, token=token
    )
    return trainer


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*make_parser(DPOConfig).parse_args_and_config())
