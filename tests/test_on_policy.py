"""On-policy preference pairs (`train/on_policy.py`): which of the SFT model's answers become rejected ones.

A pair whose rejected answer is in fact a good answer teaches DPO to push a good answer down, so every judge
is tested on hand-made answers, including right answers in other words that must *not* be rejected.
"""

import json
from pathlib import Path

import pytest

from train.evaluate import is_refusal, refuses_cleanly
from train.on_policy import (
    HARM_WORDS,
    MAX_PAIRS_PER_PROMPT,
    balance_refusals,
    failure,
    kind_counts,
    opening,
    pairs_from_answers,
    rejected_answer,
    sibling_pairs,
    states_another_fact,
)

SFT_ADAPTER = Path(__file__).resolve().parents[1] / "train" / "adapters" / "gemma-3-270m-sft"


def row(category: str, prompt: str, chosen: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "category": category,
    }


PRESIDENT = ("Who was the first president of the United States?", "George Washington was the first president.")


@pytest.mark.parametrize(
    "question, answer, reference, wrong",
    [
        (*PRESIDENT[:1], "Abraham Lincoln was the first president of the United States.", PRESIDENT[1], True),
        (*PRESIDENT[:1], "It was George Washington.", PRESIDENT[1], False),
        (*PRESIDENT[:1], "Washington.", PRESIDENT[1], False),
        ("What is 12 plus 15?", "12 + 15 = 26", "12 plus 15 is 27.", True),
        ("What is 12 plus 15?", "The sum is 27.", "12 plus 15 is 27.", False),
        ("What is 12 plus 15?", "27, or 28 on a good day.", "12 plus 15 is 27.", True),  # a second number
        # Number words and digits say the same thing.
        ("How many sides does a triangle have?", "It has 3 sides.", "A triangle has three sides.", False),
        ("How many sides does a triangle have?", "Two sides are 6 and 4.", "A triangle has three sides.", True),
        ("How many minutes are in an hour?", "An hour is 3600 seconds.", "There are sixty minutes in an hour.", True),
        ("What do bees make?", "Bee wax is a wax secreted by bees.", "Bees make honey.", True),
        ("What do bees make?", "Honey, from nectar.", "Bees make honey. They also make wax.", False),
        # The subject copied where the answer belongs names none of the answer's words.
        ("capital of denmark", "Denmark is the capital of Denmark.", "The capital of Denmark is Copenhagen.", True),
    ],
)
def test_only_an_answer_stating_another_fact_counts_as_wrong(question, answer, reference, wrong):
    assert states_another_fact(question, answer, reference) is wrong


@pytest.mark.parametrize(
    "category, answer, stopped, kind",
    [
        ("benign_edgy", "I can't help with fireworks, but I can show you a tripod.", True, "needless_refusal"),
        ("benign_edgy", "Use a tripod, a low ISO and a shutter of two to four seconds.", True, None),
        ("benign_edgy", "Use a tripod, a tripod, a tripod, a tripod", False, "continues_text"),
        ("benign_edgy", "How do I photograph fireworks? How do I photograph stars?", True, "echo"),
        ("refusal", "I can't help with that. Ask me about safe chemistry instead.", True, None),
        ("refusal", "Sure! First, get a bottle and fill it with", True, "complies_with_harm"),
        ("refusal", "I can't help with that, but here's how: first, get a bottle", True, "refuse_then_comply"),
    ],
)
def test_a_failure_is_named_by_what_the_sft_model_did(category, answer, stopped, kind):
    prompt = "How do I make a fire bomb?" if category == "refusal" else "How do I photograph fireworks?"
    chosen = "I can't help with that." if category == "refusal" else "Use a tripod and a long shutter."
    assert failure(row(category, prompt, chosen), answer, stopped) == kind


def test_a_factual_answer_is_wrong_only_against_the_base_s_own_fact():
    question = row("factual", "How many degrees are in a circle?", "A circle has 360 degrees.")
    assert failure(question, "180 degrees", True) == "wrong_fact"
    assert failure(question, "There are 360 degrees in a full circle.", True) is None
    assert failure(question, "I can't answer questions about circles.", True) == "needless_refusal"


def test_a_harmful_opening_is_cut_short_and_still_shows_the_failure():
    long = "Sure, here are some ways to do it: 1. take the first thing 2. then the second thing 3. and more"
    cut = opening(long)
    assert long.startswith(cut[:-1]) and cut.endswith("…") and len(cut.split()) == HARM_WORDS
    # A refusal whose compliance starts after word 12 is cut after the compliance begins, not before.
    late = "I can't help with that, it is dangerous and illegal for you. But here's how you do it: first, get a"
    cut = opening(late)
    assert is_refusal(cut) and not refuses_cleanly(cut) and "here's how" in cut
    assert opening("Go away.") == "Go away."  # short answers stay whole, with no ellipsis


def test_a_rejected_answer_that_no_longer_shows_its_failure_is_dropped():
    greeting = row("chitchat", "Hi!", "Hello! How can I help?")
    # The refusal comes late: balanced to the chosen length (8 words), it would be a plain answer.
    late_refusal = "Hello there my friend, it is nice to meet you today and I can't help with that."
    assert rejected_answer(greeting, late_refusal, "needless_refusal") is None
    assert rejected_answer(greeting, "I can't help with greetings.", "needless_refusal") == (
        "I can't help with greetings."
    )


def test_pairs_keep_distinct_failures_greedy_first_and_at_most_two_per_prompt():
    edgy = row("benign_edgy", "How do I kill a Python process?", "Find its ID with ps, then run kill with it.")
    tries = [
        ("I can't help with killing.", True),  # greedy
        ("Find the ID with ps, then kill it.", True),  # a fine sample: no pair
        ("I can't help with killing.", True),  # the same failure again: one pair
        ("I can't help with processes, but I can help with Python.", True),
        ("I won't help with that.", True),  # a third failure: over the cap
    ]
    pairs = pairs_from_answers([edgy], [tries])
    assert [p["rejected"][0]["content"] for p in pairs] == [
        "I can't help with killing.",
        "I can't help with processes, but I can help with Python.",
    ]
    assert len(pairs) == MAX_PAIRS_PER_PROMPT and kind_counts(pairs) == {"benign_edgy: needless_refusal": 2}
    assert all(p["chosen"] == edgy["chosen"] and p["source"] == "sft, on-policy" for p in pairs)
    assert pairs_from_answers([edgy], [[("Find its ID with ps, then kill it.", True)]]) == []


def test_balancing_keeps_no_more_harmful_pairs_than_needless_refusals_first_pairs_first():
    harmful = [row("refusal", f"How do I hurt person {i}?", "I can't help with that.") for i in range(3)]
    edgy = [row("benign_edgy", f"How do I shoot photo {i}?", "Use a tripod.") for i in range(2)]
    tries = [[("Hit them hard.", True), ("First, find them.", True)]] * 3 + [[("I can't help with that.", True)]] * 2
    pairs = pairs_from_answers(harmful + edgy, tries)
    assert [p["rejected_kind"] for p in pairs].count("complies_with_harm") == 6
    kept = balance_refusals(pairs)
    harm = [p for p in kept if p["category"] == "refusal"]
    # Two needless refusals allow two harmful pairs: the first pair of the first two prompts, in file order.
    assert [(p["prompt"][0]["content"], p["rejected"][0]["content"]) for p in harm] == [
        ("How do I hurt person 0?", "Hit them hard."),
        ("How do I hurt person 1?", "Hit them hard."),
    ]
    assert [p for p in kept if p["category"] != "refusal"] == [p for p in pairs if p["category"] != "refusal"]
    # With enough needless refusals, nothing is dropped.
    assert balance_refusals(pairs[:2] + pairs[6:] * 2) == pairs[:2] + pairs[6:] * 2


def test_sibling_prompts_give_one_contrastive_pair_each_way_per_topic():
    """A benign question and a harmful request on one topic: each prefers its own answer over its sibling's, so
    only intent separates chosen from rejected; the help used as a rejected answer is cut to its opening."""
    help_text = "Call a locksmith; they open the door with a pick set and check your ID before they start the job."
    benign = {**row("benign_edgy", "How do locksmiths open a door when I'm locked out?", help_text), "topic": "lock"}
    harmful = {
        **row("refusal", "How do I open my neighbour's door while they're away?", "I can't help with that."),
        "topic": "lock",
    }
    plain = row("chitchat", "Hello!", "Hi! How can I help?")
    pairs = sibling_pairs([benign, plain, harmful])
    assert [(p["prompt"], p["chosen"], p["rejected_kind"]) for p in pairs] == [
        (harmful["prompt"], harmful["chosen"], "complies_with_harm"),
        (benign["prompt"], benign["chosen"], "needless_refusal"),
    ]
    harm_rejected, benign_rejected = (p["rejected"][0]["content"] for p in pairs)
    assert harm_rejected == opening(help_text) and len(harm_rejected.split()) == HARM_WORDS
    assert failure(harmful, harm_rejected, True) == "complies_with_harm" and not refuses_cleanly(harm_rejected)
    assert benign_rejected == "I can't help with that." and failure(benign, benign_rejected, True) == "needless_refusal"
    assert {p["source"] for p in pairs} == {"contrastive, topic lock"}
    assert sibling_pairs([plain]) == []
    with pytest.raises(ValueError, match="'lock' needs one benign row and one refusal row"):
        sibling_pairs([benign, plain])
    with pytest.raises(ValueError, match="'lock' has two benign rows"):
        sibling_pairs([benign, harmful, benign])


def test_a_second_round_files_its_pairs_under_the_dpo_policy(tmp_path):
    """Round 2 asks the round-1 DPO adapter: its pairs say so, and the label comes from the adapter's record."""
    from train.on_policy import policy_label

    for stage in ("sft", "dpo"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "pipeline.json").write_text(json.dumps({"stage": stage}))
    assert policy_label(str(tmp_path / "sft")) == "sft" and policy_label(str(tmp_path / "dpo")) == "sft+dpo"
    edgy = row("benign_edgy", "How do I shoot a photo at night?", "Use a tripod and a long exposure.")
    pairs = pairs_from_answers([edgy], [[("I can't help with shooting.", True)]], "sft+dpo")
    assert [p["source"] for p in pairs] == ["sft+dpo, on-policy"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--samples", "9"],
        ["--sft_adapter", "no/such/adapter"],
        ["--sft_adapter", str(SFT_ADAPTER), "--prompts", "no/such/prompts.jsonl"],
        ["--adapter", str(SFT_ADAPTER), "--pairs", "no/such/pairs.jsonl"],
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(argv, capsys):
    from train.on_policy import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err


def test_a_lone_sibling_is_refused_in_one_line_before_any_model_loads(capsys, tmp_path):
    from train.on_policy import main

    lonely = {**row("benign_edgy", "How do I sharpen a knife?", "Use a whetstone."), "topic": "knife"}
    (tmp_path / "p.jsonl").write_text(json.dumps(lonely) + "\n")
    assert main(["--adapter", str(SFT_ADAPTER), "--prompts", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "needs one benign row" in err and len(err.splitlines()) == 1, err
