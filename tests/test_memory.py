"""The memory calculator's arithmetic: the lesson's numbers, exact counts against peft, the command line."""

import json
import subprocess
import sys

import pytest

from shared import memory
from shared.memory import GB, TrainingSetup, compare_methods, estimate_memory, resolve_model


# --------------------------------------------------------------------------------------------
# The lesson's numbers
# --------------------------------------------------------------------------------------------

def test_lesson_square_matrix_rank_16():
    # A: 16 × 4096 and B: 4096 × 16 → 2 · 4096 · 16 = 131,072, against 4096² = 16,777,216 (≈ 0.8 %).
    est = estimate_memory(resolve_model("4096x4096"), TrainingSetup(method="lora", rank=16))
    assert est.trainable_params == 131_072
    assert est.total_params == 16_777_216
    assert round(est.trainable_percent, 1) == 0.8


def test_non_square_projection_is_r_times_d_in_plus_d_out():
    # Llama 3.1 8B's k_proj maps 4096 → 1024 (8 kv heads × 128): r·(4096 + 1024), not 2·4096·r.
    est = estimate_memory(resolve_model("llama-3.1-8b"), TrainingSetup(method="lora", rank=16, targets="k_proj"))
    (row,) = est.modules
    assert (row.module, row.count, row.d_in, row.d_out) == ("k_proj", 32, 4096, 1024)
    assert row.params_each == 16 * (4096 + 1024) == 81_920
    assert est.trainable_params == 32 * 81_920


def test_lesson_one_billion_full_bf16_adamw():
    # Gemma 3 1B (1.0 B parameters) in bf16 with AdamW: 2 GB weights + 2 GB grads + 8 GB fp32 moments.
    est = estimate_memory(resolve_model("gemma-3-1b"), TrainingSetup(method="full", precision="bf16", seq_len=512))
    b = est.bytes
    assert b["weights"] / GB == pytest.approx(2.0, abs=0.01)
    assert b["gradients"] / GB == pytest.approx(2.0, abs=0.01)
    assert b["optimizer"] / GB == pytest.approx(8.0, abs=0.01)
    # "plus activations — about 14 GB of VRAM total"
    assert (b["weights"] + b["gradients"] + b["optimizer"] + b["activations"]) / GB == pytest.approx(14, abs=1)


def test_lesson_seventy_billion_full_is_about_a_terabyte():
    est = estimate_memory(resolve_model("llama-3.1-70b"), TrainingSetup(method="full", precision="bf16"))
    assert 800 * GB < est.bytes["total"] < 1200 * GB
    assert not any(est.fits().values())


def test_lesson_qlora_seventy_billion_weights():
    # 70 B × 16 bit ≈ 140 GB; in 4-bit NF4 ≈ 35 GB (the linear layers; embeddings stay 16-bit).
    arch = resolve_model("llama-3.1-70b")
    quantized = sum(l.in_features * l.out_features for l in arch.linears if l.name != arch.output_head)
    assert 2 * arch.total_params / GB == pytest.approx(141, abs=1)
    assert quantized / 2 / GB == pytest.approx(34.2, abs=0.1)
    est = estimate_memory(arch, TrainingSetup(method="qlora"))
    assert 35 * GB < est.bytes["weights"] < 45 * GB  # + 4.2 GB of 16-bit embeddings and LM head
    assert est.bytes["quant_constants"] < 0.04 * est.bytes["weights"]


def test_methods_side_by_side_shrink():
    full, lora, qlora = compare_methods(resolve_model("llama-3.1-8b"), TrainingSetup(seq_len=512))
    assert full.bytes["total"] > lora.bytes["total"] > qlora.bytes["total"]
    assert qlora.fits()["T4 (16 GB)"] and not full.fits()["H100 80GB"]


# --------------------------------------------------------------------------------------------
# Presets: the bundled configs are the published models
# --------------------------------------------------------------------------------------------

PUBLISHED_PARAMS = {  # from the model cards, in billions
    "gemma-3-270m": 0.268, "gemma-3-1b": 1.000, "gemma-3-4b": 4.30, "gemma-3-12b": 12.19, "gemma-3-27b": 27.43,
    "llama-3.2-1b": 1.236, "llama-3.2-3b": 3.213, "llama-3.1-8b": 8.030, "llama-3.1-70b": 70.55,
    "qwen2.5-0.5b": 0.494, "qwen2.5-1.5b": 1.544, "qwen2.5-7b": 7.616, "qwen2.5-72b": 72.71,
    "mistral-7b": 7.248, "smollm2-135m": 0.1345, "smollm2-360m": 0.3618, "smollm2-1.7b": 1.711,
}


def test_every_preset_has_its_published_size():
    assert sorted(PUBLISHED_PARAMS) == memory.preset_names()
    for name, billions in PUBLISHED_PARAMS.items():
        assert resolve_model(name).total_params / 1e9 == pytest.approx(billions, rel=0.005), name


# --------------------------------------------------------------------------------------------
# Exactly what peft reports, on meta-device models
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "preset, targets",
    [
        ("qwen2.5-0.5b", "all-linear"),  # GQA, q/k/v biases, tied embeddings
        ("llama-3.1-8b", "q_proj,v_proj"),  # GQA, untied LM head
        ("gemma-3-270m", "all-linear"),  # one kv head, head_dim ≠ hidden/heads, tied
        ("gemma-3-4b", "all-linear"),  # multimodal: the vision tower's linears count too
        ("smollm2-135m", "attention"),
        ("mistral-7b", "gate_proj,down_proj"),
    ],
)
def test_trainable_params_equal_peft(preset, targets):
    from peft import LoraConfig, get_peft_model

    arch = resolve_model(preset)
    est = estimate_memory(arch, TrainingSetup(method="lora", rank=8, targets=targets))
    model = memory.build_meta_model(memory.load_config(preset))
    peft_targets = memory.parse_targets(targets)
    trainable, all_params = get_peft_model(model, LoraConfig(r=8, target_modules=peft_targets)).get_nb_trainable_parameters()
    assert est.trainable_params == trainable
    assert est.total_params + est.trainable_params == all_params
    assert est.trainable_percent == pytest.approx(100 * trainable / all_params)


# --------------------------------------------------------------------------------------------
# Byte rules, worked by hand
# --------------------------------------------------------------------------------------------

def test_nf4_bytes_per_tensor():
    n = 4096 * 4096  # 262,144 blocks of 64
    assert memory._nf4_bytes(n, double_quant=False) == (n // 2, 4 * 262_144 + 64)
    # 8-bit absmax per block, an fp32 scale per 256 blocks (1,024 of them), code tables and offset.
    assert memory._nf4_bytes(n, double_quant=True) == (n // 2, 262_144 + 4 * 1024 + 64 + 1028)


def test_optimizer_bytes_by_hand():
    sizes = [5000, 100]
    assert memory.optimizer_state_bytes(sizes, "adamw", params_fp32=True) == 8 * 5100 + 2 * 4  # + torch's step
    assert memory.optimizer_state_bytes(sizes, "adamw", params_fp32=False) == 8 * 5100
    # 5000 ≥ 4096 values: two uint8 states + 20 fp32 absmax each; 100 values stay 32-bit; shared qmaps.
    assert memory.optimizer_state_bytes(sizes, "adamw-8bit", params_fp32=True) == 2 * 5000 + 2 * 4 * 20 + 800 + 2048
    assert memory.optimizer_state_bytes(sizes, "sgd", params_fp32=True) == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (TrainingSetup(rank=0), "rank"),
        (TrainingSetup(method="dora"), "method"),
        (TrainingSetup(precision="fp8"), "precision"),
        (TrainingSetup(seq_len=0), "positive"),
        (TrainingSetup(targets="nonexistent_proj"), "match no linear layer"),
    ],
)
def test_bad_setups_raise_friendly_errors(setup, message):
    with pytest.raises(ValueError, match=message):
        estimate_memory(resolve_model("smollm2-135m"), setup)


def test_hub_id_offline_says_why():
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        resolve_model("someone/some-model")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def test_cli_json(capsys, tmp_path):
    config = tmp_path / "config.json"
    config.write_text((memory.CONFIG_DIR / "smollm2-135m.json").read_text())
    assert memory.main(["--model", str(config), "--method", "qlora", "--rank", "8", "--targets", "q_proj,v_proj", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 134_515_008
    assert data["trainable_params"] == 30 * 8 * ((576 + 576) + (576 + 192))
    assert set(data["bytes"]) >= {"weights", "gradients", "optimizer", "activations", "total"}


def test_cli_table(capsys):
    assert memory.main(["--model", "4096x4096", "--method", "lora", "--rank", "16"]) == 0
    assert "131,072" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-preset"], "Unknown preset"),
        (["--model", "smollm2-135m", "--rank", "0"], "rank"),
        (["--model", "smollm2-135m", "--targets", "foo_proj"], "match no linear layer"),
    ],
)
def test_cli_errors_exit_2_with_one_line(capsys, args, message):
    assert memory.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    assert memory.main(["--model", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text('{"hidden_size": 4}')
    assert memory.main(["--model", str(bad)]) == 2
    assert "model_type" in capsys.readouterr().err


def test_cli_as_module():
    out = subprocess.run(
        [sys.executable, "-m", "shared.memory", "--model", "nope"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: Unknown preset")
