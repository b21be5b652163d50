"""The memory calculator's arithmetic: the lesson's numbers, exact counts against peft, the command line."""

import json
import subprocess
import sys
from pathlib import Path

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
    quantized = sum(lin.in_features * lin.out_features for lin in arch.linears if lin.name != arch.output_head)
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
    "gemma-3-270m": 0.268,
    "gemma-3-1b": 1.000,
    "gemma-3-4b": 4.30,
    "gemma-3-12b": 12.19,
    "gemma-3-27b": 27.43,
    "llama-3.2-1b": 1.236,
    "llama-3.2-3b": 3.213,
    "llama-3.1-8b": 8.030,
    "llama-3.1-70b": 70.55,
    "qwen2.5-0.5b": 0.494,
    "qwen2.5-1.5b": 1.544,
    "qwen2.5-7b": 7.616,
    "qwen2.5-72b": 72.71,
    "mistral-7b": 7.248,
    "smollm2-135m": 0.1345,
    "smollm2-360m": 0.3618,
    "smollm2-1.7b": 1.711,
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
    trainable, all_params = get_peft_model(
        model, LoraConfig(r=8, target_modules=peft_targets)
    ).get_nb_trainable_parameters()
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
    assert (
        memory.main(
            ["--model", str(config), "--method", "qlora", "--rank", "8", "--targets", "q_proj,v_proj", "--json"]
        )
        == 0
    )
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


@pytest.mark.parametrize("warns", [False, pytest.param(True, marks=pytest.mark.slow)])  # a torch import
def test_cli_as_module(tmp_path, warns):
    """As a process: exactly one stderr line, even when transformers would warn about the config."""
    model = "nope"
    if warns:  # an unknown rope key and a pad id past the vocabulary: transformers logs a warning for each
        config = json.loads((memory.CONFIG_DIR / "smollm2-135m.json").read_text())
        config.update(rope_scaling={"rope_type": "default", "extra": 1}, pad_token_id=10**6)
        model = str(tmp_path / "config.json")
        Path(model).write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "shared.memory", "--model", model], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: Unknown preset" if not warns else "error: ") and not out.stdout
    if warns:
        assert "could not be built" in line


# --------------------------------------------------------------------------------------------
# Hostile input (issue 13): bounded before anything is parsed, built or allocated
# --------------------------------------------------------------------------------------------

LLAMA = json.loads((memory.CONFIG_DIR / "llama-3.2-1b.json").read_text())


@pytest.fixture
def nothing_built(monkeypatch):
    """Fails the test if a meta model gets built: refusals must come before any building."""
    calls = []
    monkeypatch.setattr(memory, "build_meta_model", lambda config: calls.append(config))
    memory._architecture_cached.cache_clear()
    yield
    assert not calls, "a model was built for a config that should have been refused first"


def _refused_fast(fn, *, seconds=1.0, peak_bytes=8 * 2**20) -> str:
    """Run `fn`, expect one ValueError sentence, within a time and a Python-memory budget."""
    import time
    import tracemalloc

    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ValueError) as info:
            fn()
    finally:
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    message = str(info.value)
    assert message and "\n" not in message
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < peak_bytes, f"allocated {peak / 2**20:.1f} MiB"
    return message


def test_a_million_layers_is_refused_fast_with_small_memory(tmp_path, nothing_built):
    # Was: grew past 4 GB before being killed (50k layers: 55 s, 2.3 GB).
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "num_hidden_layers": 10**6}))
    message = _refused_fast(lambda: memory.resolve_upload(path))
    assert "num_hidden_layers" in message and "512" in message


def test_a_small_upload_with_30k_layers_is_refused_fast(tmp_path, nothing_built):
    # Was: a 160-byte upload took 38 s.
    config = {
        "model_type": "llama",
        "num_hidden_layers": 30_000,
        "hidden_size": 64,
        "intermediate_size": 64,
        "num_attention_heads": 1,
        "vocab_size": 8,
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    assert path.stat().st_size < 200
    assert "num_hidden_layers" in _refused_fast(lambda: memory.resolve_upload(path))


def test_layers_are_counted_over_every_tower(nothing_built):
    gemma4b = json.loads((memory.CONFIG_DIR / "gemma-3-4b.json").read_text())
    gemma4b["vision_config"] = {**gemma4b["vision_config"], "num_hidden_layers": 500}
    assert "layers in all" in _refused_fast(lambda: memory.config_from_dict(gemma4b, "g.json"))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"num_attention_heads": 0}, "num_attention_heads"),  # was a ZeroDivisionError traceback
        ({"hidden_size": "NaN"}, "hidden_size"),  # was a TypeError traceback
        ({"intermediate_size": -5}, "intermediate_size"),
        ({"vocab_size": 2**40}, "vocab_size"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),  # does not divide 32 query heads
        ({"head_dim": None, "num_attention_heads": 7}, "attention heads"),  # 7 does not divide 2048
        ({"num_hidden_layers": 16.0}, "num_hidden_layers"),  # a float is not a layer count
        ({"num_hidden_layers": True}, "num_hidden_layers"),
        ({"max_position_embeddings": 10**12}, "max_position_embeddings"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types"),  # not one per layer
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
        ({"model_type": "bert"}, "Llama-style"),
        ({"model_type": ["llama"]}, "model_type"),
        ({"text_config": {"model_type": "llama"}}, "text_config"),  # a Llama has no sub-configs to smuggle in
        ({"rope_theta": 10**100}, "too large"),
    ],
)
def test_bad_config_fields_are_one_sentence_naming_the_field(change, field, nothing_built):
    message = _refused_fast(lambda: memory.config_from_dict({**LLAMA, **change}, "config.json"))
    assert field in message, message


def test_a_multimodal_config_may_only_carry_its_own_vision_tower(nothing_built):
    gemma4b = json.loads((memory.CONFIG_DIR / "gemma-3-4b.json").read_text())
    gemma4b["vision_config"] = {"model_type": "swin", "depths": [10**6]}  # would build any architecture
    assert "siglip_vision_model" in _refused_fast(lambda: memory.config_from_dict(gemma4b, "g.json"))


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),  # the parser's RecursionError, caught
        (b'{"model_type": "llama", "x": ' + b"[" * 100 + b"]" * 100 + b"}", "levels deep"),
        (b'{"model_type": "llama", "hidden_size": NaN}', "NaN"),
        (b'{"model_type": "llama", "rope_theta": 1e999}', "finite"),
        (b'{"model_type": "llama", "vocab_size": -Infinity}', "Infinity"),
        (b'{"model_type": "llama", "vocab_size": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b" " * (memory.MAX_CONFIG_BYTES + 1), "larger than"),
    ],
)
def test_hostile_json_is_refused_before_it_costs_anything(tmp_path, raw, words, nothing_built):
    path = tmp_path / "config.json"
    path.write_bytes(raw)
    message = _refused_fast(lambda: memory.resolve_upload(path), peak_bytes=16 * 2**20)
    assert words in message and str(tmp_path) not in message


def test_limits_admit_the_largest_real_shapes():
    """The bounds sit above every published model: the widest, the deepest and the largest vocabulary pass."""
    wide = {
        **LLAMA,
        "hidden_size": 16_384,
        "intermediate_size": 53_248,
        "num_attention_heads": 128,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "num_hidden_layers": 126,
        "vocab_size": 262_208,
    }
    shape = memory.text_shape(memory.config_from_dict(wide, "405b-like"))
    assert (shape.layers, shape.intermediate, shape.vocab) == (126, 53_248, 262_208)
    at_limit = {**LLAMA, "num_hidden_layers": memory.MAX_LAYERS}
    assert memory.text_shape(memory.config_from_dict(at_limit, "deep")).layers == memory.MAX_LAYERS
    with pytest.raises(ValueError, match="num_hidden_layers"):
        memory.config_from_dict({**LLAMA, "num_hidden_layers": memory.MAX_LAYERS + 1}, "deeper")


def test_the_largest_allowed_config_builds_in_bounded_time():
    """The worst config the bounds admit (MAX_LAYERS decoder layers) is built once, in seconds."""
    import time

    memory._architecture_cached.cache_clear()
    started = time.monotonic()
    arch = memory.architecture_from_config(
        memory.config_from_dict({**LLAMA, "num_hidden_layers": memory.MAX_LAYERS}, "deep"), "deep"
    )
    assert time.monotonic() - started < 20  # generous: a shared 2-core machine; see bench_memory.py --limits
    assert arch.text.layers == memory.MAX_LAYERS


@pytest.mark.parametrize("model_type", memory.SUPPORTED_MODEL_TYPES)
def test_every_supported_architecture_builds_and_estimates(model_type):
    # Each class's own defaults; two layers keep the build quick.
    config = memory.config_from_dict({"model_type": model_type, "num_hidden_layers": 2}, model_type)
    est = memory.estimate_memory(memory.architecture_from_config(config, model_type), TrainingSetup(rank=8))
    assert est.trainable_params > 0 and est.bytes["total"] > est.bytes["weights"] > 0


def test_config_keys_that_would_change_the_code_are_ignored():
    # An attention implementation can name a Hub kernel (code downloaded and run); a dtype would switch
    # torch's process-wide default while building. The shape is all the calculator needs.
    import torch

    config = {
        **LLAMA,
        "attn_implementation": "kernels-community/flash-attn",
        "torch_dtype": "float64",
        "quantization_config": {"quant_method": "bitsandbytes"},
    }
    arch = memory.architecture_from_config(memory.config_from_dict(config, "c"), "c")
    assert arch.total_params == resolve_model("llama-3.2-1b").total_params
    assert torch.get_default_dtype() == torch.float32


def test_rank_and_sequence_bounds():
    matrix = resolve_model("4096x4096")
    for setup, words in [
        (TrainingSetup(rank=10**12), "rank"),  # was an exabyte answer
        (TrainingSetup(seq_len=10**9), "sequence length"),  # was an exabyte answer
        (TrainingSetup(batch_size=10**6), "batch size"),
        (TrainingSetup(batch_size=1024, seq_len=2**20), "tokens"),
        (TrainingSetup(rank=4097), r"min\(d_in, d_out\) = 4,096"),  # no layer is wider than 4096
        (TrainingSetup(rank=16.5), "rank"),
        (TrainingSetup(alpha=float("nan")), "alpha"),
        (TrainingSetup(alpha=float("inf")), "alpha"),
        (TrainingSetup(targets="q_proj,<script>"), "module name"),
        (TrainingSetup(targets=",".join(f"m{i}" for i in range(10_000))), "at most"),
    ]:
        with pytest.raises(ValueError, match=words):
            estimate_memory(matrix, setup)
    assert estimate_memory(matrix, TrainingSetup(rank=4096)).trainable_params == 2 * 4096 * 4096


def test_a_preset_name_is_never_a_path():
    with pytest.raises(ValueError, match="Unknown preset"):
        resolve_model("../model_configs/llama-3.2-1b")  # a path join would have read the bundled file


def test_a_hub_id_never_reads_a_server_folder_of_that_name(tmp_path, monkeypatch):
    # AutoConfig.from_pretrained("org/name") reads ./org/name/config.json when that folder exists.
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "config.json").write_text(json.dumps(LLAMA))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not in the local cache"):
        resolve_model("org/name")


def _fake_hub_cache(cache, repo_id: str, config: bytes):
    """The layout huggingface_hub's cache uses: refs/main names a snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_bytes(config)


def test_hub_configs_from_the_cache_pass_the_same_checks(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    _fake_hub_cache(tmp_path, "good/llama", json.dumps(LLAMA).encode())
    _fake_hub_cache(tmp_path, "evil/deep", json.dumps({**LLAMA, "num_hidden_layers": 10**6}).encode())
    assert resolve_model("good/llama").total_params == resolve_model("llama-3.2-1b").total_params
    message = _refused_fast(lambda: resolve_model("evil/deep"))
    assert message.startswith("evil/deep: num_hidden_layers") and str(tmp_path) not in message


@pytest.mark.parametrize("bad_id", ["org/na me", "org//name", "/org/name", "org/name/extra", "org/../x", "a" * 300])
def test_malformed_hub_ids_are_refused_without_a_request(bad_id):
    with pytest.raises(ValueError, match="Unknown preset|characters long"):
        resolve_model(bad_id)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "smollm2-135m", "--rank", "nan"], "--rank"),  # was a 9-line usage text
        (["--model", "smollm2-135m", "--seq-len", "inf"], "--seq-len"),
        (["--model", "smollm2-135m", "--alpha", "nan"], "alpha"),  # argparse takes nan as a float
        (["--model", "smollm2-135m", "--alpha", "inf"], "alpha"),
        (["--model", "smollm2-135m", "--rank", str(10**12)], "rank"),  # was an exabyte answer with exit 0
        (["--model", "smollm2-135m", "--seq-len", str(10**9)], "sequence length"),
        (["--model", "smollm2-135m", "--batch-size", "-1"], "batch size"),
        (["--model", "smollm2-135m", "--method", "dora"], "--method"),
        (["--rank", "8"], "--model"),
        (["--model", "smollm2-135m", "--no-such-flag"], "unrecognized"),
        (["--model", "smollm2-135m\nerror: forged"], "Unknown preset"),
        (["--model", "a" * 300], "Unknown preset"),  # a file name too long for the file system
        (["--model", "a" * 300 + ".json"], "could not be read"),
    ],
)
def test_cli_bad_input_is_exit_2_and_one_line(capsys, args, words):
    assert memory.main(args) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err and not captured.out


def test_cli_never_blocks_on_a_device_or_a_pipe(tmp_path, capsys):
    import os

    (tmp_path / "zero.json").symlink_to("/dev/zero")  # endless
    os.mkfifo(tmp_path / "pipe.json")  # opening it would wait for a writer forever
    for name in ("zero.json", "pipe.json"):
        assert memory.main(["--model", str(tmp_path / name)]) == 2
        assert "not a regular file" in capsys.readouterr().err


def test_cli_help_still_works(capsys):
    assert memory.main(["--help"]) == 0
    assert "--model" in capsys.readouterr().out


def test_cli_reads_a_local_config_but_refuses_a_huge_one(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAMA, "num_hidden_layers": 10**6}))
    assert memory.main(["--model", str(config)]) == 2
    assert "num_hidden_layers" in capsys.readouterr().err
