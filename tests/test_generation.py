"""Side-by-side generation on a tiny random Gemma 3 with the real Gemma tokenizer and template."""

import threading
import time

import pytest
import torch

from shared.chat_templates import end_of_turn_token, official_template
from shared.generation import (
    MAX_PROMPT_TOKENS,
    STOP_END_OF_TURN,
    STOP_EOS,
    STOP_LENGTH,
    Column,
    GenerationSettings,
    ResultCache,
    build_input_ids,
    generate_columns,
    input_segments,
    stream_columns,
)
from shared.loading import ServedModel

GEMMA3 = official_template("gemma3")


def served(model, tokenizer, template=GEMMA3, served_id="tiny-gemma3"):
    eot = end_of_turn_token(tokenizer, template) if template else None
    return ServedModel("tiny", served_id, model, tokenizer, template, "trl:gemma3" if template else None, eot)


@pytest.fixture
def columns(tiny_gemma, gemma_tokenizer):
    model = served(tiny_gemma, gemma_tokenizer)
    return [Column("Base", model, use_chat_template=False), Column("Aligned", model, use_chat_template=True)]


def clone(model):
    """A deep copy of a test model, without the per-model lock generation puts on it (locks do not copy)."""
    import copy

    lock = model.__dict__.pop("_pts_lock", None)
    try:
        return copy.deepcopy(model)
    finally:
        if lock is not None:
            model._pts_lock = lock


def biased_copy(model, token_id):
    """The tiny model with an output head that always prefers `token_id` (forces a stop)."""

    forced = clone(model)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = 30.0  # e^30 dwarfs the 262k other (zero) logits
    forced.lm_head = head
    return forced


def test_base_gets_raw_text_aligned_gets_template_with_one_bos(columns, gemma_tokenizer):
    base_ids = build_input_ids(columns[0], "What is the capital of France?")
    aligned_ids = build_input_ids(columns[1], "What is the capital of France?")
    bos = gemma_tokenizer.bos_token_id
    assert gemma_tokenizer.decode(base_ids) == "<bos>What is the capital of France?"
    assert aligned_ids.count(bos) == 1 and aligned_ids[0] == bos  # no double BOS from re-tokenizing
    assert gemma_tokenizer.decode(aligned_ids) == (
        "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_bad_prompts_are_refused_with_a_clear_message(columns):
    with pytest.raises(ValueError, match="Type a prompt"):
        build_input_ids(columns[0], "   ")
    with pytest.raises(ValueError, match=f"limit is {MAX_PROMPT_TOKENS} tokens"):
        build_input_ids(columns[0], "word " * (MAX_PROMPT_TOKENS + 10))
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=100_000).validated()


def test_columns_stream_together_and_each_reports_why_it_stopped(columns):
    snapshots = []
    for results in stream_columns(columns, "Hello, how are you?", GenerationSettings(max_new_tokens=12)):
        snapshots.append([(len(r.generated_ids), r.done) for r in results])
    # Both columns grow in the same updates (one batch), not one after the other.
    assert any(a[0] > 0 and b[0] > 0 and not a[1] and not b[1] for a, b in snapshots)
    final = generate_columns(columns, "Hello, how are you?", GenerationSettings(max_new_tokens=12))
    for r in final:
        assert r.error is None
        assert r.stop_reason in {STOP_LENGTH, STOP_EOS, STOP_END_OF_TURN}
        assert len(r.generated_ids) <= 12
        assert len(r.top_next) == 5 and sum(p for _, p in r.top_next) <= 1.0
        assert len(r.end_of_turn_probs) >= len(r.generated_ids)
        assert all(0.0 <= p <= 1.0 for p in r.end_of_turn_probs)
        assert r.tokens_per_s > 0


def test_batched_left_padded_rows_match_each_column_run_alone(columns):
    settings = GenerationSettings(max_new_tokens=10)
    together = generate_columns(columns, "Write a haiku about the sea.", settings)
    for column, batched in zip(columns, together):
        (alone,) = generate_columns([column], "Write a haiku about the sea.", settings)
        assert batched.generated_ids == alone.generated_ids


@pytest.mark.parametrize("stop_token, reason", [("<end_of_turn>", STOP_END_OF_TURN), ("<eos>", STOP_EOS)])
def test_stop_reason_names_the_token_the_model_emitted(tiny_gemma, gemma_tokenizer, stop_token, reason):
    forced = biased_copy(tiny_gemma, gemma_tokenizer.convert_tokens_to_ids(stop_token))
    column = Column("Aligned", served(forced, gemma_tokenizer), use_chat_template=True)
    (result,) = generate_columns([column], "Hi", GenerationSettings(max_new_tokens=8))
    assert result.stop_reason == reason and result.stop_token == stop_token
    assert result.generated_ids == []
    if stop_token == "<end_of_turn>":
        assert result.end_of_turn_probs[0] > 0.99


def test_a_failing_column_does_not_stop_the_other(tiny_gemma, gemma_tokenizer):

    broken = clone(tiny_gemma)

    def explode(*args, **kwargs):
        raise RuntimeError("simulated device failure")

    broken.model.embed_tokens.register_forward_pre_hook(explode)
    good = Column("Base", served(tiny_gemma, gemma_tokenizer), use_chat_template=False)
    bad = Column("Aligned", served(broken, gemma_tokenizer, served_id="broken"), use_chat_template=True)
    no_template = Column("No template", served(tiny_gemma, gemma_tokenizer, template=None), use_chat_template=True)
    results = generate_columns([good, bad, no_template], "Hello", GenerationSettings(max_new_tokens=6))
    assert results[0].error is None and results[0].stop_reason is not None
    assert "simulated device failure" in results[1].error
    assert "no chat template" in results[2].error


def test_closing_the_stream_cancels_generation(columns):
    stream = stream_columns(columns, "Tell me a long story.", GenerationSettings(max_new_tokens=500))
    next(stream)
    next(stream)
    before = threading.active_count()
    stream.close()
    deadline = time.monotonic() + 10
    while threading.active_count() >= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() < before, "the generation thread kept running for nobody"


def test_sampling_is_reproducible_with_a_seed(columns):
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, top_p=0.95, seed=7)
    first = generate_columns(columns, "Hello", settings)
    second = generate_columns(columns, "Hello", settings)
    assert [r.generated_ids for r in first] == [r.generated_ids for r in second]


def test_result_cache_replays_greedy_results_only(columns):
    cache = ResultCache(max_entries=2)
    greedy = GenerationSettings(max_new_tokens=4)
    results = generate_columns(columns, "Hi", greedy)
    key = cache.key(columns, "Hi", greedy)
    cache.put(key, results)
    replay = cache.get(key)
    assert [r.text for r in replay] == [r.text for r in results] and replay is not results
    assert cache.key(columns, "Hi", GenerationSettings(do_sample=True)) is None
    for prompt in ["a", "b"]:  # bounded: the oldest entry goes first
        cache.put(cache.key(columns, prompt, greedy), results)
    assert cache.get(key) is None


def test_input_segments_mark_special_tokens_and_keep_the_exact_text(columns, gemma_tokenizer):
    ids = build_input_ids(columns[1], "Hello")
    segments = input_segments(ids, gemma_tokenizer)
    assert "".join(text for text, _ in segments) == gemma_tokenizer.decode(ids)
    specials = [text for text, label in segments if label]
    assert specials == ["<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_turn>"]


@pytest.fixture
def adapted(tiny_gemma, gemma_tokenizer):
    """The tiny model wrapped by peft with two random (non-zero) LoRA adapters, as the comparer serves
    the project's SFT and SFT+DPO adapters on one base."""

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(clone(tiny_gemma), config, adapter_name="sft")
    model.add_adapter("dpo", config)
    return model.eval()


def test_adapter_columns_in_one_batch_match_each_adapter_run_alone(adapted, gemma_tokenizer):
    base = served(adapted, gemma_tokenizer)
    cols = [Column("Base", base, use_chat_template=False)] + [
        Column(
            name,
            ServedModel(
                "tiny", "tiny-gemma3", adapted, gemma_tokenizer, GEMMA3, "trl:gemma3", base.end_of_turn, adapter=name
            ),
            use_chat_template=True,
        )
        for name in ("sft", "dpo")
    ]
    settings = GenerationSettings(max_new_tokens=8)
    together = generate_columns(cols, "Name a colour.", settings)
    alone = [generate_columns([c], "Name a colour.", settings)[0] for c in cols]
    assert [r.generated_ids for r in together] == [r.generated_ids for r in alone]
    # The adapters really route: the two adapter rows differ from each other.
    assert together[1].generated_ids != together[2].generated_ids


def test_retiring_finished_rows_from_their_adapter_changes_no_output(adapted, gemma_tokenizer):
    from transformers import StoppingCriteriaList

    from shared.adapters import BASE_ADAPTER
    from shared.generation import _RetireFinishedRows

    ids = torch.tensor([gemma_tokenizer("Name a colour.")["input_ids"]] * 3)
    common = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=gemma_tokenizer.pad_token_id,
    )
    with torch.inference_mode():
        free = adapted.generate(**common, adapter_names=[BASE_ADAPTER, "sft", "dpo"])
    # Make the sft row's second new token a stop token, so that row finishes early.
    stop = int(free[1, ids.shape[1] + 1])
    names = [BASE_ADAPTER, "sft", "dpo"]
    with torch.inference_mode():
        expected = adapted.generate(**common, eos_token_id=[stop], adapter_names=list(names))
        retired = adapted.generate(
            **common,
            eos_token_id=[stop],
            adapter_names=names,
            stopping_criteria=StoppingCriteriaList([_RetireFinishedRows(names, [stop])]),
        )
    assert torch.equal(expected, retired)
    assert names[1] == BASE_ADAPTER  # the finished row stopped paying for its adapter


def test_whitespace_next_tokens_are_never_blank_rows():
    """The top-5 panel: a newline or space token must be readable, and every token keeps its own row."""
    from shared.generation import ColumnResult
    from shared.views.comparer import top_next_confidences

    result = ColumnResult("base", top_next=[("\n\n", 0.5), ("▁Paris", 0.2), ("▁", 0.1), ("▁▁", 0.05), ("", 0.01)])
    assert top_next_confidences(result) == {"⏎⏎": 0.5, " Paris": 0.2, "␣": 0.1, "␣␣": 0.05, "(empty)": 0.01}
