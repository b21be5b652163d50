"""shared/logprobs.py: the lens's numbers equal TRL's DPOTrainer's, one batched pass equals per-row passes,
peft routes each row through its own adapter, held-out pairs stay apart from training, and the CLI."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared import logprobs
from shared.adapters import BASE_ADAPTER

REPO_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_DIR / "train" / "data"
PAIR = ("What is the capital of France?", "Paris.", "What is the capital of Germany? What is the capital of Italy?")
BETA = 0.1
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --------------------------------------------------------------------------------------------
# A tiny base with two real LoRA adapters on disk (random, so each visibly changes the numbers)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(gemma_tokenizer):
    tok = copy.deepcopy(gemma_tokenizer)
    tok.chat_template = logprobs.lens_chat_template()  # what DPO trained with (TRL reads it off the tokenizer)
    return tok


@pytest.fixture(scope="module")
def adapter_dirs(tiny_gemma, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    dirs = {}
    for seed, name in ((1, "sft"), (2, "sft+dpo")):
        torch.manual_seed(seed)
        # init_lora_weights=False: random A and B, so the adapter is not a no-op.
        config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
        peft_model = get_peft_model(copy.deepcopy(tiny_gemma), config)
        dirs[name] = tmp_path_factory.mktemp(name.replace("+", "-"))
        peft_model.save_pretrained(dirs[name])
    return dirs


@pytest.fixture(scope="module")
def lens_model(tiny_gemma, adapter_dirs):
    """The lens's setup on the tiny base: one peft model, both adapters under their stage names."""
    from shared.adapters import attach_adapters

    return attach_adapters(copy.deepcopy(tiny_gemma), {k: str(v) for k, v in adapter_dirs.items()})


@pytest.fixture(scope="module")
def lens_result(lens_model, tokenizer):
    return logprobs.score_pair(lens_model, tokenizer, *PAIR, beta=BETA)


def rows_by_model(result) -> dict[str, dict]:
    return {row["model"]: row for row in result["rows"]}


# --------------------------------------------------------------------------------------------
# Against TRL's own DPOTrainer
# --------------------------------------------------------------------------------------------


def trl_metrics(policy, tokenizer, tmp_path, ref_model=None, ref_adapter_dir=None) -> tuple[dict, float, dict]:
    """TRL's DPO loss and logged rewards for PAIR, computed by DPOTrainer itself (eval mode, no update)."""
    from datasets import Dataset
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from trl import DPOConfig, DPOTrainer

    prompt, chosen, rejected = PAIR
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        ]
    )
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=BETA,
        use_cpu=True,
        bf16=False,
        report_to="none",
        per_device_train_batch_size=1,
        max_length=512,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(
        model=policy, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    if ref_adapter_dir is not None:
        # As train/dpo.py runs it: TRL copied the policy's adapter into a frozen "ref" adapter; here the
        # reference is the SFT adapter, so that copy gets the SFT weights.
        assert "ref" in trainer.model.peft_config
        state = load_file(Path(ref_adapter_dir) / "adapter_model.safetensors")
        set_peft_model_state_dict(trainer.model, state, adapter_name="ref")
    trainer.model.eval()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs).item()
    metrics = {key: values[-1] for key, values in trainer._metrics["eval"].items()}
    return metrics, loss, trainer.train_dataset[0]


@pytest.mark.slow  # builds TRL's DPOTrainer
def test_tokens_are_trls(lens_model, tokenizer, adapter_dirs, tiny_gemma, tmp_path):
    """Prompt, chosen and rejected ids equal what DPOTrainer's own dataset preparation produces."""
    from peft import PeftModel

    policy = PeftModel.from_pretrained(copy.deepcopy(tiny_gemma), str(adapter_dirs["sft"]), is_trainable=True)
    _, _, row = trl_metrics(policy, tokenizer, tmp_path, ref_model=copy.deepcopy(tiny_gemma))
    pair = logprobs.tokenize_pair(tokenizer, *PAIR)
    assert (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids) == (
        row["prompt_ids"],
        row["chosen_ids"],
        row["rejected_ids"],
    )
    assert tokenizer.decode(pair.chosen_ids) == "Paris.<end_of_turn>\n"


@pytest.mark.slow  # builds TRL's DPOTrainer
def test_sft_plus_dpo_against_sft_equals_trls_dpo_trainer(lens_result, tokenizer, adapter_dirs, tiny_gemma, tmp_path):
    """Policy = the SFT+DPO adapter, reference = the SFT adapter (TRL's frozen "ref" copy, as train/dpo.py)."""
    from peft import PeftModel

    policy = PeftModel.from_pretrained(copy.deepcopy(tiny_gemma), str(adapter_dirs["sft+dpo"]), is_trainable=True)
    metrics, loss, _ = trl_metrics(policy, tokenizer, tmp_path, ref_adapter_dir=adapter_dirs["sft"])
    row = rows_by_model(lens_result)["sft+dpo"]
    assert row["reference"] == "sft"
    assert row["chosen_reward"] == pytest.approx(metrics["rewards/chosen"], abs=1e-4)
    assert row["rejected_reward"] == pytest.approx(metrics["rewards/rejected"], abs=1e-4)
    assert row["margin"] == pytest.approx(metrics["rewards/margins"], abs=1e-4)
    assert row["dpo_loss"] == pytest.approx(loss, abs=1e-4)
    assert row["chosen_logp"] == pytest.approx(metrics["logps/chosen"], abs=1e-4)
    assert row["rejected_logp"] == pytest.approx(metrics["logps/rejected"], abs=1e-4)
    assert abs(row["margin"]) > 1e-3, "the two adapters must differ for this comparison to mean anything"


@pytest.mark.slow  # builds TRL's DPOTrainer
def test_sft_against_base_equals_trls_dpo_trainer(lens_result, tokenizer, adapter_dirs, tiny_gemma, tmp_path):
    """Policy = the SFT adapter, reference = the bare base as a separate model."""
    from peft import PeftModel

    policy = PeftModel.from_pretrained(copy.deepcopy(tiny_gemma), str(adapter_dirs["sft"]), is_trainable=True)
    metrics, loss, _ = trl_metrics(policy, tokenizer, tmp_path, ref_model=copy.deepcopy(tiny_gemma))
    row = rows_by_model(lens_result)["sft"]
    assert row["reference"] == "base"
    assert row["chosen_reward"] == pytest.approx(metrics["rewards/chosen"], abs=1e-4)
    assert row["rejected_reward"] == pytest.approx(metrics["rewards/rejected"], abs=1e-4)
    assert row["dpo_loss"] == pytest.approx(loss, abs=1e-4)
    assert abs(row["margin"]) > 1e-3


def test_derived_numbers_follow_their_definitions(lens_result):
    rows = rows_by_model(lens_result)
    assert list(rows) == ["base", "sft", "sft+dpo"]
    assert "reference" not in rows["base"] and "margin" not in rows["base"]
    for label, row in rows.items():
        for side in ("chosen", "rejected"):
            tokens = row[f"{side}_tokens"]
            assert row[f"{side}_logp"] == pytest.approx(sum(t["logp"] for t in tokens), abs=1e-9)
            assert row[f"{side}_sft_loss"] == pytest.approx(-row[f"{side}_logp"] / len(tokens), abs=1e-9)
            assert all(t["logp"] <= 0 for t in tokens)
            reference = logprobs.REFERENCES.get(label)
            if reference:
                ref_tokens = rows[reference][f"{side}_tokens"]
                assert [t["delta"] for t in tokens] == pytest.approx(
                    [t["logp"] - r["logp"] for t, r in zip(tokens, ref_tokens)], abs=1e-9
                )
                assert row[f"{side}_reward"] == pytest.approx(
                    BETA * (row[f"{side}_logp"] - rows[reference][f"{side}_logp"]), abs=1e-9
                )
        if "margin" in row:
            # σ(m) and −log σ(m) by hand: p = 1 / (1 + e^−m)
            assert row["p_chosen"] == pytest.approx(1 / (1 + math.exp(-row["margin"])), rel=1e-9)
            assert row["dpo_loss"] == pytest.approx(-math.log(row["p_chosen"]), rel=1e-9)


def test_sft_loss_covers_exactly_the_assistant_mask(tokenizer):
    """The answer tokens are the ones SFT's assistant-only loss trains (the training template's mask)."""
    from shared.chat_templates import official_template

    prompt, chosen, _ = PAIR
    pair = logprobs.tokenize_pair(tokenizer, *PAIR)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
        chat_template=official_template("gemma3", training=True),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    masked = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"]) if m]
    assert rendered["input_ids"] == pair.prompt_ids + pair.chosen_ids
    assert masked == pair.chosen_ids


# --------------------------------------------------------------------------------------------
# One batched pass, per-row adapters
# --------------------------------------------------------------------------------------------


def test_batched_pass_equals_per_row_passes(lens_model, tokenizer):
    pairs = [
        logprobs.tokenize_pair(tokenizer, *PAIR),
        logprobs.tokenize_pair(tokenizer, "Hi!", "Hello!", "Hi! Hi! Hi!"),
    ]
    rows, names = logprobs._pair_batch(pairs, ("base", "sft", "sft+dpo"))
    assert len(rows) == 12 and len({len(ids) for ids, _ in rows}) > 1  # padding really happens
    batched = logprobs.answer_logprobs(lens_model, rows, names)
    for row, name, together in zip(rows, names, batched):
        (alone,) = logprobs.answer_logprobs(lens_model, [row], [name])
        assert together == pytest.approx(alone, abs=1e-5)


def test_each_row_runs_through_its_own_adapter_only(lens_model, tokenizer, adapter_dirs, tiny_gemma):
    from peft import PeftModel

    pair = logprobs.tokenize_pair(tokenizer, *PAIR)
    rows, names = logprobs._pair_batch([pair], ("base", "sft", "sft+dpo"))
    batched = logprobs.answer_logprobs(lens_model, rows, names)
    alone = {"base": copy.deepcopy(tiny_gemma)}
    for name in ("sft", "sft+dpo"):  # a model with only that adapter, no routing at all
        alone[name] = PeftModel.from_pretrained(copy.deepcopy(tiny_gemma), str(adapter_dirs[name])).eval()
    for row, name, together in zip(rows, names, batched):
        label = "base" if name == BASE_ADAPTER else name
        (expected,) = logprobs.answer_logprobs(alone[label], [row])
        assert together == pytest.approx(expected, abs=1e-5), label
    # The three models really differ, so a mix-up would show.
    chosen = [torch.tensor(batched[i]) for i in (0, 2, 4)]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (chosen[i] - chosen[j]).abs().max() > 1e-2


def test_head_on_answer_positions_equals_the_full_logits(tiny_gemma, tokenizer):
    """The chunked head on caught hidden states gives what log_softmax over the model's own logits gives."""
    pair = logprobs.tokenize_pair(tokenizer, *PAIR)
    ids = pair.prompt_ids + pair.rejected_ids
    (ours,) = logprobs.answer_logprobs(tiny_gemma, [(ids, len(pair.prompt_ids))])
    with torch.no_grad():
        logits = tiny_gemma(input_ids=torch.tensor([ids])).logits[0].float()
    full = torch.log_softmax(logits, -1)
    expected = [full[p - 1, ids[p]].item() for p in range(len(pair.prompt_ids), len(ids))]
    assert ours == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------------------------
# Held-out preference accuracy
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # scores 13 pairs, 6 rows each
def test_preference_accuracy_counts_positive_margins(lens_model, tokenizer):
    pairs = logprobs.read_pairs()[:6]
    result = logprobs.preference_accuracy(pairs, lens_model, tokenizer, beta=BETA)
    swapped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    flipped = logprobs.preference_accuracy(swapped, lens_model, tokenizer, beta=BETA)
    assert result["pairs"] == 6 and set(result["models"]) == {"base", "sft", "sft+dpo"}
    for label in ("sft", "sft+dpo"):
        model = result["models"][label]
        assert model["reference"] == logprobs.REFERENCES[label]
        assert model["correct"] == round(model["accuracy"] * 6)
        # Swapping every pair's answers negates every margin: the accuracies add up to one.
        assert model["accuracy"] + flipped["models"][label]["accuracy"] == pytest.approx(1.0)
        assert model["mean_margin"] == pytest.approx(-flipped["models"][label]["mean_margin"], abs=1e-6)
        assert sum(c["pairs"] for c in model["by_category"].values()) == 6
    # One pair scored alone gives the margin its accuracy was counted from.
    first = logprobs.score_pair(lens_model, tokenizer, *logprobs.pair_texts(pairs[0]), beta=BETA)
    single = logprobs.preference_accuracy(pairs[:1], lens_model, tokenizer, beta=BETA)
    assert single["models"]["sft"]["mean_margin"] == pytest.approx(rows_by_model(first)["sft"]["margin"], abs=1e-5)


def test_stored_accuracy_is_marked_stale_when_the_adapters_change(tmp_path, lens_model, tokenizer, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(line + "\n" for line in logprobs.HELDOUT_PAIRS.read_text().splitlines()[:2]))
    out = tmp_path / "accuracy.json"
    record = logprobs.write_preference_accuracy(out, pairs, lens_model, tokenizer)
    stored = logprobs.read_preference_accuracy(out)
    assert stored["models"] == json.loads(json.dumps(record["models"])) and stored["stale"] is False
    assert stored["pairs"] == 2 and stored["beta"] == logprobs.dpo_beta()
    monkeypatch.setattr(logprobs, "adapter_fingerprints", lambda: (("sft", "0" * 64), ("sft+dpo", "1" * 64)))
    assert logprobs.read_preference_accuracy(out)["stale"] is True
    assert logprobs.read_preference_accuracy(tmp_path / "missing.json") is None


def normalise(prompt: str) -> str:
    """Case, whitespace and punctuation do not make a new prompt: "What's up?" == "whats up"."""
    return re.sub(r"[^\w ]", "", re.sub(r"\s+", " ", prompt)).strip().casefold()


def user_prompts(row: dict) -> list[str]:
    if "messages" in row:
        return [m["content"] for m in row["messages"] if m["role"] == "user"]
    if isinstance(row["prompt"], str):
        return [row["prompt"]]
    return [m["content"] for m in row["prompt"] if m["role"] == "user"]


def test_heldout_pairs_never_overlap_any_training_or_evaluation_prompt():
    trained = set()
    for name in ("sft.jsonl", "dpo.jsonl", "heldout.jsonl", "dev.jsonl"):
        for line in (DATA_DIR / name).read_text(encoding="utf-8").splitlines():
            trained |= {normalise(p) for p in user_prompts(json.loads(line))}
    heldout = logprobs.read_pairs()
    prompts = [normalise(logprobs.pair_texts(row)[0]) for row in heldout]
    assert len(prompts) >= 40 and len(set(prompts)) == len(prompts), "duplicated held-out prompts"
    assert not set(prompts) & trained, f"held-out prompts seen in training: {set(prompts) & trained}"
    dpo_answers = {
        normalise(m["content"])
        for line in (DATA_DIR / "dpo.jsonl").read_text(encoding="utf-8").splitlines()
        for side in ("chosen", "rejected")
        for m in json.loads(line)[side]
    }
    for row in heldout:
        assert set(row) == {"prompt", "chosen", "rejected", "category", "rejected_kind"}
        _, chosen, rejected = logprobs.pair_texts(row)
        assert normalise(chosen) not in dpo_answers and normalise(rejected) not in dpo_answers


def test_heldout_pairs_cover_the_kinds_a_teacher_needs(tokenizer):
    kinds = {row["rejected_kind"] for row in logprobs.read_pairs()}
    assert {
        "continues_text",
        "echo",
        "wrong_fact",
        "complies_with_harm",
        "refuse_then_comply",
        "needless_refusal",
        "length_padding",
    } <= kinds
    for row in logprobs.read_pairs():  # every pair fits the lens's limits
        logprobs.tokenize_pair(tokenizer, *logprobs.pair_texts(row))


def test_presets_include_the_teaching_pairs_and_every_heldout_pair():
    presets = logprobs.load_presets()
    titles = [p.title for p in presets]
    assert titles[:4] == ["The completion trap", "A refusal", "A confident wrong fact", "Length bias"]
    assert presets[0].chosen == "Paris." and "?" in presets[0].rejected
    assert sum(p.heldout for p in presets) == len(logprobs.read_pairs())
    assert all(p.shows.strip() for p in presets)


# --------------------------------------------------------------------------------------------
# Bounds and the command line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, chosen, rejected, message",
    [
        ("", "a", "b", "prompt is empty"),
        ("Hi", "   ", "b", "chosen answer is empty"),
        ("Hi", "a", "x" * (logprobs.MAX_TEXT_CHARS + 1), "rejected answer is 1,001 characters"),
        ("Hi " * 200, "a", "b", "prompt is"),
        ("Hi", "ok " * 300, "b", "chosen answer is"),
    ],
)
def test_bad_input_is_one_sentence(tokenizer, prompt, chosen, rejected, message):
    with pytest.raises(ValueError, match=message) as info:
        logprobs.tokenize_pair(tokenizer, prompt, chosen, rejected)
    assert "\n" not in str(info.value)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.logprobs", *args], capture_output=True, text=True, cwd=REPO_DIR, timeout=600
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--prompt", "", "--chosen", "a", "--rejected", "b"],
        ["--prompt", "Hi", "--chosen", "a"],
        ["--prompt", "Hi", "--chosen", "a", "--rejected", "b", "--temperature", "2"],
        ["--prompt", "Hi", "--chosen", "word " * 400, "--rejected", "b"],
        pytest.param(  # loads the tokenizer in a fresh process
            ["--prompt", "Hi", "--chosen", "a " * 300, "--rejected", "b"], marks=pytest.mark.slow
        ),
    ],
    ids=["empty", "missing", "unknown-flag", "too-many-chars", "too-many-tokens"],
)
def test_cli_bad_input_exits_2_with_one_line(args):
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")


@pytest.mark.slow
def test_cli_json_on_the_embedded_base_and_shipped_adapters():
    done = run_cli("--prompt", PAIR[0], "--chosen", PAIR[1], "--rejected", PAIR[2], "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"beta", "rows"} and result["beta"] == logprobs.dpo_beta()
    common = {
        "model",
        "chosen_logp",
        "rejected_logp",
        "chosen_tokens",
        "rejected_tokens",
        "chosen_sft_loss",
        "rejected_sft_loss",
    }
    dpo = {"reference", "chosen_reward", "rejected_reward", "margin", "p_chosen", "dpo_loss"}
    rows = result["rows"]
    assert [r["model"] for r in rows] == ["base", "sft", "sft+dpo"]
    assert set(rows[0]) == common
    assert set(rows[1]) == common | dpo and rows[1]["reference"] == "base"
    assert set(rows[2]) == common | dpo and rows[2]["reference"] == "sft"
    assert "".join(t["token"] for t in rows[0]["chosen_tokens"]) == "Paris.<end_of_turn>\n"
    # What the lesson promises: post-training makes the answer likelier than the continued quiz page.
    assert rows[1]["chosen_logp"] > rows[0]["chosen_logp"]
    assert rows[1]["margin"] > 0
