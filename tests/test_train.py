"""train/: tiny QLoRA SFT then DPO on the CPU through the real 4-bit path, recipes, model cards, push checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from trl import DPOConfig, SFTConfig

from shared.compute import cpu_has_fast_bf16
from train.common import REPO_DIR, check_can_push, guanaco_to_messages, make_parser

RECIPES = sorted((REPO_DIR / "train" / "recipes").glob("*/*.yaml"))


def parse(config_class, recipe: Path, *flags: str):
    return make_parser(config_class).parse_args_and_config(args=["--config", str(recipe), *flags])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_parses_against_the_dataclasses(recipe):
    """No drift: a key no dataclass defines fails here, not in a user's terminal."""
    config_class = SFTConfig if recipe.stem == "sft" else DPOConfig
    args, training_args, model_args = parse(config_class, recipe)
    keys = set(yaml.safe_load(recipe.read_text()))
    known = {f for obj in (args, training_args, model_args) for f in vars(obj)}
    assert keys <= known, f"unknown keys: {keys - known}"
    assert model_args.load_in_4bit and model_args.use_bnb_nested_quant and model_args.bnb_4bit_quant_type == "nf4"
    if recipe.stem == "sft":
        assert training_args.assistant_only_loss and model_args.use_peft
    else:
        assert args.sft_adapter, "DPO continues an SFT adapter"
    assert training_args.use_cpu  # no GPU here
    assert training_args.bf16 == cpu_has_fast_bf16() and model_args.dtype == (
        "bfloat16" if training_args.bf16 else "float32"
    )


def test_guanaco_text_becomes_messages():
    text = "### Human: Hi there### Assistant: Hello! How can I help?### Human: A joke?### Assistant: Sure."
    assert guanaco_to_messages(text) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "A joke?"},
        {"role": "assistant", "content": "Sure."},
    ]


def _lora_state(model, adapter="default"):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n and f".{adapter}." in n}


def _base_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    from train import sft

    out = tmp_path_factory.mktemp("sft")
    args, training_args, model_args = parse(
        SFTConfig, REPO_DIR / "train/recipes/tiny/sft.yaml", "--output_dir", str(out), "--eval_max_samples", "4"
    )
    # The 4-bit base as loaded before training: training must leave it exactly as it was.
    from trl import get_quantization_config

    from train.common import load_base_model

    base_before = _base_state(load_base_model(model_args, get_quantization_config(model_args)))
    with pytest.MonkeyPatch.context() as patch:  # as if run from the shell: the card records the command
        patch.setattr(sys, "argv", ["train/sft.py", "--config", "train/recipes/tiny/sft.yaml"])
        trainer = sft.main(args, training_args, model_args)
    return out, trainer, base_before


def test_tiny_qlora_sft_trains_the_adapter_only(sft_run):
    out, trainer, base_before = sft_run
    model = trainer.model
    linear4bit = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert linear4bit, "the base must really be 4-bit (bitsandbytes NF4)"
    assert linear4bit[0].weight.quant_state.quant_type == "nf4"
    lora = _lora_state(model)
    assert any(n.endswith("lora_B.default.weight") for n in lora)
    # lora_B starts at zero; after training it is not.
    assert any(p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
    base_after = _base_state(model.get_base_model())
    stripped = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in base_after.items()}
    for name, before in base_before.items():
        assert torch.equal(stripped[name], before), f"base weight {name} changed"
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)  # logged at each of the 2 steps


def test_sft_loss_is_on_assistant_tokens_only(sft_run):
    _, trainer, _ = sft_run
    row = trainer.train_dataset[0]
    mask = [label != -100 for label in row["labels"]]  # TRL turns the assistant mask into -100 labels
    assert len(mask) == len(row["input_ids"])
    tokenizer = trainer.processing_class
    trained = tokenizer.decode([t for t, m in zip(row["input_ids"], mask) if m])
    untrained = tokenizer.decode([t for t, m in zip(row["input_ids"], mask) if not m])
    assert trained.endswith("<end_of_turn>\n")  # the stop sign is learned
    assert "<start_of_turn>user" in untrained and "<start_of_turn>model" in untrained
    assert "<start_of_turn>" not in trained


def test_sft_output_is_a_loadable_adapter_with_a_model_card(sft_run):
    out, _, _ = sft_run
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from train.common import resolve_model_path

    assert (out / "adapter_model.safetensors").is_file()
    info = json.loads((out / "pipeline.json").read_text())
    assert info["stage"] == "sft" and info["base_model"] == "tiny:gemma3"
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:gemma3"))
    PeftModel.from_pretrained(base, str(out))
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "peft"
    assert {"trl", "sft", "qlora"} <= set(front["tags"])
    assert "python train/sft.py --config train/recipes/tiny/sft.yaml" in card  # the exact command
    assert "model_name_or_path: tiny:gemma3" in card  # and the recipe it ran
    assert "| Model | Stop ↑ | Echo ↓ | Factual ↑ |" in card and "| base |" in card and "| sft |" in card
    assert "## Before / after" in card


def test_dpo_continues_the_sft_adapter_with_sft_as_reference(sft_run, tmp_path):
    from safetensors.torch import load_file

    from train import dpo

    sft_dir, _, _ = sft_run
    args, training_args, model_args = parse(
        DPOConfig,
        REPO_DIR / "train/recipes/tiny/dpo.yaml",
        "--output_dir",
        str(tmp_path),
        "--sft_adapter",
        str(sft_dir),
        "--eval_max_samples",
        "4",
    )
    trainer = dpo.main(args, training_args, model_args)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert losses and all(loss == loss for loss in losses)
    sft_weights = load_file(sft_dir / "adapter_model.safetensors")
    dpo_weights = load_file(tmp_path / "adapter_model.safetensors")
    assert sft_weights.keys() == dpo_weights.keys()
    changed = [k for k in sft_weights if not torch.equal(sft_weights[k], dpo_weights[k])]
    assert changed, "DPO must move the adapter"
    # It started from the SFT adapter (not from zero): lora_B is nowhere near a fresh init.
    assert all(dpo_weights[k].abs().sum() > 0 for k in dpo_weights if "lora_B" in k)
    assert not (tmp_path / "ref").exists(), "the frozen reference copy is not part of the result"
    card = (tmp_path / "README.md").read_text()
    assert "| sft+dpo |" in card and "dpo" in yaml.safe_load(card.split("---")[1])["tags"]


def test_a_second_dpo_round_continues_the_first_with_it_as_reference(sft_run, tmp_path):
    """Iterative DPO: round 2 starts from round 1's adapter, and what it records still leads back to the SFT
    stage (so `train.evaluate` and the card show the SFT row) and names both rounds' data."""
    from safetensors.torch import load_file

    from train import dpo

    sft_dir, _, _ = sft_run
    rounds = [tmp_path / "round1", tmp_path / "round2"]
    for parent, out in zip([sft_dir, rounds[0]], rounds):
        flags = ["--output_dir", str(out), "--sft_adapter", str(parent), "--eval_max_samples", "2"]
        args, training_args, model_args = parse(DPOConfig, REPO_DIR / "train/recipes/tiny/dpo.yaml", *flags)
        with pytest.MonkeyPatch.context() as patch:  # as if run from the shell
            patch.setattr(sys, "argv", ["train/dpo.py", "--config", "train/recipes/tiny/dpo.yaml", *flags])
            dpo.main(args, training_args, model_args)
    first, second = (json.loads((out / "pipeline.json").read_text()) for out in rounds)
    assert first["sft_adapter"] == second["sft_adapter"] == str(sft_dir) and "continues" not in first
    assert second["continues"] == str(rounds[0]) and second["dpo_round"] == 2
    assert second["datasets"] == [first["dataset"], second["dataset"]]
    # The last card says how to rebuild it from the base: SFT, round 1, round 2, in that order.
    sft_command = "python train/sft.py --config train/recipes/tiny/sft.yaml"
    assert second["commands"][0] == sft_command and len(second["commands"]) == 3
    assert [f"--output_dir {out}" in c for out, c in zip(rounds, second["commands"][1:])] == [True, True]
    one, two = (load_file(out / "adapter_model.safetensors") for out in rounds)
    assert any(not torch.equal(one[k], two[k]) for k in one), "round 2 must move the round-1 adapter"
    card = (rounds[1] / "README.md").read_text()
    assert f"continues the earlier DPO adapter `{rounds[0]}`" in card
    reproduce = card.split("## Reproduce", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert reproduce.splitlines() == second["commands"]
    assert "| sft |" in card and "| sft+dpo |" in card


def test_push_without_hub_access_fails_before_training(tmp_path):
    from train import sft

    args, training_args, model_args = parse(
        SFTConfig,
        REPO_DIR / "train/recipes/tiny/sft.yaml",
        "--output_dir",
        str(tmp_path / "out"),
        "--push_to_hub",
        "--hub_model_id",
        "someone/tiny-sft",
    )
    with pytest.raises(ValueError, match="token|HF_HUB_OFFLINE"):
        sft.main(args, training_args, model_args)
    assert not (tmp_path / "out").exists(), "nothing may be trained when the push is bound to fail"


def test_push_needs_a_repo_id():
    class Args:
        push_to_hub, hub_model_id = True, None

    with pytest.raises(ValueError, match="hub_model_id"):
        check_can_push(Args())


def test_a_rejected_token_is_reported_without_being_printed(tmp_path):
    """Against a loopback stand-in for the Hub that refuses the token, as the real one does (401)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "hf_NotARealTokenButSecret123"
    script = (
        "from train.common import check_can_push\n"
        "class A: push_to_hub, hub_model_id = True, 'someone/x'\n"
        "check_can_push(A())\n"
    )
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="0",
        HF_TOKEN=secret,
        HF_HOME=str(tmp_path),
        HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
    )
    try:
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert proc.returncode != 0
    assert "refused the token" in proc.stderr
    assert secret not in proc.stderr + proc.stdout
