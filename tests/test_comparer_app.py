"""The comparer app through gradio_client, on the real embedded model (as a visitor offline sees it)."""

import pytest

APP = "comparer"  # served by the `client` fixture in conftest.py


pytestmark = pytest.mark.slow

# Outputs per column: header, exact input (highlighted), output text, stats, top-5; then the plot.
PER_COLUMN = 5


def ask(client, prompt, base="google/gemma-3-270m", aligned="google/gemma-3-270m-it", max_new_tokens=16):
    return client.submit(prompt, base, aligned, max_new_tokens, False, 0.7, 0.9, 0, api_name="/compare")


def columns_of(outputs, count=2):
    return [outputs[i * PER_COLUMN : (i + 1) * PER_COLUMN] for i in range(count)]


def test_both_columns_stream_and_show_what_each_model_received(client):
    job = ask(client, "Hello, how are you?")
    updates = list(job)
    assert len(updates) > 5, "the answer should arrive token by token, not in one piece"
    base, aligned = columns_of(job.outputs()[-1])
    assert "(fallback)" in base[0] and "raw prompt" in base[0]
    assert "gemma3" in aligned[0] and "chat template" in aligned[0]
    base_input = [(s["token"], s["class_or_confidence"]) for s in base[1]]
    assert base_input == [("<bos>", "special token"), ("Hello, how are you?", None)]
    aligned_specials = [s["token"] for s in aligned[1] if s["class_or_confidence"]]
    assert aligned_specials == ["<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_turn>"]
    for column in (base, aligned):
        assert column[2].strip(), "each column shows generated text"
        assert column[3].startswith("**Stopped:**") and "tokens/s" in column[3]
        assert len(column[4]["confidences"]) == 5
    plot = job.outputs()[-1][-1]
    assert {"Base", "Aligned"} <= {row[2] for row in plot["data"]}


def test_the_projects_adapters_answer_and_stop_where_the_base_rambles(client):
    """The whole lesson in one prompt: same weights, same fact; post-training makes it answer and stop."""
    outputs = ask(client, "What is the capital of France?", max_new_tokens=48).result()
    base, fallback, sft, dpo = columns_of(outputs, 4)
    assert "Paris" in base[2] and "hit the token limit" in base[3]  # knows it, but keeps on writing
    assert "hit the token limit" in fallback[3]  # a chat template alone does not teach stopping
    for column in (sft, dpo):
        assert "(ours)" in column[0]
        assert "Paris" in column[2]
        assert "end-of-turn token `<end_of_turn>`" in column[3]
    plot = outputs[-1]["data"]
    last_eot = {label: [p for _, p, name in plot if name == label][-1] for label in ("Aligned", "Base + SFT (ours)")}
    assert last_eot["Base + SFT (ours)"] > 0.5 > last_eot["Aligned"]  # the stop sign, learned


def test_a_repeated_prompt_replays_the_same_answer(client):
    first = ask(client, "Write a haiku about the sea.").result()
    second = ask(client, "Write a haiku about the sea.").result()
    assert columns_of(first)[0][2] == columns_of(second)[0][2]
    assert columns_of(first)[1][2] == columns_of(second)[1][2]


@pytest.mark.parametrize(
    "prompt, max_new_tokens, message",
    [
        ("", 16, "Type a prompt"),
        ("word " * 600, 16, "the limit is 512 tokens"),
        ("Hi", 100_000, "greater than maximum value 512"),  # the slider enforces the cap
    ],
    ids=["empty", "too-long", "too-many-new-tokens"],
)
def test_bad_input_gets_a_friendly_error(client, prompt, max_new_tokens, message):
    with pytest.raises(Exception, match=message):
        ask(client, prompt, max_new_tokens=max_new_tokens).result()


def test_an_unknown_model_id_falls_back_and_says_so(client):
    outputs = ask(client, "Hi", base="nobody/does-not-exist", max_new_tokens=4).result()
    base, _ = columns_of(outputs)
    assert "(fallback)" in base[0] and base[2].strip()


def test_choosing_a_preset_says_which_model_serves_and_why(client):
    base_id, aligned_id, note = client.predict("qwen2.5-0.5b", api_name="/load_pair")
    assert (base_id, aligned_id) == ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct")
    assert "Gemma 3 270M base (embedded)" in note and "HF_HUB_OFFLINE=1" in note
    assert "Why the aligned column degenerates" in note
