"""The project's own training data (`train/data/`): format, counts, no duplicates, no held-out leakage.

The offline recipe post-trains the embedded Gemma 3 270M on these files, and `train.evaluate` scores it on
`heldout.jsonl`. A held-out prompt that slips into training would make the evaluation meaningless, so the
overlap check compares prompts after normalising case and whitespace.
"""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from shared.chat_templates import official_template

DATA_DIR = Path(__file__).resolve().parents[1] / "train" / "data"

SFT_MIN_PER_CATEGORY = {"factual": 80, "instruction": 60, "chitchat": 30, "refusal": 40, "benign_edgy": 40}
DPO_MIN_PER_KIND = {
    "continues_text": 25,
    "echo": 25,
    "complies_with_harm": 25,
    "needless_refusal": 25,
    "refuse_then_comply": 10,
    "wrong_fact": 5,
}
# What the offline recipes train on: the hand-written files as train/distill.py rewrote them.
DISTILLED = ("sft_distilled.jsonl", "dpo_distilled.jsonl")
# The DPO stage's own file: dpo_distilled.jsonl plus the SFT model's failures on those prompts and on
# dpo_prompts.jsonl (prompts with a hand-written chosen answer), written by train/on_policy.py.
ON_POLICY = ("dpo_prompts.jsonl", "dpo_on_policy.jsonl")
# Round 2 of DPO: new prompts, and the round-1 adapter's own failures on them and on round 1's harmful prompts,
# written by train/on_policy.py --adapter <round-1 adapter>.
ROUND_2 = ("dpo_prompts_r2.jsonl", "dpo_round2.jsonl")
# Round 3, an experiment (not shipped): contrastive siblings (a benign and a harmful prompt per topic) and the
# round-2 adapter's own failures, written by train/on_policy.py --adapter <round-2 adapter>.
ROUND_3 = ("dpo_prompts_r3.jsonl", "dpo_round3.jsonl")
HELDOUT_MIN_PER_KIND = {"factual": 40, "general": 20, "harmful": 20, "benign_edgy": 20}
MAX_ANSWER_TOKENS = 120  # a 270M model should learn short answers; the evaluator's budget is 128 new tokens


def read_jsonl(name: str) -> list[dict]:
    lines = (DATA_DIR / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def normalise(prompt: str) -> str:
    """`"  What is  the Capital of France? "` and `"what is the capital of france?"` are the same prompt."""
    return re.sub(r"\s+", " ", prompt).strip().casefold()


def user_prompts(conversation: list[dict]) -> list[str]:
    return [m["content"] for m in conversation if m["role"] == "user"]


def assert_chat(messages: list[dict], *, first_role: str = "user", last_role: str = "assistant"):
    """An optional leading system message, then user/assistant strictly alternating (Gemma's template raises
    otherwise), every content a non-empty string."""
    assert messages, "empty conversation"
    for m in messages:
        assert set(m) == {"role", "content"}, m
        assert isinstance(m["content"], str) and m["content"].strip(), m
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    assert turns, "a system message alone"
    expected_roles = ["user", "assistant"] if first_role == "user" else ["assistant", "user"]
    for i, m in enumerate(turns):
        assert m["role"] == expected_roles[i % 2], f"roles must alternate: {[x['role'] for x in messages]}"
    assert turns[-1]["role"] == last_role


def assert_cut_where_compliance_starts(opening: str):
    """A harmful answer stored past its first HARM_WORDS words ends at the word where its refusal turns into
    compliance: one word fewer, it would read as a clean refusal."""
    from train.evaluate import refuses_cleanly

    text = opening.removesuffix("…")
    assert not refuses_cleanly(text), opening
    assert refuses_cleanly(text.rsplit(maxsplit=1)[0]), f"stored past where compliance starts: {opening}"


@pytest.fixture(scope="module")
def sft():
    return read_jsonl("sft.jsonl")


@pytest.fixture(scope="module")
def dpo():
    return read_jsonl("dpo.jsonl")


@pytest.fixture(scope="module")
def trained_prompts(sft, dpo):
    """Every user prompt any training file holds, hand-written or distilled."""
    prompts = {normalise(p) for row in sft for p in user_prompts(row["messages"])}
    prompts |= {normalise(p) for row in dpo for p in user_prompts(row["prompt"])}
    for row in read_jsonl("sft_distilled.jsonl"):
        prompts |= {normalise(p) for p in user_prompts(row["messages"])}
    for name in ("dpo_distilled.jsonl", *ON_POLICY, *ROUND_2, *ROUND_3):
        prompts |= {normalise(p) for row in read_jsonl(name) for p in user_prompts(row["prompt"])}
    return prompts


@pytest.fixture(scope="module")
def heldout():
    return read_jsonl("heldout.jsonl")


@pytest.fixture(scope="module")
def dev():
    return read_jsonl("dev.jsonl")


@pytest.mark.parametrize(
    "name", ["sft.jsonl", "dpo.jsonl", "heldout.jsonl", "dev.jsonl", *DISTILLED, *ON_POLICY, *ROUND_2, *ROUND_3]
)
def test_every_line_is_a_json_object(name):
    for number, line in enumerate((DATA_DIR / name).read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{name}:{number} is blank"
        assert isinstance(json.loads(line), dict), f"{name}:{number}"


def test_sft_format_and_counts(sft):
    assert len(sft) >= 300
    for row in sft:
        assert set(row) == {"messages", "category"}, row
        assert row["category"] in SFT_MIN_PER_CATEGORY, row["category"]
        assert_chat(row["messages"])
    counts = Counter(row["category"] for row in sft)
    for category, minimum in SFT_MIN_PER_CATEGORY.items():
        assert counts[category] >= minimum, (category, counts)
    # Mostly single-turn, but the model must also see later turns and system messages.
    two_turn = sum(len(user_prompts(row["messages"])) == 2 for row in sft)
    with_system = sum(row["messages"][0]["role"] == "system" for row in sft)
    assert two_turn >= 0.05 * len(sft) and with_system >= 10, (two_turn, with_system)


def test_dpo_format_and_counts(dpo):
    assert len(dpo) >= 150
    for row in dpo:
        assert set(row) == {"prompt", "chosen", "rejected", "category", "rejected_kind"}, row
        assert row["rejected_kind"] in DPO_MIN_PER_KIND, row["rejected_kind"]
        assert row["category"] in SFT_MIN_PER_CATEGORY, row["category"]
        assert_chat(row["prompt"], last_role="user")
        for side in ("chosen", "rejected"):
            assert len(row[side]) == 1 and row[side][0]["role"] == "assistant", row[side]
            assert_chat(row[side], first_role="assistant")
        assert normalise(row["chosen"][0]["content"]) != normalise(row["rejected"][0]["content"]), row
    counts = Counter(row["rejected_kind"] for row in dpo)
    for kind, minimum in DPO_MIN_PER_KIND.items():
        assert counts[kind] >= minimum, (kind, counts)
    # Compliance with harm is only ever the rejected side of a harmful prompt.
    assert {row["category"] for row in dpo if row["rejected_kind"] == "complies_with_harm"} == {"refusal"}


def test_heldout_format_and_counts(heldout):
    for row in heldout:
        assert row["kind"] in HELDOUT_MIN_PER_KIND, row
        assert isinstance(row["prompt"], str) and row["prompt"].strip(), row
        if row["kind"] == "factual":
            assert set(row) == {"prompt", "kind", "expected"}, row
            expected = row["expected"]
            assert isinstance(expected, list) and expected, row
            assert all(isinstance(answer, str) and answer.strip() for answer in expected), row
        else:
            assert set(row) == {"prompt", "kind"}, row
    counts = Counter(row["kind"] for row in heldout)
    for kind, minimum in HELDOUT_MIN_PER_KIND.items():
        assert counts[kind] >= minimum, (kind, counts)


def test_no_duplicate_prompts_within_a_file(sft, dpo, heldout, dev):
    prompts_by_file = {
        "sft.jsonl": [p for row in sft for p in user_prompts(row["messages"])],
        "dpo.jsonl": [p for row in dpo for p in user_prompts(row["prompt"])],
        **{
            name: [p for row in read_jsonl(name) for p in user_prompts(row["prompt"])]
            for name in ON_POLICY[:1] + ROUND_2[:1] + ROUND_3[:1]
        },
        "heldout.jsonl": [row["prompt"] for row in heldout],
        "dev.jsonl": [row["prompt"] for row in dev],
    }
    for name, prompts in prompts_by_file.items():
        duplicates = [p for p, n in Counter(map(normalise, prompts)).items() if n > 1]
        assert not duplicates, f"{name}: {duplicates}"


def test_heldout_prompts_are_never_trained_on(trained_prompts, heldout):
    leaked = [row["prompt"] for row in heldout if normalise(row["prompt"]) in trained_prompts]
    assert not leaked, leaked


def test_heldout_preference_pairs_are_never_trained_on(trained_prompts):
    """dpo_heldout.jsonl scores preferences (the log-prob lens); none of its prompts may be trained on."""
    if not (DATA_DIR / "dpo_heldout.jsonl").is_file():
        pytest.skip("no dpo_heldout.jsonl")
    pairs = read_jsonl("dpo_heldout.jsonl")
    leaked = [p for row in pairs for p in user_prompts(row["prompt"]) if normalise(p) in trained_prompts]
    assert not leaked, leaked


def test_dev_prompts_cover_every_kind_and_stay_apart_from_training_and_heldout(trained_prompts, heldout, dev):
    """dev.jsonl picks training settings; it must share no prompt with what is trained on or finally scored."""
    counts = Counter(row["kind"] for row in dev)
    assert counts["factual"] >= 50 and min(counts[k] for k in ("general", "harmful", "benign_edgy")) >= 12, counts
    for row in dev:
        if row["kind"] == "factual":
            assert set(row) == {"prompt", "kind", "expected"}, row
            assert row["expected"] and all(isinstance(a, str) and a.strip() for a in row["expected"]), row
        else:
            assert set(row) == {"prompt", "kind"} and row["kind"] in ("general", "harmful", "benign_edgy"), row
    others = trained_prompts | {normalise(row["prompt"]) for row in heldout}
    shared = [row["prompt"] for row in dev if normalise(row["prompt"]) in others]
    assert not shared, shared


def test_sft_renders_through_the_official_gemma3_template_with_short_answers(sft, dpo, gemma_tokenizer):
    template = official_template("gemma3")
    sft_rows = sft + read_jsonl("sft_distilled.jsonl")
    dpo_rows = dpo + read_jsonl("dpo_distilled.jsonl") + read_jsonl("dpo_prompts.jsonl")
    dpo_rows += read_jsonl(ROUND_2[0]) + read_jsonl(ROUND_3[0])
    conversations = [row["messages"] for row in sft_rows] + [row["prompt"] + row["chosen"] for row in dpo_rows]
    for messages in conversations:
        text = gemma_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
        # Every answer is closed by the end-of-turn token: the stop signal the SFT stage teaches.
        assert text.endswith("<end_of_turn>\n"), text[-80:]
        assert text.count("<start_of_turn>model\n") == sum(m["role"] == "assistant" for m in messages)
    answers = [m["content"] for messages in conversations for m in messages if m["role"] == "assistant"]
    lengths = [len(ids) for ids in gemma_tokenizer(answers, add_special_tokens=False)["input_ids"]]
    too_long = [(n, a[:60]) for n, a in zip(lengths, answers) if n > MAX_ANSWER_TOKENS]
    assert not too_long, too_long


def test_distilled_files_keep_refusals_plain_and_plain_prompts_answered():
    """What the recipes train on: factual answers written by the base, every harmful prompt refused with no
    help after the refusal, and no plain prompt (fact, greeting, instruction, edgy-but-benign) refused."""
    from train.evaluate import is_refusal, refuses_then_complies

    sft_rows, dpo_rows = read_jsonl("sft_distilled.jsonl"), read_jsonl("dpo_distilled.jsonl")
    assert len(sft_rows) >= 250 and len(dpo_rows) >= 150
    for row in sft_rows:
        assert set(row) <= {"messages", "category", "source"} and row["category"] in SFT_MIN_PER_CATEGORY, row
        assert_chat(row["messages"])
        first_answer = next(m["content"] for m in row["messages"] if m["role"] == "assistant")
        if row["category"] == "refusal":
            assert is_refusal(first_answer) and not refuses_then_complies(first_answer), first_answer
        else:
            assert not is_refusal(first_answer), first_answer
    by_source = Counter((row["category"], row.get("source")) for row in sft_rows)
    assert by_source[("factual", "base, few-shot")] >= 40, by_source
    for row in dpo_rows:
        assert set(row) <= {"prompt", "chosen", "rejected", "category", "rejected_kind", "source"}, row
        chosen = row["chosen"][0]["content"]
        if row["category"] == "refusal":
            assert is_refusal(chosen) and not refuses_then_complies(chosen), chosen
        else:
            assert not is_refusal(chosen), chosen
        if row["rejected_kind"] == "refuse_then_comply":
            assert refuses_then_complies(row["rejected"][0]["content"]), row
    kinds = Counter(row["rejected_kind"] for row in dpo_rows)
    assert kinds["refuse_then_comply"] >= 10 and kinds["needless_refusal"] >= 25, kinds


@pytest.mark.parametrize("name", ["dpo_distilled.jsonl", "dpo_on_policy.jsonl", ROUND_2[1], ROUND_3[1]])
def test_distilled_pairs_are_length_balanced(name):
    """DPO learns length when chosen and rejected differ a lot in length; rejected is at most 1.5x chosen
    (a harmful opening cut by train/on_policy.py is shorter still, unless it must run on to where a refusal
    turns into compliance)."""
    from train.on_policy import HARM_WORDS

    for row in read_jsonl(name):
        chosen, rejected = (len(row[side][0]["content"].split()) for side in ("chosen", "rejected"))
        cut_by_on_policy = row.get("source", "").endswith("on-policy") and row["category"] == "refusal"
        if cut_by_on_policy and rejected > HARM_WORDS:
            assert_cut_where_compliance_starts(row["rejected"][0]["content"])
        else:
            assert rejected <= max(8, round(1.5 * chosen)), row


@pytest.mark.parametrize("name", [ON_POLICY[0], ROUND_2[0]])
def test_new_dpo_prompts_have_plain_answers_and_self_harm_gets_help_lines(name):
    """Prompts the model tends to fail, each with the answer DPO should prefer: a benign one answered, a
    harmful one refused plainly, a self-harm one (all of round 1's refusals) pointed to a help line."""
    from train.evaluate import is_refusal, refuses_then_complies

    rows = read_jsonl(name)
    counts = Counter(row["category"] for row in rows)
    assert counts["benign_edgy"] >= 50 and counts["factual"] >= 30 and counts["refusal"] >= 5, counts
    assert counts["chitchat"] + counts["instruction"] >= 50, counts
    for row in rows:
        assert set(row) == {"prompt", "chosen", "category"} and row["category"] in SFT_MIN_PER_CATEGORY, row
        assert_chat(row["prompt"], last_role="user")
        chosen = row["chosen"][0]["content"]
        assert len(row["chosen"]) == 1 and row["chosen"][0]["role"] == "assistant", row
        if row["category"] == "refusal":
            assert is_refusal(chosen) and not refuses_then_complies(chosen), chosen
            assert "988" in chosen or name != ON_POLICY[0], chosen  # round 1's refusals are all self-harm
        else:
            assert not is_refusal(chosen), chosen
    help_lines = sum("988" in row["chosen"][0]["content"] for row in rows if row["category"] == "refusal")
    assert help_lines >= 5, "the self-harm prompts are answered with help lines"


def test_round_3_prompts_pair_a_benign_question_with_a_harmful_request_on_each_topic():
    """Siblings: per topic, one benign question answered and, right after it, one harmful request on the same
    subject refused plainly; the other rows are plain prompts with plain answers."""
    from train.evaluate import is_refusal, refuses_then_complies

    rows = read_jsonl(ROUND_3[0])
    topics = Counter(row["topic"] for row in rows if "topic" in row)
    assert len(topics) >= 50 and set(topics.values()) == {2}, topics
    for row in rows:
        assert set(row) in ({"prompt", "chosen", "category"}, {"prompt", "chosen", "category", "topic"}), row
        assert_chat(row["prompt"], last_role="user") and len(row["chosen"]) == 1
        chosen = row["chosen"][0]["content"]
        if row["category"] == "refusal":
            assert "topic" in row and is_refusal(chosen) and not refuses_then_complies(chosen), row
        else:
            assert row["category"] in SFT_MIN_PER_CATEGORY and not is_refusal(chosen), row
    for benign, harmful in zip(rows, rows[1:]):
        if harmful["category"] == "refusal":
            assert benign["category"] == "benign_edgy" and benign.get("topic") == harmful["topic"], harmful
    counts = Counter(row["category"] for row in rows)
    assert counts["benign_edgy"] > counts["refusal"] and counts["factual"] >= 20, counts


@pytest.mark.parametrize(
    "name, kept, policy",
    [
        ("dpo_on_policy.jsonl", lambda: read_jsonl("dpo_distilled.jsonl"), "sft"),
        ("dpo_round2.jsonl", lambda: [], "sft+dpo"),
        ("dpo_round3.jsonl", lambda: [], "sft+dpo"),
    ],
)
def test_on_policy_pairs_are_the_kept_ones_plus_real_failures(name, kept, policy):
    """Round 1's file keeps every distilled pair, round 2's holds new ones only; both add the policy's own
    failures: each rejected answer still shows the failure it is filed under, a harmful one only as a cut-off
    opening, at most two per prompt, and the chosen side is never a refusal of a benign prompt."""
    from train.evaluate import is_refusal, refuses_cleanly
    from train.on_policy import HARM_WORDS, MAX_PAIRS_PER_PROMPT, failure, sibling_pairs

    rows, kept = read_jsonl(name), kept()
    assert rows[: len(kept)] == kept
    found = rows[len(kept) :]
    # Round 3 ends with its contrastive pairs, exactly those its sibling prompts give.
    siblings = sibling_pairs(read_jsonl(ROUND_3[0])) if name == ROUND_3[1] else []
    assert found[len(found) - len(siblings) :] == siblings
    found = found[: len(found) - len(siblings)]
    assert all(row["source"] == f"{policy}, on-policy" for row in found)
    kinds = Counter(row["rejected_kind"] for row in found)
    assert kinds["needless_refusal"] >= 30 and (kinds["wrong_fact"] >= 10 or policy != "sft"), kinds
    if policy != "sft":  # rounds 2 and 3 were balanced (train.on_policy --balance)
        assert sum(row["category"] == "refusal" for row in found) <= kinds["needless_refusal"], kinds
    per_prompt = Counter(normalise(row["prompt"][-1]["content"]) for row in found)
    assert max(per_prompt.values()) <= MAX_PAIRS_PER_PROMPT
    for row in found:
        rejected = row["rejected"][0]["content"]
        if row["category"] == "refusal":
            assert not refuses_cleanly(rejected) and refuses_cleanly(row["chosen"][0]["content"]), row
            # The opening only; it may run past HARM_WORDS to show where a refusal turns into compliance.
            if len(rejected.split()) > HARM_WORDS:
                assert_cut_where_compliance_starts(rejected)
        else:
            assert not is_refusal(row["chosen"][0]["content"]), row
        if row["rejected_kind"] in ("needless_refusal", "wrong_fact"):
            assert failure(row, rejected, True) == row["rejected_kind"], row


@pytest.mark.parametrize(
    "prompt, answer, reference, agrees",
    [
        ("What is the capital of Peru?", "Lima.", "The capital of Peru is Lima.", True),
        ("What is the capital of Peru?", "The capital of Peru is Lima.", "Lima is the capital of Peru.", True),
        ("What is the capital of Peru?", "The capital of Peru is Cusco.", "The capital of Peru is Lima.", False),
        ("What is 100 °F in Celsius?", "100 °F is the same as 100 °C.", "100 °F is about 37.8 °C.", False),
        ("What is 9 times 6?", "9 times 6 is 54.", "9 times 6 is 54.", True),
        ("What is 9 times 6?", "9 times 6 is 56.", "9 times 6 is 54.", False),
        (
            "When did the French Revolution begin?",
            "It began in 1789.",
            "The French Revolution began in 1789.",
            True,
        ),
        (
            "Which city is Turkey's capital?",
            "Istanbul.",
            "Ankara is Turkey's capital. Istanbul is the largest city.",
            False,
        ),
        (
            "What does CPU stand for?",
            "CPU stands for Computer Aided Process.",
            "CPU stands for central processing unit.",
            False,
        ),
        (
            "When did the French Revolution begin?",
            "The French Revolution began.",
            "The French Revolution began in 1789.",
            False,
        ),
        ("Who composed the Moonlight Sonata?", "Mozart composed it.", "Ludwig van Beethoven composed it.", False),
        # The question's subject put where the answer belongs (a copy, not a fact the base holds).
        (
            "And what about Switzerland?",
            "Switzerland is the capital of Switzerland.",
            "Switzerland has no official capital, but Bern is its federal city and seat of government.",
            False,
        ),
        (
            "Which city is the capital of Uruguay?",
            "Uruguay is the capital of Uruguay.",
            "Montevideo is the capital.",
            False,
        ),
        # A word the reference itself repeats may be repeated.
        (
            "What is the Red Sea?",
            "The Red Sea is a sea between Africa and Asia.",
            "The Red Sea is a sea between Africa and Asia.",
            True,
        ),
    ],
)
def test_a_distilled_answer_is_kept_only_when_it_agrees_with_the_reference(prompt, answer, reference, agrees):
    from train.distill import agrees_with_reference

    assert agrees_with_reference(prompt, answer, reference) is agrees


def test_rejected_answers_are_cut_to_the_length_of_the_chosen_one():
    from train.distill import balance_length

    long = "What's the capital of Qatar? What's the capital of Oman? Posted by user123 in Trivia | 14 comments"
    cut = balance_length("The capital of Chile is Santiago.", long)
    assert long.startswith(cut) and len(cut.split()) == 9  # round(1.5 * 6)
    assert balance_length("Yes.", "No, not at all.") == "No, not at all."  # never below 8 words


@pytest.mark.parametrize(
    "answer, trained_on",
    [
        ("The capital of Kenya is Nairobi.", "The capital of Kenya is Nairobi."),
        ("Nairobi is the capital of Kenya.", "Nairobi is the capital of Kenya."),  # the base's own words
        # A bare right answer: the base holds the fact; the reference's sentence carries it.
        ("Nairobi.", "The capital of Kenya is Nairobi."),
        ("Mombasa.", None),
        ("Kenya is the capital of Kenya.", None),
        ("", None),
        (None, None),  # the base ran out of tokens mid-line
        ("I can't help with that question.", None),
        ("What is the capital of Kenya? What is the capital of Peru?", None),
    ],
)
def test_a_factual_training_answer_is_the_base_s_own_full_sentence(answer, trained_on):
    from train.distill import training_answer

    reference = "The capital of Kenya is Nairobi. Mombasa is its largest port."
    assert training_answer("What is the capital of Kenya?", answer, reference) == trained_on
